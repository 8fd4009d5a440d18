"""PNG plots of the bench procedures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .gaps import GapFit, mixture_density

__all__ = ["plot_gaps"]

# Histogram bins of the inter-arrival plot.
GAP_BINS = 120


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stamp(ax: Any, simulated: bool) -> None:
    if simulated:
        ax.text(0.5, 0.5, "SIMULATED", transform=ax.transAxes, fontsize=40, color="red",
                alpha=0.25, ha="center", va="center", rotation=20)


def plot_gaps(path: Path, timestamps_ps: NDArray[np.int64], channels: NDArray[np.int32],
              fits: Mapping[int, GapFit], *, title: str, mark: str, value_text: str,
              simulated: bool) -> Path:
    """Inter-arrival histogram per channel (counts per bin, log scale) with the fitted model.

    ``mark`` is ``"cutoff"`` (the dead time marked), ``"excess"`` (the afterpulse excess over
    the exponential baseline shaded) or ``"rate"`` (the baseline's slope).
    """
    plt = _figure()
    n = len(fits)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (ch, fit) in zip(axes.flat, sorted(fits.items()), strict=False):
        g = np.diff(timestamps_ps[channels == ch]).astype(np.float64) * 1e-12
        if mark == "cutoff":
            hi = fit.dead_time_s + 6.0 / max(fit.rate_hz + (fit.q * fit.lam_hz if fit.q else 0),
                                             1.0)
            hi = min(hi, float(np.quantile(g, 0.999)))
        elif mark == "excess" and math.isfinite(fit.lam_hz):
            hi = fit.dead_time_s + 8.0 / (fit.rate_hz + fit.lam_hz)
        else:
            hi = float(np.quantile(g, 0.999))
        lo = max(0.0, fit.dead_time_s - 0.1 * (hi - fit.dead_time_s))
        edges = np.linspace(lo, hi, GAP_BINS + 1)
        counts, _ = np.histogram(g, edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        width = edges[1] - edges[0]
        unit, scale = ("µs", 1e6) if hi > 2e-6 else ("ns", 1e9)
        ax.step(centres * scale, np.maximum(counts, 0.5), where="mid", color="k", lw=0.8,
                label=f"gaps (N = {fit.n_gaps})")
        s = np.clip(centres - fit.dead_time_s, 0.0, None)
        lam = fit.lam_hz if math.isfinite(fit.lam_hz) else 0.0
        model = fit.n_gaps * width * mixture_density(s, fit.rate_hz, fit.q, lam)
        model[centres < fit.dead_time_s] = np.nan
        base = fit.n_gaps * width * (1 - fit.q) * fit.rate_hz * np.exp(-fit.rate_hz * s)
        base[centres < fit.dead_time_s] = np.nan
        ax.plot(centres * scale, model, color="tab:blue", label="fitted model")
        ax.plot(centres * scale, base, "--", color="tab:green",
                label=f"exponential baseline, r = {fit.rate_hz:.4g} Hz")
        if mark == "excess":
            ax.fill_between(centres * scale, base, model, where=model > base, color="tab:orange",
                            alpha=0.4, label=f"afterpulse excess, p = "
                                             f"{fit.afterpulse_probability:.4f}")
        ax.axvline(fit.dead_time_s * scale, color="tab:red", ls=":",
                   label=f"cutoff (dead time) {fit.dead_time_s * 1e9:.2f} ns")
        ax.set_yscale("log")
        ax.set_xlabel(f"time to the next click on the channel ({unit})")
        ax.set_ylabel(f"gaps per {width * scale:.3g} {unit} bin")
        ax.set_title(f"channel {ch}")
        ax.legend(fontsize=7, loc="upper right")
        _stamp(ax, simulated)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: {value_text}" + ("  [SIMULATED BENCH]" if simulated else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
