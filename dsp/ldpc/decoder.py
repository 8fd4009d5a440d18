"""Syndrome decoding of LDPC codes by layered normalised/offset min-sum belief propagation.

Bob holds a noisy copy ``y`` of Alice's word ``x`` and receives Alice's syndrome ``s = H x``. He
looks for the word closest to his channel evidence whose syndrome is ``s``: ordinary belief
propagation where each check ``c`` constrains the parity of its variables to ``s[c]`` instead of
zero, so the sign of every message leaving check ``c`` is flipped once more when ``s[c] == 1``.

The schedule is *layered* (each check in turn reads the current posteriors and writes them back at
once), which converges in about half the iterations of the flooding schedule. The check update is
min-sum, corrected by a scale factor (normalised min-sum) and/or subtracted offset (offset min-sum):
``|r| = max(scale * min - offset, 0)``. Messages are ``float32``. Decoding stops as soon as the hard
decisions match the syndrome.

LLR convention: ``llr[v] = log(P(x_v = 0) / P(x_v = 1))``; a negative posterior decides 1, zero
or positive decides 0. A known (shortened) bit gets ``+/-`` a large value, an unknown (punctured)
one 0.

Each compiled kernel has a plain-Python twin (``*_reference``) implementing the same arithmetic in
``numpy.float32`` scalars, so the two agree bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_OFFSET",
    "DEFAULT_SCALE",
    "CheckMajorCode",
    "DecodeResult",
    "decode_syndrome",
    "decode_syndrome_reference",
    "decode_syndromes",
]

# Iteration budget: layered min-sum on the shipped codes converges in 10-30 iterations at the
# operating points of reconciliation; frames that have not converged after 60 almost never do, and
# blind reconciliation then discloses more bits instead of spending more time.
DEFAULT_MAX_ITERATIONS = 60

# Normalisation of min-sum: the minimum over-estimates the true (sum-product) check message; a
# factor of ~0.75-0.8 is the usual optimum for check degrees of 10-60 (Chen and Fossorier, 2002).
DEFAULT_SCALE = 0.78

# Offset min-sum correction, applied after the scale; 0 gives pure normalised min-sum.
DEFAULT_OFFSET = 0.0

# Channel LLRs are clipped to this magnitude: far beyond any channel LLR (|log(q/(1-q))| < 35 for
# q > 1e-15), yet small enough that float32 posteriors (sums of a few such terms) cannot overflow.
LLR_LIMIT = 1e6

# The kernel packs (magnitude bits, position) into one int64 with 20 bits for the position.
MAX_CHECK_DEGREE = (1 << 20) - 1

_FLOAT32_MAX = np.float32(np.finfo(np.float32).max)

# Sum-product check update through phi(x) = -log(tanh(x / 2)) (phi is its own inverse):
# |r_i| = phi(sum_j phi(|t_j|) - phi(|t_i|)). phi is tabulated on [0, PHI_TABLE_END) with step
# 1/PHI_TABLE_RESOLUTION and interpolated linearly (error < 0.01 above PHI_SMALL_X); below
# PHI_SMALL_X, where phi is steep, log(2/x) is used (error < x^2/12); beyond the table phi < 2e-7
# is taken as 0; at or below PHI_TINY_X it saturates at PHI_CAP = log(2/PHI_TINY_X).
PHI_TABLE_RESOLUTION = 128
PHI_TABLE_END = 16.0
PHI_SMALL_X = 1.0 / 64.0
PHI_TINY_X = 1e-12
PHI_CAP = float(np.log(2.0 / PHI_TINY_X))

# Algorithms, as the integer codes the kernel takes.
Algorithm = Literal["sum-product", "min-sum"]
_ALGORITHM_CODES: dict[str, int] = {"min-sum": 0, "sum-product": 1}
DEFAULT_ALGORITHM: Algorithm = "sum-product"

# Upper bound on the iteration budget, so that a typo cannot stall a worker for minutes.
MAX_ITERATIONS_LIMIT = 10_000


class CheckMajorCode(Protocol):
    """What the decoder needs of a code (satisfied by :class:`qkdnode.dsp.ldpc.codes.LdpcCode`)."""

    @property
    def n(self) -> int: ...

    @property
    def m(self) -> int: ...

    @property
    def chk_ptr(self) -> NDArray[np.int64]: ...

    @property
    def chk_var(self) -> NDArray[np.int32]: ...


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """Outcome of syndrome decoding.

    For one frame (:func:`decode_syndrome`) the fields are a ``uint8[n]`` array, a bool and an
    int; for a batch (:func:`decode_syndromes`) they are arrays ``uint8[k, n]``, ``bool[k]`` and
    ``int32[k]``.

    Attributes:
        bits: Bob's corrected word (hard decisions of the last iteration).
        converged: Whether the hard decisions satisfy the syndrome. A converged word has exactly
            the requested syndrome; it may still differ from Alice's (verification catches that).
        iterations: Number of full iterations run (0 if the channel word already matched).
    """

    bits: Any
    converged: Any
    iterations: Any


def phi_table() -> NDArray[np.float32]:
    """The tabulated ``phi`` at ``x = i / PHI_TABLE_RESOLUTION`` (entry 0 is never read)."""
    x = np.arange(1, int(PHI_TABLE_END * PHI_TABLE_RESOLUTION) + 1) / PHI_TABLE_RESOLUTION
    values = -np.log(np.tanh(x / 2.0))
    return np.concatenate([[values[0]], values]).astype(np.float32)


_PHI_TABLE = phi_table()
# Bound on min-sum message magnitudes (a check of degree 1, or agreeing checks over many
# iterations, would otherwise grow them towards overflow); as large as a known bit's LLR.
MESSAGE_LIMIT = LLR_LIMIT

# What the kernels need besides the table: resolution, small-x bound, tiny-x bound, cap, and the
# min-sum message limit.
_PHI_CONSTANTS = np.array(
    [PHI_TABLE_RESOLUTION, PHI_SMALL_X, PHI_TINY_X, PHI_CAP, MESSAGE_LIMIT], dtype=np.float32
)


@numba.njit(cache=True, nogil=True, inline="always")
def _phi(
    x: np.float32, table: NDArray[np.float32], constants: NDArray[np.float32]
) -> np.float32:  # pragma: no cover - compiled
    """phi(x) for x >= 0, as described at the PHI_* constants."""
    if x < constants[1]:
        if x <= constants[2]:
            return np.float32(constants[3])
        return np.float32(math.log(2.0 / np.float64(x)))
    u = x * constants[0]
    last = table.shape[0] - 1
    if u >= np.float32(last):
        return np.float32(0.0)
    i = int(u)
    return np.float32(table[i] + (u - np.float32(i)) * (table[i + 1] - table[i]))


def _phi_reference(x: np.float32, table: NDArray[np.float32]) -> np.float32:
    """Plain twin of ``_phi`` in numpy.float32 scalars."""
    c = _PHI_CONSTANTS
    if x < c[1]:
        if x <= c[2]:
            return np.float32(c[3])
        return np.float32(math.log(2.0 / float(x)))
    u = np.float32(x * c[0])
    last = table.shape[0] - 1
    if u >= np.float32(last):
        return np.float32(0.0)
    i = int(u)
    fraction = np.float32(u - np.float32(i))
    return np.float32(table[i] + np.float32(fraction * np.float32(table[i + 1] - table[i])))


@numba.njit(cache=True, nogil=True)
def _syndrome_matches(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    post: NDArray[np.float32],
) -> bool:  # pragma: no cover - compiled
    m = chk_ptr.shape[0] - 1
    for c in range(m):
        parity = syndrome[c] & np.uint8(1)
        for e in range(chk_ptr[c], chk_ptr[c + 1]):
            if post[chk_var[e]] < np.float32(0.0):
                parity ^= np.uint8(1)
        if parity != 0:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _decode_kernel(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.float32],
    max_iterations: int,
    algorithm: int,
    scale: np.float32,
    offset: np.float32,
    table: NDArray[np.float32],
    constants: NDArray[np.float32],
    msg: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """Layered BP; writes hard decisions to ``bits_out``; returns (iterations, converged).

    ``msg`` holds the check-to-variable messages (check-major), zeros for a cold start; it is
    updated in place, so a later call can continue from it (warm start).
    """
    m = chk_ptr.shape[0] - 1
    n = llr.shape[0]
    post = llr.copy()
    for e in range(chk_var.shape[0]):
        post[chk_var[e]] += msg[e]
    max_degree = 1
    for c in range(m):
        max_degree = max(max_degree, chk_ptr[c + 1] - chk_ptr[c])
    # Per-check scratch: the extrinsic inputs, also seen as their IEEE bits (sign bit, and for
    # min-sum the magnitude bits, which order like the values for non-negative floats, so the two
    # smallest are tracked as integer keys (magnitude bits, position) with branch-free min/max).
    extrinsic = np.empty(max_degree, dtype=np.float32)
    extrinsic_bits = extrinsic.view(np.int32)
    phis = np.empty(max_degree, dtype=np.float32)
    minima = np.empty(2, dtype=np.int32)
    minima_f = minima.view(np.float32)
    zero = np.float32(0.0)
    # A missing minimum (check of degree 1) reads as the largest finite float32, not inf, so that
    # later subtractions cannot produce NaN.
    no_key = np.int64(0x7F7FFFFF) << 20
    iterations = 0
    converged = _syndrome_matches(chk_ptr, chk_var, syndrome, post)
    while not converged and iterations < max_iterations:
        for c in range(m):
            start = chk_ptr[c]
            degree = chk_ptr[c + 1] - start
            negative = np.int32(syndrome[c] & np.uint8(1))
            if algorithm == 0:
                key1 = no_key
                key2 = no_key
                for i in range(degree):
                    extrinsic[i] = post[chk_var[start + i]] - msg[start + i]
                    b = extrinsic_bits[i]
                    negative ^= (b >> 31) & 1
                    key = (np.int64(b & 0x7FFFFFFF) << 20) | i
                    key2 = min(key2, max(key1, key))
                    key1 = min(key1, key)
                arg_min = key1 & 0xFFFFF
                minima[0] = np.int32(key1 >> 20)
                minima[1] = np.int32(key2 >> 20)
                mag1 = min(max(scale * minima_f[0] - offset, zero), constants[4])
                mag2 = min(max(scale * minima_f[1] - offset, zero), constants[4])
                for i in range(degree):
                    mag = mag2 if i == arg_min else mag1
                    r = -mag if (negative ^ ((extrinsic_bits[i] >> 31) & 1)) != 0 else mag
                    msg[start + i] = r
                    post[chk_var[start + i]] = extrinsic[i] + r
            else:
                total = zero
                for i in range(degree):
                    t = post[chk_var[start + i]] - msg[start + i]
                    extrinsic[i] = t
                    negative ^= (extrinsic_bits[i] >> 31) & 1
                    p = _phi(abs(t), table, constants)
                    phis[i] = p
                    total += p
                for i in range(degree):
                    y = total - phis[i]
                    mag = _phi(y if y > zero else zero, table, constants)
                    r = -mag if (negative ^ ((extrinsic_bits[i] >> 31) & 1)) != 0 else mag
                    msg[start + i] = r
                    post[chk_var[start + i]] = extrinsic[i] + r
        iterations += 1
        converged = _syndrome_matches(chk_ptr, chk_var, syndrome, post)
    for v in range(n):
        bits_out[v] = np.uint8(1) if post[v] < zero else np.uint8(0)
    return iterations, converged


@numba.njit(cache=True, nogil=True, parallel=True)
def _decode_batch_kernel(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndromes: NDArray[np.uint8],
    llrs: NDArray[np.float32],
    max_iterations: int,
    algorithm: int,
    scale: np.float32,
    offset: np.float32,
    table: NDArray[np.float32],
    constants: NDArray[np.float32],
    msgs: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
    converged_out: NDArray[np.bool_],
    iterations_out: NDArray[np.int32],
) -> None:  # pragma: no cover - compiled
    for k in numba.prange(syndromes.shape[0]):
        iterations, converged = _decode_kernel(
            chk_ptr, chk_var, syndromes[k], llrs[k], max_iterations, algorithm, scale, offset,
            table, constants, msgs[k], bits_out[k],
        )
        iterations_out[k] = iterations
        converged_out[k] = converged


def decode_syndrome_reference(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.float32],
    max_iterations: int,
    scale: float,
    offset: float,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    messages: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.uint8], int, bool]:
    """Plain-Python twin of the layered decoding kernel, in ``numpy.float32`` arithmetic.

    ``messages`` (updated in place) are the starting check-to-variable messages, as for
    :func:`decode_syndrome`.

    Returns:
        ``(bits, iterations, converged)``, bit for bit what the compiled kernel returns.
    """
    f32 = np.float32
    scale32, offset32, zero = f32(scale), f32(offset), f32(0.0)
    post = np.clip(np.array(llr, dtype=np.float32), -LLR_LIMIT, LLR_LIMIT).astype(np.float32)
    msg = np.zeros(chk_var.shape[0], dtype=np.float32) if messages is None else messages
    for e in range(chk_var.shape[0]):
        post[chk_var[e]] = f32(post[chk_var[e]] + msg[e])
    checks = [
        (chk_var[chk_ptr[c] : chk_ptr[c + 1]].astype(np.int64), int(chk_ptr[c]), int(syndrome[c]))
        for c in range(chk_ptr.shape[0] - 1)
    ]

    def matches() -> bool:
        hard = post < 0
        return all((int(hard[vs].sum()) + s) % 2 == 0 for vs, _, s in checks)

    iterations = 0
    converged = matches()
    while not converged and iterations < max_iterations:
        for vs, start, s in checks:
            edges = range(start, start + vs.shape[0])
            t = [f32(post[v] - msg[e]) for v, e in zip(vs, edges, strict=True)]
            # The kernel reads signs from the IEEE sign bit, so -0.0 counts as negative here too.
            negative = (s + sum(1 for x in t if np.signbit(x))) % 2
            if algorithm == "sum-product":
                phis = [_phi_reference(abs(x), _PHI_TABLE) for x in t]
                total = zero
                for p in phis:
                    total = f32(total + p)
                for i, (v, e) in enumerate(zip(vs, edges, strict=True)):
                    y = f32(total - phis[i])
                    mag = _phi_reference(y if y > zero else zero, _PHI_TABLE)
                    r = -mag if (negative + int(np.signbit(t[i]))) % 2 else mag
                    msg[e] = r
                    post[v] = f32(t[i] + r)
                continue
            mags = [abs(x) for x in t]
            order = sorted(range(len(mags)), key=lambda i: (mags[i], i))
            min1 = mags[order[0]] if mags else _FLOAT32_MAX
            min2 = mags[order[1]] if len(mags) > 1 else _FLOAT32_MAX
            limit = _PHI_CONSTANTS[4]
            mag1 = min(max(f32(scale32 * min1) - offset32, zero), limit)
            mag2 = min(max(f32(scale32 * min2) - offset32, zero), limit)
            for i, (v, e) in enumerate(zip(vs, edges, strict=True)):
                mag = mag2 if i == order[0] else mag1
                r = -mag if (negative + int(np.signbit(t[i]))) % 2 else mag
                msg[e] = r
                post[v] = f32(t[i] + r)
        iterations += 1
        converged = matches()
    return (post < 0).astype(np.uint8), iterations, converged


def _check_array(name: str, array: object, dtype: type[np.generic], shape: tuple[int, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")


def _check_messages(name: str, messages: object, shape: tuple[int, ...]) -> None:
    _check_array(name, messages, np.float32, shape)
    assert isinstance(messages, np.ndarray)
    if not messages.flags.c_contiguous or not messages.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    if not np.isfinite(messages).all():
        raise ValueError(f"{name} must be finite")


def _check_code(code: CheckMajorCode) -> None:
    degrees = np.diff(code.chk_ptr)
    if degrees.size and int(degrees.max()) > MAX_CHECK_DEGREE:
        raise ValueError(f"code: check degree above {MAX_CHECK_DEGREE} is not supported")


def _check_parameters(max_iterations: int, scale: float, offset: float, algorithm: str) -> None:
    if algorithm not in _ALGORITHM_CODES:
        raise ValueError(f"algorithm must be one of {sorted(_ALGORITHM_CODES)}, got {algorithm!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int | np.integer):
        raise TypeError(f"max_iterations must be an int, got {type(max_iterations).__name__}")
    if not 0 <= max_iterations <= MAX_ITERATIONS_LIMIT:
        raise ValueError(f"max_iterations must be in [0, {MAX_ITERATIONS_LIMIT}]")
    if not (np.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if not (np.isfinite(offset) and offset >= 0.0):
        raise ValueError(f"offset must be finite and >= 0, got {offset}")


def _check_llr(name: str, llr: NDArray[Any]) -> None:
    if llr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {llr.dtype}")
    if np.isnan(llr).any():
        raise ValueError(f"{name} must not contain NaN")


def _prepare(
    code: CheckMajorCode,
    syndrome_name: str,
    syndrome: object,
    llr_name: str,
    llr: object,
    messages: NDArray[np.float32] | None,
    batch: tuple[int, ...],
    max_iterations: int,
    scale: float,
    offset: float,
    algorithm: str,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Checks the inputs of one decode (``batch == ()``) or of ``k`` (``batch == (k,)``).

    Returns the clipped float32 LLRs and the message array to start from.
    """
    _check_code(code)
    _check_array(syndrome_name, syndrome, np.uint8, (*batch, code.m))
    if not isinstance(llr, np.ndarray):
        raise TypeError(f"{llr_name} must be a numpy array, got {type(llr).__name__}")
    _check_llr(llr_name, llr)
    if llr.shape != (*batch, code.n):
        raise ValueError(f"{llr_name} must have shape {(*batch, code.n)}, got {llr.shape}")
    _check_parameters(max_iterations, scale, offset, algorithm)
    llr32 = np.ascontiguousarray(np.clip(llr, -LLR_LIMIT, LLR_LIMIT), dtype=np.float32)
    edges = code.chk_var.shape[0]
    if messages is None:
        return llr32, np.zeros((*batch, edges), dtype=np.float32)
    _check_messages("messages", messages, (*batch, edges))
    return llr32, messages


