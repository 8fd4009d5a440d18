"""``jitter``: a detector's timing jitter (FWHM) against the sync, other contributions removed.

The transmitter plays every slot at the signal intensity; the tagger records the clicks and a
sync tag every K slots. The sync tags give the slot period (a straight-line fit of their times
against their index, so a clock drift is followed) and each click's time since the slot start.
Folded onto one slot period, the clicks form a Gaussian peak (jitter) on a flat floor (dark
counts and afterpulses, uncorrelated with the slots).

Estimator: maximum likelihood (EM) of a Gaussian (wrapped: its images one period either
side included) plus a uniform floor on one period; the
Gaussian's sigma has its standard uncertainty from the observed information (the inverse
Hessian of the log-likelihood; without a floor it is ``sigma / sqrt(2 N_peak)``). The
tagger's own RMS jitter (on the click and on the sync tag) and the sync
source's are removed in quadrature, ``sigma_d^2 = sigma^2 - 2 sigma_tagger^2 - sigma_sync^2``,
and ``FWHM = 2 sqrt(2 ln 2) sigma_d``. Those contributions are settings (datasheet values);
they are taken as exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .acquire import Recorder, acquire
from .detector import _channels, _detector_settings, _play_frame, set_count_rate
from .result import Outcome, Settings, channel_values, mean_of_channels

__all__ = ["PeakFit", "delay_alignment", "fit_peak", "fold", "jitter", "plot_peaks"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# Fewest sync tags that define a period, and fewest clicks in a peak.
MIN_SYNCS = 3
MIN_CLICKS = 100
MAX_EM_ITERATIONS = 500
EM_TOLERANCE = 1e-8
# Histogram bins of the folded-clicks plot.
PLOT_BINS = 120


@dataclass(frozen=True, slots=True)
class PeakFit:
    """Gaussian peak on a flat floor over one period (times in ps)."""

    centre_ps: float
    sigma_ps: float
    u_sigma_ps: float
    u_centre_ps: float
    peak_fraction: float
    n: int
    period_ps: float


def fold(click_ps: NDArray[np.int64], sync_ps: NDArray[np.int64], slots_per_sync: int
         ) -> tuple[NDArray[np.float64], float]:
    """Each click's time since its slot's start, ps, and the slot period from the syncs, ps.

    Clicks before the first sync tag or after the last are dropped.

    Raises:
        ValueError: fewer than :data:`MIN_SYNCS` sync tags.
    """
    if sync_ps.size < MIN_SYNCS:
        raise ValueError(f"{sync_ps.size} sync tags are too few (need {MIN_SYNCS}): is the "
                         "sync channel connected and set (setting sync_channel)?")
    idx = np.arange(sync_ps.size, dtype=np.float64)
    ts = sync_ps.astype(np.float64)
    slope, _ = np.polyfit(idx, ts - ts[0], 1)
    period = slope / slots_per_sync
    inside = (click_ps >= sync_ps[0]) & (click_ps < sync_ps[-1])
    c = click_ps[inside]
    j = np.searchsorted(sync_ps, c, side="right") - 1
    since = (c - sync_ps[j]).astype(np.float64)
    return np.mod(since, period), float(period)


def fit_peak(phase_ps: NDArray[np.float64], period_ps: float) -> PeakFit:
    """Maximum-likelihood Gaussian plus uniform floor on the circle of one period.

    The phases are first centred on the peak (circular mean), so the Gaussian sits in the
    middle of a window one period wide.

    Raises:
        ValueError: fewer than :data:`MIN_CLICKS` phases.
    """
    if phase_ps.size < MIN_CLICKS:
        raise ValueError(f"{phase_ps.size} clicks are too few for the timing peak (need "
                         f"{MIN_CLICKS}): acquire longer or with more light")
    angle = 2.0 * math.pi * phase_ps / period_ps
    centre = (math.atan2(float(np.sin(angle).mean()), float(np.cos(angle).mean()))
              * period_ps / (2.0 * math.pi))
    x = np.mod(phase_ps - centre + period_ps / 2.0, period_ps) - period_ps / 2.0
    mu, sigma, w = float(np.median(x)), float(np.std(x)) / 2.0, 0.9
    # The peak wraps around the period: its images one period either side are in the model,
    # so a broad peak's tails are not mistaken for the floor.
    shifts = np.array([-period_ps, 0.0, period_ps])[:, None]
    ll = -math.inf
    for _ in range(MAX_EM_ITERATIONS):
        y = x[None, :] + shifts
        g = w * np.exp(-0.5 * ((y - mu) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
        total = g.sum(axis=0) + (1.0 - w) / period_ps
        new_ll = float(np.log(total).sum())
        resp = g / total
        r_sum = float(resp.sum())
        w = r_sum / x.size
        mu = float((resp * y).sum() / r_sum)
        sigma = math.sqrt(float((resp * (y - mu) ** 2).sum() / r_sum))
        if new_ll - ll < EM_TOLERANCE * x.size:
            break
        ll = new_ll
    u_mu, u_sigma = _u_mu_sigma(x, shifts, period_ps, mu, sigma, w)
    return PeakFit(centre_ps=centre + mu, sigma_ps=sigma, u_sigma_ps=u_sigma,
                   u_centre_ps=u_mu, peak_fraction=w, n=int(x.size), period_ps=period_ps)


def _u_mu_sigma(x: NDArray[np.float64], shifts: NDArray[np.float64], period_ps: float,
                mu: float, sigma: float, w: float) -> tuple[float, float]:
    """u(mu), u(sigma) from the observed information: the inverse Hessian of -log L in
    (mu, sigma, w), by central differences (the floor takes information from the peak:
    sigma / sqrt(2 N_peak) holds only without one)."""
    def nll(theta: NDArray[np.float64]) -> float:
        m, s, ww = theta
        y = x[None, :] + shifts
        g = ww * np.exp(-0.5 * ((y - m) / s) ** 2) / (s * math.sqrt(2.0 * math.pi))
        return float(-np.log(g.sum(axis=0) + (1.0 - ww) / period_ps).sum())

    theta = np.array([mu, sigma, w])
    h = np.array([sigma * 1e-3, sigma * 1e-3, min(w, 1.0 - w, 0.5) * 1e-3])
    hess = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            def at(di: int, dj: int, i: int = i, j: int = j) -> float:
                t = theta.copy()
                t[i] += di * h[i]
                t[j] += dj * h[j]
                return nll(t)
            hess[i, j] = hess[j, i] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (
                4.0 * h[i] * h[j])
    # Without a floor: sigma / sqrt(N_peak) and sigma / sqrt(2 N_peak).
    fallback = (sigma / math.sqrt(w * x.size), sigma / math.sqrt(2.0 * w * x.size))
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return fallback
    var_mu, var_sigma = float(cov[0, 0]), float(cov[1, 1])
    return (math.sqrt(var_mu) if var_mu > 0 else fallback[0],
            math.sqrt(var_sigma) if var_sigma > 0 else fallback[1])


@dataclass(frozen=True)
class _SyncedClicks:
    """Clicks of the detector channels and the sync tags of one acquisition."""

    t: NDArray[np.int64]
    c: NDArray[np.int32]
    sync: NDArray[np.int64]
    slots_per_sync: int
    span: float
    light: dict[str, float]


def _clicks_against_sync(lab: Any, recorder: Recorder, settings: Settings,
                         channels: tuple[int, ...]) -> _SyncedClicks:
    """Plays the frame at the set count rate, acquires, blocks the light; checks the syncs."""
    sync_ch = int(settings["sync_channel"])
    _play_frame(lab)
    light = set_count_rate(lab, channels, float(settings["count_rate_hz"]))
    recorder.clear()
    span = acquire(lab.role("time_tagger"), recorder, channels,
                   target_counts=int(settings["target_counts"]),
                   max_duration_s=float(settings["duration_s"]))
    lab.role("attenuator").set_enabled(False)
    t, c = recorder.tags()
    sync = t[c == sync_ch]
    if sync.size < MIN_SYNCS:
        raise ValueError(f"{sync.size} sync tags on channel {sync_ch} are too few (need "
                         f"{MIN_SYNCS}): is the sync connected and setting sync_channel right?")
    slot_rate = float(lab.role("transmitter").slot_rate_hz())
    k = max(1, round(float(np.median(np.diff(sync))) * 1e-12 * slot_rate))
    return _SyncedClicks(t, c, sync, k, span, light)


def jitter(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Timing jitter FWHM per detector channel against the sync (module docstring)."""
    channels = _channels(lab, settings)
    run = _clicks_against_sync(lab, recorder, settings, channels)
    t, c, sync, k = run.t, run.c, run.sync, run.slots_per_sync
    tagger_rms = float(settings["tagger_jitter_rms_ps"])
    sync_rms = float(settings["sync_jitter_rms_ps"])
    removed2 = 2.0 * tagger_rms ** 2 + sync_rms ** 2
    fits: dict[int, PeakFit] = {}
    per: dict[int, tuple[float, float]] = {}
    for ch in channels:
        phase, period = fold(t[c == ch], sync, k)
        fit = fit_peak(phase, period)
        fits[ch] = fit
        det2 = fit.sigma_ps ** 2 - removed2
        if det2 <= 0:
            raise ValueError(f"channel {ch}: the measured jitter ({fit.sigma_ps:.1f} ps RMS) is "
                             f"below the contributions removed ({math.sqrt(removed2):.1f} ps): "
                             "check tagger_jitter_rms_ps and sync_jitter_rms_ps")
        det = math.sqrt(det2)
        per[ch] = (FWHM_PER_SIGMA * det, FWHM_PER_SIGMA * fit.sigma_ps * fit.u_sigma_ps / det)
    value, u = mean_of_channels(per)
    return Outcome(
        quantity="timing jitter FWHM", value=value, uncertainty=u, unit="ps",
        estimator=("clicks folded on the slot period from the sync tags; maximum-likelihood "
                   "Gaussian on a flat floor, u(sigma) from the observed information; tagger "
                   "(click and sync) and sync jitter removed in quadrature; FWHM = 2.3548 sigma; "
                   "mean over channels"),
        channels=channel_values(per, {ch: f.n for ch, f in fits.items()}, "n_clicks"),
        also={"measured_sigma_ps": channel_values(
                  {ch: (f.sigma_ps, f.u_sigma_ps) for ch, f in fits.items()}),
              "removed_rms_ps": math.sqrt(removed2), "slots_per_sync": k,
              "slot_period_ps": float(np.mean([f.period_ps for f in fits.values()]))},
        fits=fits, span_s=run.span, instrument_settings=_detector_settings(lab), light=run.light,
        mark="peak")


