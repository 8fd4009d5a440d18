"""``qber-scan``: QBER of the X and Z bases against the modulator bias, to find the working point.

The transmitter plays a known frame (a fixed bench pattern of random bases and bits at the signal
intensity, never a key) over and over; the bias controller, in manual mode, steps the bias
through a coarse scan across ``+/- max_bias_v`` (never beyond its configured
``max_modulator_bias_v``) and then a fine scan around the coarse minimum. At each set point
the tagger records the clicks and the sync tags (one every K slots, K a multiple of the frame
length: checked before the scan starts, see :func:`check_frame_fits_sync`).

Slot assignment (sync channel): the slot period comes from a straight-line fit of the sync
times against their index; a click's slot is its sync's slot plus the whole number of periods
since that sync, measured from the channel's timing peak (the clicks' circular mean phase).
A click's frame position is counted from its sync tag, so a sync period must hold whole frames:
with K not a multiple of the frame length the sync edge falls at a different frame position
from one sync to the next, and which one is not observable in a fresh acquisition (the tagger
does not number the sync tags, and every set point's acquisition starts anew), so there is no
sound assignment to lift the restriction to; the procedure refuses such a frame length up front,
naming the lengths that fit. The frame position is that slot modulo the frame length, up to a
fixed offset per channel
(fibre, cable and detector delays), found by circular cross-correlation of the channel's
clicks per frame position with the frame's signed pattern (+1 where the channel's (basis, bit)
was sent, -1 where the other bit of its basis was), pooled over every set point.

Each set point's row (sifted clicks and errors per basis, with the frame offsets pooled over
the points done so far) reaches ``readings.csv`` as the point completes, and the runner's
partial ``result.json`` counts the points done, so an interrupted scan keeps them.

QBER of a basis: clicks of that basis's detectors in slots where Alice used the same basis
(sifted), and among them those on the wrong bit. About a minimum of the modulator's transfer
curve the QBER is an even function of the offset from the best set point ``V_0`` (the
wrong-state fraction of a Mach-Zehnder goes as ``sin^2(pi (V - V_0) / (2 V_pi))`` and the
light, hence the share of dark counts, as its complement), so the fine scan's pooled X+Z QBER
is fitted with ``Q_min + a (V - V_0)^2 + b (V - V_0)^4`` by weighted least squares (binomial
variances). The coarse scan only chooses where the fine scan goes: the transfer curve is
periodic, and of its equally deep minima the one of least bias magnitude is taken. The result
is ``V_0`` with its standard uncertainty from the fit covariance (scaled up by the reduced
chi-square when above 1), and the QBER there, pooled and per basis (per-basis fits). The lock
mode and bias held before the scan are restored afterwards, whatever happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import curve_fit

from .acquire import Recorder, acquire
from .detector import RATE_WINDOW_S, _channels, set_count_rate
from .modulator import BIAS_DECIMALS
from .result import Outcome, Settings

__all__ = ["ScanPoint", "assign_positions", "check_frame_fits_sync", "frame_offset", "plot_qber",
           "qber_scan"]

# The bench pattern: random bases and bits at the signal intensity from a fixed seed.
FRAME_SEED = 11
MIN_SYNCS = 3
MIN_POINTS = 5
# Coarse points this much (absolute QBER) above the least still count as minima.
COARSE_TOLERANCE = 0.01
# Binomial variance floor: a point with no errors still has an uncertainty.
_PSEUDO = 0.5
# Frame lengths suggested when the one asked for does not fit the sync period: at least this
# long (a shorter random pattern gives a weak cross-correlation peak), this many of them.
MIN_SUGGESTED_FRAME_SLOTS = 64
SUGGESTIONS = 5


@dataclass(frozen=True, slots=True)
class ScanPoint:
    """One set point's sifted counts: ``n[b]`` sifted clicks and ``e[b]`` errors of basis b."""

    scan: str
    set_v: float
    readback_v: float
    n: tuple[int, int]
    e: tuple[int, int]
    span_s: float


