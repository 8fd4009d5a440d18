"""xoshiro256** for the kernels: seeding, and the plain-Python twin of the generator.

Drawing random numbers inside a numba kernel avoids materialising arrays of uniforms (which
cost more than the simulation they feed). The generator state is an explicit input: a
``uint64[4]`` array that the kernel advances in place, seeded from the link's
``numpy.random.Generator``, so the stream stays reproducible and no state is hidden. The
jitted generator itself (``next_u64``, ``next_uniform``, ``next_exponential``,
``next_normal``) lives in
:mod:`~qkdnode.drivers.sim.kernels`, in the same file as the kernels that inline it: numba's
on-disk cache is invalidated by the defining file's changes only, not by a callee's module.

xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number generators", ACM TOMS
47, 2021): period 2^256 - 1, passes BigCrush; doubles from the top 53 bits. Exponentials and
normals by the ziggurat (Marsaglia and Tsang, "The ziggurat method for generating random
variables", J. Stat. Softw. 5(8), 2000), 256 layers each: one 64-bit draw and a table lookup
in about 99 % of cases, no logarithm, no rejected pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["PyXoshiro", "ZigguratTables", "exponential_tables", "new_state", "normal_tables",
           "ziggurat_tables"]

_MASK = (1 << 64) - 1


def new_state(rng: np.random.Generator) -> NDArray[np.uint64]:
    """A fresh generator state drawn from a numpy Generator (never all zero)."""
    while True:
        state = rng.integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)
        if state.any():
            return state


# Ziggurat of the standard exponential (Marsaglia and Tsang 2000): 256 layers; the rightmost
# layer starts at R and every layer has area V.
ZIGGURAT_LAYERS = 256
ZIGGURAT_EXP_R = 7.69711747013104972
ZIGGURAT_EXP_V = 3.949659822581572e-3
# The same for the half-normal density exp(-x^2 / 2) (unnormalised), 256 layers.
ZIGGURAT_NORMAL_R = 3.6541528853610088
ZIGGURAT_NORMAL_V = 4.92867323399e-3
# The draws' abscissa has 32 bits: j in [0, 2^32).
_ZIG_M = 2.0**32

Tables = tuple[NDArray[np.uint64], NDArray[np.float64], NDArray[np.float64]]


def _tables(r: float, v: float, density: Callable[[float], float],
            inverse: Callable[[float], float]) -> Tables:
    """Ziggurat tables (k, w, f) for a decreasing density on [0, inf): layer i covers
    [0, x_i) (x_255 = r, the base layer 0 of width v / density(r) includes the tail); a draw j
    is accepted at once when ``j < k[i]`` (``j w[i] < x_(i-1)``), returning ``j w[i]``;
    ``f[i] = density(x_i)`` for the wedge test."""
    n = ZIGGURAT_LAYERS
    k = np.zeros(n, dtype=np.uint64)
    w = np.zeros(n, dtype=np.float64)
    f = np.zeros(n, dtype=np.float64)
    d = t = r
    q = v / density(d)
    k[0] = int(d / q * _ZIG_M)
    k[1] = 0
    w[0] = q / _ZIG_M
    w[n - 1] = d / _ZIG_M  # r / 2^32 exactly: kernels recover r as w[-1] * 2^32
    f[0] = 1.0
    f[n - 1] = density(d)
    for i in range(n - 2, 0, -1):
        d = inverse(v / d + density(d))
        k[i + 1] = int(d / t * _ZIG_M)
        t = d
        f[i] = density(d)
        w[i] = d / _ZIG_M
    return k, w, f


def exponential_tables() -> Tables:
    """Tables (k, w, f) of the exponential ziggurat for 32-bit draws (base ``ZIGGURAT_EXP_R``)."""
    return _tables(ZIGGURAT_EXP_R, ZIGGURAT_EXP_V, lambda x: math.exp(-x), lambda y: -math.log(y))


def normal_tables() -> Tables:
    """Tables (k, w, f) of the normal ziggurat (base ``ZIGGURAT_NORMAL_R``): ``f`` holds
    ``exp(-x^2 / 2)`` at the layer edges."""
    return _tables(ZIGGURAT_NORMAL_R, ZIGGURAT_NORMAL_V, lambda x: math.exp(-0.5 * x * x),
                   lambda y: math.sqrt(-2.0 * math.log(y)))


class ZigguratTables(NamedTuple):
    """Both ziggurats' tables, as the kernels take them (one tuple argument)."""

    exp_k: NDArray[np.uint64]
    exp_w: NDArray[np.float64]
    exp_f: NDArray[np.float64]
    norm_k: NDArray[np.uint64]
    norm_w: NDArray[np.float64]
    norm_f: NDArray[np.float64]


def ziggurat_tables() -> ZigguratTables:
    """The exponential and normal tables together."""
    return ZigguratTables(*exponential_tables(), *normal_tables())


class PyXoshiro:
    """Plain-Python twin of the kernels' generator (same outputs from the same state)."""

    def __init__(self, state: NDArray[np.uint64]) -> None:
        self.s = [int(x) for x in state]

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

    def normal(self, k: NDArray[np.uint64], w: NDArray[np.float64],
               f: NDArray[np.float64]) -> float:
        """Standard normal by the ziggurat (tables from :func:`normal_tables`): layer from
        bits 0-7, sign from bit 8, abscissa from bits 32-63."""
        while True:
            x = self.u64()
            i = x & 0xFF
            neg = (x >> 8) & 1
            j = x >> 32
            if j < int(k[i]):
                y = float(j) * float(w[i])
                return -y if neg else y
            if i == 0:
                r = ZIGGURAT_NORMAL_R
                while True:
                    a = -math.log(1.0 - self.uniform()) / r
                    b = -math.log(1.0 - self.uniform())
                    if b + b > a * a:
                        return -(r + a) if neg else r + a
            y = float(j) * float(w[i])
            if f[i] + self.uniform() * (f[i - 1] - f[i]) < math.exp(-0.5 * y * y):
                return -y if neg else y

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
