"""Qdist over TCP: the asyncio glue that moves bytes between a sans-IO Qdist end and a stream.

:class:`QdistConnection` owns one :class:`~qkdnode.node.protocol.qdist.QdistEnd` and one
connection. Every call into the end goes through one lock (the end is not thread-safe), and
:meth:`~qkdnode.node.protocol.qdist.QdistEnd.next_event`, where reconciliation decodes, runs in a
worker thread (``asyncio.to_thread``: the numba kernels release the GIL), so acquisition and
Qsync go on meanwhile. Events come out of :attr:`QdistConnection.events`, a bounded queue.
Timers: when the end has nothing to do, the pump waits for data or the block's deadline and
then calls ``handle_timer``.

A connection whose stream the end found broken (foreign bytes, an oversized frame) ends
:meth:`QdistConnection.run` like a dropped one: the module then reconnects
(:func:`connect_with_backoff`) and the end starts afresh with
:meth:`~qkdnode.node.protocol.qdist.QdistEnd.reset_stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..protocol.qdist import NEED_DATA, QdistEnd

__all__ = ["READ_BYTES", "QdistConnection", "connect", "connect_with_backoff", "parse_hostport"]

# Bytes per socket read: a Qdist frame is at most MAX_BODY, read in pieces this size.
READ_BYTES = 1 << 16
# Events buffered before the pump stops processing frames (back-pressure on the peer: its
# frames then wait in the socket buffers).
EVENT_QUEUE = 16
# Reconnecting after a dropped connection: first after 0.1 s, then doubling up to 5 s (a partner
# module restarting is back within seconds; no faster than this hammers a dead peer).
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0

T = TypeVar("T")


def parse_hostport(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port).

    Raises:
        ValueError: no port, or a port outside 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class QdistConnection:
    """One Qdist end on one stream connection.

    Args:
        end: the sans-IO end (Alice or Bob).
        reader, writer: the connection.
        clock: monotonic seconds (the end's ``now``).
        initial: bytes already read from ``reader`` (the end receives them first).
    """

    def __init__(self, end: QdistEnd, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter,
                 clock: Callable[[], float] = time.monotonic, initial: bytes = b"") -> None:
        self.end = end
        self._initial = initial
        self._reader = reader
        self._writer = writer
        self.clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.events: asyncio.Queue[Any] = asyncio.Queue(EVENT_QUEUE)
        self.closed = asyncio.Event()
        self.bytes_sent = 0
        self.bytes_received = 0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Calls ``fn(*args)`` (a method of the end) under the lock, sends what it produced and
        wakes the pump."""
        async with self._lock:
            result = fn(*args)
            await self._flush()
        self._wake.set()
        return result

    async def run(self) -> None:
        """Moves bytes and events until the peer closes the connection (then returns)."""
        if self._initial:
            # Bytes read off the stream before the connection was taken (its first frame,
            # authenticated before this connection replaced another one).
            self.bytes_received += len(self._initial)
            async with self._lock:
                self.end.receive_data(self._initial)
            self._initial = b""
        reading = asyncio.create_task(self._read())
        try:
            await self._pump(reading)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            self.closed.set()

    async def close(self) -> None:
        """Closes the connection (:meth:`run` then ends as if the peer had closed it)."""
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        while data := await self._reader.read(READ_BYTES):
            self.bytes_received += len(data)
            async with self._lock:
                self.end.receive_data(data)
            self._wake.set()
        self._wake.set()

    async def _flush(self) -> None:
        data = self.end.data_to_send()
        if data:
            self._writer.write(data)
            self.bytes_sent += len(data)
            await self._writer.drain()

    async def _pump(self, reading: asyncio.Task[None]) -> None:
        while True:
            self._wake.clear()
            async with self._lock:
                event = await asyncio.to_thread(self.end.next_event)
                await self._flush()
            if event is not NEED_DATA:
                await self.events.put(event)
                continue
            if self.end.broken:
                return  # the stream cannot be cut into frames any more: a new connection can
            if reading.done():
                reading.result()  # raises what ended the read (a reset connection)
                return
            timer = self.end.get_timer()
            timeout = None if timer is None else max(0.0, timer - self.clock())
            if timeout == 0.0:  # due now: fire it (a wait would return at once if woken)
                async with self._lock:
                    self.end.handle_timer(self.clock())
                    await self._flush()
                continue
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for loses a cancellation that
            # arrives as the wait completes (a byte just read sets _wake), and the pump then
            # ran on, so cancelling the connection (a module stopping) could hang for good.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                async with self._lock:
                    self.end.handle_timer(self.clock())
                    await self._flush()


async def connect(address: str, *, attempts: int = 50, delay_s: float = 0.1
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to ``HOST:PORT``, retrying while the peer is not listening yet.

    Raises:
        ConnectionError: still refused after ``attempts`` tries.
    """
    host, port = parse_hostport(address)
    last: OSError | None = None
    for _ in range(max(1, attempts)):
        try:
            return await asyncio.open_connection(host, port)
        except OSError as exc:
            last = exc
            await asyncio.sleep(delay_s)
    raise ConnectionError(f"Qdist: cannot connect to {address}: {last}")


async def connect_with_backoff(address: str, *, first_s: float = RECONNECT_FIRST_S,
                               max_s: float = RECONNECT_MAX_S,
                               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to ``HOST:PORT``, retrying until it succeeds (or the caller is cancelled),
    waiting ``first_s`` after the first failure and doubling up to ``max_s``."""
    host, port = parse_hostport(address)
    delay = first_s
    while True:
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(delay)
            delay = min(2 * delay, max_s)
