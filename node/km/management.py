"""Who may use a key manager's management port: a bearer token in a file only its user reads.

At each start the daemon draws a fresh token from the operating system's CSPRNG and writes it,
mode 0600, to ``key_manager.management_token_file`` (default: beside the key store, named
after it: ``keys.sqlite`` -> ``keys.token``), replacing the file atomically. Requests that need
it (``key_manager.management_auth``: ``control``, the POSTs that stop and start modules, or
``all``) carry ``Authorization: Bearer TOKEN``; others get 401 with a message naming the file.
So only the node's own user (and root) can control it, whoever else can reach localhost. The
token is a secret like a key: never logged, never in a message.

:func:`management_request` is the client side ``qkdnode`` commands use: it reads the token
from the file when it can, and turns an error answer into :class:`KeyManagerError` with the
server's message.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config.schema import KeyManagerConfig
from ..errors import KeyManagerError

__all__ = ["TOKEN_BYTES", "auth_middleware", "management_request", "read_token",
           "remove_token", "token_path", "write_token"]

# 256 bits from the CSPRNG: as hard to guess as a key.
TOKEN_BYTES = 32
# The management port answers locally within milliseconds; 5 s covers a node under load.
REQUEST_TIMEOUT_S = 5.0
# Methods that only read (the others control the node).
READING = frozenset({"GET", "HEAD"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_path(km: KeyManagerConfig) -> Path:
    """Where the key manager of ``km`` writes its management token."""
    if km.management_token_file is not None:
        return km.management_token_file
    beside = km.store_path.with_suffix(".token")
    # A store named *.token keeps its name and gains the suffix: never the store itself.
    return beside if beside != km.store_path else km.store_path.with_name(
        km.store_path.name + ".token")


def new_token() -> str:
    """A fresh management token (TOKEN_BYTES from the operating system's CSPRNG)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(path: Path, token: str | None = None) -> str:
    """Writes ``token`` (None: a fresh one) to ``path`` (mode 0600, atomically: readers see the
    old file or the new one, never a part) and returns it.

    Raises:
        OSError: the directory cannot be written.
    """
    if token is None:
        token = new_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def remove_token(path: Path, token: str) -> None:
    """Removes the token file at a stop, if it still holds ``token`` (not a newer daemon's)."""
    with contextlib.suppress(OSError):
        if hmac.compare_digest(path.read_text().strip().encode(), token.encode()):
            path.unlink()


def read_token(path: Path) -> str:
    """The token in ``path``.

    Raises:
        KeyManagerError: the file is missing or unreadable (the message says which).
    """
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise KeyManagerError(f"no management token at {path}: is the key manager running "
                              "with this configuration?") from None
    except PermissionError:
        raise KeyManagerError(f"the management token {path} is readable only by the user the "
                              "key manager runs as") from None
    except OSError as exc:
        raise KeyManagerError(f"the management token {path} cannot be read: "
                              f"{exc.strerror}") from None
    if not token:
        raise KeyManagerError(f"the management token file {path} is empty")
    return token


def auth_middleware(token: str, needed_for: Literal["control", "all"], token_file: Path
                    ) -> Middleware:
    """An aiohttp middleware that refuses, with 401, requests without the bearer token
    (``control``: every method but GET and HEAD; ``all``: every request)."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needed_for == "all" or request.method not in READING:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                problem = "needs the key manager's management token"
            elif not hmac.compare_digest(given.strip().encode(), expected):
                problem = "carries a wrong management token (the key manager writes a new " \
                          "one at each start)"
            else:
                return await handler(request)
            return web.json_response(
                {"message": f"{request.method} {request.path} {problem}: send 'Authorization: "
                            f"Bearer TOKEN' with the token from {token_file}"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="qkdnode management"'})
        return await handler(request)

    return check


def management_request(km: KeyManagerConfig, method: str, path: str, *,
                       timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[int, Any]:
    """Sends one request to the management port of the key manager ``km`` describes, with its
    token when the token file is readable (required for control, and for everything with
    ``management_auth = "all"``).

    Returns:
        The HTTP status (2xx) and the decoded JSON answer (text for non-JSON answers).

    Raises:
        KeyManagerError: no answer, or an error answer (with the server's message).
    """
    host, _, port = km.management_listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{port}{path}"
    headers = {}
    file = token_path(km)
    needed = km.management_auth == "all" or method.upper() not in READING
    try:
        headers["Authorization"] = f"Bearer {read_token(file)}"
    except KeyManagerError:
        if needed:
            raise
    request = urllib.request.Request(url, method=method.upper(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, _decode(answer.read())
    except urllib.error.HTTPError as exc:
        body = _decode(exc.read())
        message = body.get("message") if isinstance(body, dict) else None
        raise KeyManagerError(f"{method.upper()} {url}: {exc.code} "
                              f"{message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KeyManagerError(f"the key manager does not answer at {url}: "
                              f"{getattr(exc, 'reason', exc)}") from None


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