def decode_syndrome(
    code: CheckMajorCode,
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.floating[Any]],
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    *,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    scale: float = DEFAULT_SCALE,
    offset: float = DEFAULT_OFFSET,
    messages: NDArray[np.float32] | None = None,
) -> DecodeResult:
    """Finds the word of syndrome ``syndrome`` most consistent with Bob's channel LLRs.

    Args:
        code: The LDPC code (any object with ``n``, ``m``, ``chk_ptr``, ``chk_var``).
        syndrome: ``uint8[m]``, Alice's syndrome (0/1).
        llr: ``float32[n]`` (or float64, converted) channel log-likelihood ratios of Bob's bits,
            ``log(P(0)/P(1))``; values are clipped to ``+/-LLR_LIMIT``.
        max_iterations: Budget of layered iterations.
        algorithm: ``"sum-product"`` (tabulated phi; best efficiency on the shipped irregular
            codes) or ``"min-sum"`` (normalised/offset; faster, fails on highly irregular codes).
        scale: Normalisation factor of min-sum, in ``(0, 1]``.
        offset: Offset of offset min-sum, ``>= 0``.
        messages: Optional ``float32[E]`` check-to-variable messages (check-major edge order) to
            start from, updated in place: pass the array of an earlier failed decode of the same
            frame (after fixing more bits) to continue where it stopped; ``None`` starts cold.

    Returns:
        A :class:`DecodeResult` with ``bits`` ``uint8[n]``, ``converged`` bool, ``iterations`` int.

    Raises:
        TypeError: An array has the wrong type or dtype.
        ValueError: An array has the wrong shape, ``llr`` holds NaN, or a parameter is out of range.
    """
    llr32, messages = _prepare(code, "syndrome", syndrome, "llr", llr, messages, (),
                               max_iterations, scale, offset, algorithm)
    bits = np.empty(code.n, dtype=np.uint8)
    iterations, converged = _decode_kernel(
        code.chk_ptr,
        code.chk_var,
        np.ascontiguousarray(syndrome),
        llr32,
        int(max_iterations),
        _ALGORITHM_CODES[algorithm],
        np.float32(scale),
        np.float32(offset),
        _PHI_TABLE,
        _PHI_CONSTANTS,
        messages,
        bits,
    )
    return DecodeResult(bits=bits, converged=bool(converged), iterations=int(iterations))


