"""A transport over pyserial (imported here, not by the package root).

Ports are opened with :func:`serial.serial_for_url`, so besides device names (``/dev/ttyUSB0``,
``COM3``) every pyserial URL handler works: ``loop://``, ``socket://host:port``,
``rfc2217://...``, ``spy://...`` and handlers registered through
``serial.protocol_handler_packages`` (the simulated bench plugs in that way).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import serial

from ..errors import TransportTimeout
from .base import TransportBase, describe_command

__all__ = ["DEFAULT_BAUDRATE", "MAX_REPLY_BYTES", "SerialTransport"]

logger = logging.getLogger(__name__)

# The RS-232 rate most instruments ship with, and pyserial's own default; instruments that differ
# (the MBX runs at 115200) say so in their URL.
DEFAULT_BAUDRATE = 9600

# A text reply longer than this is not a reply but a runaway line (wrong terminator, a stream
# left running): stop reading rather than grow without bound. Replies of the instruments we
# drive are well under a kilobyte.
MAX_REPLY_BYTES = 1 << 16


class SerialTransport(TransportBase):
    """A message-based serial instrument through pyserial.

    After a reply times out, whatever arrives late belongs to the command that timed out, so
    the next command first discards pending input (instead of taking a late reply for its own).

    Args:
        port: a device name or pyserial URL, passed to :func:`serial.serial_for_url`.
        instrument: a name for messages, e.g. ``"bias controller 'mbx'"``.
        timeout_s: the reply timeout in seconds.
        resource: the URL for messages (default ``serial://<port>``).
        write_termination: appended to every text command (the MBX takes ``"\\r"``).
        read_termination: ends every text reply (the MBX sends ``"\\n"``).
        encoding: of commands and replies.
        baudrate, bytesize, parity, stopbits, rtscts, xonxoff: line settings, as pyserial's.
        write_timeout_s: how long a write may block (None: until sent).

    Raises:
        TransportError: if the port cannot be opened.
        ValueError: if the URL's protocol is not known to pyserial, or a setting is invalid.
    """

    def __init__(
        self,
        port: str,
        *,
        instrument: str,
        timeout_s: float,
        resource: str | None = None,
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
        baudrate: int = DEFAULT_BAUDRATE,
        bytesize: int = serial.EIGHTBITS,
        parity: str = serial.PARITY_NONE,
        stopbits: float = serial.STOPBITS_ONE,
        rtscts: bool = False,
        xonxoff: bool = False,
        write_timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            instrument=instrument,
            resource=resource if resource is not None else f"serial://{port}",
            timeout_s=timeout_s,
        )
        if not read_termination:
            raise ValueError(self._message("a serial transport needs a read termination"))
        self._write_termination = write_termination.encode(encoding)
        self._read_termination = read_termination.encode(encoding)
        self._encoding = encoding
        self._stale_input = False
        try:
            self._port = serial.serial_for_url(
                port,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                rtscts=rtscts,
                xonxoff=xonxoff,
                timeout=self.timeout_s,
                write_timeout=write_timeout_s,
            )
        except serial.SerialException as exc:
            raise self._error(f"cannot open {port}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(self._message(f"cannot open {port}: {exc}")) from exc

    @contextmanager
    def _converted(self, action: str, command: str | bytes | None) -> Iterator[None]:
        """Holds the lock; turns pyserial's exceptions into ours, naming instrument and command."""
        with self._lock:
            self._check_open(command)
            try:
                yield
            except serial.SerialTimeoutException as exc:
                raise TransportTimeout(
                    self._message(
                        f"{action} {describe_command(command)} timed out (write timeout)"
                    )
                ) from exc
            except (serial.SerialException, OSError) as exc:
                raise self._error(f"{action} {describe_command(command)} failed: {exc}") from exc

    def _send(self, payload: bytes, command: str | bytes) -> None:
        with self._converted("sending", command):
            if self._stale_input:
                self._port.reset_input_buffer()
                self._stale_input = False
            self._last_command = command
            self._port.write(payload)

    def write(self, command: str) -> None:
        """Sends one command."""
        self._send(command.encode(self._encoding) + self._write_termination, command)

    def read(self) -> str:
        """Reads one reply, up to the read termination."""
        command = self._last_command
        with self._converted("reading the reply to", command):
            line = bytes(self._port.read_until(self._read_termination, MAX_REPLY_BYTES))
        if not line.endswith(self._read_termination):
            self._stale_input = True
            if len(line) >= MAX_REPLY_BYTES:
                raise self._error(
                    f"reply to {describe_command(command)} exceeds {MAX_REPLY_BYTES} bytes "
                    f"without the terminator {self._read_termination!r}"
                )
            detail = f"{len(line)} bytes without the terminator" if line else ""
            raise self._timeout(command, detail)
        body = line[: -len(self._read_termination)]
        try:
            return body.decode(self._encoding)
        except UnicodeDecodeError as exc:
            raise self._error(
                f"reply to {describe_command(command)} is not valid {self._encoding} "
                "(wrong baud rate or line settings?)"
            ) from exc

    def query(self, command: str) -> str:
        """Sends one command and reads its reply (atomically, see TransportBase)."""
        with self._lock:
            self.write(command)
            return self.read()

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes (no termination added)."""
        self._send(bytes(data), bytes(data))

    def read_bytes(self, n: int) -> bytes:
        """Reads exactly ``n`` raw bytes."""
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        command = self._last_command
        with self._converted("reading the reply to", command):
            data = bytes(self._port.read(n)) if n else b""
        if len(data) < n:
            self._stale_input = True
            raise self._timeout(command, f"received {len(data)} of {n} bytes")
        return data

    def close(self) -> None:
        """Closes the port."""
        with self._lock:
            if self.closed:
                return
            super().close()
            try:
                self._port.close()
            except (serial.SerialException, OSError) as exc:
                # The link may be the reason we are closing; nothing left to do about it.
                logger.debug("%s", self._message(f"error while closing: {exc}"))
