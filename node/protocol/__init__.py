"""Sans-IO protocol state machines (Qdist, Kq-1, Kx): bytes in, events out; no I/O, no clocks."""
