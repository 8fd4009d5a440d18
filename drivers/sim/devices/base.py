"""What the simulated instruments share: a byte-stream input parser and a SCPI error queue.

An emulator is a message handler with no I/O: :meth:`MessageDevice.feed` takes the bytes a
host wrote and returns the bytes the instrument answers. It splits its input at the
instrument's terminators (an IEEE 488.2 definite-length block may hold terminator bytes and is
skipped over whole), runs one command per message and queues replies. The VISA backend, the
pyserial handler and the bench service only move these bytes.

:class:`ScpiDevice` adds the SCPI error queue (``SYST:ERR?`` answers ``<code>,"<text>"`` and
``0,"No error"`` when empty) and a header table in SCPI's long/short form notation.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = [
    "COMMAND_ERROR",
    "DATA_OUT_OF_RANGE",
    "ILLEGAL_PARAMETER",
    "DeviceFault",
    "MessageDevice",
    "ScpiDevice",
    "scpi_header",
]

# SCPI-99 error codes (Volume 2, chapter 21) the emulators report.
COMMAND_ERROR = -100
DATA_TYPE_ERROR = -104
MISSING_PARAMETER = -109
UNDEFINED_HEADER = -113
SETTINGS_CONFLICT = -221
DATA_OUT_OF_RANGE = -222
ILLEGAL_PARAMETER = -224
OUT_OF_MEMORY = -225
BLOCK_DATA_ERROR = -160
QUEUE_OVERFLOW = -350
# SCPI-99 asks for an error queue of at least two entries; instruments keep 10-30. When full,
# the last entry is replaced by -350 "Queue overflow".
ERROR_QUEUE_LENGTH = 20
# A message longer than this without a terminator is not a command but a stream gone wrong (a
# wrong terminator): the input is dropped and the error reported. It bounds the input buffer,
# and exceeds the largest waveform upload (2 channels x 16 MSa x 2 bytes would be sent one
# channel at a time: 32 MiB).
MAX_MESSAGE_BYTES = 48 << 20
# Faults a test can make an emulator show (MessageDevice.inject_fault).
FAULTS = ("timeout", "garbage", "disconnect")


class DeviceFault(Exception):
    """A command the emulated instrument refuses: its error code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


def scpi_header(notation: str) -> re.Pattern[str]:
    """A regular expression for a header in SCPI notation.

    ``"SOURce#:DATA:ARBitrary:DAC"`` accepts ``SOUR1:DATA:ARB:DAC``, ``source:data:arbitrary:dac``
    and so on: each mnemonic in its short form (the upper-case letters) or its long form, ``#``
    an optional channel number (captured), ``[...]`` an optional node, case ignored.
    """
    out = []
    for opt, colon, word, suffix, _, query in re.findall(
            r"(\[)?(:)?([A-Za-z*_]+)(#)?(\])?(\?)?", notation):
        short = re.match(r"[A-Z*_]*", word)
        assert short is not None
        head, tail = short.group(0), word[len(short.group(0)):]
        text = re.escape(colon + head) + (f"(?:{re.escape(tail.upper())})?" if tail else "")
        if suffix:
            text += r"(\d*)"
        if opt:
            text = f"(?:{text})?"
        if query:
            text += r"\?"
        out.append(text)
    return re.compile("".join(out), re.IGNORECASE)


