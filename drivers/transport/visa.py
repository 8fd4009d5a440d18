"""A transport over pyvisa (imported here, not by the package root)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pyvisa
from pyvisa import constants as visa_constants
from pyvisa import errors as visa_errors
from pyvisa.resources import MessageBasedResource

from .base import TransportBase, describe_command

__all__ = ["VisaTransport"]

logger = logging.getLogger(__name__)

# pyvisa takes its timeout in integer milliseconds.
_MS_PER_S = 1000


class VisaTransport(TransportBase):
    """A message-based VISA instrument through pyvisa.

    Opens its own resource manager (the backend given, or the system's default VISA library) and
    closes it with the transport.

    After a reply times out, the instrument may still hold that reply in its output queue (a
    USBTMC or GPIB instrument sends it on the next read request), and the next query would take
    it for its own. So the next command is preceded by a device clear, which empties the
    instrument's input and output buffers without changing its settings (IEEE 488.2); on a
    serial (ASRL) resource the read buffer is discarded instead.

    Args:
        visa_resource: the VISA resource string, e.g. ``USB0::0x1313::0x8078::P0012345::INSTR``.
        instrument: a name for messages, e.g. ``"power meter 'pm'"``.
        timeout_s: the reply timeout in seconds.
        resource: the URL for messages (default ``visa://<visa_resource>``).
        write_termination: appended to every text command.
        read_termination: ends every text reply.
        encoding: of commands and replies.
        backend: the pyvisa backend, e.g. ``"@py"`` or ``"bench.yaml@sim"``; None for the
            system default.

    Raises:
        TransportError: if the backend or the instrument cannot be opened.
        ValueError: if the resource is not message-based.
    """

    def __init__(
        self,
        visa_resource: str,
        *,
        instrument: str,
        timeout_s: float,
        resource: str | None = None,
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
        backend: str | None = None,
    ) -> None:
        super().__init__(
            instrument=instrument,
            resource=resource if resource is not None else f"visa://{visa_resource}",
            timeout_s=timeout_s,
        )
        try:
            self._manager = pyvisa.ResourceManager(backend) if backend else pyvisa.ResourceManager()
        except (visa_errors.Error, OSError, ValueError) as exc:
            raise self._error(
                f"cannot load the VISA backend {backend or '(system default)'}: {exc}"
            ) from exc
        try:
            opened = self._manager.open_resource(
                visa_resource,
                timeout=max(1, round(self.timeout_s * _MS_PER_S)),
                write_termination=write_termination,
                read_termination=read_termination,
                encoding=encoding,
            )
        except (visa_errors.Error, OSError, ValueError) as exc:
            self._manager.close()
            raise self._error(f"cannot open {visa_resource}: {_visa_text(exc)}") from exc
        if not isinstance(opened, MessageBasedResource):
            opened.close()
            self._manager.close()
            raise ValueError(
                f"{self._message(f'{visa_resource} is not a message-based VISA resource')}"
            )
        self._visa: MessageBasedResource = opened
        self._clear_before_next = False

    def _clear_stale_reply(self) -> None:
        if not self._clear_before_next:
            return
        self._clear_before_next = False
        try:
            if self._visa.interface_type == visa_constants.InterfaceType.asrl:
                # A device clear on a serial line sends a break, which some instruments take
                # badly; dropping what arrived is enough there.
                self._visa.flush(visa_constants.BufferOperation.discard_read_buffer)
            else:
                self._visa.clear()
        except (visa_errors.Error, OSError, NotImplementedError) as exc:
            # Not every backend or interface supports a device clear (pyvisa-sim does not);
            # the command is still worth sending.
            logger.debug("%s", self._message(f"device clear after a timeout failed: {exc}"))

    @contextmanager
    def _converted(self, action: str, command: str | bytes | None) -> Iterator[None]:
        """Holds the lock; turns pyvisa's exceptions into ours, naming instrument and command."""
        with self._lock:
            self._check_open(command)
            try:
                yield
            except visa_errors.VisaIOError as exc:
                if exc.error_code == visa_constants.StatusCode.error_timeout:
                    self._clear_before_next = True
                    raise self._timeout(command) from exc
                raise self._error(
                    f"{action} {describe_command(command)} failed: {_visa_text(exc)}"
                ) from exc
            except (visa_errors.Error, OSError) as exc:
                raise self._error(
                    f"{action} {describe_command(command)} failed: {_visa_text(exc)}"
                ) from exc
            except UnicodeDecodeError as exc:
                raise self._error(
                    f"reply to {describe_command(command)} is not valid {exc.encoding}"
                ) from exc

    def write(self, command: str) -> None:
        """Sends one command."""
        with self._converted("sending", command):
            self._clear_stale_reply()
            self._last_command = command
            self._visa.write(command)

    def read(self) -> str:
        """Reads one reply."""
        with self._converted("reading the reply to", self._last_command):
            return self._visa.read()

    def query(self, command: str) -> str:
        """Sends one command and reads its reply (atomically, see TransportBase)."""
        with self._lock:
            self.write(command)
            return self.read()

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes (no termination added)."""
        with self._converted("sending", data):
            self._clear_stale_reply()
            self._last_command = bytes(data)
            self._visa.write_raw(bytes(data))

    def read_bytes(self, n: int) -> bytes:
        """Reads exactly ``n`` raw bytes (termination characters included)."""
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        if n == 0:
            return b""
        with self._converted("reading the reply to", self._last_command):
            return bytes(self._visa.read_bytes(n, break_on_termchar=False))

    def close(self) -> None:
        """Closes the VISA session and its resource manager."""
        with self._lock:
            if self.closed:
                return
            super().close()
            self._release()

    def _release(self) -> None:
        for closeable in (self._visa, self._manager):
            try:
                closeable.close()
            except (visa_errors.Error, OSError) as exc:
                # The link may be the reason we are closing; nothing left to do about it.
                logger.debug("%s", self._message(f"error while closing: {exc}"))


def _visa_text(exc: BaseException) -> str:
    if isinstance(exc, visa_errors.VisaIOError):
        return f"{exc.abbreviation} ({exc.description})"
    return str(exc) or type(exc).__name__
