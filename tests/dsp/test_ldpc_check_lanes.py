"""Tests of sum-product-fast's lane-major check sums and new messages (``check_lanes``): the
8-lane intrinsics and their scalar tails against the plain-numpy twins, bit for bit, and the
twin's fused multiply-add against exact arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.ldpc.check_lanes import (
    ENDS_ROWS,
    LANE_ROWS,
    _fma32,
    check_messages_many,
    check_messages_reference,
    check_sums_many,
    check_sums_reference,
)
from qkdnode.dsp.ldpc.phi_table import PHI_TABLE, PHI_TABLE_HEADER

# The values a layer's phi row holds: table entries (positive, finite), with repeats so that
# ties with the largest and second largest are common.
_ENTRIES = PHI_TABLE[PHI_TABLE_HEADER:]
any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def layers(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mags, ext, ends)`` of a layer: ``degree`` rows of ``z`` lanes (any ``z``: vector
    chunks of 8 and a scalar tail) and the initial per-lane rows as the kernel sets them."""
    z = draw(st.integers(1, 27))
    degree = draw(st.integers(1, 9))
    pool = draw(st.lists(st.integers(0, _ENTRIES.size - 1), min_size=1, max_size=6))
    picks = draw(st.lists(st.sampled_from(pool), min_size=degree * z, max_size=degree * z))
    mags = _ENTRIES[np.array(picks)].reshape(degree, z)
    ext = np.array(draw(st.lists(any_float32, min_size=degree * z, max_size=degree * z)),
                   np.float32).reshape(degree, z)
    syndrome = np.array(draw(st.lists(st.booleans(), min_size=z, max_size=z)))
    ends = np.empty((ENDS_ROWS, z), np.float32)
    ends[0] = 0.0
    ends[1] = np.where(syndrome, np.float32(-0.0), np.float32(0.0))
    ends[2:] = -1.0
    return mags, ext, ends


@settings(deadline=None, max_examples=60)
@given(layer=layers())
def test_check_sums_agree_with_twin_bit_for_bit(
    layer: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    mags, ext, ends = layer
    compiled = check_sums_many(mags, ext, ends)
    twin = check_sums_reference(mags, ext, ends)
    np.testing.assert_array_equal(compiled.view(np.int32), twin.view(np.int32))
    # The meaning, checked against plain numpy reductions: the sum, the sign parity and the
    # two largest phi of each lane.
    np.testing.assert_allclose(compiled[0], mags.sum(axis=0, dtype=np.float64), rtol=1e-5)
    signs = np.bitwise_xor.reduce(np.signbit(ext), axis=0) ^ np.signbit(ends[1])
    np.testing.assert_array_equal(np.signbit(compiled[1]), signs)
    ranked = np.sort(mags, axis=0)
    np.testing.assert_array_equal(compiled[2], ranked[-1])
    np.testing.assert_array_equal(compiled[3], ranked[-2] if mags.shape[0] > 1 else -1.0)
    # The input rows are left alone.
    np.testing.assert_array_equal(ends[2], -1.0)


@settings(deadline=None, max_examples=60)
@given(layer=layers(), data=st.data())
def test_check_messages_agree_with_twin_bit_for_bit(
    layer: tuple[np.ndarray, np.ndarray, np.ndarray], data: st.DataObject,
) -> None:
    mags, ext, ends = layer
    degree, z = mags.shape
    sums = check_sums_reference(mags, ext, ends)
    # Per-lane terms of the size the kernel computes (phi and expansion coefficients), any
    # signs and magnitudes within float32's normal range.
    terms = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)
    lane = np.array(data.draw(st.lists(terms, min_size=LANE_ROWS * z, max_size=LANE_ROWS * z)),
                    np.float32).reshape(LANE_ROWS, z)
    msg, newpost = check_messages_many(mags, ext, lane, sums)
    twin_msg, twin_newpost = check_messages_reference(mags, ext, lane, sums)
    np.testing.assert_array_equal(msg.view(np.int32), twin_msg.view(np.int32))
    np.testing.assert_array_equal(newpost.view(np.int32), twin_newpost.view(np.int32))
    assert newpost.shape == (degree, 2 * z)
    np.testing.assert_array_equal(newpost[:, :z].view(np.int32), newpost[:, z:].view(np.int32))
    # The weakest input's message is the exact value, with the sign of the others' parity.
    weakest = mags == sums[2]
    expected = np.broadcast_to(lane[3], mags.shape)[weakest]
    np.testing.assert_array_equal(np.abs(msg[weakest]), np.abs(expected))


