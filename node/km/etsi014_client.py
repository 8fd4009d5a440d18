"""An ETSI GS QKD 014 client: what an SAE (or a KM pulling keys from a vendor KME) uses.

It speaks to any KME that implements the specification, ours or a vendor's, over HTTPS with a
client certificate, and trusts nothing it gets back: every answer is checked against the
specification's formats and against the request (number of keys, their size, the key IDs asked
for) before it is returned, and a KME that answers otherwise raises
:class:`~qkdnode.node.errors.RemoteProtocolError`.

Error answers raise :class:`Etsi014Error`, decided by the HTTP status alone: implementations
word their messages differently, so the message is kept for people, never parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import RemoteProtocolError
from .etsi014_schema import API_PREFIX
from .manager import SupplyStatus
from .records import SupplyKey

__all__ = ["DEFAULT_TIMEOUT_S", "Etsi014Client", "Etsi014Error", "KmeStatus"]

# A KME answers enc_keys only after its peer KME confirmed the keys (one Kx round trip, bounded
# by the peer timeout, 5 s in ours); twice that covers a slow vendor box without hanging forever.
DEFAULT_TIMEOUT_S = 10.0
# The largest answer read: 128 keys of 8 kbit in base64 are ~180 kB; vendors allow more.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

_STATUS_INTS = ("key_size", "stored_key_count", "max_key_count", "max_key_per_request",
                "max_key_size", "min_key_size", "max_SAE_ID_count")


class Etsi014Error(Exception):
    """A KME answered with an error status.

    Attributes:
        status: the HTTP status (400, 401, 503; anything else from a non-conforming KME).
        message: the Error's ``message`` (for people; do not match on it).
        details: the Error's ``details``.
        temporary: True for 503: the request may succeed if retried later.
    """

    def __init__(self, status: int, message: str, details: Sequence[Any] = ()) -> None:
        super().__init__(status, message, list(details))
        self.status = status
        self.message = message
        self.details = list(details)

    @property
    def temporary(self) -> bool:
        return self.status == 503

    def __str__(self) -> str:
        return f"KME answered {self.status}: {self.message}"


# A Status object (ETSI GS QKD 014, clause 6.1), sizes in bits: the same record the key manager
# serves.
KmeStatus = SupplyStatus


def _bad_answer(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"ETSI 014 KME answer: {what}")


def _keys(body: object, *, count: int | None = None, size_bits: int | None = None,
          ids: Sequence[uuid.UUID] | None = None) -> list[SupplyKey]:
    """Checks a Key container against what was asked for; the keys in the KME's order."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise _bad_answer("not a Key container (no keys array)")
    out = []
    for entry in body["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("key_ID"), str) \
                or not isinstance(entry.get("key"), str):
            raise _bad_answer("a keys entry lacks a key_ID or a key string")
        try:
            key_id = uuid.UUID(entry["key_ID"])
            material = base64.b64decode(entry["key"], validate=True)
        except (ValueError, binascii.Error):
            raise _bad_answer(f"key {entry['key_ID'][:40]!r}: bad key_ID or base64") from None
        if not material:
            raise _bad_answer(f"key {key_id} is empty")
        if size_bits is not None and len(material) * 8 != size_bits:
            raise _bad_answer(f"key {key_id} has {len(material) * 8} bits, asked for "
                              f"{size_bits}")
        out.append(SupplyKey(key_id, material))
    got = [k.key_id for k in out]
    if len(set(got)) != len(got):
        raise _bad_answer("a key ID appears twice")
    if count is not None and len(out) != count:
        raise _bad_answer(f"{len(out)} keys, asked for {count}")
    if ids is not None and set(got) != set(ids):
        raise _bad_answer("the key IDs differ from those asked for")
    return out


class Etsi014Client:
    """One SAE's connection to one KME.

    Args:
        base_url: the KME's key API, ``https://host:port/api/v1/keys`` (or its host part
            only, ``https://host:port``, to which the specification's path is added).
        ssl_context: a client context holding the SAE's certificate
            (:func:`~.etsi014_tls.make_client_ssl_context`).
        timeout_s: the longest any request may take.

    Use ``async with Etsi014Client(...) as kme:``; connections are kept alive between requests.
    """

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not base_url.startswith("https://"):
            raise ValueError(f"an ETSI 014 KME is reached over https://, got {base_url!r}")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith(API_PREFIX) else base + API_PREFIX
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Etsi014Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the kept-alive connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def _call(self, method: str, sae: str, endpoint: str, *,
                    query: Mapping[str, str] | None = None,
                    body: Mapping[str, Any] | None = None) -> object:
        url = f"{self.base_url}/{quote(sae, safe='')}/{endpoint}"
        async with self._http().request(method, url, params=query, json=body) as resp:
            raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                raise _bad_answer(f"more than {MAX_RESPONSE_BYTES} bytes")
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            if resp.status != 200:
                message, details = f"HTTP {resp.status}", []
                if isinstance(data, dict):
                    message = str(data.get("message", message))[:500]
                    if isinstance(data.get("details"), list):
                        details = data["details"]
                raise Etsi014Error(resp.status, message, details)
            if data is None:
                raise _bad_answer("status 200 without a JSON body")
            return data

    async def status(self, slave_sae: str) -> KmeStatus:
        """The status of the keys this SAE (master) shares with ``slave_sae``."""
        body = await self._call("GET", slave_sae, "status")
        if not isinstance(body, dict):
            raise _bad_answer("not a Status object")
        for name in ("source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID"):
            if not isinstance(body.get(name), str):
                raise _bad_answer(f"Status lacks the string {name}")
        for name in _STATUS_INTS:
            value = body.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad_answer(f"Status lacks the integer {name}")
        return KmeStatus(body["source_KME_ID"], body["target_KME_ID"], body["master_SAE_ID"],
                         body["slave_SAE_ID"], *(int(body[n]) for n in _STATUS_INTS))

    async def enc_keys(self, slave_sae: str, number: int = 1, size_bits: int | None = None,
                       additional_slaves: Sequence[str] = ()) -> list[SupplyKey]:
        """New keys shared with ``slave_sae`` (and ``additional_slaves``); POST form.

        Args:
            slave_sae: the slave SAE.
            number: how many keys.
            size_bits: their size (None: the KME's default ``key_size``).
            additional_slaves: further slave SAEs that will get the same keys.

        Raises:
            Etsi014Error: the KME refused.
            RemoteProtocolError: the answer does not match the request.
        """
        body: dict[str, Any] = {"number": number}
        if size_bits is not None:
            body["size"] = size_bits
        if additional_slaves:
            body["additional_slave_SAE_IDs"] = list(additional_slaves)
        return _keys(await self._call("POST", slave_sae, "enc_keys", body=body), count=number,
                     size_bits=size_bits)

    async def dec_keys(self, master_sae: str, key_ids: Sequence[uuid.UUID]) -> list[SupplyKey]:
        """The keys ``master_sae`` obtained with these IDs, for this SAE (a slave); POST form.

        Raises:
            Etsi014Error: the KME refused (400 for IDs unknown or already delivered).
            RemoteProtocolError: the answer does not hold exactly the keys asked for.
        """
        body = {"key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        return _keys(await self._call("POST", master_sae, "dec_keys", body=body), ids=key_ids)