def plot_peaks(path: Path, fits: dict[int, PeakFit], timestamps_ps: NDArray[np.int64],
               channels: NDArray[np.int32], sync_channel: int, *, value_text: str,
               simulated: bool, title: str = "detector jitter FWHM (tagger removed)",
               channel_text: Mapping[int, str] | None = None,
               reference: int | None = None) -> Path:
    """Folded click times per channel with the fitted Gaussian.

    Without ``reference`` (jitter) each channel is centred on its own peak and the measured
    FWHM is marked. With it (delay alignment) each channel is drawn against the reference
    channel's peak over the whole slot period, and the offset the delay removes is marked.
    ``channel_text`` (the channel's extracted value) goes into each panel's title.
    """
    from .plots import _figure, _stamp

    plt = _figure()
    n = len(fits)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    sync = timestamps_ps[channels == sync_channel]
    for ax, (ch, fit) in zip(axes.flat, sorted(fits.items()), strict=False):
        k = max(1, round(float(np.median(np.diff(sync))) / fit.period_ps))
        phase, period = fold(timestamps_ps[channels == ch], sync, k)
        # Where this channel's peak sits on the plotted axis.
        if reference is None:
            zero, peak = fit.centre_ps, 0.0
            half = min(period / 2.0, 6.0 * fit.sigma_ps)
        else:
            zero = fits[reference].centre_ps
            peak = float(_wrap(fit.centre_ps - zero, period))
            half = period / 2.0
        x = _wrap(phase - zero, period)
        edges = np.linspace(-half, half, PLOT_BINS + 1)
        counts, _ = np.histogram(x, edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        width = edges[1] - edges[0]
        ax.step(centres, counts, where="mid", color="k", lw=0.8, label=f"clicks (N = {fit.n})")
        gauss = sum(np.exp(-0.5 * ((centres - peak + m * period) / fit.sigma_ps) ** 2)
                    for m in (-1, 0, 1))
        model = fit.n * width * (fit.peak_fraction * gauss
                                 / (fit.sigma_ps * math.sqrt(2 * math.pi))
                                 + (1 - fit.peak_fraction) / period)
        ax.plot(centres, model, color="tab:blue",
                label=f"Gaussian fit, sigma = {fit.sigma_ps:.1f} ps")
        top = fit.n * width * fit.peak_fraction / (fit.sigma_ps * math.sqrt(2 * math.pi))
        if reference is None:
            hw = FWHM_PER_SIGMA * fit.sigma_ps / 2.0
            ax.annotate("", xy=(hw, top / 2), xytext=(-hw, top / 2),
                        arrowprops={"arrowstyle": "<->", "color": "tab:red"})
            # Named in the legend: a label beside the peak ran off a broad peak's axes.
            ax.plot([], [], color="tab:red", label=f"measured FWHM {2 * hw:.1f} ps (arrow)")
            ax.set_xlabel("click time relative to the slot's peak (ps)")
        else:
            ax.axvline(0.0, color="tab:green", ls=":",
                       label=f"reference peak (channel {reference})")
            ax.axvline(peak, color="tab:red", ls=":", label=f"this peak, {peak:+.1f} ps")
            if ch != reference:
                ax.annotate("", xy=(0.0, 1.05 * top), xytext=(peak, 1.05 * top),
                            arrowprops={"arrowstyle": "->", "color": "tab:red"})
            ax.set_ylim(0, 1.35 * top)
            ax.set_xlabel(f"click time relative to channel {reference}'s peak (ps)")
        ax.set_ylabel(f"clicks per {width:.3g} ps bin")
        ax.set_title(f"channel {ch}" + (f": {channel_text[ch]}"
                                         if channel_text and ch in channel_text else ""))
        ax.legend(fontsize=7, loc="upper right")
        _stamp(ax, simulated)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: {value_text}"
                 + ("  [SIMULATED BENCH]" if simulated else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _wrap(x: Any, period: float) -> Any:
    """``x`` brought into [-period / 2, period / 2)."""
    return np.mod(np.asarray(x) + period / 2.0, period) - period / 2.0


def delay_alignment(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Per-channel delays that put every detector's timing peak where the reference channel's
    is (the first channel, or ``reference_channel``), from the same folded acquisition as
    :func:`jitter`.

    Each channel's peak centre ``c_i`` (its phase in the slot, ps, from the sync) is fitted; the
    delay to add to channel i is ``c_ref - c_i`` brought into (-T/2, T/2]. Standard uncertainty:
    the centres' (observed information) in quadrature. The value is the spread of the delays
    (max - min), what alignment removes. With ``apply`` true the delays are set on the tagger.
    """
    channels = _channels(lab, settings)
    run = _clicks_against_sync(lab, recorder, settings, channels)
    t, c, sync, k = run.t, run.c, run.sync, run.slots_per_sync
    fits = {ch: fit_peak(*fold(t[c == ch], sync, k)) for ch in channels}
    ref = int(settings["reference_channel"] or channels[0])
    if ref not in fits:
        raise ValueError(f"reference_channel {ref} is not one of the channels {list(channels)}")
    period = fits[ref].period_ps
    delays: dict[int, tuple[float, float]] = {}
    for ch, fit in fits.items():
        d = fits[ref].centre_ps - fit.centre_ps
        d = d - period * math.floor(d / period + 0.5)
        u = 0.0 if ch == ref else math.hypot(fit.u_centre_ps, fits[ref].u_centre_ps)
        delays[ch] = (d, u)
    lo = min(delays, key=lambda ch: delays[ch][0])
    hi = max(delays, key=lambda ch: delays[ch][0])
    spread = delays[hi][0] - delays[lo][0]
    u_spread = math.hypot(fits[hi].u_centre_ps, fits[lo].u_centre_ps)
    applied = False
    if settings["apply"]:
        tagger = lab.role("time_tagger")
        for ch, (d, _) in delays.items():
            tagger.set_delay_ps(ch, round(d))
        applied = True
    return Outcome(
        quantity="detector delay spread (delays listed per channel)", value=spread,
        uncertainty=u_spread, unit="ps",
        estimator=("peak centre of each channel's clicks folded on the sync-derived slot "
                   "period (wrapped Gaussian on a floor, u from the observed information); "
                   "delay = reference centre - centre, within half a period"),
        channels=channel_values(delays, {ch: f.n for ch, f in fits.items()},
                                "n_clicks"),
        also={"reference_channel": ref, "slot_period_ps": period, "applied": applied,
              "centres_ps": channel_values({ch: (f.centre_ps, f.u_centre_ps)
                                            for ch, f in fits.items()})},
        fits=fits, span_s=run.span, instrument_settings=_detector_settings(lab), light=run.light,
        mark="peak")
