"""xoshiro256** inside the kernels, with a plain-Python twin.

Drawing random numbers inside a numba kernel avoids materialising arrays of uniforms (which
cost more than the simulation they feed). The generator state is an explicit input: a
``uint64[4]`` array that the kernel advances in place, seeded from the link's
``numpy.random.Generator``, so the stream stays reproducible and no state is hidden.

xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number generators", ACM TOMS
47, 2021): period 2^256 - 1, passes BigCrush; doubles from the top 53 bits. Normals by the
Box-Muller transform, both values of each pair used.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["PyXoshiro", "new_state", "next_normal", "next_u64", "next_uniform"]

_MASK = (1 << 64) - 1


def new_state(rng: np.random.Generator) -> NDArray[np.uint64]:
    """A fresh generator state drawn from a numpy Generator (never all zero)."""
    while True:
        state = rng.integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)
        if state.any():
            return state


@njit(cache=True, nogil=True, inline="always")
def _rotl(x: np.uint64, k: np.uint64) -> np.uint64:
    return (x << k) | (x >> (np.uint64(64) - k))


@njit(cache=True, nogil=True)
def next_u64(s: NDArray[np.uint64]) -> np.uint64:
    """Next 64-bit output; advances ``s`` in place."""
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    result = _rotl(s1 * np.uint64(5), np.uint64(7)) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, np.uint64(45))
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3
    return result


@njit(cache=True, nogil=True)
def next_uniform(s: NDArray[np.uint64]) -> float:
    """Uniform double in [0, 1) from the top 53 bits."""
    return float(next_u64(s) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def next_normal(s: NDArray[np.uint64], spare: NDArray[np.float64]) -> float:
    """Standard normal (Box-Muller); ``spare[0]`` caches the pair's second value, ``spare[1]``
    says whether it is valid (1.0) or not (0.0)."""
    if spare[1] != 0.0:
        spare[1] = 0.0
        return float(spare[0])
    u1 = 1.0 - next_uniform(s)
    u2 = next_uniform(s)
    r = math.sqrt(-2.0 * math.log(u1))
    spare[0] = r * math.sin(2.0 * math.pi * u2)
    spare[1] = 1.0
    return r * math.cos(2.0 * math.pi * u2)


class PyXoshiro:
    """Plain-Python twin of the kernels' generator (same outputs from the same state)."""

    def __init__(self, state: NDArray[np.uint64]) -> None:
        self.s = [int(x) for x in state]
        self.spare: float | None = None

    def u64(self) -> int:
        s0, s1, s2, s3 = self.s
        rot = ((s1 * 5) & _MASK)
        result = ((((rot << 7) | (rot >> 57)) & _MASK) * 9) & _MASK
        t = (s1 << 17) & _MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & _MASK
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self) -> float:
        return float(self.u64() >> 11) * (1.0 / 9007199254740992.0)

    def normal(self) -> float:
        if self.spare is not None:
            z, self.spare = self.spare, None
            return z
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        r = math.sqrt(-2.0 * math.log(u1))
        self.spare = r * math.sin(2.0 * math.pi * u2)
        return r * math.cos(2.0 * math.pi * u2)

    def state(self) -> NDArray[np.uint64]:
        return np.array(self.s, dtype=np.uint64)
