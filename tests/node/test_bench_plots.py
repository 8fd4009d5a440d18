"""What the bench plots mark, read back from the figures before they are saved: delay
alignment draws each channel against the reference peak with its offset marked, a short dead
time gets an inset around its edge, every panel names its channel's value and units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdnode.node.bench.gaps import fit_gaps
from qkdnode.node.bench.plots import plot_gaps
from qkdnode.node.bench.timing import fit_peak, fold, plot_peaks

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plot functions save, in order."""
    from matplotlib.figure import Figure

    figures = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _synced_clicks(centres_ps, rng):
    """Sync tags every 1000 slots of 1000 ps, and per channel Gaussian clicks (sigma 40 ps)
    about ``centre`` in their slot."""
    period, k = 1000, 1000
    sync = np.arange(0, 200 * k * period, k * period, dtype=np.int64)
    t, c = [sync], [np.zeros(sync.size, np.int32)]
    for ch, centre in centres_ps.items():
        slots = rng.integers(0, 199 * k, 3000)
        t.append((slots * period + centre + rng.normal(0, 40, slots.size)).astype(np.int64))
        c.append(np.full(slots.size, ch, np.int32))
    order = np.argsort(np.concatenate(t), kind="stable")
    return np.concatenate(t)[order], np.concatenate(c)[order], sync, k


def test_delay_plot_marks_each_peak_against_the_reference(tmp_path, saved_figures):
    rng = np.random.default_rng(7)
    centres = {1: 210.0, 2: 0.0, 3: 65.0, 4: 890.0}
    t, c, sync, k = _synced_clicks(centres, rng)
    fits = {ch: fit_peak(*fold(t[c == ch], sync, k)) for ch in centres}
    text = {ch: f"delay to add {ch}" for ch in centres}
    plot_peaks(tmp_path / "d.png", fits, t, c, 0, value_text="x ps", simulated=True,
               title="delays", channel_text=text, reference=1)
    (fig,) = saved_figures
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    texts = _texts(fig)
    assert any("SIMULATED" in s for s in texts)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4
    for ax, ch in zip(panels, sorted(centres), strict=True):
        assert ax.get_title() == f"channel {ch}: delay to add {ch}"
        assert ax.get_xlabel() == "click time relative to channel 1's peak (ps)"
        assert ax.get_ylabel().startswith("clicks per ")
        assert ax.get_ylabel().endswith("ps bin")
        # The vertical markers: the reference peak at 0 and this channel's peak where it is
        # relative to the reference, within half a period (890 ps is 320 ps after 210 ps,
        # 0 ps is 210 ps before it).
        marks = sorted(float(line.get_xdata()[0]) for line in ax.lines
                       if line.get_linestyle() == ":")
        want = (centres[ch] - centres[1] + 500) % 1000 - 500
        assert marks == pytest.approx(sorted([0.0, want]), abs=5.0)
        labels = [x.get_text() for x in ax.get_legend().get_texts()]
        (this,) = [x for x in labels if x.startswith("this peak, ")]
        assert float(this.removeprefix("this peak, ").removesuffix(" ps")) == pytest.approx(
            want, abs=5.0)
        assert "reference peak (channel 1)" in labels


def test_jitter_plot_marks_the_measured_fwhm(tmp_path, saved_figures):
    rng = np.random.default_rng(8)
    t, c, sync, k = _synced_clicks({1: 400.0}, rng)
    fits = {1: fit_peak(*fold(t[c == 1], sync, k))}
    plot_peaks(tmp_path / "j.png", fits, t, c, 0, value_text="94 ps", simulated=False,
               channel_text={1: "FWHM (tagger removed) 94 ps"})
    (fig,) = saved_figures
    texts = _texts(fig)
    assert not any("SIMULATED" in s for s in texts)
    fwhm = 2.0 * math.sqrt(2.0 * math.log(2.0)) * fits[1].sigma_ps
    assert f"measured FWHM {fwhm:.1f} ps (arrow)" in texts
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_xlabel() == "click time relative to the slot's peak (ps)"
    assert ax.get_title() == "channel 1: FWHM (tagger removed) 94 ps"


def _dead_time_clicks(dead_ps, rate_hz, n, rng):
    gaps = dead_ps + rng.exponential(1e12 / rate_hz, n)
    return np.cumsum(gaps).astype(np.int64)


@pytest.mark.parametrize(("dead_ps", "inset"), [(50_000, True), (3_000_000, False)])
def test_a_short_dead_time_gets_an_inset_around_its_edge(dead_ps, inset, tmp_path,
                                                          saved_figures):
    rng = np.random.default_rng(9)
    t = _dead_time_clicks(dead_ps, 2e5, 20_000, rng)
    c = np.ones(t.size, np.int32)
    fit = fit_gaps(t, timing_rms_ps=50.0)
    plot_gaps(tmp_path / "g.png", t, c, {1: fit}, title="dead time", mark="cutoff",
              value_text="50 ns", simulated=True, channel_text={1: "dead time 50 ns"})
    (fig,) = saved_figures
    main = fig.axes[0]
    assert main.get_title() == "channel 1: dead time 50 ns"
    assert main.get_xlabel().startswith("time to the next click on the channel (")
    insets = [ax for ax in main.child_axes if ax.get_xlabel() == "gap (ns)"]
    assert len(insets) == (1 if inset else 0)
    if inset:
        (ax,) = insets
        lo, hi = ax.get_xlim()
        assert lo < fit.dead_time_s * 1e9 < hi
        marks = [float(line.get_xdata()[0]) for line in ax.lines]
        assert marks == pytest.approx([fit.dead_time_s * 1e9])
        assert any(s.startswith(f"edge {fit.dead_time_s * 1e9:.2f} ± ") for s in _texts(fig))
