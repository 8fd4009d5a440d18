"""Numba kernels of the simulated bench, each with a plain-Python or numpy twin.

The kernels take their random numbers as arrays (drawn by the caller's seeded
``numpy.random.Generator``), so a kernel and its twin given the same inputs return the same
outputs; ``tests/drivers/test_sim_kernels.py`` checks that with hypothesis. Times are float64
picoseconds relative to the caller's batch origin until :func:`tagger_times` turns them into
int64 picoseconds on Bob's clock.

Kernels:
    :func:`thin_geometric`: candidate slots at geometric gaps (rate ``p_max``), each kept with
        the probability ``accept[type]`` of its frame position: a Bernoulli process whose
        per-slot probability follows the loaded frame, at a cost proportional to the events.
    :func:`dead_time_scan`: one detector's clicks in time order: non-paralysable dead time,
        afterpulses (each click, afterpulses included, afterpulses with probability ``p_ap``
        after the dead time plus an exponential delay), stopping at a cut time.
    :func:`tagger_times`: Bob's clock (offset and drift), the tagger's jitter, quantisation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = [
    "dead_time_scan",
    "dead_time_scan_reference",
    "tagger_times",
    "tagger_times_reference",
    "thin_geometric",
    "thin_geometric_reference",
]


@njit(cache=True, nogil=True)
def thin_geometric(
    pos: int,
    end: int,
    u_gap: NDArray[np.float64],
    u_acc: NDArray[np.float64],
    log1m_pmax: float,
    frame_types: NDArray[np.uint8],
    accept: NDArray[np.float64],
) -> tuple[NDArray[np.int64], int, bool]:
    """Slots in (pos, end) of a Bernoulli process with per-slot probability p_max * accept.

    Candidate i lies ``1 + floor(log(1 - u_gap[i]) * (1 / log(1 - p_max)))`` slots after the
    previous one (geometric gaps; ``log`` rather than ``log1p``, several times slower in libm,
    loses nothing that matters at these p); it is kept when
    ``u_acc[i] < accept[frame_types[slot % L]]``.

    Args:
        pos: the last slot already covered (the first candidate is after it).
        end: one past the last slot to cover.
        u_gap: uniforms in [0, 1), one per candidate.
        u_acc: uniforms in [0, 1), one per candidate.
        log1m_pmax: ``log1p(-p_max)``, negative.
        frame_types: type index (into ``accept``) of each frame position; L = its length.
        accept: acceptance probability of each type, ``p_type / p_max``.

    Returns:
        (kept slots, the last slot covered, whether ``end`` was reached before the uniforms
        ran out). When not finished, call again from the returned slot with fresh uniforms.
    """
    n = u_gap.shape[0]
    out = np.empty(n, dtype=np.int64)
    cur = np.int64(pos)
    frame_len = np.int64(frame_types.shape[0])
    inv_log = 1.0 / log1m_pmax
    span = np.float64(end - cur)
    # Frame position tracked incrementally: a division only when a gap spans whole frames.
    fpos = cur % frame_len
    k = 0
    for i in range(n):
        gap_f = math.floor(math.log(1.0 - u_gap[i]) * inv_log) + 1.0
        if gap_f >= span:
            return out[:k], int(end) - 1, True
        gap = np.int64(gap_f)
        cur += gap
        span -= gap_f
        fpos += gap
        if fpos >= frame_len:
            fpos -= frame_len
            if fpos >= frame_len:
                fpos = fpos % frame_len
        if u_acc[i] < accept[frame_types[fpos]]:
            out[k] = cur
            k += 1
    return out[:k], int(cur), False


def thin_geometric_reference(
    pos: int,
    end: int,
    u_gap: NDArray[np.float64],
    u_acc: NDArray[np.float64],
    log1m_pmax: float,
    frame_types: NDArray[np.uint8],
    accept: NDArray[np.float64],
) -> tuple[NDArray[np.int64], int, bool]:
    """Plain-Python twin of :func:`thin_geometric`."""
    out: list[int] = []
    inv_log = 1.0 / log1m_pmax
    for ug, ua in zip(u_gap.tolist(), u_acc.tolist(), strict=True):
        gap = math.floor(math.log(1.0 - ug) * inv_log) + 1.0
        if gap >= end - pos:
            return np.array(out, dtype=np.int64), end - 1, True
        pos += int(gap)
        if ua < accept[frame_types[pos % len(frame_types)]]:
            out.append(pos)
    return np.array(out, dtype=np.int64), pos, False


@njit(cache=True, nogil=True)
def dead_time_scan(
    prim_t: NDArray[np.float64],
    prim_kind: NDArray[np.uint8],
    prim_slot: NDArray[np.int64],
    pending: NDArray[np.float64],
    last_click: float,
    t_cut: float,
    dead: float,
    p_ap: float,
    tau_ap: float,
    ap_u: NDArray[np.float64],
    ap_kind: int,
) -> tuple[
    NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64], int, NDArray[np.float64],
    float, bool,
]:
    """One detector's clicks before ``t_cut``, in time order.

    Events are the primaries (photon and dark clicks, sorted by time) and the pending
    afterpulses (sorted). An event at t becomes a click if ``t - last_click >= dead``
    (non-paralysable: ignored events do not extend the dead time). Click number j afterpulses
    when ``ap_u[j] < p_ap``, at ``t + dead + tau_ap * (-log(1 - ap_u[j] / p_ap))`` (given
    u < p_ap, u / p_ap is uniform, so one uniform decides and delays).

    Args:
        prim_t, prim_kind, prim_slot: primaries' times, origins and slots (-1: none).
        pending: afterpulse times carried from the previous batch, sorted.
        last_click: time of the detector's last click (-inf if none).
        t_cut: events at or after it are left for the next batch.
        dead: dead time.
        p_ap: afterpulse probability per click.
        tau_ap: afterpulse delay time constant (after the dead time).
        ap_u: uniforms in [0, 1), one per click.
        ap_kind: origin code given to afterpulse clicks.

    Returns:
        (click times, origins, slots, index of the first primary not consumed, pending
        afterpulses at or after ``t_cut`` (sorted), last click time, ok). ``ok`` is False when
        ``ap_u`` ran out; call again with a longer ``ap_u`` (same prefix) for the same result.
    """
    n_prim = prim_t.shape[0]
    n_u = ap_u.shape[0]
    out_t = np.empty(n_u, dtype=np.float64)
    out_kind = np.empty(n_u, dtype=np.uint8)
    out_slot = np.empty(n_u, dtype=np.int64)
    # Sorted queue in heap_t[head:tail]; each click adds at most one afterpulse.
    heap_t = np.empty(pending.shape[0] + n_u, dtype=np.float64)
    tail = pending.shape[0]
    heap_t[:tail] = pending
    head = 0
    i = 0
    k = 0
    while True:
        from_prim = i < n_prim and (head == tail or prim_t[i] <= heap_t[head])
        if from_prim:
            t = prim_t[i]
        elif head < tail:
            t = heap_t[head]
        else:
            break
        if t >= t_cut:
            break
        if from_prim:
            kind = prim_kind[i]
            slot = prim_slot[i]
            i += 1
        else:
            kind = ap_kind
            slot = np.int64(-1)
            head += 1
        if t - last_click < dead:
            continue
        if k == n_u:
            return (out_t[:k], out_kind[:k], out_slot[:k], i, heap_t[head:tail].copy(),
                    last_click, False)
        last_click = t
        out_t[k] = t
        out_kind[k] = kind
        out_slot[k] = slot
        u = ap_u[k]
        k += 1
        if u < p_ap:
            t_ap = t + dead + tau_ap * -math.log1p(-u / p_ap)
            j = tail
            while j > head and heap_t[j - 1] > t_ap:
                heap_t[j] = heap_t[j - 1]
                j -= 1
            heap_t[j] = t_ap
            tail += 1
    return out_t[:k], out_kind[:k], out_slot[:k], i, heap_t[head:tail].copy(), last_click, True


def dead_time_scan_reference(
    prim_t: NDArray[np.float64],
    prim_kind: NDArray[np.uint8],
    prim_slot: NDArray[np.int64],
    pending: NDArray[np.float64],
    last_click: float,
    t_cut: float,
    dead: float,
    p_ap: float,
    tau_ap: float,
    ap_u: NDArray[np.float64],
    ap_kind: int,
) -> tuple[
    NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64], int, NDArray[np.float64],
    float, bool,
]:
    """Plain-Python twin of :func:`dead_time_scan` (a heap instead of a sorted array)."""
    import heapq

    queue = [float(x) for x in pending]
    heapq.heapify(queue)
    times: list[float] = []
    kinds: list[int] = []
    slots: list[int] = []
    i = 0
    ok = True
    while True:
        if i < len(prim_t) and (not queue or prim_t[i] <= queue[0]):
            t, kind, slot = float(prim_t[i]), int(prim_kind[i]), int(prim_slot[i])
            if t >= t_cut:
                break
            i += 1
        elif queue:
            if queue[0] >= t_cut:
                break
            t, kind, slot = heapq.heappop(queue), ap_kind, -1
        else:
            break
        if t - last_click < dead:
            continue
        if len(times) == len(ap_u):
            ok = False
            break
        last_click = t
        u = float(ap_u[len(times)])
        times.append(t)
        kinds.append(kind)
        slots.append(slot)
        if u < p_ap:
            heapq.heappush(queue, t + dead + tau_ap * -math.log1p(-u / p_ap))
    return (np.array(times, dtype=np.float64), np.array(kinds, dtype=np.uint8),
            np.array(slots, dtype=np.int64), i, np.array(sorted(queue), dtype=np.float64),
            last_click, ok)


@njit(cache=True, nogil=True)
def tagger_times(
    rel_t: NDArray[np.float64],
    z: NDArray[np.float64],
    sigma: float,
    scale: float,
    base_frac: float,
    base_bins: int,
    resolution: int,
) -> NDArray[np.int64]:
    """Tags on Bob's clock: ``resolution * (base_bins + floor(x / resolution))``.

    ``x = base_frac + rel_t * scale + sigma * z``: the caller has split Bob's reading of the batch
    origin into ``base_bins * resolution + base_frac`` (``0 <= base_frac < resolution``), so
    that the float part stays small whatever the absolute time; ``scale = 1 + drift``; ``z``
    are standard normals (the tagger's own jitter, RMS ``sigma``).
    """
    n = rel_t.shape[0]
    out = np.empty(n, dtype=np.int64)
    res_f = np.float64(resolution)
    for i in range(n):
        x = base_frac + rel_t[i] * scale + sigma * z[i]
        out[i] = (base_bins + np.int64(math.floor(x / res_f))) * resolution
    return out


def tagger_times_reference(
    rel_t: NDArray[np.float64],
    z: NDArray[np.float64],
    sigma: float,
    scale: float,
    base_frac: float,
    base_bins: int,
    resolution: int,
) -> NDArray[np.int64]:
    """numpy twin of :func:`tagger_times`."""
    x = base_frac + rel_t * scale + sigma * z
    return (base_bins + np.floor(x / float(resolution)).astype(np.int64)) * resolution
