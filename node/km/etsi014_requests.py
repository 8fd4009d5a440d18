"""ETSI GS QKD 014 requests: parsing and checking, with no I/O (the server only moves bytes).

Every function here either returns a checked request or raises :class:`ApiError`, which carries
the HTTP status (400 for a bad request) and the ``{message, details}`` body the specification's
Error format asks for. Unknown fields (in the JSON bodies, in ``key_IDs`` entries, in the query
string) are ignored, as the specification's extension model requires; known fields of the wrong
type are refused, naming the field.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MSG_EXTENSION_UNSUPPORTED",
    "MSG_KEYS_NOT_FOUND",
    "MSG_SIZE_MULTIPLE_OF_8",
    "ApiError",
    "KeyRequest",
    "Limits",
    "check_sae_id",
    "error_body",
    "parse_json_body",
    "parse_key_ids_body",
    "parse_key_ids_query",
    "parse_key_request_body",
    "parse_key_request_query",
]

# The specification's fixed messages (ETSI GS QKD 014 V1.1.1, clause 5); clients of other
# implementations match them, so they are kept word for word.
MSG_SIZE_MULTIPLE_OF_8 = "size shall be a multiple of 8"
MSG_EXTENSION_UNSUPPORTED = "not all extension_mandatory parameters are supported"
MSG_KEYS_NOT_FOUND = "one or more keys specified are not found on KME"

# SAE IDs are opaque strings to the specification; 255 characters covers any certificate common
# name (X.520 bounds commonName at 64) and any host-style name, and keeps error texts short.
MAX_SAE_ID_LENGTH = 255
# How much of a caller's bad value an error message repeats (values never hold key material, but
# a 64 kB string in an answer helps no one).
MAX_ECHO_CHARS = 64


class ApiError(Exception):
    """A request the KME answers with an error status and an ETSI 014 Error body.

    Attributes:
        status: the HTTP status (400, 401 or 503).
        message: the Error's ``message``.
        details: the Error's ``details``: objects that say what exactly was wrong.
    """

    def __init__(self, status: int, message: str,
                 details: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(status, message, list(details))
        self.status = status
        self.message = message
        self.details = [dict(d) for d in details]

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def error_body(message: str, details: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The specification's Error object."""
    return {"message": message, "details": [dict(d) for d in details]}


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."


def _bad(parameter: str, reason: str, **extra: Any) -> ApiError:
    return ApiError(400, f"{parameter}: {reason}", [{"parameter": parameter, "reason": reason,
                                                     **extra}])


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits of one master/slave pair, as its status reports them (bits)."""

    key_size: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A checked enc_keys request."""

    number: int
    size_bits: int
    additional_slaves: tuple[str, ...] = field(default=())


def check_sae_id(value: object, parameter: str) -> str:
    """Returns ``value`` if it is a usable SAE ID, else raises a 400 naming ``parameter``."""
    if not isinstance(value, str):
        raise _bad(parameter, f"an SAE ID must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_SAE_ID_LENGTH:
        raise _bad(parameter, f"an SAE ID has 1 to {MAX_SAE_ID_LENGTH} characters, "
                              f"got {len(value)}")
    if not value.isprintable():
        raise _bad(parameter, "an SAE ID must not contain control characters")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(raw: bytes) -> object:
    """Decodes a request body; an empty body is an empty object.

    Raises:
        ApiError: 400 if the body is not UTF-8 JSON (NaN and Infinity included, which Python
            would otherwise accept) or nests too deep to decode.
    """
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text",
                       [{"reason": "invalid UTF-8"}]) from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply to decode",
                       [{"reason": "nesting too deep"}]) from None
    except ValueError as exc:
        # json.JSONDecodeError, and int() refusing a literal of thousands of digits.
        raise ApiError(400, "the request body is not valid JSON",
                       [{"reason": str(exc)[:200]}]) from None


def _object(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object ({what})",
                       [{"reason": f"got a JSON {type(body).__name__}"}])
    return body


