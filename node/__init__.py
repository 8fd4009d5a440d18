"""The running node: protocols, QKD module runtime, key manager, APIs, configuration, CLI."""
