"""``mean-photon-number`` bench procedure on the simulated bench."""

from __future__ import annotations

import json

import pytest

from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES


def _run(tmp_path, params, settings=None):
    lab = open_lab(simulated_lab_config(params), PROCEDURES["mean-photon-number"].roles)
    try:
        return run_procedure("mean-photon-number", lab, tmp_path, settings)
    finally:
        lab.close()


@pytest.mark.parametrize(("params", "truth"), [
    ({"seed": 41}, (0.5, 0.1, 2e-4)),
    # A vacuum decoy behind a poor modulator: what is sent is the leak mu1 10^(-ER/10).
    ({"seed": 42, "mu1": 0.8, "mu2": 0.05, "mu3": 0.0, "extinction_ratio_db": 25.0},
     (0.8, 0.05, 0.8 * 10 ** -2.5)),
    ({"seed": 43, "mu1": 0.05, "mu2": 0.01, "mu3": 0.001}, (0.05, 0.01, 0.001)),
])
def test_mean_photon_numbers_recovered(params, truth, tmp_path):
    record = _run(tmp_path, params)
    assert record["status"] == "complete"
    assert record["unit"] == "photons per pulse"
    assert record["value"] == record["also"]["intensities"]["mu1"]["value"]
    assert record["uncertainty"] <= 0.02 * record["value"]
    for name, mu in zip(("mu1", "mu2", "mu3"), truth, strict=True):
        got = record["also"]["intensities"][name]
        assert abs(got["value"] - mu) <= 3 * got["uncertainty"], (name, got, mu)
    rows = (tmp_path / "readings.csv").read_text().splitlines()
    assert rows[0] == "what,index,power_w"
    assert len(rows) - 1 == 4 * record["settings"]["readings"]
    assert (tmp_path / "mean-photon-number.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "result.json").read_text())["simulated"] is True


def test_attenuation_and_calibration_enter_the_result(tmp_path):
    record = _run(tmp_path, {"seed": 44}, {"attenuation_db": 10.0,
                                           "power_meter_calibration_rel": 0.03})
    mu1 = record["also"]["intensities"]["mu1"]
    # The VOA added 10 dB after the source: the meter reads a tenth, the channel gets a tenth.
    assert mu1["value"] == pytest.approx(0.05, rel=0.01)
    assert record["uncertainty"] == pytest.approx(0.03 * record["value"], rel=0.05)


def test_too_few_readings_refused(tmp_path):
    with pytest.raises(ValueError, match="readings must be at least 2"):
        _run(tmp_path, {"seed": 45}, {"readings": 1})
