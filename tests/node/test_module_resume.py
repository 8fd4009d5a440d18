"""A module process that dies mid-block (an injected crash: its tasks cancelled, nothing saved
on the way out) and starts again from the same configuration resumes the link's Qdist session
from its state file, on the simulated bench through the drivers: first Bob's, then Alice's.
Keys stay identical at both ends, no pad index is used twice in either direction, no block
number (so no key ID) is given twice, and the state files are private."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkdnode.dsp.authentication import TAG_BYTES
from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError
from qkdnode.node.module.host import node_daemons, sim_benches
from qkdnode.node.module.launch import LinkEnd, build_ends, claim_secrets, run_ends
from qkdnode.node.module.runtime import AliceModule, BobModule
from qkdnode.node.protocol.qdist import BlockCompleted, QdistEnd
from qkdnode.node.protocol.qdist.wire import HEADER

ENDS = {"seed": 11, "block_slots": 16_777_216, "link_extra": "timing_slots = 4_194_304\n"}
# Generous: a block takes a few seconds of wall time on a loaded 2-core machine.
RUN_TIMEOUT_S = 600


def quiet(_: object) -> None:
    """run_ends' status display, unused."""


def split(ends: list[LinkEnd]) -> tuple[LinkEnd, LinkEnd]:
    alice = next(e for e in ends if isinstance(e.module, AliceModule))
    bob = next(e for e in ends if isinstance(e.module, BobModule))
    return alice, bob


