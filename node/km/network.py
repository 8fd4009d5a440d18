"""What the key manager does over Kx: pool synchronisation, routed supply notifications, and
end-to-end key relay by hop-by-hop one-time pad.

:class:`KxNetwork` is the one thing needed from the I/O layer: send a request to an adjacent
node and wait for its answer. :class:`KxAgent` holds the logic and is what the I/O layer calls
with the requests it receives.

Relay of an ``n``-byte key from ``O`` to ``D`` on the route ``O, N1, ..., D``:

1. ``O`` draws the key ``K`` from the operating system's CSPRNG and stores it durably as a
   pre-activation key of pool ``D`` (so a crash cannot make it reappear as another key);
2. each hop ``X -> Y`` consumes ``n`` fresh bytes ``L`` of the link key ``X`` shares with ``Y``
   (a plan, exactly like a supply key, so ``Y`` cuts the same bytes) and sends ``K xor L``;
   the link-key bytes are destroyed at both ends when used, so none is ever used twice;
3. an intermediate node recovers ``K`` in memory only, re-encrypts it for the next hop and
   forgets it (nothing of ``K`` is written to its store);
4. ``D`` stores ``K`` as an active key of pool ``O`` with the relay's ID and answers; the
   answers travel back hop by hop, and ``O`` activates ``K``. ``D`` also sends a relay
   completion notification (:class:`~qkdnode.node.protocol.kx.RelayCompleted`) to ``O``, routed
   like any request (collected for :data:`COMPLETION_BATCH_S` into one notification for many
   relays), so that ``O`` learns of the completion even when an answer on the way back was
   lost (an intermediate node restarted after forwarding).

Each node makes one durable commit per relay before it sends (the origin a second, when the
answer activates ``K``): the origin stores ``K`` and takes the first pad together
(:meth:`~.store.SqliteKeyStore.relay_begin`), an intermediate node consumes the incoming pad and
takes the next one together (``relay_forward``), the destination consumes its pad and stores
``K`` together (``relay_end``). A pad is durably consumed before anything encrypted with it
leaves the node, so a crash can never make a node use the same bytes again.

A hop that fails (no answer, no key) makes ``O`` try the next best route without that hop, up to
:data:`MAX_ROUTE_ATTEMPTS` routes. The failed relay's ``K`` stays pre-activation at ``O`` (never
usable) until its completion notification arrives or :data:`RELAY_CONFIRM_S` pass, after which
the store's expiry destroys it; so the ends agree on every relayed key.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from ..errors import KeyManagerError, PeerUnavailable
from ..protocol.kx import (
    Answered,
    LinkStateAdvertised,
    PoolAnswered,
    PoolOffered,
    RelayCompleted,
    RelayForwarded,
    SupplyNotified,
)
from .manager import KeyManager
from .records import KeyState, LinkKey, SupplyPlan
from .routing import LinkStateDb, NoRoute

__all__ = ["KxAgent", "KxNetwork", "RoutedPeer"]

log = logging.getLogger(__name__)

MAX_ROUTE_ATTEMPTS = 3
# A relayed key not confirmed by its destination within a minute is destroyed at the origin
# (the completion notification is retried for several seconds; a minute covers restarts).
RELAY_CONFIRM_S = 60.0
# The completion notification is sent this many times, this far apart, until answered.
COMPLETION_ATTEMPTS = 5
# The refusal of a completion notification naming relayed keys the origin gave up (unconfirmed
# in time): the destination destroys its copies, so both ends agree.
RELAY_ABANDONED = "relay_abandoned"
COMPLETION_RETRY_S = 1.0
# A finished relay hop is remembered this long, so a retransmitted hop (a Kx request is sent
# at most kx.MAX_ATTEMPTS times, kx.RETRY_S apart) gets the same answer and is not relayed
# twice; then it is forgotten, so a long-running node's memory does not grow with every relay.
RELAY_MEMORY_S = 2 * RELAY_CONFIRM_S
# A destination collects the completions of this long into one notification per origin: one
# message along the route for many relays instead of one per relay (which, sent while the next
# relay runs, cost every node on the route a third of its CPU time per relay and doubled the
# median relay latency in bench_relay). The origin needs it only when an answer was lost, and
# waits RELAY_CONFIRM_S for it.
COMPLETION_BATCH_S = 0.25
# Relay IDs per notification (a frame of ~40 kB).
MAX_COMPLETIONS_PER_NOTIFICATION = 1000


class KxNetwork(Protocol):
    """Sends one Kx request to an adjacent node and returns its answer."""

    async def request(self, peer: str, event: PoolOffered | SupplyNotified | RelayForwarded
                      | RelayCompleted) -> Answered | PoolAnswered:
        """Raises PeerUnavailable when the peer does not answer."""
        ...


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _raise_for(answer: Answered | PoolAnswered, what: str) -> None:
    if isinstance(answer, Answered) and not answer.ok:
        raise KeyManagerError(f"{what} refused ({answer.code}): {answer.reason}")


class RoutedPeer:
    """A :class:`~.manager.PeerLink` to any node: supply notifications go hop by hop."""

    def __init__(self, agent: KxAgent, destination: str) -> None:
        self.agent = agent
        self.destination = destination

    async def notify_supply(self, plans: Sequence[SupplyPlan]) -> None:
        await self.agent.forward_supply(SupplyNotified(0, self.agent.node, self.destination,
                                                       tuple(plans)))


class KxAgent:
    """The key manager's Kx logic.

    Args:
        manager: the key manager (its store and SAE map).
        network: the Kx connections to adjacent nodes.
        adjacent: the adjacent nodes (those this node has QKD links and Kx connections with).
    """

    def __init__(self, manager: KeyManager, network: KxNetwork, adjacent: Sequence[str]) -> None:
        self.manager = manager
        self.network = network
        self.node = manager.node
        self.adjacent = tuple(adjacent)
        self.links = LinkStateDb()
        # Sequence numbers start from the clock in ms, so a restarted node's advertisements
        # are newer than the ones its peers remember from before the restart.
        self._lsa_seq = int(manager.clock() * 1000)
        self._relays: dict[uuid.UUID, asyncio.Future[Answered]] = {}
        # Finished relay hops, oldest first: (clock when finished, relay ID), for pruning.
        self._relays_done: deque[tuple[float, uuid.UUID]] = deque()
        self._background: set[asyncio.Task[None]] = set()
        # Completions not yet notified, per origin, and the task that will send them.
        self._completions: dict[str, list[uuid.UUID]] = {}
        self._notifiers: dict[str, asyncio.Task[None]] = {}
        # Relays whose completion is queued or being sent (resume_completions skips them).
        self._owed: set[uuid.UUID] = set()
        # Fetches offered keys this end lacks from elsewhere (a vendor box's ETSI 014, see
        # .vendor) before a pool offer is answered.
        self.importer: Callable[[str, Sequence[uuid.UUID]], Awaitable[int]] | None = None
        if manager.peer_resolver is None:
            manager.peer_resolver = self.peer_link
        if manager.key_source is None:
            manager.key_source = self.ensure_key

    # --- link states and routes -------------------------------------------------------------

    def local_levels(self) -> dict[str, int]:
        """Available key bytes on each adjacent link."""
        levels = self.manager.store.levels()
        return {peer: levels[peer].available_bytes if peer in levels else 0
                for peer in self.adjacent}

    def advertisement(self) -> LinkStateAdvertised:
        """This node's link state, to flood."""
        self._lsa_seq += 1
        levels = self.local_levels()
        self.links.set_local(self.node, levels)
        return LinkStateAdvertised(self.node, self._lsa_seq, tuple(sorted(levels.items())))

    def on_link_state(self, event: LinkStateAdvertised) -> bool:
        """Takes a flooded advertisement; True if it is new (forward it to the other peers)."""
        if event.origin == self.node:
            return False
        return self.links.update(event.origin, event.seq, event.links)

    def next_hop(self, destination: str) -> str:
        """The adjacent node to send a request for ``destination`` to."""
        if destination in self.adjacent:
            return destination
        self.links.set_local(self.node, self.local_levels())
        try:
            return self.links.route(self.node, destination, 0)[1]
        except NoRoute:
            raise PeerUnavailable(f"no route to node {destination!r}") from None

    def peer_link(self, destination: str) -> RoutedPeer:
        """A PeerLink for the key manager's supply to SAEs at ``destination``."""
        return RoutedPeer(self, destination)

    # --- pool synchronisation ---------------------------------------------------------------

    async def sync_pool(self, peer: str) -> int:
        """Offers our pre-activation keys of ``peer``'s pool; activates those it holds too.

        Returns:
            How many keys became active here.
        """
        ids = await asyncio.to_thread(self.manager.store.link_key_ids, peer,
                                      KeyState.PRE_ACTIVATION)
        if not ids:
            return 0
        answer = await self.network.request(peer, PoolOffered(0, self.node, tuple(ids)))
        _raise_for(answer, "pool synchronisation")
        if not isinstance(answer, PoolAnswered):
            return 0
        offered = set(ids)
        held = [k for k in answer.held if k in offered]
        return await self.manager.activate(peer, held) if held else 0

    async def on_pool_offer(self, from_node: str, event: PoolOffered) -> PoolAnswered:
        """The peer's offer: activate what we hold of it, and say which."""
        store = self.manager.store
        if self.importer is not None:
            try:
                await self.importer(from_node, event.key_ids)
            except KeyManagerError as exc:
                log.warning("pool offer from %s: could not import keys: %s", from_node, exc)
        states = await asyncio.to_thread(store.link_key_states, from_node, event.key_ids)
        held = [k for k in event.key_ids
                if states.get(k) in (KeyState.PRE_ACTIVATION, KeyState.ACTIVE)]
        to_activate = [k for k in held if states[k] is KeyState.PRE_ACTIVATION]
        if to_activate:
            await self.manager.activate(from_node, to_activate)
        return PoolAnswered(event.req, tuple(held))

    # --- supply notifications ---------------------------------------------------------------

    async def forward_supply(self, event: SupplyNotified) -> None:
        """Sends a supply notification towards its destination and waits for the commit."""
        answer = await self.network.request(self.next_hop(event.destination), event)
        _raise_for(answer, "key supply notification")

    async def on_supply(self, from_node: str, event: SupplyNotified) -> Answered:
        """A supply notification: apply it here, or pass it on."""
        del from_node
        try:
            if event.destination == self.node:
                await self.manager.on_supply_notification(event.origin, event.plans)
            else:
                await self.forward_supply(replace(event, req=0))
        except KeyManagerError as exc:
            return Answered(event.req, False, exc.code, str(exc))
        return Answered(event.req, True)

    # --- relay ------------------------------------------------------------------------------

    async def ensure_key(self, pool: str, need_bytes: int) -> None:
        """Before a supply to SAEs at a non-adjacent node: relays the key it lacks.

        Adjacent pools are left alone (their key comes from the QKD link); a relay failure
        surfaces as :class:`PeerUnavailable`, a 503 to the application.
        """
        if pool in self.adjacent:
            return
        levels = await asyncio.to_thread(self.manager.store.levels)
        have = levels[pool].available_bytes if pool in levels else 0
        if have < need_bytes:
            await self.relay_key(pool, need_bytes - have)

    async def _send(self, to: str, relay_id: uuid.UUID, origin: str, destination: str,
                    route: tuple[str, ...], plan: SupplyPlan, pad: bytes, key: bytes
                    ) -> Answered:
        """Sends ``key`` to ``to`` encrypted with ``pad`` (bytes of the link to ``to``, which
        ``plan`` names and this node's store has consumed durably before)."""
        event = RelayForwarded(0, relay_id, origin, destination, route, plan, _xor(key, pad))
        answer = await self.network.request(to, event)
        assert isinstance(answer, Answered)
        return answer

    async def relay_key(self, destination: str, size_bytes: int) -> uuid.UUID:
        """Establishes a key with a non-adjacent node through trusted nodes.

        Returns:
            The key's ID: an active key of pool ``destination`` at both ends.

        Raises:
            PeerUnavailable: no route worked.
        """
        store = self.manager.store
        failed: list[tuple[str, str]] = []
        last = "no route tried"
        for _ in range(MAX_ROUTE_ATTEMPTS):
            # In a thread: the store's lock may be held by a commit or a WAL truncation, and
            # the event loop must go on serving the other requests meanwhile.
            self.links.set_local(self.node, await asyncio.to_thread(self.local_levels))
            try:
                route = tuple(self.links.route(self.node, destination, size_bytes, failed))
            except NoRoute as exc:
                last = str(exc)
                break
            relay_id = uuid.uuid4()
            key = secrets.token_bytes(size_bytes)
            try:
                # K (pre-activation) and the first hop's pad in one durable commit.
                plan, pad = await asyncio.to_thread(
                    store.relay_begin, destination, LinkKey(
                        relay_id, key, link="relay:" + "-".join(route)), route[1],
                    self.manager.clock(), confirm_within_s=RELAY_CONFIRM_S)
                answer = await self._send(route[1], relay_id, self.node, destination, route,
                                          plan, pad, key)
            except (KeyManagerError, OSError) as exc:
                answer = Answered(0, False, getattr(exc, "code", "io"), str(exc))
            if answer.ok:
                await self.manager.activate(destination, [relay_id])
                log.info("relay %s to %s via %s done", relay_id, destination, "-".join(route))
                return relay_id
            # K stays pre-activation: a late completion notification may still confirm it.
            last = f"route {'-'.join(route)}: {answer.reason}"
            log.warning("relay to %s failed on %s", destination, last)
            failed.append((route[0], route[1]))
            if answer.code.startswith("hop:"):
                a, _, b = answer.code[4:].partition(">")
                failed.append((a, b))
        raise PeerUnavailable(f"relay to {destination!r} failed: {last}")

    async def on_relay(self, from_node: str, event: RelayForwarded) -> Answered:
        """One relay hop arriving from ``from_node`` (deduplicated by relay ID for
        ``RELAY_MEMORY_S`` after it finished)."""
        self._forget_relays()
        pending = self._relays.get(event.relay_id)
        if pending is not None:
            return replace(await asyncio.shield(pending), req=event.req)
        fut: asyncio.Future[Answered] = asyncio.get_running_loop().create_future()
        self._relays[event.relay_id] = fut
        try:
            answer = await self._relay_step(from_node, event)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a duplicate that never comes must not warn
            self._relays.pop(event.relay_id, None)
            raise
        fut.set_result(answer)
        self._relays_done.append((self.manager.clock(), event.relay_id))
        return replace(answer, req=event.req)

    def _forget_relays(self) -> None:
        """Drops the relay hops that finished more than ``RELAY_MEMORY_S`` ago."""
        horizon = self.manager.clock() - RELAY_MEMORY_S
        done = self._relays_done
        while done and done[0][0] < horizon:
            self._relays.pop(done.popleft()[1], None)

    async def _relay_step(self, from_node: str, event: RelayForwarded) -> Answered:
        now = self.manager.clock()
        try:
            here = event.route.index(self.node)
        except ValueError:
            return Answered(event.req, False, "not_on_route", f"{self.node} is not on the route")
        if here == 0 or event.route[here - 1] != from_node:
            return Answered(event.req, False, "not_on_route",
                            f"{from_node} is not this node's predecessor on the route")
        if event.destination == self.node:
            return await self._arrive(from_node, event, now)
        if here == len(event.route) - 1:
            return Answered(event.req, False, "not_on_route",
                            f"the route ends at {self.node}, not at {event.destination}")
        return await self._forward(from_node, event, event.route[here + 1], now)

    async def _arrive(self, from_node: str, event: RelayForwarded, now: float) -> Answered:
        """The destination: the pad consumed and K stored, active, in one durable commit."""
        def key_from(pad: bytes) -> LinkKey:
            return LinkKey(event.relay_id, _xor(event.ciphertext, pad),
                           link="relay:" + "-".join(event.route))

        try:
            refused = await asyncio.to_thread(self.manager.store.relay_end, from_node,
                                              event.plan, event.origin, key_from, now)
        except KeyManagerError as exc:
            return Answered(event.req, False, exc.code, f"at {self.node}: {exc}")
        if refused is not None:
            return Answered(event.req, False, refused.code, f"at {self.node}: {refused}")
        self._completed(event.origin, event.relay_id)
        return Answered(event.req, True)

    async def _forward(self, from_node: str, event: RelayForwarded, nxt: str, now: float
                       ) -> Answered:
        """An intermediate node: the incoming pad consumed and the next hop's taken in one
        durable commit, then K, recovered in memory only, sent on under the new pad."""
        try:
            pad, out = await asyncio.to_thread(self.manager.store.relay_forward, from_node,
                                               event.plan, nxt, now)
        except KeyManagerError as exc:
            return Answered(event.req, False, exc.code, f"at {self.node}: {exc}")
        if isinstance(out, KeyManagerError):
            return Answered(event.req, False, f"hop:{self.node}>{nxt}",
                            f"at {self.node}, towards {nxt}: {out}")
        key = _xor(event.ciphertext, pad)
        try:
            return await self._send(nxt, event.relay_id, event.origin, event.destination,
                                    event.route, *out, key)
        except (KeyManagerError, OSError) as exc:
            return Answered(event.req, False, f"hop:{self.node}>{nxt}",
                            f"at {self.node}, towards {nxt}: {exc}")
        finally:
            del key  # the relayed key is never stored on an intermediate node

    def _completed(self, origin: str, relay_id: uuid.UUID) -> None:
        """Queues a completion notification to ``origin``, sent within COMPLETION_BATCH_S."""
        if relay_id in self._owed:
            return
        self._owed.add(relay_id)
        self._completions.setdefault(origin, []).append(relay_id)
        if origin not in self._notifiers:
            task = asyncio.create_task(self._notify_completions(origin))
            self._notifiers[origin] = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _notify_completions(self, origin: str) -> None:
        try:
            await asyncio.sleep(COMPLETION_BATCH_S)
        finally:
            ids = self._completions.pop(origin, [])
            del self._notifiers[origin]   # completions from here on start another batch
        await self._send_completions(origin, ids)

    async def flush_completions(self) -> None:
        """Sends the completion notifications collected so far at once (before a stop)."""
        batches, self._completions = self._completions, {}
        await asyncio.gather(*(self._send_completions(origin, ids)
                               for origin, ids in batches.items()))

    async def _send_completions(self, origin: str, ids: list[uuid.UUID]) -> None:
        try:
            await self._send_completion_batches(origin, ids)
        finally:
            self._owed.difference_update(ids)

    async def _send_completion_batches(self, origin: str, ids: list[uuid.UUID]) -> None:
        for at in range(0, len(ids), MAX_COMPLETIONS_PER_NOTIFICATION):
            batch = ids[at:at + MAX_COMPLETIONS_PER_NOTIFICATION]
            outcome = await self._notify(RelayCompleted(0, batch[0], self.node, origin, True,
                                                        more=tuple(batch[1:])))
            if outcome == "gone" and len(batch) > 1:
                # Some of them are gone at the origin: one by one, to learn which.
                for relay_id in batch:
                    await self._settle(origin, [relay_id], await self._notify(
                        RelayCompleted(0, relay_id, self.node, origin, True)))
            else:
                await self._settle(origin, batch, outcome)

    async def _settle(self, origin: str, ids: list[uuid.UUID], outcome: str) -> None:
        """After the origin's answer: nothing owed any more; a key the origin no longer holds
        (it gave up waiting for the confirmation) is destroyed here too, so both ends agree.
        Without an answer the notification stays owed (sent again at the next start)."""
        store = self.manager.store
        if outcome == "gone":
            await asyncio.to_thread(store.destroy, ids, self.manager.clock())
            log.warning("relay %s from %s: the origin no longer holds the key; destroyed here",
                        ids[0], origin)
        if outcome in ("ok", "gone"):
            await asyncio.to_thread(store.completions_settled, ids)

    async def resume_completions(self) -> int:
        """Queues the completion notifications still owed (from before a restart, or whose
        sending found no answer) that are not queued or being sent; returns how many."""
        owed = [(relay_id, origin) for relay_id, origin in
                await asyncio.to_thread(self.manager.store.pending_completions)
                if relay_id not in self._owed]
        for relay_id, origin in owed:
            self._completed(origin, relay_id)
        return len(owed)

    async def _notify(self, done: RelayCompleted) -> str:
        """Sends ``done`` with retries: "ok" (every key is active at the origin), "gone" (the
        origin holds some of them no more) or "failed" (no answer)."""
        what = f"relay {done.relay_id}" + (f" and {len(done.more)} more" if done.more else "")
        for _ in range(COMPLETION_ATTEMPTS):
            try:
                answer = await self.network.request(self.next_hop(done.destination), done)
            except (KeyManagerError, OSError) as exc:
                log.debug("%s: completion notification: %s", what, exc)
            else:
                if isinstance(answer, Answered) and answer.ok:
                    return "ok"
                if isinstance(answer, Answered) and answer.code == RELAY_ABANDONED:
                    return "gone"
                log.debug("%s: completion notification refused: %s", what,
                          getattr(answer, "reason", answer))
            await asyncio.sleep(COMPLETION_RETRY_S)
        log.warning("%s: the origin %s was not told of the completion (told again at the next "
                    "start)", what, done.destination)
        return "failed"

    async def on_relay_completed(self, from_node: str, event: RelayCompleted) -> Answered:
        """A relay completion notification: activate the relayed keys here, or pass it on.

        Answers ok when every key it names is active here; keys unknown or destroyed here (a
        relay whose confirmation came too late) are named in a refusal, the others activated.
        """
        del from_node
        try:
            if event.destination != self.node:
                answer = await self.network.request(self.next_hop(event.destination),
                                                    replace(event, req=0))
                return replace(answer, req=event.req) if isinstance(answer, Answered) \
                    else Answered(event.req, False, "protocol", "unexpected answer")
            if not event.ok:
                return Answered(event.req, True)
            ids = event.relay_ids
            states = await asyncio.to_thread(self.manager.store.link_key_states, event.origin,
                                             ids)
            live = [k for k in ids if states.get(k) in (KeyState.PRE_ACTIVATION,
                                                        KeyState.ACTIVE)]
            if live:
                await self.manager.activate(event.origin, live)
            rest = [k for k in ids if k not in set(live)]
            abandoned = await asyncio.to_thread(self.manager.store.relays_abandoned,
                                                event.origin, rest) if rest else []
        except KeyManagerError as exc:
            return Answered(event.req, False, exc.code, str(exc))
        if abandoned:
            # Given up here (unconfirmed in time): the destination destroys its copy too. Keys
            # used and gone here are settled: the destination keeps its copy.
            return Answered(event.req, False, RELAY_ABANDONED,
                            f"{len(abandoned)} of {len(ids)} relayed keys from {event.origin} "
                            "were given up here")
        return Answered(event.req, True)

    def has_relay(self, relay_id: uuid.UUID) -> bool:
        """True if a relay with this ID passed through (or ended at) this node and finished
        less than ``RELAY_MEMORY_S`` ago (or is still running)."""
        return relay_id in self._relays

