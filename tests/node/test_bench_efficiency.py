"""``detector-efficiency`` bench procedure on the simulated bench."""

from __future__ import annotations

import pytest

from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES


def _run(tmp_path, params, settings=None):
    lab = open_lab(simulated_lab_config(params), PROCEDURES["detector-efficiency"].roles)
    try:
        return run_procedure("detector-efficiency", lab, tmp_path, settings)
    finally:
        lab.close()


@pytest.mark.parametrize(("params", "settings", "truth"), [
    ({"seed": 51}, None, 0.10),
    # A high-efficiency detector with strong afterpulsing and a long dead time.
    ({"seed": 52, "detector_efficiency": 0.6, "afterpulse_probability": 0.2,
      "dead_time_ps": 1_000_000}, None, 0.6),
    # Many dark counts with strong afterpulsing: the counted dark rate (each dark count's
    # afterpulses included) is 13.3 kHz, the Poisson dark rate 10 kHz; subtracting the
    # counted one read 8 % low.
    ({"seed": 55, "detector_efficiency": 0.3, "afterpulse_probability": 0.25,
      "dark_count_rate_hz": 10_000.0}, None, 0.3),
    # A poor detector behind 25 km of fibre (5 dB the lab calibrated) with many dark counts.
    pytest.param({"seed": 53, "detector_efficiency": 0.02, "length_km": 25.0,
                  "dark_count_rate_hz": 5_000.0}, {"loss_to_detector_db": 5.0}, 0.02,
                 marks=pytest.mark.slow),
])
def test_efficiency_recovered(params, settings, truth, tmp_path):
    record = _run(tmp_path, params, settings)
    assert record["status"] == "complete"
    assert record["uncertainty"] <= 0.02 * record["value"]
    assert abs(record["value"] - truth) <= 3 * record["uncertainty"]
    for entry in record["channels"].values():
        assert abs(entry["value"] - truth) <= 3 * entry["uncertainty"]
    rows = (tmp_path / "readings.csv").read_text().splitlines()
    assert rows[0] == "what,index,power_w"
    assert (tmp_path / "detector-efficiency.png").exists()


def test_calibration_uncertainty_is_common_to_the_channels(tmp_path):
    record = _run(tmp_path, {"seed": 54}, {"power_meter_calibration_rel": 0.05,
                                           "target_counts": 2000})
    # 5 % of the photon number cannot average away over four channels.
    assert record["uncertainty"] >= 0.05 * record["value"]
