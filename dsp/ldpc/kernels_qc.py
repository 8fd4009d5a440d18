"""Layered belief propagation on quasi-cyclic codes, one layer of ``z`` checks at a time.

The ``z`` lifted checks of a base check share no variable (a base check meets each base variable
at most once), so updating them together is exactly the sequential layered schedule, and every
step is the same arithmetic on ``z`` neighbouring floats, which LLVM turns into vector
instructions. Posteriors are stored twice in a row per block, so the ``z`` posteriors a layer
reads through a cyclic shift are one contiguous run (no rotation copies).

A layer is gathered into a scratch row (``degree * z`` values), so that the costly steps (the
extrinsic inputs and their phi; the new messages) run as long loops or as loops with few arrays:
on ``z = 64`` lanes a loop's set-up (alias checks, remainder) costs as much as its work, and
every extra array in a loop adds alias checks; loops whose length is not a multiple of the vector
width end in scalar iterations, so the new posteriors are written twice in a row and a shifted
block is scattered in one loop of exactly ``z`` rather than two loops of ``s`` and ``z - s``.
Running per-lane extremes are read from one half of a double buffer and written to the other:
written back in place, LLVM turns the select into a masked store (``vmaskmovps``), which is slow
on x86.

The arithmetic is, operation for operation, that of the plain twin
:func:`.kernels.decode_reference` (and of :func:`.kernels.csr_kernel`), so they agree bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from .phi import PhiConstants, expansion, phi

__all__ = ["ACC_ROWS", "LANE_ROWS", "qc_batch_kernel", "qc_kernel"]


# Rows of the running per-lane accumulators of a layer (``float32[2, ACC_ROWS, z]``): read from
# one half and written to the other at each edge, since a select written back in place becomes a
# masked store, which is slow on x86. Edge indices are kept as float32 (exact below 2^24); the
# sign parity as the sign bit of a float.
_TOTAL = 0  # sum of phi (sum-product variants)
_NEGATIVE = 1  # sign parity of the inputs and of the syndrome bit
_X1 = 2  # taylor: largest phi; min-sum: smallest |t|
_X2 = 3  # the runner-up
_ARG1 = 4  # edge of _X1 (first on ties)
_ARG2 = 5  # edge of _X2 (taylor)
ACC_ROWS = 6

# Rows of the per-lane magnitudes of a layer (``float32[LANE_ROWS, z]``).
_BASE = 0  # taylor: phi(T); min-sum: the magnitude of every edge but the weakest
_COEF1 = 1  # taylor: first expansion coefficient; min-sum: the weakest edge's magnitude
_COEF2 = 2  # taylor: second expansion coefficient
_EXACT1 = 3  # taylor: message of the weakest input
_EXACT2 = 4  # taylor: message of the second weakest input
LANE_ROWS = 5


@numba.njit(cache=True, nogil=True, inline="always")
def _xor_sign(a: np.float32, b: np.float32) -> np.float32:  # pragma: no cover - compiled
    """A float whose sign bit is the xor of those of ``a`` and ``b`` (magnitude irrelevant)."""
    return np.int32(np.float32(a).view(np.int32) ^ np.float32(b).view(np.int32)).view(np.float32)


@numba.njit(cache=True, nogil=True, inline="always")
def _with_sign(mag: np.float32, sign: np.float32) -> np.float32:  # pragma: no cover - compiled
    """``-mag`` if the sign bit of ``sign`` is set, else ``mag``."""
    return -mag if np.float32(sign).view(np.int32) < np.int32(0) else mag


@numba.njit(cache=True, nogil=True, inline="always")
def _gather(
    z: int, degree: int, first: int, layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], post2: NDArray[np.float32], msg: NDArray[np.float32],
    ext: NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """A layer's extrinsic inputs t (posterior minus old message) into ``ext``: each base
    edge's z posteriors are one contiguous run of the doubled block."""
    for r in range(degree):
        b = first + r
        start = 2 * z * layer_col[b] + z - layer_shift[b]
        src = post2[start : start + z]
        mr = msg[b * z : b * z + z]
        er = ext[r * z : r * z + z]
        for u in range(z):
            er[u] = src[u] - mr[u]


