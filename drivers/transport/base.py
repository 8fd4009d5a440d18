"""The :class:`Transport` protocol and what its implementations share.

A transport moves text commands and replies (and, for waveform uploads, raw bytes) between an
instrument driver and one message-based instrument. Drivers receive a transport and never import
pyvisa or serial, so the same driver runs over VISA, a serial port, the simulated bench or a
scripted exchange in a unit test.

Every error a transport raises names the instrument, the resource URL and the command, e.g.::

    TransportTimeout: detector 'spd' at visa://USB0::0x1DDC::0x0001::INSTR: no reply to
    'COUNTERS:DETECTION_FREQ?' within 2.0 s

Binary payloads never appear in messages (only their size): an AWG upload can carry the
per-slot choices of the transmitter, which are key material.
"""

from __future__ import annotations

import math
import re
import threading
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .._closing import ClosesOnExit
from ..errors import TransportError, TransportTimeout

__all__ = [
    "MAX_COMMAND_IN_MESSAGE",
    "Transport",
    "TransportBase",
    "describe_command",
    "error_prefix",
]

# Commands longer than this are shown by their SCPI header only. Control commands are short; a
# long one carries data (a waveform in ASCII, a pattern table) that can encode per-slot choices,
# which are key material and must not reach logs or exception text.
MAX_COMMAND_IN_MESSAGE = 64
# A long command is named by its SCPI header (mnemonics with at most a two-digit suffix, so a run
# of pattern digits is not taken for one), cut at this length: the longest headers we drive
# (``SOURce1:FUNCtion:ARBitrary:SRATe``) fit.
MAX_HEADER_IN_MESSAGE = 40
_SCPI_HEADER = re.compile(r"(?:[*:]?[A-Za-z]+\d{0,2})+\??")


@runtime_checkable
class Transport(Protocol):
    """A link to one message-based instrument.

    Text commands are sent with the transport's write termination appended, and replies are
    returned without their read termination. ``write_bytes``/``read_bytes`` move raw bytes with
    no termination added or stripped (see :mod:`qkdnode.drivers.transport.blocks` for IEEE 488.2
    definite-length blocks built on them).

    Errors: :class:`~qkdnode.drivers.errors.TransportTimeout` when the instrument does not answer
    in time, :class:`~qkdnode.drivers.errors.TransportError` when the link fails; both name the
    instrument, the resource and the command.
    """

    @property
    def resource(self) -> str:
        """The resource URL the transport was opened from, as configured."""
        ...

    @property
    def instrument(self) -> str:
        """A name for messages, e.g. ``"detector 'spd'"``."""
        ...

    def write(self, command: str) -> None:
        """Sends one command (the write termination is appended)."""
        ...

    def read(self) -> str:
        """Reads one reply (without its read termination)."""
        ...

    def query(self, command: str) -> str:
        """Sends one command and reads its reply."""
        ...

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes exactly as given."""
        ...

    def read_bytes(self, n: int) -> bytes:
        """Reads exactly ``n`` raw bytes."""
        ...

    def close(self) -> None:
        """Closes the link; closing twice is harmless."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def describe_command(command: str | bytes | None) -> str:
    """Names a command for a message without revealing data it may carry.

    Args:
        command: a text command, a binary payload, or None when nothing was sent.

    Returns:
        The quoted command; for a long one its header and length; for bytes only the size.
    """
    if command is None:
        return "(no command)"
    if isinstance(command, bytes | bytearray):
        return f"a binary block of {len(command)} bytes"
    if len(command) <= MAX_COMMAND_IN_MESSAGE:
        return repr(command)
    match = _SCPI_HEADER.match(command.strip())
    header = match.group()[:MAX_HEADER_IN_MESSAGE] if match else ""
    return f"{header!r}... ({len(command)} characters)"


def error_prefix(instrument: str, resource: str) -> str:
    """The common start of every transport message: ``"<instrument> at <resource>"``."""
    return f"{instrument} at {resource}"


def check_timeout(timeout_s: float) -> float:
    """Checks a timeout in seconds: a positive finite number.

    Raises:
        ValueError: if it is not.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise TypeError(f"timeout_s must be a number of seconds, got {type(timeout_s).__name__}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive finite number of seconds, got {timeout_s}")
    return float(timeout_s)


class TransportBase(ClosesOnExit):
    """Shared bookkeeping for transport implementations (not required by the protocol).

    Keeps the names used in messages, the last command sent (a bare ``read`` names it), the
    closed state, the context manager and a lock, and builds the errors (``_message``,
    ``_error``, ``_timeout``, ``_check_open`` are for subclasses, such as the simulated bench's
    transport).

    Threads: instrument I/O runs in worker threads, so implementations hold ``_lock`` (re-entrant)
    around each operation and across the write and read of a ``query``, which is therefore
    atomic. A ``write`` followed by a separate ``read`` is not: threads sharing a transport use
    ``query``.

    Args:
        instrument: a name for messages, e.g. ``"detector 'spd'"``.
        resource: the resource URL as configured.
        timeout_s: the reply timeout in seconds (named in timeout messages).
    """

    def __init__(self, *, instrument: str, resource: str, timeout_s: float) -> None:
        self._instrument = instrument
        self._resource = resource
        self._timeout_s = check_timeout(timeout_s)
        self._last_command: str | bytes | None = None
        self._closed = False
        self._lock = threading.RLock()

    @property
    def resource(self) -> str:
        """The resource URL the transport was opened from, as configured."""
        return self._resource

    @property
    def instrument(self) -> str:
        """A name for messages."""
        return self._instrument

    @property
    def timeout_s(self) -> float:
        """The reply timeout in seconds."""
        return self._timeout_s

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed


    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._instrument} at {self._resource} ({state})>"

    def close(self) -> None:
        """Marks the transport closed; subclasses release their link and call this."""
        self._closed = True

    def _message(self, text: str) -> str:
        return f"{error_prefix(self._instrument, self._resource)}: {text}"

    def _error(self, text: str) -> TransportError:
        return TransportError(self._message(text))

    def _timeout(self, command: str | bytes | None, detail: str = "") -> TransportTimeout:
        """The timeout error for a reply to ``command`` that did not come."""
        what = "no reply" if command is not None else "no data (nothing sent yet)"
        to = f" to {describe_command(command)}" if command is not None else ""
        extra = f" ({detail})" if detail else ""
        return TransportTimeout(
            self._message(f"{what}{to} within {self._timeout_s} s{extra}")
        )

    def _check_open(self, command: str | bytes | None) -> None:
        if self._closed:
            what = f"{describe_command(command)} not sent" if command is not None else "no read"
            raise self._error(f"{what}: transport closed")
