"""``mean-photon-number`` on the lab's transmitter, power meter and attenuator (or the simulated
bench without ``--hil-config``, where the configured intensities are known)."""

from __future__ import annotations

import pytest

from qkdnode.node.bench import open_lab, run_procedure
from qkdnode.node.bench.runner import PROCEDURES


@pytest.mark.hil
@pytest.mark.roles("transmitter", "power_meter", "attenuator")
def test_mean_photon_number(hil_lab, tmp_path):
    lab = open_lab(hil_lab.config, PROCEDURES["mean-photon-number"].roles)
    try:
        record = run_procedure("mean-photon-number", lab, tmp_path)
        assert lab.role("attenuator").enabled() is False
    finally:
        lab.close()
    assert record["status"] == "complete"
    assert 0 < record["uncertainty"] <= 0.02 * record["value"]
    if hil_lab.simulated:
        source = hil_lab.config.bench.params().source
        for name in ("mu1", "mu2"):
            got = record["also"]["intensities"][name]
            assert abs(got["value"] - getattr(source, name)) <= 3 * got["uncertainty"]
