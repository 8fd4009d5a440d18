"""``qber-scan`` bench procedure on the simulated bench, and its slot assignment."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from qkdnode.drivers.roles import LockMode
from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.qber import assign_positions, frame_offset
from qkdnode.node.bench.runner import PROCEDURES


def _lab(params, limit=None):
    config = simulated_lab_config(params)
    if limit is not None:
        config = dataclasses.replace(config, instruments=tuple(
            dataclasses.replace(i, settings={**i.settings, "max_modulator_bias_v": limit})
            if i.role == "bias_controller" else i for i in config.instruments))
    return open_lab(config, PROCEDURES["qber-scan"].roles)


@pytest.mark.parametrize("params", [
    {"seed": 71, "bias_null_v": 1.0},
    # A null far from the starting bias (1 V), a worse ER and misalignment.
    {"seed": 72, "bias_null_v": -2.3, "extinction_ratio_db": 20.0, "misalignment": 0.03},
    # Detector latencies of several slots: the frame offsets must be found per channel.
    # (The procedure takes the minimum of least |V|: the other null, 2.1 - 6 V, is farther.)
    {"seed": 73, "bias_null_v": 2.1, "v_pi": 3.0, "latency_ps_x0": 3456,
     "latency_ps_x1": 1200, "latency_ps_z0": 7890, "latency_ps_z1": 250},
])
def test_best_set_point_recovered(params, tmp_path):
    lab = _lab(params)
    try:
        lab.role("bias_controller").set_lock_mode(LockMode.NULL)
        record = run_procedure("qber-scan", lab, tmp_path)
        assert lab.role("bias_controller").lock_mode() == LockMode.NULL  # restored
    finally:
        lab.close()
    null = params["bias_null_v"]
    assert record["unit"] == "V"
    assert record["simulated"] is True
    assert 0 < record["uncertainty"] < 0.05
    assert abs(record["value"] - null) <= 3 * record["uncertainty"]
    also = record["also"]
    # The QBER at the working point: above the misalignment floor, well below 11 %, and the
    # two bases agree (the bench's encoding error is the same in both).
    floor = params.get("misalignment", 0.005)
    assert floor - 3 * also["u_qber_at_best"] <= also["qber_at_best"] < 0.11
    x, z = also["bases"]["X"], also["bases"]["Z"]
    assert abs(x["qber_at_best"] - z["qber_at_best"]) <= 4 * np.hypot(
        x["u_qber_at_best"], z["u_qber_at_best"])
    assert (tmp_path / "qber-scan.png").stat().st_size > 0
    assert json.loads((tmp_path / "result.json").read_text())["value"] == record["value"]
    with (tmp_path / "readings.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["scan"] for r in rows} == {"coarse", "fine"}


def test_scan_stays_inside_the_modulator_bias_limit(tmp_path):
    lab = _lab({"seed": 74, "bias_null_v": 0.5}, limit=4.0)
    try:
        record = run_procedure("qber-scan", lab, tmp_path)
    finally:
        lab.close()
    with (tmp_path / "readings.csv").open() as f:
        volts = [abs(float(row["set_v"])) for row in csv.DictReader(f)]
    assert max(volts) <= 4.0
    assert record["also"]["scan_range_v"] == [-4.0, 4.0]
    assert abs(record["value"] - 0.5) <= 3 * record["uncertainty"]


def test_slot_positions_and_frame_offset_from_synthetic_tags():
    rng = np.random.default_rng(5)
    period, k, length, offset, latency = 800.0, 20_000, 1000, 377, 2_345.0
    pattern = rng.choice([-1.0, 0.0, 1.0], length)
    sync_slots = np.arange(0, 30 * k, k)
    sync = np.rint(sync_slots * period + 40.0).astype(np.int64)
    # Clicks in slots where the pattern is +1 (frame position = (slot - offset) mod length),
    # plus latency and jitter.
    slots = rng.integers(0, 29 * k, 20_000)
    slots = slots[pattern[(slots - offset) % length] > 0]
    clicks = np.sort(np.rint(slots * period + latency + rng.normal(0, 30, slots.size))
                     ).astype(np.int64)
    pos = assign_positions(clicks, sync, k, length)
    assert (pos >= 0).all()
    hist = np.bincount(pos, minlength=length).astype(np.float64)
    found = frame_offset(hist, pattern)
    # Every click lands on a +1 position of the pattern once shifted back by the offset found.
    assert (pattern[(pos - found) % length] > 0).all()
    # The shift found differs from the true one only by the latency's whole slots.
    assert (found - offset) % length == round(latency / period) % length


def test_too_few_sync_tags_is_a_clear_error():
    with pytest.raises(ValueError, match="sync tags are too few"):
        assign_positions(np.arange(5, dtype=np.int64), np.array([0, 10], np.int64), 10, 10)
