"""Detector procedures from the inter-arrival histogram: ``dark-counts``, ``afterpulsing``,
``dead-time``.

Each runs on the roles only (time tagger, transmitter, attenuator; the detector for its
identity and reported settings) and fits :mod:`.gaps`' model per detector channel:

* ``dark-counts``: light blocked (attenuator output closed); the uncorrelated click rate of the
  gap model is the dark count rate (afterpulses of dark counts are not dark counts), and the
  probability per window ``w`` is ``1 - exp(-r w)``;
* ``afterpulsing``: weak light at a set count rate per channel (the attenuator is stepped until
  the tagger counts it), afterpulse probability from the mixture's excess over the exponential
  baseline;
* ``dead-time``: strong light (many gaps close to the cutoff), the histogram's edge. Light
  pulses sit on the slot grid, so a gap ending on a photon is a whole number of slot periods
  plus the jitter of two clicks, while afterpulses and dark counts end gaps anywhere: the edge
  is the posterior of :func:`.gaps.cutoff_on_slot_grid` (its comb of jittered teeth plus the
  continuous afterpulse hazard), not the slot grid's ``T / sqrt(12)``. Only a dead time that
  ends between teeth with no afterpulses is limited to the gap between teeth.

The reported value is the mean over the detector channels, its uncertainty the channels'
combined in quadrature over their number.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .acquire import Recorder, acquire, measure_rates
from .gaps import GapFit, cutoff_on_slot_grid, fit_gaps
from .result import Outcome, Settings, channel_values, mean_of_channels

__all__ = ["afterpulsing", "dark_counts", "dead_time", "set_count_rate"]

# Frame the transmitter plays while a detector is characterised: every slot at the signal
# intensity (class 0), the four states in a fixed shuffled order (a bench pattern, never a
# key); a multiple of 4 slots.
FRAME_SLOTS = 1000
FRAME_SEED = 7
# Attenuation from which the light level search starts, and its step (dB): 60 dB above the
# power-on setting leaves the default link's detectors near their dark count rate.
START_ATTENUATION_DB = 60.0
STEP_DB = 10.0
# Bench time of a rate measurement while the light level is set, s.
RATE_WINDOW_S = 0.05


def _channels(lab: Any, settings: Settings) -> tuple[int, ...]:
    chans = settings.get("channels")
    if chans:
        return tuple(int(c) for c in chans)
    tagger_channels = tuple(lab.role("time_tagger").channels())
    sync = settings.get("sync_channel")
    return tuple(c for c in tagger_channels if c != sync)


def _play_frame(lab: Any) -> None:
    """Plays signal pulses with the four (basis, bit) states equally often, in a shuffled
    order: each detector of a passive receiver then gets exactly its splitter's share."""
    tx = lab.role("transmitter")
    rng = np.random.default_rng(FRAME_SEED)
    states = rng.permutation(np.arange(FRAME_SLOTS, dtype=np.uint8) % 4)
    tx.load_frame((states >> 1).astype(np.uint8), (states & 1).astype(np.uint8),
                  np.zeros(FRAME_SLOTS, np.uint8))
    tx.start()


def set_count_rate(lab: Any, channels: tuple[int, ...], target_hz: float) -> dict[str, float]:
    """Opens the attenuator to about ``target_hz`` uncorrelated clicks per channel.

    Measures the dark rate (output closed), then steps the attenuation down from
    :data:`START_ATTENUATION_DB` until the light is seen above it, and extrapolates linearly in
    power. The attenuator's limits (``min_attenuation_db``) are never crossed: the driver refuses
    and the level stays at the least allowed attenuation.

    Returns:
        What was done: ``dark_rate_hz``, ``attenuation_db``, ``measured_rate_hz``.
    """
    att = lab.role("attenuator")
    tagger = lab.role("time_tagger")
    att.set_enabled(False)
    dark = float(np.mean(list(measure_rates(tagger, channels, RATE_WINDOW_S).values())))
    level = START_ATTENUATION_DB
    att.set_attenuation_db(level)
    att.set_enabled(True)
    rate = float(np.mean(list(measure_rates(tagger, channels, RATE_WINDOW_S).values())))
    while rate - dark < max(dark, 100.0) and level > 0.0:
        level = max(0.0, level - STEP_DB)
        try:
            att.set_attenuation_db(level)
        except ValueError:
            break
        rate = float(np.mean(list(measure_rates(tagger, channels, RATE_WINDOW_S).values())))
    light = max(rate - dark, 1e-9)
    wanted = max(0.0, level - 10.0 * math.log10(max(target_hz - dark, 1.0) / light))
    try:
        att.set_attenuation_db(wanted)
        level = wanted
    except ValueError:
        pass  # below the attenuator's limit: stay where we are
    rate = float(np.mean(list(measure_rates(tagger, channels, RATE_WINDOW_S).values())))
    return {"dark_rate_hz": dark, "attenuation_db": float(att.attenuation_db()),
            "measured_rate_hz": rate}


@dataclass(frozen=True)
class _Run:
    fits: dict[int, GapFit]
    span_s: float
    light: dict[str, float] | None


def _acquire_and_fit(lab: Any, recorder: Recorder, settings: Settings, *, light_hz: float | None,
                     timing_rms_ps: float) -> _Run:
    channels = _channels(lab, settings)
    _play_frame(lab)
    light = None
    if light_hz is None:
        lab.role("attenuator").set_enabled(False)
    else:
        light = set_count_rate(lab, channels, light_hz)
    recorder.clear()
    span = acquire(lab.role("time_tagger"), recorder, channels,
                   target_counts=int(settings["target_counts"]),
                   max_duration_s=float(settings["duration_s"]))
    lab.role("attenuator").set_enabled(False)
    t, c = recorder.tags()
    fits = {ch: fit_gaps(t[c == ch], timing_rms_ps) for ch in channels}
    return _Run(fits, span, light)


