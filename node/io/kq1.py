"""Kq-1/Kq-2 over a local (Unix) socket: the key manager's server and the module's client.

Only bytes move here; the protocol is :mod:`qkdnode.node.protocol.kq1`. The socket file is
created with mode 0600: only the node's own user can push keys into its key manager.

The server acknowledges a push only after the key store's durable commit returns; the client
keeps every key until then and pushes it again after a reconnect (the store recognises the IDs,
so a push that was stored but whose acknowledgement was lost is not stored twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import KeyManagerError, ProtocolError, RemoteProtocolError
from ..km.manager import KeyManager
from ..km.records import LinkKey
from ..protocol.kq1 import (
    NEED_DATA,
    KeysPushed,
    KeysRefused,
    KeysStored,
    KmWelcomed,
    Kq1Connection,
    ModuleAnnounced,
    Role,
    StartRequested,
    StatusReported,
    StatusRequested,
    StopRequested,
)

__all__ = ["Kq1Client", "Kq1Refused", "Kq1Server"]

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
# A module that reconnects waits 0.1 s, then doubles up to 5 s between attempts.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
# A connection the key manager welcomed and that lasted this long was a good one: the next
# reconnect starts again from RECONNECT_FIRST_S. Shorter ones (a key manager that accepts and
# drops at once) keep doubling the delay, so they cannot make a tight loop.
STABLE_CONNECTION_S = 10.0
# Seconds a Kq-2 request may wait for the module's socket to take it (a module that stopped
# reading must not hang the key manager's management API or its shutdown).
CONTROL_TIMEOUT_S = 5.0


class Kq1Refused(KeyManagerError):
    """The key manager refused a push (nothing of it was stored); ``code`` is its reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"key manager refused the keys ({self.code}): {self.reason}"


class _ModuleSession:
    def __init__(self, writer: asyncio.StreamWriter, conn: Kq1Connection) -> None:
        self.writer = writer
        self.conn = conn
        self.status_seq = 0
        self.status_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def send(self, event: Any) -> None:
        self.writer.write(self.conn.send(event))


