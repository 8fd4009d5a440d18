"""asyncio glue: moves the bytes of the sans-IO protocols over sockets."""
