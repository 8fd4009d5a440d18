"""The ``"sum-product-fast"`` check update on quasi-cyclic codes: taylor sum-product with the
weakest inputs found by value, in fused multiply-adds.

The layout and schedule are those of :mod:`.kernels_qc` (a layer of ``z`` checks at a time,
doubled posteriors, a layer gathered into scratch rows). The check update is sum-product-taylor
(:mod:`.kernels`) with four changes that make it cheaper per edge:

* the ``p = phi(|t|)`` of the inputs come from a table, 8 per vector operation
  (:mod:`.phi_table`; a third of the time per edge was the computed phi), in the same pass
  that gathers ``t`` (posterior minus old message; on n384000_r085 one pass instead of two
  saved 6-9 % of the CPU per edge-iteration, none on the narrower codes);

* the exact message ``phi(T - p)`` goes to every edge whose ``p`` *equals* the largest or the
  second largest ``p`` of its check, instead of to the edges at the first two positions of
  those values: the running extremes are then two ``max``/``min`` per edge, with no edge
  indices to carry (tied edges get the same exact value, which is ``phi(T - p)`` for each of
  them, so this is never less exact than the index rule);
* the layer update is compiled with floating-point contraction (``fastmath={"contract"}``), so
  LLVM fuses multiplies and adds into FMA instructions (phi's polynomials, the expansion);
* the check sums and the new messages run 8 lanes at a time with the layer's edges in an inner
  loop (:mod:`.check_lanes`), so the per-lane running values stay in vector registers instead
  of being loaded and stored at every edge. The same bits and iterations as the edge-major
  loops they replace; on the 64 000-bit codes 8-25 % less CPU per edge-iteration (single
  thread, interleaved runs), on n384000_r085 no measurable change (its scratch rows, 1.5 KiB
  apart, are read from L2 rather than L1).

The plain twin is :func:`.kernels.decode_reference` with ``ALGORITHM_SUM_PRODUCT_FAST`` (and
:func:`.kernels.csr_kernel` agrees with it bit for bit): it rounds every product and sum, so
this kernel's messages differ from the twin's by float32 rounding (a few units in the last place
per fused operation, see the tests for the tolerance); decisions and iteration counts agree
except on knife-edge ties.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from .check_lanes import (
    _BASE,
    _COEF1,
    _COEF2,
    _EXACT1,
    _EXACT2,
    _NEGATIVE,
    _TOTAL,
    _X1,
    _X2,
    ENDS_ROWS,
    LANE_ROWS,
    check_messages_into,
    check_sums_into,
)
from .kernels_qc import (
    _matches,
    _posteriors,
    _scatter,
    _stall_count,
    _start,
    _write_out,
)
from .phi import PhiConstants, expansion, phi
from .phi_table import sub_phi_table_into

__all__ = ["qc_fast_batch_kernel", "qc_fast_kernel"]


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _layer_fast(
    z: int, degree: int, first: int, layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], syndrome: NDArray[np.uint8], post2: NDArray[np.float32],
    msg: NDArray[np.float32], ext: NDArray[np.float32], mags: NDArray[np.float32],
    newpost: NDArray[np.float32], k: PhiConstants, table: NDArray[np.float32],
    ends: NDArray[np.float32],
    lane: NDArray[np.float32], parity: NDArray[np.int32], count: bool,
) -> None:  # pragma: no cover - compiled
    """One layered update of the ``z`` checks of a base check (see ``kernels_qc._layer``)."""
    zero = np.float32(0.0)
    # The gather (each base edge's z posteriors, a contiguous run of the doubled block, minus
    # the old messages) and the table phi of the result in one pass per base edge.
    for r in range(degree):
        b = first + r
        start = 2 * z * layer_col[b] + z - layer_shift[b]
        sub_phi_table_into(post2[start : start + z], msg[b * z : b * z + z],
                           ext[r * z : r * z + z], mags[r * z : r * z + z], z, table)
    minus_zero = np.float32(-0.0)
    minus = np.float32(-1.0)  # below any phi
    for u in range(z):
        ends[_TOTAL * z + u] = zero
        ends[_NEGATIVE * z + u] = minus_zero if (syndrome[u] & np.uint8(1)) != 0 else zero
        ends[_X1 * z + u] = minus
        ends[_X2 * z + u] = minus
    # The running sums and extremes over the layer's edges, 8 lanes at a time in registers.
    check_sums_into(mags, ext, ends, z, degree)
    for u in range(z):
        t = ends[_TOTAL * z + u]
        lane[_EXACT1 * z + u] = phi(max(t - ends[_X1 * z + u], zero), k)
        lane[_EXACT2 * z + u] = phi(max(t - ends[_X2 * z + u], zero), k)
        lane[_BASE * z + u] = phi(t, k)
        lane[_COEF1 * z + u], lane[_COEF2 * z + u] = expansion(t, k)
    # Each edge's new message (the exact value for an input whose phi equals the largest or
    # the second largest: both loaded, no masked loads) and its new posterior, twice.
    check_messages_into(mags, ext, lane, ends, msg[first * z : (first + degree) * z], newpost,
                        z, degree, z, 2 * z, z)
    _scatter(z, degree, first, layer_col, layer_shift, syndrome, newpost, post2, parity, count)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _doubled_llr(
    z: int, layer_ptr: NDArray[np.int64], llr: NDArray[np.float32]
) -> tuple[NDArray[np.float32], int]:  # pragma: no cover - compiled
    """The cold start's posteriors: :func:`.kernels_qc._posteriors` for ``+0.0`` messages
    (doubled ``llr + 0.0``, largest base check degree). The ``+ 0.0`` turns a ``-0.0`` LLR
    into ``+0.0``, as adding the zero messages does (and the twin): the check update reads
    sign bits, so a ``-0.0`` input would flip the signs of its check's messages."""
    zero = np.float32(0.0)
    nb = llr.shape[0] // z
    max_degree = 1
    for i in range(layer_ptr.shape[0] - 1):
        max_degree = max(max_degree, layer_ptr[i + 1] - layer_ptr[i])
    post2 = np.empty(2 * nb * z, dtype=np.float32)
    for j in range(nb):
        row = llr[j * z : j * z + z]
        low = post2[2 * z * j : 2 * z * j + z]
        high = post2[2 * z * j + z : 2 * z * j + 2 * z]
        for t in range(z):
            v = row[t] + zero
            low[t] = v
            high[t] = v
    return post2, max_degree


