"""Error verification: a universal hash of each reconciled block, compared between the two ends.

After error correction Alice and Bob each hash their block with the same fresh, public seed and
compare tags; a block whose tags differ is discarded. The hash is a polynomial hash over
``GF(2^64)`` (Wegman and Carter, 1981): the block is cut into ``L`` 64-bit data words, preceded
by a word holding its length, ``w_0 .. w_L``, and hashed as ``w_0 k^L + ... + w_L`` at a uniformly
random point ``k``. Two different blocks of the same length give a nonzero difference polynomial of
degree at most ``L``, which has at most ``L`` roots, so they collide with probability at most
``L / 2^64``. When that is above the wanted ``eps_cor``, ``r`` independent points are used and the
tag is their ``r`` hashes (collision probability ``(L / 2^64)^r``).

The tag is a function of the key, so its ``64 r`` bits count as disclosed; the seed is
independent of the key and discloses nothing. Seeds are inputs: the caller passes a
``numpy.random.Generator`` or exactly ``8 r`` bytes, and must draw a fresh seed for every block,
after the block's correction is fixed.

Field: ``GF(2)[x] / (x^64 + x^4 + x^3 + x + 1)`` (a primitive pentanomial, as in the GHASH
literature for 64-bit fields).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from ._validate import check_bits

__all__ = [
    "DEFAULT_EPS_COR",
    "WORD_BITS",
    "collision_probability",
    "draw_seed",
    "hash_points",
    "tag_bits",
    "tags_match",
    "verification_tag",
    "verification_tag_reference",
]

# Correctness parameter of the finite-key analysis we follow (Lim et al., PRA 89, 022307, 2014).
DEFAULT_EPS_COR = 1e-15

# Width of one field element, word and hash point.
WORD_BITS = 64

# Low part of the reduction polynomial x^64 + x^4 + x^3 + x + 1.
_REDUCTION = 0x1B

# Smallest eps_cor we accept: below this the number of hash points would be absurd (each point
# brings at least ~40 bits of security for blocks up to 2^20 words).
MIN_EPS_COR = 1e-300


@numba.njit(cache=True, nogil=True)
def _gf_mul(a: np.uint64, b: np.uint64, reduction: np.uint64) -> np.uint64:  # pragma: no cover
    one = np.uint64(1)
    zero = np.uint64(0)
    result = zero
    for i in range(64):
        mask = zero - ((b >> np.uint64(i)) & one)
        result ^= a & mask
        carry = zero - (a >> np.uint64(63))
        a = (a << one) ^ (reduction & carry)
    return result


@numba.njit(cache=True, nogil=True)
def _poly_hash_kernel(
    words: NDArray[np.uint64], points: NDArray[np.uint64], reduction: np.uint64
) -> NDArray[np.uint64]:  # pragma: no cover - compiled
    tags = np.zeros(points.shape[0], dtype=np.uint64)
    # Multiplication by the fixed point k is linear over GF(2): tabulate k * (v << 4j) for every
    # nibble value v and position j, so that acc * k is 16 table look-ups instead of 64 steps.
    table = np.empty((16, 16), dtype=np.uint64)
    mask = np.uint64(15)
    for j in range(points.shape[0]):
        for position in range(16):
            for value in range(16):
                table[position, value] = _gf_mul(
                    np.uint64(value) << np.uint64(4 * position), points[j], reduction
                )
        acc = np.uint64(0)
        for i in range(words.shape[0]):
            product = np.uint64(0)
            for position in range(16):
                product ^= table[position, (acc >> np.uint64(4 * position)) & mask]
            acc = product ^ words[i]
        tags[j] = acc
    return tags


def _gf_mul_reference(a: int, b: int) -> int:
    """Carry-less product reduced modulo x^64 + x^4 + x^3 + x + 1, on Python ints."""
    product = 0
    for i in range(WORD_BITS):
        if (b >> i) & 1:
            product ^= a << i
    for i in range(2 * WORD_BITS - 2, WORD_BITS - 1, -1):
        if (product >> i) & 1:
            product ^= ((1 << WORD_BITS) | _REDUCTION) << (i - WORD_BITS)
    return product


def _hash_reference(words: NDArray[np.uint64], points: NDArray[np.uint64]) -> list[int]:
    tags = []
    for point in points:
        acc = 0
        for word in words:
            acc = _gf_mul_reference(acc, int(point)) ^ int(word)
        tags.append(acc)
    return tags


def _words(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The length word followed by the bits packed big-endian into 64-bit words (zero padded)."""
    packed = np.packbits(bits)
    padded = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    padded[: packed.size] = packed
    words = np.empty(1 + padded.size // 8, dtype=np.uint64)
    words[0] = np.uint64(bits.size)
    words[1:] = padded.view(">u8")
    return words


def _check_eps(eps_cor: float) -> float:
    if isinstance(eps_cor, bool) or not isinstance(eps_cor, int | float | np.floating):
        raise TypeError(f"eps_cor must be a real number, got {type(eps_cor).__name__}")
    if not MIN_EPS_COR <= float(eps_cor) < 1.0:
        raise ValueError(f"eps_cor must be in [{MIN_EPS_COR}, 1), got {eps_cor}")
    return float(eps_cor)


def _check_length(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise TypeError(f"n_bits must be an int, got {type(n_bits).__name__}")
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    return int(n_bits)


def hash_points(n_bits: int, eps_cor: float = DEFAULT_EPS_COR) -> int:
    """Number ``r`` of independent hash points needed for a block of ``n_bits`` bits.

    Args:
        n_bits: Length of the block.
        eps_cor: Wanted upper bound on the probability that two different blocks get equal tags.

    Returns:
        The smallest ``r >= 1`` with ``(L / 2^64)^r <= eps_cor``, ``L`` the degree of the hash.
    """
    eps = _check_eps(eps_cor)
    degree = max(1, -(-_check_length(n_bits) // WORD_BITS))
    bits_per_point = WORD_BITS - math.log2(degree)
    return max(1, math.ceil(-math.log2(eps) / bits_per_point))


def tag_bits(n_bits: int, eps_cor: float = DEFAULT_EPS_COR) -> int:
    """Length of the tag (bits disclosed by verification) for a block of ``n_bits`` bits."""
    return WORD_BITS * hash_points(n_bits, eps_cor)


def collision_probability(n_bits: int, points: int) -> float:
    """Upper bound on the probability that two different ``n_bits`` blocks collide.

    Args:
        n_bits: Length of the block.
        points: Number of independent hash points (``len(seed)``).

    Returns:
        ``(L / 2^64)^points`` with ``L`` the number of data words (the degree of the hash).
    """
    degree = max(1, -(-_check_length(n_bits) // WORD_BITS))
    return float((degree / 2.0**WORD_BITS) ** points)


def draw_seed(
    source: np.random.Generator | bytes, n_bits: int, eps_cor: float = DEFAULT_EPS_COR
) -> NDArray[np.uint64]:
    """Draws the hash points of one block from the caller's randomness.

    Args:
        source: A numpy ``Generator`` (one fresh draw per call), or exactly ``8 * r`` bytes of
            fresh randomness, ``r = hash_points(n_bits, eps_cor)``.
        n_bits: Length of the block to hash.
        eps_cor: Wanted collision bound.

    Returns:
        ``uint64[r]``, the hash points.

    Raises:
        TypeError: ``source`` is neither a Generator nor bytes.
        ValueError: ``source`` bytes have the wrong length.
    """
    points = hash_points(n_bits, eps_cor)
    if isinstance(source, np.random.Generator):
        return source.integers(0, 2**64, size=points, dtype=np.uint64, endpoint=False)
    if isinstance(source, bytes | bytearray):
        if len(source) != 8 * points:
            raise ValueError(f"source must hold {8 * points} bytes, got {len(source)}")
        return np.frombuffer(bytes(source), dtype=">u8").astype(np.uint64)
    raise TypeError(f"source must be a numpy Generator or bytes, got {type(source).__name__}")


def _check_seed(seed: object) -> NDArray[np.uint64]:
    if not isinstance(seed, np.ndarray):
        raise TypeError(f"seed must be a numpy array, got {type(seed).__name__}")
    if seed.dtype != np.uint64:
        raise TypeError(f"seed must have dtype uint64, got {seed.dtype}")
    if seed.ndim != 1 or seed.size == 0:
        raise ValueError(f"seed must be a non-empty 1-d array, got shape {seed.shape}")
    return np.ascontiguousarray(seed)


def _tag_to_bits(tags: NDArray[np.uint64]) -> NDArray[np.uint8]:
    return np.unpackbits(tags.astype(">u8").view(np.uint8))


def verification_tag(bits: NDArray[np.uint8], seed: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Computes the verification tag of a block.

    Args:
        bits: ``uint8`` 0/1 array, the block (any length).
        seed: ``uint64[r]`` hash points from :func:`draw_seed`.

    Returns:
        ``uint8[64 r]`` tag bits (big-endian per point).

    Raises:
        TypeError: ``bits`` or ``seed`` has the wrong type or dtype.
        ValueError: ``bits`` is not 1-d 0/1, or ``seed`` is empty.
    """
    words = _words(check_bits("bits", bits))
    tags = _poly_hash_kernel(words, _check_seed(seed), np.uint64(_REDUCTION))
    return _tag_to_bits(tags)


def verification_tag_reference(
    bits: NDArray[np.uint8], seed: NDArray[np.uint64]
) -> NDArray[np.uint8]:
    """Plain-Python twin of :func:`verification_tag` (Python-int field arithmetic)."""
    words = _words(check_bits("bits", bits))
    tags = np.array(_hash_reference(words, _check_seed(seed)), dtype=np.uint64)
    return _tag_to_bits(tags)


def tags_match(tag_a: NDArray[np.uint8], tag_b: NDArray[np.uint8]) -> bool:
    """Whether two tags are equal (same length and same bits)."""
    return bool(tag_a.shape == tag_b.shape and np.array_equal(tag_a, tag_b))
