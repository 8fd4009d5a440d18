"""``qber-scan`` bench procedure on the simulated bench, and its slot assignment."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from qkdnode.drivers.errors import TransportError
from qkdnode.drivers.roles import LockMode
from qkdnode.node.bench import run_procedure
from qkdnode.node.bench.qber import assign_positions, check_frame_fits_sync, frame_offset


@pytest.mark.parametrize("params", [
    {"seed": 71, "bias_null_v": 1.0},
    # A null far from the starting bias (1 V), a worse ER and misalignment.
    {"seed": 72, "bias_null_v": -2.3, "extinction_ratio_db": 20.0, "misalignment": 0.03},
    # Detector latencies of several slots: the frame offsets must be found per channel.
    # (The procedure takes the minimum of least |V|: the other null, 2.1 - 6 V, is farther.)
    {"seed": 73, "bias_null_v": 2.1, "v_pi": 3.0, "latency_ps_x0": 3456,
     "latency_ps_x1": 1200, "latency_ps_z0": 7890, "latency_ps_z1": 250},
])
def test_best_set_point_recovered(params, tmp_path, modulator_lab):
    lab = modulator_lab("qber-scan", params)
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


def test_scan_stays_inside_the_modulator_bias_limit(tmp_path, modulator_lab):
    lab = modulator_lab("qber-scan", {"seed": 74, "bias_null_v": 0.5}, limit=4.0)
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


def test_frame_that_does_not_fit_the_sync_period_is_refused_up_front(tmp_path, modulator_lab):
    lab = modulator_lab("qber-scan", {"seed": 75})
    try:
        bc = lab.role("bias_controller")
        bc.set_lock_mode(LockMode.NULL)
        # The simulated lab's sync comes every 10^6 slots: 768 does not divide it.
        with pytest.raises(ValueError, match=(
                r"frame_slots = 768 does not divide the 1000000 slots between sync tags "
                r"\(sync_channel 0\).*fit: .*800.*1000")):
            run_procedure("qber-scan", lab, tmp_path, {"frame_slots": 768})
        assert bc.lock_mode() == LockMode.NULL  # never touched
        assert lab.role("attenuator").enabled() is False
    finally:
        lab.close()
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "failed"
    assert data["complete"] is False
    assert data["points_done"] == 0
    assert "frame_slots = 768" in data["error"]


def test_frame_lengths_suggested_divide_the_sync_period():
    with pytest.raises(ValueError, match="fit: ") as info:
        check_frame_fits_sync(1000, 12_345, 3)
    suggested = [int(x) for x in str(info.value).rsplit("fit: ", 1)[1].split(", ")]
    assert suggested
    assert all(12_345 % d == 0 and d >= 64 for d in suggested)
    check_frame_fits_sync(1000, 7_000, 3)  # whole frames per sync period: accepted


class _FailingTransport:
    """The bias controller's transport, failing once on the ``fail_at``-th bias set point, as a
    link that drops (the error a real VISA or serial transport raises), or as Ctrl-C."""

    def __init__(self, transport, fail_at, error):
        self._transport = transport
        self._left = fail_at
        self._error = error

    def query(self, command):
        if command.startswith("MZM:HOLD:VOLTAGE:"):
            self._left -= 1
            if self._left == 0:
                raise self._error
        return self._transport.query(command)

    def __getattr__(self, name):
        return getattr(self._transport, name)


@pytest.mark.parametrize("error", [
    TransportError("bias controller at sim://bench/bias: link lost"), KeyboardInterrupt()])
def test_interrupted_scan_keeps_its_points_and_leaves_the_lab_safe(error, tmp_path,
                                                                    monkeypatch, modulator_lab):
    from qkdnode.drivers import registry

    original = registry.open_transport

    def opening(resource, **options):
        transport = original(resource, **options)
        return _FailingTransport(transport, 8, error) if resource.endswith("/bias") else (
            transport)

    monkeypatch.setattr(registry, "open_transport", opening)
    lab = modulator_lab("qber-scan", {"seed": 76, "bias_null_v": 1.0})
    try:
        bc = lab.role("bias_controller")
        bc.set_lock_mode(LockMode.NULL)
        with pytest.raises(type(error)):
            run_procedure("qber-scan", lab, tmp_path)
        # Safe state: lock mode restored, light blocked, transmitter and tagger stopped.
        assert bc.lock_mode() == LockMode.NULL
        assert lab.role("attenuator").enabled() is False
        tx = lab.role("transmitter").transport
        assert tx.query("OUTP1?").strip() == tx.query("OUTP2?").strip() == "0"
    finally:
        lab.close()
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == ("interrupted" if isinstance(error, KeyboardInterrupt)
                              else "failed")
    assert data["complete"] is False
    assert "value" not in data
    # Seven set points completed before the eighth bias setting failed.
    assert data["points_done"] == 7
    assert data["progress"] == {"points_done": 7, "points_planned": 36, "scan": "coarse"}
    with (tmp_path / "readings.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    assert all(r["scan"] == "coarse" for r in rows)
    assert all(int(r["sifted_x"]) + int(r["sifted_z"]) > 0 for r in rows)
    volts = [float(r["set_v"]) for r in rows]
    assert volts == sorted(volts)
    assert volts[0] == -10.0
    tags = (tmp_path / "tags.csv").read_text().splitlines()
    assert len(tags) - 1 == data["tags"]["count"] > 0
