"""Frames shared by the node's protocols (Kq-1/Kq-2, Kx): versioned, typed, length-bounded.

A frame is an 8-byte header and a payload::

    magic (2 bytes, per protocol) | version (1) | kind (1) | payload length (4, big-endian)

The payload is one JSON object (UTF-8); bytes (key material on Kq-1) travel base64-encoded in
it. A receiver checks magic, version and length *before* it buffers the payload, so an
oversized or foreign stream is refused after eight bytes, not after memory runs out. Decoding
errors are :class:`~qkdnode.node.errors.RemoteProtocolError` with the reason; no message quotes
payload content (it may hold key material).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteProtocolError

__all__ = ["HEADER", "NEED_DATA", "Frame", "FrameReader", "NeedData", "b64", "encode_frame",
           "field", "unb64"]

HEADER = struct.Struct(">2sBBI")


class NeedData:
    """The type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()
"""What a protocol's ``next_event()`` returns until more bytes arrive (as h11's)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: its kind code and its JSON payload."""

    kind: int
    payload: dict[str, Any]


def encode_frame(magic: bytes, version: int, kind: int, payload: dict[str, Any],
                 max_payload: int) -> bytes:
    """Encodes one frame.

    Raises:
        ValueError: the payload is larger than ``max_payload`` bytes (we would break the
            protocol: the caller must split it).
    """
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > max_payload:
        raise ValueError(f"frame payload of {len(body)} bytes exceeds the limit of "
                         f"{max_payload}; send less per frame")
    return HEADER.pack(magic, version, kind, len(body)) + body


class FrameReader:
    """Cuts a byte stream into frames of one protocol.

    Args:
        magic: the protocol's two magic bytes.
        version: the protocol version this end speaks.
        max_payload: the largest payload accepted.
        name: the protocol's name for messages.
    """

    def __init__(self, magic: bytes, version: int, max_payload: int, name: str) -> None:
        self.magic = magic
        self.version = version
        self.max_payload = max_payload
        self.name = name
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Adds received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises:
            RemoteProtocolError: foreign magic, another version, an oversized length, or a
                payload that is not a JSON object.
        """
        if len(self._buf) < HEADER.size:
            return None
        magic, version, kind, length = HEADER.unpack_from(self._buf)
        if magic != self.magic:
            raise RemoteProtocolError(f"{self.name}: not a {self.name} frame (magic "
                                      f"{bytes(magic)!r}, expected {self.magic!r})")
        if version != self.version:
            raise RemoteProtocolError(f"{self.name}: peer speaks version {version}, this end "
                                      f"speaks {self.version}")
        if length > self.max_payload:
            raise RemoteProtocolError(f"{self.name}: frame of {length} bytes exceeds the limit "
                                      f"of {self.max_payload}")
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RemoteProtocolError(f"{self.name}: frame kind {kind} has a payload that is "
                                      "not JSON") from None
        if not isinstance(payload, dict):
            raise RemoteProtocolError(f"{self.name}: frame kind {kind} has a payload that is "
                                      "not a JSON object")
        return Frame(kind, payload)


_MISSING = object()


def field(payload: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str,
          default: Any = _MISSING) -> Any:
    """A payload field of the expected JSON type, or RemoteProtocolError naming it."""
    value = payload.get(name, default)
    if value is _MISSING:
        raise RemoteProtocolError(f"{what}: field {name!r} is missing")
    if value is default and default is not _MISSING:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise RemoteProtocolError(f"{what}: field {name!r} has the wrong type")
    if not isinstance(value, kinds):
        raise RemoteProtocolError(f"{what}: field {name!r} has the wrong type")
    return value


def b64(data: bytes) -> str:
    """Bytes as base64 text."""
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    """base64 text as bytes, or RemoteProtocolError (without quoting the text)."""
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise RemoteProtocolError(f"{what}: not valid base64") from None