def _exact_fma32(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """``a * b + c`` in exact rational arithmetic, rounded once to float32 (nearest, ties to
    even) by picking the nearer of the two float32 neighbours."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    guess = np.float32(float(exact))
    candidates = [guess, np.nextafter(guess, np.float32(np.inf)),
                  np.nextafter(guess, np.float32(-np.inf))]
    best = min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact),
                                          int(np.array(v).view(np.int32)) & 1))
    return np.float32(best)


@settings(deadline=None, max_examples=200)
@given(a=st.floats(-1e3, 1e3, width=32), b=st.floats(-1e3, 1e3, width=32),
       c=st.floats(-1e3, 1e3, width=32))
def test_twin_fma_rounds_once(a: float, b: float, c: float) -> None:
    f32 = np.float32
    got = _fma32(np.array([a], f32), np.array([b], f32), np.array([c], f32))[0]
    assert got == _exact_fma32(f32(a), f32(b), f32(c))


def test_twin_fma_at_a_double_rounding_tie() -> None:
    # a * b + c lands exactly halfway between two float32s in float64 arithmetic, while the
    # exact value lies just above: rounding the float64 sum again would go to even (down), a
    # fused operation rounds up.
    f32 = np.float32
    a, b = f32(1.0 + 2.0**-12), f32(1.0 + 2.0**-12)  # a * b = 1 + 2^-11 + 2^-24 exactly
    c = f32(2.0**-60)  # below float64's resolution at 1
    got = _fma32(np.array([a]), np.array([b]), np.array([c]))[0]
    assert got == _exact_fma32(a, b, c)
    assert got == np.nextafter(f32(1.0 + 2.0**-11), f32(2.0))


def test_twin_fma_at_the_overflow_threshold() -> None:
    # a * b is exactly halfway between the largest float32 and 2^128 (where rounding overflows
    # to inf); a tiny c puts the exact value on one side: a fused operation gives the largest
    # float32 below the midpoint and inf above it (and the same with signs flipped).
    f32 = np.float32
    a, b = f32(18631.0 * 2.0**60), f32(1801.0 * 2.0**43)  # 18631 * 1801 = 2^25 - 1
    assert float(a) * float(b) == 2.0**128 - 2.0**103
    largest, tiny = np.finfo(f32).max, f32(2.0**-149)
    for sign in (f32(1.0), f32(-1.0)):
        low, high = _fma32(np.array([sign * a] * 3), np.array([b] * 3),
                           np.array([-sign * tiny, f32(0.0), sign * tiny]))[0:3:2]
        assert low == sign * largest
        assert high == sign * f32(np.inf)


def test_scalar_tail_agrees_with_vector_lanes_and_twin_off_the_table() -> None:
    # Inputs no phi table holds (NaN, -0.0 against +0.0): lane 8 (the scalar tail of z = 9)
    # gets lane 0's (a vector lane's) values and both give the twin's bits.
    f32 = np.float32
    nan = f32(np.nan)
    cases = [([0.0, -0.0], [-1.0, -1.0]), ([-0.0, 0.0], [0.0, 0.0]), ([nan, 1.0], [-1.0, -1.0]),
             ([1.0, nan, 2.0], [-1.0, -1.0]), ([1.0, 2.0], [nan, nan])]
    for column, extremes in cases:
        mags = np.full((len(column), 9), f32(0.5))
        mags[:, 0] = mags[:, 8] = column
        ext = np.ones_like(mags)
        ends = np.zeros((ENDS_ROWS, 9), np.float32)
        ends[2:, 0] = ends[2:, 8] = extremes
        compiled = check_sums_many(mags, ext, ends).view(np.int32)
        np.testing.assert_array_equal(compiled[:, 8], compiled[:, 0])
        np.testing.assert_array_equal(compiled,
                                      check_sums_reference(mags, ext, ends).view(np.int32))


def test_sizes_are_checked() -> None:
    mags = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="ends must hold 4 rows of z = 5"):
        check_sums_many(mags, mags, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="lane must hold 5 rows of z = 5"):
        check_messages_many(mags, mags, np.zeros((4, 5), np.float32),
                            np.zeros((ENDS_ROWS, 5), np.float32))
