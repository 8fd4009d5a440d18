"""Kq-2 stop at the module, over loopback TCP: a stop that arrives while an end waits for its
next block keeps that block from starting (Bob does not announce a block closed after the stop;
Alice does not answer an announcement that arrives after it) until a start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from qkdnode.drivers.roles import SeededRandomSource
from qkdnode.dsp.sifting import BobDetections
from qkdnode.node.io.qdist import QdistConnection
from qkdnode.node.module.frames import FramePlan, channel_patterns
from qkdnode.node.module.instruments import FrameMissed
from qkdnode.node.module.keys_out import KeyOutbox
from qkdnode.node.module.runtime import AliceModule, BobModule
from qkdnode.node.protocol.kq1 import StartRequested, StopRequested
from qkdnode.node.protocol.qdist import (
    BlockAborted,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
    TransmitterStarted,
)

MU = (0.485, 0.13, 2e-4)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
SECRET = bytes(range(256)) * 8
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
PLAN = FramePlan("ab", 1 << 12, 1 << 12, MU, P, q_x=0.5)
# Long enough for a block that was not held to be announced/answered (a few event-loop turns,
# no worker thread involved); a hold shows as nothing sent.
SETTLE_S = 0.3


class NoKeys:
    async def push(self, keys: object, timeout_s: float = 10.0) -> int:
        raise AssertionError("no key is expected")


class NeverTags:
    async def read(self) -> object:
        await asyncio.Event().wait()  # the tagger never delivers: blocks come from the test
        raise AssertionError


class OneFrame:
    """Queues block 0's frame, then is full (block 1's load never returns: Alice draws no
    more)."""

    def __init__(self) -> None:
        self.choices: dict[int, tuple[np.ndarray, ...]] = {}

    async def load(self, block: int, basis: np.ndarray, bit: np.ndarray,
                   intensity: np.ndarray) -> None:
        self.choices[block] = (basis, bit, intensity)
        if block >= 1:
            await asyncio.Event().wait()


async def pair() -> tuple[QdistConnection, asyncio.StreamReader, asyncio.StreamWriter,
                          asyncio.AbstractServer]:
    """A connection pair: (the far end's reader/writer as seen by a test peer, server)."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    near = await asyncio.open_connection("127.0.0.1", port)
    far = await accepted.get()
    return near, far, server  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def alice_running(frames: Any) -> AsyncIterator[tuple[AliceModule, QdistBob,
                                                             QdistConnection, QdistConnection]]:
    """Alice's module on ``frames``, running over a loopback connection to a bare QdistBob
    (the test drives Bob's end): (alice, bob, Alice's connection, Bob's connection)."""
    alice = AliceModule(PLAN, QdistAlice(PARAMS, SECRET), frames, KeyOutbox(NoKeys(), "ab"),
                        None, SeededRandomSource("sim://bench/rng", 2))
    bob = QdistBob(PARAMS, SECRET)
    (reader, writer), (far_reader, far_writer), server = await pair()
    conn = QdistConnection(alice.qdist, reader, writer)
    conn_b = QdistConnection(bob, far_reader, far_writer)
    tasks = [asyncio.create_task(alice.run(conn)), asyncio.create_task(conn_b.run())]
    try:
        # Bob's tagger is armed: Alice's frames and output may start.
        await conn_b.call(bob.announce_armed, conn_b.clock())
        yield alice, bob, conn, conn_b
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        far_writer.close()
        server.close()


def empty_detections(block: int) -> BobDetections:
    none = np.empty(0, np.int64)
    return PLAN.bob_block(block, none, none.astype(np.uint8), none.astype(np.uint8))


def test_bob_stopped_while_waiting_for_a_block_does_not_announce_it() -> None:
    async def scenario() -> tuple[int, int | None, int, int | None]:
        bob = BobModule(PLAN, QdistBob(PARAMS, SECRET), NeverTags(), None,  # type: ignore[arg-type]
                        channel_patterns({1: "X0", 2: "X1", 3: "Z0", 4: "Z1"}),
                        KeyOutbox(NoKeys(), "ab"), None,
                        SeededRandomSource("sim://bench/bob-rng", 1))
        (reader, writer), (far_reader, far_writer), server = await pair()
        conn = QdistConnection(bob.qdist, reader, writer)
        running = asyncio.create_task(bob.run(conn))
        try:
            # Bob arms, and waits for his first block (polled: a loaded machine is slow).
            deadline = asyncio.get_running_loop().time() + 30.0
            while bob.qdist.arm_epoch != 1 or conn.bytes_sent == 0:
                assert asyncio.get_running_loop().time() < deadline, "Bob never armed"
                await asyncio.sleep(0.02)
            armed = conn.bytes_sent  # his arm: the one frame before any block
            await far_reader.readexactly(armed)
            await bob.control(StopRequested())
            await bob._queue.put((0, empty_detections(0)))
            await asyncio.sleep(SETTLE_S)
            held = (conn.bytes_sent - armed, bob.qdist.block)
            await bob.control(StartRequested())
            first = await asyncio.wait_for(far_reader.read(20), 10)  # the announcement
            return *held, len(first), bob.qdist.block
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            writer.close()
            far_writer.close()
            server.close()

    sent, block, announced, block_after = asyncio.run(scenario())
    assert (sent, block) == (0, None), "a block started after the stop"
    assert announced == 20
    assert block_after == 0


@pytest.mark.parametrize("release", ["start", "finish_announced"])
def test_alice_stopped_does_not_answer_an_announcement_until_released(release: str) -> None:
    # Released by a Kq-2 start, or at a shutdown by finish_announced (the host's orderly stop:
    # Bob announced just before his own stop, so no start would come and his block would time
    # out); that answers the held block but leaves the module stopped.
    async def scenario() -> tuple[int, int | None, int | None]:
        frames = OneFrame()
        async with alice_running(frames) as (alice, bob, conn, conn_b):
            for _ in range(600):  # Alice's frame of block 0 is drawn (in a thread) and loaded
                if 0 in frames.choices and bob.started is not None:
                    break  # and her start announced
                await asyncio.sleep(0.05)
            assert bob.started == 0
            started = conn.bytes_sent
            await alice.control(StopRequested())
            await conn_b.call(bob.start_block, 0, empty_detections(0), conn_b.clock())
            for _ in range(200):  # the announcement reached Alice's end
                if alice.qdist.announced == 0:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(SETTLE_S)
            held = (conn.bytes_sent - started, alice.qdist.block)
            if release == "start":
                await alice.control(StartRequested())
            else:
                alice.finish_announced()
                await alice.control(StopRequested())  # a late stop does not hold it again
            for _ in range(200):
                if conn.bytes_sent > started:
                    break
                await asyncio.sleep(0.05)
            assert alice.running.is_set() == (release == "start")
            return *held, conn.bytes_sent - started

    sent, block, sent_after = asyncio.run(scenario())
    assert (sent, block) == (0, None), "Alice answered an announcement after the stop"
    assert sent_after > 0, f"Alice did not answer after {release}"


class HeldFrame:
    """Block 0's frame is being queued until the test decides: queued, or refused because
    its block began (FrameMissed); later loads never return."""

    def __init__(self) -> None:
        self.loading = asyncio.Event()
        self.outcome: asyncio.Future[bool] | None = None

    async def load(self, block: int, basis: np.ndarray, bit: np.ndarray,
                   intensity: np.ndarray) -> None:
        if block >= 1:
            await asyncio.Event().wait()
        self.outcome = asyncio.get_running_loop().create_future()
        self.loading.set()
        if not await self.outcome:
            raise FrameMissed(block)


@pytest.mark.parametrize("queued", [True, False])
def test_an_announcement_during_the_frames_upload_waits_for_its_outcome(queued: bool) -> None:
    # Bob announces block 0 while Alice's frame of it is still being queued: Alice neither
    # starts nor refuses it until the upload ends; then she starts it (the frame played) or
    # refuses it as an underrun (it did not), never starting a block on choices that did not
    # play.
    async def scenario() -> tuple[int, int, BlockAborted | None]:
        frames = HeldFrame()
        async with alice_running(frames) as (alice, bob, conn, conn_b):
            await asyncio.wait_for(frames.loading.wait(), 60)
            await conn_b.call(bob.start_block, 0, empty_detections(0), conn_b.clock())
            for _ in range(200):  # the announcement reached Alice's end
                if alice.qdist.announced == 0:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(SETTLE_S)
            during = conn.bytes_sent
            assert frames.outcome is not None
            frames.outcome.set_result(queued)
            aborted = None
            for _ in range(400):
                if conn.bytes_sent:
                    break
                await asyncio.sleep(0.05)
            while not queued and aborted is None:
                event = await asyncio.wait_for(conn_b.events.get(), 60)
                if isinstance(event, BlockAborted):
                    aborted = event
            return during, conn.bytes_sent, aborted

    during, after, aborted = asyncio.run(scenario())
    assert during == 0, "Alice answered before her frame was queued"
    assert after > 0
    if not queued:
        assert aborted is not None
        assert "transmitter underrun" in aborted.reason


def test_an_arm_repeated_on_a_new_connection_gets_the_start_without_a_restart() -> None:
    # Bob armed, then his connection dropped before Alice's start reached him: on the new
    # connection he repeats the same arm; Alice announces the run's start there, and does not
    # end a run for it (no new marker, no block skipped).
    async def scenario() -> tuple[AliceModule, QdistBob, list[object]]:
        frames = HeldFrame()
        alice = AliceModule(PLAN, QdistAlice(PARAMS, SECRET), frames,
                            KeyOutbox(NoKeys(), "ab"), None,
                            SeededRandomSource("sim://bench/rng", 3))
        bob = QdistBob(PARAMS, SECRET)
        got: list[object] = []
        for attempt in range(2):
            (reader, writer), (far_reader, far_writer), server = await pair()
            conn = QdistConnection(alice.qdist, reader, writer)
            if attempt:
                bob.reset_stream()
            conn_b = QdistConnection(bob, far_reader, far_writer)
            tasks = [asyncio.create_task(alice.run_connection(conn)),
                     asyncio.create_task(conn_b.run())]
            try:
                await conn_b.call(lambda now, again=bool(attempt): bob.announce_armed(
                    now, repeat=again), conn_b.clock())
                await asyncio.wait_for(frames.loading.wait(), 60)
                for _ in range(200):  # the arm reached Alice
                    if alice.qdist.armed_epoch == 1:
                        break
                    await asyncio.sleep(0.01)
                if attempt:
                    assert frames.outcome is not None
                    frames.outcome.set_result(True)  # the first frame is queued: output on
                    while not got:
                        event = await asyncio.wait_for(conn_b.events.get(), 60)
                        if not isinstance(event, FrameRejected):
                            got.append(event)
            finally:
                far_writer.close()
                writer.close()
                server.close()
                await asyncio.gather(*tasks, return_exceptions=True)
                if not attempt:
                    await alice.connection_lost(conn, "cut by the test")
        await alice.shutdown()
        return alice, bob, got

    alice, bob, got = asyncio.run(scenario())
    assert got == [TransmitterStarted(1, 0)]
    assert bob.started == 0
    assert alice.output_run == (1, 0)
    assert alice.status.restarts == 0
