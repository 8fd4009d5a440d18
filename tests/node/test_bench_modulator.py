"""``extinction-ratio`` bench procedure on the simulated bench."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from qkdnode.drivers.roles import LockMode
from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES


def _lab(params, limit=None):
    config = simulated_lab_config(params)
    if limit is not None:
        config = dataclasses.replace(config, instruments=tuple(
            dataclasses.replace(i, settings={**i.settings, "max_modulator_bias_v": limit})
            if i.role == "bias_controller" else i for i in config.instruments))
    return open_lab(config, PROCEDURES["extinction-ratio"].roles)


@pytest.mark.parametrize("er_db", [40.0, 22.5, 12.0])
def test_extinction_ratio_recovered(er_db, tmp_path):
    lab = _lab({"seed": 61, "extinction_ratio_db": er_db})
    try:
        lab.role("bias_controller").set_lock_mode(LockMode.NULL)
        record = run_procedure("extinction-ratio", lab, tmp_path)
        assert lab.role("bias_controller").lock_mode() == LockMode.NULL  # restored
    finally:
        lab.close()
    assert record["unit"] == "dB"
    assert record["uncertainty"] <= 0.02 * record["value"]
    assert abs(record["value"] - er_db) <= max(3 * record["uncertainty"], 1e-6 * er_db)
    assert record["also"]["v_pi_v"] == pytest.approx(4.0, rel=1e-3)
    assert (tmp_path / "extinction-ratio.png").exists()


def test_scan_stays_inside_the_modulator_bias_limit(tmp_path):
    lab = _lab({"seed": 62}, limit=5.0)
    try:
        record = run_procedure("extinction-ratio", lab, tmp_path)
    finally:
        lab.close()
    with (tmp_path / "readings.csv").open() as f:
        volts = [abs(float(row["set_v"])) for row in csv.DictReader(f)]
    assert max(volts) <= 5.0
    assert abs(record["value"] - 40.0) <= max(3 * record["uncertainty"], 1e-4)
