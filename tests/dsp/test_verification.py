"""Tests of the polynomial-hash error verification."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.verification import (
    DEFAULT_EPS_COR,
    _gf_mul,
    _gf_mul_reference,
    collision_probability,
    draw_seed,
    hash_points,
    tag_bits,
    tags_match,
    verification_tag,
    verification_tag_reference,
)

blocks = st.integers(0, 700).flatmap(
    lambda n: st.lists(st.integers(0, 1), min_size=n, max_size=n).map(
        lambda bits: np.array(bits, dtype=np.uint8)
    )
)
points = st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3).map(
    lambda xs: np.array(xs, dtype=np.uint64)
)


@settings(deadline=None, max_examples=60)
@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1))
def test_field_multiplication_agrees_with_twin(a: int, b: int) -> None:
    assert int(_gf_mul(np.uint64(a), np.uint64(b), np.uint64(0x1B))) == _gf_mul_reference(a, b)


def test_field_multiplication_known_values() -> None:
    assert _gf_mul_reference(1, 12345) == 12345
    # x^63 * x = x^64 = x^4 + x^3 + x + 1.
    assert _gf_mul_reference(1 << 63, 2) == 0x1B


@settings(deadline=None, max_examples=40)
@given(bits=blocks, seed=points)
def test_kernel_agrees_with_twin(bits: np.ndarray, seed: np.ndarray) -> None:
    tag = verification_tag(bits, seed)
    assert tag.dtype == np.uint8
    assert tag.shape == (64 * seed.size,)
    np.testing.assert_array_equal(tag, verification_tag_reference(bits, seed))


@settings(deadline=None, max_examples=60)
@given(bits=blocks.filter(lambda b: b.size > 0), data=st.data(), seed_int=st.integers(0, 2**32))
def test_every_corrupted_block_is_caught(
    bits: np.ndarray, data: st.DataObject, seed_int: int
) -> None:
    flips = data.draw(
        st.lists(st.integers(0, bits.size - 1), min_size=1, max_size=8, unique=True)
    )
    corrupted = bits.copy()
    corrupted[flips] ^= 1
    seed = draw_seed(np.random.default_rng(seed_int), bits.size)
    assert not tags_match(verification_tag(bits, seed), verification_tag(corrupted, seed))
    assert tags_match(verification_tag(bits, seed), verification_tag(bits.copy(), seed))


def test_hash_is_affine_over_gf2() -> None:
    # For a fixed point the hash is affine in the block: h(a) ^ h(b) == h(a ^ b) ^ h(0).
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, (2, 1000), dtype=np.uint8)
    seed = draw_seed(rng, 1000)
    zero = np.zeros(1000, np.uint8)
    lhs = verification_tag(a, seed) ^ verification_tag(b, seed)
    rhs = verification_tag(a ^ b, seed) ^ verification_tag(zero, seed)
    np.testing.assert_array_equal(lhs, rhs)


def test_tag_length_follows_eps_cor() -> None:
    assert hash_points(64000, DEFAULT_EPS_COR) == 1
    assert tag_bits(64000) == 64
    assert collision_probability(64000, 1) <= DEFAULT_EPS_COR
    assert hash_points(64000, 1e-30) == 2
    assert collision_probability(64000, 2) <= 1e-30
    for n, eps in [(10, 1e-3), (10**6, 1e-15), (10**5, 1e-100)]:
        r = hash_points(n, eps)
        assert collision_probability(n, r) <= eps
        assert r == 1 or collision_probability(n, r - 1) > eps
    assert math.isclose(collision_probability(128, 1), 2 / 2**64)


def test_draw_seed_sources() -> None:
    seed = draw_seed(np.random.default_rng(1), 500)
    assert seed.dtype == np.uint64
    assert seed.shape == (1,)
    from_bytes = draw_seed(bytes(range(8)), 500)
    assert int(from_bytes[0]) == int.from_bytes(bytes(range(8)), "big")
    assert draw_seed(bytes(16), 500, 1e-30).shape == (2,)


class TestBadInput:
    def test_bits(self) -> None:
        seed = np.ones(1, np.uint64)
        with pytest.raises(TypeError, match="bits"):
            verification_tag([0, 1], seed)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bits"):
            verification_tag(np.zeros(4, np.int64), seed)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="bits"):
            verification_tag(np.array([0, 2], np.uint8), seed)
        with pytest.raises(ValueError, match="bits"):
            verification_tag(np.zeros((2, 2), np.uint8), seed)

    def test_seed(self) -> None:
        bits = np.zeros(4, np.uint8)
        with pytest.raises(TypeError, match="seed"):
            verification_tag(bits, np.ones(1, np.int64))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seed"):
            verification_tag(bits, np.ones(0, np.uint64))
        with pytest.raises(ValueError, match="source"):
            draw_seed(b"short", 4)
        with pytest.raises(TypeError, match="source"):
            draw_seed(12, 4)  # type: ignore[arg-type]

    def test_eps(self) -> None:
        with pytest.raises(ValueError, match="eps_cor"):
            hash_points(10, 0.0)
        with pytest.raises(ValueError, match="eps_cor"):
            hash_points(10, 1.5)
        with pytest.raises(TypeError, match="eps_cor"):
            hash_points(10, "1e-9")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="n_bits"):
            hash_points(-1)
