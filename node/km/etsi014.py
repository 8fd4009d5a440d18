"""The key supply agent (KSA): ETSI GS QKD 014 key delivery over HTTPS with mutual TLS.

Routes (``/api/v1/keys``, the specification's names):

* ``GET /{slave_SAE_ID}/status``: the pair's :class:`~.manager.SupplyStatus` (caller: master);
* ``GET|POST /{slave_SAE_ID}/enc_keys``: new keys for the caller (master) and the slave(s);
* ``GET|POST /{master_SAE_ID}/dec_keys``: the same keys, by ID, for a slave, once;
* ``GET /api/v1/openapi.json``: the OpenAPI document of all this (:mod:`.etsi014_schema`).

Who calls is settled by TLS: the server context requires a client certificate from the
configured CA (a client without one never gets past the handshake), and the caller's SAE ID is
the certificate's subject CN (:mod:`.etsi014_tls`). Whether that SAE may ask for a given key is
the key manager's decision (:class:`KeySupply`), mapped onto the statuses the specification
allows:

==========================================  =====================================================
cause                                       answer
==========================================  =====================================================
malformed request, bad type, limit, size    400, the field and the limit named in ``details``
unknown key ID, already delivered, expired  400 "one or more keys specified are not found on KME"
unknown SAE, request the manager refuses    400, the manager's reason
no SAE ID in the certificate, not allowed   401
pool depleted                               503 "... key pool depleted ..."
peer KME silent, store busy, anything else  503 "temporary fault ...", retry
no such route / method, body too large      400 (never aiohttp's 404/405/413; never a 500)
==========================================  =====================================================

Every error body is the specification's ``{"message": ..., "details": [...]}``. Key material is
never logged: the access log (logger ``qkdnode.node.km.etsi014.access``, INFO) carries the
caller's SAE ID, the route, the status, the number of keys and their IDs. (Requests that are not
HTTP at all are answered 400 by aiohttp's parser before any of this runs.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from ..errors import KeyManagerError
from .etsi014_requests import (
    MSG_KEYS_NOT_FOUND,
    ApiError,
    Limits,
    check_sae_id,
    error_body,
    parse_json_body,
    parse_key_ids_body,
    parse_key_ids_query,
    parse_key_request_body,
    parse_key_request_query,
)
from .etsi014_schema import API_PREFIX, OPENAPI_PATH, openapi_document
from .etsi014_tls import sae_id_from_peercert
from .manager import SupplyStatus
from .records import SupplyKey

__all__ = ["DEFAULT_CLIENT_MAX_SIZE", "Etsi014Server", "KeySupply", "serve_etsi014"]

log = logging.getLogger(__name__)
access_log = logging.getLogger(__name__ + ".access")

# The largest request body: a dec_keys request for 1,024 key IDs with an extension object per
# entry is ~60 kB; a Key request is far smaller. aiohttp's own default (1 MiB) is 16x that.
DEFAULT_CLIENT_MAX_SIZE = 64 * 1024
# Bound on key IDs in one dec_keys request before the manager applies its own (smaller) limit:
# it bounds the work spent parsing a request that will be refused anyway.
MAX_KEY_IDS_PER_REQUEST = 1024
# The request limits (and default size) of a master/slave pair are read from the manager's
# status, which counts the pool; they change only with the configuration, so they are reused
# for a few seconds instead of counting the pool on every enc_keys request.
LIMITS_TTL_S = 5.0
# How long stop() lets requests in progress finish: longer than the key manager's peer timeout
# (5 s), so an enc_keys waiting for the peer's confirmation is answered, not cut off.
SHUTDOWN_TIMEOUT_S = 6.0

_JSON = "application/json"


@dataclass(slots=True)
class _Access:
    """What the access log line of the request in progress says (no key material)."""

    sae: str = "-"
    key_ids: Sequence[uuid.UUID] = ()


# The access record of the request the current task serves (the middleware sets it; handlers
# run in the same task).
_access: contextvars.ContextVar[_Access] = contextvars.ContextVar("etsi014_access")


class KeySupply(Protocol):
    """What the server needs of the key manager (:class:`~.manager.KeyManager` is one)."""

    kme_id: str

    def status(self, master_sae: str, slave_sae: str) -> SupplyStatus: ...

    async def enc_keys(self, master_sae: str, slave_saes: Sequence[str], number: int,
                       size_bits: int) -> list[SupplyKey]: ...

    async def dec_keys(self, slave_sae: str, master_sae: str,
                       key_ids: Sequence[uuid.UUID]) -> list[SupplyKey]: ...


def _json_response(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=_JSON)


def _manager_error(exc: KeyManagerError) -> ApiError:
    """Maps a key manager's refusal onto the ETSI 014 answer (its message goes in details)."""
    reason = [{"reason": str(exc)}]
    code = getattr(exc, "code", "")
    if code == "key_not_found":
        return ApiError(400, MSG_KEYS_NOT_FOUND, reason)
    if code == "not_authorized":
        return ApiError(401, "unauthorized: the caller may not make this request", reason)
    if code == "unknown_sae":
        return ApiError(400, "unknown SAE ID", reason)
    if code == "pool_depleted":
        return ApiError(503, "not enough key available for this request: key pool depleted",
                        reason)
    if code == "peer_unavailable":
        return ApiError(503, "temporary fault: the peer KME did not confirm the keys; retry",
                        reason)
    return ApiError(503, "temporary fault in the key manager; retry", reason)


