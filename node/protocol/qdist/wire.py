"""Qdist frames on the wire: a fixed binary header, typed numpy fields, a Wegman-Carter tag.

A frame::

    magic b"QD" | version u8 | kind u8 | block u64 | seq u32 | body length u32 | body | tag (8)

(big-endian header). The tag is :func:`qkdnode.dsp.authentication.tag` of header and body under
the sending direction's hash key and the one-time pad at index ``seq`` of that direction's pad
stream (:class:`PadStream`). Tying the pad to the sequence number is what lets the two ends
resynchronise after lost or rejected frames: the receiver needs no count of what it missed.

The body is a sequence of fields, each ``type u8 | count u32 | data``; a message declares the
order and types of its fields, and the :class:`BodyReader` checks every one (type, count against
the bytes left, bits that are 0/1) and that nothing is left over. Arrays are little-endian.
Bits travel packed (``count`` is then the number of bits). A receiver checks magic, version and
body length from the 20 header bytes before it buffers a body, so an oversized or foreign stream
is refused before memory runs out. No error message quotes body content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.authentication import HASH_KEY_BYTES, TAG_BYTES, epsilon, tag, verify

from ...errors import RemoteProtocolError

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY",
    "VERSION",
    "BodyReader",
    "BodyWriter",
    "PadStream",
    "RawFrame",
    "StreamError",
    "WireReader",
    "encode_frame",
]

MAGIC = b"QD"
VERSION = 3  # 2: the control frames (ArmedAnnounced, StartAnnounced); 3: ResumeAnnounced
HEADER = struct.Struct(">2sBBQII")
# 64 MiB bounds the largest message, Bob's announcement: 9 bytes per detection (slot and basis),
# so about 7 million detections per block, above the 10^6-10^7 sifted bits a block aims at.
MAX_BODY = 64 << 20
# Sequence numbers are u32; a session that reached this many frames per direction must re-key.
MAX_SEQ = 2**32 - 1

_BITS, _U8, _I64, _U64, _F64, _TEXT = 1, 2, 3, 4, 5, 6
_FIELD = struct.Struct(">BI")
_WIDTH = {_U8: 1, _I64: 8, _U64: 8, _F64: 8, _TEXT: 1}
_DTYPE: dict[int, np.dtype[Any]] = {
    _U8: np.dtype("u1"), _I64: np.dtype("<i8"), _U64: np.dtype("<u8"), _F64: np.dtype("<f8")}


class StreamError(RemoteProtocolError):
    """The byte stream cannot be cut into frames any more (foreign magic, other version,
    oversized length): the connection must be replaced."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One frame as cut from the stream, not yet authenticated."""

    kind: int
    block: int
    seq: int
    signed: bytes  # header and body: what the tag covers
    tag: bytes

    @property
    def body(self) -> memoryview:
        """The body bytes."""
        return memoryview(self.signed)[HEADER.size:]


