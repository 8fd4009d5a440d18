"""``mean-photon-number``: the mean photon number per intensity class, from calibrated power.

For each intensity class k the transmitter plays a frame of class k only, and the power meter
reads the average optical power ``P_k``; the light is then blocked and the meter's zero
``P_0`` read the same way. With the pulse (slot) rate ``f`` the transmitter reports, the
photon energy ``h c / lambda`` at the meter's wavelength, and the calibrated loss from the
meter to the channel input ``A`` (``loss_to_channel_db``; the meter reads the light after the
attenuator, which is held at ``attenuation_db`` during the readings):

    mu_k = (P_k - P_0) / (f h c / lambda) * 10^(-A / 10).

Standard uncertainty: the standard error of the mean of the readings (class and zero) and the
meter's calibration (``power_meter_calibration_rel``, a datasheet value; 0 unless given) in
quadrature. The result's value is the signal intensity mu1; mu2 and mu3 are listed beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .acquire import Recorder
from .result import Outcome, Settings

__all__ = ["mean_photon_number", "plot_classes"]

PLANCK_J_S = 6.62607015e-34
SPEED_OF_LIGHT_M_PER_S = 299_792_458.0
# Intensity classes of the decoy-state frame (signal mu1, decoys mu2, mu3).
CLASSES = (0, 1, 2)
CLASS_NAMES = ("mu1", "mu2", "mu3")
FRAME_SLOTS = 1000
FRAME_SEED = 11


def _readings(pm: Any, n: int, label: str, recorder: Recorder,
              planned: int | None = None) -> tuple[float, float]:
    values = []
    for i in range(n):
        w = float(pm.measure_power_w())
        values.append(w)
        if planned is not None:
            recorder.progress = {"points_done": len(recorder.rows) + 1,
                                 "points_planned": planned}
        recorder.add_row((label, i, w))
    arr = np.array(values)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf


def mean_photon_number(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Mean photon number of each intensity class (module docstring)."""
    tx = lab.role("transmitter")
    pm = lab.role("power_meter")
    att = lab.role("attenuator")
    n = int(settings["readings"])
    if n < 2:
        raise ValueError(f"readings must be at least 2 (for the scatter), got {n}")
    wavelength = float(settings["wavelength_nm"])
    pm.set_wavelength_nm(wavelength)
    pm.set_averaging(int(settings["averaging"]))
    recorder.header = ("what", "index", "power_w")
    att.set_enabled(False)
    # The readings: the zero, then each class's.
    planned = n * (1 + len(CLASSES))
    zero, u_zero = _readings(pm, n, "zero (light blocked)", recorder, planned)
    att.set_attenuation_db(float(settings["attenuation_db"]))
    att.set_enabled(True)
    rate = float(tx.slot_rate_hz())
    photon_j = PLANCK_J_S * SPEED_OF_LIGHT_M_PER_S / (wavelength * 1e-9)
    loss_db = float(settings["loss_to_channel_db"])
    scale = 10.0 ** (-loss_db / 10.0) / (rate * photon_j)
    cal = float(settings["power_meter_calibration_rel"])
    rng = np.random.default_rng(FRAME_SEED)
    basis = rng.integers(0, 2, FRAME_SLOTS, dtype=np.uint8)
    bit = rng.integers(0, 2, FRAME_SLOTS, dtype=np.uint8)
    mus: dict[str, dict[str, float]] = {}
    for k, name in zip(CLASSES, CLASS_NAMES, strict=True):
        tx.stop()
        tx.load_frame(basis, bit, np.full(FRAME_SLOTS, k, np.uint8))
        tx.start()
        p, u_p = _readings(pm, n, name, recorder, planned)
        mu = (p - zero) * scale
        u_mu = math.hypot(math.hypot(u_p, u_zero) * scale, cal * mu)
        mus[name] = {"value": mu, "uncertainty": u_mu, "power_w": p, "u_power_w": u_p}
    att.set_enabled(False)
    tx.stop()
    return Outcome(
        quantity="mean photon number of the signal (mu1)", value=mus["mu1"]["value"],
        uncertainty=mus["mu1"]["uncertainty"], unit="photons per pulse",
        estimator=("mu_k = (P_k - P_0) lambda / (f h c) 10^(-A/10) from the mean of the power "
                   "meter's readings with a frame of class k only (P_0: light blocked); u from "
                   "the readings' standard errors and the meter's calibration in quadrature"),
        channels={}, also={"intensities": mus, "zero_w": zero, "u_zero_w": u_zero,
                           "slot_rate_hz": rate, "photon_energy_j": photon_j,
                           "attenuation_to_channel_db": loss_db},
        mark="classes")


def plot_classes(path: Path, outcome: Outcome, *, value_text: str, simulated: bool) -> Path:
    """The three classes' mean photon numbers (log scale) with their uncertainties."""
    from .plots import _figure, _stamp

    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    mus = outcome.also["intensities"]
    names = list(mus)
    values = [max(mus[k]["value"], 1e-12) for k in names]
    errors = [mus[k]["uncertainty"] for k in names]
    ax.errorbar(range(len(names)), values, yerr=errors, fmt="o", color="k", capsize=4)
    for i, k in enumerate(names):
        ax.annotate(f"{mus[k]['value']:.4g} ± {mus[k]['uncertainty']:.2g}", (i, values[i]),
                    textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.axhline(values[0], color="tab:red", ls=":", label=f"mu1 = {value_text}")
    ax.set_xticks(range(len(names)), [f"class {i} ({k})" for i, k in enumerate(names)])
    ax.set_yscale("log")
    ax.set_ylabel("mean photon number (photons per pulse)")
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.legend(fontsize=8)
    _stamp(ax, simulated)
    fig.suptitle("mean photon number per intensity class"
                 + ("  [SIMULATED BENCH]" if simulated else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
