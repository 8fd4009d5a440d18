"""``jitter`` bench procedure on the simulated bench: the detector's configured jitter FWHM is
recovered with the tagger's contribution removed; the folding and peak fit on their own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES
from qkdnode.node.bench.timing import fit_peak, fold


def _jitter(tmp_path, params, settings=None):
    lab = open_lab(simulated_lab_config(params), PROCEDURES["jitter"].roles)
    try:
        return run_procedure("jitter", lab, tmp_path, settings)
    finally:
        lab.close()


@pytest.mark.parametrize("params", [
    {"seed": 31},
    # Jitter comparable to the tagger's own (removing it matters), and a broad one.
    {"seed": 32, "jitter_fwhm_ps": 25.0},
    pytest.param({"seed": 33, "jitter_fwhm_ps": 350.0, "dark_count_rate_hz": 20_000.0},
                 marks=pytest.mark.slow),
])
def test_jitter_recovers_the_configured_fwhm(params, tmp_path):
    record = _jitter(tmp_path, params)
    truth = params.get("jitter_fwhm_ps", 100.0)
    assert record["status"] == "complete"
    assert record["unit"] == "ps"
    assert record["uncertainty"] <= 0.05 * record["value"]
    assert abs(record["value"] - truth) <= 3 * record["uncertainty"]
    assert (tmp_path / "jitter.png").stat().st_size > 20_000
    for entry in record["channels"].values():  # fitted on clicks in the peak, not on gaps
        assert entry["n_clicks"] > 1000
        assert "n_gaps" not in entry


def test_jitter_without_sync_tags_names_the_setting(tmp_path):
    with pytest.raises(ValueError, match="sync tags on channel 7 are too few"):
        _jitter(tmp_path, {"seed": 34}, {"sync_channel": 7, "target_counts": 200})


def test_fold_and_fit_on_drawn_clicks():
    rng = np.random.default_rng(5)
    period, k, sigma = 800.0, 1000, 30.0
    drift = 1 + 3e-6  # the sync tags follow a clock 3 ppm fast
    sync = np.round(np.arange(50) * k * period * drift).astype(np.int64)
    slots = rng.integers(0, 49 * k, 20_000)
    clicks = np.sort(np.round(slots * period * drift + 123.0
                              + rng.normal(0, sigma, slots.size)).astype(np.int64))
    floor = np.sort(rng.integers(0, int(sync[-1]), 2_000))
    phase, p = fold(np.sort(np.concatenate([clicks, floor])), sync, k)
    assert p == pytest.approx(period * drift, rel=1e-8)
    fit = fit_peak(phase, p)
    assert abs(fit.sigma_ps - math.sqrt(sigma ** 2 + 1 / 12)) <= 3 * fit.u_sigma_ps
    assert fit.peak_fraction == pytest.approx(20_000 / 22_000, abs=0.01)


@pytest.mark.parametrize("latencies", [(0.0, 120.0, 37.5, 480.0), (300.0, 0.0, 0.0, 55.0)])
def test_delay_alignment_recovers_the_latency_differences(latencies, tmp_path):
    params = {"seed": 35, **{f"latency_ps_{d}": v for d, v in
                             zip(("x0", "x1", "z0", "z1"), latencies, strict=True)}}
    lab = open_lab(simulated_lab_config(params), PROCEDURES["delay-alignment"].roles)
    try:
        record = run_procedure("delay-alignment", lab, tmp_path, {"apply": True})
    finally:
        lab.close()
    assert record["also"]["applied"] is True
    for (ch, entry), lat in zip(sorted(record["channels"].items()), latencies, strict=True):
        want = latencies[0] - lat
        assert abs(entry["value"] - want) <= max(3 * entry["uncertainty"], 1e-9), (ch, entry)
        assert entry["n_clicks"] > 0
    spread = max(latencies) - min(latencies)
    assert abs(record["value"] - spread) <= 3 * record["uncertainty"]
    assert (tmp_path / "delay-alignment.png").exists()
