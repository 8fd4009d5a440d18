"""``extinction-ratio`` bench procedure on the simulated bench."""

from __future__ import annotations

import csv
import json

import pytest

from qkdnode.drivers.errors import TransportError
from qkdnode.drivers.roles import LockMode
from qkdnode.node.bench import run_procedure


@pytest.mark.parametrize("er_db", [40.0, 22.5, 12.0])
def test_extinction_ratio_recovered(er_db, tmp_path, modulator_lab):
    lab = modulator_lab("extinction-ratio", {"seed": 61, "extinction_ratio_db": er_db})
    try:
        lab.role("bias_controller").set_lock_mode(LockMode.NULL)
        record = run_procedure("extinction-ratio", lab, tmp_path)
        assert lab.role("bias_controller").lock_mode() == LockMode.NULL  # restored
    finally:
        lab.close()
    assert record["unit"] == "dB"
    assert record["uncertainty"] <= 0.02 * record["value"]
    assert abs(record["value"] - er_db) <= 3 * record["uncertainty"]
    assert record["also"]["v_pi_v"] == pytest.approx(4.0, rel=1e-3)
    assert (tmp_path / "extinction-ratio.png").exists()


@pytest.mark.parametrize("seed", [1, 5])
def test_extinction_ratio_when_the_largest_reading_is_periods_from_the_null(seed, tmp_path,
                                                                          modulator_lab):
    # With the null at -7 V and V_pi 4 V the +-10 V scan holds nulls at -7, 1 and 9 V and peaks
    # at -3, 5 V; on these seeds the tap's noise puts the smallest reading at 9 V and the largest
    # at -3 V, 1.5 periods away: V_pi's start value must come from the nearest peak (12 V sent
    # the fit to 79 dB).
    lab = modulator_lab("extinction-ratio", {"seed": seed, "extinction_ratio_db": 12.0})
    try:
        record = run_procedure("extinction-ratio", lab, tmp_path)
    finally:
        lab.close()
    assert abs(record["value"] - 12.0) <= 3 * record["uncertainty"]
    assert record["uncertainty"] <= 0.02 * 12.0
    assert record["also"]["v_pi_v"] == pytest.approx(4.0, rel=1e-3)


def test_scan_stays_inside_the_modulator_bias_limit(tmp_path, modulator_lab):
    lab = modulator_lab("extinction-ratio", {"seed": 62}, limit=5.0)
    try:
        record = run_procedure("extinction-ratio", lab, tmp_path)
    finally:
        lab.close()
    with (tmp_path / "readings.csv").open() as f:
        volts = [abs(float(row["set_v"])) for row in csv.DictReader(f)]
    assert max(volts) <= 5.0
    assert abs(record["value"] - 40.0) <= 3 * record["uncertainty"]


class _BiasLinkDrops:
    """The bias controller's transport, dropping on the ``fail_at``-th bias setting (once), as a
    VISA or serial link that fails mid-scan."""

    def __init__(self, transport, fail_at):
        self._transport = transport
        self._left = fail_at

    def query(self, command):
        if command.startswith("MZM:HOLD:VOLTAGE:"):
            self._left -= 1
            if self._left == 0:
                raise TransportError("bias controller at sim://bench/bias: link lost")
        return self._transport.query(command)

    def __getattr__(self, name):
        return getattr(self._transport, name)


def test_interrupted_scan_keeps_each_point_on_disk(tmp_path, monkeypatch, modulator_lab):
    from qkdnode.drivers import registry

    original = registry.open_transport
    seen = []

    def opening(resource, **options):
        transport = original(resource, **options)
        return _BiasLinkDrops(transport, 31) if resource.endswith("/bias") else transport

    monkeypatch.setattr(registry, "open_transport", opening)
    lab = modulator_lab("extinction-ratio", {"seed": 62})
    try:
        bc = lab.role("bias_controller")
        bc.set_lock_mode(LockMode.NULL)
        real_tap = bc.tap_power_w

        def tap_power_w():
            # Each completed point is on disk before the next reading is taken.
            with (tmp_path / "readings.csv").open() as f:
                seen.append(len(list(csv.DictReader(f))))
            return real_tap()

        monkeypatch.setattr(bc, "tap_power_w", tap_power_w, raising=False)
        # The first point's reading comes before any row exists: an empty file to count.
        (tmp_path / "readings.csv").write_text("scan,set_v,readback_v,tap_power_w\n")
        with pytest.raises(TransportError, match="link lost"):
            run_procedure("extinction-ratio", lab, tmp_path)
        assert bc.lock_mode() == LockMode.NULL  # restored after the failure
    finally:
        lab.close()
    assert seen == list(range(30))
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "failed"
    assert data["complete"] is False
    assert data["points_done"] == 30
    assert "link lost" in data["error"]
    with (tmp_path / "readings.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30
    assert {r["scan"] for r in rows} == {"coarse"}
