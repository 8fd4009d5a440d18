"""HydraHarp / MultiHarp T2 time-tag records: decoding with overflow correction, and encoding.

A T2 record is a little-endian 32-bit word: bit 31 *special*, bits 30..25 *channel*, bits 24..0
*time* (in units of the instrument's resolution). Regular records (special = 0) are detector
events on channel ``field + 1``. Special records are:

* channel 0x3F: an overflow. v1 records (:data:`RT_HYDRAHARP_T2`) add :data:`WRAP_V1` to the
  running offset and ignore the time field; v2 records (every other supported record type) add
  ``count * WRAP_V2`` where ``count`` is the time field, or ``WRAP_V2`` once when it is 0.
* channel 0: a sync event.
* channel 1..15: an external marker.

Decoded events use one channel code per kind (:data:`SYNC_CHANNEL` = 0 for sync,
``-m`` for marker ``m``, ``1..64`` for detector inputs), so one time-ordered stream keeps every
event. A special record with a channel in 16..62 is not defined by PicoQuant: decoding raises
:class:`ValueError` naming its index rather than dropping it.

The decoder carries its running overflow offset in a frozen :class:`T2State`, passed in and
returned, so a stream decoded in chunks equals one decode of the whole stream.
:func:`decode_t2_kernel` (numba) and :func:`decode_t2_reference` (plain Python) are twins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = [
    "MARKER_MAX",
    "RT_HYDRAHARP2_T2",
    "RT_HYDRAHARP_T2",
    "RT_MULTIHARP_T2",
    "RT_TIMEHARP260N_T2",
    "RT_TIMEHARP260P_T2",
    "SYNC_CHANNEL",
    "T2_RECORD_TYPES",
    "WRAP_V1",
    "WRAP_V2",
    "T2Events",
    "T2State",
    "decode_t2",
    "decode_t2_kernel",
    "decode_t2_reference",
    "encode_t2",
    "is_v2",
]

# PicoQuant record type codes (TTResultFormat_TTTRRecType) of the T2 formats decoded here.
RT_HYDRAHARP_T2 = 0x00010204
RT_HYDRAHARP2_T2 = 0x01010204
RT_TIMEHARP260N_T2 = 0x00010205
RT_TIMEHARP260P_T2 = 0x00010206
# MultiHarp (and the generic format PicoHarp 330 also writes).
RT_MULTIHARP_T2 = 0x00010207
T2_RECORD_TYPES = frozenset(
    {RT_HYDRAHARP_T2, RT_HYDRAHARP2_T2, RT_TIMEHARP260N_T2, RT_TIMEHARP260P_T2, RT_MULTIHARP_T2}
)

# v1 firmware wraps slightly before 2**25 (PicoQuant's T2WRAPAROUND_V1).
WRAP_V1 = 33552000
# v2 wraps at the full 25-bit time field.
WRAP_V2 = 1 << 25

SYNC_CHANNEL = 0
# Markers 1..15 are decoded as channel codes -1..-15.
MARKER_MAX = 15

_TIME_MASK = (1 << 25) - 1
_CHANNEL_MASK = 0x3F
_OVERFLOW_CHANNEL = 0x3F
_REGULAR_CHANNELS = 64


@dataclass(frozen=True, slots=True)
class T2State:
    """Decoder state carried between chunks of one stream.

    Attributes:
        offset: running overflow offset, in units of the record resolution.
    """

    offset: int = 0


@dataclass(frozen=True, slots=True)
class T2Events:
    """Decoded events, in record order.

    Attributes:
        timestamps_ps: int64 picoseconds (record time units times the resolution).
        channels: int16; 1..64 detector inputs, 0 sync, -1..-15 markers.
    """

    timestamps_ps: NDArray[np.int64]
    channels: NDArray[np.int16]


def is_v2(record_type: int) -> bool:
    """Whether ``record_type`` uses v2 overflow records; :class:`ValueError` if not a T2 type."""
    if record_type not in T2_RECORD_TYPES:
        raise ValueError(f"unsupported T2 record type 0x{record_type:08X}")
    return record_type != RT_HYDRAHARP_T2


@njit(cache=True, nogil=True)
def decode_t2_kernel(
    records: NDArray[np.uint32],
    v2: bool,
    offset: np.int64,
    wrap_v1: np.int64,
    wrap_v2: np.int64,
    times: NDArray[np.int64],
    channels: NDArray[np.int16],
) -> tuple[int, np.int64, int]:
    """Decode ``records`` into ``times`` (resolution units) and ``channels``.

    ``times`` and ``channels`` must hold at least ``len(records)`` entries. Returns
    ``(number of events written, offset after the last record, index of the first undefined
    special record or -1)``; on an undefined record the outputs hold the events before it.
    """
    n = 0
    for i in range(records.shape[0]):
        rec = np.int64(records[i])
        special = (rec >> 31) & 1
        channel = (rec >> 25) & 0x3F
        t = rec & 0x1FFFFFF
        if special == 0:
            times[n] = offset + t
            channels[n] = channel + 1
            n += 1
        elif channel == 0x3F:
            if not v2:
                offset += wrap_v1
            elif t == 0:
                offset += wrap_v2
            else:
                offset += t * wrap_v2
        elif channel <= 15:
            times[n] = offset + t
            channels[n] = -channel
            n += 1
        else:
            return n, offset, i
    return n, offset, -1


def decode_t2_reference(
    records: NDArray[np.uint32], v2: bool, offset: int
) -> tuple[list[int], list[int], int, int]:
    """Plain-Python twin of :func:`decode_t2_kernel`.

    Returns ``(times, channels, offset, bad_index)`` with ``bad_index`` -1 when every record is
    defined.
    """
    times: list[int] = []
    channels: list[int] = []
    for i, word in enumerate(records.tolist()):
        special = word >> 31
        channel = (word >> 25) & _CHANNEL_MASK
        t = word & _TIME_MASK
        if not special:
            times.append(offset + t)
            channels.append(channel + 1)
        elif channel == _OVERFLOW_CHANNEL:
            offset += (max(t, 1) * WRAP_V2) if v2 else WRAP_V1
        elif channel <= MARKER_MAX:
            times.append(offset + t)
            channels.append(-channel)
        else:
            return times, channels, offset, i
    return times, channels, offset, -1


def _as_records(records: NDArray[np.uint32]) -> NDArray[np.uint32]:
    if not isinstance(records, np.ndarray):
        raise TypeError(f"records must be a numpy array, not {type(records).__name__}")
    if records.dtype != np.uint32 or records.ndim != 1:
        raise TypeError(f"records must be a 1-D uint32 array, got {records.ndim}-D {records.dtype}")
    return np.ascontiguousarray(records)


def decode_t2(
    records: NDArray[np.uint32],
    record_type: int,
    resolution_ps: int,
    state: T2State | None = None,
    *,
    use_kernel: bool = True,
) -> tuple[T2Events, T2State]:
    """Decode one chunk of a T2 record stream.

    Args:
        records: 1-D uint32 records, in stream order.
        record_type: PicoQuant record type code (one of :data:`T2_RECORD_TYPES`).
        resolution_ps: record time unit in integer picoseconds (positive).
        state: state returned by the previous chunk's decode; ``None`` for a stream's start.
        use_kernel: run the numba kernel (default) or its plain-Python twin.

    Returns:
        The chunk's events and the state to pass with the next chunk.

    Raises:
        TypeError: ``records`` is not a 1-D uint32 array.
        ValueError: unknown record type, bad resolution, or an undefined special record.
    """
    records = _as_records(records)
    v2 = is_v2(record_type)
    if isinstance(resolution_ps, bool) or not isinstance(resolution_ps, int | np.integer):
        raise TypeError(f"resolution_ps must be an int, not {type(resolution_ps).__name__}")
    if resolution_ps <= 0:
        raise ValueError(f"resolution_ps must be positive, got {resolution_ps}")
    offset = 0 if state is None else state.offset
    if use_kernel:
        times = np.empty(records.shape[0], dtype=np.int64)
        channels = np.empty(records.shape[0], dtype=np.int16)
        n, new_offset, bad = decode_t2_kernel(
            records, v2, np.int64(offset), np.int64(WRAP_V1), np.int64(WRAP_V2), times, channels
        )
        times, channels = times[:n], channels[:n]
        end = int(new_offset)
    else:
        t_list, c_list, end, bad = decode_t2_reference(records, v2, offset)
        times = np.array(t_list, dtype=np.int64)
        channels = np.array(c_list, dtype=np.int16)
    if bad >= 0:
        word = int(records[bad])
        raise ValueError(
            f"record {bad} (0x{word:08X}) is a special record with undefined channel "
            f"{(word >> 25) & _CHANNEL_MASK}"
        )
    limit = np.iinfo(np.int64).max // int(resolution_ps)
    if times.shape[0] and (int(times.max()) > limit or int(times.min()) < -limit):
        raise ValueError(f"timestamps exceed int64 picoseconds at resolution {resolution_ps} ps")
    return T2Events(times * np.int64(resolution_ps), channels), T2State(end)


def encode_t2(
    times: NDArray[np.int64],
    channels: NDArray[np.int16],
    record_type: int,
    state: T2State | None = None,
    *,
    zero_count_overflow: bool = False,
) -> tuple[NDArray[np.uint32], T2State]:
    """Encode events (times in resolution units, channel codes as decoded) into T2 records.

    Overflow records are inserted before an event whenever its time is past the current wrap.
    v2 overflows carry the wrap count; with ``zero_count_overflow`` a single wrap is written with
    count 0 (the old-style form). The inverse of :func:`decode_t2` with the same state.

    Raises:
        ValueError: times decreasing or before the state's offset, or a channel code outside
            -15..64.
    """
    v2 = is_v2(record_type)
    t_arr = np.asarray(times, dtype=np.int64)
    c_arr = np.asarray(channels, dtype=np.int64)
    if t_arr.shape != c_arr.shape or t_arr.ndim != 1:
        raise ValueError("times and channels must be 1-D arrays of one length")
    offset = 0 if state is None else state.offset
    wrap = WRAP_V2 if v2 else WRAP_V1
    out: list[int] = []
    previous = offset
    for i, (t, ch) in enumerate(zip(t_arr.tolist(), c_arr.tolist(), strict=True)):
        if t < previous:
            raise ValueError(f"event {i}: time {t} is before {previous} (times must not decrease)")
        previous = t
        if not -MARKER_MAX <= ch <= _REGULAR_CHANNELS:
            raise ValueError(f"event {i}: channel code {ch} outside -{MARKER_MAX}..64")
        wraps = (t - offset) // wrap
        while wraps > 0:
            if v2:
                count = min(wraps, _TIME_MASK)
                field = 0 if (count == 1 and zero_count_overflow) else count
            else:
                count, field = 1, 0
            out.append((1 << 31) | (_OVERFLOW_CHANNEL << 25) | field)
            offset += count * wrap
            wraps -= count
        rel = t - offset
        if ch > 0:
            out.append(((ch - 1) << 25) | rel)
        else:
            out.append((1 << 31) | ((-ch) << 25) | rel)
    return np.array(out, dtype=np.uint32), T2State(offset)
