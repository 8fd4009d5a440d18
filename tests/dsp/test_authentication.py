"""Tests of Wegman-Carter authentication and its GF(2^64) arithmetic."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp import authentication as auth
from qkdnode.dsp.authentication import (
    KeyPool,
    KeyPoolDepleted,
    WegmanCarter,
    epsilon,
    gf64_inverse,
    gf64_mul,
    message_blocks,
    poly_hash,
    tag,
    verify,
)
from qkdnode.dsp.errors import DistillationError

words = st.integers(0, 2**64 - 1)
nonzero_words = st.integers(1, 2**64 - 1)
U64 = np.uint64
RED = np.uint64(auth.GF64_REDUCTION)


# --- the field ---------------------------------------------------------------------------------


def _poly_mod(a: int, f: int) -> int:
    deg = f.bit_length() - 1
    while a.bit_length() - 1 >= deg:
        a ^= f << (a.bit_length() - 1 - deg)
    return a


def _poly_mulmod(a: int, b: int, f: int) -> int:
    return _poly_mod(auth.clmul64_reference(a, b) if b < 2**64 else _slow_mul(a, b), f)


def _slow_mul(a: int, b: int) -> int:
    p = 0
    while b:
        if b & 1:
            p ^= a
        a <<= 1
        b >>= 1
    return p


def _poly_gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _poly_mod(a, b)
    return a


def test_field_polynomial_is_irreducible() -> None:
    # Rabin's test for degree 64 (only prime divisor 2): x^(2^64) = x mod f and
    # gcd(x^(2^32) - x, f) = 1.
    f = (1 << 64) | auth.GF64_REDUCTION
    power = 0b10  # x
    for i in range(64):
        power = _poly_mulmod(power, power, f)
        if i == 31:
            assert _poly_gcd(power ^ 0b10, f) == 1
    assert power == 0b10


@settings(deadline=None, max_examples=200)
@given(words, words)
def test_clmul_kernel_matches_twin(a: int, b: int) -> None:
    hi, lo = auth.clmul64_kernel(U64(a), U64(b), 64)
    assert (int(hi) << 64) | int(lo) == auth.clmul64_reference(a, b)


@settings(deadline=None, max_examples=200)
@given(words, words)
def test_mul_kernel_matches_twin(a: int, b: int) -> None:
    assert gf64_mul(a, b) == auth.gf64_mul_reference(a, b)


@settings(deadline=None, max_examples=100)
@given(words, words, words)
def test_field_axioms(a: int, b: int, c: int) -> None:
    assert gf64_mul(a, b) == gf64_mul(b, a)
    assert gf64_mul(gf64_mul(a, b), c) == gf64_mul(a, gf64_mul(b, c))
    assert gf64_mul(a, b ^ c) == gf64_mul(a, b) ^ gf64_mul(a, c)
    assert gf64_mul(a, 1) == a
    assert gf64_mul(a, 0) == 0


@settings(deadline=None, max_examples=50)
@given(nonzero_words)
def test_inverse(a: int) -> None:
    inv = gf64_inverse(a)
    assert gf64_mul(a, inv) == 1
    assert gf64_inverse(inv) == a


def test_known_products() -> None:
    # x^63 * x = x^64 = x^4 + x^3 + x + 1
    assert gf64_mul(1 << 63, 2) == 0x1B
    assert gf64_mul(1 << 63, 1 << 63) == auth.gf64_mul_reference(1 << 63, 1 << 63)
    with pytest.raises(ZeroDivisionError):
        gf64_inverse(0)


# --- the hash ----------------------------------------------------------------------------------


def test_message_blocks_layout() -> None:
    blocks = message_blocks(b"\x01" + bytes(7) + b"\x02")
    assert blocks.dtype == np.uint64
    assert [int(v) for v in blocks] == [1, 2, 72]
    assert [int(v) for v in message_blocks(b"")] == [0]


@settings(deadline=None, max_examples=60)
@given(st.binary(max_size=80), st.binary(min_size=8, max_size=8))
def test_hash_kernel_matches_twin(message: bytes, key: bytes) -> None:
    blocks = [int(v) for v in message_blocks(message)]
    k = int.from_bytes(key, "little")
    assert poly_hash(message, key) == auth.poly_hash_reference(blocks, k)
    assert int(auth.poly_hash_kernel(message_blocks(message), U64(k), RED)) == (
        auth.poly_hash_reference(blocks, k)
    )


def test_zero_padding_and_extension_change_the_hash() -> None:
    key = bytes(range(1, 9))
    base = b"frame"
    assert poly_hash(base, key) != poly_hash(base + b"\x00", key)
    assert poly_hash(b"", key) != poly_hash(bytes(8), key)
    assert poly_hash(bytes(8), key) != poly_hash(bytes(16), key)


def test_collisions_are_roots_of_the_difference_polynomial() -> None:
    # Two 2-block messages differing by d1 in block 1 and d2 in block 2 collide exactly when
    # d1 k^3 + d2 k^2 = 0, i.e. k = d2 / d1: epsilon > 0 is real, and it is the root count.
    k = 0x0123456789ABCDEF
    d1 = 0xDEADBEEF
    d2 = gf64_mul(k, d1)
    m1 = bytes(16)
    m2 = d1.to_bytes(8, "little") + d2.to_bytes(8, "little")
    key = k.to_bytes(8, "little")
    assert poly_hash(m1, key) == poly_hash(m2, key)
    assert poly_hash(m1, (k ^ 1).to_bytes(8, "little")) != poly_hash(
        m2, (k ^ 1).to_bytes(8, "little")
    )
    # The zero key is the root every difference polynomial shares (no constant term).
    assert poly_hash(m1, bytes(8)) == poly_hash(b"anything", bytes(8)) == 0


def test_epsilon_statement() -> None:
    assert epsilon(0) == 1 / 2**64
    assert epsilon(1) == 2 / 2**64
    assert epsilon(8) == 2 / 2**64
    assert epsilon(9) == 3 / 2**64
    assert epsilon(1_000_000) == (125_000 + 1) / 2**64
    assert epsilon(2**30) < 1e-10
    with pytest.raises(ValueError, match="message_len"):
        epsilon(-1)


# --- tags --------------------------------------------------------------------------------------

KEY = bytes.fromhex("0f1e2d3c4b5a6978")
PAD = bytes.fromhex("8877665544332211")


@settings(deadline=None, max_examples=50)
@given(
    st.binary(max_size=200), st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8)
)
def test_correct_tags_verify(message: bytes, key: bytes, pad: bytes) -> None:
    t = tag(message, key, pad)
    assert len(t) == auth.TAG_BYTES
    assert verify(message, t, key, pad)
    assert verify(bytearray(message), t, key, pad)


def test_every_single_bit_flip_of_message_fails() -> None:
    message = bytes(range(37))
    t = tag(message, KEY, PAD)
    for bit in range(8 * len(message)):
        flipped = bytearray(message)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(bytes(flipped), t, KEY, PAD), bit


def test_every_single_bit_flip_of_tag_fails() -> None:
    message = b"syndrome frame 17"
    t = tag(message, KEY, PAD)
    for bit in range(64):
        flipped = bytearray(t)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(message, bytes(flipped), KEY, PAD), bit


def test_truncated_or_extended_messages_and_tags_fail() -> None:
    message = b"0123456789abcdef"
    t = tag(message, KEY, PAD)
    assert not verify(message[:-1], t, KEY, PAD)
    assert not verify(message + b"\x00", t, KEY, PAD)
    assert not verify(message, t[:-1], KEY, PAD)
    assert not verify(message, t + b"\x00", KEY, PAD)


@given(st.binary(max_size=64), st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8))
@settings(deadline=None, max_examples=50)
def test_different_pads_give_different_tags(message: bytes, pad1: bytes, pad2: bytes) -> None:
    t1, t2 = tag(message, KEY, pad1), tag(message, KEY, pad2)
    xor = bytes(a ^ b for a, b in zip(t1, t2, strict=True))
    assert xor == bytes(a ^ b for a, b in zip(pad1, pad2, strict=True))
    assert (t1 == t2) == (pad1 == pad2)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="hash_key must be 8 bytes, got 7"):
        tag(b"m", KEY[:7], PAD)
    with pytest.raises(ValueError, match="pad must be 8 bytes, got 9"):
        tag(b"m", KEY, PAD + b"\x00")
    with pytest.raises(TypeError, match="message must be bytes-like"):
        tag("text", KEY, PAD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="material must be bytes-like"):
        KeyPool([1, 2])  # type: ignore[arg-type]


# --- key pool and the stateful authenticator ---------------------------------------------------


def test_key_pool_accounting_and_depletion() -> None:
    pool = KeyPool(bytes(range(20)))
    assert pool.bits_remaining == 160
    assert pool.take(8) == bytes(range(8))
    assert pool.take(0) == b""
    assert pool.bits_consumed == 64
    with pytest.raises(KeyPoolDepleted, match="13 bytes requested, 12 bytes available") as info:
        pool.take(13)
    assert isinstance(info.value, DistillationError)
    assert (info.value.requested, info.value.available) == (13, 12)
    assert pool.bits_consumed == 64  # nothing taken by the failed request
    assert pool.take(12) == bytes(range(8, 20))
    assert pool.bits_remaining == 0
    with pytest.raises(ValueError, match="nbytes"):
        pool.take(-1)
    err = pickle.loads(pickle.dumps(KeyPoolDepleted(8, 3)))
    assert (err.requested, err.available) == (8, 3)


def test_key_pool_does_not_alias_the_callers_buffer() -> None:
    material = bytearray(range(16))
    pool = KeyPool(material)
    material[0] = 0xFF
    assert pool.take(1) == b"\x00"


def test_two_ends_in_step() -> None:
    secret = bytes((7 * i + 3) % 256 for i in range(8 + 3 * 8))
    alice = WegmanCarter.from_pool(KeyPool(secret))
    bob = WegmanCarter.from_pool(KeyPool(secret))
    frames = [b"sift", b"syndrome" * 100, b""]
    for frame in frames:
        assert bob.verify(frame, alice.tag(frame))
    assert alice.bits_consumed == bob.bits_consumed == 64 + 3 * 64
    assert alice.tags_used == 3
    assert alice.epsilon_spent == pytest.approx(sum(epsilon(len(f)) for f in frames))
    with pytest.raises(KeyPoolDepleted):
        alice.tag(b"one too many")
    assert alice.tags_used == 3


def test_type_errors_consume_nothing() -> None:
    pool = KeyPool(bytes(range(24)))
    wc = WegmanCarter.from_pool(pool)
    with pytest.raises(TypeError, match="received_tag must be bytes-like"):
        wc.verify(b"m", "tag")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be bytes-like"):
        wc.tag(["m"])  # type: ignore[arg-type]
    assert pool.bits_consumed == 64
    assert wc.tags_used == 0


def test_pads_are_fresh_per_tag() -> None:
    wc = WegmanCarter(KEY, KeyPool(bytes(range(1, 17))))
    assert wc.tag(b"same") != wc.tag(b"same")


def test_forged_tag_consumes_the_pad_and_fails() -> None:
    secret = bytes(range(100, 140))
    alice = WegmanCarter.from_pool(KeyPool(secret))
    bob = WegmanCarter.from_pool(KeyPool(secret))
    good = alice.tag(b"frame 1")
    assert not bob.verify(b"frame 1'", good)
    # Both ends moved on by one pad: the next frame still verifies.
    assert bob.verify(b"frame 2", alice.tag(b"frame 2"))


def test_large_message() -> None:
    message = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8).tobytes()
    t = tag(message, KEY, PAD)
    assert verify(message, t, KEY, PAD)
    flipped = bytearray(message)
    flipped[500_000] ^= 0x10
    assert not verify(bytes(flipped), t, KEY, PAD)