async def until(condition: Any, what: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def completed(module: Any) -> list[BlockCompleted]:
    return [r for r in module.results if isinstance(r, BlockCompleted)]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Every frame any Qdist end puts out, by role: its sequence number (its pad's index)."""
    sent: dict[str, list[int]] = {"alice": [], "bob": []}
    original = QdistEnd.data_to_send

    def logged(self: QdistEnd) -> bytes:
        data = original(self)
        rest = data
        while rest:
            *_, seq, length = HEADER.unpack_from(rest)
            sent[self.role].append(seq)
            rest = rest[HEADER.size + length + TAG_BYTES:]
        return data
    monkeypatch.setattr(QdistEnd, "data_to_send", logged)
    return sent


def test_a_crashed_module_resumes_the_session_from_its_state(
        tmp_path: Path, link_ends: Any, port: int, wire: dict[str, list[int]]) -> None:
    files = link_ends(tmp_path, port=port, bench="resume", **ENDS)
    configs = [(p, load_config(p)) for p in files]

    async def crash(task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def scenario() -> dict[str, Any]:
        with sim_benches([c for _, c in configs]):
            alice_end, bob_end = split(build_ends(configs, None, claim=True))
            alice1, bob1 = alice_end.module, bob_end.module
            run_a = asyncio.create_task(run_ends([alice_end], None, quiet, 3600.0, 0.2))
            run_b = asyncio.create_task(run_ends([bob_end], None, quiet, 3600.0, 0.2))
            try:
                await until(lambda: completed(bob1) and bob1.qdist.block is not None,
                            "Bob's first block and the next in flight")
                bob_cut = bob1.qdist.block
                await crash(run_b)
                # Bob's process starts again from the same configuration: a new tagger, and
                # the Qdist session from the state file (the marker alone would refuse it).
                (bob_end2,) = build_ends([configs[1]], None, claim=True)
                bob2 = bob_end2.module
                assert bob2.qdist is not bob1.qdist
                assert bob2.qdist.restored
                run_b = asyncio.create_task(run_ends([bob_end2], None, quiet, 3600.0, 0.2))
                await until(lambda: completed(bob2) and alice1.qdist.block is not None,
                            "a block after Bob's restart, and the next in flight")
                alice_cut = alice1.qdist.block
                await crash(run_a)
                (alice_end2,) = build_ends([configs[0]], None, claim=True)
                alice2 = alice_end2.module
                assert alice2.qdist.restored
                run_a = asyncio.create_task(run_ends([alice_end2], None, quiet, 3600.0, 0.2))
                await until(lambda: len(completed(alice2)) >= 2, "two blocks after Alice's "
                                                                 "restart")
                await until(lambda: bob2.idle, "Bob's block in flight to end", 120)
                return {"alice": (alice1, alice2), "bob": (bob1, bob2),
                        "cuts": (bob_cut, alice_cut)}
            finally:
                await crash(run_a)
                await crash(run_b)

    got = asyncio.run(scenario())
    alice1, alice2 = got["alice"]
    bob1, bob2 = got["bob"]
    # No pad index was used twice, in either direction, across the four processes.
    for role, seqs in wire.items():
        assert len(seqs) == len(set(seqs)), f"{role} used a pad twice"
    # Keys agree wherever both ends completed a block; no block number was completed twice.
    alice_done = [r.block_id for r in completed(alice1) + completed(alice2)]
    bob_done = [r.block_id for r in completed(bob1) + completed(bob2)]
    assert len(alice_done) == len(set(alice_done))
    assert len(bob_done) == len(set(bob_done))
    keys = {r.block_id: r.key for r in completed(bob1) + completed(bob2)}
    for r in completed(alice1) + completed(alice2):
        assert np.array_equal(r.key, keys[r.block_id])
    # Blocks after each restart are numbered above the block cut by it.
    bob_cut, alice_cut = got["cuts"]
    assert min(r.block_id for r in completed(bob2)) > bob_cut
    assert min(r.block_id for r in completed(alice2)) > alice_cut
    # Bob re-armed for the restarted Alice (her ResumeAnnounced): a later arm epoch.
    assert bob2.epoch is not None
    assert bob2.epoch > bob1.epoch + 1
    # The audit lines of blocks both completed show the same pads paid back; the first
    # block after each restart pays for what the restart skipped and the cut block used.
    logs = {who: {r["block_id"]: r for r in _audit(tmp_path / f"audit-{who}.jsonl")
                  if r["outcome"] == "completed"} for who in ("alice", "bob")}
    both = sorted(set(logs["alice"]) & set(logs["bob"]))
    assert both
    for block_id in both:
        for name in ("auth_pads_ab", "auth_pads_ba", "auth_pads_outside", "final_length"):
            assert logs["alice"][block_id][name] == logs["bob"][block_id][name], name
    for cut in (bob_cut, alice_cut):
        after = min(b for b in both if b > cut)
        assert logs["alice"][after]["auth_pads_outside"] > 0
    for role in ("transmitter", "receiver"):
        state = tmp_path / f"secret.bin.{role}.state"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert (tmp_path / f"secret.bin.{role}.used").exists()


def test_a_damaged_or_missing_state_is_refused_naming_the_file(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    files = link_ends(tmp_path, port=port, bench="resume-damaged", **ENDS)
    configs = [(p, load_config(p)) for p in files]
    with sim_benches([c for _, c in configs]):
        ends = build_ends(configs, None, claim=True)
        for end in ends:
            end.close_instruments()
            end.module.audit.close()
        # A recording must start from the secret (its replay does), not resume.
        with pytest.raises(ConfigError, match="a recording must start its session"):
            build_ends(configs, None, record=tmp_path / "rec", claim=True)
        state = tmp_path / "secret.bin.receiver.state"
        state.write_bytes(state.read_bytes()[:100])  # truncated
        with pytest.raises(ConfigError) as info:
            build_ends([configs[1]], None, claim=True)
        text = str(info.value)
        assert str(state) in text
        assert "unusable" in text
        assert "fresh pre-shared secret" in text
        state.unlink()  # lost: the marker says the secret was used
        with pytest.raises(ConfigError) as info:
            build_ends([configs[1]], None, claim=True)
        text = str(info.value)
        assert "already used" in text
        assert "session state" in text
        assert "is missing" in text
    # Claims without a built end (no Qdist end) only mark.
    assert claim_secrets([]) == []


def serve_bench(config: Path) -> tuple[subprocess.Popen[str], str]:
    """``qkdnode sim serve`` of the bench in ``config``: the process and its address."""
    proc = subprocess.Popen([sys.executable, "-m", "qkdnode", "sim", "serve", "--config",
                             str(config), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "served at 127.0.0.1:" in line, line
    return proc, line.rsplit(" ", 1)[1].strip()


def _audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            out.append(json.loads(line))
    return out


def _completed(path: Path) -> list[int]:
    return [r["block_id"] for r in _audit(path) if r["outcome"] == "completed"]


@pytest.mark.slow
def test_kill_9_of_either_module_process_resumes_the_session(tmp_path: Path,
                                                             node_pair: Any) -> None:
    """Three processes (the bench service, Alice's and Bob's ``qkdnode module``): Bob's
    module is killed with SIGKILL after a completed block (the next in flight) and started
    again with the same command, then Alice's. Blocks go on at later numbers, no block is
    completed twice, and both key managers hold the same keys."""
    plain = node_pair(tmp_path, bench="resume-kill", seed=11)
    bench, address = serve_bench(plain["A"])
    files = node_pair(tmp_path, bench="resume-kill", seed=11, service=address)
    configs = [(p, load_config(p)) for p in files.values()]
    audits = {"A": tmp_path / "audit-A.jsonl", "B": tmp_path / "audit-B.jsonl"}

    async def start(who: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qkdnode", "module", "--config", str(files[who]),
            "--status-interval", "600", "--drain-timeout", "30",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def wait_for(condition: Any, what: str) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    async def scenario() -> tuple[bytes, bytes, dict[str, int]]:
        daemons = node_daemons(configs)
        for daemon in daemons.values():
            await daemon.start()
        procs: dict[str, asyncio.subprocess.Process] = {}
        cuts: dict[str, int] = {}
        try:
            procs = {who: await start(who) for who in ("A", "B")}
            await wait_for(lambda: _completed(audits["B"]), "Bob's first block")
            procs["B"].kill()
            await procs["B"].wait()
            cuts["B"] = max(_completed(audits["B"]))
            procs["B"] = await start("B")
            await wait_for(lambda: max(_completed(audits["B"])) > cuts["B"],
                           "a block after Bob's restart")
            await wait_for(lambda: max(_completed(audits["A"]), default=-1) > cuts["B"],
                           "Alice's block after Bob's restart")
            procs["A"].kill()
            await procs["A"].wait()
            cuts["A"] = max(_completed(audits["A"]))
            procs["A"] = await start("A")
            await wait_for(lambda: sum(b > cuts["A"] for b in _completed(audits["A"])) >= 2,
                           "two blocks after Alice's restart")
            for proc in procs.values():
                proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), 120)
            deadline = time.monotonic() + 120.0
            while not all(lv.available_keys for d in daemons.values()
                          for lv in d.store.levels().values()):
                assert time.monotonic() < deadline, "no keys at the key managers"
                await asyncio.sleep(0.5)
            a, b = daemons["A"].store, daemons["B"].store
            plan, pad_a = a.take_pad("B", 256, time.time())
            pad_b = b.take_pad_as("A", plan, time.time())
            return pad_a, pad_b, cuts
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            for daemon in daemons.values():
                await daemon.stop()

    try:
        pad_a, pad_b, cuts = asyncio.run(scenario())
    finally:
        bench.terminate()
        bench.wait(timeout=30)
    assert len(pad_a) == 256
    assert pad_a == pad_b
    for who in ("A", "B"):
        done = _completed(audits[who])
        assert len(done) == len(set(done)), f"{who} completed a block twice"
    # Where both completed a block, they kept the same number of key bits.
    lengths = {who: {r["block_id"]: r["final_length"] for r in _audit(audits[who])
                     if r["outcome"] == "completed"} for who in ("A", "B")}
    for block_id in set(lengths["A"]) & set(lengths["B"]):
        assert lengths["A"][block_id] == lengths["B"][block_id]
    assert max(lengths["A"]) > cuts["A"] > cuts["B"]