class Kq1Server:
    """The key manager's end: one Unix socket, any number of modules.

    Args:
        manager: where pushed keys go.
        path: the socket file.
    """

    def __init__(self, manager: KeyManager, path: str | Path) -> None:
        self.manager = manager
        self.path = Path(path)
        self.sessions: dict[str, _ModuleSession] = {}
        self.last_status: dict[str, dict[str, Any]] = {}
        # When each module's last status report came (monotonic seconds).
        self.status_time: dict[str, float] = {}
        # The link and the QBER of the last key each module pushed (key metadata).
        self.links: dict[str, str] = {}
        self.key_qber: dict[str, float] = {}
        # Modules the key manager keeps stopped: a module that (re)connects is asked to start
        # unless it is here (a module stopped with its key manager resumes when it is back).
        # Only modules that took a stop request are added; the daemon records the set in the
        # key store and fills it at its start (NodeDaemon._persist_hold), so holds survive a
        # key manager restart.
        self.held: set[str] = set()
        # Set while the key manager shuts down: a module that connects is asked to stop, not
        # to start.
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listens (an old socket file left by a crash is replaced)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        """Closes the socket and every module connection."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
            for session in list(self.sessions.values()):
                session.writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Kq1Connection(Role.KM)
        session = _ModuleSession(writer, conn)
        name = "?"
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    return
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, ModuleAnnounced):
                        name = event.module
                        self.sessions[name] = session
                        session.send(KmWelcomed(self.manager.node))
                        self.links[name] = event.link
                        if self.stopping:
                            session.send(StopRequested())
                        elif name not in self.held:
                            session.send(StartRequested())
                        log.info("Kq-1: module %s connected (link %s, pool %s)", name,
                                 event.link, event.pool)
                    elif isinstance(event, KeysPushed):
                        qbers = [k.qber for k in event.keys if k.qber is not None]
                        if qbers:
                            self.key_qber[name] = qbers[-1]
                        session.send(await self._store(conn, event))
                    elif isinstance(event, StatusReported):
                        self.last_status[name] = event.status
                        self.status_time[name] = time.monotonic()
                        waiter = session.status_waiters.pop(event.seq, None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(event.status)
                await writer.drain()
        except RemoteProtocolError as exc:
            log.warning("Kq-1: module %s broke the protocol, disconnecting: %s", name, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping; asyncio's stream callback must not see it
        finally:
            if self.sessions.get(name) is session:
                del self.sessions[name]
            writer.close()

    async def _store(self, conn: Kq1Connection, event: KeysPushed) -> KeysStored | KeysRefused:
        assert conn.announcement is not None  # the protocol guarantees the order
        try:
            new = await self.manager.add_link_keys(conn.announcement.pool, event.keys)
        except KeyManagerError as exc:
            log.warning("Kq-1: push %d of %s refused: %s", event.seq,
                        conn.announcement.module, exc)
            return KeysRefused(event.seq, exc.code, str(exc))
        log.debug("Kq-1: push %d of %s: %d keys, %d new", event.seq,
                  conn.announcement.module, len(event.keys), new)
        return KeysStored(event.seq, new)

    def _session(self, module: str) -> _ModuleSession:
        session = self.sessions.get(module)
        if session is None:
            raise KeyManagerError(f"module {module!r} is not connected")
        return session

    async def _control(self, module: str, event: Any,
                       timeout_s: float = CONTROL_TIMEOUT_S) -> _ModuleSession:
        session = self._session(module)
        session.send(event)
        async with asyncio.timeout(timeout_s):
            await session.writer.drain()
        return session

    async def start_module(self, module: str, timeout_s: float = CONTROL_TIMEOUT_S) -> bool:
        """Kq-2: asks a module to run, and no longer holds it stopped.

        Returns:
            True if the module was told; False if it is not connected but was held stopped:
            it is released, and asked to start when it connects.

        Raises:
            KeyManagerError: not connected and not held (an unknown name).
            OSError: the connection failed (TimeoutError: it did not take the request within
                ``timeout_s``); the hold, if any, is released all the same.
        """
        held = module in self.held
        self.held.discard(module)
        if held and module not in self.sessions:
            return False
        await self._control(module, StartRequested(), timeout_s)
        return True

    async def stop_module(self, module: str, *, hold: bool = True,
                          timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        """Kq-2: asks a module to stop: it ends the block in flight and starts no new one.

        Args:
            hold: keep it stopped when it reconnects (False: a reconnecting module is asked to
                start, as when the key manager itself stops and comes back). A module is held
                only once it took the request.

        Raises:
            KeyManagerError: the module is not connected (nothing is held).
            OSError: the connection failed (TimeoutError: it did not take the request within
                ``timeout_s``); it is not held.
        """
        session = self._session(module)
        was_held = module in self.held
        if hold:
            # Before sending: a module that drops and reconnects meanwhile must find the hold.
            self.held.add(module)
        try:
            session.send(StopRequested())
            async with asyncio.timeout(timeout_s):
                await session.writer.drain()
        except OSError:
            if not was_held:
                self.held.discard(module)
            raise

    async def module_status(self, module: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Kq-2: asks a module for its status and waits for the report."""
        session = self.sessions.get(module)
        if session is None:
            raise KeyManagerError(f"module {module!r} is not connected")
        session.status_seq += 1
        seq = session.status_seq
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        session.status_waiters[seq] = waiter
        try:
            async with asyncio.timeout(timeout_s):
                await self._control(module, StatusRequested(seq), timeout_s)
                return await waiter
        finally:
            session.status_waiters.pop(seq, None)


ControlHandler = Callable[[StartRequested | StopRequested], Awaitable[None]]
StatusHandler = Callable[[], dict[str, Any]]


