"""Numba kernels of the simulated bench, each with a plain-Python or numpy twin.

The kernels draw their random numbers from an explicit xoshiro256** state (:func:`next_u64`,
twin :class:`~qkdnode.drivers.sim.prng.PyXoshiro`), advanced in place, so a kernel and its twin
started from copies of one state return the same outputs (hypothesis checks it in
``tests/drivers/test_sim_kernels.py``). Times are float64 picoseconds relative to the caller's
batch origin until :func:`tagger_times` turns them into int64 picoseconds on Bob's clock.
Large outputs go to arrays the caller allocates with numpy, which puts them on huge pages
(numba's runtime does not, and faults on fresh 4 KiB pages cost as much as a kernel's work).

Kernels:
    :func:`photon_clicks`: slots where any detector clicks, at geometric gaps (rate
        ``p_max``), each kept with the probability ``accept[type]`` of its frame position, the
        clicking detectors drawn from the type's click patterns, timed with Gaussian jitter: a
        Bernoulli process per detector whose per-slot probability follows the loaded frame, at
        a cost proportional to the events.
    :func:`dead_time_scan`: one detector's clicks in time order: non-paralysable dead time,
        afterpulses (each click, afterpulses included, afterpulses with probability ``p_ap``
        after the dead time plus an exponential delay), stopping at a cut time.
    :func:`tagger_times`: Bob's clock (offset and drift), the tagger's jitter, quantisation.
    :func:`merge_streams`: runs of tags (detectors, sync, held) merged into time order.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from .prng import PyXoshiro, ZigguratTables

__all__ = [
    "dead_time_scan",
    "dead_time_scan_reference",
    "merge_streams",
    "merge_streams_reference",
    "next_exponential",
    "next_normal",
    "next_u64",
    "next_uniform",
    "photon_clicks",
    "photon_clicks_reference",
    "tagger_times",
    "tagger_times_reference",
]


# -- xoshiro256** (twin: prng.PyXoshiro) ------------------------------------------------


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
def next_exponential(s: NDArray[np.uint64], k: NDArray[np.uint64], w: NDArray[np.float64],
                     f: NDArray[np.float64], r: float) -> float:
    """Standard exponential by the ziggurat (tables from
    :func:`~qkdnode.drivers.sim.prng.exponential_tables`, ``r`` their base): one 64-bit draw
    and a table lookup in 99 % of cases, no logarithm. Layer index from the low 8 bits, the
    32-bit abscissa from the high half, so the two are independent."""
    while True:
        x = next_u64(s)
        i = np.int64(x & np.uint64(0xFF))
        j = x >> np.uint64(32)
        if j < k[i]:
            return float(j) * float(w[i])
        if i == 0:
            return r - math.log(1.0 - next_uniform(s))
        y = float(j) * float(w[i])
        if f[i] + next_uniform(s) * (f[i - 1] - f[i]) < math.exp(-y):
            return y


@njit(cache=True, nogil=True, inline="always")
def next_normal(s: NDArray[np.uint64], k: NDArray[np.uint64], w: NDArray[np.float64],
                f: NDArray[np.float64], r: float) -> float:
    """Standard normal by the ziggurat (tables from
    :func:`~qkdnode.drivers.sim.prng.normal_tables`, ``r`` their base): layer from bits 0-7,
    sign from bit 8, the 32-bit abscissa from the high half; the tail beyond r by Marsaglia's
    method (two exponentials a, b, accepted when ``2 b > a^2``).

    One loop with a tail flag, not a nested loop: numba compiled the nested form four times
    slower on the common path (measured).
    """
    neg = False
    tail = False
    while True:
        if tail:
            a = -math.log(1.0 - next_uniform(s)) / r
            b = -math.log(1.0 - next_uniform(s))
            if b + b > a * a:
                return -(r + a) if neg else r + a
            continue
        x = next_u64(s)
        i = np.int64(x & np.uint64(0xFF))
        j = x >> np.uint64(32)
        neg = ((x >> np.uint64(8)) & np.uint64(1)) != 0
        y = float(j) * float(w[i])
        if j < k[i]:
            return -y if neg else y
        if i == 0:
            tail = True
        elif f[i] + next_uniform(s) * (f[i - 1] - f[i]) < math.exp(-0.5 * y * y):
            return -y if neg else y




# -- kernels --------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def photon_clicks(
    state: NDArray[np.uint64],
    pos: int,
    end: int,
    log1m_pmax: float,
    frame_types: NDArray[np.uint8],
    accept: NDArray[np.float64],
    pattern_cum: NDArray[np.float64],
    pattern_mask: NDArray[np.uint8],
    t_ref: NDArray[np.float64],
    sigma: NDArray[np.float64],
    period: float,
    clip: float,
    out_s: NDArray[np.int64],
    out_t: NDArray[np.float64],
    zig: ZigguratTables,
) -> tuple[NDArray[np.int64], int, bool]:
    """Photon clicks of all detectors in slots (pos, end), per detector in slot order.

    Slots where at least one detector clicks are drawn together: a candidate lies
    ``1 + floor(E / -log(1 - p_max))`` slots after the previous one, E a standard exponential
    (:func:`next_exponential`): the floor of an exponential of rate lambda is geometric with
    success probability ``1 - exp(-lambda)``. ``p_max`` is the largest any-click probability
    of the frame's types; a candidate is kept when a uniform u is below ``a = accept[type]``
    (its own any-click probability over p_max). Given u < a, u / a is uniform: the same u
    picks which detectors click, from the type's click patterns given at least one click:
    ``pattern_mask[type, i]`` (bit j: detector j) with cumulative probabilities
    ``pattern_cum[type, i]`` (the last above 1), pattern i being the first with
    ``u < a * pattern_cum[type, i]``. Detector j clicks at
    ``(s - pos) * period + t_ref[j] + sigma[j] * z``, z a standard normal
    (:func:`next_normal`) clipped to +-clip (none drawn when sigma[j] is 0); the detectors of
    one slot draw in increasing order.

    Args:
        state: xoshiro256** state, advanced in place.
        pos: the last slot already covered; also the reference of the times.
        end: one past the last slot to cover.
        log1m_pmax: ``log1p(-p_max)``, negative.
        frame_types: type index of each frame position; L = its length.
        accept: per type, any-click probability / p_max.
        pattern_cum: (types, patterns) cumulative conditional probabilities.
        pattern_mask: (types, patterns) detector bit masks (at most 8 detectors).
        t_ref: per detector, the click time of slot ``pos`` without jitter.
        sigma: per detector, RMS jitter.
        period: slot period.
        clip: jitter bound in sigmas.
        out_s, out_t: (detectors, capacity) buffers the clicks' slots and times are written to;
            the call returns when a detector's row is full.
        zig: the ziggurats' tables (:func:`~qkdnode.drivers.sim.prng.ziggurat_tables`).

    Returns:
        (clicks per detector, the last slot covered, whether ``end`` was reached). Detector j's
        clicks are ``out_s[j, :n[j]]``. When not finished, call again from the returned slot
        (with its times as ``t_ref``).
    """
    n_det = t_ref.shape[0]
    max_out = out_s.shape[1]
    ek, ew, ef, nk, nw, nf = zig
    # The ziggurats' bases: their last layer's width times 2^32 (exact: a power of two).
    er = ew[ew.shape[0] - 1] * 4294967296.0
    nr = nw[nw.shape[0] - 1] * 4294967296.0
    n_types, n_pat = pattern_cum.shape
    n_guide = 64  # guide buckets per type: 12 x 64 starts, built per call in microseconds
    # Guide table: where the pattern search may start for u in each 1/n_guide of
    # [0, accept): one bucket of slack, so the start is never past the answer; the search
    # then usually ends at once instead of stepping through the patterns (a mispredicted
    # branch per step: which pattern clicks is close to a coin flip).
    guide = np.zeros((n_types, n_guide), dtype=np.int64)
    scale = np.zeros(n_types, dtype=np.float64)
    for typ in range(n_types):
        a = accept[typ]
        if a > 0.0:
            scale[typ] = n_guide / a
        for b in range(1, n_guide):
            lo = (b - 1) * a / n_guide
            i = 0
            while i < n_pat - 1 and a * pattern_cum[typ, i] <= lo:
                i += 1
            guide[typ, b] = i
    counts = np.zeros(n_det, dtype=np.int64)
    start = np.int64(pos)
    cur = np.int64(pos)
    frame_len = np.int64(frame_types.shape[0])
    inv_rate = -1.0 / log1m_pmax
    span = np.float64(end - cur)
    # Frame position tracked incrementally: a division only when a gap spans whole frames.
    fpos = cur % frame_len
    full = max_out == 0
    while not full:
        e = next_exponential(state, ek, ew, ef, er)
        gap_f = math.floor(e * inv_rate) + 1.0
        if gap_f >= span:
            return counts, int(end) - 1, True
        gap = np.int64(gap_f)
        cur += gap
        span -= gap_f
        fpos += gap
        if fpos >= frame_len:
            fpos -= frame_len
            if fpos >= frame_len:
                fpos = fpos % frame_len
        typ = frame_types[fpos]
        a = accept[typ]
        u = next_uniform(state)
        if u >= a:
            continue
        i = int(guide[typ, min(n_guide - 1, int(u * scale[typ]))])
        while i < n_pat - 1 and u >= a * pattern_cum[typ, i]:
            i += 1
        mask = np.int64(pattern_mask[typ, i])
        t_slot = np.float64(cur - start) * period
        # Set bits from the lowest: usually one, so no unpredictable branch per detector;
        # the bit's index by comparisons rather than a loop, for the same reason.
        while mask != 0:
            low = mask & -mask
            mask ^= low
            j = (np.int64(low > 1) + np.int64(low > 2) + np.int64(low > 4) + np.int64(low > 8)
                 + np.int64(low > 16) + np.int64(low > 32) + np.int64(low > 64))
            t = t_slot + t_ref[j]
            sg = sigma[j]
            if sg > 0.0:
                t += sg * min(clip, max(-clip, next_normal(state, nk, nw, nf, nr)))
            c = counts[j]
            out_s[j, c] = cur
            out_t[j, c] = t
            counts[j] = c + 1
            if c + 1 == max_out:
                full = True
    return counts, int(cur), False


def photon_clicks_reference(
    rng: PyXoshiro,
    pos: int,
    end: int,
    log1m_pmax: float,
    frame_types: NDArray[np.uint8],
    accept: NDArray[np.float64],
    pattern_cum: NDArray[np.float64],
    pattern_mask: NDArray[np.uint8],
    t_ref: NDArray[np.float64],
    sigma: NDArray[np.float64],
    period: float,
    clip: float,
    max_out: int,
    zig: ZigguratTables,
) -> tuple[list[list[int]], list[list[float]], int, bool]:
    """Plain-Python twin of :func:`photon_clicks` (capacity ``max_out`` per detector): per
    detector, lists of slots and times."""
    n_det = len(t_ref)
    slots: list[list[int]] = [[] for _ in range(n_det)]
    times: list[list[float]] = [[] for _ in range(n_det)]
    start = pos
    inv_rate = -1.0 / log1m_pmax
    while max((len(x) for x in slots), default=0) < max_out:
        gap = math.floor(rng.exponential(zig.exp_k, zig.exp_w, zig.exp_f) * inv_rate) + 1.0
        if gap >= end - pos:
            return slots, times, end - 1, True
        pos += int(gap)
        typ = int(frame_types[pos % len(frame_types)])
        a = float(accept[typ])
        u = rng.uniform()
        if u >= a:
            continue
        i = next((k for k in range(pattern_cum.shape[1] - 1) if u < a * pattern_cum[typ, k]),
                 pattern_cum.shape[1] - 1)
        for j in range(n_det):
            if (int(pattern_mask[typ, i]) >> j) & 1:
                t = float(pos - start) * period + float(t_ref[j])
                if sigma[j] > 0.0:
                    z = rng.normal(zig.norm_k, zig.norm_w, zig.norm_f)
                    t += float(sigma[j]) * min(clip, max(-clip, z))
                slots[j].append(pos)
                times[j].append(t)
    return slots, times, pos, False


@njit(cache=True, nogil=True)
def _grow(a: NDArray[np.generic], n: int) -> NDArray[np.generic]:
    """A copy of ``a`` with room for at least n elements (doubling: amortised O(1) appends).
    Exercised through :func:`dead_time_scan` and its twin (long afterpulse cascades)."""
    out = np.empty(max(2 * a.shape[0], n), dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _scan_run(
    a_t: NDArray[np.float64], a_kind: NDArray[np.uint8], a_slot: NDArray[np.int64],
    b_t: NDArray[np.float64], b_kind: NDArray[np.uint8], b_slot: NDArray[np.int64],
    heap_t: NDArray[np.float64], head: int, tail: int, i: int, j: int, k: int,
    out_t: NDArray[np.float64], out_kind: NDArray[np.uint8], out_slot: NDArray[np.int64],
    last_click: float, t_cut: float, dead: float, p_ap: float, tau_ap: float,
    state: NDArray[np.uint64], ap_kind: int,
) -> tuple[int, int, int, int, int, float, int]:
    """The hot loop of :func:`dead_time_scan`, from stream positions (i, j, queue head:tail,
    clicks k) until it is done or needs its caller (room, or a queue insertion). Growing and
    inserting happen in the caller: with them inside, numba compiled this loop twice as slow
    (measured).

    Returns:
        (i, j, k, head, tail, last click, status): status 0 when the next event is at or after
        t_cut (or there is none), 1 when there is no room for another click, 2 when there is
        no room for another afterpulse, 3 when the afterpulse just queued is earlier than the
        one queued before it (the caller inserts it in order).
    """
    na = a_t.shape[0]
    nb = b_t.shape[0]
    cap_out = out_t.shape[0]
    cap_queue = heap_t.shape[0]
    inf = np.inf
    status = 0
    while True:
        ta = a_t[i] if i < na else inf
        tb = b_t[j] if j < nb else inf
        th = heap_t[head] if head < tail else inf
        if ta <= tb and ta <= th:
            t = ta
            src = 0
        elif tb <= th:
            t = tb
            src = 1
        else:
            t = th
            src = 2
        if t >= t_cut:  # also ends the loop when every stream is exhausted (t = inf)
            break
        if k == cap_out:
            status = 1
            break
        if tail == cap_queue:
            status = 2
            break
        if src == 0:
            kind = a_kind[i]
            slot = a_slot[i]
            i += 1
        elif src == 1:
            kind = b_kind[j]
            slot = b_slot[j]
            j += 1
        else:
            kind = np.uint8(ap_kind)
            slot = np.int64(-1)
            head += 1
        if t - last_click < dead:
            continue
        last_click = t
        out_t[k] = t
        out_kind[k] = kind
        out_slot[k] = slot
        k += 1
        u = next_uniform(state)
        if u < p_ap:
            t_ap = t + dead + tau_ap * -math.log1p(-u / p_ap)
            heap_t[tail] = t_ap
            tail += 1
            if tail - head > 1 and heap_t[tail - 2] > t_ap:
                status = 3
                break
    return i, j, k, head, tail, last_click, status


@njit(cache=True, nogil=True)
def dead_time_scan(
    a_t: NDArray[np.float64],
    a_kind: NDArray[np.uint8],
    a_slot: NDArray[np.int64],
    b_t: NDArray[np.float64],
    b_kind: NDArray[np.uint8],
    b_slot: NDArray[np.int64],
    pending: NDArray[np.float64],
    last_click: float,
    t_cut: float,
    dead: float,
    p_ap: float,
    tau_ap: float,
    state: NDArray[np.uint64],
    ap_kind: int,
    out_t: NDArray[np.float64],
    out_kind: NDArray[np.uint8],
    out_slot: NDArray[np.int64],
) -> tuple[
    NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64], int, int, NDArray[np.float64],
    float,
]:
    """One detector's clicks before ``t_cut``, in time order.

    Events are two sorted streams of primaries (a: photons, b: dark counts and carried
    events; on equal times a comes first) and the pending afterpulses (sorted; afterpulses
    come after primaries at equal times). An event at t becomes a click if
    ``t - last_click >= dead`` (non-paralysable: ignored events do not extend the dead time).
    Each click draws one uniform u; if ``u < p_ap`` it afterpulses at
    ``t + dead + tau_ap * (-log(1 - u / p_ap))`` (given u < p_ap, u / p_ap is uniform, so one
    uniform decides and delays).

    Args:
        a_t, a_kind, a_slot: first stream's times, origins and slots (-1: none).
        b_t, b_kind, b_slot: second stream.
        pending: afterpulse times carried from the previous batch, sorted.
        last_click: time of the detector's last click (-inf if none).
        t_cut: events at or after it are left for the next batch.
        dead: dead time.
        p_ap: afterpulse probability per click.
        tau_ap: afterpulse delay time constant (after the dead time).
        state: xoshiro256** state, advanced in place.
        ap_kind: origin code given to afterpulse clicks.
        out_t, out_kind, out_slot: buffers the clicks are written to (the caller's: numpy
            allocates large arrays on huge pages, numba's runtime does not, and page faults
            on fresh 4 KiB pages cost more than the scan); when an afterpulse cascade fills
            them, the clicks continue in grown copies.

    Returns:
        (click times, origins, slots (views of the buffers or of their grown copies), first
        unconsumed index of a, of b, pending afterpulses at or after ``t_cut`` (sorted), last
        click time).
    """
    # Sorted queue in heap_t[head:tail]; each click adds at most one afterpulse.
    # The buffers, or their grown copies (the same dtypes: _grow keeps them).
    buf_t: NDArray[Any] = out_t
    buf_kind: NDArray[Any] = out_kind
    buf_slot: NDArray[Any] = out_slot
    heap_t: NDArray[Any] = np.empty(pending.shape[0] + 16, dtype=np.float64)
    tail = pending.shape[0]
    heap_t[:tail] = pending
    head = 0
    i = j = k = 0
    while True:
        i, j, k, head, tail, last_click, status = _scan_run(
            a_t, a_kind, a_slot, b_t, b_kind, b_slot, heap_t, head, tail, i, j, k,
            buf_t, buf_kind, buf_slot, last_click, t_cut, dead, p_ap, tau_ap, state, ap_kind)
        if status == 0:
            break
        if status == 3:
            # The afterpulse just appended is earlier than the one before it: insert it.
            q = tail - 1
            t_ap = heap_t[q]
            while q > head and heap_t[q - 1] > t_ap:
                heap_t[q] = heap_t[q - 1]
                q -= 1
            heap_t[q] = t_ap
        elif status == 1:
            buf_t = _grow(buf_t, k + 1)
            buf_kind = _grow(buf_kind, k + 1)
            buf_slot = _grow(buf_slot, k + 1)
        else:
            # Compact the consumed head first; grow only if the queue is really full.
            live = tail - head
            if head > 0:
                heap_t[:live] = heap_t[head:tail].copy()
                head, tail = 0, live
            if tail == heap_t.shape[0]:
                heap_t = _grow(heap_t, tail + 1)
    return (buf_t[:k], buf_kind[:k], buf_slot[:k], i, j, heap_t[head:tail].copy(),
            float(last_click))


def dead_time_scan_reference(
    a_t: NDArray[np.float64],
    a_kind: NDArray[np.uint8],
    a_slot: NDArray[np.int64],
    b_t: NDArray[np.float64],
    b_kind: NDArray[np.uint8],
    b_slot: NDArray[np.int64],
    pending: NDArray[np.float64],
    last_click: float,
    t_cut: float,
    dead: float,
    p_ap: float,
    tau_ap: float,
    rng: PyXoshiro,
    ap_kind: int,
) -> tuple[
    NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64], int, int, NDArray[np.float64],
    float,
]:
    """Plain-Python twin of :func:`dead_time_scan` (a heap instead of a sorted array)."""
    queue = [float(x) for x in pending]
    heapq.heapify(queue)
    times: list[float] = []
    kinds: list[int] = []
    slots: list[int] = []
    i = j = 0
    while True:
        ta = float(a_t[i]) if i < len(a_t) else math.inf
        tb = float(b_t[j]) if j < len(b_t) else math.inf
        th = queue[0] if queue else math.inf
        t = min(ta, tb, th)
        if t >= t_cut:
            break
        if ta == t:
            kind, slot = int(a_kind[i]), int(a_slot[i])
            i += 1
        elif tb == t:
            kind, slot = int(b_kind[j]), int(b_slot[j])
            j += 1
        else:
            heapq.heappop(queue)
            kind, slot = ap_kind, -1
        if t - last_click < dead:
            continue
        last_click = t
        times.append(t)
        kinds.append(kind)
        slots.append(slot)
        u = rng.uniform()
        if u < p_ap:
            heapq.heappush(queue, t + dead + tau_ap * -math.log1p(-u / p_ap))
    return (np.array(times, dtype=np.float64), np.array(kinds, dtype=np.uint8),
            np.array(slots, dtype=np.int64), i, j, np.array(sorted(queue), dtype=np.float64),
            last_click)


@njit(cache=True, nogil=True)
def tagger_times(
    rel_t: NDArray[np.float64],
    state: NDArray[np.uint64],
    sigma: float,
    clip: float,
    scale: float,
    base_frac: float,
    base_bins: int,
    resolution: int,
    zig: ZigguratTables,
    out: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Tags on Bob's clock: ``resolution * (base_bins + floor(x / resolution))``.

    ``x = base_frac + rel_t * scale + sigma * z``: the caller has split Bob's reading of the batch
    origin into ``base_bins * resolution + base_frac`` (``0 <= base_frac < resolution``), so
    that the float part stays small whatever the absolute time; ``scale = 1 + drift``; ``z``
    are standard normals clipped to +-clip (the tagger's own jitter, RMS ``sigma``; none drawn
    when sigma is 0). The tags are written to ``out`` (at least as long as ``rel_t``); the
    result is its first ``len(rel_t)`` entries.
    """
    n = rel_t.shape[0]
    res_f = np.float64(resolution)
    nk, nw, nf = zig[3], zig[4], zig[5]
    nr = nw[nw.shape[0] - 1] * 4294967296.0  # the base: last layer's width times 2^32
    for i in range(n):
        x = base_frac + rel_t[i] * scale
        if sigma > 0.0:
            x += sigma * min(clip, max(-clip, next_normal(state, nk, nw, nf, nr)))
        out[i] = (base_bins + np.int64(math.floor(x / res_f))) * resolution
    return out[:n]


