"""The key manager's core: supply to applications on top of the key store and the peers.

:class:`KeyManager` is what the ETSI GS QKD 014 server calls (``status``, ``enc_keys``,
``dec_keys``) and what Kq-1 intake and Kx feed (``add_link_keys``, ``activate``,
``on_supply_notification``). It holds no sockets: a peer key manager is reached through a
:class:`PeerLink` (Kx in the node, a direct call in tests).

The exchange behind one ``enc_keys`` request, master SAE *m* on this node, slave *s* on peer *P*:

1. the store cuts the keys from the pool shared with *P*, records them as delivered to *m* and
   destroys its copy, in one transaction (:meth:`SqliteKeyStore.take_supply`); the keys are
   held in memory only;
2. the plans (which link-key bytes make which key ID; never key bytes) go to *P*, which applies
   them to its copies of the same link keys and commits before it answers. They are sent as
   soon as the store chose the bytes, while step 1's commit is being written: the two commits
   (one fsync each) overlap instead of adding up;
3. only when both commits are durable are the keys handed to *m*.

If either commit fails, the keys are dropped, never handed out and never returned to the pool
(*P* may have committed them before its answer was lost; its copies then expire unclaimed): a
key never serves twice and never reaches a master whose slave cannot get it. The request fails
(:class:`PeerUnavailable`, ETSI 014: 503) and can be retried.

The two ends may then disagree on which link-key bytes are used, either way: *P* committed and
this node did not (it crashed, or its commit failed), or the reverse. Bytes used at either end
are never used again: the end that still counts them as free plans them into a later request,
the other end refuses it (:class:`~qkdnode.node.errors.KeyConflict`: they were used), and that
refused request's bytes are committed as used by the planning end before the refusal arrives,
so the next request plans fresh bytes. A lost commit costs a failed request and some key
bytes, never a key.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import KeyPoolDepleted, NotAuthorized, PeerUnavailable, UnknownSae
from .records import LinkKey, PoolLevel, SupplyKey, SupplyPlan
from .store import KeyStore

__all__ = ["KeyManager", "PeerLink", "SupplyLimits", "SupplyStatus"]

# ETSI GS QKD 014 leaves these limits to the KME. 128 keys per request and 8 kbit keys bound a
# response to ~190 kB of JSON; the minimum of 8 bits is the specification's granularity.
DEFAULT_MAX_KEY_PER_REQUEST = 128
DEFAULT_MAX_KEY_SIZE_BITS = 8192
DEFAULT_MIN_KEY_SIZE_BITS = 8
# How many additional slave SAEs one request may name (beyond the one in the URL).
DEFAULT_MAX_SAE_ID_COUNT = 8
# A peer that has not confirmed a supply notification within this time is treated as down.
DEFAULT_PEER_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class SupplyLimits:
    """What a request may ask for (reported in the ETSI 014 status)."""

    key_size_bits: int = 256
    max_key_per_request: int = DEFAULT_MAX_KEY_PER_REQUEST
    max_key_size_bits: int = DEFAULT_MAX_KEY_SIZE_BITS
    min_key_size_bits: int = DEFAULT_MIN_KEY_SIZE_BITS
    max_sae_id_count: int = DEFAULT_MAX_SAE_ID_COUNT
    max_key_count: int = 100_000

    def __post_init__(self) -> None:
        for name in ("key_size_bits", "max_key_size_bits", "min_key_size_bits"):
            value = getattr(self, name)
            if value < 8 or value % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {value}")
        if not self.min_key_size_bits <= self.key_size_bits <= self.max_key_size_bits:
            raise ValueError("key sizes must satisfy min_key_size_bits <= key_size_bits <= "
                             "max_key_size_bits")
        if self.max_key_per_request < 1 or self.max_sae_id_count < 1:
            raise ValueError("max_key_per_request and max_sae_id_count must be >= 1")


@dataclass(frozen=True, slots=True)
class SupplyStatus:
    """The ETSI GS QKD 014 status of a master/slave SAE pair."""

    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int


class PeerLink(Protocol):
    """What the manager needs of the Kx connection to one peer key manager."""

    async def notify_supply(self, plans: Sequence[SupplyPlan]) -> None:
        """Sends key supply notifications; returns once the peer has committed them.

        Raises:
            PeerUnavailable: the peer did not confirm.
            KeyManagerError: the peer refused (its reason).
        """
        ...


class KeyManager:
    """Supplies keys to applications from a key store shared, pool by pool, with peer nodes.

    Args:
        store: the key store.
        node: this node's name.
        kme_id: this KME's ID (ETSI 014 ``source_KME_ID``).
        sae_nodes: every SAE ID this node may serve or name -> the node it is attached to.
        peers: peer node name -> its Kx link.
        peer_kme_ids: peer node name -> its KME ID (defaults to the node name).
        limits: request limits.
        clock: UNIX seconds (tests pass a fake).
        peer_timeout_s: how long a supply notification may take.
        link_key_confirm_s: link keys stored unconfirmed are destroyed if the peer does not
            confirm holding them within this time (``None``: they wait indefinitely).
    """

    def __init__(self, store: KeyStore, node: str, kme_id: str, sae_nodes: Mapping[str, str],
                 peers: Mapping[str, PeerLink] | None = None,
                 peer_kme_ids: Mapping[str, str] | None = None,
                 limits: SupplyLimits | None = None, clock: Callable[[], float] = time.time,
                 peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S,
                 link_key_confirm_s: float | None = None) -> None:
        self.store = store
        self.node = node
        self.kme_id = kme_id
        self.sae_nodes = dict(sae_nodes)
        self.peers = dict(peers or {})
        self.peer_kme_ids = dict(peer_kme_ids or {})
        self.limits = limits or SupplyLimits()
        self.clock = clock
        self.peer_timeout_s = peer_timeout_s
        # Link keys not activated (confirmed by the peer) within this time are destroyed.
        self.link_key_confirm_s = link_key_confirm_s
        # Reaches a node that is not in ``peers`` (set by the Kx agent: routed over Kx).
        self.peer_resolver: Callable[[str], PeerLink] | None = None
        # Tops up the key shared with a non-adjacent node by relay (set by the Kx agent).
        self.key_source: Callable[[str, int], Awaitable[None]] | None = None
        # Counts for the management port: keys received, supplied, delivered (no key data).
        self.counters: collections.Counter[str] = collections.Counter()

    # --- helpers ----------------------------------------------------------------------------

    def _node_of(self, sae: str) -> str:
        node = self.sae_nodes.get(sae)
        if node is None:
            raise UnknownSae(f"SAE {sae!r} is not known to KME {self.kme_id!r}")
        return node

    def _local(self, sae: str, what: str) -> None:
        if self._node_of(sae) != self.node:
            raise NotAuthorized(f"SAE {sae!r} is not attached to KME {self.kme_id!r} and cannot "
                                f"{what} here")

    def _pool_of(self, slaves: Sequence[str]) -> str:
        nodes = {self._node_of(s) for s in slaves}
        if len(nodes) != 1:
            raise ValueError("all slave SAEs of a request must be attached to the same KME "
                             f"(they are attached to {', '.join(sorted(nodes))})")
        (pool,) = nodes
        if pool == self.node:
            raise ValueError("the slave SAE is attached to this KME: QKD keys are shared "
                             "between two KMEs")
        return pool

    def _check_size(self, size_bits: int) -> None:
        lim = self.limits
        if size_bits % 8:
            raise ValueError("size shall be a multiple of 8")
        if not lim.min_key_size_bits <= size_bits <= lim.max_key_size_bits:
            raise ValueError(f"size must be between {lim.min_key_size_bits} and "
                             f"{lim.max_key_size_bits} bits, got {size_bits}")

    # --- ETSI GS QKD 014 --------------------------------------------------------------------

    def status(self, master_sae: str, slave_sae: str) -> SupplyStatus:
        """The status of the pair; ``stored_key_count`` counts keys of the default size.

        Raises:
            UnknownSae: an SAE is unknown.
            NotAuthorized: the master is not attached to this node.
        """
        self._local(master_sae, "ask for keys")
        pool = self._pool_of([slave_sae])
        level = self.store.levels().get(pool, PoolLevel(pool))
        lim = self.limits
        return SupplyStatus(
            source_kme_id=self.kme_id, target_kme_id=self.peer_kme_ids.get(pool, pool),
            master_sae_id=master_sae, slave_sae_id=slave_sae, key_size=lim.key_size_bits,
            stored_key_count=level.available_bytes * 8 // lim.key_size_bits,
            max_key_count=lim.max_key_count, max_key_per_request=lim.max_key_per_request,
            max_key_size=lim.max_key_size_bits, min_key_size=lim.min_key_size_bits,
            max_sae_id_count=lim.max_sae_id_count)

    async def enc_keys(self, master_sae: str, slave_saes: Sequence[str], number: int,
                       size_bits: int) -> list[SupplyKey]:
        """Makes ``number`` keys of ``size_bits`` for the master and its slaves (see the module
        docstring for the exchange).

        Raises:
            ValueError: a size or number outside the limits, or slaves on different nodes.
            UnknownSae / NotAuthorized: an unknown SAE, or a master not attached here.
            KeyPoolDepleted: not enough key shared with the slaves' node.
            PeerUnavailable: the peer did not confirm (nothing was handed out).
        """
        self._local(master_sae, "ask for keys")
        if not slave_saes:
            raise ValueError("a request names at least one slave SAE")
        if len(set(slave_saes)) != len(slave_saes):
            raise ValueError("a slave SAE is named twice")
        if len(slave_saes) - 1 > self.limits.max_sae_id_count:
            # ETSI 014's max_SAE_ID_count bounds additional_slave_SAE_IDs (beyond the URL's).
            raise ValueError(f"at most {self.limits.max_sae_id_count} additional slave SAEs "
                             "per request")
        if master_sae in slave_saes:
            raise ValueError("the master SAE cannot be its own slave")
        if not 1 <= number <= self.limits.max_key_per_request:
            raise ValueError(f"number must be between 1 and {self.limits.max_key_per_request}, "
                             f"got {number}")
        self._check_size(size_bits)
        pool = self._pool_of(slave_saes)
        peer = self.peers.get(pool)
        if peer is None and self.peer_resolver is not None:
            peer = self.peer_resolver(pool)
        if peer is None:
            raise KeyPoolDepleted(f"no Kx link to node {pool!r}: no key can be shared with it")
        if self.key_source is not None:
            await self.key_source(pool, number * size_bits // 8)
        loop = asyncio.get_running_loop()
        planned: asyncio.Future[list[SupplyPlan]] = loop.create_future()

        def _planned(plans: list[SupplyPlan]) -> None:
            if not planned.done():
                planned.set_result(plans)

        def on_planned(plans: list[SupplyPlan]) -> None:   # in the store's thread
            loop.call_soon_threadsafe(_planned, plans)

        commit = asyncio.ensure_future(asyncio.to_thread(
            self.store.take_supply, pool, master_sae, list(slave_saes), number, size_bits // 8,
            self.clock(), on_planned=on_planned))
        first: set[asyncio.Future[Any]] = {planned, commit}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not planned.done():
            planned.cancel()
            plans, keys = await commit   # refused before any byte was chosen: its error
            await self._confirm(peer, pool, plans)
        else:
            confirm = asyncio.ensure_future(self._confirm(peer, pool, planned.result()))
            # Both finish before the request does, whichever fails (no stray task).
            committed, confirmed = await asyncio.gather(commit, confirm, return_exceptions=True)
            if isinstance(committed, BaseException):
                raise committed
            if isinstance(confirmed, BaseException):
                raise confirmed
            _, keys = committed
        self.counters["delivered_to_masters"] += len(keys)
        return keys

    async def _confirm(self, peer: PeerLink, pool: str, plans: list[SupplyPlan]) -> None:
        """Sends the plans to the slaves' node; returns once it committed them."""
        try:
            async with asyncio.timeout(self.peer_timeout_s):
                await peer.notify_supply(plans)
        except TimeoutError:
            # The keys are already destroyed here and never handed out; the peer's copies, if
            # it stored them, expire unclaimed. No byte returns to the pool.
            raise PeerUnavailable(f"node {pool!r} did not confirm the key supply within "
                                  f"{self.peer_timeout_s} s") from None

    async def dec_keys(self, slave_sae: str, master_sae: str,
                       key_ids: Sequence[uuid.UUID]) -> list[SupplyKey]:
        """Hands the slave the keys its master obtained, once.

        Raises:
            KeyNotFound: an ID unknown here, already delivered, expired or destroyed.
            NotAuthorized: the caller is not a slave of those keys, or ``master_sae`` is not
                their master.
            UnknownSae: an unknown SAE.
        """
        self._local(slave_sae, "collect keys")
        self._node_of(master_sae)
        if not key_ids:
            raise ValueError("a request names at least one key ID")
        if len(key_ids) > self.limits.max_key_per_request:
            raise ValueError(f"at most {self.limits.max_key_per_request} key IDs per request")
        # One transaction checks the master of every key, then delivers (all or none).
        keys = await asyncio.to_thread(self.store.deliver, list(key_ids), slave_sae,
                                       self.clock(), master=master_sae)
        self.counters["delivered_to_slaves"] += len(keys)
        return keys

    # --- Kq-1 and Kx ------------------------------------------------------------------------

    async def add_link_keys(self, pool: str, keys: Sequence[LinkKey], *,
                            active: bool = False) -> int:
        """Stores keys from a QKD module or a relay (durable when this returns).

        Keys not stored active wait for the peer's confirmation (pool synchronisation) and are
        destroyed if it does not come within ``link_key_confirm_s`` (when set).
        """
        new = await asyncio.to_thread(
            self.store.add_link_keys, pool, keys, self.clock(), active=active,
            confirm_within_s=None if active else self.link_key_confirm_s)
        self.counters["link_keys_received"] += new
        return new

    async def activate(self, pool: str, key_ids: Sequence[uuid.UUID]) -> int:
        """Activates link keys the peer confirmed it holds too."""
        return await asyncio.to_thread(self.store.activate, pool, key_ids, self.clock())

    async def on_supply_notification(self, from_node: str, plans: Sequence[SupplyPlan]) -> None:
        """Applies a peer's supply plans (the slave KM's side; idempotent).

        Raises:
            NotAuthorized: a plan names a slave SAE not attached here, or a master SAE not
                attached to ``from_node``.
        """
        for plan in plans:
            if self._node_of(plan.master) != from_node:
                raise NotAuthorized(f"node {from_node!r} supplied key {plan.key_id} for master "
                                    f"{plan.master!r}, which is not attached to it")
            for slave in plan.slaves:
                if self._node_of(slave) != self.node:
                    raise NotAuthorized(f"key {plan.key_id} names slave {slave!r}, which is not "
                                        f"attached to {self.node!r}")
        by_recipients: dict[tuple[str, ...], list[SupplyPlan]] = {}
        for plan in plans:
            by_recipients.setdefault(plan.slaves, []).append(plan)
        for recipients, group in by_recipients.items():
            await asyncio.to_thread(self.store.reserve, from_node, group, recipients,
                                    self.clock())
