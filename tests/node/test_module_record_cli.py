"""``qkdnode module --record DIR`` then ``qkdnode distill DIR``: a 1-block run of both ends
on the simulated bench is recorded through the command line and re-distilled from the files
alone (the secrets from the paths the manifest names); the per-block table says the replay
matches the run, and the command prints no key bits."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from qkdnode.node.cli import EXIT_USAGE, main

NODE = """\
[node]
name = "{who}"

[bench]
name = "module-record-cli"
seed = 5
[bench.fibre]
length_km = 5.0
[bench.source]
mu1 = 0.485
mu2 = 0.13

[[links]]
name = "ab"
peer = "{peer}"
role = "{role}"
{qdist} = "127.0.0.1:{port}"
auth_secret_file = "secret.bin"
audit_log = "audit-{who}.jsonl"
block_slots = 16_777_216
[links.decoy]
mu1 = 0.485
mu2 = 0.13
p_mu1 = 0.0577
p_mu2 = 0.5285
q_x = 0.5
[links.distillation]
kappa = 1e-15
code_length = 16000

[key_manager]
kq1_socket = "kq1-{who}.sock"

[[peers]]
name = "{peer}"
kx_address = "127.0.0.1:9"
"""


def write_nodes(tmp_path: Path, port: int, secret: bool = True) -> tuple[Path, Path]:
    if secret:
        (tmp_path / "secret.bin").write_bytes(bytes(range(256)) * 8)
    a = tmp_path / "alice.toml"
    b = tmp_path / "bob.toml"
    a.write_text(NODE.format(who="alice", peer="bob", role="transmitter", qdist="qdist_listen",
                             port=port))
    b.write_text(NODE.format(who="bob", peer="alice", role="receiver", qdist="qdist_connect",
                             port=port))
    return a, b


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_record_then_distill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = write_nodes(tmp_path, free_port())
    rec = tmp_path / "rec"
    assert main(["module", "--config", str(a), "--config", str(b), "--blocks", "1",
                 "--json", "--status-interval", "60", "--drain-timeout", "0.5",
                 "--record", str(rec)]) == 0
    capsys.readouterr()
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["nodes"] == {"alice": "alice", "bob": "bob"}
    assert set(manifest["seeds"]) == {"alice_qdist", "bob_squash"}
    assert stat.S_IMODE((rec / "alice-choices.rec").stat().st_mode) == 0o600
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


def test_record_needs_both_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = write_nodes(tmp_path, free_port())
    assert main(["module", "--config", str(a), "--blocks", "1", "--record",
                 str(tmp_path / "rec")]) == EXIT_USAGE
    assert "both its ends" in capsys.readouterr().err


def test_distill_names_a_missing_recording(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", str(tmp_path / "nothing")]) == 2
    assert "nothing/manifest.json" in capsys.readouterr().err
