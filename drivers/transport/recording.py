"""Recording the real exchange with an instrument, to replay it as a script.

Wrap a transport in :class:`RecordingTransport`, run the driver, and
:meth:`~RecordingTransport.save` the exchange; ``ScriptedTransport.load(path)`` replays it
exactly, timeouts and disconnects included, so a failure seen in the lab becomes a CI test.

Binary writes (a transmitter's frame upload: its per-slot choices are key material) are
recorded as their SHA-256 digest and length, not their bytes; the replay checks that the driver
sends bytes with that digest. ``redact_binary_writes=False`` keeps the bytes, for instruments
whose uploads are not secret. Text commands and every reply are recorded as they are.
"""

from __future__ import annotations

import os

from .._closing import ClosesOnExit
from ..errors import TransportError, TransportTimeout
from .base import Transport
from .scripted import (
    SCRIPTED_DISCONNECT,
    SCRIPTED_TIMEOUT,
    Digest,
    Reply,
    Sent,
    Step,
    save_steps,
)

__all__ = ["RecordingTransport"]


class RecordingTransport(ClosesOnExit):
    """Passes every call to a transport and records the exchange as script steps.

    The steps follow :mod:`~qkdnode.drivers.transport.scripted`: a reply read after a write is
    recorded with that write; a timeout as ``SCRIPTED_TIMEOUT``; a broken link as
    ``SCRIPTED_DISCONNECT`` (on the step whose sending, or with nothing sent the read, failed).
    A write that itself times out is recorded like a write whose reply timed out.

    Args:
        inner: the transport to record.
        redact_binary_writes: record binary writes by digest only (the default).
    """

    def __init__(self, inner: Transport, *, redact_binary_writes: bool = True) -> None:
        self._inner = inner
        self.redact_binary_writes = redact_binary_writes
        self._steps: list[Step] = []
        # What the last step can still take: "write" (a reply to it), "bytes" (more binary reply
        # bytes), or None (nothing: the next read starts a step of its own).
        self._open: str | None = None

    @property
    def resource(self) -> str:
        """The resource URL of the recorded transport."""
        return self._inner.resource

    @property
    def instrument(self) -> str:
        """A name for messages."""
        return self._inner.instrument

    @property
    def steps(self) -> list[Step]:
        """The exchange so far, as script steps."""
        return list(self._steps)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the exchange as JSON lines (see :func:`~.scripted.save_steps`).

        The header keeps the recorded transport's ``timeout_s`` if it has one, so replayed
        timeout messages read as the lab's did.
        """
        timeout_s = getattr(self._inner, "timeout_s", None)
        save_steps(
            path,
            self.steps,
            instrument=self.instrument,
            resource=self.resource,
            timeout_s=timeout_s if isinstance(timeout_s, int | float) else None,
        )


    def close(self) -> None:
        """Closes the recorded transport (the recording stays available)."""
        self._inner.close()

    def _add(self, sent: Sent, reply: Reply, open_: str | None = None) -> None:
        self._steps.append((sent, reply))
        self._open = open_

    def _attach(self, reply: Reply) -> None:
        """Records a reply read: onto the write it answers, else as a step of its own."""
        if self._open == "write":
            self._steps[-1] = (self._steps[-1][0], reply)
        elif self._open == "bytes" and isinstance(reply, bytes):
            sent, last = self._steps[-1]
            assert isinstance(last, bytes)
            self._steps[-1] = (sent, last + reply)
        else:
            self._steps.append((None, reply))
        self._open = "bytes" if isinstance(reply, bytes) else None

    def _sent(self, data: str | bytes) -> None:
        sent: Sent = data
        if isinstance(data, bytes) and self.redact_binary_writes:
            sent = Digest.of(data)
        try:
            if isinstance(data, bytes):
                self._inner.write_bytes(data)
            else:
                self._inner.write(data)
        except TransportTimeout:
            self._add(sent, SCRIPTED_TIMEOUT)
            raise
        except TransportError:
            self._add(sent, SCRIPTED_DISCONNECT)
            raise
        self._add(sent, None, "write")

    def write(self, command: str) -> None:
        """Sends one command, recorded."""
        self._sent(command)

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes, recorded."""
        self._sent(bytes(data))

    def query(self, command: str) -> str:
        """Sends one command and reads its reply, recorded as one step."""
        try:
            reply = self._inner.query(command)
        except TransportTimeout:
            self._add(command, SCRIPTED_TIMEOUT)
            raise
        except TransportError:
            self._add(command, SCRIPTED_DISCONNECT)
            raise
        self._add(command, reply)
        return reply

    def read(self) -> str:
        """Reads one reply, recorded."""
        try:
            reply = self._inner.read()
        except TransportTimeout:
            self._attach(SCRIPTED_TIMEOUT)
            raise
        except TransportError:
            self._add(None, SCRIPTED_DISCONNECT)
            raise
        self._attach(reply)
        return reply

    def read_bytes(self, n: int) -> bytes:
        """Reads ``n`` raw bytes, recorded (consecutive reads join into one reply)."""
        try:
            data = self._inner.read_bytes(n)
        except TransportTimeout:
            if self._open == "write":
                self._attach(SCRIPTED_TIMEOUT)
            else:
                self._add(None, SCRIPTED_TIMEOUT)
            raise
        except TransportError:
            self._add(None, SCRIPTED_DISCONNECT)
            raise
        self._attach(data)
        return data