def decode_syndromes(
    code: CheckMajorCode,
    syndromes: NDArray[np.uint8],
    llrs: NDArray[np.floating[Any]],
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    *,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    scale: float = DEFAULT_SCALE,
    offset: float = DEFAULT_OFFSET,
    messages: NDArray[np.float32] | None = None,
) -> DecodeResult:
    """Decodes ``k`` frames in parallel on all cores (numba ``prange`` over frames).

    Args:
        code: The LDPC code.
        syndromes: ``uint8[k, m]``, one syndrome per frame.
        llrs: ``float32[k, n]`` (or float64), one row of channel LLRs per frame.
        max_iterations: Budget of layered iterations per frame.
        algorithm: ``"sum-product"`` or ``"min-sum"`` (see :func:`decode_syndrome`).
        scale: Normalisation factor of min-sum, in ``(0, 1]``.
        offset: Offset of offset min-sum, ``>= 0``.
        messages: Optional ``float32[k, E]`` starting messages, updated in place (see
            :func:`decode_syndrome`).

    Returns:
        A :class:`DecodeResult` of arrays: ``bits`` ``uint8[k, n]``, ``converged`` ``bool[k]``,
        ``iterations`` ``int32[k]``.

    Raises:
        TypeError: An array has the wrong type or dtype.
        ValueError: Shapes disagree, ``llrs`` holds NaN, or a parameter is out of range.
    """
    if not isinstance(syndromes, np.ndarray) or syndromes.ndim != 2:
        raise TypeError("syndromes must be a 2-d numpy array")
    k = syndromes.shape[0]
    llrs32, messages = _prepare(code, "syndromes", syndromes, "llrs", llrs, messages, (k,),
                                max_iterations, scale, offset, algorithm)
    bits = np.empty((k, code.n), dtype=np.uint8)
    converged = np.zeros(k, dtype=np.bool_)
    iterations = np.zeros(k, dtype=np.int32)
    if k:
        _decode_batch_kernel(
            code.chk_ptr,
            code.chk_var,
            np.ascontiguousarray(syndromes),
            llrs32,
            int(max_iterations),
            _ALGORITHM_CODES[algorithm],
            np.float32(scale),
            np.float32(offset),
            _PHI_TABLE,
            _PHI_CONSTANTS,
            messages,
            bits,
            converged,
            iterations,
        )
    return DecodeResult(bits=bits, converged=converged, iterations=iterations)
