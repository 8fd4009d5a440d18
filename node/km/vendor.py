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
import base64
import binascii
import logging
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import KeyManagerError, PeerUnavailable
from .manager import KeyManager
from .records import KeyState, LinkKey

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


def _keys_from(body: Any, link: VendorLink, now: float) -> list[LinkKey]:
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise KeyManagerError(f"vendor box {link.url}: answer has no 'keys' array")
    out = []
    for entry in body["keys"]:
        try:
            key_id = uuid.UUID(str(entry["key_ID"]))
            material = base64.b64decode(str(entry["key"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeyManagerError(f"vendor box {link.url}: a key entry is malformed") from None
        if not material:
            raise KeyManagerError(f"vendor box {link.url}: key {key_id} is empty")
        out.append(LinkKey(key_id, material, link=f"vendor:{link.url}", created_at=now))
    return out


class VendorFeed:
    """Moves keys from vendor boxes into the key manager (see the module docstring)."""

    def __init__(self, manager: KeyManager, links: Sequence[VendorLink]) -> None:
        self.manager = manager
        self.links = {link.peer: link for link in links}
        self._session: aiohttp.ClientSession | None = None

    async def _call(self, link: VendorLink, path: str, body: dict[str, Any]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        url = f"{link.url.rstrip('/')}/api/v1/keys/{link.partner_sae}/{path}"
        try:
            async with self._session.post(url, json=body, ssl=link.ssl_context) as answer:
                data = await answer.json(content_type=None)
                if answer.status != 200:
                    message = data.get("message") if isinstance(data, dict) else None
                    raise PeerUnavailable(f"vendor box {link.url}: {path} answered "
                                          f"{answer.status} ({message})")
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PeerUnavailable(f"vendor box {link.url}: {path} failed: {exc}") from None

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
            body = await self._call(link, "enc_keys",
                                    {"number": number, "size": link.key_size_bits})
            keys = _keys_from(body, link, time.time())
            stored += await self.manager.add_link_keys(peer, keys)
            have += len(keys)
        return stored

    async def collect(self, peer: str, key_ids: Sequence[uuid.UUID]) -> int:
        """Slave: fetches the keys the peer offered that this end does not hold yet."""
        link = self.links.get(peer)
        if link is None or link.role != "slave" or not key_ids:
            return 0
        store = self.manager.store
        known = set(await asyncio.to_thread(store.link_key_ids, peer, KeyState.PRE_ACTIVATION))
        known |= set(await asyncio.to_thread(store.link_key_ids, peer, KeyState.ACTIVE))
        missing = [k for k in key_ids if k not in known]
        stored = 0
        for i in range(0, len(missing), BATCH):
            part = missing[i:i + BATCH]
            body = await self._call(link, "dec_keys",
                                    {"key_IDs": [{"key_ID": str(k)} for k in part]})
            stored += await self.manager.add_link_keys(peer, _keys_from(body, link,
                                                                       time.time()))
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
        """Closes the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