@numba.njit(cache=True, nogil=True, inline="always")
def _scatter(
    z: int, degree: int, first: int, layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], syndrome: NDArray[np.uint8], newpost: NDArray[np.float32],
    post2: NDArray[np.float32], parity: NDArray[np.int32], count: bool,
) -> None:  # pragma: no cover - compiled
    """The end of a layer: with ``count``, each check's parity (1: unsatisfied) from the new
    posteriors; then the new posteriors (written twice per lane in ``newpost``) back into the
    doubled blocks of ``post2``."""
    zero = np.float32(0.0)
    if count:
        for u in range(z):
            parity[u] = np.int32(syndrome[u] & np.uint8(1))
        for r in range(degree):
            nr = newpost[2 * r * z : 2 * r * z + z]
            for u in range(z):
                parity[u] ^= np.int32(1) if nr[u] < zero else np.int32(0)
    # Lane u holds the variable at offset (u - s) mod z of its block, so block[t] is the
    # doubled row's [t + s]: one loop of exactly z (no scalar remainders).
    for r in range(degree):
        b = first + r
        s = layer_shift[b]
        col = 2 * z * layer_col[b]
        src = newpost[2 * r * z + s : 2 * r * z + s + z]
        low = post2[col : col + z]
        high = post2[col + z : col + 2 * z]
        for u in range(z):
            v = src[u]
            low[u] = v
            high[u] = v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _layer(
    z: int, degree: int, first: int, layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], syndrome: NDArray[np.uint8], post2: NDArray[np.float32],
    msg: NDArray[np.float32], ext: NDArray[np.float32], mags: NDArray[np.float32],
    newpost: NDArray[np.float32], algorithm: int, scale: np.float32, offset: np.float32,
    k: PhiConstants, acc: NDArray[np.float32], lane: NDArray[np.float32],
    parity: NDArray[np.int32], count: bool,
) -> None:  # pragma: no cover - compiled
    """One layered update of the ``z`` checks of a base check: ``first`` is its first base
    edge, ``syndrome`` its ``z`` syndrome bits. With ``count``, ``parity`` is set to each
    check's parity (1: unsatisfied) just after its update.

    Loops over a whole layer (``degree * z`` contiguous values) where the arithmetic allows,
    since a loop over only ``z`` lanes spends as much on its set-up as on its work.
    """
    zero = np.float32(0.0)
    n = degree * z
    _gather(z, degree, first, layer_col, layer_shift, post2, msg, ext)
    # phi(|t|) (|t| for min-sum), one loop over the layer.
    if algorithm == 0:
        for j in range(n):
            mags[j] = abs(ext[j])
    else:
        for j in range(n):
            mags[j] = phi(abs(ext[j]), k)
    # Per-lane accumulators, in edge order.
    cur = acc[0]
    minus_zero = np.float32(-0.0)
    minus = np.float32(-1.0)  # below any phi
    big = np.float32(np.finfo(np.float32).max)
    for u in range(z):
        cur[_TOTAL, u] = zero
        cur[_NEGATIVE, u] = minus_zero if (syndrome[u] & np.uint8(1)) != 0 else zero
        cur[_X1, u] = big if algorithm == 0 else minus
        cur[_X2, u] = big if algorithm == 0 else minus
        cur[_ARG1, u] = zero
        cur[_ARG2, u] = minus
    for r in range(degree):
        cur = acc[r & 1]
        nxt = acc[(r + 1) & 1]
        er = ext[r * z : r * z + z]
        mg = mags[r * z : r * z + z]
        rf = np.float32(r)
        if algorithm == 2:
            # The two largest phi (weakest inputs), first ones on ties.
            for u in range(z):
                p = mg[u]
                nxt[_TOTAL, u] = cur[_TOTAL, u] + p
                nxt[_NEGATIVE, u] = _xor_sign(cur[_NEGATIVE, u], er[u])
                m1 = cur[_X1, u]
                m2 = cur[_X2, u]
                i1 = cur[_ARG1, u]
                i2 = cur[_ARG2, u]
                above1 = p > m1
                above2 = p > m2
                second = p if above2 else m2
                second_arg = rf if above2 else i2
                nxt[_X2, u] = m1 if above1 else second
                nxt[_ARG2, u] = i1 if above1 else second_arg
                nxt[_X1, u] = p if above1 else m1
                nxt[_ARG1, u] = rf if above1 else i1
        elif algorithm == 1:
            for u in range(z):
                nxt[_TOTAL, u] = cur[_TOTAL, u] + mg[u]
                nxt[_NEGATIVE, u] = _xor_sign(cur[_NEGATIVE, u], er[u])
        else:
            # The two smallest |t|, the first one's edge (first on ties).
            for u in range(z):
                a = mg[u]
                nxt[_NEGATIVE, u] = _xor_sign(cur[_NEGATIVE, u], er[u])
                m1 = cur[_X1, u]
                nxt[_X2, u] = min(cur[_X2, u], max(m1, a))
                nxt[_ARG1, u] = rf if a < m1 else cur[_ARG1, u]
                nxt[_X1, u] = min(m1, a)
    ends = acc[degree & 1]
    if algorithm == 2:
        # Exact messages for the two weakest inputs, the expansion's terms for the rest.
        for u in range(z):
            t = ends[_TOTAL, u]
            lane[_EXACT1, u] = phi(max(t - ends[_X1, u], zero), k)
            lane[_EXACT2, u] = phi(max(t - ends[_X2, u], zero), k)
            lane[_BASE, u] = phi(t, k)
            lane[_COEF1, u], lane[_COEF2, u] = expansion(t, k)
    elif algorithm == 0:
        limit = k[18]
        for u in range(z):
            lane[_COEF1, u] = min(max(scale * ends[_X2, u] - offset, zero), limit)
            lane[_BASE, u] = min(max(scale * ends[_X1, u] - offset, zero), limit)
    # New messages; the new posteriors, each row twice in a row (a shifted block's z of them are
    # then one contiguous run, see the scatter).
    for r in range(degree):
        b = first + r
        er = ext[r * z : r * z + z]
        nr = newpost[2 * r * z : 2 * r * z + 2 * z]
        mg = mags[r * z : r * z + z]
        mo = msg[b * z : b * z + z]
        rf = np.float32(r)
        if algorithm == 2:
            for u in range(z):
                p = mg[u]
                t = er[u]
                approx = lane[_BASE, u] + p * (lane[_COEF1, u] + p * lane[_COEF2, u])
                mag = lane[_EXACT2, u] if ends[_ARG2, u] == rf else approx
                mag = lane[_EXACT1, u] if ends[_ARG1, u] == rf else mag
                value = _with_sign(mag, _xor_sign(ends[_NEGATIVE, u], t))
                mo[u] = value
                v = t + value
                nr[u] = v
                nr[z + u] = v
        elif algorithm == 1:
            for u in range(z):
                t = er[u]
                mag = phi(max(ends[_TOTAL, u] - mg[u], zero), k)
                value = _with_sign(mag, _xor_sign(ends[_NEGATIVE, u], t))
                mo[u] = value
                v = t + value
                nr[u] = v
                nr[z + u] = v
        else:
            for u in range(z):
                t = er[u]
                mag = lane[_COEF1, u] if ends[_ARG1, u] == rf else lane[_BASE, u]
                value = _with_sign(mag, _xor_sign(ends[_NEGATIVE, u], t))
                mo[u] = value
                v = t + value
                nr[u] = v
                nr[z + u] = v
    _scatter(z, degree, first, layer_col, layer_shift, syndrome, newpost, post2, parity, count)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _matches(
    z: int,
    layer_ptr: NDArray[np.int64],
    layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    post2: NDArray[np.float32],
    parity: NDArray[np.int32],
) -> bool:  # pragma: no cover - compiled
    """Whether the hard decisions of the posteriors satisfy every check (stops at the first
    layer that misses)."""
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


