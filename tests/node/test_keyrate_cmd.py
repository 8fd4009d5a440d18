"""``qkdnode keyrate``: optimised finite-key rates from the command line."""

from __future__ import annotations

import json

import pytest

from qkdnode.dsp.estimation import LinkModel, optimize_decoy
from qkdnode.node.cli import main


def test_json_matches_the_library(capsys):
    assert main(["keyrate", "--distance-km", "50", "--block-bits", "1e6", "--json",
                 "--pulse-rate-hz", "2.5e9"]) == 0
    out = json.loads(capsys.readouterr().out)
    (point,) = out["points"]
    best = optimize_decoy(LinkModel(50.0), 1e6)
    assert point["rate_per_pulse"] == pytest.approx(best.rate_per_pulse)
    assert point["key_rate_bps"] == pytest.approx(best.rate_per_pulse * 2.5e9)
    assert point["mu1"] > point["mu2"] > point["mu3"]
    assert out["settings"]["misalignment"] == 5e-3


def test_table_shows_no_key_beyond_reach(capsys):
    assert main(["keyrate", "--distance-km", "20", "300", "--block-bits", "1e5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["km", "key/pulse", "key"]
    assert "bit/s" in lines[1]
    assert lines[2].split()[:3] == ["300", "no", "key"]


def test_bad_parameter_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["keyrate", "--distance-km", "-5"])
    assert info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err