def _http_error(exc: web.HTTPException, request: web.Request,
                client_max_size: int) -> ApiError:
    """aiohttp's own refusals (404, 405, 413, ...) as the 400 the specification allows."""
    if exc.status == 404:
        return ApiError(400, "no such endpoint", [{"path": request.path[:200]}])
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return ApiError(400, f"method {request.method[:16]} is not allowed on this endpoint",
                        [{"allowed_methods": allowed}])
    if exc.status == 413:
        return ApiError(400, f"the request body is larger than {client_max_size} bytes",
                        [{"client_max_size": client_max_size}])
    if exc.status >= 500:
        return ApiError(503, "temporary fault in the KME's web server; retry",
                        [{"reason": exc.reason}])
    return ApiError(400, f"bad request: {exc.reason}", [{"status": exc.status}])


class Etsi014Server:
    """An ETSI GS QKD 014 HTTPS server in front of a :class:`KeySupply`.

    Args:
        supply: the key manager.
        ssl_context: a server context that requires client certificates
            (:func:`~.etsi014_tls.make_server_ssl_context`); anything else is refused.
        host: the address to listen on.
        port: the port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        client_max_size: the largest request body accepted, bytes.
        identify: maps the peer certificate (``getpeercert()``) to the caller's SAE ID.

    Use ``async with Etsi014Server(...) as server:`` or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, supply: KeySupply, ssl_context: ssl.SSLContext, *,
                 host: str = "127.0.0.1", port: int = 0,
                 client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
                 identify: Callable[[Mapping[str, Any] | None], str | None] =
                 sae_id_from_peercert) -> None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext: ETSI GS QKD 014 runs over "
                            "HTTPS only")
        if ssl_context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("ssl_context must require client certificates (CERT_REQUIRED): "
                             "SAEs are identified by them")
        # MINIMUM_SUPPORTED (-2) is whatever the local OpenSSL allows, possibly TLS 1.0.
        if ssl_context.minimum_version < ssl.TLSVersion.TLSv1_2:
            raise ValueError("ssl_context must not allow TLS below 1.2 (set minimum_version)")
        if client_max_size < 1024:
            raise ValueError(f"client_max_size must be at least 1024 bytes, got "
                             f"{client_max_size}")
        self.supply = supply
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.client_max_size = client_max_size
        self.identify = identify
        self._limits: dict[tuple[str, str], tuple[float, Limits]] = {}
        self._runner: web.AppRunner | None = None

    # --- life cycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (routes and the error-mapping middleware)."""
        app = web.Application(middlewares=[self._guard], client_max_size=self.client_max_size)
        keys = API_PREFIX
        app.router.add_get(keys + "/{slave_SAE_ID}/status", self._status, allow_head=False)
        app.router.add_get(keys + "/{slave_SAE_ID}/enc_keys", self._enc_keys_get,
                           allow_head=False)
        app.router.add_post(keys + "/{slave_SAE_ID}/enc_keys", self._enc_keys_post)
        app.router.add_get(keys + "/{master_SAE_ID}/dec_keys", self._dec_keys_get,
                           allow_head=False)
        app.router.add_post(keys + "/{master_SAE_ID}/dec_keys", self._dec_keys_post)
        app.router.add_get(OPENAPI_PATH, self._openapi, allow_head=False)
        return app

    async def start(self) -> None:
        """Starts listening; :attr:`port` is the bound port when this returns."""
        if self._runner is not None:
            raise RuntimeError("the ETSI 014 server is already running")
        runner = web.AppRunner(self.make_app(), access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("ETSI 014 key delivery for KME %s on https://%s:%d", self.supply.kme_id,
                 self.host, self.port)

    async def stop(self) -> None:
        """Stops listening and closes the connections (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Etsi014Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL of the key API (``https://host:port/api/v1/keys``)."""
        return f"https://{self.host}:{self.port}{API_PREFIX}"

    # --- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Turns every outcome into 200/400/401/503 with an Error body, and logs the access."""
        started = time.perf_counter()
        record = _Access()
        _access.set(record)
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json_response(exc.status, error_body(exc.message, exc.details))
        except web.HTTPException as exc:
            err = _http_error(exc, request, self.client_max_size)
            response = _json_response(err.status, error_body(err.message, err.details))
        except KeyManagerError as exc:
            err = _manager_error(exc)
            response = _json_response(err.status, error_body(err.message, err.details))
        except ValueError as exc:
            # The manager's argument checks (limits it knows and the request broke).
            response = _json_response(400, error_body(str(exc) or "bad request",
                                                      [{"reason": str(exc)}]))
        except (TimeoutError, OSError) as exc:
            log.warning("ETSI 014 %s %s: temporary fault: %s: %s", request.method,
                        request.path, type(exc).__name__, exc)
            response = _json_response(503, error_body(
                "temporary fault on the KME (timeout or I/O error); retry",
                [{"reason": type(exc).__name__}]))
        except Exception as exc:
            ref = uuid.uuid4().hex[:12]
            log.error("ETSI 014 %s %s: unexpected %s (reference %s)", request.method,
                      request.path, type(exc).__name__, ref, exc_info=True)
            response = _json_response(503, error_body(
                "temporary fault on the KME; retry, and report the reference if it persists",
                [{"reference": ref}]))
        if access_log.isEnabledFor(logging.INFO):
            ids = record.key_ids
            access_log.info(
                "%s %s %s sae=%s status=%d keys=%d key_ids=%s %.1fms", request.remote,
                request.method, request.path, record.sae, response.status,
                len(ids), ",".join(map(str, ids)) or "-",
                (time.perf_counter() - started) * 1e3)
        return response

    def _caller(self, request: web.Request) -> str:
        """The caller's SAE ID from its (verified) client certificate."""
        transport = request.transport
        peercert = None if transport is None else transport.get_extra_info("peercert")
        sae = self.identify(peercert)
        if sae is None:
            raise ApiError(401, "unauthorized: the client certificate names no SAE ID",
                           [{"reason": "the certificate subject needs exactly one common "
                                       "name (CN), the SAE ID"}])
        _access.get().sae = sae
        return sae

    async def _pair_limits(self, master: str, slave: str) -> Limits:
        now = time.monotonic()
        cached = self._limits.get((master, slave))
        if cached is not None and cached[0] > now:
            return cached[1]
        st = await asyncio.to_thread(self.supply.status, master, slave)
        limits = Limits(key_size=st.key_size, max_key_per_request=st.max_key_per_request,
                        max_key_size=st.max_key_size, min_key_size=st.min_key_size,
                        max_sae_id_count=st.max_sae_id_count)
        self._limits[(master, slave)] = (now + LIMITS_TTL_S, limits)
        return limits

    @staticmethod
    def _query(request: web.Request) -> dict[str, list[str]]:
        return {name: request.query.getall(name) for name in request.query}

    async def _body(self, request: web.Request) -> object:
        return parse_json_body(await request.read())

    @staticmethod
    def _container(keys: Sequence[SupplyKey]) -> web.Response:
        _access.get().key_ids = [k.key_id for k in keys]
        return _json_response(200, {"keys": [
            {"key_ID": str(k.key_id), "key": base64.b64encode(k.material).decode("ascii")}
            for k in keys]})

    # --- handlers ---------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        master = self._caller(request)
        slave = check_sae_id(request.match_info["slave_SAE_ID"], "slave_SAE_ID")
        st = await asyncio.to_thread(self.supply.status, master, slave)
        return _json_response(200, {
            "source_KME_ID": st.source_kme_id, "target_KME_ID": st.target_kme_id,
            "master_SAE_ID": st.master_sae_id, "slave_SAE_ID": st.slave_sae_id,
            "key_size": st.key_size, "stored_key_count": st.stored_key_count,
            "max_key_count": st.max_key_count, "max_key_per_request": st.max_key_per_request,
            "max_key_size": st.max_key_size, "min_key_size": st.min_key_size,
            "max_SAE_ID_count": st.max_sae_id_count})

    async def _enc_keys(self, request: web.Request, body: object | None) -> web.Response:
        master = self._caller(request)
        slave = check_sae_id(request.match_info["slave_SAE_ID"], "slave_SAE_ID")
        limits = await self._pair_limits(master, slave)
        req = (parse_key_request_query(self._query(request), limits) if body is None
               else parse_key_request_body(body, limits))
        keys = await self.supply.enc_keys(master, [slave, *req.additional_slaves], req.number,
                                          req.size_bits)
        return self._container(keys)

    async def _enc_keys_get(self, request: web.Request) -> web.Response:
        return await self._enc_keys(request, None)

    async def _enc_keys_post(self, request: web.Request) -> web.Response:
        return await self._enc_keys(request, await self._body(request))

    async def _dec_keys(self, request: web.Request, slave: str,
                        key_ids: list[uuid.UUID]) -> web.Response:
        master = check_sae_id(request.match_info["master_SAE_ID"], "master_SAE_ID")
        _access.get().key_ids = key_ids  # logged even if the request is refused
        keys = await self.supply.dec_keys(slave, master, key_ids)
        return self._container(keys)

    async def _dec_keys_get(self, request: web.Request) -> web.Response:
        slave = self._caller(request)
        return await self._dec_keys(
            request, slave, parse_key_ids_query(self._query(request), MAX_KEY_IDS_PER_REQUEST))

    async def _dec_keys_post(self, request: web.Request) -> web.Response:
        slave = self._caller(request)
        body = await self._body(request)
        return await self._dec_keys(
            request, slave, parse_key_ids_body(body, MAX_KEY_IDS_PER_REQUEST))

    async def _openapi(self, request: web.Request) -> web.Response:
        self._caller(request)
        return _json_response(200, openapi_document(self.supply.kme_id))


async def serve_etsi014(supply: KeySupply, host: str, port: int, ssl_context: ssl.SSLContext,
                        *, client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
                        started: Callable[[Etsi014Server], None] | None = None) -> None:
    """Serves ETSI GS QKD 014 until cancelled (the form ``qkdnode run`` uses).

    Args:
        supply: the key manager.
        host: the address to listen on.
        port: the port (0: any free one; ``started`` is told which).
        ssl_context: a server context requiring client certificates.
        client_max_size: the largest request body, bytes.
        started: called with the running server once it listens.
    """
    server = Etsi014Server(supply, ssl_context, host=host, port=port,
                           client_max_size=client_max_size)
    await server.start()
    try:
        if started is not None:
            started(server)
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
