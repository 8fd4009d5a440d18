"""Transports for message-based instruments: VISA, serial, scripted and recorded exchanges.

Drivers receive a :class:`Transport` and never import pyvisa or serial. Build one from the
resource URL in the node configuration with :func:`open_transport`::

    from qkdnode.drivers.transport import open_transport

    with open_transport("serial:///dev/ttyUSB0?baudrate=115200", instrument="bias controller 'mbx'",
                        timeout_s=1.0, write_termination="\\r") as mbx:
        volts = float(mbx.query("MZM:VOLTAGE?"))

Unit tests script the exchange instead (:class:`ScriptedTransport`); a lab session recorded with
:class:`RecordingTransport` replays in CI. Importing this package does not import pyvisa or
pyserial: :class:`VisaTransport` and :class:`SerialTransport` load them on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MAX_COMMAND_IN_MESSAGE, Transport, TransportBase, describe_command
from .blocks import MAX_BLOCK_LENGTH, decode_block, encode_block, read_block, write_block
from .factory import (
    TransportFactory,
    TransportOptions,
    open_transport,
    register_scheme,
    registered_schemes,
    unregister_scheme,
)
from .reconnect import ReconnectingTransport, ReconnectPolicy
from .recording import RecordingTransport
from .scripted import (
    SCRIPTED_DISCONNECT,
    SCRIPTED_TIMEOUT,
    Fault,
    ScriptedTransport,
    Step,
    load_steps,
    save_steps,
    scripted,
)

if TYPE_CHECKING:
    from .serialport import SerialTransport
    from .visa import VisaTransport

__all__ = [
    "MAX_BLOCK_LENGTH",
    "MAX_COMMAND_IN_MESSAGE",
    "SCRIPTED_DISCONNECT",
    "SCRIPTED_TIMEOUT",
    "Fault",
    "ReconnectPolicy",
    "ReconnectingTransport",
    "RecordingTransport",
    "ScriptedTransport",
    "SerialTransport",
    "Step",
    "Transport",
    "TransportBase",
    "TransportFactory",
    "TransportOptions",
    "VisaTransport",
    "decode_block",
    "describe_command",
    "encode_block",
    "load_steps",
    "open_transport",
    "read_block",
    "register_scheme",
    "registered_schemes",
    "save_steps",
    "scripted",
    "unregister_scheme",
    "write_block",
]

# Loaded on first access, so that importing the package needs neither pyvisa nor pyserial.
_LAZY = {"VisaTransport": ".visa", "SerialTransport": ".serialport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
