"""Kx over TCP with mutual TLS between node certificates: moves the bytes of
:mod:`qkdnode.node.protocol.kx` and hands requests to the :class:`~qkdnode.node.km.network.KxAgent`.

Each node listens for its peers and dials each configured peer. Requests this node makes go
over the connection it dialed; requests a peer makes arrive over the one the peer dialed (both
directions are the same code). The TLS handshake requires a certificate from the configured CA;
then the peer's certificate subject CN must equal the node name its ``Hello`` gives and a
configured peer's name, or the connection is dropped.

Resends and timeouts come from the protocol's timers; a request that times out (or whose
connection is gone and does not come back in time) fails with
:class:`~qkdnode.node.errors.PeerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from ..errors import KeyManagerError, PeerUnavailable, ProtocolError
from ..km.network import KxAgent
from ..protocol.kx import (
    NEED_DATA,
    Answered,
    Hello,
    KxConnection,
    LinkStateAdvertised,
    PoolAnswered,
    PoolOffered,
    RelayCompleted,
    RelayForwarded,
    RequestTimedOut,
    SupplyNotified,
)

__all__ = ["KxService", "peer_common_name"]

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
# Dialling a peer that is down: first retry after 0.2 s, doubling up to 5 s.
DIAL_FIRST_S = 0.2
DIAL_MAX_S = 5.0
# How long a request waits for its connection to come (back) up.
CONNECT_WAIT_S = 5.0
# Link-state advertisements are re-sent this often (they also carry liveness).
ADVERTISE_EVERY_S = 2.0


def peer_common_name(writer: asyncio.StreamWriter) -> str | None:
    """The subject CN of the TLS peer's certificate."""
    cert: Any = writer.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _Channel:
    """One TLS connection to a peer (dialled or accepted)."""

    def __init__(self, service: KxService, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.conn = KxConnection(service.node)
        self.peer: str | None = None
        self.ready = asyncio.Event()
        self.waiters: dict[int, asyncio.Future[Answered | PoolAnswered]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def write(self, data: bytes) -> None:
        if data:
            self.writer.write(data)

    async def run(self) -> None:
        cn = peer_common_name(self.writer)
        self.write(self.conn.hello())
        timer = asyncio.create_task(self._timers())
        try:
            while data := await self.reader.read(READ_CHUNK):
                self.conn.receive_data(data)
                while (event := self.conn.next_event()) is not NEED_DATA:
                    if isinstance(event, Hello):
                        if event.node != cn or event.node not in self.service.peers:
                            log.warning("Kx: dropping a connection: Hello says %r, "
                                        "certificate says %r", event.node, cn)
                            return
                        self.peer = event.node
                        self.ready.set()
                    else:
                        self._handle(event)
                await self.writer.drain()
        except (ProtocolError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) \
                as exc:
            log.warning("Kx: connection with %s ended: %s", self.peer or "?", exc)
        finally:
            timer.cancel()
            for task in self.tasks:
                task.cancel()
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(PeerUnavailable(f"connection to {self.peer} lost"))
                    fut.exception()  # seen: a cancelled request must not log it as lost
            self.writer.close()

    def _handle(self, event: Any) -> None:
        if isinstance(event, Answered | PoolAnswered):
            fut = self.waiters.pop(event.req, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, RequestTimedOut):
            fut = self.waiters.pop(event.req, None)
            if fut is not None and not fut.done():
                fut.set_exception(PeerUnavailable(f"node {self.peer!r} did not answer"))
        elif isinstance(event, LinkStateAdvertised):
            if self.service.agent.on_link_state(event):
                self.service.flood(event, exclude=self.peer)
        else:
            task = asyncio.create_task(self._serve(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, event: PoolOffered | SupplyNotified | RelayForwarded
                     | RelayCompleted) -> None:
        agent, peer = self.service.agent, self.peer
        assert peer is not None
        answer: Answered | PoolAnswered
        try:
            if isinstance(event, PoolOffered):
                answer = await agent.on_pool_offer(peer, event)
            elif isinstance(event, SupplyNotified):
                answer = await agent.on_supply(peer, event)
            elif isinstance(event, RelayForwarded):
                answer = await agent.on_relay(peer, event)
            else:
                answer = await agent.on_relay_completed(peer, event)
        except KeyManagerError as exc:
            answer = Answered(event.req, False, exc.code, str(exc))
        if not self.conn.closed:
            self.write(self.conn.send_answer(answer))
            await self.writer.drain()

    async def _timers(self) -> None:
        while True:
            deadline = self.conn.get_timer()
            now = time.monotonic()
            await asyncio.sleep(0.05 if deadline is None else max(0.0, deadline - now))
            self.write(self.conn.handle_timer(time.monotonic()))
            for event in self.conn.pop_timeouts():
                self._handle(event)

    async def request(self, event: Any) -> Answered | PoolAnswered:
        req = self.conn.next_request_id()
        event = dataclasses.replace(event, req=req)
        fut: asyncio.Future[Answered | PoolAnswered] = \
            asyncio.get_running_loop().create_future()
        self.waiters[req] = fut
        self.write(self.conn.send_request(event, time.monotonic()))
        await self.writer.drain()
        return await fut


class KxService:
    """Kx for one node: listens, dials its peers, and implements ``KxNetwork`` for the agent.

    Build it, give it to the :class:`~qkdnode.node.km.network.KxAgent` as its network, then
    :meth:`bind` the agent and :meth:`start`.

    Args:
        node: this node's name (its certificate's CN).
        host, port: where to listen (port 0: any; see :attr:`port` after :meth:`start`).
        peers: adjacent node name -> (host, port) to dial (more with :meth:`add_peer`).
        server_ssl, client_ssl: TLS contexts (both require and check certificates).
        retry_s: resend period of the protocol.
    """

    def __init__(self, node: str, host: str, port: int,
                 peers: Mapping[str, tuple[str, int]], server_ssl: ssl.SSLContext,
                 client_ssl: ssl.SSLContext, retry_s: float = 1.0) -> None:
        self.node = node
        self._agent: KxAgent | None = None
        self.host, self.port = host, port
        self.peers = dict(peers)
        self.server_ssl, self.client_ssl = server_ssl, client_ssl
        self.retry_s = retry_s
        self._server: asyncio.AbstractServer | None = None
        self._out: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._channels: set[_Channel] = set()

    @property
    def agent(self) -> KxAgent:
        """The agent requests are handed to."""
        if self._agent is None:
            raise RuntimeError("KxService: bind() an agent before start()")
        return self._agent

    def bind(self, agent: KxAgent) -> None:
        """Sets the agent that serves the peers' requests."""
        if agent.node != self.node:
            raise ValueError(f"agent of node {agent.node!r} bound to the Kx service of "
                             f"{self.node!r}")
        self._agent = agent

    def add_peer(self, peer: str, host: str, port: int) -> None:
        """Adds an adjacent node; dials it at once if the service runs."""
        self.peers[peer] = (host, port)
        if self._server is not None:
            self._spawn(self._dial(peer))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Listens and starts dialling the peers."""
        if self._agent is None:
            raise RuntimeError("KxService: bind() an agent before start()")
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  ssl=self.server_ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        for peer in self.peers:
            self._spawn(self._dial(peer))
        self._spawn(self._advertise())

    async def stop(self) -> None:
        """Closes everything."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for ch in list(self._channels):
            ch.writer.close()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ch = _Channel(self, reader, writer)
        ch.conn.retry_s = self.retry_s
        self._channels.add(ch)
        try:
            await ch.run()
        except asyncio.CancelledError:
            pass  # the loop is shutting down; asyncio's stream callback must not see it
        finally:
            self._channels.discard(ch)

    async def _dial(self, peer: str) -> None:
        host, port = self.peers[peer]
        delay = DIAL_FIRST_S
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self.client_ssl, server_hostname=peer)
            except (OSError, ssl.SSLError) as exc:
                log.debug("Kx: cannot reach %s at %s:%d yet: %s", peer, host, port, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, DIAL_MAX_S)
                continue
            delay = DIAL_FIRST_S
            ch = _Channel(self, reader, writer)
            ch.conn.retry_s = self.retry_s
            self._channels.add(ch)
            self._out[peer] = ch
            try:
                await ch.run()
            finally:
                self._channels.discard(ch)
                if self._out.get(peer) is ch:
                    del self._out[peer]
            await asyncio.sleep(DIAL_FIRST_S)

    async def _advertise(self) -> None:
        while True:
            self.flood(self.agent.advertisement(), exclude=None)
            await asyncio.sleep(ADVERTISE_EVERY_S)

    def flood(self, event: LinkStateAdvertised, exclude: str | None) -> None:
        """Sends a link-state advertisement to every connected peer but ``exclude``."""
        for peer, ch in list(self._out.items()):
            if peer != exclude and ch.ready.is_set() and not ch.conn.closed:
                ch.write(ch.conn.send_request(event, time.monotonic()))

    def peer_up(self, peer: str) -> bool:
        """True if the connection this node dialled to ``peer`` is up and introduced."""
        ch = self._out.get(peer)
        return ch is not None and ch.ready.is_set() and not ch.conn.closed

    async def connected(self, peer: str, timeout_s: float = CONNECT_WAIT_S) -> None:
        """Waits until the connection to ``peer`` is up and introduced."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.peer_up(peer):
                return
            if time.monotonic() >= deadline:
                raise PeerUnavailable(f"no Kx connection to node {peer!r}")
            await asyncio.sleep(0.02)

    async def request(self, peer: str, event: PoolOffered | SupplyNotified | RelayForwarded
                      | RelayCompleted) -> Answered | PoolAnswered:
        """Sends one request to an adjacent node (KxNetwork)."""
        if peer not in self.peers:
            raise PeerUnavailable(f"node {peer!r} is not an adjacent peer of {self.node!r}")
        await self.connected(peer)
        return await self._out[peer].request(event)
