"""A recorded run with a transmitter underrun re-distils to the run's outcomes and keys.

Both modules run through their instruments on the simulated bench (``build_ends`` with
``record``); the frame of block LATE comes after the block began, so the streamer plays it as
vacuum and both ends abort it. The recording marks the block as not played and keeps no
choices for it; the replay refuses it as the module did and gives the other blocks the same
keys. Alice's public seeds and Bob's squashing bits were drawn from the OS CSPRNG (as an
unrecorded run draws them) and kept, so the manifest holds no seed. Bob's tagger counts from its
own origin, seconds from the bench's slot 0: the recorded source arms it, and times the tags
from the start marker, as an unrecorded one does.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np

from qkdnode.drivers.sim.bench import Bench, get_bench
from qkdnode.node.config import load_config
from qkdnode.node.module.host import sim_benches
from qkdnode.node.module.launch import build_ends, run_ends
from qkdnode.node.module.recording import Recording
from qkdnode.node.module.replay import replay
from qkdnode.node.module.runtime import AliceModule, BobModule
from qkdnode.node.protocol.qdist import BlockAborted, BlockCompleted

# A block whose deadline passes mid-dialogue (a loaded machine) cannot be replayed past (the
# replay stops before it): the deadline is far beyond what a loaded CI machine needs.
ENDS = {"bench": "record-underrun", "seed": 6, "block_slots": 16_777_216,
        "link_extra": "timing_slots = 4_194_304\n",
        "distillation_extra": "block_timeout_s = 900\n"}
LATE = 1  # the block whose frame comes late
SECRET = bytes(range(256)) * 8  # write_link_ends' secret


class LateFrames:
    """Alice's frame sink, holding the frame of block LATE until the bench has played it as
    vacuum (the bench gives up waiting for it: ``underrun_after_s``)."""

    def __init__(self, frames: Any, bench: Bench) -> None:
        self.frames = frames
        self.bench = bench

    async def load(self, block: int, *choices: Any) -> None:
        if block == LATE:
            while self.bench.link.slot <= LATE * ENDS["block_slots"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the bench's clock is polled, as a lab's would be
            self.bench.underrun_after_s = None  # one underrun only
        await self.frames.load(block, *choices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.frames, name)


def test_recorded_underrun_replays_to_the_same_outcomes_and_keys(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    files = link_ends(tmp_path, port=port, **ENDS)
    configs = [(p, load_config(p)) for p in files]
    rec_dir = tmp_path / "rec"

    async def scenario() -> tuple[AliceModule, BobModule]:
        with sim_benches([c for _, c in configs]):
            bench = get_bench(ENDS["bench"])
            assert isinstance(bench, Bench)
            bench.underrun_after_s = 0.05
            ends = build_ends(configs, None, record=rec_dir)
            alice = next(e.module for e in ends if isinstance(e.module, AliceModule))
            bob = next(e.module for e in ends if isinstance(e.module, BobModule))
            alice.frames = LateFrames(alice.frames, bench)
            await asyncio.wait_for(run_ends(ends, 3, lambda _: None, 3600.0, 0.2), 1800)
            return alice, bob

    alice, bob = asyncio.run(scenario())
    live = {"alice": {r.block_id: r for r in alice.results},
            "bob": {r.block_id: r for r in bob.results}}
    assert isinstance(live["alice"][LATE], BlockAborted)
    assert isinstance(live["bob"][LATE], BlockAborted)
    assert "transmitter underrun" in live["bob"][LATE].reason
    assert any(isinstance(r, BlockCompleted) for r in bob.results)
    # The recorded tag source took part in the start order as an unrecorded one does: the
    # module armed the tagger (it did not start at its first read), the arm was announced
    # before a marker was taken, and one marker timed the run.
    assert bob.source.arms == 1  # type: ignore[attr-defined]
    assert bob.source.marker_seen  # type: ignore[attr-defined]
    assert bob.source.markers == 1  # type: ignore[attr-defined]
    assert bob.status.stale_markers == 0

    manifest = json.loads((rec_dir / "manifest.json").read_text())
    assert "seeds" not in manifest
    for f in rec_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    recording = Recording.open(rec_dir)
    choices, missed = recording.choices()
    assert LATE in missed
    assert LATE not in choices  # the choices of the block that did not play are not kept

    result = replay(recording, {"alice": SECRET, "bob": SECRET})
    assert [row.block_id for row in result.blocks] == [r.block_id for r in bob.results]
    for row in result.blocks:
        for role in ("alice", "bob"):
            original = live[role][row.block_id]
            assert row.matches(role) is True, (role, row.block_id)
            assert row.outcome[role] == original.audit.outcome
            assert row.reason[role] == original.audit.reason
            if isinstance(original, BlockCompleted):
                assert np.array_equal(result.keys[role][row.block_id], original.key)
            else:
                assert row.block_id not in result.keys[role]
    assert result.bytes_match == {"alice": True, "bob": True}
    assert result.ok
