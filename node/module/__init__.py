"""The QKD module runtime: acquisition, slot timing (Qsync), the Qdist dialogue and key output."""