@numba.njit(cache=True, nogil=True, inline="always")
def _stall_count(z: int, unsatisfied: NDArray[np.int64], fewest: int, since: int, drop: int
                 ) -> tuple[int, int]:  # pragma: no cover - compiled
    """The stall rule's bookkeeping after an iteration: (unsatisfied checks at the last mark,
    iterations since that mark). A count below the mark by at least ``drop`` per mille of it
    (any count below it for ``drop == 0``) becomes the new mark."""
    count = 0
    for u in range(z):
        count += unsatisfied[u]
    if count < fewest and count * 1000 <= fewest * (1000 - drop):
        return count, 0
    return fewest, since + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _write_out(z: int, post2: NDArray[np.float32], bits_out: NDArray[np.uint8],
               csr_edge: NDArray[np.int64], msg: NDArray[np.float32],
               messages: NDArray[np.float32]) -> None:  # pragma: no cover - compiled
    """The hard decisions (each variable's posterior is the first half of its doubled row)
    and the check messages back in the caller's (CSR) edge order."""
    zero = np.float32(0.0)
    for j in range(bits_out.shape[0] // z):
        for t in range(z):
            bits_out[j * z + t] = np.uint8(1) if post2[2 * z * j + t] < zero else np.uint8(0)
    for e in range(csr_edge.shape[0]):
        messages[csr_edge[e]] = msg[e]


@numba.njit(cache=True, nogil=True, inline="always")
def _start(
    z: int, layer_ptr: NDArray[np.int64], layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], csr_edge: NDArray[np.int64], llr: NDArray[np.float32],
    messages: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32], int]:  # pragma: no cover - compiled
    """The starting state of a decode: (messages in the layer order, doubled posteriors
    ``llr`` plus the messages, largest base check degree)."""
    edges = csr_edge.shape[0]
    msg = np.empty(edges, dtype=np.float32)
    for e in range(edges):
        msg[e] = messages[csr_edge[e]]
    post2, max_degree = _posteriors(z, layer_ptr, layer_col, layer_shift, llr, msg)
    return msg, post2, max_degree