def _frame(length: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    rng = np.random.default_rng(FRAME_SEED)
    return (rng.integers(0, 2, length).astype(np.uint8),
            rng.integers(0, 2, length).astype(np.uint8))


def assign_positions(click_ps: NDArray[np.int64], sync_ps: NDArray[np.int64],
                     slots_per_sync: int, frame_slots: int) -> NDArray[np.int64]:
    """Frame position (up to a constant offset) of each click between the first and last sync.

    Clicks outside the sync tags' span get -1.

    Raises:
        ValueError: fewer than :data:`MIN_SYNCS` sync tags.
    """
    if sync_ps.size < MIN_SYNCS:
        raise ValueError(f"{sync_ps.size} sync tags are too few (need {MIN_SYNCS}): is the "
                         "sync channel connected and setting sync_channel right?")
    ts = sync_ps.astype(np.float64)
    slope, _ = np.polyfit(np.arange(ts.size, dtype=np.float64), ts - ts[0], 1)
    period = slope / slots_per_sync
    out = np.full(click_ps.size, -1, np.int64)
    inside = (click_ps >= sync_ps[0]) & (click_ps < sync_ps[-1])
    c = click_ps[inside]
    if c.size == 0:
        return out
    j = np.searchsorted(sync_ps, c, side="right") - 1
    since = (c - sync_ps[j]).astype(np.float64)
    angle = 2.0 * math.pi * np.mod(since, period) / period
    centre = (math.atan2(float(np.sin(angle).mean()), float(np.cos(angle).mean()))
              * period / (2.0 * math.pi))
    slot = j.astype(np.int64) * slots_per_sync + np.rint((since - centre) / period).astype(
        np.int64)
    out[inside] = np.mod(slot, frame_slots)
    return out


def check_frame_fits_sync(frame_slots: int, slots_per_sync: int, sync_channel: int) -> None:
    """Refuses a frame that does not fit the sync period a whole number of times.

    Raises:
        ValueError: ``slots_per_sync`` is not a multiple of ``frame_slots``, naming both and
            the frame lengths near ``frame_slots`` that divide it.
    """
    if slots_per_sync > 0 and slots_per_sync % frame_slots == 0:
        return
    k = max(slots_per_sync, 1)
    small = [d for d in range(1, math.isqrt(k) + 1) if k % d == 0]
    divisors = sorted({*small, *(k // d for d in small)})
    fit = [d for d in divisors if d >= MIN_SUGGESTED_FRAME_SLOTS] or divisors
    near = sorted(sorted(fit, key=lambda d: abs(math.log(d / frame_slots)))[:SUGGESTIONS])
    raise ValueError(
        f"frame_slots = {frame_slots} does not divide the {slots_per_sync} slots between sync "
        f"tags (sync_channel {sync_channel}): a click's frame position is counted from its sync "
        f"tag, so each sync period must hold whole frames; frame_slots values that fit: "
        f"{', '.join(map(str, near))}")


def _slots_per_sync(tagger: Any, sync_ch: int, slot_rate_hz: float) -> int:
    """Slots between sync tags, from a short acquisition of the sync channel."""
    probe = Recorder(label="sync")
    acquire(tagger, probe, (sync_ch,), target_counts=4 * MIN_SYNCS,
            max_duration_s=RATE_WINDOW_S, progress=False)
    t, c = probe.tags()
    sync = t[c == sync_ch]
    if sync.size < MIN_SYNCS:
        raise ValueError(f"{sync.size} sync tags on channel {sync_ch} in {RATE_WINDOW_S} s are "
                         f"too few (need {MIN_SYNCS}): is the sync connected and sync_channel "
                         "right?")
    return max(1, round(float(np.median(np.diff(sync))) * 1e-12 * slot_rate_hz))


def frame_offset(histogram: NDArray[np.float64], pattern: NDArray[np.float64]) -> int:
    """The shift s maximising ``sum_q histogram[q + s] pattern[q]`` (circular)."""
    corr = np.fft.irfft(np.fft.rfft(histogram) * np.conj(np.fft.rfft(pattern)),
                        n=histogram.size)
    return int(np.argmax(corr))


def _model(v: NDArray[np.float64], q_min: float, v0: float, a2: float, a4: float
           ) -> NDArray[np.float64]:
    d2 = (v - v0) ** 2
    return np.asarray(q_min + a2 * d2 + a4 * d2 * d2)


def _fit(v: NDArray[np.float64], n: NDArray[np.float64], e: NDArray[np.float64]
         ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted least squares of the even quartic about ``v0``; (popt, pcov) with pcov scaled
    by the reduced chi-square when it is above 1."""
    ok = n > 0
    v, n, e = v[ok], n[ok], e[ok]
    if v.size < MIN_POINTS:
        raise ValueError(f"only {v.size} set points had sifted clicks (need {MIN_POINTS}): "
                         "is the light reaching the detectors?")
    q = e / n
    p = (e + _PSEUDO) / (n + 2 * _PSEUDO)
    sigma = np.sqrt(p * (1.0 - p) / n)
    c2, c1, c0 = np.polyfit(v, q, 2, w=1.0 / sigma)
    v0 = -c1 / (2.0 * c2) if c2 > 0 else float(v[np.argmin(q)])
    v0 = float(np.clip(v0, v.min(), v.max()))
    p0 = [max(float(c0 - c1 * c1 / (4.0 * c2)) if c2 > 0 else float(q.min()), 0.0), v0,
          max(float(c2), 1e-6), 0.0]
    popt, pcov = curve_fit(_model, v, q, p0=p0, sigma=sigma, absolute_sigma=True,
                           maxfev=20000)
    dof = v.size - 4
    if dof > 0:
        chi2 = float((((q - _model(v, *popt)) / sigma) ** 2).sum()) / dof
        pcov = pcov * max(1.0, chi2)
    return popt, pcov


def _states(settings: Settings, channels: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    given = settings.get("channel_states")
    if given:
        states = {int(ch): (int(b), int(d)) for ch, (b, d) in dict(given).items()}
    else:
        if len(channels) != 4:
            raise ValueError(f"{len(channels)} detector channels {list(channels)}: without "
                             "channel_states the four channels are taken as X0, X1, Z0, Z1")
        states = {ch: divmod(i, 2) for i, ch in enumerate(channels)}
    missing = [ch for ch in channels if ch not in states]
    if missing:
        raise ValueError(f"channel_states names no (basis, bit) for channel(s) {missing}")
    return states


def qber_scan(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Best modulator bias set point (minimum QBER), V (module docstring)."""
    from qkdnode.drivers.roles import LockMode

    bc = lab.role("bias_controller")
    tx = lab.role("transmitter")
    tagger = lab.role("time_tagger")
    channels = _channels(lab, settings)
    states = _states(settings, channels)
    sync_ch = int(settings["sync_channel"])
    span = float(settings["max_bias_v"])
    limits = getattr(bc, "limits", None)
    if limits is not None:
        span = min(span, float(limits.max_modulator_bias_v))
    n_coarse, n_fine = int(settings["coarse_points"]), int(settings["fine_points"])
    if n_coarse < MIN_POINTS or n_fine < MIN_POINTS:
        raise ValueError(f"coarse_points and fine_points must be at least {MIN_POINTS}, got "
                         f"{n_coarse} and {n_fine}")
    length = int(settings["frame_slots"])
    basis, bit = _frame(length)
    recorder.header = ("scan", "set_v", "readback_v", "sifted_x", "errors_x", "sifted_z",
                       "errors_z", "qber_x", "qber_z", "span_s")
    tx.load_frame(basis, bit, np.zeros(length, np.uint8))
    tx.start()
    slot_rate = float(tx.slot_rate_hz())
    # The sync period is checked in the dark (whatever light the lab was left with could
    # overflow the tagger), before anything else is changed.
    lab.role("attenuator").set_enabled(False)
    check_frame_fits_sync(length, _slots_per_sync(tagger, sync_ch, slot_rate), sync_ch)
    planned = n_coarse + n_fine
    mode_before = bc.lock_mode()
    bias_before = float(bc.bias_v())
    # Per set point: (scan, set_v, readback_v, {channel: clicks per frame position}, span).
    raw: list[tuple[str, float, float, dict[int, NDArray[np.int64]], float]] = []
    light: dict[str, float] | None = None

    def measure(scan: str, volts: NDArray[np.float64], target: int) -> None:
        for v in np.round(volts, BIAS_DECIMALS):
            bc.set_manual_bias_v(float(v))
            first = len(recorder.parts_t)
            span_s = acquire(tagger, recorder, channels, target_counts=target,
                             max_duration_s=float(settings["duration_s"]), progress=False)
            t = np.concatenate(recorder.parts_t[first:]) if recorder.parts_t[first:] else (
                np.zeros(0, np.int64))
            c = np.concatenate(recorder.parts_c[first:]) if recorder.parts_c[first:] else (
                np.zeros(0, np.int32))
            sync = t[c == sync_ch]
            if sync.size < MIN_SYNCS:
                raise ValueError(f"{sync.size} sync tags on channel {sync_ch} at {v:.3f} V are "
                                 f"too few (need {MIN_SYNCS}): is the sync connected?")
            k = max(1, round(float(np.median(np.diff(sync))) * 1e-12 * slot_rate))
            check_frame_fits_sync(length, k, sync_ch)  # the sync period changed mid-scan
            per_position: dict[int, NDArray[np.int64]] = {}
            for ch in channels:
                pos = assign_positions(t[c == ch], sync, k, length)
                per_position[ch] = np.bincount(pos[pos >= 0], minlength=length)
            raw.append((scan, float(v), float(bc.bias_v()), per_position, span_s))
            recorder.progress = {"points_done": len(raw), "points_planned": planned,
                                 "scan": scan}
            recorder.set_rows(_rows(_analyse(raw, states, basis, bit, length)[0]))

    try:
        bc.set_lock_mode(LockMode.MANUAL)
        light = set_count_rate(lab, channels, float(settings["count_rate_hz"]))
        coarse = np.round(np.linspace(-span, span, n_coarse), BIAS_DECIMALS)
        measure("coarse", coarse, int(settings["coarse_counts"]))
        rough = _analyse(raw, states, basis, bit, length)[0]
        centre = _coarse_minimum(coarse, rough)
        half = float(settings["fine_half_width_v"])
        centre = float(np.clip(centre, -span + half, span - half))
        if half <= 0.0:
            raise ValueError(f"fine_half_width_v must be positive, got {half}")
        # The light at the coarse minimum can be far from that at the starting bias: the
        # count rate is set again there, so the fine points get their counts in about the
        # same time (and the detectors are not saturated).
        bc.set_manual_bias_v(round(centre, BIAS_DECIMALS))
        light = set_count_rate(lab, channels, float(settings["count_rate_hz"]))
        measure("fine", np.linspace(centre - half, centre + half, n_fine),
                int(settings["fine_counts"]))
    finally:
        lab.role("attenuator").set_enabled(False)
        try:
            if mode_before == LockMode.MANUAL:
                bc.set_manual_bias_v(bias_before)
            bc.set_lock_mode(mode_before)
        except Exception:  # the safe state still runs; the scan's error matters more
            pass
    points, offsets = _analyse(raw, states, basis, bit, length)
    recorder.rows[:] = _rows(points)
    v = np.array([p.set_v for p in points])
    n = np.array([[p.n[0], p.n[1]] for p in points], dtype=np.float64)
    e = np.array([[p.e[0], p.e[1]] for p in points], dtype=np.float64)
    fine = np.array([p.scan == "fine" for p in points])
    popt, pcov = _fit(v[fine], n[fine].sum(1), e[fine].sum(1))
    u_v0 = math.sqrt(max(float(pcov[1, 1]), 0.0))
    per_basis: dict[str, dict[str, float]] = {}
    fits: dict[int, Any] = {-1: (v, n.sum(1), e.sum(1), popt, fine)}
    for b, name in ((0, "X"), (1, "Z")):
        pb, cb = _fit(v[fine], n[fine, b], e[fine, b])
        fits[b] = (v, n[:, b], e[:, b], pb, fine)
        at = float(_model(np.array([popt[1]]), *pb)[0])
        per_basis[name] = {"qber_at_best": at, "u_qber_at_best": math.sqrt(max(
            float(cb[0, 0]), 0.0)), "best_set_point_v": float(pb[1]),
            "u_best_set_point_v": math.sqrt(max(float(cb[1, 1]), 0.0)),
            "sifted_clicks": int(n[:, b].sum())}
    return Outcome(
        quantity="modulator bias set point of least QBER", value=float(popt[1]),
        uncertainty=u_v0, unit="V",
        estimator=("QBER of the known frame per basis (sync-channel slot assignment, frame "
                   "offset by cross-correlation); weighted least squares of Q_min + a (V - V0)^2 + "
                   "b (V - V0)^4 on the pooled X+Z QBER of a fine bias scan about the coarse "
                   "scan's minimum of least |V|; u(V0) from the fit covariance scaled by the "
                   "reduced chi-square"),
        channels={},
        also={"qber_at_best": float(popt[0]), "u_qber_at_best": math.sqrt(max(
                  float(pcov[0, 0]), 0.0)),
              "bases": per_basis, "coarse_minimum_v": centre, "points": int(v.size),
              "scan_range_v": [-span, span], "frame_slots": length,
              "frame_offsets": {str(ch): s for ch, s in offsets.items()}},
        fits=fits, span_s=float(sum(r[4] for r in raw)), light=light, mark="qber")


def _rows(points: list[ScanPoint]) -> list[tuple[float | int | str, ...]]:
    return [(p.scan, p.set_v, p.readback_v, p.n[0], p.e[0], p.n[1], p.e[1],
             p.e[0] / p.n[0] if p.n[0] else math.nan, p.e[1] / p.n[1] if p.n[1] else math.nan,
             p.span_s) for p in points]


def _coarse_minimum(volts: NDArray[np.float64], points: list[ScanPoint]) -> float:
    """The coarse set point to scan finely about: of the points whose QBER is within
    :data:`COARSE_TOLERANCE` (plus three binomial standard deviations) of the least, the one of
    least bias magnitude (the transfer curve is periodic: its minima are equally good)."""
    n = np.array([p.n[0] + p.n[1] for p in points], dtype=np.float64)
    e = np.array([p.e[0] + p.e[1] for p in points], dtype=np.float64)
    if not (n > 0).any():
        raise ValueError("no sifted clicks in the coarse scan: is the light reaching the "
                         "detectors and the sync connected?")
    q = np.where(n > 0, e / np.maximum(n, 1), np.inf)
    i = int(np.argmin(q))
    limit = q[i] + COARSE_TOLERANCE + 3.0 * math.sqrt(max(q[i] * (1 - q[i]), 1e-4) / n[i])
    candidates = np.flatnonzero(q <= limit)
    return float(volts[candidates[np.argmin(np.abs(volts[candidates]))]])


def _analyse(raw: list[tuple[str, float, float, dict[int, NDArray[np.int64]], float]],
             states: dict[int, tuple[int, int]], basis: NDArray[np.uint8],
             bit: NDArray[np.uint8], length: int) -> tuple[list[ScanPoint], dict[int, int]]:
    """Sifted clicks and errors per set point, from each channel's clicks per frame position,
    with each channel's frame offset found from all set points pooled."""
    offsets: dict[int, int] = {}
    for ch, (cb, cd) in states.items():
        hist = np.zeros(length)
        for *_, per_position, _span in raw:
            hist += per_position[ch]
        pattern = np.where(basis == cb, np.where(bit == cd, 1.0, -1.0), 0.0)
        offsets[ch] = frame_offset(hist, pattern)
    points = []
    for scan, set_v, back_v, hists, span_s in raw:
        n, e = [0, 0], [0, 0]
        for ch, (cb, cd) in states.items():
            # Clicks at frame position q once the offset is taken off.
            at = np.roll(hists[ch], -offsets[ch])
            sifted = basis == cb
            n[cb] += int(at[sifted].sum())
            e[cb] += int(at[sifted & (bit != cd)].sum())
        points.append(ScanPoint(scan, set_v, back_v, (n[0], n[1]), (e[0], e[1]), span_s))
    return points, offsets


def plot_qber(path: Path, outcome: Outcome, *, value_text: str, simulated: bool) -> Path:
    """QBER of each basis and pooled against the bias, the fitted curve and the best set point."""
    from .plots import _figure, _stamp

    plt = _figure()
    fig, ax = plt.subplots(figsize=(9.0, 4.5))
    v0, u0 = outcome.value, outcome.uncertainty
    for key, label, colour in ((0, "X basis", "tab:blue"), (1, "Z basis", "tab:orange"),
                               (-1, "X+Z pooled", "k")):
        v, n, e, popt, fine = outcome.fits[key]
        ok = n > 0
        q = e[ok] / n[ok]
        err = np.sqrt(np.maximum(q * (1 - q), 1e-12) / n[ok]) * 100
        ax.errorbar(v[ok], q * 100, yerr=err, fmt="o", ms=3, color=colour, label=label)
        grid = np.linspace(float(v[fine].min()), float(v[fine].max()), 1000)
        ax.plot(grid, _model(grid, *popt) * 100, color=colour, lw=0.8)
    ax.axvspan(v0 - u0, v0 + u0, color="tab:red", alpha=0.2)
    ax.axvline(v0, color="tab:red", ls=":", label=f"best set point {value_text}")
    ax.set_xlabel("modulator bias set point (V)")
    ax.set_ylabel("QBER (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _stamp(ax, simulated)
    fig.suptitle("QBER against the modulator bias" + ("  [SIMULATED BENCH]" if simulated
                                                      else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
