"""``qkdnode run`` with QKD modules: both ends of a link and both key managers in one process;
the module status reaches the key managers over Kq-2 (a real Unix socket) and shows in
/status; a stop stops the modules first and their keys reach the key stores; a link with one
end only, or one node with two different key managers, is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qkdnode.node.cli import EXIT_USAGE, main
from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError
from qkdnode.node.module.host import (
    check_link_ends,
    node_daemons,
    run_hosted,
    sim_benches,
)
from qkdnode.node.module.launch import build_ends


def test_run_refuses_a_link_with_one_end(tmp_path: Path,
                                         node_pair: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    files = node_pair(tmp_path, bench="host", seed=9)
    assert main(["run", "--config", str(files["A"])]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "only the transmitter end of link 'ab'" in err
    assert "give the receiver's file too" in err
    assert "A.toml" in err


def test_one_node_in_two_files_needs_one_key_manager(tmp_path: Path,
                                                     node_pair: Any) -> None:
    files = node_pair(tmp_path, bench="host", seed=9)
    other = tmp_path / "A2.toml"
    other.write_text(files["A"].read_text().replace('name = "ab"', 'name = "ac"')
                     .replace("keys-A.sqlite", "elsewhere.sqlite").replace('role = "transmitter"',
                                                                           'role = "receiver"')
                     .replace("qdist_listen", "qdist_connect"))
    configs = [(p, load_config(p)) for p in (files["A"], other)]
    with pytest.raises(ConfigError, match="node 'A' has another key_manager"):
        node_daemons(configs)
    configs.append((files["B"], load_config(files["B"])))
    with pytest.raises(ConfigError, match="only the receiver end of link 'ac'"):
        check_link_ends(configs)


def test_each_key_manager_knows_the_links_of_its_node_from_every_file(tmp_path: Path,
                                                                      node_pair: Any) -> None:
    files = node_pair(tmp_path, bench="host", seed=9)
    km_only = tmp_path / "A-km.toml"
    text = files["A"].read_text()
    km_only.write_text(text[:text.index("[[links]]")] + text[text.index("[key_manager]"):])
    configs = [(p, load_config(p)) for p in (km_only, files["A"], files["B"])]
    assert configs[0][1].links == ()
    daemons = node_daemons(configs)
    try:
        assert [link.name for link in daemons["A"].config.links] == ["ab"]
        assert daemons["A"].config.links[0].role == "transmitter"
    finally:
        for daemon in daemons.values():
            daemon.store.close()


def test_run_hosts_both_ends_with_kq2_status_and_an_orderly_stop(tmp_path: Path,
                                                                 node_pair: Any) -> None:
    files = node_pair(tmp_path, bench="host", seed=9)
    configs = [(p, load_config(p)) for p in files.values()]
    check_link_ends(configs)
    seen: dict[str, dict] = {}

    async def scenario() -> tuple[list, dict]:
        daemons = node_daemons(configs)
        for daemon in daemons.values():
            await daemon.start()
        stop = asyncio.Event()

        async def watch() -> None:
            # Until both modules have completed a block, as their key managers see it over
            # Kq-2 (the first block may abort: Qsync locks part way into it, and too few
            # detections fail the finite-key bound; such a block has no QBER).
            while True:
                await asyncio.sleep(0.5)
                reports = {n: d.status()["modules"] for n, d in daemons.items()}
                ended = [r for mods in reports.values() for r in mods.values()
                         if r.get("blocks_completed", 0) >= 1]
                if len(ended) == 2:
                    seen.update({n: mods for n, mods in reports.items()})
                    port = daemons["B"].management_port
                    async with aiohttp.ClientSession() as http, \
                            http.get(f"http://127.0.0.1:{port}/status") as answer:
                        seen["http"] = await answer.json()
                    stop.set()
                    return

        try:
            with sim_benches([c for _, c in configs]):
                ends = build_ends(configs, None)
                watching = asyncio.create_task(watch())
                await asyncio.wait_for(run_hosted(daemons, ends, stop, lambda _: None, 3600.0),
                                       600)
                watching.cancel()
            stored = {n: sum(lv.pre_activation_keys + lv.available_keys
                             for lv in d.store.levels().values()) for n, d in daemons.items()}
        finally:
            for daemon in daemons.values():
                await daemon.stop()
        return ends, stored

    ends, stored = asyncio.run(scenario())
    a, b = seen["A"]["A/ab"], seen["B"]["B/ab"]
    assert (a["role"], b["role"]) == ("alice", "bob")
    assert b["sync"] == "locked"
    assert a["connected"]
    assert b["connected"]
    for report in (a, b):
        assert report["running"] is True
        assert report["sifted_bits"] > 10_000
        assert report["sifted_rate_bps"] > 0
        assert 0 < report["qber"] < 0.05
        assert "secret_key_rate_bps" in report
    assert seen["http"]["modules"]["B/ab"]["sync"] == "locked"
    # The stop went through Kq-2: both modules stopped, no block in flight, every key of a
    # completed block acknowledged by the key store, and the two stores hold the same count.
    for end in ends:
        assert not end.module.running.is_set()
        assert end.module.idle
        assert end.outbox.pending == 0
    pieces = [end.outbox.stats.pieces_acknowledged for end in ends]
    assert pieces[0] == pieces[1]
    assert stored == {"A": pieces[0], "B": pieces[1]}
    audit = {who: (tmp_path / f"audit-{who}.jsonl").read_text().splitlines()
             for who in ("A", "B")}
    assert len(audit["A"]) == len(audit["B"]) >= 1


def test_qkdnode_run_command_starts_the_modules_and_stops_cleanly(port: int, tmp_path: Path,
                                                                  node_pair: Any) -> None:
    import json
    import re
    import subprocess
    import sys
    import time
    import urllib.request

    files = node_pair(tmp_path, bench="host", seed=9)
    mgmt = port
    files["B"].write_text(files["B"].read_text().replace('management_listen = "127.0.0.1:0"',
                                                         f'management_listen = "127.0.0.1:{mgmt}"'))
    proc = subprocess.Popen([sys.executable, "-m", "qkdnode", "run", "--config", str(files["A"]),
                             "--config", str(files["B"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        text = "".join(lines)
        assert "node A running" in text, text + proc.stderr.read()
        assert "QKD modules running: A/ab (transmitter), B/ab (receiver)" in lines[2]
        port = re.search(r"node B running: .*management port (\d+)", text)
        assert port is not None, text
        deadline = time.monotonic() + 120
        while True:  # the modules' Kq-2 reports reach B's key manager
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/status",
                                        timeout=10) as answer:
                module = json.load(answer)["modules"].get("B/ab", {})
            if module.get("role") == "bob":
                break
            assert time.monotonic() < deadline, module
            time.sleep(0.5)
        assert module["connected"] is True
        assert module["running"] is True
        out = subprocess.run([sys.executable, "-m", "qkdnode", "status", "--config",
                              str(files["B"])], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "module B/ab: connected, bob running, sync " in out.stdout
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "the key managers stop their QKD modules (Kq-2)" in out
    assert "node A stopped" in out
    assert "node B stopped" in out
