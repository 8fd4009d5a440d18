"""PicoQuant PTU files: read, write, and decode their T2 records.

Layout (little-endian): magic ``PQTTTR`` NUL-padded to 8 bytes, version string (8 bytes), then
tag entries of 48 bytes (32-byte NUL-padded ident, int32 index, uint32 type, 8-byte value). For
:attr:`TagType.FLOAT8_ARRAY`, :attr:`TagType.ANSI_STRING`, :attr:`TagType.WIDE_STRING` and
:attr:`TagType.BINARY_BLOB` the value is a byte count and that many payload bytes follow the
entry. The tag ``Header_End`` closes the header; the uint32 records follow to the end of the file.

Python values per tag type: Empty8 ``None``; Bool8 ``bool``; Int8 ``int`` (int64); BitSet64 and
Color8 ``int`` (uint64); Float8 and TDateTime ``float`` (TDateTime counts days since
1899-12-30); Float8Array ``tuple[float, ...]``; AnsiString ``str`` (latin-1, up to the first
NUL); WideString ``str`` (UTF-16LE, up to the first NUL); BinaryBlob ``bytes``.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike

import numpy as np
from numpy.typing import NDArray

from .records import T2Events, T2State, decode_t2

__all__ = [
    "HEADER_END",
    "MAGIC",
    "PtuFile",
    "PtuFormatError",
    "Tag",
    "TagType",
    "TagValue",
    "decode_ptu_t2",
    "read_ptu",
    "write_ptu",
]

MAGIC = b"PQTTTR"
HEADER_END = "Header_End"
TAG_RECORD_TYPE = "TTResultFormat_TTTRRecType"
TAG_RESOLUTION = "MeasDesc_GlobalResolution"
TAG_NUM_RECORDS = "TTResult_NumberOfRecords"

_PREAMBLE = 16
_IDENT_LEN = 32
_ENTRY = struct.Struct("<32siI8s")
# Payloads this large are a corrupt byte count, not a header; refuse before allocating.
MAX_PAYLOAD_BYTES = 1 << 28

TagValue = None | bool | int | float | str | bytes | tuple[float, ...]
Path = str | PathLike[str]


class PtuFormatError(ValueError):
    """A PTU file is malformed (wrong magic, truncated, unknown tag type, count mismatch)."""


class TagType(enum.IntEnum):
    """PTU tag type codes."""

    EMPTY8 = 0xFFFF0008
    BOOL8 = 0x00000008
    INT8 = 0x10000008
    BITSET64 = 0x11000008
    COLOR8 = 0x12000008
    FLOAT8 = 0x20000008
    TDATETIME = 0x21000008
    FLOAT8_ARRAY = 0x2001FFFF
    ANSI_STRING = 0x4001FFFF
    WIDE_STRING = 0x4002FFFF
    BINARY_BLOB = 0xFFFFFFFF


_PAYLOAD_TYPES = frozenset(
    {TagType.FLOAT8_ARRAY, TagType.ANSI_STRING, TagType.WIDE_STRING, TagType.BINARY_BLOB}
)


@dataclass(frozen=True, slots=True)
class Tag:
    """One header entry.

    Attributes:
        ident: tag name (ASCII, at most 32 bytes).
        type: tag type.
        value: Python value (see the module docstring for each type).
        index: array index, -1 for a scalar tag.
    """

    ident: str
    type: TagType
    value: TagValue
    index: int = -1

    @property
    def key(self) -> str:
        """Key in :attr:`PtuFile.header`: ``ident``, or ``ident(index)`` for an indexed tag."""
        return self.ident if self.index < 0 else f"{self.ident}({self.index})"


@dataclass(frozen=True, slots=True)
class PtuFile:
    """A PTU file's content.

    Attributes:
        header: tags in file order by :attr:`Tag.key` (``Header_End`` excluded).
        record_type: ``TTResultFormat_TTTRRecType``, or ``None`` when absent.
        resolution_ps: ``MeasDesc_GlobalResolution`` in integer picoseconds, or ``None`` when
            absent or not a whole number of picoseconds.
        records: the uint32 records.
        version: the file's version string.
    """

    header: dict[str, Tag]
    record_type: int | None
    resolution_ps: int | None
    records: NDArray[np.uint32]
    version: str


def _pad8(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def _encode_value(tag: Tag) -> tuple[bytes, bytes]:
    """(8-byte value field, payload) of ``tag``; ValueError/TypeError naming the tag."""
    t, v = tag.type, tag.value
    try:
        if t is TagType.EMPTY8:
            if v is not None:
                raise TypeError("Empty8 value must be None")
            return bytes(8), b""
        if t is TagType.BOOL8:
            if not isinstance(v, bool):
                raise TypeError("Bool8 value must be a bool")
            return struct.pack("<q", int(v)), b""
        if t is TagType.INT8:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError("Int8 value must be an int")
            return struct.pack("<q", v), b""
        if t in (TagType.BITSET64, TagType.COLOR8):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{t.name} value must be an int")
            return struct.pack("<Q", v), b""
        if t in (TagType.FLOAT8, TagType.TDATETIME):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"{t.name} value must be a float")
            return struct.pack("<d", float(v)), b""
        if t is TagType.FLOAT8_ARRAY:
            if not isinstance(v, tuple) or not all(isinstance(x, float) for x in v):
                raise TypeError("Float8Array value must be a tuple of floats")
            payload = struct.pack(f"<{len(v)}d", *v)
        elif t is TagType.ANSI_STRING:
            if not isinstance(v, str) or "\0" in v:
                raise TypeError("AnsiString value must be a str without NUL")
            payload = _pad8(v.encode("latin-1") + b"\0")
        elif t is TagType.WIDE_STRING:
            if not isinstance(v, str) or "\0" in v:
                raise TypeError("WideString value must be a str without NUL")
            payload = _pad8(v.encode("utf-16-le") + b"\0\0")
        else:
            if not isinstance(v, bytes):
                raise TypeError("BinaryBlob value must be bytes")
            payload = v
    except struct.error as exc:
        raise ValueError(f"tag {tag.key!r}: value {v!r} out of range for {t.name}") from exc
    except UnicodeEncodeError as exc:
        raise ValueError(f"tag {tag.key!r}: {exc}") from exc
    except TypeError as exc:
        raise TypeError(f"tag {tag.key!r}: {exc}, got {type(v).__name__}") from exc
    return struct.pack("<q", len(payload)), payload


def _entry_bytes(tag: Tag) -> bytes:
    if not isinstance(tag, Tag):
        raise TypeError(f"header values must be Tag, not {type(tag).__name__}")
    ident = tag.ident.encode("ascii", errors="strict") if tag.ident.isascii() else None
    if not ident or len(ident) > _IDENT_LEN or b"\0" in ident:
        raise ValueError(f"tag ident {tag.ident!r} must be 1..32 ASCII characters without NUL")
    if not -(1 << 31) <= tag.index < (1 << 31):
        raise ValueError(f"tag {tag.key!r}: index out of int32 range")
    value, payload = _encode_value(tag)
    return _ENTRY.pack(ident, tag.index, int(TagType(tag.type)), value) + payload


def write_ptu(
    path: Path,
    header: Mapping[str, Tag],
    records: NDArray[np.uint32],
    *,
    version: str = "1.0.00",
) -> None:
    """Write a PTU file.

    ``header`` maps :attr:`Tag.key` to tags (as :attr:`PtuFile.header`); ``Header_End`` is
    appended. If ``TTResult_NumberOfRecords`` is absent it is added; if present it must equal
    ``len(records)``.

    Raises:
        TypeError: records not a 1-D uint32 array, or a tag value of the wrong type.
        ValueError: key not matching its tag, bad ident or value, record count mismatch.
    """
    if not isinstance(records, np.ndarray) or records.dtype != np.uint32 or records.ndim != 1:
        raise TypeError("records must be a 1-D uint32 numpy array")
    version_bytes = version.encode("ascii")
    if len(version_bytes) > 8:
        raise ValueError(f"version {version!r} longer than 8 bytes")
    tags = list(header.items())
    for key, tag in tags:
        if isinstance(tag, Tag) and key != tag.key:
            raise ValueError(f"header key {key!r} does not match its tag's key {tag.key!r}")
        if isinstance(tag, Tag) and tag.ident == HEADER_END:
            raise ValueError("Header_End is written by write_ptu; leave it out of the header")
    count = header.get(TAG_NUM_RECORDS)
    parts = [MAGIC.ljust(8, b"\0"), version_bytes.ljust(8, b"\0")]
    parts += [_entry_bytes(tag) for _, tag in tags]
    if count is None:
        parts.append(_entry_bytes(Tag(TAG_NUM_RECORDS, TagType.INT8, records.shape[0])))
    elif count.value != records.shape[0]:
        raise ValueError(
            f"{TAG_NUM_RECORDS} is {count.value!r} but {records.shape[0]} records were given"
        )
    parts.append(_entry_bytes(Tag(HEADER_END, TagType.EMPTY8, None)))
    parts.append(records.astype("<u4", copy=False).tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def _decode_value(ident: str, type_code: int, raw: bytes, data: bytes, pos: int) -> tuple[
    TagValue, int
]:
    try:
        t = TagType(type_code)
    except ValueError:
        raise PtuFormatError(f"tag {ident!r}: unknown tag type 0x{type_code:08X}") from None
    if t is TagType.EMPTY8:
        return None, pos
    if t is TagType.BOOL8:
        return struct.unpack("<q", raw)[0] != 0, pos
    if t is TagType.INT8:
        return int(struct.unpack("<q", raw)[0]), pos
    if t in (TagType.BITSET64, TagType.COLOR8):
        return int(struct.unpack("<Q", raw)[0]), pos
    if t in (TagType.FLOAT8, TagType.TDATETIME):
        return float(struct.unpack("<d", raw)[0]), pos
    size = struct.unpack("<q", raw)[0]
    if not 0 <= size <= MAX_PAYLOAD_BYTES:
        raise PtuFormatError(f"tag {ident!r}: payload size {size} out of range")
    if pos + size > len(data):
        raise PtuFormatError(
            f"truncated file: tag {ident!r} needs {size} payload bytes, {len(data) - pos} remain"
        )
    payload = data[pos : pos + size]
    pos += size
    if t is TagType.FLOAT8_ARRAY:
        if size % 8:
            raise PtuFormatError(f"tag {ident!r}: Float8Array size {size} not a multiple of 8")
        return tuple(float(x) for x in struct.unpack(f"<{size // 8}d", payload)), pos
    if t is TagType.ANSI_STRING:
        return payload.split(b"\0", 1)[0].decode("latin-1"), pos
    if t is TagType.WIDE_STRING:
        try:
            text = payload.decode("utf-16-le", errors="strict")
        except UnicodeDecodeError as exc:
            raise PtuFormatError(f"tag {ident!r}: bad WideString: {exc}") from None
        return text.split("\0", 1)[0], pos
    return bytes(payload), pos


def _resolution_ps(seconds: TagValue) -> int | None:
    if not isinstance(seconds, float) or not math.isfinite(seconds) or seconds <= 0:
        return None
    ps = round(seconds * 1e12)
    return ps if ps > 0 and abs(seconds * 1e12 - ps) <= 1e-6 * ps else None


def read_ptu(path: Path) -> PtuFile:
    """Read a whole PTU file.

    Raises:
        PtuFormatError: (a ValueError) wrong magic, truncated header or records, unknown tag
            type (the message names the tag), ``TTResult_NumberOfRecords`` not matching the
            records present.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _PREAMBLE:
        raise PtuFormatError(f"truncated file: {len(data)} bytes, shorter than the preamble")
    if data[:8].rstrip(b"\0") != MAGIC:
        raise PtuFormatError(f"wrong magic {data[:8]!r}: not a PTU file")
    version = data[8:16].split(b"\0", 1)[0].decode("ascii", errors="replace")
    header: dict[str, Tag] = {}
    pos = _PREAMBLE
    while True:
        if pos + _ENTRY.size > len(data):
            raise PtuFormatError(f"truncated file: header ends at byte {pos} before Header_End")
        raw_ident, index, type_code, raw = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        ident = raw_ident.split(b"\0", 1)[0].decode("latin-1")
        value, pos = _decode_value(ident, type_code, raw, data, pos)
        if ident == HEADER_END:
            break
        tag = Tag(ident, TagType(type_code), value, index)
        if tag.key in header:
            raise PtuFormatError(f"tag {tag.key!r} appears twice in the header")
        header[tag.key] = tag
    body = len(data) - pos
    n_records = body // 4
    count = header.get(TAG_NUM_RECORDS)
    if count is not None and count.value != n_records:
        kind = "truncated file" if isinstance(count.value, int) and count.value > n_records else (
            "record count mismatch"
        )
        raise PtuFormatError(
            f"{kind}: {TAG_NUM_RECORDS} is {count.value!r}, the file holds {n_records} records"
        )
    if body % 4:
        raise PtuFormatError(f"truncated file: {body % 4} trailing bytes after the last record")
    records = np.frombuffer(data, dtype="<u4", count=n_records, offset=pos).astype(np.uint32)
    rt = header.get(TAG_RECORD_TYPE)
    res = header.get(TAG_RESOLUTION)
    return PtuFile(
        header=header,
        record_type=rt.value if rt is not None and isinstance(rt.value, int) else None,
        resolution_ps=None if res is None else _resolution_ps(res.value),
        records=records,
        version=version,
    )


def decode_ptu_t2(
    ptu: PtuFile, state: T2State | None = None, *, use_kernel: bool = True
) -> tuple[T2Events, T2State]:
    """Decode a T2 PTU file's records with :func:`~.records.decode_t2`.

    Raises:
        ValueError: record type or resolution missing, not T2, or not whole picoseconds.
    """
    if ptu.record_type is None:
        raise ValueError(f"PTU header has no integer {TAG_RECORD_TYPE} tag")
    if ptu.resolution_ps is None:
        raise ValueError(f"PTU {TAG_RESOLUTION} missing or not a whole number of picoseconds")
    return decode_t2(ptu.records, ptu.record_type, ptu.resolution_ps, state, use_kernel=use_kernel)
