"""`qkdnode demo`: its files are valid configurations; a full run delivers keys (slow)."""

from __future__ import annotations

import asyncio
import json

import pytest

from qkdnode.node.config import load_config
from qkdnode.node.demo import DEMO_NODES, prepare, run_demo


def test_prepare_writes_valid_configurations_and_never_overwrites(tmp_path):
    demo = prepare(tmp_path / "d")
    assert sorted(demo.node_files) == list(DEMO_NODES)
    for path in [*demo.node_files.values(), *demo.end_files]:
        config = load_config(path)
        assert config.key_manager.tls is not None
        assert config.key_manager.saes == {"sae-A": "A", "sae-B": "B", "sae-C": "C"}
    b = load_config(demo.node_files["B"])
    assert sorted(p.name for p in b.peers) == ["A", "C"]
    ends = [load_config(p) for p in demo.end_files]
    assert sorted((c.node.name, c.links[0].name, c.links[0].role) for c in ends) == [
        ("A", "ab", "transmitter"), ("B", "ab", "receiver"), ("B", "bc", "transmitter"),
        ("C", "bc", "receiver")]
    assert (tmp_path / "d" / "secret-ab.bin").read_bytes() != \
        (tmp_path / "d" / "secret-bc.bin").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        prepare(tmp_path / "d")


@pytest.mark.slow
def test_a_demo_run_delivers_keys_end_to_end(tmp_path):
    lines = []
    status = asyncio.run(run_demo(tmp_path / "d", 150.0, 30.0, lines.append))
    text = "\n".join(lines)
    assert status == 0, text
    assert "first key A-B (over the A-B QKD link)" in text
    assert "identical at sae-A and sae-B" in text
    info = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert [n["name"] for n in info["nodes"]] == ["A", "B", "C"]
    assert info["nodes"][0]["etsi014_url"].startswith("https://127.0.0.1:")
    assert info["nodes"][2]["saes"][0]["sae_id"] == "sae-C"
