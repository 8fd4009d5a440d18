"""Message-based instrument drivers, one module per model: ``instruments/<vendor>/<model>.py``.

Each driver takes a :class:`~qkdnode.drivers.transport.Transport` and implements one or more
roles of :mod:`qkdnode.drivers.roles`; :mod:`qkdnode.drivers.registry` names them
(``"idq.id120"``, ...) and opens them from the node configuration.
"""
