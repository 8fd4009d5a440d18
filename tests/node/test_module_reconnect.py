"""Qdist reconnect: the TCP connection between two modules is cut in the middle of a block;
the ends abort that block (reason in the audit log, no key from it), reconnect with back-off
and go on with the next block, which distils as before. Both ends built from configuration
files, as ``qkdnode module`` and ``qkdnode run`` build them; the cut is made by a TCP relay
between the receiver and the transmitter."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from qkdnode.node.config import load_config
from qkdnode.node.module.host import bench_frames, sim_benches
from qkdnode.node.module.launch import build_ends, code_coverage, run_ends, status_lines
from qkdnode.node.module.runtime import AliceModule
from qkdnode.node.protocol.qdist import BlockAborted, BlockCompleted

ENDS = {"bench": "reconnect", "seed": 11, "block_slots": 16_777_216,
        "link_extra": "timing_slots = 4_194_304\n", "distillation_extra": "block_timeout_s = 120\n"}


class Relay:
    """Forwards TCP connections to ``target``; :meth:`cut` resets every one of them."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        self._tasks += [asyncio.create_task(pipe(reader, up_writer)),
                        asyncio.create_task(pipe(up_reader, writer))]

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.server.close()


def test_cut_connection_aborts_the_block_in_flight_and_the_ends_go_on(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    alice_port = port

    async def scenario() -> tuple[list, list, int, list[str]]:
        relay = Relay(alice_port)
        relay_port = await relay.start()
        files = link_ends(tmp_path, port=alice_port, bob_port=relay_port, **ENDS)
        configs = [(p, load_config(p)) for p in files]
        with sim_benches([c for _, c in configs]):
            ends = build_ends(configs, None, bench_frames())
            alice = next(e.module for e in ends if isinstance(e.module, AliceModule))

            async def cutter() -> None:
                # Once block 0 has ended, cut as soon as the next block is in flight.
                while True:
                    if alice.results and alice.qdist.block is not None:
                        relay.cut()
                        return
                    await asyncio.sleep(0.005)

            cutting = asyncio.create_task(cutter())
            try:
                await asyncio.wait_for(run_ends(ends, 3, lambda _: None, 3600.0, 0.2), 600)
            finally:
                cutting.cancel()
                await relay.close()
            bob = next(e.module for e in ends if e.module is not alice)
            return alice.results, bob.results, relay.accepted, status_lines(ends)

    alice_results, bob_results, accepted, lines = asyncio.run(scenario())
    assert accepted >= 2, "the receiver did not reconnect"
    assert all(f"Qdist reconnects {accepted - 1}" in line for line in lines), lines
    # Both ends ended the same blocks the same way, with the same keys.
    assert [r.block_id for r in alice_results] == [r.block_id for r in bob_results]
    for ra, rb in zip(alice_results, bob_results, strict=True):
        assert type(ra) is type(rb), (ra, rb)
        if isinstance(ra, BlockCompleted):
            assert isinstance(rb, BlockCompleted)
            assert np.array_equal(ra.key, rb.key)
    # The block in flight was aborted at both ends because of the cut, with no key ...
    cut = [r for r in alice_results if isinstance(r, BlockAborted)
           and r.reason.startswith("connection lost")]
    assert len(cut) == 1, [getattr(r, "reason", "ok") for r in alice_results]
    assert cut[0].block_id == alice_results[1].block_id
    assert isinstance(bob_results[1], BlockAborted)
    assert bob_results[1].reason.startswith("connection lost")
    # ... and recorded so in both audit logs; the block after it ran its full dialogue over
    # the new connection (sifted, estimated and decided with the peer, not cut short).
    for who in ("alice", "bob"):
        records = [json.loads(line) for line in
                   (tmp_path / f"audit-{who}.jsonl").read_text().splitlines()]
        assert len(records) == 3
        assert records[1]["outcome"] == "aborted"
        assert records[1]["reason"].startswith("connection lost")
        assert records[1]["final_length"] == 0
        assert records[2]["sifted_bits"] > 10_000
        assert records[2]["n_x"] is not None
        assert not (records[2]["reason"] or "").startswith("connection lost")


def test_code_length_that_does_not_cover_qber_abort_is_named(tmp_path: Path,
                                                              link_ends: Any) -> None:
    """n = 16000 codes are validated up to QBER 9.18 %: with the default qber_abort (11 %) the
    gap is named (the module warns at start); with qber_abort 9 %, or n = 64000 (validated to
    11 %), there is none."""
    def coverage(extra: str, length: int = 16000) -> str | None:
        path, _ = link_ends(tmp_path, bench="reconnect", seed=11, block_slots=16_777_216,
                            port=9, code_length=length, distillation_extra=extra)
        return code_coverage(load_config(path).links[0])

    gap = coverage("")
    assert gap is not None
    assert "code_length 16000" in gap
    assert "0.0918" in gap
    assert "0.1100" in gap
    assert coverage("qber_abort = 0.09\n") is None
    assert coverage("", 64000) is None