class Kq1Client:
    """The QKD module's end: pushes keys, keeps them until acknowledged, reconnects.

    Args:
        path: the key manager's socket file.
        module: this module's name.
        link: the QKD link it runs.
        pool: the peer node the keys are shared with.
        on_control: called for Kq-2 start and stop requests.
        status: called for Kq-2 status requests; returns the report.
    """

    def __init__(self, path: str | Path, module: str, link: str, pool: str, *,
                 on_control: ControlHandler | None = None,
                 status: StatusHandler | None = None) -> None:
        self.path = Path(path)
        self.announcement = ModuleAnnounced(module, link, pool)
        self.on_control = on_control
        self.status = status
        self._conn: Kq1Connection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._seq = 0
        self._waiters: dict[int, asyncio.Future[KeysStored | KeysRefused]] = {}
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        # When the key manager welcomed the current connection (loop time; None: not yet).
        self._welcomed_at: float | None = None

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connects (retrying with back-off until ``timeout_s``) and announces the module."""
        delay = RECONNECT_FIRST_S
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                break
            except OSError as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise ConnectionError(f"Kq-1: cannot reach the key manager at {self.path}: "
                                          f"{exc}") from exc
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX_S)
        conn = Kq1Connection(Role.MODULE)
        self._welcomed_at = None
        writer.write(conn.send(self.announcement))
        await writer.drain()
        self._conn, self._writer = conn, writer
        self._reader_task = asyncio.create_task(self._read(reader, conn))

    async def keep_connected(self) -> None:
        """Stays connected: reconnects with back-off whenever the connection is lost, so the
        key manager can reach the module over Kq-2 even when it has no keys to push. Runs until
        cancelled.

        Every reconnect waits first; the wait doubles up to :data:`RECONNECT_MAX_S` and starts
        again from :data:`RECONNECT_FIRST_S` only after a connection the key manager welcomed
        lasted :data:`STABLE_CONNECTION_S`."""
        loop = asyncio.get_running_loop()
        delay = RECONNECT_FIRST_S
        while True:
            if self._conn is None:
                failed = False
                async with self._lock:  # push() connects under the same lock
                    if self._conn is None:
                        try:
                            await self.connect(timeout_s=0.0)
                        except (ConnectionError, OSError):
                            failed = True
                if failed:  # wait without the lock: a push may connect meanwhile
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RECONNECT_MAX_S)
                    continue
            task = self._reader_task
            if task is not None:
                await asyncio.wait([task])
            welcomed = self._welcomed_at
            if welcomed is not None and loop.time() - welcomed >= STABLE_CONNECTION_S:
                delay = RECONNECT_FIRST_S
            await asyncio.sleep(delay)
            delay = min(2 * delay, RECONNECT_MAX_S)

    async def _read(self, reader: asyncio.StreamReader, conn: Kq1Connection) -> None:
        try:
            while data := await reader.read(READ_CHUNK):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    await self._handle(event)
        except (ConnectionError, ProtocolError) as exc:
            log.warning("Kq-1: connection to the key manager lost: %s", exc)
        finally:
            self._conn = None
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("Kq-1: connection lost"))
                    # Marked as seen: a push that was cancelled meanwhile must not make asyncio
                    # log "exception never retrieved"; a waiting push still gets it.
                    waiter.exception()
            self._waiters.clear()

    async def _handle(self, event: Any) -> None:
        if isinstance(event, KmWelcomed):
            self._welcomed_at = asyncio.get_running_loop().time()
            self._connected.set()
        elif isinstance(event, KeysStored | KeysRefused):
            waiter = self._waiters.pop(event.seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        elif isinstance(event, StartRequested | StopRequested):
            if self.on_control is not None:
                await self.on_control(event)
        elif isinstance(event, StatusRequested) and self._conn is not None \
                and self._writer is not None:
            report = self.status() if self.status is not None else {}
            self._writer.write(self._conn.send(StatusReported(event.seq, report)))

    async def push(self, keys: Sequence[LinkKey], timeout_s: float = 30.0) -> int:
        """Pushes keys and returns once the key manager has them durably (the number new).

        Reconnects and pushes again after a lost connection until ``timeout_s``.

        Raises:
            Kq1Refused: the key manager refused them (e.g. its store is full); nothing stored.
            ConnectionError / TimeoutError: no acknowledgement within ``timeout_s``.
        """
        async with self._lock:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError("Kq-1: no acknowledgement from the key manager within "
                                       f"{timeout_s} s")
                try:
                    if self._conn is None:
                        self._connected.clear()
                        await self.connect(left)
                    async with asyncio.timeout(left):
                        answer = await self._push_once(keys)
                except (ConnectionError, OSError) as exc:
                    log.info("Kq-1: push interrupted (%s); reconnecting", exc)
                    self._conn = None
                    await asyncio.sleep(RECONNECT_FIRST_S)
                    continue
                if isinstance(answer, KeysRefused):
                    raise Kq1Refused(answer.code, answer.reason)
                return answer.new

    async def _push_once(self, keys: Sequence[LinkKey]) -> KeysStored | KeysRefused:
        conn, writer = self._conn, self._writer
        if conn is None or writer is None:
            raise ConnectionError("Kq-1: not connected")
        self._seq += 1
        waiter: asyncio.Future[KeysStored | KeysRefused] = \
            asyncio.get_running_loop().create_future()
        self._waiters[self._seq] = waiter
        writer.write(conn.send(KeysPushed(self._seq, tuple(keys))))
        await writer.drain()
        return await waiter

    async def close(self) -> None:
        """Closes the connection."""
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._conn = self._writer = self._reader_task = None
