"""Qsync's numba kernels and their plain-numpy twins.

* :func:`rayleigh_kernel`: the Rayleigh power of tag phases for a grid of frequencies (the
  acquisition's frequency search); twin :func:`rayleigh_reference`.
* :func:`track_kernel`: slot assignment, lock checks and the line's least-squares update, block
  after block, until a block fails a check or the tags run out; twin :func:`track_reference`.

Both implementations round with ``floor(x + 0.5)`` and sum in the order of the tags where it
matters, so that they agree to the last slot on any stream (float sums may differ in the last
bits; the twin test allows for that in the line's parameters).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["rayleigh_kernel", "rayleigh_reference", "track_kernel", "track_reference"]


@numba.njit(cache=True, nogil=True)
def rayleigh_kernel(dt_ps: NDArray[np.int64], freqs: NDArray[np.float64],
                    out: NDArray[np.float64]) -> None:
    """``out[g] = |sum_i exp(2 pi i dt_i f_g)|^2 / n`` (``f_g`` in cycles per ps).

    The phase is reduced to a fraction of a cycle before the trigonometry so that ``dt * f``
    of ~1e8 cycles keeps its precision. Numba kernel; :func:`rayleigh_reference` is its twin.
    """
    n = dt_ps.shape[0]
    two_pi = 2.0 * math.pi
    for g in range(freqs.shape[0]):
        f = freqs[g]
        c = 0.0
        s = 0.0
        for i in range(n):
            x = dt_ps[i] * f
            x -= math.floor(x)
            c += math.cos(two_pi * x)
            s += math.sin(two_pi * x)
        out[g] = (c * c + s * s) / n if n else 0.0


def rayleigh_reference(dt_ps: NDArray[np.int64], freqs: NDArray[np.float64],
                       out: NDArray[np.float64]) -> None:
    """Plain-numpy twin of :func:`rayleigh_kernel`."""
    if dt_ps.shape[0] == 0:
        out[:] = 0.0
        return
    x = np.multiply.outer(freqs, dt_ps.astype(np.float64))
    x -= np.floor(x)
    z = np.exp(2j * np.pi * x).sum(axis=1)
    out[:] = np.abs(z) ** 2 / dt_ps.shape[0]


@numba.njit(cache=True, nogil=True)
def track_kernel(t: NDArray[np.int64], start: int, block: int, final: bool,
                 ref_time: int, ref_slot: int, period: float,
                 half: float, core: float, weights: NDArray[np.float64],
                 max_outside: float, min_weight: float, gain: float, min_rms_tags: int,
                 slots: NDArray[np.int64], outside: NDArray[np.bool_],
                 w_out: NDArray[np.float64]) -> tuple[int, bool, int, int, int, float, float]:
    """Tracks blocks of ``block`` tags from ``t[start]`` until a block fails or tags run out.

    Per tag (time ``u`` after ``ref_time``): slot ``k = floor(u / period + 0.5)``, residual
    ``r = (u / period - k) * period``; accepted when ``|r| <= half`` and the slot
    ``k + ref_slot`` is not before slot 0 (else -1), outside the core when ``|r| > core``,
    pattern weight ``weights[slot mod L]`` (0 when rejected). A block fails when more than
    ``max_outside`` of its tags are outside the core or its mean weight is below
    ``min_weight``. A good block fits ``r = a + b u`` on its core tags
    and moves the line to its last tag: ``ref_time += a + k_last period (1 + b)``,
    ``ref_slot += k_last``, ``period *= 1 + gain b`` (no period update when fewer than half
    the block's tags are in the core). A partial block at the end is taken only when ``final``.

    Outputs ``slots``, ``outside``, ``w_out`` are indexed from ``start`` (``t[start + i]`` at
    ``i``) and filled for every block examined, the failed one included.

    Returns:
        ``(stop, failed, last_good, ref_time, ref_slot, period, rms)``: the end of the good
        blocks (the failed block, if any, starts there), the start of the last good block
        (``start`` when none), the line after the last good block and that block's RMS
        residual of core tags about its fit (nan when it had fewer than ``min_rms_tags``).
    """
    n = t.shape[0]
    length = weights.shape[0]
    i = start
    last_good = start
    rms = math.nan
    while True:
        remaining = n - i
        if remaining <= 0 or (remaining < block and not final):
            return i, False, last_good, ref_time, ref_slot, period, rms
        m = min(block, remaining)
        n_out = 0
        w_sum = 0.0
        n_core = 0
        su = 0.0
        sr = 0.0
        suu = 0.0
        sur = 0.0
        k_last = 0
        for j in range(i, i + m):
            u = float(t[j] - ref_time)
            x = u / period
            k = math.floor(x + 0.5)
            r = (x - k) * period
            ar = abs(r)
            o = j - start
            s = int(k) + ref_slot
            if ar <= half and s >= 0:
                slots[o] = s
                w = weights[((s % length) + length) % length]
            else:
                slots[o] = -1
                w = 0.0
            w_out[o] = w
            w_sum += w
            if ar > core:
                outside[o] = True
                n_out += 1
            else:
                outside[o] = False
                n_core += 1
                su += u
                sr += r
                suu += u * u
                sur += u * r
            k_last = int(k)
        if n_out > max_outside * m or w_sum < min_weight * m:
            return i, True, last_good, ref_time, ref_slot, period, rms
        a = 0.0
        b = 0.0
        if n_core > 0:
            den = n_core * suu - su * su
            if n_core >= 2 and den > 0.0:
                b = (n_core * sur - su * sr) / den
            a = (sr - b * su) / n_core
        if n_core >= min_rms_tags:
            acc2 = 0.0
            for j in range(i, i + m):
                if not outside[j - start]:
                    u = float(t[j] - ref_time)
                    x = u / period
                    r = (x - math.floor(x + 0.5)) * period
                    e = r - a - b * u
                    acc2 += e * e
            rms = math.sqrt(acc2 / n_core)
        g = gain if 2 * n_core >= block else 0.0
        new_ref = ref_time + a + k_last * period * (1.0 + b)
        ref_time = math.floor(new_ref + 0.5)
        ref_slot += k_last
        period *= 1.0 + g * b
        last_good = i
        i += m


def track_reference(t: NDArray[np.int64], start: int, block: int, final: bool,
                    ref_time: int, ref_slot: int, period: float,
                    half: float, core: float, weights: NDArray[np.float64],
                    max_outside: float, min_weight: float, gain: float, min_rms_tags: int,
                    slots: NDArray[np.int64], outside: NDArray[np.bool_],
                    w_out: NDArray[np.float64]) -> tuple[int, bool, int, int, int, float, float]:
    """Plain-numpy twin of :func:`track_kernel` (one vectorised pass per block)."""
    n = t.shape[0]
    length = weights.shape[0]
    i = start
    last_good = start
    rms = math.nan
    while True:
        remaining = n - i
        if remaining <= 0 or (remaining < block and not final):
            return i, False, last_good, ref_time, ref_slot, period, rms
        m = min(block, remaining)
        u = (t[i:i + m] - ref_time).astype(np.float64)
        x = u / period
        k = np.floor(x + 0.5)
        r = (x - k) * period
        s = k.astype(np.int64) + ref_slot
        acc = (np.abs(r) <= half) & (s >= 0)
        sl = np.where(acc, s, -1)
        w = np.where(acc, weights[s % length], 0.0)
        out = np.abs(r) > core
        o = slice(i - start, i - start + m)
        slots[o], outside[o], w_out[o] = sl, out, w
        if np.count_nonzero(out) > max_outside * m or w.sum() < min_weight * m:
            return i, True, last_good, ref_time, ref_slot, period, rms
        uc, rc = u[~out], r[~out]
        n_core = uc.size
        a = b = 0.0
        if n_core:
            su, sr = uc.sum(), rc.sum()
            den = n_core * (uc @ uc) - su * su
            if n_core >= 2 and den > 0.0:
                b = float((n_core * (uc @ rc) - su * sr) / den)
            a = float((sr - b * su) / n_core)
        if n_core >= min_rms_tags:
            rms = float(np.sqrt(np.mean((rc - a - b * uc) ** 2)))
        g = gain if 2 * n_core >= block else 0.0
        k_last = int(k[-1])
        ref_time = int(np.floor(ref_time + a + k_last * period * (1.0 + b) + 0.5))
        ref_slot += k_last
        period *= 1.0 + g * b
        last_good = i
        i += m
