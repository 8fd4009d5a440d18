"""Layered belief propagation on quasi-cyclic codes of narrow lifting (``z`` below 32).

The same algorithm, with the same results bit for bit, as :func:`.kernels_qc.qc_kernel`, laid out
for short rows: one loop over the ``z`` lanes per base edge and pass (extrinsic inputs, phi and the
check's accumulators together; then the new messages), where the wide kernel splits the work into
more, longer loops. On ``z = 16`` (the 16 000-bit codes) loops of 16 lanes are too short for
LLVM's unrolled vector bodies, and this layout was measured faster there (n16000_r080, taylor,
same run: 12.7 ns CPU per edge-iteration against 15.5 for the wide kernel); on ``z = 64`` the
wide kernel is faster (6.2 against 7.0). The decoder picks one by ``z`` (``NARROW_QC_Z``). The
arithmetic is that of the plain twin :func:`.kernels.decode_reference`.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from .kernels_qc import _stall_count, _write_out
from .phi import PhiConstants, expansion, phi
from .phi_table import phi_table

__all__ = ["qc_narrow_batch_kernel", "qc_narrow_kernel"]


@numba.njit(cache=True, nogil=True, inline="always")
def _sign(x: np.float32) -> np.int32:  # pragma: no cover - compiled
    return np.int32(np.float32(x).view(np.int32) >> 31) & np.int32(1)


@numba.njit(cache=True, nogil=True, inline="always")
def _store_block(
    values2: NDArray[np.float32], post2: NDArray[np.float32], base: int, s: int, z: int
) -> None:  # pragma: no cover - compiled
    """Writes a layer's new posteriors back to both copies of a doubled block.

    ``values2[u] == values2[u + z]`` is the posterior of lifted check ``u``'s variable, which is
    ``(u - s) mod z`` of the block: ``block[t] = values2[t + s]``, one contiguous run of ``z``.
    """
    src = values2[s : s + z]
    low = post2[base : base + z]
    high = post2[base + z : base + 2 * z]
    for t in range(z):
        v = src[t]
        low[t] = v
        high[t] = v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _qc_matches(
    z: int,
    layer_ptr: NDArray[np.int64],
    layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    post2: NDArray[np.float32],
    parity: NDArray[np.int32],
) -> bool:  # pragma: no cover - compiled
    zero = np.float32(0.0)
    for i in range(layer_ptr.shape[0] - 1):
        for u in range(z):
            parity[u] = np.int32(syndrome[i * z + u] & np.uint8(1))
        for b in range(layer_ptr[i], layer_ptr[i + 1]):
            start = 2 * z * layer_col[b] + z - layer_shift[b]
            src = post2[start : start + z]
            for u in range(z):
                parity[u] ^= np.int32(1) if src[u] < zero else np.int32(0)
        bad = np.int32(0)
        for u in range(z):
            bad |= parity[u]
        if bad != 0:
            return False
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def qc_narrow_kernel(
    z: int,
    layer_ptr: NDArray[np.int64],
    layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32],
    csr_edge: NDArray[np.int64],
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
    messages: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """Layered BP on a QC code, ``z`` checks at once; ``messages`` (check-major) in place.

    Base edge ``b`` (of base check ``i``, base variable ``j``, shift ``s``) has the ``z``
    message slots ``msg[b * z + u]`` of the layer order, one per lifted check ``i * z + u``,
    whose variable is ``j * z + (u - s) mod z``; ``csr_edge`` maps them to the check-major
    order of ``messages``. Posteriors are kept *doubled*: block ``j`` is stored twice in a row
    (``post2[2 z j : 2 z (j + 1)]``), so the ``z`` posteriors a layer reads through shift ``s``
    are the one contiguous run ``post2[2 z j + z - s :][:z]``: no rotation copies, no
    remainder loops. Returns ``(iterations, converged)``.
    """
    mb = layer_ptr.shape[0] - 1
    nb = llr.shape[0] // z
    zero = np.float32(0.0)
    edges = csr_edge.shape[0]
    msg = np.empty(edges, dtype=np.float32)
    for e in range(edges):
        msg[e] = messages[csr_edge[e]]
    post = llr.copy()
    max_degree = 1
    for i in range(mb):
        max_degree = max(max_degree, layer_ptr[i + 1] - layer_ptr[i])
        for b in range(layer_ptr[i], layer_ptr[i + 1]):
            base = layer_col[b] * z
            s = layer_shift[b]
            for u in range(s, z):
                post[base + u - s] += msg[b * z + u]
            for u in range(s):
                post[base + u - s + z] += msg[b * z + u]
    post2 = np.empty(2 * nb * z, dtype=np.float32)
    for j in range(nb):
        for t in range(z):
            post2[2 * z * j + t] = post[j * z + t]
            post2[2 * z * j + z + t] = post[j * z + t]
    mags = np.empty(max_degree * z, dtype=np.float32)
    values2 = np.empty(2 * z, dtype=np.float32)
    negative = np.empty(z, dtype=np.int32)
    parity = np.empty(z, dtype=np.int32)
    unsatisfied = np.empty(z, dtype=np.int64)
    total = np.empty(z, dtype=np.float32)
    min1 = np.empty(z, dtype=np.float32)
    min2 = np.empty(z, dtype=np.float32)
    arg1 = np.empty(z, dtype=np.int32)
    arg2 = np.empty(z, dtype=np.int32)
    base_phi = np.empty(z, dtype=np.float32)
    coef1 = np.empty(z, dtype=np.float32)
    coef2 = np.empty(z, dtype=np.float32)
    top1 = np.empty(z, dtype=np.float32)  # sum-product-fast: message of the largest phi
    top2 = np.empty(z, dtype=np.float32)  # and of the runner-up
    # Min-sum tracks the two smallest |t| (from +max), sum-product-taylor the two largest phi
    # (from -1, below any phi), as does sum-product-fast.
    first_extreme = np.float32(-1.0) if algorithm >= 2 else np.float32(np.finfo(np.float32).max)
    limit = k[18]
    iterations = 0
    fewest = mb * z + 1
    since = 0
    converged = _qc_matches(z, layer_ptr, layer_col, layer_shift, syndrome, post2, negative)
    while not converged and iterations < max_iterations:
        for u in range(z):
            unsatisfied[u] = 0
        for i in range(mb):
            first = layer_ptr[i]
            degree = layer_ptr[i + 1] - first
            for u in range(z):
                negative[u] = np.int32(syndrome[i * z + u] & np.uint8(1))
                parity[u] = negative[u]
                total[u] = zero
                min1[u] = first_extreme
                min2[u] = first_extreme
                arg1[u] = 0
                arg2[u] = -1
            # Pass 1, per base edge: extrinsic inputs (posterior minus the old message; the
            # posteriors of a layer's variables do not change before pass 2), their signs and
            # the check's accumulators. Every index is a plain loop counter: the loads vectorise.
            for r in range(degree):
                b = first + r
                start = 2 * z * layer_col[b] + z - layer_shift[b]
                src = post2[start : start + z]
                mr = msg[b * z : b * z + z]
                if algorithm == 1:
                    mg = mags[r * z : r * z + z]
                    for u in range(z):
                        t = src[u] - mr[u]
                        negative[u] ^= _sign(t)
                        p = phi(abs(t), k)
                        mg[u] = p
                        total[u] += p
                elif algorithm == 2:
                    # The two largest phi (weakest inputs) and their edges, first ones on ties.
                    mg = mags[r * z : r * z + z]
                    r32 = np.int32(r)  # int32 lanes, as the arg arrays
                    for u in range(z):
                        t = src[u] - mr[u]
                        negative[u] ^= _sign(t)
                        p = phi(abs(t), k)
                        mg[u] = p
                        total[u] += p
                        # Every load first, then selects of locals only (no conditional
                        # loads, so the loop stays vectorised).
                        m1 = min1[u]
                        m2 = min2[u]
                        i1 = arg1[u]
                        i2 = arg2[u]
                        above1 = p > m1
                        above2 = p > m2
                        second = p if above2 else m2
                        second_arg = r32 if above2 else i2
                        min2[u] = m1 if above1 else second
                        arg2[u] = i1 if above1 else second_arg
                        min1[u] = p if above1 else m1
                        arg1[u] = r32 if above1 else i1
                elif algorithm == 3:
                    # The two largest phi by value (equal on a tie), no edge indices.
                    mg = mags[r * z : r * z + z]
                    for u in range(z):
                        t = src[u] - mr[u]
                        negative[u] ^= _sign(t)
                        p = phi_table(t, table)
                        mg[u] = p
                        total[u] += p
                        m1 = min1[u]
                        min2[u] = max(min2[u], min(m1, p))
                        min1[u] = max(m1, p)
                else:
                    for u in range(z):
                        t = src[u] - mr[u]
                        negative[u] ^= _sign(t)
                        a = abs(t)
                        min2[u] = min(min2[u], max(min1[u], a))
                        arg1[u] = r if a < min1[u] else arg1[u]
                        min1[u] = min(min1[u], a)
            if algorithm == 0:
                for u in range(z):
                    min1[u] = min(max(scale * min1[u] - offset, zero), limit)
                    min2[u] = min(max(scale * min2[u] - offset, zero), limit)
            elif algorithm == 2:
                # Exact messages for the two weakest inputs, the expansion's terms for the rest.
                for u in range(z):
                    t = total[u]
                    min1[u] = phi(max(t - min1[u], zero), k)
                    min2[u] = phi(max(t - min2[u], zero), k)
                    base_phi[u] = phi(t, k)
                    coef1[u], coef2[u] = expansion(t, k)
            elif algorithm == 3:
                for u in range(z):
                    t = total[u]
                    top1[u] = phi(max(t - min1[u], zero), k)
                    top2[u] = phi(max(t - min2[u], zero), k)
                    base_phi[u] = phi(t, k)
                    coef1[u], coef2[u] = expansion(t, k)
            # Pass 2, per base edge: new messages and posteriors (the extrinsic input recomputed,
            # bit for bit, rather than stored and reloaded), written back to the doubled block.
            for r in range(degree):
                b = first + r
                col = 2 * z * layer_col[b]
                s = layer_shift[b]
                src = post2[col + z - s : col + 2 * z - s]
                mr = msg[b * z : b * z + z]
                if algorithm == 1:
                    mg = mags[r * z : r * z + z]
                    for u in range(z):
                        t = src[u] - mr[u]
                        mag = phi(max(total[u] - mg[u], zero), k)
                        value = -mag if (negative[u] ^ _sign(t)) != 0 else mag
                        mr[u] = value
                        values2[u] = t + value
                elif algorithm == 2:
                    mg = mags[r * z : r * z + z]
                    r32 = np.int32(r)
                    for u in range(z):
                        t = src[u] - mr[u]
                        p = mg[u]
                        approx = base_phi[u] + p * (coef1[u] + p * coef2[u])
                        exact1 = min1[u]
                        exact2 = min2[u]
                        is1 = arg1[u] == r32
                        is2 = arg2[u] == r32
                        mag = exact2 if is2 else approx
                        mag = exact1 if is1 else mag
                        value = -mag if (negative[u] ^ _sign(t)) != 0 else mag
                        mr[u] = value
                        values2[u] = t + value
                elif algorithm == 3:
                    mg = mags[r * z : r * z + z]
                    for u in range(z):
                        t = src[u] - mr[u]
                        p = mg[u]
                        approx = base_phi[u] + p * (coef1[u] + p * coef2[u])
                        mag = top2[u] if p == min2[u] else approx
                        mag = top1[u] if p == min1[u] else mag
                        value = -mag if (negative[u] ^ _sign(t)) != 0 else mag
                        mr[u] = value
                        values2[u] = t + value
                else:
                    for u in range(z):
                        t = src[u] - mr[u]
                        mag = min2[u] if arg1[u] == r else min1[u]
                        value = -mag if (negative[u] ^ _sign(t)) != 0 else mag
                        mr[u] = value
                        values2[u] = t + value
                for u in range(z):
                    v = values2[u]
                    values2[z + u] = v
                    parity[u] ^= np.int32(1) if v < zero else np.int32(0)
                _store_block(values2, post2, col, s, z)
            for u in range(z):
                unsatisfied[u] += parity[u]
        iterations += 1
        converged = _qc_matches(z, layer_ptr, layer_col, layer_shift, syndrome, post2, negative)
        fewest, since = _stall_count(z, unsatisfied, fewest, since, drop)
        if stall > 0 and since >= stall:
            break
    _write_out(z, post2, bits_out, csr_edge, msg, messages)
    return iterations, converged


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def qc_narrow_batch_kernel(
    z: int,
    layer_ptr: NDArray[np.int64],
    layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32],
    csr_edge: NDArray[np.int64],
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
    """:func:`qc_narrow_kernel` on each row, the rows spread over all cores."""
    for f in numba.prange(syndromes.shape[0]):
        iterations, converged = qc_narrow_kernel(
            z, layer_ptr, layer_col, layer_shift, csr_edge, syndromes[f], llrs[f], max_iterations,
            stall, drop, algorithm, scale, offset, k, table, msgs[f], bits_out[f],
        )
        iterations_out[f] = iterations
        converged_out[f] = converged