@numba.njit(cache=True, nogil=True, inline="always")
def _posteriors(
    z: int, layer_ptr: NDArray[np.int64], layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], llr: NDArray[np.float32], msg: NDArray[np.float32],
) -> tuple[NDArray[np.float32], int]:  # pragma: no cover - compiled
    """(doubled posteriors ``llr`` plus the messages ``msg`` in layer order, largest base
    check degree)."""
    mb = layer_ptr.shape[0] - 1
    nb = llr.shape[0] // z
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
    return post2, max_degree


@numba.njit(cache=True, nogil=True, error_model="numpy")
def qc_kernel(
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
    messages: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """Layered BP on a QC code, ``z`` checks at once; ``messages`` (check-major) in place.

    Base edge ``b`` (of base check ``i``, base variable ``j``, shift ``s``) has the ``z``
    message slots ``msg[b * z + u]`` of the layer order, one per lifted check ``i * z + u``,
    whose variable is ``j * z + (u - s) mod z``; ``csr_edge`` maps them to the check-major
    order of ``messages``. Posteriors are kept *doubled*: block ``j`` is stored twice in a row
    (``post2[2 z j : 2 z (j + 1)]``), so the ``z`` posteriors a layer reads through shift ``s``
    are the one contiguous run ``post2[2 z j + z - s :][:z]``. Returns
    ``(iterations, converged)``.
    """
    mb = layer_ptr.shape[0] - 1
    msg, post2, max_degree = _start(z, layer_ptr, layer_col, layer_shift, csr_edge, llr, messages)
    ext = np.empty(max_degree * z, dtype=np.float32)
    mags = np.empty(max_degree * z, dtype=np.float32)
    newpost = np.empty(2 * max_degree * z, dtype=np.float32)
    acc = np.empty((2, ACC_ROWS, z), dtype=np.float32)
    lane = np.empty((LANE_ROWS, z), dtype=np.float32)
    parity = np.empty(z, dtype=np.int32)
    unsatisfied = np.empty(z, dtype=np.int64)
    counting = stall > 0  # the stall rule needs the unsatisfied checks of each iteration
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
            _layer(z, degree, first, layer_col, layer_shift, syndrome[i * z : i * z + z], post2,
                   msg, ext, mags, newpost, algorithm, scale, offset, k, acc, lane, parity,
                   counting)
            if counting:
                for u in range(z):
                    unsatisfied[u] += parity[u]
        iterations += 1
        converged = _matches(z, layer_ptr, layer_col, layer_shift, syndrome, post2, parity)
        fewest, since = _stall_count(z, unsatisfied, fewest, since, drop)
        if stall > 0 and since >= stall:
            break
    _write_out(z, post2, bits_out, csr_edge, msg, messages)
    return iterations, converged


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def qc_batch_kernel(
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
    msgs: NDArray[np.float32],
    bits_out: NDArray[np.uint8],
    converged_out: NDArray[np.bool_],
    iterations_out: NDArray[np.int32],
) -> None:  # pragma: no cover - compiled
    """:func:`qc_kernel` on each row, the rows spread over all cores."""
    for f in numba.prange(syndromes.shape[0]):
        iterations, converged = qc_kernel(
            z, layer_ptr, layer_col, layer_shift, csr_edge, syndromes[f], llrs[f], max_iterations,
            stall, drop, algorithm, scale, offset, k, msgs[f], bits_out[f],
        )
        iterations_out[f] = iterations
        converged_out[f] = converged
