"""``extinction-ratio``: the intensity modulator's extinction ratio from the bias controller's
scan of its transfer curve.

The bias controller is put in manual mode and steps the bias across ``+/- max_bias_v``, never
beyond its configured ``max_modulator_bias_v``, while its monitor tap reads the modulator's output;
a second, fine scan brackets the null found by the first. The Mach-Zehnder transfer curve

    P(V) = P_peak [T_min + (1 - T_min) sin^2(pi (V - V_null) / (2 V_pi))]

is fitted by least squares on log P (so the readings near the null, four decades below the
peak, weigh as much as those near the peak), and ``ER = -10 log10(T_min)`` dB. Standard
uncertainty: the fit covariance (scaled by the residuals) by the delta method. The lock mode
and bias held before the scan are restored afterwards, whatever happens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import curve_fit

from .acquire import Recorder
from .result import Outcome, Settings

__all__ = ["extinction_ratio", "plot_scan"]

# Readings below this are taken as the tap's floor (a log needs a positive power), W.
FLOOR_W = 1e-15
# Set points are rounded to 1 mV (the resolution bias controllers take; drivers refuse finer).
BIAS_DECIMALS = 3


def _model(v: NDArray[np.float64], log_peak: float, log_tmin: float, v_null: float,
           v_pi: float) -> NDArray[np.float64]:
    tmin = math.exp(log_tmin) if log_tmin < 0 else 1.0
    t = tmin + (1.0 - tmin) * np.sin(np.pi * (v - v_null) / (2.0 * v_pi)) ** 2
    return np.asarray(log_peak + np.log(np.maximum(t, 1e-300)))


def _half_period(v: NDArray[np.float64], p: NDArray[np.float64], i_min: int) -> float:
    """Distance from the null at ``i_min`` to its nearest peak on a scan: the nearest reading
    within 5 % of the largest, followed uphill to its local maximum."""
    high = np.flatnonzero(p >= 0.95 * float(p.max()))
    j = int(high[np.argmin(np.abs(high - i_min))])
    step = 1 if j > i_min else -1
    while 0 <= j + step < p.size and p[j + step] > p[j]:
        j += step
    return float(abs(v[j] - v[i_min]))


def _scan(bc: Any, volts: NDArray[np.float64], label: str, recorder: Recorder,
          settle_s: float, planned: int) -> NDArray[np.float64]:
    import time

    out = np.empty(volts.size)
    for i, v in enumerate(volts):
        bc.set_manual_bias_v(float(v))
        if settle_s > 0:
            time.sleep(settle_s)
        out[i] = float(bc.tap_power_w())
        recorder.progress = {"points_done": len(recorder.rows) + 1, "points_planned": planned,
                             "scan": label}
        recorder.add_row((label, float(v), float(bc.bias_v()), float(out[i])))
    return out


def extinction_ratio(lab: Any, recorder: Recorder, settings: Settings) -> Outcome:
    """Extinction ratio of the intensity modulator, dB (module docstring)."""
    from qkdnode.drivers.roles import LockMode

    bc = lab.role("bias_controller")
    span = float(settings["max_bias_v"])
    limits = getattr(bc, "limits", None)
    if limits is not None:  # the scan stays inside the configured limit
        span = min(span, float(limits.max_modulator_bias_v))
    n = int(settings["points"])
    if n < 10:
        raise ValueError(f"points must be at least 10, got {n}")
    recorder.header = ("scan", "set_v", "readback_v", "tap_power_w")
    mode_before = bc.lock_mode()
    bias_before = float(bc.bias_v())
    try:
        bc.set_lock_mode(LockMode.MANUAL)
        coarse_v = np.round(np.linspace(-span, span, n), BIAS_DECIMALS)
        planned = n + n // 2 + 1
        coarse_p = _scan(bc, coarse_v, "coarse", recorder, float(settings["settle_s"]), planned)
        # Start values: the peak reading, the null at the smallest reading, V_pi from the
        # distance between that null and its nearest peak (half a period; the largest reading
        # can be a peak one or more periods further when the scan spans several).
        i_min = int(np.argmin(coarse_p))
        v_pi0 = max(_half_period(coarse_v, coarse_p, i_min), 4.0 * span / n)
        half = 2.0 * (coarse_v[1] - coarse_v[0])
        centre = float(np.clip(coarse_v[i_min], -span + half, span - half))
        fine_v = np.asarray(np.round(np.linspace(centre - half, centre + half, n // 2 + 1),
                                     BIAS_DECIMALS), dtype=np.float64)
        fine_p = _scan(bc, fine_v, "fine", recorder, float(settings["settle_s"]), planned)
    finally:
        try:
            if mode_before == LockMode.MANUAL:
                bc.set_manual_bias_v(bias_before)
            bc.set_lock_mode(mode_before)
        except Exception:  # the safe state still runs; the scan's error matters more
            pass
    v = np.concatenate([coarse_v, fine_v])
    p = np.maximum(np.concatenate([coarse_p, fine_p]), FLOOR_W)
    tmin0 = max(float(p.min() / p.max()), 1e-9)
    p0 = [math.log(float(p.max())), math.log(tmin0), float(v[np.argmin(p)]), v_pi0]
    popt, pcov = curve_fit(_model, v, np.log(p), p0=p0, maxfev=20000)
    u_log_tmin = math.sqrt(max(float(pcov[1, 1]), 0.0))
    er = -10.0 * popt[1] / math.log(10.0)
    u_er = 10.0 * u_log_tmin / math.log(10.0)
    return Outcome(
        quantity="modulator extinction ratio", value=er, uncertainty=u_er, unit="dB",
        estimator=("least squares of log P on the Mach-Zehnder transfer curve over a coarse "
                   "and a fine bias scan; ER = -10 log10(T_min); u from the fit covariance"),
        channels={},
        also={"v_null_v": float(popt[2]), "v_pi_v": float(abs(popt[3])),
              "u_v_pi_v": math.sqrt(max(float(pcov[3, 3]), 0.0)),
              "peak_tap_power_w": math.exp(popt[0]), "points": int(v.size),
              "scan_range_v": [-span, span]},
        fits={0: (v, p, popt)}, mark="scan")


def plot_scan(path: Path, outcome: Outcome, *, value_text: str, simulated: bool) -> Path:
    """Tap power against bias (log scale) with the fitted curve and T_min marked."""
    from .plots import _figure, _stamp

    plt = _figure()
    v, p, popt = outcome.fits[0]
    fig, ax = plt.subplots(figsize=(9.0, 4.5))
    order = np.argsort(v)
    ax.semilogy(v[order] * 1.0, p[order] * 1e6, "o", ms=3, color="k", label="tap readings")
    grid = np.linspace(float(v.min()), float(v.max()), 2000)
    grid = np.sort(np.concatenate([grid, [popt[2]]]))
    ax.semilogy(grid, np.exp(_model(grid, *popt)) * 1e6, color="tab:blue", label="fitted curve")
    floor = math.exp(popt[0] + popt[1]) * 1e6
    ax.axhline(floor, color="tab:red", ls=":", label=f"T_min level: ER = {value_text}")
    ax.axhline(math.exp(popt[0]) * 1e6, color="tab:green", ls=":", label="peak")
    ax.set_xlabel("modulator bias (V)")
    ax.set_ylabel("monitor tap power (µW)")
    # Beside the axes: inside, it hid a null near the scan's end.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _stamp(ax, simulated)
    fig.suptitle("intensity modulator transfer curve" + ("  [SIMULATED BENCH]" if simulated
                                                          else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
