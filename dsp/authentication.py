"""Wegman-Carter authentication of the classical channel: polynomial hash over GF(2^64) + OTP.

Construction (Wegman and Carter, JCSS 22, 1981; the polynomial family as in e.g. Bernstein's and
Shoup's analyses): a message ``M`` of ``len`` bytes is cut into ``L - 1 = ceil(len / 8)`` 64-bit
blocks (little-endian, the last one zero-padded), followed by one block holding the message length
in bits, so ``L = ceil(len / 8) + 1``. With a hash key ``k`` in GF(2^64),

    h_k(M) = B_1 k^L + B_2 k^(L-1) + ... + B_L k        (Horner: acc = (acc + B_i) * k)

and the tag is ``h_k(M) XOR r`` with a fresh 64-bit one-time pad ``r``. For ``M != M'`` (of at most
``L`` blocks each) ``h_k(M) + h_k(M') + delta`` is a non-zero polynomial in ``k`` of degree at most
``L`` for every ``delta`` (the length block makes messages of different length differ, and without
a constant term the ``delta = 0`` case is non-zero too), so it has at most ``L`` roots:
the family is ``epsilon``-almost-XOR-universal with ``epsilon = L / 2**64``, and with the pad the
tag family is ``epsilon``-almost-strongly-universal. An adversary who replaces a tagged message
succeeds with probability at most ``epsilon`` per attempt, see :func:`epsilon`.

Key consumption: the 64-bit hash key may be reused for many tags as long as every tag gets a fresh
pad (Wegman-Carter; the pads hide ``h_k(M)`` completely, so the tags leak nothing about ``k``).
Forgery probabilities then add up over the tags verified: after ``t`` verifications the adversary
has succeeded at least once with probability at most ``t * epsilon``. The pad is consumed whatever
the outcome of a verification, so both ends stay in step; a protocol should abort (and retire the
hash key) after a failed verification. Key material comes from a :class:`KeyPool`.

Field: GF(2)[x] / (x^64 + x^4 + x^3 + x + 1), an irreducible pentanomial (its low part
``GF64_REDUCTION = 0x1B`` is what the kernels take). Multiplication is a branch-free
shift-and-xor carry-less product in numba with a plain-Python twin.
"""

from __future__ import annotations

import hmac
import math

import numba
import numpy as np
from numpy.typing import NDArray

from .errors import DistillationError

__all__ = [
    "BLOCK_BYTES",
    "GF64_REDUCTION",
    "HASH_KEY_BYTES",
    "MAX_MESSAGE_BYTES",
    "TAG_BYTES",
    "KeyPool",
    "KeyPoolDepleted",
    "WegmanCarter",
    "epsilon",
    "gf64_inverse",
    "gf64_mul",
    "message_blocks",
    "poly_hash",
    "tag",
    "verify",
]

# x^64 = x^4 + x^3 + x + 1 modulo the field polynomial (low-weight, so reduction is cheap).
GF64_REDUCTION = 0x1B
# One field element per message block; tags, pads and the hash key are one element each.
BLOCK_BYTES = 8
TAG_BYTES = 8
HASH_KEY_BYTES = 8
# The length block holds the message length in bits as one 64-bit word.
MAX_MESSAGE_BYTES = (2**64 - 1) // 8
_FIELD_SIZE = 2.0**64


class KeyPoolDepleted(DistillationError):
    """A :class:`KeyPool` holds fewer bytes than a request needs (nothing was consumed)."""

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(
            f"key pool depleted: {requested} bytes requested, {available} bytes available"
        )
        self.requested = requested
        self.available = available

    def __reduce__(self) -> tuple[type[KeyPoolDepleted], tuple[int, int]]:
        return (KeyPoolDepleted, (self.requested, self.available))


