"""Tests of the table phi of sum-product-fast's check inputs: the vector-gather kernel against
its plain twin (bit for bit), the table against phi itself, and its clamp."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.errors import TypingError

from qkdnode.dsp.ldpc.phi import PHI_FAST_X_MAX
from qkdnode.dsp.ldpc.phi_table import (
    PHI_TABLE,
    PHI_TABLE_HEADER,
    PHI_TABLE_HI,
    PHI_TABLE_LO,
    PHI_TABLE_SHIFT,
    _phi_table_many,
    _sub_phi_table_many,
    phi_table_many,
    phi_table_reference,
    sub_phi_table_many,
    sub_phi_table_reference,
)


def exact_phi(x: np.ndarray) -> np.ndarray:
    return np.log1p(2.0 / np.expm1(np.asarray(x, np.float64)))


@settings(deadline=None, max_examples=60)
@given(values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=41))
def test_vector_gather_agrees_with_twin_bit_for_bit(values: list[float]) -> None:
    # Any length (vector body of 8 and a scalar tail), any float32 including NaN and infinities.
    x = np.array(values, np.float32)
    compiled = phi_table_many(x)
    twin = phi_table_reference(x)
    np.testing.assert_array_equal(compiled.view(np.int32), twin.view(np.int32))
    assert np.isfinite(compiled).all()


def test_table_is_phi_within_its_bucket() -> None:
    # Every value between the clamps lies in a bucket 2^-7 of x wide; the entry is phi's mean
    # over it, so it lies between phi at the bucket's ends (phi falls).
    rng = np.random.default_rng(3)
    x = np.exp(rng.uniform(np.log(PHI_TABLE_LO), np.log(PHI_TABLE_HI), 200_000)).astype(np.float32)
    bits = x.view(np.int32).astype(np.int64)
    low = ((bits >> PHI_TABLE_SHIFT) << PHI_TABLE_SHIFT).astype(np.int32).view(np.float32)
    high = (((bits >> PHI_TABLE_SHIFT) + 1) << PHI_TABLE_SHIFT).astype(np.int32).view(np.float32)
    got = phi_table_reference(x).astype(np.float64)
    assert (got <= exact_phi(low) * (1 + 1e-6)).all()
    assert (got >= exact_phi(high) * (1 - 1e-6)).all()
    # Relative to x the buckets are 2^-7 wide: where phi is large (small x) the table is close
    # in absolute terms, where it is small (large x) in relative terms only to x's bucket.
    small = x < 2.0
    assert np.max(np.abs(got[small] - exact_phi(x[small]))) < 8e-3
    assert np.max(np.abs(got - exact_phi(x)) / exact_phi(x)) < 0.25


def test_clamps() -> None:
    low = PHI_TABLE[PHI_TABLE_HEADER]  # the first entry after the header
    x = np.array([0.0, -0.0, 1e-30, -1e-9, PHI_TABLE_LO], np.float32)
    np.testing.assert_array_equal(phi_table_reference(x), np.full(x.size, low))
    np.testing.assert_array_equal(phi_table_many(x), np.full(x.size, low))
    # NaN's bits lie above infinity's: it takes the upper clamp, as large inputs do.
    big = np.array([PHI_FAST_X_MAX, 31.0, -1e6, 1e6, np.inf, -np.inf, np.nan, -np.nan],
                   np.float32)
    expected = phi_table_reference(np.array([PHI_TABLE_HI], np.float32))[0]
    np.testing.assert_array_equal(phi_table_many(big), np.full(big.size, expected))
    assert PHI_TABLE.flags.writeable is False
    assert abs(low - exact_phi(PHI_TABLE_LO)) < 1e-2


def test_any_layout_is_taken_and_the_intrinsic_refuses_what_it_cannot_address() -> None:
    # phi_table_many copies any layout to a contiguous row first; the vector intrinsic itself
    # types only 1-D C-contiguous float32 arrays (its pointer arithmetic assumes them).
    x = np.random.default_rng(4).normal(0, 5, 203).astype(np.float32)
    for view in (x[::2], x[::-1], x.reshape(7, 29)[:, 3]):
        np.testing.assert_array_equal(phi_table_many(view), phi_table_reference(view))
    with pytest.raises(TypingError):
        _phi_table_many(x[::2], PHI_TABLE)
    with pytest.raises(TypingError):
        _phi_table_many(x.reshape(7, 29), PHI_TABLE)


@settings(deadline=None, max_examples=60)
@given(pairs=st.lists(st.tuples(st.floats(width=32, allow_nan=True, allow_infinity=True),
                                st.floats(width=32, allow_nan=True, allow_infinity=True)),
                      max_size=41))
def test_fused_difference_and_phi_agree_with_twin_bit_for_bit(
    pairs: list[tuple[float, float]]
) -> None:
    # The decoder's gather (posterior minus old message) and the table phi in one pass: the
    # same differences and the same table entries as the twin, for any length and any float32.
    a = np.array([p for p, _ in pairs], np.float32)
    b = np.array([q for _, q in pairs], np.float32)
    diff, out = sub_phi_table_many(a, b)
    twin_diff, twin_out = sub_phi_table_reference(a, b)
    np.testing.assert_array_equal(diff.view(np.int32), twin_diff.view(np.int32))
    np.testing.assert_array_equal(out.view(np.int32), twin_out.view(np.int32))
    np.testing.assert_array_equal(out, phi_table_many(diff))


def test_fused_difference_takes_any_layout_and_checks_sizes() -> None:
    x = np.random.default_rng(5).normal(0, 5, 203).astype(np.float32)
    y = np.random.default_rng(6).normal(0, 5, 203).astype(np.float32)
    for u, v in ((x[::2], y[::-2]), (x[::-1], y)):
        for got, want in zip(sub_phi_table_many(u, v), sub_phi_table_reference(u, v),
                             strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="same size"):
        sub_phi_table_many(x, y[:7])
    with pytest.raises(TypingError):
        _sub_phi_table_many(x[::2], y[::2], PHI_TABLE)
