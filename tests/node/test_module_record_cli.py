"""``qkdnode module --record DIR`` then ``qkdnode distill DIR``: a 1-block run of both ends
on the simulated bench is recorded through the command line and re-distilled from the files
alone (the secrets from the paths the manifest names); the per-block table says the replay
matches the run, and the command prints no key bits."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from qkdnode.node.cli import EXIT_USAGE, main

ENDS = {"bench": "module-record-cli", "seed": 5, "block_slots": 16_777_216}


def test_module_record_then_distill(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    link_ends: Any, port: int) -> None:
    a, b = link_ends(tmp_path, port=port, **ENDS)
    rec = tmp_path / "rec"
    assert main(["module", "--config", str(a), "--config", str(b), "--blocks", "1",
                 "--json", "--status-interval", "60", "--drain-timeout", "0.5",
                 "--record", str(rec)]) == 0
    capsys.readouterr()
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["nodes"] == {"alice": "alice", "bob": "bob"}
    # No seeds: the public values and squashing bits were drawn as unrecorded, and kept.
    assert "seeds" not in manifest
    assert set(manifest["key_material"]) == {"alice-choices.rec", "bob-squash.rec"}
    for name in ("alice-choices.rec", "alice-public.rec", "bob-squash.rec"):
        assert stat.S_IMODE((rec / name).stat().st_mode) == 0o600
    assert main(["distill", str(rec), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out[:-1]]
    audit = [json.loads(x) for x in (tmp_path / "audit-bob.jsonl").read_text().splitlines()]
    assert [r["block"] for r in rows] == [r["block_id"] for r in audit]
    for row, recorded in zip(rows, audit, strict=True):
        assert row["audit_matches"] == {"alice": True, "bob": True}
        assert row["keys_agree"] is (recorded["outcome"] == "completed")
        assert row["final_length"]["bob"] == recorded["final_length"]
    assert out[-1] == "replay matches the recorded run"
    assert main(["distill", str(rec)]) == 0
    table = capsys.readouterr().out
    assert "keys agree" in table
    assert "replay matches" in table


def test_record_needs_both_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                link_ends: Any, port: int) -> None:
    a, _ = link_ends(tmp_path, port=port, **ENDS)
    assert main(["module", "--config", str(a), "--blocks", "1", "--record",
                 str(tmp_path / "rec")]) == EXIT_USAGE
    assert "both its ends" in capsys.readouterr().err


def test_distill_names_a_missing_recording(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", str(tmp_path / "nothing")]) == 2
    assert "nothing/manifest.json" in capsys.readouterr().err