class KeyPool:
    """One-time key material, handed out front to back, each byte at most once.

    Both ends of a link hold identical pools and take from them in the same order. Consumed bytes
    are overwritten with zeros in the pool's private copy (best effort in Python).

    Args:
        material: The secret bytes (copied; the caller should wipe its own copy).
    """

    def __init__(self, material: bytes | bytearray | memoryview) -> None:
        if not isinstance(material, bytes | bytearray | memoryview):
            raise TypeError(f"material must be bytes-like, got {type(material).__name__}")
        self._buf = bytearray(material)
        self._pos = 0

    def take(self, nbytes: int) -> bytes:
        """Consume and return the next ``nbytes`` bytes.

        Raises:
            KeyPoolDepleted: Fewer than ``nbytes`` remain; nothing is consumed then.
            ValueError: ``nbytes`` is negative.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes > self.bytes_remaining:
            raise KeyPoolDepleted(nbytes, self.bytes_remaining)
        out = bytes(self._buf[self._pos : self._pos + nbytes])
        self._buf[self._pos : self._pos + nbytes] = bytes(nbytes)
        self._pos += nbytes
        return out

    @property
    def bytes_remaining(self) -> int:
        """Bytes still available."""
        return len(self._buf) - self._pos

    @property
    def bits_consumed(self) -> int:
        """Key bits handed out so far."""
        return 8 * self._pos

    @property
    def bits_remaining(self) -> int:
        """Key bits still available."""
        return 8 * self.bytes_remaining

    def __repr__(self) -> str:
        return f"KeyPool(bits_consumed={self.bits_consumed}, bits_remaining={self.bits_remaining})"


def epsilon(message_len: int) -> float:
    """Forgery probability bound of one tag on a message of ``message_len`` bytes.

    ``L / 2**64`` with ``L = ceil(message_len / 8) + 1`` blocks (data plus the length block). When
    a forger substitutes a message of another length, use the longer of the two.

    Raises:
        ValueError: ``message_len`` is negative or too long for the length block.
    """
    if not 0 <= message_len <= MAX_MESSAGE_BYTES:
        raise ValueError(f"message_len must be in [0, {MAX_MESSAGE_BYTES}], got {message_len}")
    return (math.ceil(message_len / BLOCK_BYTES) + 1) / _FIELD_SIZE


def _as_bytes(name: str, data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes-like, got {type(data).__name__}")
    return bytes(data)


def message_blocks(message: bytes | bytearray | memoryview) -> NDArray[np.uint64]:
    """The blocks the hash runs over: little-endian words, zero-padded, then the bit length."""
    data = _as_bytes("message", message)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    n_data = -(-len(data) // BLOCK_BYTES)
    blocks = np.empty(n_data + 1, dtype=np.uint64)
    padded = data + bytes(n_data * BLOCK_BYTES - len(data))
    blocks[:n_data] = np.frombuffer(padded, dtype="<u8")
    blocks[n_data] = 8 * len(data)
    return blocks


def _key_int(name: str, key: bytes | bytearray | memoryview, size: int) -> int:
    raw = _as_bytes(name, key)
    if len(raw) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(raw)}")
    return int.from_bytes(raw, "little")


def poly_hash(message: bytes | bytearray | memoryview, hash_key: bytes) -> int:
    """``h_k(message)`` as an integer in ``[0, 2**64)`` (no pad; see the module docstring)."""
    k = _key_int("hash_key", hash_key, HASH_KEY_BYTES)
    return int(poly_hash_kernel(message_blocks(message), np.uint64(k), np.uint64(GF64_REDUCTION)))


def tag(message: bytes | bytearray | memoryview, hash_key: bytes, pad: bytes) -> bytes:
    """Wegman-Carter tag ``h_k(message) XOR pad`` (8 bytes). Each pad must be used only once.

    Raises:
        TypeError: An argument is not bytes-like.
        ValueError: ``hash_key`` or ``pad`` is not 8 bytes.
    """
    r = _key_int("pad", pad, TAG_BYTES)
    return (poly_hash(message, hash_key) ^ r).to_bytes(TAG_BYTES, "little")


def verify(
    message: bytes | bytearray | memoryview, received_tag: bytes, hash_key: bytes, pad: bytes
) -> bool:
    """Whether ``received_tag`` is the tag of ``message`` (constant-time comparison).

    A tag of the wrong length is simply not valid (``False``).
    """
    expected = tag(message, hash_key, pad)
    return hmac.compare_digest(expected, _as_bytes("received_tag", received_tag))


class WegmanCarter:
    """Tags and checks messages with one hash key and a fresh pad per tag from a :class:`KeyPool`.

    Both ends construct it from identical pools and must tag/verify the same sequence of
    messages: the sender's ``tag`` and the receiver's ``verify`` of the same message consume the
    same pad. Every call consumes ``TAG_BYTES`` bytes, whatever the outcome.

    Args:
        hash_key: The 8-byte polynomial key (reused across tags).
        pads: Source of the one-time pads.
    """

    def __init__(self, hash_key: bytes, pads: KeyPool) -> None:
        _key_int("hash_key", hash_key, HASH_KEY_BYTES)
        self._hash_key = bytes(hash_key)
        self._pads = pads
        self.tags_used = 0
        self.epsilon_spent = 0.0

    @classmethod
    def from_pool(cls, pool: KeyPool) -> WegmanCarter:
        """Take the hash key from the front of ``pool``, then the pads from the rest of it."""
        return cls(pool.take(HASH_KEY_BYTES), pool)

    def _next_pad(self, message_len: int) -> bytes:
        eps = epsilon(message_len)
        pad = self._pads.take(TAG_BYTES)
        self.tags_used += 1
        self.epsilon_spent += eps
        return pad

    def tag(self, message: bytes | bytearray | memoryview) -> bytes:
        """Tag ``message`` with the next pad.

        Raises:
            KeyPoolDepleted: No pad left (nothing consumed).
        """
        data = _as_bytes("message", message)
        return tag(data, self._hash_key, self._next_pad(len(data)))

    def verify(self, message: bytes | bytearray | memoryview, received_tag: bytes) -> bool:
        """Check ``received_tag`` against the next pad.

        Raises:
            KeyPoolDepleted: No pad left (nothing consumed).
        """
        data = _as_bytes("message", message)
        received = _as_bytes("received_tag", received_tag)  # type errors before any state change
        return verify(data, received, self._hash_key, self._next_pad(len(data)))

    @property
    def bits_consumed(self) -> int:
        """Key bits this authenticator has taken: the hash key once plus one pad per tag."""
        return 8 * (HASH_KEY_BYTES + TAG_BYTES * self.tags_used)


# --- GF(2^64) kernels and their plain-Python twins ------------------------------------------


@numba.njit(cache=True, nogil=True)
def clmul64_kernel(a: np.uint64, b: np.uint64, nbits: int) -> tuple[np.uint64, np.uint64]:
    """Carry-less product of ``a`` and the low ``nbits`` bits of ``b``: ``(high, low)`` words.

    Branch-free in the operands (masks, not ifs), so timing does not depend on key bits.
    """
    one = np.uint64(1)
    zero = np.uint64(0)
    a = np.uint64(a)
    b = np.uint64(b)
    lo = a & (zero - (b & one))
    hi = zero
    for i in range(1, nbits):
        s = np.uint64(i)
        mask = zero - ((b >> s) & one)
        lo ^= (a << s) & mask
        hi ^= (a >> np.uint64(64 - i)) & mask
    return hi, lo


@numba.njit(cache=True, nogil=True)
def gf64_mul_kernel(a: np.uint64, b: np.uint64, reduction: np.uint64) -> np.uint64:
    """``a * b`` in GF(2)[x] / (x^64 + reduction); ``reduction`` must have at most 8 bits."""
    hi, lo = clmul64_kernel(a, b, 64)
    # hi * x^64 = hi * reduction; that product spills < 8 bits, folded once more.
    h2, l2 = clmul64_kernel(hi, reduction, 8)
    _, l3 = clmul64_kernel(h2, reduction, 8)
    return lo ^ l2 ^ l3


@numba.njit(cache=True, nogil=True)
def poly_hash_kernel(blocks: NDArray[np.uint64], key: np.uint64, reduction: np.uint64) -> np.uint64:
    """Horner evaluation ``acc = (acc + B_i) * k`` over all blocks."""
    acc = np.uint64(0)
    for i in range(blocks.shape[0]):
        acc = gf64_mul_kernel(acc ^ blocks[i], key, reduction)
    return acc


@numba.njit(cache=True, nogil=True)
def gf64_pow_kernel(a: np.uint64, e: np.uint64, reduction: np.uint64) -> np.uint64:
    """``a ** e`` by square-and-multiply (64 rounds, branch-free in ``a``)."""
    result = np.uint64(1)
    base = np.uint64(a)
    one = np.uint64(1)
    for i in range(64):
        bit = (e >> np.uint64(i)) & one
        prod = gf64_mul_kernel(result, base, reduction)
        result = prod if bit == one else result
        base = gf64_mul_kernel(base, base, reduction)
    return result


def gf64_mul(a: int, b: int) -> int:
    """Product in GF(2^64) (this module's field), on integers in ``[0, 2**64)``."""
    return int(gf64_mul_kernel(np.uint64(a), np.uint64(b), np.uint64(GF64_REDUCTION)))


def gf64_inverse(a: int) -> int:
    """Multiplicative inverse ``a ** (2**64 - 2)`` in GF(2^64).

    Raises:
        ZeroDivisionError: ``a`` is 0.
    """
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^64)")
    return int(gf64_pow_kernel(np.uint64(a), np.uint64(2**64 - 2), np.uint64(GF64_REDUCTION)))


def clmul64_reference(a: int, b: int) -> int:
    """Plain-Python twin of :func:`clmul64_kernel` (full 128-bit product as one int)."""
    product = 0
    for i in range(b.bit_length()):
        if (b >> i) & 1:
            product ^= a << i
    return product


def gf64_mul_reference(a: int, b: int, reduction: int = GF64_REDUCTION) -> int:
    """Plain-Python twin of :func:`gf64_mul_kernel`: schoolbook product, long division."""
    product = clmul64_reference(a, b)
    modulus = (1 << 64) | reduction
    for bit in range(product.bit_length() - 1, 63, -1):
        if (product >> bit) & 1:
            product ^= modulus << (bit - 64)
    return product


def poly_hash_reference(blocks: list[int], key: int, reduction: int = GF64_REDUCTION) -> int:
    """Plain-Python twin of :func:`poly_hash_kernel`: sum of ``B_i k^(L-i+1)`` term by term."""
    total = 0
    count = len(blocks)
    for i, block in enumerate(blocks):
        power = 1
        for _ in range(count - i):
            power = gf64_mul_reference(power, key, reduction)
        total ^= gf64_mul_reference(block, power, reduction)
    return total
