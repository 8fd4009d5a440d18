"""A stale start marker, and the start order through a recording.

Bob's tagger is the simulated bench's quTAG (its C mock, the driver and binding as in a lab);
tags are pushed into the device as the previous run of a transmitter would have left them:

* a marker the tagger registers after Bob's arm but before the arm is announced belongs to a
  run the transmitter started for an earlier arm: it is dropped and counted, its photons too,
  and the first marker after the announcement is the origin;
* a marker pushed before the arm never becomes the origin (the tagger's inputs are off, and
  its start clears its ring);
* the recording's wrapper forwards the start order (arm, announcement, the marker's timeout,
  the counters) and records the tags as Qsync gets them: after the marker, relative to it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkdnode.node.config import load_config
from qkdnode.node.module.host import sim_benches
from qkdnode.node.module.instruments import MarkerMissing, TaggerSource, open_link_instrument
from qkdnode.node.module.recording import Recorder, Recording

ENDS = {"seed": 5, "block_slots": 16_777_216}
MS = 10**9  # ps


def bob_tagger(tmp_path: Path, link_ends: Any, port: int, bench: str) -> tuple[Any, Any]:
    """Bob's config and a function opening his link's tagger (inside ``sim_benches``)."""
    files = link_ends(tmp_path, port=port, bench=bench, **ENDS)
    config = load_config(files[1])

    def open_source() -> TaggerSource:
        source = open_link_instrument(config, 0, config.links[0])
        assert isinstance(source, TaggerSource)
        return source

    return config, open_source


def push(source: TaggerSource, times_ps: list[int], channels: list[int]) -> None:
    """Tags registered by Bob's tagger (its device clock)."""
    mock = source.tagger._keepalive  # type: ignore[attr-defined]
    mock.push(np.array(times_ps, np.int64), np.array(channels, np.int32))


async def read_until(read: Any, n: int, tries: int = 50) -> tuple[list[int], list[int]]:
    """Reads until ``n`` tags came (they are in the device already; a few reads at most)."""
    times: list[int] = []
    channels: list[int] = []
    for _ in range(tries):
        batch = await read()
        times += [int(t) for t in batch.timestamps_ps]
        channels += [int(c) for c in batch.channels]
        if len(times) >= n:
            break
    return times, channels


def test_a_marker_read_before_the_arm_was_announced_is_dropped_and_counted(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    config, open_source = bob_tagger(tmp_path, link_ends, port, "stale-marker")

    async def scenario() -> None:
        source = open_source()
        m = source.marker_channel
        try:
            push(source, [1 * MS], [m])  # before the arm: the inputs are off
            await source.arm()
            assert source.arms == 1
            # The previous run's marker and two of its photons, registered after the arm.
            push(source, [2 * MS, 2 * MS + 5000, 2 * MS + 9000], [m, 1, 2])
            batch = await source.read()
            assert batch.timestamps_ps.size == 0
            assert source.stale_markers == 1
            assert source.before_marker == 2
            assert not source.marker_seen
            # The arm is announced; this arm's run starts, and its marker is the origin.
            source.armed_announced()
            source.expect_marker()
            push(source, [7 * MS, 7 * MS + 1000, 7 * MS + 6000], [m, 3, 4])
            times, channels = await read_until(source.read, 2)
            assert times == [1000, 6000]
            assert channels == [3, 4]
            assert source.marker_seen
            assert source.markers == 1
            assert source.stale_markers == 1
            assert source.markers_after_origin == 0
        finally:
            source.close()

    with sim_benches([config]):
        asyncio.run(scenario())


def test_the_recording_forwards_the_start_order_and_records_tags_after_the_marker(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    config, open_source = bob_tagger(tmp_path, link_ends, port, "stale-marker-rec")
    rec_dir = tmp_path / "rec"

    async def scenario() -> None:
        source = open_source()
        rec = Recorder(rec_dir)
        recorded: Any = rec.source(source)
        m = source.marker_channel
        try:
            await recorded.arm()
            assert source.arms == recorded.arms == 1
            push(source, [2 * MS, 2 * MS + 4000], [m, 2])
            assert (await recorded.read()).timestamps_ps.size == 0
            assert recorded.stale_markers == 1
            recorded.armed_announced()
            recorded.expect_marker()
            push(source, [3 * MS + 500, 4 * MS, 4 * MS + 2000, 4 * MS + 3000], [1, m, 4, 3])
            times, channels = await read_until(recorded.read, 2)
            assert times == [2000, 3000]
            assert channels == [4, 3]
            assert recorded.marker_seen
            assert recorded.markers == 1
            assert recorded.before_marker == source.before_marker == 2
        finally:
            source.close()
            rec.close()
        # What Qsync got, and only that: the tags after the marker, relative to it.
        reads = list(Recording(rec_dir, {}).tag_reads())
        assert [int(t) for ts, _ in reads for t in ts] == [2000, 3000]
        assert [int(c) for _, ch in reads for c in ch] == [4, 3]

    with sim_benches([config]):
        asyncio.run(scenario())


def test_the_recorded_source_times_out_on_a_missing_marker(
        tmp_path: Path, link_ends: Any, port: int) -> None:
    config, open_source = bob_tagger(tmp_path, link_ends, port, "stale-marker-timeout")

    async def scenario() -> None:
        source = open_source()
        rec = Recorder(tmp_path / "rec")
        recorded: Any = rec.source(source)
        try:
            await recorded.arm()
            recorded.armed_announced()
            recorded.expect_marker(time.monotonic() - 2 * source.marker_timeout_s)
            with pytest.raises(MarkerMissing, match=f"no start marker on channel "
                                                    f"{source.marker_channel}"):
                await recorded.read()
        finally:
            source.close()
            rec.close()

    with sim_benches([config]):
        asyncio.run(scenario())
