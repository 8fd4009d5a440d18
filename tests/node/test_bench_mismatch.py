"""``efficiency-mismatch`` bench procedure on the simulated bench."""

from __future__ import annotations

import pytest

from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES


def _run(tmp_path, params, settings=None):
    lab = open_lab(simulated_lab_config(params), PROCEDURES["efficiency-mismatch"].roles)
    try:
        return run_procedure("efficiency-mismatch", lab, tmp_path, settings)
    finally:
        lab.close()


@pytest.mark.parametrize("efficiencies", [
    (0.10, 0.10, 0.10, 0.08),
    pytest.param((0.30, 0.15, 0.30, 0.30), marks=pytest.mark.slow),
    pytest.param((0.10, 0.10, 0.10, 0.10), marks=pytest.mark.slow),
])
def test_relative_efficiencies_recovered(efficiencies, tmp_path):
    params = {"seed": 71, **{f"detector_efficiency_{d}": e
                             for d, e in zip(("x0", "x1", "z0", "z1"), efficiencies,
                                             strict=True)}}
    record = _run(tmp_path, params)
    mean = sum(efficiencies) / 4
    for (ch, entry), eta in zip(sorted(record["channels"].items()), efficiencies, strict=True):
        assert abs(entry["value"] - eta / mean) <= 3 * entry["uncertainty"], (ch, entry)
    ratio = min(efficiencies) / max(efficiencies)
    if ratio < 1:
        assert record["uncertainty"] <= 0.02 * record["value"]
        assert abs(record["value"] - ratio) <= 3 * record["uncertainty"]


def test_split_fractions_must_match_the_channels(tmp_path):
    with pytest.raises(ValueError, match="split_fractions has 2 values for 4 channels"):
        _run(tmp_path, {"seed": 72}, {"split_fractions": [0.5, 0.5], "target_counts": 100})
