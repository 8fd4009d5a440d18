"""The start marker on the simulated bench, as in a lab: each opening of Bob's tagger counts
from its own origin, seconds away from the transmitter's slot 0, so the module finds slot 0
only through the frame streamer's marker pulse on the tagger's marker channel.

* keys agree block after block through the marker (the tagger's origin seconds away);
* a restart of Bob's module while Alice runs (a new tagger, a new origin): Alice ends her run
  and starts a new one at a later block with a new marker; no block number repeats, the
  block in flight is aborted with the reason in both audit logs, keys agree after;
* no marker on the configured channel: the module stops with the clear error.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkdnode.drivers.sim.bench import Bench, get_bench
from qkdnode.node.config import load_config
from qkdnode.node.module.host import sim_benches
from qkdnode.node.module.instruments import MarkerMissing, TaggerSource
from qkdnode.node.module.launch import LinkEnd, build_ends, run_ends
from qkdnode.node.module.runtime import AliceModule, BobModule
from qkdnode.node.protocol.qdist import BlockCompleted

ENDS = {"seed": 11, "block_slots": 16_777_216, "link_extra": "timing_slots = 4_194_304\n"}
# Generous: a block takes a few seconds of wall time on a loaded 2-core machine.
RUN_TIMEOUT_S = 600


def completed(module: Any) -> set[int]:
    """The blocks ``module`` completed (its recorded outcomes)."""
    return {r.block_id for r in module.results if isinstance(r, BlockCompleted)}


def quiet(_: object) -> None:
    """run_ends' status display, unused."""


def origin_ps(end: LinkEnd) -> int:
    source = end.instrument
    assert isinstance(source, TaggerSource)
    return int(source.tagger._keepalive.origin_ps)


def audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def split(ends: list[LinkEnd]) -> tuple[LinkEnd, LinkEnd]:
    alice = next(e for e in ends if isinstance(e.module, AliceModule))
    bob = next(e for e in ends if isinstance(e.module, BobModule))
    return alice, bob