def tagger_times_reference(
    rel_t: NDArray[np.float64],
    rng: PyXoshiro,
    sigma: float,
    clip: float,
    scale: float,
    base_frac: float,
    base_bins: int,
    resolution: int,
    zig: ZigguratTables,
) -> NDArray[np.int64]:
    """numpy twin of :func:`tagger_times` (normals from the Python generator)."""
    z = (np.array([rng.normal(zig.norm_k, zig.norm_w, zig.norm_f)
                   for _ in range(rel_t.shape[0])]) if sigma > 0 else 0.0)
    x = base_frac + rel_t * scale + sigma * np.clip(z, -clip, clip)
    return (base_bins + np.floor(x / float(resolution)).astype(np.int64)) * resolution



@njit(cache=True, nogil=True)
def merge_streams(
    ts: NDArray[np.int64],
    dets: NDArray[np.int8],
    slots: NDArray[np.int64],
    origins: NDArray[np.uint8],
    bounds: NDArray[np.int64],
    channel_map: NDArray[np.int16],
    out_t: NDArray[np.int64],
    out_ch: NDArray[np.int16],
    out_det: NDArray[np.int8],
    out_slot: NDArray[np.int64],
    out_origin: NDArray[np.uint8],
) -> None:
    """Merges runs of tags into time order: (times, channels, detectors, slots, origins).

    The runs are concatenated: run r is ``ts[bounds[r]:bounds[r + 1]]`` with the same slices
    of ``dets``, ``slots``, ``origins``; ties go to the earlier run (what a stable sort of the
    concatenation gives). Sorted runs (the usual case: one detector's tags) are merged in one
    pass, the earliest head found with selects rather than branches (which run is next is a
    coin flip when detectors interleave); if any run is not sorted, or holds the largest
    int64 (the exhausted runs' sentinel), a stable sort is used. The channel of detector d is
    ``channel_map[d + 1]``.

    The results go to ``out_*``, as long as ``ts``: the caller allocates them and the
    concatenations (numpy puts large arrays on huge pages, numba's runtime does not; with
    4 KiB pages the page faults cost as much as the merge, and a tuple of runs indexed by a
    run number costs a jump table per access: both measured).
    """
    n = ts.shape[0]
    n_runs = bounds.shape[0] - 1
    if bounds[0] != 0 or bounds[n_runs] != n:
        raise ValueError("merge_streams: bounds must run from 0 to the number of tags")
    for r in range(n_runs):
        if bounds[r + 1] < bounds[r]:
            raise ValueError("merge_streams: bounds must not decrease")
    for x in (out_t.shape[0], out_ch.shape[0], out_det.shape[0], out_slot.shape[0],
              out_origin.shape[0], dets.shape[0], slots.shape[0], origins.shape[0]):
        if x != n:
            raise ValueError("merge_streams: every array must be as long as ts")
    big = np.iinfo(np.int64).max
    runs_sorted = True
    for r in range(n_runs):
        lo, hi = bounds[r], bounds[r + 1]
        for i in range(lo + 1, hi):
            if ts[i] < ts[i - 1]:
                runs_sorted = False
        if hi > lo and ts[hi - 1] == big:
            runs_sorted = False
    if not runs_sorted:
        order = np.argsort(ts, kind="mergesort")
        for k in range(n):
            q = order[k]
            out_t[k] = ts[q]
            d = dets[q]
            out_det[k] = d
            out_ch[k] = channel_map[d + 1]
            out_slot[k] = slots[q]
            out_origin[k] = origins[q]
        return
    pos = bounds[:n_runs].copy()
    ends = bounds[1:].copy()
    head_t = np.empty(n_runs, dtype=np.int64)
    for r in range(n_runs):
        head_t[r] = ts[pos[r]] if pos[r] < ends[r] else big
    for k in range(n):
        best = 0
        best_t = head_t[0]
        for r in range(1, n_runs):
            tr_head = head_t[r]
            earlier = tr_head < best_t
            best = r if earlier else best
            best_t = tr_head if earlier else best_t
        q = pos[best]
        pos[best] = q + 1
        head_t[best] = ts[q + 1] if q + 1 < ends[best] else big
        out_t[k] = best_t
        d = dets[q]
        out_det[k] = d
        out_ch[k] = channel_map[d + 1]
        out_slot[k] = slots[q]
        out_origin[k] = origins[q]


def merge_streams_reference(
    ts: NDArray[np.int64],
    dets: NDArray[np.int8],
    slots: NDArray[np.int64],
    origins: NDArray[np.uint8],
    bounds: NDArray[np.int64],
    channel_map: NDArray[np.int16],
) -> tuple[NDArray[np.int64], NDArray[np.int16], NDArray[np.int8], NDArray[np.int64],
           NDArray[np.uint8]]:
    """numpy twin of :func:`merge_streams` (runs as in the kernel; returns the five arrays)."""
    assert bounds[0] == 0
    assert bounds[-1] == ts.shape[0]
    order = np.argsort(ts, kind="stable")
    det = dets[order]
    return (ts[order], channel_map[det.astype(np.int64) + 1], det, slots[order],
            origins[order])
