"""Layered belief-propagation kernels for syndrome decoding, with their plain-numpy twin.

Two compiled kernels run the same algorithm:

* ``csr_kernel`` (here) works on any code, one check at a time (check-major edge order of ``H``);
* ``qc_kernel`` (:mod:`.kernels_qc`) works on quasi-cyclic codes (the shipped family), one
  *layer* of ``z`` checks at a time, in vector instructions.

Both perform, per check, the same float32 operations in the same order as the plain twin
:func:`decode_reference`, so all three agree bit for bit.

Check update (``algorithm``). Sum-product (1): ``|r_i| = phi(T - p_i)``, ``p_j = phi(|t_j|)``,
``T = sum_j p_j`` taken in edge order, ``phi`` from :mod:`.phi` (branch-free float32).
Sum-product-taylor (2): the same for the two edges of largest ``p`` (first ones on ties), and
``phi(T) + a1 p_i + a2 p_i^2`` (:func:`.phi.expansion` at ``T``) for every other edge: one phi
per edge instead of two. Sum-product-fast (3): as taylor, but the exact messages go to every
edge whose ``p`` equals the largest or the second largest ``p`` of the check (tied edges all get
their exact value), so the kernels track two values and no edge indices; its QC kernel
(:mod:`.kernels_qc_fast`) fuses multiplies and adds, so it agrees with the twin to float32
rounding rather than bit for bit; its phi clamps at ``PHI_FAST_X_MAX`` (the kernels are passed
``phi_constants(PHI_FAST_X_MAX)``), and the ``p_j`` of its inputs are read from a table
(:mod:`.phi_table`, 7 mantissa bits of ``|t_j|``) rather than computed. Normalised/offset
min-sum (0): ``|r_i| = min(max(scale * min_{j != i} |t_j| - offset, 0), MESSAGE_LIMIT)``.

The sign of ``r_i`` is the parity of the syndrome bit and of the other inputs' sign bits (so
``-0.0`` counts as negative there); a hard decision is 1 where the posterior is ``< 0``.
Decoding stops as soon as the hard decisions match the syndrome (checked before the first
iteration and after each), or, with the stall rule on (``stall > 0``), once ``stall`` iterations
in a row have not lowered the unsatisfied checks below a *mark* by at least ``drop`` per mille of
the mark (a check counts as unsatisfied if the hard decisions of its posteriors, just after its
own update, miss its syndrome bit). The mark starts above any count and becomes each count that
clears it (``count < mark`` and ``1000 count <= (1000 - drop) mark``, in integers); with
``drop = 0`` it is the fewest unsatisfied checks seen.
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np
from numpy.typing import NDArray

from .phi import (
    PHI_FAST_X_MAX,
    PhiConstants,
    expansion,
    expansion_reference,
    phi,
    phi_constants,
    phi_reference,
)
from .phi_table import phi_table, phi_table_reference

__all__ = [
    "ALGORITHM_MIN_SUM",
    "ALGORITHM_SUM_PRODUCT",
    "ALGORITHM_SUM_PRODUCT_FAST",
    "ALGORITHM_SUM_PRODUCT_TAYLOR",
    "csr_batch_kernel",
    "csr_kernel",
    "decode_reference",
]

# The algorithm argument of the kernels.
ALGORITHM_MIN_SUM: Final = 0
ALGORITHM_SUM_PRODUCT: Final = 1
ALGORITHM_SUM_PRODUCT_TAYLOR: Final = 2
ALGORITHM_SUM_PRODUCT_FAST: Final = 3

@numba.njit(cache=True, nogil=True, error_model="numpy")
def _magnitudes(
    ext: NDArray[np.float32],
    mags: NDArray[np.float32],
    degree: int,
    width: int,
    algorithm: int,
    scale: np.float32,
    offset: np.float32,
    k: PhiConstants,
    table: NDArray[np.float32],
    total: NDArray[np.float32],
    min1: NDArray[np.float32],
    min2: NDArray[np.float32],
    arg1: NDArray[np.int32],
) -> None:  # pragma: no cover - compiled
    """Message magnitudes of ``width`` checks of equal degree; ``ext``/``mags`` are ``[r, u]``.

    ``ext[r * width + u]`` is the extrinsic input of the ``r``-th edge of check ``u``.
    """
    zero = np.float32(0.0)
    n = degree * width
    if algorithm == 1:
        for j in range(n):
            mags[j] = phi(abs(ext[j]), k)
        for u in range(width):
            total[u] = zero
        for r in range(degree):
            row = r * width
            for u in range(width):
                total[u] += mags[row + u]
        for r in range(degree):
            row = r * width
            for u in range(width):
                mags[row + u] = max(total[u] - mags[row + u], zero)
        for j in range(n):
            mags[j] = phi(mags[j], k)
        return
    if algorithm == 3:
        minus = np.float32(-1.0)
        for u in range(width):
            t = zero
            max1 = minus
            max2 = minus
            for r in range(degree):
                p = phi_table(ext[r * width + u], table)
                mags[r * width + u] = p
                t += p
                max2 = max(max2, min(max1, p))
                max1 = max(max1, p)
            e1 = phi(max(t - max1, zero), k)
            e2 = phi(max(t - max2, zero), k)
            base = phi(t, k)
            c1, c2 = expansion(t, k)
            for r in range(degree):
                p = mags[r * width + u]
                approx = base + p * (c1 + p * c2)
                mags[r * width + u] = e1 if p == max1 else (e2 if p == max2 else approx)
        return
    if algorithm == 2:
        minus = np.float32(-1.0)
        for u in range(width):
            t = zero
            max1 = minus
            max2 = minus
            i1 = -1
            i2 = -1
            for r in range(degree):
                p = phi(abs(ext[r * width + u]), k)
                mags[r * width + u] = p
                t += p
                if p > max1:
                    max2, i2, max1, i1 = max1, i1, p, r
                elif p > max2:
                    max2, i2 = p, r
            e1 = phi(max(t - max1, zero), k)
            e2 = phi(max(t - max2, zero), k)
            base = phi(t, k)
            c1, c2 = expansion(t, k)
            for r in range(degree):
                p = mags[r * width + u]
                approx = base + p * (c1 + p * c2)
                mags[r * width + u] = e1 if r == i1 else (e2 if r == i2 else approx)
        return
    big = np.float32(np.finfo(np.float32).max)
    limit = k[18]
    for u in range(width):
        min1[u] = big
        min2[u] = big
        arg1[u] = 0
    for r in range(degree):
        row = r * width
        for u in range(width):
            a = abs(ext[row + u])
            min2[u] = min(min2[u], max(min1[u], a))
            arg1[u] = r if a < min1[u] else arg1[u]
            min1[u] = min(min1[u], a)
    for u in range(width):
        min1[u] = min(max(scale * min1[u] - offset, zero), limit)
        min2[u] = min(max(scale * min2[u] - offset, zero), limit)
    for r in range(degree):
        row = r * width
        for u in range(width):
            mags[row + u] = min2[u] if arg1[u] == r else min1[u]


@numba.njit(cache=True, nogil=True, inline="always")
def _sign(x: np.float32) -> np.int32:  # pragma: no cover - compiled
    return np.int32(np.float32(x).view(np.int32) >> 31) & np.int32(1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _csr_matches(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    post: NDArray[np.float32],
) -> bool:  # pragma: no cover - compiled
    zero = np.float32(0.0)
    for c in range(chk_ptr.shape[0] - 1):
        parity = syndrome[c] & np.uint8(1)
        for e in range(chk_ptr[c], chk_ptr[c + 1]):
            if post[chk_var[e]] < zero:
                parity ^= np.uint8(1)
        if parity != 0:
            return False
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def csr_kernel(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.float32],
    max_iterations: int,
    stall: int,
    drop: int,
    algorithm: int,
    scale: np.float32,
    offset: np.float32,
    k: PhiConstants,
    table: NDArray[np.float32],
    msg: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """Layered BP on any code, check by check; ``msg`` (check-major) is updated in place.

    Returns ``(iterations, converged)`` and writes the hard decisions to ``bits_out``.
    """
    m = chk_ptr.shape[0] - 1
    zero = np.float32(0.0)
    post = llr.copy()
    for e in range(chk_var.shape[0]):
        post[chk_var[e]] += msg[e]
    max_degree = 1
    for c in range(m):
        max_degree = max(max_degree, chk_ptr[c + 1] - chk_ptr[c])
    ext = np.empty(max_degree, dtype=np.float32)
    mags = np.empty(max_degree, dtype=np.float32)
    total = np.empty(1, dtype=np.float32)
    min1 = np.empty(1, dtype=np.float32)
    min2 = np.empty(1, dtype=np.float32)
    arg1 = np.empty(1, dtype=np.int32)
    iterations = 0
    fewest = m + 1
    since = 0
    converged = _csr_matches(chk_ptr, chk_var, syndrome, post)
    while not converged and iterations < max_iterations:
        unsatisfied = 0
        for c in range(m):
            start = chk_ptr[c]
            degree = chk_ptr[c + 1] - start
            negative = np.int32(syndrome[c] & np.uint8(1))
            for i in range(degree):
                t = post[chk_var[start + i]] - msg[start + i]
                ext[i] = t
                negative ^= _sign(t)
            _magnitudes(ext, mags, degree, 1, algorithm, scale, offset, k, table, total, min1, min2,
                        arg1)
            parity = np.int32(syndrome[c] & np.uint8(1))
            for i in range(degree):
                t = ext[i]
                mag = mags[i]
                r = -mag if (negative ^ _sign(t)) != 0 else mag
                msg[start + i] = r
                p = t + r
                post[chk_var[start + i]] = p
                parity ^= np.int32(1) if p < zero else np.int32(0)
            unsatisfied += int(parity)
        iterations += 1
        converged = _csr_matches(chk_ptr, chk_var, syndrome, post)
        if unsatisfied < fewest and unsatisfied * 1000 <= fewest * (1000 - drop):
            fewest = unsatisfied
            since = 0
        else:
            since += 1
        if stall > 0 and since >= stall:
            break
    for v in range(post.shape[0]):
        bits_out[v] = np.uint8(1) if post[v] < zero else np.uint8(0)
    return iterations, converged


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def csr_batch_kernel(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndromes: NDArray[np.uint8],
    llrs: NDArray[np.float32],
    max_iterations: int,
    stall: int,
    drop: int,
    algorithm: int,
    scale: np.float32,
    offset: np.float32,
    k: PhiConstants,
    table: NDArray[np.float32],
    msgs: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
    converged_out: NDArray[np.bool_],
    iterations_out: NDArray[np.int32],
) -> None:  # pragma: no cover - compiled
    """:func:`csr_kernel` on each row, the rows spread over all cores."""
    for f in numba.prange(syndromes.shape[0]):
        iterations, converged = csr_kernel(
            chk_ptr, chk_var, syndromes[f], llrs[f], max_iterations, stall, drop, algorithm,
            scale, offset, k, table, msgs[f], bits_out[f],
        )
        iterations_out[f] = iterations
        converged_out[f] = converged


def decode_reference(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.float32],
    max_iterations: int,
    stall: int,
    drop: int,
    algorithm: int,
    scale: float,
    offset: float,
    messages: NDArray[np.float32],
) -> tuple[NDArray[np.uint8], int, bool]:
    """Plain-numpy twin of both kernels: layered BP, one check at a time, in float32.

    ``messages`` (check-major, ``float32[E]``) are the starting messages, updated in place.

    Returns:
        ``(bits, iterations, converged)``, bit for bit what the kernels return (for
        ``ALGORITHM_SUM_PRODUCT_FAST``: the CSR kernel; the fused QC kernel to rounding).
    """
    f32 = np.float32
    zero = f32(0.0)
    k = phi_constants()
    fast = phi_constants(PHI_FAST_X_MAX)
    post = np.array(llr, dtype=np.float32)
    msg = messages
    np.add.at(post, chk_var, msg)
    checks = [
        (chk_var[chk_ptr[c] : chk_ptr[c + 1]].astype(np.int64), int(chk_ptr[c]), int(syndrome[c]))
        for c in range(chk_ptr.shape[0] - 1)
    ]

    def matches() -> bool:
        hard = post < 0
        return all((int(hard[vs].sum()) + s) % 2 == 0 for vs, _, s in checks)

    iterations = 0
    fewest = len(checks) + 1
    since = 0
    converged = matches()
    while not converged and iterations < max_iterations:
        unsatisfied = 0
        for vs, start, s in checks:
            if vs.size == 0:
                unsatisfied += s & 1
                continue
            edges = slice(start, start + vs.size)
            t = post[vs] - msg[edges]
            sign = np.signbit(t)
            negative = (s + int(sign.sum())) % 2
            a = np.abs(t)
            if algorithm == ALGORITHM_SUM_PRODUCT:
                phis = phi_reference(a)
                total = np.cumsum(phis, dtype=np.float32)[-1]  # sequential, as the kernels add
                mags = phi_reference(np.maximum(total - phis, zero))
            elif algorithm == ALGORITHM_SUM_PRODUCT_TAYLOR:
                phis = phi_reference(a)
                total = np.cumsum(phis, dtype=np.float32)[-1]
                weakest = np.argsort(-phis, kind="stable")[:2]  # largest phi, first on ties
                exact = phi_reference(np.maximum(total - phis[weakest], zero))
                at_total = np.array([total], dtype=np.float32)
                base = phi_reference(at_total)[0]
                c1, c2 = (c[0] for c in expansion_reference(at_total))
                mags = (base + phis * (c1 + phis * c2)).astype(np.float32)
                mags[weakest] = exact
            elif algorithm == ALGORITHM_SUM_PRODUCT_FAST:
                phis = phi_table_reference(a)
                total = np.cumsum(phis, dtype=np.float32)[-1]
                top = np.sort(phis)[::-1]  # the largest phi and the runner-up (equal on ties)
                x1, x2 = top[0], (top[1] if top.size > 1 else f32(-1.0))
                exact = phi_reference(np.maximum(total - np.array([x1, x2], np.float32), zero),
                                      fast)
                at_total = np.array([total], dtype=np.float32)
                base = phi_reference(at_total, fast)[0]
                c1, c2 = (c[0] for c in expansion_reference(at_total, fast))
                mags = (base + phis * (c1 + phis * c2)).astype(np.float32)
                mags = np.where(phis == x2, exact[1], mags)
                mags = np.where(phis == x1, exact[0], mags).astype(np.float32)
            else:
                order = np.argsort(a, kind="stable")
                big = f32(np.finfo(np.float32).max)
                min1 = a[order[0]]
                min2 = a[order[1]] if vs.size > 1 else big
                limit = k[18]
                mag1 = min(max(f32(f32(scale) * min1) - f32(offset), zero), limit)
                mag2 = min(max(f32(f32(scale) * min2) - f32(offset), zero), limit)
                mags = np.full(vs.size, mag1, dtype=np.float32)
                mags[order[0]] = mag2
            r = np.where((negative + sign) % 2 == 1, -mags, mags).astype(np.float32)
            msg[edges] = r
            post[vs] = t + r
            unsatisfied += (s + int((post[vs] < 0).sum())) % 2
        iterations += 1
        converged = matches()
        marked = unsatisfied < fewest and unsatisfied * 1000 <= fewest * (1000 - drop)
        fewest, since = (unsatisfied, 0) if marked else (fewest, since + 1)
        if 0 < stall <= since:
            break
    return (post < 0).astype(np.uint8), iterations, converged
