"""``StreamerFrames`` (Alice's frames into a frame streamer): a new run's restart switches the
output off before it asks the first free block, and never interleaves with an exchange a
cancelled run's worker thread still has with the streamer (review findings)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from qkdnode.node.module.instruments import StreamerFrames

BLOCK_SLOTS = 1 << 10


class FakeStreamer:
    """A frame streamer on whose clock block ``playing`` has begun; with the output on and no
    frame queued, the next block begins as vacuum when the output is switched off."""

    def __init__(self, upload_s: float = 0.0) -> None:
        self.calls: list[str] = []
        self.output = False
        self.begun = 4  # blocks 0..3 have begun
        self.upload_s = upload_s
        self.first: int | None = None
        self._busy = threading.Lock()
        self.uploading = threading.Event()

    def _enter(self, name: str) -> None:
        # Two exchanges at once would interleave their commands on the one connection.
        assert self._busy.acquire(blocking=False), f"{name} overlaps another exchange"
        self.calls.append(name)

    def slot_rate_hz(self) -> float:
        return 1e9

    def frame_slots(self) -> int:
        return BLOCK_SLOTS

    def set_frame_slots(self, n: int) -> None:
        raise AssertionError("not needed")

    def stop(self) -> None:
        self._enter("stop")
        if self.output:
            self.begun += 1  # the block that began meanwhile, as vacuum
        self.output = False
        self._busy.release()

    def start(self) -> None:
        self._enter("start")
        self.output = True
        self._busy.release()

    def next_block(self) -> int:
        self._enter("next_block")
        self._busy.release()
        return self.begun

    def set_first_block(self, block: int) -> None:
        self._enter("set_first_block")
        try:
            assert not self.output, "FRAM:FIRS refused: the output is on"
            assert block >= self.begun, "FRAM:FIRS refused: the block has begun"
            self.first = block
        finally:
            self._busy.release()

    def set_marker(self, mode: str) -> None:
        self._enter("set_marker")
        self._busy.release()

    def frames_free(self) -> int:
        self._enter("frames_free")
        self._busy.release()
        return 1

    def queue_frame(self, block: int, *frame: Any) -> None:
        self._enter("queue_frame")
        self.uploading.set()
        time.sleep(self.upload_s)
        self._busy.release()


def test_restart_switches_the_output_off_before_it_asks_the_first_free_block() -> None:
    streamer = FakeStreamer()
    frames = StreamerFrames(streamer, BLOCK_SLOTS)  # type: ignore[arg-type]

    async def scenario() -> int:
        await frames.start()
        # The module asked the first free block (4) while the output still played; by the
        # time the output is off, block 4 has begun as vacuum.
        return await frames.restart(4)

    first = asyncio.run(scenario())
    assert first == 5
    assert streamer.first == 5
    assert frames.first_block == 5
    assert streamer.calls[-4:] == ["stop", "next_block", "set_first_block", "set_marker"]


def test_restart_switches_off_an_output_whose_start_was_cancelled() -> None:
    streamer = FakeStreamer()
    frames = StreamerFrames(streamer, BLOCK_SLOTS)  # type: ignore[arg-type]
    streamer.output = True  # OUTP ON went out, but the awaiting task was cancelled
    assert asyncio.run(frames.restart(10)) == 10
    assert streamer.first == 10
    assert not streamer.output


def test_restart_waits_for_the_upload_of_a_cancelled_run() -> None:
    streamer = FakeStreamer(upload_s=0.5)
    frames = StreamerFrames(streamer, BLOCK_SLOTS)  # type: ignore[arg-type]
    zeros = np.zeros(BLOCK_SLOTS, np.uint8)

    async def scenario() -> int:
        upload = asyncio.ensure_future(frames.load(7, zeros, zeros, zeros))
        await asyncio.to_thread(streamer.uploading.wait, 10.0)
        upload.cancel()  # the run ends; its worker thread still uploads
        await asyncio.gather(upload, return_exceptions=True)
        return await frames.restart(8)

    assert asyncio.run(scenario()) == 8
    assert streamer.calls.index("stop") > streamer.calls.index("queue_frame")


def test_close_waits_for_the_upload_of_a_cancelled_run_and_switches_the_output_off() -> None:
    streamer = FakeStreamer(upload_s=0.5)
    closed: list[bool] = []
    streamer.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    frames = StreamerFrames(streamer, BLOCK_SLOTS)  # type: ignore[arg-type]
    zeros = np.zeros(BLOCK_SLOTS, np.uint8)
    streamer.output = True  # on, though no start completed (_started is false)

    async def scenario() -> None:
        upload = asyncio.ensure_future(frames.load(7, zeros, zeros, zeros))
        await asyncio.to_thread(streamer.uploading.wait, 10.0)
        upload.cancel()  # the module stops; its worker thread still uploads
        await asyncio.gather(upload, return_exceptions=True)
        frames.close()  # the fake asserts if it overlaps the upload

    asyncio.run(scenario())
    assert streamer.calls[-2:] == ["queue_frame", "stop"]
    assert not streamer.output
    assert closed == [True]
