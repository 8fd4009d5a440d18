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
# A dead time shorter than this fraction of the plotted gap range sits in the first bins, where
# its edge cannot be read: the plot adds an inset on a linear axis around the edge.
EDGE_INSET_FRACTION = 0.05
# The inset spans the dead time from 10 % below it to 30 % above it (at least 20 ns above),
# in this many bins.
EDGE_INSET_BINS = 60


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
              simulated: bool, channel_text: Mapping[int, str] | None = None) -> Path:
    """Inter-arrival histogram per channel (counts per bin, log scale) with the fitted model.

    ``mark`` is ``"cutoff"`` (the dead time marked, with an inset around the edge when it is
    too short to read on the whole range), ``"excess"`` (the afterpulse excess over the
    exponential baseline shaded) or ``"rate"`` (the baseline's slope). ``channel_text`` (the
    channel's extracted value) goes into each panel's title.
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
        ax.set_title(f"channel {ch}" + (f": {channel_text[ch]}"
                                         if channel_text and ch in channel_text else ""))
        ax.legend(fontsize=7, loc="upper right")
        _stamp(ax, simulated)
        if mark == "cutoff" and fit.dead_time_s < EDGE_INSET_FRACTION * (hi - lo):
            _edge_inset(ax, g, fit)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: {value_text}" + ("  [SIMULATED BENCH]" if simulated else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _edge_inset(ax: Any, gaps_s: NDArray[np.float64], fit: GapFit) -> None:
    """Gaps around the dead time on a linear axis (ns), the edge and its uncertainty marked."""
    d = fit.dead_time_s
    edges = np.linspace(0.9 * d, d + max(0.3 * d, 20e-9), EDGE_INSET_BINS + 1)
    counts, _ = np.histogram(gaps_s, edges)
    # Lower left: below the histogram, which falls from the top left corner.
    inset = ax.inset_axes((0.1, 0.1, 0.32, 0.27))
    inset.stairs(counts, edges * 1e9, color="k", lw=0.8)
    inset.set_ylim(0, 1.45 * max(int(counts.max()), 1))
    inset.axvspan((d - fit.u_dead_time_s) * 1e9, (d + fit.u_dead_time_s) * 1e9,
                  color="tab:red", alpha=0.3)
    inset.axvline(d * 1e9, color="tab:red", ls=":")
    inset.set_xlabel("gap (ns)", fontsize=7)
    inset.set_ylabel(f"per {(edges[1] - edges[0]) * 1e9:.2g} ns", fontsize=7)
    inset.tick_params(labelsize=7)
    inset.text(0.97, 0.95, f"edge {d * 1e9:.2f} ± {fit.u_dead_time_s * 1e9:.2g} ns",
               transform=inset.transAxes, ha="right", va="top", fontsize=7, color="tab:red")
