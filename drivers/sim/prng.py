"""xoshiro256** for the kernels: seeding, and the plain-Python twin of the generator.

Drawing random numbers inside a numba kernel avoids materialising arrays of uniforms (which
cost more than the simulation they feed). The generator state is an explicit input: a
``uint64[4]`` array that the kernel advances in place, seeded from the link's
``numpy.random.Generator``, so the stream stays reproducible and no state is hidden. The
jitted generator itself (``next_u64``, ``next_uniform``, ``next_normal``) lives in
:mod:`~qkdnode.drivers.sim.kernels`, in the same file as the kernels that inline it: numba's
on-disk cache is invalidated by the defining file's changes only, not by a callee's module.

xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number generators", ACM TOMS
47, 2021): period 2^256 - 1, passes BigCrush; doubles from the top 53 bits. Normals by
Marsaglia's polar method, both values of each pair used.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["PyXoshiro", "exponential_tables", "new_state"]

_MASK = (1 << 64) - 1


def new_state(rng: np.random.Generator) -> NDArray[np.uint64]:
    """A fresh generator state drawn from a numpy Generator (never all zero)."""
    while True:
        state = rng.integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)
        if state.any():
            return state


# Ziggurat of the standard exponential (Marsaglia and Tsang, J. Stat. Softw. 5(8), 2000): 256
# layers; the rightmost layer starts at R and every layer has area V.
ZIGGURAT_LAYERS = 256
ZIGGURAT_EXP_R = 7.69711747013104972
ZIGGURAT_EXP_V = 3.949659822581572e-3


def exponential_tables() -> tuple[NDArray[np.uint64], NDArray[np.float64], NDArray[np.float64]]:
    """Tables (k, w, f) of the exponential ziggurat for 32-bit draws j: layer i accepts j at
    once when ``j < k[i]``, returning ``j * w[i]``; ``f[i] = exp(-x_i)`` at the layer edges."""
    m = 2.0**32
    n = ZIGGURAT_LAYERS
    k = np.zeros(n, dtype=np.uint64)
    w = np.zeros(n, dtype=np.float64)
    f = np.zeros(n, dtype=np.float64)
    d = t = ZIGGURAT_EXP_R
    q = ZIGGURAT_EXP_V / math.exp(-d)
    k[0] = int(d / q * m)
    k[1] = 0
    w[0] = q / m
    w[n - 1] = d / m
    f[0] = 1.0
    f[n - 1] = math.exp(-d)
    for i in range(n - 2, 0, -1):
        d = -math.log(ZIGGURAT_EXP_V / d + math.exp(-d))
        k[i + 1] = int(d / t * m)
        t = d
        f[i] = math.exp(-d)
        w[i] = d / m
    return k, w, f


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
        while True:
            u = 2.0 * self.uniform() - 1.0
            v = 2.0 * self.uniform() - 1.0
            r2 = u * u + v * v
            if 0.0 < r2 < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(r2) / r2)
        self.spare = v * f
        return u * f

    def exponential(self, k: NDArray[np.uint64], w: NDArray[np.float64],
                    f: NDArray[np.float64]) -> float:
        while True:
            x = self.u64()
            i = x & 0xFF
            j = x >> 32
            if j < int(k[i]):
                return float(j) * float(w[i])
            if i == 0:
                return ZIGGURAT_EXP_R - math.log(1.0 - self.uniform())
            y = float(j) * float(w[i])
            if f[i] + self.uniform() * (f[i - 1] - f[i]) < math.exp(-y):
                return y

    def state(self) -> NDArray[np.uint64]:
        return np.array(self.s, dtype=np.uint64)