async def until(condition: Any, what: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
    """Waits for ``condition()`` (polled), failing after ``timeout_s`` with ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_bob_restart_starts_a_new_run_at_later_blocks_with_the_same_keys(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    files = link_ends(tmp_path, port=port, bench="marker-restart", **ENDS)
    configs = [(p, load_config(p)) for p in files]

    async def scenario() -> dict[str, Any]:
        with sim_benches([c for _, c in configs]):
            assert isinstance(get_bench("marker-restart"), Bench)
            alice_end, bob_end = split(build_ends(configs, None))
            alice, bob1 = alice_end.module, bob_end.module
            assert isinstance(alice, AliceModule)
            assert isinstance(bob1, BobModule)
            running_a = asyncio.create_task(run_ends([alice_end], None, quiet, 3600.0, 0.2))
            running_b = asyncio.create_task(run_ends([bob_end], None, quiet, 3600.0, 0.2))
            try:
                # First run: a completed block, then Bob's module dies with one in flight.
                await until(lambda: any(isinstance(r, BlockCompleted) for r in bob1.results)
                            and bob1.qdist.block is not None, "Bob's first block and the next")
                in_flight = bob1.qdist.block
                first_origin = origin_ps(bob_end)
                first_source = bob_end.instrument
                running_b.cancel()
                await asyncio.gather(running_b, return_exceptions=True)
                # The restarted module: a new tagger (a new origin), the link's Qdist session
                # (a module that keeps its authentication state across the restart).
                (_, bob_end2), = [split([alice_end, *build_ends([configs[1]], None)])]
                bob2 = bob_end2.module
                assert isinstance(bob2, BobModule)
                bob2.qdist = bob1.qdist
                running_b = asyncio.create_task(run_ends([bob_end2], None, quiet, 3600.0, 0.2))
                await until(lambda: sum(isinstance(r, BlockCompleted) for r in bob2.results)
                            >= 2, "two blocks after the restart")
                second_origin = origin_ps(bob_end2)
                # Alice's Qdist end is idle before her module has recorded the block's outcome
                # (the key goes to her key manager first): wait for the outcomes themselves.
                await until(lambda: alice.idle and completed(bob1) | completed(bob2)
                            <= completed(alice), "Alice's outcome of every block Bob completed",
                            120)
                return {"alice": alice, "bob1": bob1, "bob2": bob2, "in_flight": in_flight,
                        "origins": (first_origin, second_origin),
                        "sources": (first_source, bob_end2.instrument)}
            finally:
                for task in (running_a, running_b):
                    task.cancel()
                await asyncio.gather(running_a, running_b, return_exceptions=True)

    got = asyncio.run(scenario())
    alice, bob1, bob2 = got["alice"], got["bob1"], got["bob2"]
    # The taggers counted from their own origins, seconds away from the bench's slot 0 and
    # from each other; each found its run's one marker.
    first_origin, second_origin = got["origins"]
    assert min(first_origin, second_origin) >= 10**12
    assert first_origin != second_origin
    for source in got["sources"]:
        assert source.markers == 1
        assert source.marker_seen
    # Alice ended the first run and started the second beyond every block she had drawn.
    assert alice.status.restarts == 1
    first_run = [r.block_id for r in bob1.results]
    assert bob1.first_block == 0
    assert bob2.first_block is not None
    assert bob2.first_block > max([*first_run, got["in_flight"]])
    assert alice.output_run == (bob2.epoch, bob2.first_block)
    assert bob2.epoch == bob1.epoch + 1
    # No block number was used twice at Alice; keys agree wherever both completed a block.
    alice_blocks = [r.block_id for r in alice.results]
    assert len(alice_blocks) == len(set(alice_blocks))
    bob_done = {r.block_id: r for r in [*bob1.results, *bob2.results]
                if isinstance(r, BlockCompleted)}
    alice_done = {r.block_id: r for r in alice.results if isinstance(r, BlockCompleted)}
    assert any(b >= bob2.first_block for b in alice_done)
    for block, result in alice_done.items():
        assert np.array_equal(result.key, bob_done[block].key)
    assert set(bob_done) <= set(alice_done)
    # The block in flight at the restart: aborted at both ends, with the reason in both logs.
    in_flight = got["in_flight"]
    alice_log = [r for r in audit(tmp_path / "audit-alice.jsonl") if r["block_id"] == in_flight]
    bob_log = [r for r in audit(tmp_path / "audit-bob.jsonl") if r["block_id"] == in_flight]
    assert [r["outcome"] for r in alice_log] == ["aborted"]
    assert [r["outcome"] for r in bob_log] == ["aborted"]
    assert alice_log[0]["reason"]
    assert "module restarted" in bob_log[0]["reason"]


def test_no_marker_on_the_channel_stops_the_module_with_the_reason(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    files = link_ends(tmp_path, port=port, bench="marker-missing", **ENDS)
    # The streamer's marker output is cabled to channel 7 of the bench's tagger, Bob's link
    # says channel 0: no marker ever comes there.
    bob_file = files[1]
    text = bob_file.read_text()
    text = text.replace("[bench.fibre]", "[bench.tagger]\nmarker_channel = 7\n[bench.fibre]")
    text = text.replace("block_slots =", "marker_channel = 0\nmarker_timeout_s = 2.0\n"
                                         "block_slots =")
    bob_file.write_text(text)
    alice_file = files[0]
    alice_file.write_text(alice_file.read_text().replace(
        "[bench.fibre]", "[bench.tagger]\nmarker_channel = 7\n[bench.fibre]"))
    configs = [(p, load_config(p)) for p in files]

    async def scenario() -> BobModule:
        with sim_benches([c for _, c in configs]):
            ends = build_ends(configs, None)
            _, bob_end = split(ends)
            assert isinstance(bob_end.module, BobModule)
            with pytest.raises(MarkerMissing) as missing:
                await asyncio.wait_for(run_ends(ends, None, quiet, 3600.0, 0.2), RUN_TIMEOUT_S)
            message = str(missing.value)
            assert "no start marker on channel 0 of tagger 'ab-tagger' after" in message
            assert "is the streamer's marker output cabled to it?" in message
            return bob_end.module

    bob = asyncio.run(scenario())
    assert bob.first_block == 0  # Alice had started: the marker was due
    assert bob.results == []
