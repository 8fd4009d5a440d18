"""Keys from a commercial QKD system's own ETSI GS QKD 014 interface, into our key manager.

A vendor's QKD box pair usually hands out keys only through ETSI 014. To let such a pair feed
our key management network, the key manager at each end acts as an SAE of its vendor box:

* the **master** end pulls keys with ``enc_keys`` (naming the other end's key manager as the
  slave SAE) and stores them as pre-activation link keys of the peer's pool, under the vendor's
  key IDs;
* Kx pool synchronisation then offers those IDs to the peer; the **slave** end, seeing IDs it
  does not hold, collects exactly those keys from its own vendor box with ``dec_keys`` before it
  answers, so both pools hold the same keys under the same IDs and activate them together.

From there the keys are ordinary link keys: supply, relay and the store's guarantees apply. The
vendor's keys pass through memory only on their way into the store.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import aiohttp

from ..errors import KeyManagerError, PeerUnavailable, RemoteProtocolError
from .etsi014_client import Etsi014Client, Etsi014Error
from .manager import KeyManager
from .records import LinkKey, SupplyKey

__all__ = ["VendorFeed", "VendorLink"]

log = logging.getLogger(__name__)

# A vendor box answers within seconds or is treated as unavailable for this round.
REQUEST_TIMEOUT_S = 10.0
# The master tops its pool up in batches of at most this many keys per enc_keys call (most
# boxes cap max_key_per_request far above it).
BATCH = 64


@dataclass(frozen=True, slots=True)
class VendorLink:
    """One end of a vendor QKD link that feeds this key manager.

    Attributes:
        peer: the node at the other end (its pool receives the keys).
        url: the vendor box's ETSI 014 base URL, e.g. ``https://qkd-a.lab:443``.
        partner_sae: the SAE ID the vendor boxes know the other end's key manager by.
        role: ``"master"`` pulls with enc_keys; ``"slave"`` collects with dec_keys.
        ssl_context: TLS towards the vendor box (its CA, our client certificate).
        key_size_bits: the key size to ask for.
        target_keys: the master keeps this many keys (awaiting or active) in the pool.
    """

    peer: str
    url: str
    partner_sae: str
    role: str
    ssl_context: ssl.SSLContext
    key_size_bits: int = 256
    target_keys: int = 1000

    def __post_init__(self) -> None:
        if self.role not in ("master", "slave"):
            raise ValueError(f"vendor link to {self.peer!r}: role must be master or slave")
        if self.key_size_bits % 8 or self.key_size_bits < 8:
            raise ValueError(f"vendor link to {self.peer!r}: key_size_bits must be a positive "
                             "multiple of 8")


def _link_keys(keys: Sequence[SupplyKey], link: VendorLink, now: float) -> list[LinkKey]:
    return [LinkKey(k.key_id, k.material, link=f"vendor:{link.url}", created_at=now)
            for k in keys]


class VendorFeed:
    """Moves keys from vendor boxes into the key manager (see the module docstring)."""

    def __init__(self, manager: KeyManager, links: Sequence[VendorLink]) -> None:
        self.manager = manager
        self.links = {link.peer: link for link in links}
        self._clients: dict[str, Etsi014Client] = {}

    def _client(self, link: VendorLink) -> Etsi014Client:
        client = self._clients.get(link.peer)
        if client is None:
            client = Etsi014Client(link.url, link.ssl_context, timeout_s=REQUEST_TIMEOUT_S)
            self._clients[link.peer] = client
        return client

    async def _ask(self, link: VendorLink, what: str, call: Awaitable[list[SupplyKey]]
                   ) -> list[SupplyKey]:
        try:
            return await call
        except (Etsi014Error, RemoteProtocolError, aiohttp.ClientError, TimeoutError,
                OSError) as exc:
            raise PeerUnavailable(f"vendor box {link.url}: {what} failed: {exc}") from None

    async def top_up(self, peer: str) -> int:
        """Master: pulls keys until the pool holds ``target_keys``. Returns the keys stored."""
        link = self.links[peer]
        if link.role != "master":
            raise ValueError(f"vendor link to {peer!r} is the slave end; it does not pull")
        levels = await asyncio.to_thread(self.manager.store.levels)
        level = levels.get(peer)
        have = 0 if level is None else level.pre_activation_keys + level.available_keys
        stored = 0
        while have < link.target_keys:
            number = min(BATCH, link.target_keys - have)
            got = await self._ask(link, "enc_keys", self._client(link).enc_keys(
                link.partner_sae, number, link.key_size_bits))
            keys = _link_keys(got, link, time.time())
            stored += await self.manager.add_link_keys(peer, keys)
            have += len(keys)
        return stored

    async def collect(self, peer: str, key_ids: Sequence[uuid.UUID]) -> int:
        """Slave: fetches the keys the peer offered that this end does not hold yet."""
        link = self.links.get(peer)
        if link is None or link.role != "slave" or not key_ids:
            return 0
        states = await asyncio.to_thread(self.manager.store.link_key_states, peer,
                                         list(key_ids))
        missing = [k for k in key_ids if k not in states]
        stored = 0
        for i in range(0, len(missing), BATCH):
            part = missing[i:i + BATCH]
            got = await self._ask(link, "dec_keys", self._client(link).dec_keys(
                link.partner_sae, part))
            stored += await self.manager.add_link_keys(peer, _link_keys(got, link, time.time()))
        return stored

    async def run(self, every_s: float = 1.0) -> None:
        """Master links: top up forever (the daemon runs this as a task)."""
        while True:
            for peer, link in self.links.items():
                if link.role == "master":
                    try:
                        n = await self.top_up(peer)
                    except KeyManagerError as exc:
                        log.warning("vendor link to %s: %s", peer, exc)
                        continue
                    if n:
                        log.info("vendor link to %s: %d keys pulled", peer, n)
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        """Closes the HTTP sessions."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
