"""The sum-product check function phi, branch-free in float32 so that loops over it vectorise.

``phi(x) = log((1 + e^-x) / (1 - e^-x))`` (its own inverse), evaluated as ``log1p(2u / (1 - u))``
with ``u = e^-x``: ``e^-x`` as ``2^y`` with a degree-5 polynomial on the fraction of ``y``
(relative error 2e-7) and the exponent set in the float's bits; ``1 - u`` by its Taylor series
below ``PHI_SERIES_X`` (where the subtraction would cancel); ``log`` by splitting off the binary
exponent and the series of ``2 atanh(s)`` on the mantissa (error below 1e-7; near 1 through
``s = z / (2 + z)``, exact to float32 precision). ``x`` is clamped to ``[PHI_TINY_X, PHI_X_MAX]``.
No table look-up and no libm call, so LLVM vectorises it (there is no SVML here).

:func:`phi` (compiled, inlined into the decoding kernels) and :func:`phi_reference` (numpy) do
the same float32 operations in the same order and agree bit for bit.
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MESSAGE_LIMIT",
    "PHI_FAST_X_MAX",
    "PHI_SERIES_X",
    "PHI_TINY_X",
    "PHI_X_MAX",
    "PhiConstants",
    "expansion",
    "expansion_many",
    "expansion_reference",
    "phi",
    "phi_constants",
    "phi_many",
    "phi_reference",
]

# phi(x) for x at or below this is phi(PHI_TINY_X) = log(2 / 1e-12) ~ 28.3: the largest check
# message of sum-product, finite so that sums of phi stay finite.
PHI_TINY_X: Final = 1e-12

# Inputs are clamped here so that 2^(-x log2 e) stays a normal float32 (x < 87); phi(80) is 4e-35,
# as good as zero next to any other term.
PHI_X_MAX: Final = 80.0

# The clamp of the "sum-product-fast" decoder (its constants: ``phi_constants(PHI_FAST_X_MAX)``):
# there every intermediate of phi and of the expansion stays a normal float32. Above ~44, e^-2x
# underflows, and float operations that underflow take a slow path on x86 (measured on
# n64000_r085 at f 1.16, whose ~9 % known bits have |LLR| = 1e6: ~1 ns of ~4.5 per
# edge-iteration). phi(30) = 1.9e-13 is below a float32 ulp of any sum it joins but the smallest.
PHI_FAST_X_MAX: Final = 30.0

# Below this, 1 - e^-x is taken from its Taylor series (relative error < 3e-7 at the switch)
# instead of the subtraction, which would lose all digits for small x.
PHI_SERIES_X: Final = 0.25

# Bound on min-sum message magnitudes (agreeing checks over many iterations would otherwise grow
# them towards overflow); as large as a known bit's LLR in the decoder.
MESSAGE_LIMIT: Final = 1e6

# 2^f on [0, 1): least-squares fit (relative error 2.0e-7 in float32 Horner evaluation) with the
# constant term fixed at 1, so that 2^0 is exact.
_EXP2_COEFFS: Final = (
    1.0, 0.6931529641151428, 0.24015453457832336, 0.05582360550761223, 0.00899258442223072,
    0.0018762329127639532,
)
_LOG2E: Final = 1.4426950408889634
_LN2: Final = 0.6931471805599453
# Bits of sqrt(1/2) as float32: subtracting it before the shift puts the mantissa in
# [sqrt(1/2), sqrt(2)), where the atanh series converges fastest (|s| < 0.172).
_SQRT_HALF_BITS: Final = 0x3F3504F3

# The float32 whose bits are _SQRT_HALF_BITS + 2^23 (sqrt(2) rounded down): w < it exactly when
# the exponent split of w leaves e == 0.
_SQRT_TWO_BELOW: Final = float(
    np.array([_SQRT_HALF_BITS + (1 << 23)], np.int32).view(np.float32)[0]
)
# Shift of the float32 exponent field, as an int32 so that compiled integer steps stay 32-bit
# (numba widens int32 with a Python int to int64, which halves the vector lanes).
_I23: Final = np.int32(23)

# Everything the compiled phi needs, passed as one tuple argument (numba freezes globals).
PhiConstants = tuple[np.float32, ...]


def phi_constants(x_max: float = PHI_X_MAX) -> PhiConstants:
    """The float32 constants of :func:`phi`, in the order the kernels read them; ``x_max`` is
    the clamp of phi's argument (``PHI_X_MAX``, or ``PHI_FAST_X_MAX`` for sum-product-fast)."""
    if not PHI_SERIES_X < x_max <= PHI_X_MAX:
        raise ValueError(f"x_max must be in ({PHI_SERIES_X}, {PHI_X_MAX}], got {x_max}")
    values = (
        PHI_TINY_X, x_max, PHI_SERIES_X, _LOG2E, _LN2, *_EXP2_COEFFS[1:],
        1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0,
        MESSAGE_LIMIT, _SQRT_TWO_BELOW,
    )
    return tuple(np.float32(v) for v in values)


