"""Recording a module run and re-distilling it offline: a 2-block run of both modules over
loopback TCP on the simulated bench is recorded; the replay (fresh Qsync, both Qdist ends in
one process) gives the same keys and the same audit records at both ends; a truncated or
corrupted recording file is refused with an error naming it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from qkdnode.drivers.roles import OsRandomSource, SeededRandomSource
from qkdnode.drivers.sim.bench import Bench
from qkdnode.drivers.sim.params import BenchParams, FibreParams, SourceParams
from qkdnode.dsp.qsync import SlotTracker
from qkdnode.node.io.qdist import QdistConnection
from qkdnode.node.km.records import LinkKey
from qkdnode.node.module.frames import FramePlan, channel_patterns
from qkdnode.node.module.keys_out import KeyOutbox
from qkdnode.node.module.recording import Recorder, Recording, RecordingError
from qkdnode.node.module.replay import replay
from qkdnode.node.module.runtime import AliceModule, BobModule
from qkdnode.node.module.sim import BenchFrames
from qkdnode.node.protocol.qdist import BlockCompleted, QdistAlice, QdistBob, QdistParams

MU = (0.485, 0.13, 2e-4)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
BLOCK_SLOTS = 1 << 24
TIMING_SLOTS = 1 << 22
READ_SLOTS = 1 << 20
SECRET = bytes(range(256)) * 8
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
CHANNELS = {1: "X0", 2: "X1", 3: "Z0", 4: "Z1"}


class Kq1Recorder:
    def __init__(self) -> None:
        self.keys: list[LinkKey] = []

    async def push(self, keys: Sequence[LinkKey], timeout_s: float = 10.0) -> int:
        self.keys.extend(keys)
        return len(keys)


async def recorded_run(tmp_path: Path, rec_dir: Path, blocks: int
                       ) -> tuple[AliceModule, BobModule]:
    bench = Bench("record", BenchParams(fibre=FibreParams(length_km=5.0),
                                        source=SourceParams(mu1=MU[0], mu2=MU[1], mu3=MU[2])),
                  seed=7)
    plan = FramePlan("ab", BLOCK_SLOTS, TIMING_SLOTS, MU, P, q_x=0.5)
    rec = Recorder(rec_dir)
    tracker_args = {"period_ps": 1000.0, "delay_ps": 0.0, "detector_channels": [1, 2, 3, 4]}
    rec.describe(link="ab", plan={"block_slots": BLOCK_SLOTS, "timing_slots": TIMING_SLOTS,
                                  "mu": MU, "p": P, "q_x": 0.5},
                 qdist=asdict(PARAMS), tracker=tracker_args, channel_map=CHANNELS)
    frames = BenchFrames(bench, BLOCK_SLOTS, READ_SLOTS)
    tracker = SlotTracker(period_ps=1000.0, pattern=plan.pattern(), delay_ps=0.0,
                          detector_channels=(1, 2, 3, 4))
    out_a, out_b = KeyOutbox(Kq1Recorder(), "ab"), KeyOutbox(Kq1Recorder(), "ab")
    # Alice's public seeds and Bob's squashing bits from the OS CSPRNG, as unrecorded: the
    # replay can only give them back from what the recording kept.
    alice = AliceModule(plan, QdistAlice(PARAMS, SECRET, random_bytes=rec.public_random()),
                        rec.frames(frames), out_a, rec.audit("alice", tmp_path / "a.jsonl"),
                        SeededRandomSource("sim://bench/rng", 2))
    bob = BobModule(plan, QdistBob(PARAMS, SECRET), rec.source(frames), tracker,
                    channel_patterns(CHANNELS), out_b, rec.audit("bob", tmp_path / "b.jsonl"),
                    rec.squash(OsRandomSource()))
    accepted: asyncio.Queue[QdistConnection] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(QdistConnection(rec.end(alice.qdist, "alice"), reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn_b = QdistConnection(rec.end(bob.qdist, "bob"), reader, writer)
    conn_a = await accepted.get()
    try:
        await asyncio.wait_for(asyncio.gather(alice.run(conn_a, blocks), bob.run(conn_b, blocks)),
                               600)
    finally:
        await conn_b.close()
        await conn_a.close()
        server.close()
        await server.wait_closed()
        for module in (alice, bob):
            assert module.audit is not None
            module.audit.close()
        rec.close()
    return alice, bob


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AliceModule, BobModule]:
    tmp = tmp_path_factory.mktemp("rec")
    rec_dir = tmp / "recording"
    alice, bob = asyncio.run(recorded_run(tmp, rec_dir, blocks=2))
    return rec_dir, alice, bob


def test_replay_gives_the_recorded_keys_and_audit(recorded: tuple[Path, AliceModule, BobModule]
                                                   ) -> None:
    rec_dir, alice, bob = recorded
    completed = [r.block_id for r in bob.results if isinstance(r, BlockCompleted)]
    assert len(completed) == 2, [getattr(r, "reason", "ok") for r in bob.results]
    assert stat.S_IMODE(rec_dir.stat().st_mode) == 0o700
    for f in rec_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    result = replay(Recording.open(rec_dir), {"alice": SECRET, "bob": SECRET})
    assert [row.block_id for row in result.blocks] == [r.block_id for r in bob.results]
    for role, module in (("alice", alice), ("bob", bob)):
        originals = {r.block_id: r for r in module.results}
        for row in result.blocks:
            assert row.matches(role) is True, (role, row.block_id)
            original = originals[row.block_id]
            assert row.audit[role] == json.loads(json.dumps(original.audit.to_json()))
            if isinstance(original, BlockCompleted):
                assert np.array_equal(result.keys[role][row.block_id], original.key)
    assert all(row.keys_agree for row in result.blocks)
    assert result.bytes_match == {"alice": True, "bob": True}
    assert result.ok


def test_wrong_secret_does_not_give_the_recorded_outcome(
        recorded: tuple[Path, AliceModule, BobModule]) -> None:
    rec_dir, _, _ = recorded
    other = bytes(reversed(SECRET))
    result = replay(Recording.open(rec_dir), {"alice": SECRET, "bob": other})
    assert not result.ok
    assert not any(row.keys_agree for row in result.blocks)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("name", ["tags.rec", "alice-choices.rec"])
def test_damaged_recording_is_refused_naming_the_file(
        recorded: tuple[Path, AliceModule, BobModule], tmp_path: Path, name: str,
        damage: str) -> None:
    rec_dir, _, _ = recorded
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in rec_dir.iterdir():
        if f.name != name:
            os.link(f, copy / f.name)
    data = bytearray((rec_dir / name).read_bytes())
    if damage == "truncate":
        data = data[:len(data) - 1000]
    else:
        data[len(data) // 2] ^= 0x10
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=f"{name}.*(truncated|corrupted)"):
        replay(Recording.open(copy), {"alice": SECRET, "bob": SECRET})


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"manifest\.json"):
        Recording.open(tmp_path)


@pytest.mark.parametrize(("reason", "cut_reason"), [
    ("connection lost: reset by peer", "lost its Qdist connection"),
    ("block timed out after 60.0 s", "timed out")])
def test_replay_stops_before_a_block_the_run_lost_its_connection_in(
        recorded: tuple[Path, AliceModule, BobModule], tmp_path: Path, reason: str,
        cut_reason: str) -> None:
    """The recorded run's second block is marked as cut by a lost Qdist connection, or as
    timed out mid-dialogue (as the module's audit writes them): the replay compares the first
    block only, and says where it stopped and why."""
    rec_dir, _, bob = recorded
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in rec_dir.iterdir():
        if not f.name.startswith("outcomes-"):
            os.link(f, copy / f.name)
    cut = bob.results[1].block_id
    for role in ("alice", "bob"):
        lines = [json.loads(x) for x in (rec_dir / f"outcomes-{role}.jsonl").read_text()
                 .splitlines()]
        lines[1].update(outcome="aborted", reason=reason, final_length=0)
        (copy / f"outcomes-{role}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines))
    result = replay(Recording.open(copy), {"alice": SECRET, "bob": SECRET})
    assert result.cut_at == cut
    assert result.cut_reason == cut_reason
    assert [row.block_id for row in result.blocks] == [bob.results[0].block_id]
    assert result.bytes_match == {"alice": True, "bob": True}
    assert result.ok
