"""``detector-efficiency``: detection efficiency from calibrated attenuated pulses.

The transmitter plays signal pulses (a balanced frame of bases and bits); the attenuator is set
so that each detector counts about ``count_rate_hz``; the power meter, reading the light after
the attenuator, gives the mean photon number per pulse there,
``mu = (P - P_0) lambda / (f h c)``, and the detector's share of it is
``mu_d = mu 10^(-loss_to_detector_db / 10) split_fraction`` (a passive BB84 receiver playing a
balanced frame sends ``q_x / 2`` of the light to each X detector, ``(1 - q_x) / 2`` to each Z
detector: 1/4 at ``q_x = 1/2``).

A detector clicks in a slot with ``P = 1 - exp(-eta mu_d)`` (Poisson photon numbers), so its
photon clicks have the gap rate ``-f ln(1 - P) = f eta mu_d``: the uncorrelated rate ``r`` of
the gap model (:mod:`.gaps`, which removes the dead time and afterpulses), less the dark rate
``r_dc`` (light blocked; the dark counts' afterpulses and the dead time taken out of the
counted rate, :func:`.gaps.primary_rate`), gives

    eta = (r - r_dc) / (f mu_d).

Standard uncertainty: ``u(r)`` (Fisher information), ``u(r_dc)`` (Poisson), the power
readings' standard errors and the meter's calibration (``power_meter_calibration_rel``) in
quadrature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .acquire import Recorder, acquire
from .detector import _channels, _detector_settings, _play_frame, set_count_rate
from .gaps import fit_gaps, primary_rate
from .result import Outcome, Settings, channel_values, mean_of_channels
from .source import PLANCK_J_S, SPEED_OF_LIGHT_M_PER_S, _readings

__all__ = ["detector_efficiency"]


def detector_efficiency(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Detection efficiency per channel (module docstring)."""
    channels = _channels(lab, settings)
    tagger = lab.role("time_tagger")
    att = lab.role("attenuator")
    pm = lab.role("power_meter")
    wavelength = float(settings["wavelength_nm"])
    pm.set_wavelength_nm(wavelength)
    pm.set_averaging(int(settings["averaging"]))
    n_read = int(settings["readings"])
    _play_frame(lab)
    # Dark counts: light blocked, Poisson counting over the acquisition span.
    att.set_enabled(False)
    recorder.clear()
    recorder.header = ("what", "index", "power_w")
    span_dark = acquire(tagger, recorder, channels, target_counts=int(settings["dark_counts"]),
                        max_duration_s=float(settings["dark_duration_s"]))
    t, c = recorder.tags()
    span_dark = max(span_dark, 1e-12)
    dark = {ch: (float(np.count_nonzero(c == ch)) / span_dark,
                 math.sqrt(max(float(np.count_nonzero(c == ch)), 1.0)) / span_dark)
            for ch in channels}
    zero, u_zero = _readings(pm, n_read, "zero (light blocked)", recorder)
    light = set_count_rate(lab, channels, float(settings["count_rate_hz"]))
    power, u_power = _readings(pm, n_read, "signal at the counting attenuation", recorder)
    rows = list(recorder.rows)
    recorder.clear()
    recorder.rows.extend(rows)
    span = acquire(tagger, recorder, channels, target_counts=int(settings["target_counts"]),
                   max_duration_s=float(settings["duration_s"]))
    att.set_enabled(False)
    rate = float(lab.role("transmitter").slot_rate_hz())
    photon_j = PLANCK_J_S * SPEED_OF_LIGHT_M_PER_S / (wavelength * 1e-9)
    mu = (power - zero) / (rate * photon_j)
    if not mu > 0:
        raise ValueError(f"the power meter reads no light above its zero ({power:.3g} W vs "
                         f"{zero:.3g} W): is it on the attenuator's output?")
    u_mu_rel = math.hypot(math.hypot(u_power, u_zero) / (power - zero),
                          float(settings["power_meter_calibration_rel"]))
    mu_d = mu * 10.0 ** (-float(settings["loss_to_detector_db"]) / 10.0) * float(
        settings["split_fraction"])
    t, c = recorder.tags()
    fits = {ch: fit_gaps(t[c == ch], float(settings["timing_rms_ps"])) for ch in channels}
    # The dark rates counted above include the dark counts' afterpulses (and lose the dead
    # time): the gap model's rates exclude both.
    dark = {ch: primary_rate(*dark[ch], fits[ch]) for ch in channels}
    per: dict[int, tuple[float, float]] = {}
    for ch, fit in fits.items():
        r_ph = fit.rate_hz - dark[ch][0]
        eta = r_ph / (rate * mu_d)
        u_rel = math.hypot(math.hypot(fit.u_rate_hz, dark[ch][1]) / r_ph, u_mu_rel)
        per[ch] = (eta, abs(eta) * u_rel)
    value, u_stat = mean_of_channels(per)
    # The photon number's calibration is common to every channel: added after the mean.
    u_common = abs(value) * u_mu_rel
    u_indep = mean_of_channels({ch: (v, abs(v) * math.sqrt(max(
        (uu / v) ** 2 - u_mu_rel ** 2, 0.0))) for ch, (v, uu) in per.items()})[1]
    u = math.hypot(u_indep, u_common)
    del u_stat
    return Outcome(
        quantity="detection efficiency", value=value, uncertainty=u, unit="1",
        estimator=("eta = (r - r_dc) / (f mu_d): r the gap model's uncorrelated rate (dead "
                   "time and afterpulses removed), r_dc light blocked, mu_d from the power "
                   "meter, photon energy, loss to the detector and split fraction; the "
                   "photon-number calibration is common to the channels"),
        channels=channel_values(per, {ch: f.n_gaps for ch, f in fits.items()}),
        also={"mu_at_attenuator_output": {"value": mu, "uncertainty": mu * u_mu_rel},
              "mu_per_detector": mu_d, "dark_rate_hz": channel_values(dark),
              "photon_rate_hz": channel_values(
                  {ch: (f.rate_hz - dark[ch][0], f.u_rate_hz) for ch, f in fits.items()}),
              "dark_span_s": span_dark},
        fits=fits, span_s=span, instrument_settings=_detector_settings(lab), light=light,
        mark="rate")