class MessageDevice(abc.ABC):
    """Base of the emulators: the input parser and the reply queue.

    Subclasses implement :meth:`handle` (one message in, a reply or None out) and set
    ``KIND`` (``"visa"`` or ``"serial"``: the transport the real instrument uses),
    ``TERMINATORS`` (what ends a message) and ``REPLY_TERMINATION``.

    Args:
        bench: the bench whose physics the instrument acts on and reads.
        name: the instrument's name on the bench (``sim://BENCH/NAME``).
    """

    KIND: ClassVar[str] = "visa"
    TERMINATORS: ClassVar[tuple[bytes, ...]] = (b"\n",)
    REPLY_TERMINATION: ClassVar[bytes] = b"\n"
    IDN: ClassVar[str] = ""
    BLOCKS: ClassVar[bool] = False
    """Whether messages may carry IEEE 488.2 definite-length blocks."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self._input = bytearray()
        self._faults: list[str] = []

    def inject_fault(self, fault: str, count: int = 1) -> None:
        """Makes the next ``count`` replies go wrong, to test how drivers cope.

        ``"timeout"``: the reply never comes; ``"garbage"``: it comes as bytes that are no
        reply (line noise, a wrong baud rate); ``"disconnect"``: the instrument drops off the
        bus when it would answer (the transport reports a lost connection).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (faults: {', '.join(FAULTS)})")
        with self.bench.lock:
            self._faults.extend([fault] * count)

    @property
    def kind(self) -> str:
        """``"visa"`` or ``"serial"``: the transport the real instrument uses."""
        return self.KIND

    def feed(self, data: bytes) -> bytes:
        """Takes bytes the host wrote; returns the instrument's replies to complete messages."""
        with self.bench.lock:
            self._input += data
            replies = []
            while True:
                message = self._next_message()
                if message is None:
                    break
                reply = self.handle(message)
                if reply is not None:
                    encoded = reply.encode("ascii")
                    if self._faults:
                        fault = self._faults.pop(0)
                        if fault == "timeout":
                            continue
                        if fault == "disconnect":
                            raise ConnectionResetError(
                                f"simulated {self.name!r} dropped off the bus")
                        encoded = bytes((b ^ 0xA5) | 0x80 for b in encoded)
                    replies.append(encoded + self.REPLY_TERMINATION)
            if len(self._input) > MAX_MESSAGE_BYTES:
                self._input.clear()
                self.overflowed()
            return b"".join(replies)

    def clear(self) -> None:
        """A device clear: drops partial input (IEEE 488.2; settings are kept)."""
        with self.bench.lock:
            self._input.clear()

    def overflowed(self) -> None:  # noqa: B027 - an optional hook: doing nothing is the default
        """Called when a message exceeded :data:`MAX_MESSAGE_BYTES` (subclasses report it)."""

    def _next_message(self) -> bytes | None:
        buffer = self._input
        start = 0
        while True:
            ends = [(i, t) for t in self.TERMINATORS if (i := buffer.find(t, start)) >= 0]
            if not ends:
                return None
            end, term = min(ends, key=lambda e: (e[0], -len(e[1])))
            block = buffer.find(b"#", start, end) if self.BLOCKS else -1
            if block >= 0 and block + 1 < len(buffer) and 49 <= buffer[block + 1] <= 57:
                digits = buffer[block + 1] - 48
                field = buffer[block + 2: block + 2 + digits]
                if len(field) < digits:
                    return None
                if field.isdigit():
                    block_end = block + 2 + digits + int(field)
                    if block_end > len(buffer):
                        return None  # the block is still arriving
                    start = block_end
                    continue
            message = bytes(buffer[:end])
            del buffer[: end + len(term)]
            return message

    @abc.abstractmethod
    def handle(self, message: bytes) -> str | None:
        """Runs one message; returns the reply text (without termination) or None."""


# A SCPI handler: (captured channel numbers or other groups, argument text, is a query).
Handler = Callable[[tuple[str, ...], str], str | None]


