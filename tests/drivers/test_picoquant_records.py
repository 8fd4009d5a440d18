"""T2 record decoding: hand-built records, kernel vs twin, encode/decode round trips in chunks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from qkdnode.drivers.picoquant.records import (
    RT_HYDRAHARP2_T2,
    RT_HYDRAHARP_T2,
    RT_MULTIHARP_T2,
    WRAP_V1,
    WRAP_V2,
    T2Events,
    T2State,
    decode_t2,
    encode_t2,
)

V2_TYPES = [RT_HYDRAHARP2_T2, RT_MULTIHARP_T2]
ALL_TYPES = [RT_HYDRAHARP_T2, *V2_TYPES]


def regular(channel: int, t: int) -> int:
    return ((channel - 1) << 25) | t


def special(channel: int, t: int) -> int:
    return (1 << 31) | (channel << 25) | t


def u32(words: list[int]) -> NDArray[np.uint32]:
    return np.array(words, dtype=np.uint32)


def decode_chunks(
    records: NDArray[np.uint32], record_type: int, cuts: list[int], use_kernel: bool = True
) -> tuple[T2Events, T2State]:
    state = T2State()
    times, channels = [], []
    bounds = [0, *sorted(c % (len(records) + 1) for c in cuts), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        ev, state = decode_t2(records[lo:hi], record_type, 1, state, use_kernel=use_kernel)
        times.append(ev.timestamps_ps)
        channels.append(ev.channels)
    return T2Events(np.concatenate(times), np.concatenate(channels)), state


@pytest.mark.parametrize("use_kernel", [True, False])
def test_hand_built_v2(use_kernel: bool) -> None:
    recs = u32([
        regular(1, 5),
        special(0, 7),  # sync
        special(0x3F, 0),  # old-style single overflow
        regular(64, 3),
        special(0x3F, 3),  # three overflows
        special(15, 9),  # marker 15
        regular(2, 0x1FFFFFF),
    ])
    ev, state = decode_t2(recs, RT_HYDRAHARP2_T2, 5, use_kernel=use_kernel)
    assert ev.timestamps_ps.dtype == np.int64
    assert ev.channels.dtype == np.int16
    assert ev.channels.tolist() == [1, 0, 64, -15, 2]
    assert ev.timestamps_ps.tolist() == [
        25, 35, (WRAP_V2 + 3) * 5, (4 * WRAP_V2 + 9) * 5, (4 * WRAP_V2 + 0x1FFFFFF) * 5
    ]
    assert state == T2State(4 * WRAP_V2)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_hand_built_v1_ignores_overflow_time_field(use_kernel: bool) -> None:
    recs = u32([special(0x3F, 12345), regular(3, 10), special(0x3F, 0), special(2, 4)])
    ev, state = decode_t2(recs, RT_HYDRAHARP_T2, 1, use_kernel=use_kernel)
    assert ev.channels.tolist() == [3, -2]
    assert ev.timestamps_ps.tolist() == [WRAP_V1 + 10, 2 * WRAP_V1 + 4]
    assert state.offset == 2 * WRAP_V1


def test_state_offset_is_applied() -> None:
    ev, state = decode_t2(u32([regular(1, 1)]), RT_MULTIHARP_T2, 1, T2State(100))
    assert ev.timestamps_ps.tolist() == [101]
    assert state == T2State(100)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_undefined_special_raises_naming_record(use_kernel: bool) -> None:
    recs = u32([regular(1, 1), special(16, 0)])
    with pytest.raises(ValueError, match=r"record 1 .*undefined channel 16"):
        decode_t2(recs, RT_HYDRAHARP2_T2, 1, use_kernel=use_kernel)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="record type 0x00010203"):
        decode_t2(u32([]), 0x00010203, 1)
    with pytest.raises(TypeError, match="uint32"):
        decode_t2(np.zeros(2, dtype=np.int64), RT_HYDRAHARP2_T2, 1)
    with pytest.raises(TypeError, match="numpy array"):
        decode_t2([1, 2], RT_HYDRAHARP2_T2, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution_ps"):
        decode_t2(u32([]), RT_HYDRAHARP2_T2, 0)
    with pytest.raises(TypeError, match="resolution_ps"):
        decode_t2(u32([]), RT_HYDRAHARP2_T2, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before"):
        encode_t2(np.array([5, 4]), np.array([1, 1], dtype=np.int16), RT_HYDRAHARP2_T2)
    with pytest.raises(ValueError, match="channel code 65"):
        encode_t2(np.array([5]), np.array([65], dtype=np.int16), RT_HYDRAHARP2_T2)


def test_empty_input() -> None:
    ev, state = decode_t2(u32([]), RT_HYDRAHARP_T2, 1, T2State(7))
    assert ev.timestamps_ps.shape == (0,)
    assert state == T2State(7)


words = st.lists(st.integers(0, 2**32 - 1), max_size=200)
# Records without undefined specials (channel 16..62 with the special bit set).
valid_words = words.map(
    lambda ws: [w for w in ws if not (w >> 31 and 16 <= (w >> 25) & 0x3F <= 62)]
)


@settings(deadline=None)
@given(ws=words, record_type=st.sampled_from(ALL_TYPES), offset=st.integers(0, 2**40))
def test_kernel_matches_twin(ws: list[int], record_type: int, offset: int) -> None:
    recs = u32(ws)
    outcomes: list[object] = []
    for use_kernel in (True, False):
        try:
            ev, state = decode_t2(recs, record_type, 3, T2State(offset), use_kernel=use_kernel)
            outcomes.append((ev.timestamps_ps.tolist(), ev.channels.tolist(), state))
        except ValueError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


events = st.lists(
    st.tuples(
        st.integers(0, 3 * WRAP_V2),  # gap to the previous event, often past a wrap
        st.one_of(st.integers(1, 64), st.integers(-15, 0)),
    ),
    max_size=60,
)


@settings(deadline=None)
@given(
    evs=events,
    record_type=st.sampled_from(ALL_TYPES),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
    zero_count=st.booleans(),
    big_gap=st.booleans(),
)
def test_round_trip_in_chunks(
    evs: list[tuple[int, int]], record_type: int, cuts: list[int], zero_count: bool, big_gap: bool
) -> None:
    # A gap of many wraps exercises v2 counts above the 25-bit field (v1 would need one overflow
    # record per wrap, so it keeps small gaps).
    scale = WRAP_V2 if big_gap and record_type != RT_HYDRAHARP_T2 else 1
    gaps = [g * (scale if i == 0 else 1) for i, (g, _) in enumerate(evs)]
    times = np.cumsum(np.array(gaps, dtype=np.int64))
    channels = np.array([c for _, c in evs], dtype=np.int16)
    recs, enc_state = encode_t2(times, channels, record_type, zero_count_overflow=zero_count)
    whole, whole_state = decode_t2(recs, record_type, 1)
    np.testing.assert_array_equal(whole.timestamps_ps, times)
    np.testing.assert_array_equal(whole.channels, channels)
    assert whole_state == enc_state
    for use_kernel in (True, False):
        chunked, state = decode_chunks(recs, record_type, cuts, use_kernel)
        np.testing.assert_array_equal(chunked.timestamps_ps, times)
        np.testing.assert_array_equal(chunked.channels, channels)
        assert state == enc_state


def test_encoder_writes_expected_overflows() -> None:
    t = np.array([3 * WRAP_V2 + 1], dtype=np.int64)
    c = np.array([1], dtype=np.int16)
    recs, _ = encode_t2(t, c, RT_HYDRAHARP2_T2)
    assert recs.tolist() == [special(0x3F, 3), regular(1, 1)]
    recs, _ = encode_t2(np.array([WRAP_V2]), c, RT_HYDRAHARP2_T2, zero_count_overflow=True)
    assert recs.tolist() == [special(0x3F, 0), regular(1, 0)]
    recs, _ = encode_t2(np.array([2 * WRAP_V1 + 5]), c, RT_HYDRAHARP_T2)
    assert recs.tolist() == [special(0x3F, 0), special(0x3F, 0), regular(1, 5)]


def test_encode_chunks_with_state_equal_whole() -> None:
    times = np.array([1, WRAP_V2 + 2, 5 * WRAP_V2], dtype=np.int64)
    ch = np.array([1, -3, 0], dtype=np.int16)
    whole, _ = encode_t2(times, ch, RT_MULTIHARP_T2)
    first, state = encode_t2(times[:1], ch[:1], RT_MULTIHARP_T2)
    second, _ = encode_t2(times[1:], ch[1:], RT_MULTIHARP_T2, state)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)


def test_picosecond_overflow_raises() -> None:
    with pytest.raises(ValueError, match="exceed int64"):
        decode_t2(u32([regular(1, 1)]), RT_HYDRAHARP2_T2, 1000, T2State(2**62))