_PHI_CONSTANTS = phi_constants()


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _exp_terms(x: np.float32, k: PhiConstants
               ) -> tuple[np.float32, np.float32]:  # pragma: no cover - compiled
    """(u, d) for phi and its expansion: ``u = e^-x`` and ``d = 1 - u`` (by its series for
    small x), x clamped to [PHI_TINY_X, PHI_X_MAX]; twin :func:`_exp_terms_reference`."""
    one = np.float32(1.0)
    x = min(max(x, k[0]), k[1])
    # u = e^-x = 2^y, y = -x log2(e) = j + f with j integer and f in [0, 1).
    y = -x * k[3]
    fl = np.floor(y)
    f = y - fl
    p = one + f * (k[5] + f * (k[6] + f * (k[7] + f * (k[8] + f * k[9]))))
    u = np.int32(np.float32(p).view(np.int32) + np.int32(np.int32(fl) << _I23)).view(np.float32)
    series = x * (one - x * (k[10] - x * (k[11] - x * (k[12] - x * k[13]))))
    d = series if x < k[2] else one - u
    return u, d


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def phi(x: np.float32, k: PhiConstants) -> np.float32:  # pragma: no cover - compiled
    """phi(x) = log((1 + e^-x) / (1 - e^-x)) for x >= 0, branch-free float32 (see module doc)."""
    one = np.float32(1.0)
    two = np.float32(2.0)
    u, d = _exp_terms(x, k)
    z = two * u / d
    # log(1 + z): w = 2^e * m with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s).
    w = one + z
    bits = np.float32(w).view(np.int32)
    e = np.int32(np.int32(bits - np.int32(_SQRT_HALF_BITS)) >> _I23)
    m = np.int32(bits - np.int32(e << _I23)).view(np.float32)
    # e == 0 exactly when w < sqrt(2) (rounded as the bits below), tested on the float: the
    # integer test would be widened to int64 lanes. One division for both cases (a select of
    # numerator and denominator, not of quotients).
    small = w < k[19]
    s = (z if small else m - one) / (two + z if small else m + one)
    s2 = s * s
    log_m = two * s * (one + s2 * (k[14] + s2 * (k[15] + s2 * (k[16] + s2 * k[17]))))
    return np.float32(e) * k[4] + log_m


def _exp_terms_reference(
    x: NDArray[np.float32], k: PhiConstants = _PHI_CONSTANTS
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The twins' shared first step: ``u = exp(-x)`` and ``d = 1 - u`` (series near 0), float32,
    computed exactly as the kernels compute them (clamped input, polynomial exp, bit assembly)."""
    one = np.float32(1.0)
    x = np.minimum(np.maximum(np.asarray(x, dtype=np.float32), k[0]), k[1])
    y = -x * k[3]
    fl = np.floor(y)
    f = y - fl
    p = one + f * (k[5] + f * (k[6] + f * (k[7] + f * (k[8] + f * k[9]))))
    u = (p.view(np.int32) + (fl.astype(np.int32) << 23)).view(np.float32)
    series = x * (one - x * (k[10] - x * (k[11] - x * (k[12] - x * k[13]))))
    d = np.where(x < k[2], series, one - u)
    return u, d


def phi_reference(
    x: NDArray[np.float32], k: PhiConstants = _PHI_CONSTANTS
) -> NDArray[np.float32]:
    """Plain-numpy twin of :func:`phi` (constants ``k``), elementwise on a float32 array."""
    f32 = np.float32
    one, two = f32(1.0), f32(2.0)
    u, d = _exp_terms_reference(x, k)
    z = two * u / d
    w = one + z
    bits = w.view(np.int32)
    e = (bits - np.int32(_SQRT_HALF_BITS)) >> 23
    m = (bits - (e << 23)).view(np.float32)
    s = np.where(e == 0, z, m - one) / np.where(e == 0, two + z, m + one)
    s2 = s * s
    log_m = two * s * (one + s2 * (k[14] + s2 * (k[15] + s2 * (k[16] + s2 * k[17]))))
    result: NDArray[np.float32] = (e.astype(np.float32) * k[4] + log_m).astype(np.float32)
    return result



@numba.njit(cache=True, nogil=True, error_model="numpy")
def phi_many(x: NDArray[np.float32], k: PhiConstants) -> NDArray[np.float32]:  # pragma: no cover
    """Compiled :func:`phi` over an array (what the tests compare with :func:`phi_reference`)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = phi(x[i], k)
    return out


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def expansion(x: np.float32, k: PhiConstants) -> tuple[np.float32, np.float32]:  # pragma: no cover
    """Taylor coefficients of phi at ``x``: ``phi(x - p) ~ phi(x) + a1 p + a2 p^2`` for small p.

    ``a1 = -phi'(x) = 1 / sinh(x)`` and ``a2 = phi''(x) / 2 = cosh(x) / (2 sinh(x)^2)``, from
    ``u = e^-x`` as in :func:`phi` (``1 - u`` by its series for small ``x``):
    ``a1 = 2u / ((1 - u)(1 + u))``, ``a2 = a1 (1 + u^2) / (2 (1 - u)(1 + u))``. ``x`` is clamped
    to ``[PHI_TINY_X, PHI_X_MAX]`` like phi's argument.
    """
    one = np.float32(1.0)
    two = np.float32(2.0)
    u, d = _exp_terms(x, k)
    den = d * (one + u)
    a1 = two * u / den
    a2 = a1 * (one + u * u) / (two * den)
    return a1, a2


def expansion_reference(
    x: NDArray[np.float32], k: PhiConstants = _PHI_CONSTANTS
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Plain-numpy twin of :func:`expansion` (constants ``k``), elementwise on a float32 array."""
    f32 = np.float32
    one, two = f32(1.0), f32(2.0)
    u, d = _exp_terms_reference(x, k)
    den = d * (one + u)
    a1 = (two * u / den).astype(np.float32)
    a2 = (a1 * (one + u * u) / (two * den)).astype(np.float32)
    return a1, a2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def expansion_many(
    x: NDArray[np.float32], k: PhiConstants
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:  # pragma: no cover - compiled
    """Compiled :func:`expansion` over an array (what the tests compare with the twin)."""
    a1 = np.empty_like(x)
    a2 = np.empty_like(x)
    for i in range(x.shape[0]):
        a1[i], a2[i] = expansion(x[i], k)
    return a1, a2