class ScpiDevice(MessageDevice):
    """An emulated SCPI instrument: header table, error queue, ``*IDN?``, ``SYST:ERR?``.

    Subclasses list ``COMMANDS``: (header notation, method name); the method gets the captured
    groups and the argument text and returns the reply of a query (None for a set command).
    A method raises :class:`DeviceFault` to refuse; the fault goes to the error queue and a
    refused query answers nothing (the host's read times out, as with a real instrument).
    """

    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = ()
    _compiled: ClassVar[list[tuple[re.Pattern[str], str]]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        base = (("*IDN?", "_idn"), ("SYSTem:ERRor[:NEXT]?", "_syst_err"), ("*CLS", "_cls"),
                ("*RST", "_rst"))
        cls._compiled = [(scpi_header(n), m) for n, m in (*base, *cls.COMMANDS)]

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self._errors: list[tuple[int, str]] = []

    def push_error(self, code: int, text: str) -> None:
        """Appends to the error queue (the last entry becomes -350 when it is full)."""
        if len(self._errors) >= ERROR_QUEUE_LENGTH:
            self._errors[-1] = (QUEUE_OVERFLOW, "Queue overflow")
        else:
            self._errors.append((code, text))

    def overflowed(self) -> None:
        self.push_error(COMMAND_ERROR, "Command error; message too long")

    def handle(self, message: bytes) -> str | None:
        # Only leading blanks go: a block's payload may end in any byte.
        head, _, rest = message.lstrip(b" \t\r").partition(b" ")
        try:
            header = head.decode("ascii").strip()
        except UnicodeDecodeError:
            self.push_error(COMMAND_ERROR, "Command error; not ASCII")
            return None
        if not header:
            return None
        for pattern, method in self._compiled:
            match = pattern.fullmatch(header)
            if match is None:
                continue
            try:
                if method == "block_command":
                    return self.block_command(match.groups(), rest)
                try:
                    args = rest.decode("ascii").strip()
                except UnicodeDecodeError:
                    raise DeviceFault(DATA_TYPE_ERROR, "Data type error") from None
                handler: Handler = getattr(self, method)
                return handler(match.groups(), args)
            except DeviceFault as fault:
                self.push_error(fault.code, fault.text)
                return None
        self.push_error(UNDEFINED_HEADER, f"Undefined header; {header[:40]}")
        return None

    def block_command(self, groups: tuple[str, ...], args: bytes) -> str | None:
        """A command whose arguments hold a block, listed in ``COMMANDS`` with the method name
        ``block_command``; gets the raw argument bytes (subclasses that take one override it)."""
        raise DeviceFault(UNDEFINED_HEADER, "Undefined header")

    def _idn(self, groups: tuple[str, ...], args: str) -> str:
        return self.IDN

    def _syst_err(self, groups: tuple[str, ...], args: str) -> str:
        code, text = self._errors.pop(0) if self._errors else (0, "No error")
        return f'{code:+d},"{text}"' if code else '0,"No error"'

    def _cls(self, groups: tuple[str, ...], args: str) -> None:
        self._errors.clear()

    def _rst(self, groups: tuple[str, ...], args: str) -> None:
        self.reset()

    def reset(self) -> None:
        """``*RST``: the power-on settings (subclasses restore theirs)."""


# -- argument parsing shared by the emulators ---------------------------------------------------


def number(args: str) -> float:
    """A finite decimal argument, or DeviceFault -109/-104."""
    if not args:
        raise DeviceFault(MISSING_PARAMETER, "Missing parameter")
    try:
        value = float(args)
    except ValueError:
        raise DeviceFault(DATA_TYPE_ERROR, "Data type error") from None
    if not math.isfinite(value):
        raise DeviceFault(DATA_TYPE_ERROR, "Data type error")
    return value


def integer(args: str) -> int:
    """A decimal integer argument, or DeviceFault -109/-104."""
    if not args:
        raise DeviceFault(MISSING_PARAMETER, "Missing parameter")
    try:
        return int(args, 10)
    except ValueError:
        raise DeviceFault(DATA_TYPE_ERROR, "Data type error") from None


def in_range(value: float, low: float, high: float) -> float:
    """``value`` if in [low, high], else DeviceFault -222."""
    if not low <= value <= high:
        raise DeviceFault(DATA_OUT_OF_RANGE, "Data out of range")
    return value


def on_off(args: str) -> bool:
    """``ON``/``OFF``/``1``/``0``, or DeviceFault."""
    text = args.strip().upper()
    if text in ("ON", "1"):
        return True
    if text in ("OFF", "0"):
        return False
    if not text:
        raise DeviceFault(MISSING_PARAMETER, "Missing parameter")
    raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value")


def no_args(args: str) -> None:
    """Refuses arguments to a query (-108)."""
    if args:
        raise DeviceFault(-108, "Parameter not allowed")
