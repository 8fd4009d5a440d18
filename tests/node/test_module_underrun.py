"""A transmitter underrun: the module's frame comes after its block began, the streamer plays
the block as vacuum and refuses the late frame; Alice drops its choices and refuses Bob's
announcement of it, so both ends abort that block with the reason, and go on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from qkdnode.drivers.sim.bench import Bench, get_bench
from qkdnode.node.config import load_config
from qkdnode.node.module.host import sim_benches
from qkdnode.node.module.instruments import StreamerFrames
from qkdnode.node.module.launch import build_ends, run_ends
from qkdnode.node.module.runtime import AliceModule
from qkdnode.node.protocol.qdist import BlockAborted, BlockCompleted

ENDS = {"bench": "underrun", "seed": 4, "block_slots": 16_777_216,
        "link_extra": "timing_slots = 4_194_304\n"}
LATE = 1  # the block whose frame comes late


class LateFrames:
    """Alice's StreamerFrames, holding the frame of block LATE until the bench has played it
    as vacuum (the bench gives up waiting for it: ``underrun_after_s``)."""

    def __init__(self, frames: StreamerFrames, bench: Bench) -> None:
        self.frames = frames
        self.bench = bench

    async def load(self, block: int, *choices: Any) -> None:
        if block == LATE:
            while self.bench.link.slot <= LATE * ENDS["block_slots"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the bench's clock is polled, as a lab's would be
            # One underrun only: from now on the bench waits for the frames again (else every
            # block would run dry while Alice draws the next, as in a lab that cannot keep up).
            self.bench.underrun_after_s = None
        await self.frames.load(block, *choices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.frames, name)


def test_a_late_frame_aborts_its_block_at_both_ends(tmp_path: Path, link_ends: Any,
                                                    port: int) -> None:
    files = link_ends(tmp_path, port=port, **ENDS)
    configs = [(p, load_config(p)) for p in files]

    async def scenario() -> tuple[list, list, AliceModule]:
        with sim_benches([c for _, c in configs]):
            bench = get_bench("underrun")
            assert isinstance(bench, Bench)
            bench.underrun_after_s = 0.05
            ends = build_ends(configs, None)
            alice = next(e.module for e in ends if isinstance(e.module, AliceModule))
            bob = next(e.module for e in ends if e.module is not alice)
            assert isinstance(alice.frames, StreamerFrames)
            alice.frames = LateFrames(alice.frames, bench)
            await asyncio.wait_for(run_ends(ends, 3, lambda _: None, 3600.0, 0.2), 600)
            return alice.results, bob.results, alice

    alice_results, bob_results, alice = asyncio.run(scenario())
    assert [r.block_id for r in alice_results] == [r.block_id for r in bob_results]
    late = [(ra, rb) for ra, rb in zip(alice_results, bob_results, strict=True)
            if ra.block_id == LATE]
    assert len(late) == 1
    ra, rb = late[0]
    assert isinstance(ra, BlockAborted)
    assert isinstance(rb, BlockAborted)
    assert "transmitter underrun" in ra.reason
    assert "transmitter underrun" in rb.reason  # told by Alice
    assert alice.underrun_blocks == 1  # the refused frame and the streamer's report: one block
    for ra, rb in zip(alice_results, bob_results, strict=True):
        assert type(ra) is type(rb)
        if isinstance(ra, BlockCompleted):
            assert np.array_equal(ra.key, rb.key)
    for who in ("alice", "bob"):
        records = [json.loads(line) for line in
                   (tmp_path / f"audit-{who}.jsonl").read_text().splitlines()]
        (record,) = [r for r in records if r["block_id"] == LATE]
        assert record["outcome"] == "aborted"
        assert record["final_length"] == 0
        assert "transmitter underrun" in record["reason"]
