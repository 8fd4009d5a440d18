"""``efficiency-mismatch``: the relative efficiencies of a receiver's detectors.

The transmitter plays signal pulses with the four (basis, bit) states equally often, so each
detector of a passive receiver gets its splitter's share ``s_i`` of the light (the setting
``split_fractions``: equal by default, a balanced 50:50 basis splitter). Every detector's
photon click rate is its gap model's uncorrelated rate less its dark rate (light blocked), and
its efficiency relative to the mean of the receiver's is

    e_i = (r_i - r_dc,i) / s_i  /  mean_j[(r_j - r_dc,j) / s_j].

No power meter is needed: the photon number cancels. The value is the mismatch
``min e / max e`` (1 for matched detectors); the relative efficiencies are listed beside it.
Standard uncertainties: the rates' (Fisher information, Poisson for the dark rates) by the
delta method, the selection of the extreme channels not counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .acquire import Recorder, acquire
from .detector import _channels, _detector_settings, _play_frame, set_count_rate
from .gaps import fit_gaps, primary_rate
from .result import Outcome, Settings, channel_values

__all__ = ["efficiency_mismatch"]


def efficiency_mismatch(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Relative detector efficiencies and their mismatch (module docstring)."""
    channels = _channels(lab, settings)
    split = settings.get("split_fractions") or [1.0 / len(channels)] * len(channels)
    if len(split) != len(channels):
        raise ValueError(f"split_fractions has {len(split)} values for {len(channels)} "
                         f"channels {list(channels)}")
    shares = dict(zip(channels, (float(s) for s in split), strict=True))
    tagger = lab.role("time_tagger")
    att = lab.role("attenuator")
    _play_frame(lab)
    att.set_enabled(False)
    recorder.clear()
    span_dark = acquire(tagger, recorder, channels, target_counts=int(settings["dark_counts"]),
                        max_duration_s=float(settings["dark_duration_s"]))
    _, c = recorder.tags()
    span_dark = max(span_dark, 1e-12)
    dark = {ch: (float(np.count_nonzero(c == ch)) / span_dark,
                 math.sqrt(max(float(np.count_nonzero(c == ch)), 1.0)) / span_dark)
            for ch in channels}
    light = set_count_rate(lab, channels, float(settings["count_rate_hz"]))
    recorder.clear()
    span = acquire(tagger, recorder, channels, target_counts=int(settings["target_counts"]),
                   max_duration_s=float(settings["duration_s"]))
    att.set_enabled(False)
    t, c = recorder.tags()
    fits = {ch: fit_gaps(t[c == ch], float(settings["timing_rms_ps"])) for ch in channels}
    # The counted dark rates include the dark counts' afterpulses; the gap model's do not.
    dark = {ch: primary_rate(*dark[ch], fits[ch]) for ch in channels}
    raw = {ch: ((f.rate_hz - dark[ch][0]) / shares[ch],
                math.hypot(f.u_rate_hz, dark[ch][1]) / shares[ch]) for ch, f in fits.items()}
    mean = sum(v for v, _ in raw.values()) / len(raw)
    rel: dict[int, tuple[float, float]] = {}
    for ch, (v, _) in raw.items():
        # e_i = v_i / mean(v): d e_i / d v_j = (delta_ij - e_i / n) / mean.
        e = v / mean
        var = sum(((1.0 if j == ch else 0.0) - e / len(raw)) ** 2 * uj ** 2
                  for j, (_, uj) in raw.items()) / mean ** 2
        rel[ch] = (e, math.sqrt(var))
    lo = min(rel, key=lambda ch: rel[ch][0])
    hi = max(rel, key=lambda ch: rel[ch][0])
    ratio = raw[lo][0] / raw[hi][0]
    u_ratio = ratio * math.hypot(raw[lo][1] / raw[lo][0], raw[hi][1] / raw[hi][0])
    return Outcome(
        quantity="detector efficiency mismatch (min/max)", value=ratio, uncertainty=u_ratio,
        unit="1",
        estimator=("photon click rates (gap model's uncorrelated rate less the dark rate) over "
                   "each detector's splitter share, relative to their mean; value min/max; u "
                   "by the delta method"),
        channels=channel_values(rel, {ch: f.n_gaps for ch, f in fits.items()}),
        also={"least_efficient_channel": lo, "most_efficient_channel": hi,
              "split_fractions": {str(ch): s for ch, s in shares.items()},
              "dark_rate_hz": channel_values(dark)},
        fits=fits, span_s=span, instrument_settings=_detector_settings(lab), light=light,
        mark="rate")