def _detector_settings(lab: Any) -> dict[str, Any]:
    det = lab.instruments.get("detector")
    if det is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("bias_v", "dead_time_s", "threshold_v"):
        try:
            out[f"detector_{name}"] = float(getattr(det, name)())
        except Exception as exc:  # a reading is informative only
            out[f"detector_{name}"] = f"unavailable: {exc}"
    return out


def dark_counts(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Dark count rate per detector channel, light blocked (see module docstring)."""
    run = _acquire_and_fit(lab, recorder, settings, light_hz=None,
                           timing_rms_ps=float(settings["timing_rms_ps"]))
    window = float(settings["window_s"])
    per = {ch: (f.rate_hz, f.u_rate_hz) for ch, f in run.fits.items()}
    value, u = mean_of_channels(per)
    prob = {ch: (-math.expm1(-r * window), window * math.exp(-r * window) * ur)
            for ch, (r, ur) in per.items()}
    return Outcome(
        quantity="dark count rate", value=value, uncertainty=u, unit="Hz",
        estimator=("uncorrelated rate r of the gap model (Poisson clicks, non-paralysable dead "
                   "time, exponential afterpulses) by maximum likelihood, light blocked; "
                   "u(r) from the inverse Fisher information (BHHH); mean over channels"),
        channels=channel_values(per, {ch: f.n_gaps for ch, f in run.fits.items()}),
        also={"dark_count_probability_per_window": {
                  "value": mean_of_channels(prob)[0], "uncertainty": mean_of_channels(prob)[1],
                  "window_s": window, "channels": channel_values(prob)}},
        fits=run.fits, span_s=run.span_s, instrument_settings=_detector_settings(lab),
        light=run.light, mark="rate")


def afterpulsing(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Afterpulse probability per click from the gap histogram's excess (module docstring)."""
    run = _acquire_and_fit(lab, recorder, settings, light_hz=float(settings["count_rate_hz"]),
                           timing_rms_ps=float(settings["timing_rms_ps"]))
    per = {ch: (f.afterpulse_probability, f.u_afterpulse_probability)
           for ch, f in run.fits.items()}
    value, u = mean_of_channels(per)
    taus = {ch: (1e12 / f.lam_hz, 1e12 * f.u_lam_hz / f.lam_hz ** 2)
            for ch, f in run.fits.items() if math.isfinite(f.lam_hz)}
    also: dict[str, Any] = {"uncorrelated_rate_hz": channel_values(
        {ch: (f.rate_hz, f.u_rate_hz) for ch, f in run.fits.items()})}
    if taus:
        tv, tu = mean_of_channels(taus)
        also["afterpulse_tau_ps"] = {"value": tv, "uncertainty": tu,
                                     "channels": channel_values(taus)}
    return Outcome(
        quantity="afterpulse probability", value=value, uncertainty=u, unit="1",
        estimator=("excess of the inter-arrival histogram over the exponential baseline: "
                   "maximum-likelihood two-component mixture, p = 1 - (1 - q)/(1 - q rho) "
                   "(afterpulses left over from earlier clicks); u(p) by the delta method on "
                   "the BHHH covariance; mean over channels"),
        channels=channel_values(per, {ch: f.n_gaps for ch, f in run.fits.items()}),
        also=also, fits=run.fits, span_s=run.span_s,
        instrument_settings=_detector_settings(lab), light=run.light, mark="excess")


def dead_time(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Dead time from the gap histogram's edge under strong light (module docstring)."""
    timing_rms_ps = float(settings["timing_rms_ps"])
    run = _acquire_and_fit(lab, recorder, settings, light_hz=float(settings["count_rate_hz"]),
                           timing_rms_ps=timing_rms_ps)
    period_ps = 1e12 / float(lab.role("transmitter").slot_rate_hz())
    t, c = recorder.tags()
    per_ps = {ch: cutoff_on_slot_grid(t[c == ch], f, period_ps, timing_rms_ps)
              for ch, f in run.fits.items()}
    value, u = mean_of_channels(per_ps)
    # The plots mark the edge found here.
    fits = {ch: dataclasses.replace(f, dead_time_s=per_ps[ch][0] * 1e-12,
                                    u_dead_time_s=per_ps[ch][1] * 1e-12)
            for ch, f in run.fits.items()}
    return Outcome(
        quantity="dead time", value=value, uncertainty=u, unit="ps",
        estimator=("edge of the inter-arrival histogram: posterior mean (flat prior) of d "
                   "given that every gap outlived it, with the hazard just beyond d the "
                   "jittered photon comb on the slot grid plus the continuous afterpulse race "
                   "of the gap model; u its standard deviation with the timing uncertainty of "
                   "a gap in quadrature; mean over channels"),
        channels=channel_values(per_ps, {ch: f.n_gaps for ch, f in run.fits.items()}),
        also={"slot_period_ps": period_ps,
              "smallest_gap_ps": {str(ch): float(np.diff(t[c == ch]).min())
                                  for ch in run.fits}},
        fits=fits, span_s=run.span_s, instrument_settings=_detector_settings(lab),
        light=run.light, mark="cutoff")