@numba.njit(cache=True, nogil=True, error_model="numpy")
def qc_fast_kernel(
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
    k: PhiConstants,
    table: NDArray[np.float32],
    messages: NDArray[np.float32],
    warm: bool,
    bits_out: NDArray[np.uint8],
    in_place: bool = False,
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """Layered sum-product-fast on a QC code; arguments and layout as
    :func:`.kernels_qc.qc_kernel` (no algorithm, scale or offset). With ``warm`` false the
    decode starts from zero messages and ``messages`` is neither read nor written (a cold
    start whose messages nobody reads back: no permutation either way). Returns
    ``(iterations, converged)``. With ``in_place`` (and ``warm``) the messages are already
    in layer order (the caller's buffer is the kernel's own: ``kernel_order``), and the
    kernel updates them where they are: no copy in or out."""
    mb = layer_ptr.shape[0] - 1
    if warm and in_place:
        msg = messages
        # (A zeroed buffer could take its posteriors from the LLRs without adding E zero
        # messages: measured, 0.6 of 89 ms CPU of a first round on n384000_r085, not kept.)
        post2, max_degree = _posteriors(z, layer_ptr, layer_col, layer_shift, llr, msg)
    elif warm:
        msg, post2, max_degree = _start(z, layer_ptr, layer_col, layer_shift, csr_edge, llr,
                                        messages)
    else:
        msg = np.zeros(csr_edge.shape[0], dtype=np.float32)
        post2, max_degree = _doubled_llr(z, layer_ptr, llr)
    ext = np.empty(max_degree * z, dtype=np.float32)
    mags = np.empty(max_degree * z, dtype=np.float32)
    newpost = np.empty(2 * max_degree * z, dtype=np.float32)
    ends = np.empty(ENDS_ROWS * z, dtype=np.float32)
    lane = np.empty(LANE_ROWS * z, dtype=np.float32)
    parity = np.empty(z, dtype=np.int32)
    unsatisfied = np.empty(z, dtype=np.int64)
    counting = stall > 0
    iterations = 0
    fewest = mb * z + 1
    since = 0
    converged = _matches(z, layer_ptr, layer_col, layer_shift, syndrome, post2, parity)
    while not converged and iterations < max_iterations:
        for u in range(z):
            unsatisfied[u] = 0
        for i in range(mb):
            first = layer_ptr[i]
            degree = layer_ptr[i + 1] - first
            _layer_fast(z, degree, first, layer_col, layer_shift, syndrome[i * z : i * z + z],
                        post2, msg, ext, mags, newpost, k, table, ends, lane, parity, counting)
            if counting:
                for u in range(z):
                    unsatisfied[u] += parity[u]
        iterations += 1
        converged = _matches(z, layer_ptr, layer_col, layer_shift, syndrome, post2, parity)
        fewest, since = _stall_count(z, unsatisfied, fewest, since, drop)
        if stall > 0 and since >= stall:
            break
    if warm and not in_place:
        _write_out(z, post2, bits_out, csr_edge, msg, messages)
    else:
        _write_out(z, post2, bits_out, csr_edge[:0], msg, messages)
    return iterations, converged


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def qc_fast_batch_kernel(
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
    k: PhiConstants,
    table: NDArray[np.float32],
    msgs: NDArray[np.float32],
    warm: bool,
    bits_out: NDArray[np.uint8],
    converged_out: NDArray[np.bool_],
    iterations_out: NDArray[np.int32],
    in_place: bool = False,
) -> None:  # pragma: no cover - compiled
    """:func:`qc_fast_kernel` on each row, the rows spread over all cores."""
    for f in numba.prange(syndromes.shape[0]):
        iterations, converged = qc_fast_kernel(
            z, layer_ptr, layer_col, layer_shift, csr_edge, syndromes[f], llrs[f],
            max_iterations, stall, drop, k, table, msgs[f], warm, bits_out[f], in_place,
        )
        iterations_out[f] = iterations
        converged_out[f] = converged