class BodyWriter:
    """Builds a body field by field."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def _put(self, kind: int, count: int, data: bytes) -> BodyWriter:
        self._parts.append(_FIELD.pack(kind, count))
        self._parts.append(data)
        return self

    def bits(self, values: NDArray[np.uint8]) -> BodyWriter:
        """A 0/1 array, packed."""
        return self._put(_BITS, int(values.size), np.packbits(values).tobytes())

    def u8(self, values: NDArray[Any]) -> BodyWriter:
        """A uint8 array."""
        return self._put(_U8, int(values.size), np.asarray(values, _DTYPE[_U8]).tobytes())

    def i64(self, values: NDArray[Any] | list[int] | tuple[int, ...]) -> BodyWriter:
        """An int64 array."""
        a = np.asarray(values, dtype=_DTYPE[_I64])
        return self._put(_I64, int(a.size), a.tobytes())

    def u64(self, values: NDArray[Any]) -> BodyWriter:
        """A uint64 array."""
        a = np.asarray(values, dtype=_DTYPE[_U64])
        return self._put(_U64, int(a.size), a.tobytes())

    def f64(self, values: NDArray[Any] | list[float] | tuple[float, ...]) -> BodyWriter:
        """A float64 array."""
        a = np.asarray(values, dtype=_DTYPE[_F64])
        return self._put(_F64, int(a.size), a.tobytes())

    def text(self, value: str) -> BodyWriter:
        """UTF-8 text."""
        data = value.encode()
        return self._put(_TEXT, len(data), data)

    def finish(self) -> bytes:
        """The body."""
        return b"".join(self._parts)


class BodyReader:
    """Reads a body field by field; every mismatch is a RemoteProtocolError naming the field."""

    def __init__(self, body: bytes | memoryview, what: str) -> None:
        self._body = memoryview(body)
        self._pos = 0
        self.what = what

    def _take(self, kind: int, name: str) -> tuple[int, memoryview]:
        if self._pos + _FIELD.size > len(self._body):
            raise RemoteProtocolError(f"{self.what}: field {name!r} is missing")
        got, count = _FIELD.unpack_from(self._body, self._pos)
        if got != kind:
            raise RemoteProtocolError(f"{self.what}: field {name!r} has the wrong type")
        size = (count + 7) // 8 if kind == _BITS else count * _WIDTH[kind]
        start = self._pos + _FIELD.size
        if start + size > len(self._body):
            raise RemoteProtocolError(f"{self.what}: field {name!r} is longer than the frame")
        self._pos = start + size
        return count, self._body[start:start + size]

    def bits(self, name: str) -> NDArray[np.uint8]:
        """A packed 0/1 array (padding bits must be zero)."""
        count, data = self._take(_BITS, name)
        packed = np.frombuffer(data, dtype=np.uint8)
        if count % 8 and packed.size and int(packed[-1]) & (0xFF >> (count % 8)):
            raise RemoteProtocolError(f"{self.what}: field {name!r} has non-zero padding")
        out: NDArray[np.uint8] = np.unpackbits(packed, count=count)
        return out

    def _array(self, kind: int, name: str) -> NDArray[Any]:
        _, data = self._take(kind, name)
        out: NDArray[Any] = np.frombuffer(data, dtype=_DTYPE[kind]).copy()
        return out

    def u8(self, name: str) -> NDArray[np.uint8]:
        """A uint8 array."""
        return self._array(_U8, name)

    def i64(self, name: str, count: int | None = None, low: int | None = None) -> NDArray[np.int64]:
        """An int64 array of ``count`` values (any if None), each >= ``low`` if given."""
        values = self._array(_I64, name).astype(np.int64)
        self._check_count(name, values.size, count)
        if low is not None and values.size and int(values.min()) < low:
            raise RemoteProtocolError(f"{self.what}: field {name!r} holds a value below {low}")
        return values

    def u64(self, name: str) -> NDArray[np.uint64]:
        """A uint64 array."""
        return self._array(_U64, name).astype(np.uint64)

    def f64(self, name: str, count: int | None = None) -> NDArray[np.float64]:
        """A float64 array of finite values."""
        values = self._array(_F64, name).astype(np.float64)
        self._check_count(name, values.size, count)
        if not bool(np.all(np.isfinite(values))):
            raise RemoteProtocolError(f"{self.what}: field {name!r} holds a non-finite value")
        return values

    def scalar(self, name: str, low: int | None = None) -> int:
        """One int64 value."""
        return int(self.i64(name, 1, low)[0])

    def text(self, name: str) -> str:
        """UTF-8 text."""
        _, data = self._take(_TEXT, name)
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"{self.what}: field {name!r} is not UTF-8") from None

    def _check_count(self, name: str, got: int, want: int | None) -> None:
        if want is not None and got != want:
            raise RemoteProtocolError(f"{self.what}: field {name!r} holds {got} values, "
                                      f"expected {want}")

    def end(self) -> None:
        """Checks that every byte was read."""
        if self._pos != len(self._body):
            raise RemoteProtocolError(f"{self.what}: {len(self._body) - self._pos} bytes after "
                                      "the last field")


class PadStream:
    """One direction's authentication key: a hash key and a stream of one-time pads.

    The pad of the frame with sequence number ``s`` is bytes ``[8 s, 8 s + 8)`` of the stream,
    counted from the start of the session. Pads below the lowest index still needed are wiped and
    dropped (:meth:`release`); new key material is appended at the end (:meth:`extend`). Both
    ends of a direction hold identical streams, so they agree on every pad.

    Args:
        hash_key: The 8-byte polynomial key of this direction.
        material: The first pads.
    """

    def __init__(self, hash_key: bytes, material: bytes) -> None:
        self._hash_key = bytes(hash_key)
        self._buf = bytearray(material)
        self._base = 0  # sequence number of the pad at the start of _buf
        self.verifications = 0
        self.epsilon_spent = 0.0

    def _pad(self, seq: int) -> bytes | None:
        start = (seq - self._base) * TAG_BYTES
        if seq < self._base or start + TAG_BYTES > len(self._buf):
            return None
        return bytes(self._buf[start:start + TAG_BYTES])

    def has_pad(self, seq: int) -> bool:
        """Whether the pad of ``seq`` is held (not yet released, not beyond the material)."""
        return self._pad(seq) is not None

    def tag(self, signed: bytes, seq: int) -> bytes:
        """The tag of an outgoing frame (the caller releases the pad after sending)."""
        pad = self._pad(seq)
        if pad is None:
            raise ValueError(f"authentication key exhausted (no pad for sequence number {seq}): "
                             "no completed block replenished the pads that frames since the "
                             "last one used; the link needs a new pre-shared secret at both "
                             "ends")
        return tag(signed, self._hash_key, pad)

    def verify(self, signed: bytes, received: bytes, seq: int) -> bool:
        """Whether ``received`` is the tag of ``signed`` at ``seq`` (False when no pad is held).

        Every attempt is charged to :attr:`epsilon_spent`: an adversary's chance over the
        session is at most the sum of the per-attempt bounds.
        """
        pad = self._pad(seq)
        if pad is None:
            return False
        self.verifications += 1
        self.epsilon_spent += epsilon(len(signed))
        return verify(signed, received, self._hash_key, pad)

    def release(self, below: int) -> None:
        """Wipes and drops the pads of every sequence number below ``below``."""
        drop = min(max(0, below - self._base) * TAG_BYTES, len(self._buf))
        self._buf[:drop] = bytes(drop)
        del self._buf[:drop]
        self._base += drop // TAG_BYTES

    def extend(self, material: bytes) -> None:
        """Appends fresh key material (a whole number of pads)."""
        if len(material) % TAG_BYTES:
            raise ValueError("material must be a whole number of pads")
        self._buf += material

    def export(self) -> dict[str, Any]:
        """The stream's state (key material: the caller keeps it secret), for :meth:`load`."""
        return {"hash_key": self._hash_key.hex(), "base": self._base,
                "pads": bytes(self._buf).hex(), "verifications": self.verifications,
                "epsilon_spent": self.epsilon_spent}

    @classmethod
    def load(cls, state: dict[str, Any]) -> PadStream:
        """A stream from :meth:`export`'s output.

        Raises:
            ValueError: a field is missing or malformed (the message names it, never a value).
        """
        try:
            hash_key = bytes.fromhex(state["hash_key"])
            pads = bytes.fromhex(state["pads"])
            base, verifications = state["base"], state["verifications"]
            epsilon_spent = float(state["epsilon_spent"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"pad stream: missing or malformed field ({type(exc).__name__})") \
                from None
        if len(hash_key) != HASH_KEY_BYTES or len(pads) % TAG_BYTES:
            raise ValueError("pad stream: hash key or pads of the wrong length")
        for name, value in (("base", base), ("verifications", verifications)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"pad stream: {name} must be an int >= 0")
        stream = cls(hash_key, pads)
        stream._base = base
        stream.verifications = verifications
        stream.epsilon_spent = epsilon_spent
        return stream

    @property
    def pads_left(self) -> int:
        """Pads held from the lowest unreleased index."""
        return len(self._buf) // TAG_BYTES

    @property
    def end_seq(self) -> int:
        """One past the highest sequence number a pad is held for."""
        return self._base + self.pads_left

    def __repr__(self) -> str:
        return f"PadStream(base={self._base}, pads_left={self.pads_left})"


def encode_frame(kind: int, block: int, seq: int, body: bytes, pads: PadStream) -> bytes:
    """Header, body and tag of one frame.

    Raises:
        ValueError: the body exceeds :data:`MAX_BODY`, or no pad is left for ``seq``.
    """
    if len(body) > MAX_BODY:
        raise ValueError(f"frame body of {len(body)} bytes exceeds the limit of {MAX_BODY}")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} out of range")
    signed = HEADER.pack(MAGIC, VERSION, kind, block, seq, len(body)) + body
    return signed + pads.tag(signed, seq)


class WireReader:
    """Cuts the byte stream into :class:`RawFrame` objects."""

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Adds received bytes."""
        self._buf += data

    def clear(self) -> None:
        """Drops everything buffered (a new connection starts at a frame boundary)."""
        self._buf.clear()

    def next_frame(self) -> RawFrame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises:
            StreamError: foreign magic, another version or an oversized body.
        """
        if len(self._buf) < HEADER.size:
            return None
        magic, version, kind, block, seq, length = HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            raise StreamError("Qdist: not a Qdist frame (wrong magic)")
        if version != VERSION:
            raise StreamError(f"Qdist: peer speaks version {version}, this end speaks {VERSION}")
        if length > self.max_body:
            raise StreamError(f"Qdist: frame body of {length} bytes exceeds the limit of "
                              f"{self.max_body}")
        end = HEADER.size + length
        if len(self._buf) < end + TAG_BYTES:
            return None
        signed = bytes(self._buf[:end])
        received = bytes(self._buf[end:end + TAG_BYTES])
        del self._buf[:end + TAG_BYTES]
        return RawFrame(kind, block, seq, signed, received)