def _integer(value: object, parameter: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            # JSON has one number type; 2.0 is the integer 2 to many clients.
            return int(value)
        raise _bad(parameter, f"must be an integer, got {_echo(value)}")
    return value


def _query_integer(query: Mapping[str, Sequence[str]], parameter: str) -> int | None:
    values = query.get(parameter, ())
    if not values:
        return None
    if len(values) > 1:
        raise _bad(parameter, "given more than once")
    text = values[0]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _bad(parameter, f"must be a non-negative integer, got {_echo(text)}")
    return int(text)


def _check_extensions(body: Mapping[str, Any]) -> None:
    for name in ("extension_mandatory", "extension_optional"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            raise _bad(name, "must be an array of objects")
    unsupported = sorted({k for e in body.get("extension_mandatory") or () for k in e})
    if unsupported:
        # This KME defines no extension parameters, so none can be honoured.
        raise ApiError(400, MSG_EXTENSION_UNSUPPORTED,
                       [{"extension_mandatory": name, "reason": "not supported by this KME"}
                        for name in unsupported])


def _check_request(number: int | None, size: int | None, additional: tuple[str, ...],
                   limits: Limits) -> KeyRequest:
    number = 1 if number is None else number
    size = limits.key_size if size is None else size
    if number < 1:
        raise _bad("number", f"must be at least 1, got {number}")
    if number > limits.max_key_per_request:
        raise _bad("number", f"{number} exceeds max_key_per_request = "
                             f"{limits.max_key_per_request}",
                   max_key_per_request=limits.max_key_per_request)
    if size % 8:
        raise ApiError(400, MSG_SIZE_MULTIPLE_OF_8, [{"parameter": "size", "value": size}])
    if size < limits.min_key_size:
        raise _bad("size", f"{size} is below min_key_size = {limits.min_key_size}",
                   min_key_size=limits.min_key_size)
    if size > limits.max_key_size:
        raise _bad("size", f"{size} exceeds max_key_size = {limits.max_key_size}",
                   max_key_size=limits.max_key_size)
    if len(additional) > limits.max_sae_id_count:
        raise _bad("additional_slave_SAE_IDs",
                   f"{len(additional)} IDs exceed max_SAE_ID_count = {limits.max_sae_id_count}",
                   max_SAE_ID_count=limits.max_sae_id_count)
    return KeyRequest(number, size, additional)


def parse_key_request_query(query: Mapping[str, Sequence[str]], limits: Limits) -> KeyRequest:
    """The GET form of enc_keys: ``?number=N&size=S``, both optional.

    Args:
        query: every query parameter with all its values.
        limits: the pair's limits (and default size).
    """
    return _check_request(_query_integer(query, "number"), _query_integer(query, "size"), (),
                          limits)


def parse_key_request_body(body: object, limits: Limits) -> KeyRequest:
    """The POST form of enc_keys: a Key request object."""
    req = _object(body, "a Key request")
    _check_extensions(req)
    number = req.get("number")
    size = req.get("size")
    additional = req.get("additional_slave_SAE_IDs")
    if additional is None:
        additional = []
    if not isinstance(additional, list):
        raise _bad("additional_slave_SAE_IDs", "must be an array of SAE IDs")
    slaves = tuple(check_sae_id(s, "additional_slave_SAE_IDs") for s in additional)
    return _check_request(None if number is None else _integer(number, "number"),
                          None if size is None else _integer(size, "size"), slaves, limits)


def _key_id(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise _bad("key_ID", f"must be a UUID string, got {_echo(value)}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _bad("key_ID", f"is not a UUID: {_echo(value)}") from None


def _unique(ids: list[uuid.UUID], max_count: int) -> list[uuid.UUID]:
    if not ids:
        raise _bad("key_IDs", "name at least one key")
    if len(ids) > max_count:
        raise _bad("key_IDs", f"{len(ids)} key IDs exceed max_key_per_request = {max_count}",
                   max_key_per_request=max_count)
    if len(set(ids)) != len(ids):
        raise _bad("key_IDs", "a key ID is named twice")
    return ids


def parse_key_ids_query(query: Mapping[str, Sequence[str]], max_count: int) -> list[uuid.UUID]:
    """The GET form of dec_keys: ``?key_ID=UUID`` (repeated, for clients that ask for more)."""
    return _unique([_key_id(v) for v in query.get("key_ID", ())], max_count)


def parse_key_ids_body(body: object, max_count: int) -> list[uuid.UUID]:
    """The POST form of dec_keys: a Key IDs object, ``{"key_IDs": [{"key_ID": ...}, ...]}``."""
    req = _object(body, "a Key IDs object")
    entries = req.get("key_IDs")
    if entries is None:
        raise _bad("key_IDs", "is required")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _bad("key_IDs", "must be an array of objects with a key_ID")
    if len(entries) > max_count:  # before parsing each one: bounds the work
        raise _bad("key_IDs", f"{len(entries)} key IDs exceed max_key_per_request = "
                              f"{max_count}", max_key_per_request=max_count)
    return _unique([_key_id(e.get("key_ID")) for e in entries], max_count)
