"""``extinction-ratio`` and ``detector-efficiency`` on the lab (or the simulated bench without
``--hil-config``, where the configured values are known)."""

from __future__ import annotations

import pytest

from qkdnode.node.bench import open_lab, run_procedure
from qkdnode.node.bench.runner import PROCEDURES


@pytest.mark.hil
@pytest.mark.roles("bias_controller")
def test_extinction_ratio(hil_lab, tmp_path):
    lab = open_lab(hil_lab.config, PROCEDURES["extinction-ratio"].roles)
    try:
        mode = lab.role("bias_controller").lock_mode()
        record = run_procedure("extinction-ratio", lab, tmp_path)
        assert lab.role("bias_controller").lock_mode() == mode
    finally:
        lab.close()
    assert record["status"] == "complete"
    assert record["uncertainty"] <= 0.02 * record["value"]
    if hil_lab.simulated:
        truth = hil_lab.config.bench.params().source.extinction_ratio_db
        assert abs(record["value"] - truth) <= max(3 * record["uncertainty"], 1e-6 * truth)


@pytest.mark.hil
@pytest.mark.roles("time_tagger", "transmitter", "attenuator", "detector", "power_meter")
def test_detector_efficiency(hil_lab, tmp_path):
    settings = {}
    if hil_lab.simulated:
        # The lab's calibration of the loss from the power meter to the detectors: the
        # simulated lab's fibre; a real lab file's run uses the procedure's settings.
        fibre = hil_lab.config.bench.params().fibre
        settings = {"loss_to_detector_db": fibre.loss_db_per_km * fibre.length_km
                    + fibre.insertion_loss_db, "target_counts": 5000}
    lab = open_lab(hil_lab.config, PROCEDURES["detector-efficiency"].roles)
    try:
        record = run_procedure("detector-efficiency", lab, tmp_path, settings)
    finally:
        lab.close()
    assert record["status"] == "complete"
    assert 0 < record["uncertainty"] <= 0.02 * record["value"]
    if hil_lab.simulated:
        truth = hil_lab.config.bench.params().detectors[0].efficiency
        assert abs(record["value"] - truth) <= 3 * record["uncertainty"]


@pytest.mark.hil
@pytest.mark.roles("time_tagger", "transmitter", "bias_controller", "attenuator", "detector")
def test_qber_scan_finds_the_working_point(hil_lab, tmp_path):
    lab = open_lab(hil_lab.config, PROCEDURES["qber-scan"].roles)
    try:
        mode = lab.role("bias_controller").lock_mode()
        record = run_procedure("qber-scan", lab, tmp_path)
        assert lab.role("bias_controller").lock_mode() == mode
    finally:
        lab.close()
    assert record["status"] == "complete"
    assert record["uncertainty"] > 0
    assert (tmp_path / "qber-scan.png").exists()
    if hil_lab.simulated:
        truth = hil_lab.config.bench.params().source.bias_null_v
        assert abs(record["value"] - truth) <= 3 * record["uncertainty"]
