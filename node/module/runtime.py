"""The QKD module runtime: one end of a link, from instruments to keys at the key manager.

Alice (:class:`AliceModule`)
    draws each block's frame (:meth:`~.frames.FramePlan.alice_block`, in a thread), hands it to
    the transmitter (which reloads at the block boundary; a full transmitter queue stops the
    drawing), keeps its choices until Bob announces the block, then runs the block's Qdist
    dialogue with them.

Bob (:class:`BobModule`)
    reads the tagger, numbers the detections' slots with Qsync
    (:class:`qkdnode.dsp.qsync.SlotTracker`, in a thread: its kernels release the GIL), and cuts
    them into blocks by slot number (:mod:`.frames`); reads wait for Qsync in a bounded queue
    (:data:`TAG_QUEUE`). Block ``b`` is closed once a detection of
    a later block is assigned; detections that arrive for a closed block (after a loss of lock
    and re-acquisition) are dropped and counted. Closed blocks wait in a bounded queue
    (:data:`BLOCK_QUEUE`) for the Qdist dialogue: when distillation falls behind, reading stops,
    and with it the simulated transmitter.

Start order (the instruments' common time origin)
    Bob's tagger runs first: his module arms it (:meth:`.instruments.TaggerSource.arm`), then
    announces "armed" (:meth:`~..protocol.qdist.QdistBob.announce_armed`, an authenticated
    Qdist frame). Alice queues her first frame, switches the output on only then (the frame
    streamer's start marker fires at the first slot of the run's first block ``F``) and
    announces the start with ``F`` (:meth:`~..protocol.qdist.QdistAlice.announce_start`).
    Bob numbers slots from the marker: slot ``k`` after it is slot ``F L + k`` of the link.
    A Bob that arms anew (a restarted module: its tagger's origin is gone) makes Alice end the
    run (blocks in flight abort, "instruments restarted" in both audit logs; the choices of
    queued blocks are dropped) and start a new one at a block later than every block she
    drew, so block numbers, and the key IDs derived from them, never repeat. Bob repeats his
    arm on every new connection; Alice announces the start again if no block of the run has
    completed. An Alice whose process restarted (its Qdist session resumed from the saved
    state) answers that arm with "resumed": Bob re-arms his tagger (Qsync and the block
    cutter start afresh) and announces a new arm, and Alice starts a new run above every block
    the session began.

Both ends
    Qdist runs over :class:`qkdnode.node.io.qdist.QdistConnection` (reconciliation decodes in a
    worker thread, so both cores work). A completed block's key goes to the key sink
    (:class:`~.keys_out.KeyOutbox`: Kq-1 to the key manager); every block, completed or
    aborted, writes one line to the audit log (:class:`AuditLog`, JSON lines, no key bits).
"""

from __future__ import annotations

import abc
import asyncio
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.roles import RandomSource
from qkdnode.drivers.sim.link import TagBatch
from qkdnode.dsp.qsync import DEFAULT_ACQUIRE_TAGS, SlotTracker
from qkdnode.dsp.sifting import AliceChoices, BobDetections

from ..errors import LocalProtocolError
from ..io.qdist import QdistConnection
from ..protocol.kq1 import StartRequested, StopRequested
from ..protocol.qdist import (
    NEED_DATA,
    BlockAborted,
    BlockAudit,
    BlockCompleted,
    DetectionsReceived,
    FrameRejected,
    QdistAlice,
    QdistBob,
    ReceiverArmed,
    TransmitterRestarted,
    TransmitterStarted,
)
from .frames import FramePlan
from .instruments import FrameMissed

__all__ = ["BLOCK_QUEUE", "TAG_QUEUE", "AliceModule", "AuditLog", "BlockCutter", "BobModule",
           "ModuleStatus"]

log = logging.getLogger(__name__)

# Tagger reads waiting for Qsync: a few reads (a few ms of tags) smooth out a slow Qsync step
# without holding more than a few MB of tags.
TAG_QUEUE = 4
# Blocks that did not play whose reason Alice keeps for their announcement: more than the
# streamer's queue and Bob's open blocks together.
MISSED_KEPT = 64
# The reason of blocks whose run ended because the receiver armed anew.
RESTARTED_RUN = "instruments restarted (the receiver armed anew)"
RESTARTED_MODULE = "instruments restarted: the receiver's module restarted"
# Bob re-arms (a new arm: Alice starts a new run, with a new marker) when Qsync has held no
# lock for this long since the marker or since its last loss of lock, while detections kept
# coming (LOCK_TIMEOUT_TAGS of them without a slot): a marker that was not this run's (a
# previous run's, or a glitch on the marker cable) puts slot 0 outside Qsync's +-1 ms window
# for good, and so does a clock step beyond it; a new run is the way back. Qsync locks within
# its first acquisition window (2048 detections) on a working link. Each further re-arm with
# no completed block in between doubles the time (at most 16x).
DEFAULT_LOCK_TIMEOUT_S = 60.0
LOCK_TIMEOUT_TAGS = 16 * DEFAULT_ACQUIRE_TAGS
# Qsync can also lock on the wrong slots: its timing pattern repeats every timing_slots, so an
# origin off by about a whole repetition aliases into its window. The blocks' bits then do not
# correlate (QBER near 0.5). Bob re-arms after this many blocks in a row whose Z-basis QBER is
# at least UNCORRELATED_QBER (no physical link gets there; misnumbered slots do), and after
# twice as many for each further re-arm with no completed block in between (at most 16x), so a
# link that is broken for another reason does not re-arm in a tight loop.
MISNUMBERED_BLOCKS = 3
UNCORRELATED_QBER = 0.25
# Doublings of both waits above after re-arms with no completed block in between (16x).
MAX_BACKOFF_DOUBLINGS = 4

# Closed blocks waiting for distillation: one waiting while one distils keeps both busy; more
# would only hold detections (and Alice's choices for them) in memory.
BLOCK_QUEUE = 1


class KeySink(Protocol):
    async def put(self, block: int, key_bits: NDArray[np.uint8], qber: float | None = None,
                  created_at: float | None = None) -> int: ...


class FrameSink(Protocol):
    async def load(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None: ...


class TagSource(Protocol):
    async def read(self) -> TagBatch: ...


class AuditLog:
    """Appends one JSON line per block: the link, the time and the block's audit (no key).

    Args:
        path: the file (created with its directory; appended to).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, link: str, audit: BlockAudit) -> None:
        record: dict[str, Any] = {"link": link, "time": time.time(), **audit.to_json()}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class ModuleStatus:
    """What a module shows while it runs.

    Attributes:
        role: "alice" or "bob".
        sync: Qsync state ("locked", "acquiring"; "n/a" at Alice).
        ppm: Qsync's estimate of the clock frequency difference.
        losses: losses of lock so far.
        detections: detections numbered (Bob) or announced to Alice.
        late_detections: detections of blocks already closed (Bob; dropped).
        sifted_bits: X bits sifted over all blocks.
        blocks_completed, blocks_aborted: block outcomes; last_abort: the last reason.
        qber: of the last block with one.
        secret_bits: key bits delivered; started: monotonic start time.
        run: the start order's state (armed, started, the marker); first_block: the first
            block of the output's run; restarts: runs ended by a new arm of Bob's (Alice);
            tags_before_marker: tags dropped because they came before the marker (Bob);
            stale_markers: markers dropped as a previous run's (read before Bob's arm was
            announced); relocks: re-arms for lost slot timing (no Qsync lock for
            ``lock_timeout_s``, or blocks in a row at QBER >= ``UNCORRELATED_QBER``) (Bob);
            last_relock: the reason of the last one.
    """

    role: str
    sync: str = "n/a"
    ppm: float = math.nan
    losses: int = 0
    detections: int = 0
    late_detections: int = 0
    sifted_bits: int = 0
    blocks_completed: int = 0
    blocks_aborted: int = 0
    last_abort: str | None = None
    qber: float | None = None
    secret_bits: int = 0
    started: float = 0.0
    run: str = "waiting for the receiver's arm"
    first_block: int | None = None
    restarts: int = 0
    tags_before_marker: int = 0
    stale_markers: int = 0
    relocks: int = 0
    last_relock: str | None = None

    def summary(self, now: float) -> dict[str, Any]:
        """The status with rates (per second since the start)."""
        elapsed = max(1e-9, now - self.started)
        out = asdict(self)
        out.pop("started")
        out["sifted_rate_bps"] = self.sifted_bits / elapsed
        out["secret_key_rate_bps"] = self.secret_bits / elapsed
        return out


class _ModuleBase(abc.ABC):
    """What both ends share: block outcomes, Kq-2 start/stop, and the connection's life.

    The producers (Alice's frames, Bob's tagger reads and Qsync) run in background tasks that
    outlive a connection: :meth:`run_connection` runs the dialogue over one connection and
    raises ConnectionError when it drops; :meth:`connection_lost` then ends the block in flight
    (aborted, with the reason in the audit log) and the caller reconnects and calls
    :meth:`run_connection` again; :meth:`shutdown` stops the producers.
    """

    def __init__(self, link: str, keys: KeySink, audit: AuditLog | None,
                 clock: Callable[[], float]) -> None:
        self.link = link
        self.keys = keys
        self.audit = audit
        self.clock = clock
        self.results: list[BlockCompleted | BlockAborted] = []
        self.qdist: QdistAlice | QdistBob
        # Kq-2: set while the module may start blocks (cleared by a stop request).
        self.running = asyncio.Event()
        self.running.set()
        # Set while blocks the partner announced may be carried out: while running, and after
        # :meth:`finish_announced` (a shutdown) even though stopped.
        self.answering = asyncio.Event()
        self.answering.set()
        self._finishing = False
        self.connections = 0
        self._background: list[asyncio.Task[Any]] = []

    @abc.abstractmethod
    def _producers(self) -> list[Coroutine[Any, Any, None]]:
        """The role's background work (frames to play; tags to read and number)."""

    def start(self) -> None:
        """Starts the producers if they are not running (:meth:`run_connection` does too)."""
        if not self._background:
            self._background = [asyncio.create_task(c) for c in self._producers()]

    def _tasks(self, conn: QdistConnection) -> list[asyncio.Task[Any]]:
        self.start()
        return [*self._background, asyncio.create_task(conn.run())]

    async def run(self, conn: QdistConnection, blocks: int | None = None) -> None:
        """Runs over one connection until ``blocks`` blocks have ended (None: until cancelled
        or disconnected), then stops the producers."""
        try:
            await self.run_connection(conn, blocks)
        finally:
            await self.shutdown()

    async def run_connection(self, conn: QdistConnection, blocks: int | None = None) -> None:
        """Runs the dialogue over ``conn`` until ``blocks`` blocks have ended in all.

        Raises:
            ConnectionError: the connection dropped (call :meth:`connection_lost`).
        """
        self.connections += 1
        if self.connections > 1:
            self.qdist.reset_stream()
        tasks = self._tasks(conn)
        try:
            await self._dialogue(conn, tasks, blocks)
        finally:
            await _cancel(tasks[len(self._background):])

    @abc.abstractmethod
    async def _dialogue(self, conn: QdistConnection, tasks: list[asyncio.Task[Any]],
                        blocks: int | None) -> None:
        """The role's Qdist dialogue over ``conn`` until ``blocks`` blocks have ended;
        ``tasks`` end it (with their error, or ConnectionError) when one of them ends."""

    async def connection_lost(self, conn: QdistConnection, reason: str) -> None:
        """After a dropped connection: takes the outcomes that came through, then aborts the
        block in flight (no key from it; the reason goes to the audit log)."""
        while not conn.events.empty():
            event = conn.events.get_nowait()
            if isinstance(event, BlockCompleted | BlockAborted):
                await self._outcome(event)
        self.qdist.connection_lost(reason)
        while (event := self.qdist.next_event()) is not NEED_DATA:
            if isinstance(event, BlockCompleted | BlockAborted):
                await self._outcome(event)

    async def shutdown(self) -> None:
        """Stops the producers."""
        await _cancel(self._background)
        self._background = []

    async def control(self, request: StartRequested | StopRequested) -> None:
        """Kq-2: a stop lets the block in flight end and starts no new one; a start resumes."""
        if isinstance(request, StopRequested):
            if self.running.is_set():
                log.info("link %s: stopped by the key manager", self.link)
            self.running.clear()
            if not self._finishing:
                self.answering.clear()
        else:
            if not self.running.is_set():
                log.info("link %s: started by the key manager", self.link)
            self.running.set()
            self.answering.set()

    def finish_announced(self) -> None:
        """At a shutdown: a block the partner announced is carried out although this end is
        stopped (a stop alone holds it until a start), so that the partner's block in flight
        ends with a key rather than a timeout. No new frames or announcements follow."""
        self._finishing = True
        self.answering.set()

    @property
    def idle(self) -> bool:
        """No block in flight."""
        return self.qdist.block is None

    async def _outcome(self, event: BlockCompleted | BlockAborted) -> None:
        st: ModuleStatus = self.status  # type: ignore[attr-defined]
        a = event.audit
        st.sifted_bits += a.sifted_bits
        if st.role == "alice":
            st.detections += a.detections
        if a.qber is not None:
            st.qber = a.qber
        if self.audit is not None:
            self.audit.write(self.link, a)
        if isinstance(event, BlockCompleted):
            st.blocks_completed += 1
            st.secret_bits += int(event.key.size)
            await self.keys.put(event.block_id, event.key, a.qber)
        else:
            st.blocks_aborted += 1
            st.last_abort = event.reason
            log.info("link %s: block %d aborted: %s", self.link, event.block_id, event.reason)
        self.results.append(event)


class AliceModule(_ModuleBase):
    """The transmitter's end.

    Args:
        plan: the link's frame plan.
        qdist: Alice's Qdist end.
        frames: the transmitter (takes each block's frame).
        keys: where final keys go.
        audit: the audit log (None: none).
        rng: where Alice's choices come from (:meth:`.frames.FramePlan.alice_block`): the
            link's RandomSource (a QRNG or the OS CSPRNG; a seeded one on the simulated bench).

    Raises:
        TypeError: ``rng`` is not a RandomSource (a numpy Generator is not one: PCG64's
            state can be recovered from its output).
    """

    def __init__(self, plan: FramePlan, qdist: QdistAlice, frames: FrameSink, keys: KeySink,
                 audit: AuditLog | None, rng: RandomSource,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(rng, RandomSource):
            raise TypeError(f"Alice's choices need a RandomSource, got {type(rng).__name__}")
        super().__init__(plan.link, keys, audit, clock)
        self.plan = plan
        self.qdist = qdist
        self.frames = frames
        self.rng = rng
        self.status = ModuleStatus("alice", started=clock())
        self._choices: dict[int, AliceChoices] = {}
        # Blocks that did not play -> why (their announcements are refused with it).
        self._missed: dict[int, str] = {}
        # Blocks whose frame is being queued (set when that ends, played or missed).
        self._loading: dict[int, asyncio.Future[None]] = {}
        self.underrun_blocks = 0
        # Set while the frames are paused by a Kq-2 stop (no frame being drawn or loaded).
        self.frames_paused = asyncio.Event()
        # Bob's arms (epochs) as they arrive; the output's run (arm epoch, first block) once
        # it is on; the first block number never drawn; the live connection.
        self._arms: asyncio.Queue[int] = asyncio.Queue()
        self.output_run: tuple[int, int] | None = None
        self._next_free = 0
        self._conn: QdistConnection | None = None
        # The arm epoch the run being prepared starts for (set when Bob's arm comes).
        self._run_arm: asyncio.Future[int] | None = None

    async def _play(self) -> None:
        """Plays one run of the output per arm of Bob's (module docstring "Start order"). The
        first run's frames are drawn and queued while Bob arms (the output stays off)."""
        current: int | None = None  # the arm epoch the running output serves
        run_arm = self._run_arm = asyncio.get_running_loop().create_future()
        streaming = asyncio.ensure_future(self._stream(await self._new_run()))
        try:
            while True:
                getter = asyncio.ensure_future(self._arms.get())
                try:
                    await asyncio.wait([getter, streaming], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()
                if streaming.done():
                    streaming.result()  # its error ends the module
                epoch = getter.result()
                if epoch == current:  # Bob reconnected before he saw the start
                    if self.output_run is not None and self.output_run[0] == epoch:
                        await self._announce_start()
                    continue
                current = epoch
                if not run_arm.done():  # the prepared run starts for this arm
                    run_arm.set_result(epoch)
                    continue
                streaming.cancel()
                await asyncio.gather(streaming, return_exceptions=True)
                self.status.restarts += 1
                log.warning("link %s: the receiver armed anew (arm %d): the run from block %s "
                            "ends, a new one starts with a new marker", self.link, epoch,
                            self.status.first_block)
                first = await self._new_run()
                run_arm = self._run_arm = asyncio.get_running_loop().create_future()
                run_arm.set_result(epoch)
                streaming = asyncio.ensure_future(self._stream(first))
        finally:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)

    async def _new_run(self) -> int:
        """Ends the output's run (if any): its queued blocks will not play. Returns the first
        block of the next run: later than every block drawn or begun."""
        self.output_run = None
        # Above every block the Qdist session began, also before a restart of this process.
        first = max(self._next_free, self.qdist.next_block)
        next_block = getattr(self.frames, "next_block", None)
        if next_block is not None:
            first = max(first, await next_block())
        restart = getattr(self.frames, "restart", None)
        if restart is not None:
            # The streamer may name a later block once its output is off.
            first = max(first, int(await restart(first)))
        for block in list(self._choices):
            del self._choices[block]
            self._missed[block] = f"{RESTARTED_RUN}: its run ended before it was distilled"
        self._next_free = first
        return first

    async def _announce_start(self) -> None:
        """Tells Bob the run's first block (if connected; he asks again after a reconnect)."""
        conn, run = self._conn, self.output_run
        if conn is None or run is None:
            return
        try:
            await conn.call(self._start_run_announced, run[0], run[1], self.clock())
        except (ConnectionError, OSError) as exc:
            log.info("link %s: the start could not be announced (%s); the receiver asks "
                     "again when he reconnects", self.link, exc)

    def _start_run_announced(self, epoch: int, first: int, now: float) -> None:
        """Announces the run's start (under the connection's lock) unless moot."""
        qdist = self.qdist
        assert isinstance(qdist, QdistAlice)
        if qdist.armed_epoch != epoch or qdist.block is not None or first <= qdist.completed:
            # A newer arm came (it restarts the run), or Bob runs a block already, or a block
            # of the run completed (Bob has the start; he repeats his arm on a new connection).
            return
        try:
            qdist.announce_start(epoch, first, now)
        except LocalProtocolError as exc:
            log.warning("link %s: the start could not be announced: %s", self.link, exc)

    async def _stream(self, block: int) -> None:
        """Draws and queues the frames of a run from ``block`` on; once the first is queued
        and Bob has armed, switches the output on and announces the start."""
        first = block
        # A frame streamer says which block it can still take and which played as vacuum.
        next_block = getattr(self.frames, "next_block", None)
        underruns = getattr(self.frames, "underruns", None)
        start = getattr(self.frames, "start", None)
        while True:
            if not self.running.is_set():  # Kq-2 stop: no new frames (so no new blocks)
                self.frames_paused.set()
                await self.running.wait()
                self.frames_paused.clear()
            # The streamer's answers (they may wait for the bench or the instrument) come
            # while the frame is drawn; a draw for a block it no longer takes is dropped.
            self._next_free = max(self._next_free, block + 1)
            drawing = asyncio.ensure_future(
                asyncio.to_thread(self.plan.alice_block, block, self.rng))
            try:
                if next_block is not None and self.output_run is not None:
                    first_free = await next_block()
                    for skipped in range(max(block, first_free - MISSED_KEPT), first_free):
                        self._missed_block(skipped, "its frame was never drawn (the "
                                                    "transmitter had moved on)")
                    if first_free > block:
                        await drawing  # the source is the worker's until then
                        block = first_free
                        self._next_free = max(self._next_free, block + 1)
                        drawing = asyncio.ensure_future(
                            asyncio.to_thread(self.plan.alice_block, block, self.rng))
                if underruns is not None and self.output_run is not None:
                    for played_dark in await underruns():
                        self._missed_block(played_dark, "transmitter underrun: played as "
                                                        "vacuum")
                choices = await drawing
            finally:
                if not drawing.done():
                    drawing.cancel()
            # The choices count only once the frame is queued (a frame refused because its
            # block began meanwhile never played); an announcement that arrives while the
            # frame is being queued waits for the outcome (_dialogue).
            loading = self._loading[block] = asyncio.get_running_loop().create_future()
            queued = False
            try:
                await self.frames.load(block, choices.basis, choices.bit, choices.intensity)
            except FrameMissed:
                self._missed_block(block, "transmitter underrun: its frame came after its "
                                          "first slot (played as vacuum)")
            else:
                self._choices[block] = choices
                queued = True
            finally:
                del self._loading[block]
                loading.set_result(None)
            if queued and self.output_run is None:  # the run's first frame is queued: on
                assert self._run_arm is not None
                if not self._run_arm.done():
                    self.status.run = f"first frame queued (block {first}); waiting for the " \
                                      "receiver's arm"
                epoch = await self._run_arm
                if start is not None:
                    await start()
                self.output_run = (epoch, first)
                self.status.first_block = first
                self.status.run = f"started at block {first} (arm {epoch})"
                log.info("link %s: output on for the receiver's arm %d, first block %d (its "
                         "first slot fires the start marker)", self.link, epoch, first)
                await self._announce_start()
            block += 1

    def _missed_block(self, block: int, reason: str) -> None:
        """A block whose frame did not play: its choices go, and its announcement is refused
        with ``reason``."""
        self._choices.pop(block, None)
        if block in self._missed:  # the streamer reports a late frame too: counted once
            return
        self.underrun_blocks += 1
        self._missed[block] = reason
        while len(self._missed) > MISSED_KEPT:
            del self._missed[next(iter(self._missed))]
        log.warning("link %s: block %d did not play: %s", self.link, block, reason)

    def _producers(self) -> list[Coroutine[Any, Any, None]]:
        return [self._play()]

    async def _dialogue(self, conn: QdistConnection, tasks: list[asyncio.Task[Any]],
                        blocks: int | None) -> None:
        self._conn = conn
        while blocks is None or len(self.results) < blocks:
            event = await _next_event(conn, tasks)
            if isinstance(event, ReceiverArmed):
                self._arms.put_nowait(event.epoch)
            elif isinstance(event, DetectionsReceived):
                loading = self._loading.get(event.block_id)
                if loading is not None:  # its frame is being queued: played or not?
                    await _wait(asyncio.shield(loading), tasks)
                choices = self._choices.get(event.block_id)
                for old in [b for b in self._choices if b <= event.block_id]:
                    del self._choices[old]
                if choices is None:
                    reason = self._missed.pop(event.block_id, "its frame was not played or "
                                                              "its choices are gone")
                    log.warning("link %s: Bob announced block %d, refused: %s", self.link,
                                event.block_id, reason)
                    await conn.call(self._refuse_announced, event.block_id, reason,
                                    self.clock())
                    continue
                if not self.answering.is_set():
                    # Kq-2 stop: no new block starts. The announcement waits for a start (Bob's
                    # block may time out meanwhile; he then moves on to a later one) or for
                    # the shutdown's finish_announced.
                    log.info("link %s: block %d announced while stopped; it waits for a start",
                             self.link, event.block_id)
                    await _wait(self.answering.wait(), tasks)
                if not await conn.call(self._start_announced, event.block_id, choices,
                                       self.clock()):
                    log.info("link %s: block %d was given up or replaced by Bob before it "
                             "started", self.link, event.block_id)
            elif isinstance(event, BlockCompleted | BlockAborted):
                await self._outcome(event)
            elif isinstance(event, FrameRejected):
                log.info("link %s: frame rejected: %s", self.link, event.reason)


    def _refuse_announced(self, block: int, reason: str, now: float) -> None:
        """Aborts ``block`` if its announcement still waits (under the connection's lock)."""
        qdist = self.qdist
        assert isinstance(qdist, QdistAlice)
        if qdist.announced == block and qdist.block is None:
            qdist.refuse_announced(reason, now)

    def _start_announced(self, block: int, choices: AliceChoices, now: float) -> bool:
        """Starts ``block`` if its announcement still waits (under the connection's lock)."""
        qdist = self.qdist
        assert isinstance(qdist, QdistAlice)
        if qdist.announced != block:
            return False
        qdist.start_block(block, choices, now)
        return True


class BobModule(_ModuleBase):
    """The receiver's end.

    Args:
        plan: the link's frame plan.
        qdist: Bob's Qdist end.
        source: the tagger (tag batches in time order).
        tracker: Qsync, built with ``plan.pattern()``.
        patterns: tagger channel -> detector mask (:func:`.frames.channel_patterns`).
        keys, audit: as for :class:`AliceModule`.
        rng: the randomness of the squashing rule (:class:`BlockCutter`).
        lock_timeout_s: re-arm after this long without a Qsync lock since the marker or the
            last loss of lock, once ``lock_timeout_tags`` detections went without a slot
            meanwhile (see :data:`DEFAULT_LOCK_TIMEOUT_S`); None: never.
        lock_timeout_tags: see ``lock_timeout_s``.
    """

    def __init__(self, plan: FramePlan, qdist: QdistBob, source: TagSource,
                 tracker: SlotTracker, patterns: NDArray[np.uint8], keys: KeySink,
                 audit: AuditLog | None, rng: RandomSource | np.random.Generator,
                 clock: Callable[[], float] = time.monotonic,
                 lock_timeout_s: float | None = DEFAULT_LOCK_TIMEOUT_S,
                 lock_timeout_tags: int = LOCK_TIMEOUT_TAGS) -> None:
        super().__init__(plan.link, keys, audit, clock)
        self.plan = plan
        self.qdist = qdist
        self.source = source
        self.lock_timeout_s = lock_timeout_s
        self.lock_timeout_tags = lock_timeout_tags
        # Set when the slot timing is lost for good (no Qsync lock for lock_timeout_s, or
        # blocks whose bits do not correlate): the dialogue re-arms.
        self._resync = asyncio.Event()
        self._uncorrelated = 0  # blocks in a row with a Z-basis QBER >= UNCORRELATED_QBER
        self._fruitless = 0  # re-arms for lost timing since the last completed block
        self.tracker = tracker
        self.patterns = patterns
        self.rng = rng
        self.status = ModuleStatus("bob", sync="acquiring", started=clock(),
                                   run="arming the tagger")
        self._queue: asyncio.Queue[tuple[int, BobDetections]] = asyncio.Queue(BLOCK_QUEUE)
        self._tags: asyncio.Queue[TagBatch] = asyncio.Queue(TAG_QUEUE)
        self.cutter = BlockCutter(plan, patterns, rng)
        # Start order: the tagger armed (set by _read), this module's arm epoch once
        # announced, and the run's first block once Alice announced it.
        self._armed = asyncio.Event()
        self.epoch: int | None = None
        self.first_block: int | None = None
        self._started = asyncio.Event()
        self._fresh_tracker = copy.deepcopy(tracker)  # Qsync anew after a re-arm

    async def _read(self) -> None:
        arm = getattr(self.source, "arm", None)
        while True:
            if not self._armed.is_set():  # at the start, and after the transmitter restarted
                if arm is not None:
                    await arm()  # the tagger runs (and waits for the marker) before Bob says so
                self._armed.set()
            batch = await self.source.read()
            if self._armed.is_set():  # else read before a re-arm: the old run's
                await self._tags.put(batch)

    async def _rearm(self, epoch: int) -> None:
        """Alice's module restarted (its Qdist session resumed from saved state): her output's
        run, which timed this tagger, is gone. Acquisition starts anew (the tagger re-armed by
        the reader between two reads, Qsync and the block cutter fresh, closed blocks of the
        old run dropped), and the connection is dropped: the next one announces a new arm."""
        log.warning("link %s: the transmitter restarted (it knew arm %d); re-arming the tagger",
                    self.link, epoch)
        await self._restart_acquisition("re-arming the tagger (the transmitter restarted)")

    def _lost_timing(self, reason: str) -> None:
        """The run's slot timing is lost for good: the dialogue re-arms (:meth:`_relock`)."""
        if not self._resync.is_set():
            self.status.last_relock = reason
            self._resync.set()

    async def _relock(self) -> None:
        """The slot timing was lost for good (``_resync``): a new arm, so that Alice starts a
        new run with a new marker (as :meth:`_rearm`)."""
        reason = self.status.last_relock
        log.warning("link %s: %s; re-arming the tagger for a new run", self.link, reason)
        self.status.relocks += 1
        self._fruitless += 1
        await self._restart_acquisition(f"re-arming the tagger ({reason})")

    @property
    def _backoff(self) -> int:
        """Factor on the waits before a re-arm for lost timing: doubled per fruitless one."""
        return 1 << min(self._fruitless, MAX_BACKOFF_DOUBLINGS)

    async def _outcome(self, event: BlockCompleted | BlockAborted) -> None:
        await super()._outcome(event)
        qber = event.audit.qber_z
        if isinstance(event, BlockCompleted):
            self._fruitless = 0
        if qber is None or qber < UNCORRELATED_QBER or isinstance(event, BlockCompleted):
            self._uncorrelated = 0
            return
        self._uncorrelated += 1
        needed = MISNUMBERED_BLOCKS * self._backoff
        if self._uncorrelated >= needed:
            self._lost_timing(f"{self._uncorrelated} blocks in a row with QBER >= "
                              f"{UNCORRELATED_QBER} (last {qber:.3f}): the slots are "
                              "misnumbered")

    async def _restart_acquisition(self, run: str) -> None:
        """Acquisition anew from a new arm (see :meth:`_rearm`); raises ConnectionError."""
        self._resync.clear()
        self._uncorrelated = 0
        self._armed.clear()
        self._started.clear()
        self.epoch = self.first_block = None
        if len(self._background) == 2:  # the reader goes on; acquisition starts anew
            acquire = self._background[1]
            acquire.cancel()
            await asyncio.gather(acquire, return_exceptions=True)
        while not self._tags.empty():  # frees a reader waiting to put an old batch
            self._tags.get_nowait()
        self._tags = asyncio.Queue(TAG_QUEUE)
        self._queue = asyncio.Queue(BLOCK_QUEUE)
        self.tracker = copy.deepcopy(self._fresh_tracker)
        self.cutter = BlockCutter(self.plan, self.patterns, self.rng)
        if len(self._background) == 2:
            self._background[1] = asyncio.create_task(self._acquire())
        self.status.run = run
        self.status.sync = "acquiring"
        raise ConnectionError(run)

    async def _acquire(self) -> None:
        await self._started.wait()
        assert self.first_block is not None
        # Qsync numbers slots from the marker, the first slot of the run's first block.
        base = self.first_block * self.plan.block_slots
        self.cutter.open = self.first_block
        unlocked: tuple[float, int] | None = None  # (since when, unassigned detections then)
        while True:
            batch = await self._tags.get()
            out = await asyncio.to_thread(self.tracker.process, batch.timestamps_ps,
                                          batch.channels)
            ts = self.tracker.status
            st = self.status
            st.sync, st.ppm, st.losses = ("locked" if ts.locked else "acquiring"), ts.ppm, \
                ts.losses
            now = self.clock()
            if (ts.locked or not getattr(self.source, "marker_seen", True)
                    or not self.running.is_set()):
                # (A Kq-2 stop may leave the transmitter dark: no re-arms while stopped.)
                unlocked = None
            elif unlocked is None:
                unlocked = (now, ts.unassigned)
            elif (self.lock_timeout_s is not None
                  and now - unlocked[0] >= self.lock_timeout_s * self._backoff
                  and ts.unassigned - unlocked[1] >= self.lock_timeout_tags):
                since = "the marker" if ts.acquisitions == 0 else "the last loss of lock"
                # The dialogue re-arms (and cancels this task).
                self._lost_timing(f"no Qsync lock {now - unlocked[0]:.0f} s after {since} "
                                  f"({ts.unassigned - unlocked[1]} detections without a slot)")
            if st.run.startswith("started") and getattr(self.source, "marker_seen", True):
                st.run = f"marker seen; run from block {self.first_block}"
            st.tags_before_marker = int(getattr(self.source, "before_marker", 0))
            st.stale_markers = int(getattr(self.source, "stale_markers", 0))
            slots = np.where(out.slots >= 0, out.slots + base, out.slots)
            detections, late, closable = self.cutter.add(slots, out.channels)
            st.detections += detections
            st.late_detections += late
            for block in closable:
                det = await asyncio.to_thread(self.cutter.close, block)
                await self._queue.put((block, det))

    def _producers(self) -> list[Coroutine[Any, Any, None]]:
        return [self._read(), self._acquire()]

    async def _arm(self, conn: QdistConnection, tasks: list[asyncio.Task[Any]]) -> None:
        """Announces the arm once the tagger runs (a new epoch for this module's first, the
        same again on a connection that came before the start did)."""
        qdist = self.qdist
        assert isinstance(qdist, QdistBob)
        await _wait(self._armed.wait(), tasks)
        if self.epoch is None:
            self.epoch = await conn.call(self._first_arm, self.clock())
            self.status.run = f"armed (arm {self.epoch}), waiting for the transmitter's start"
            log.info("link %s: tagger armed; arm %d announced", self.link, self.epoch)
        else:
            # A new connection: the arm again (Alice announces the start again if it has not
            # reached Bob; a restarted Alice answers that Bob must arm anew).
            await conn.call(lambda now: qdist.announce_armed(now, repeat=True), self.clock())

    def _first_arm(self, now: float) -> int:
        """This module's arm (under the connection's lock). A session an earlier module ran
        (a restarted module) may hold that module's block in flight: it is aborted first."""
        qdist = self.qdist
        assert isinstance(qdist, QdistBob)
        if qdist.block is not None:
            qdist.abort_block(f"{RESTARTED_MODULE} with block {qdist.block} in flight")
        # From here on a marker may be this arm's run's (the tagger's reads before it are
        # of a previous run's: TaggerSource). Called before the announcement's bytes exist.
        announced = getattr(self.source, "armed_announced", None)
        if announced is not None:
            announced()
        return qdist.announce_armed(now)

    async def run_connection(self, conn: QdistConnection, blocks: int | None = None) -> None:
        if self.connections == 0 and self.qdist.arm_epoch > 0:  # type: ignore[union-attr]
            self.qdist.reset_stream()  # an earlier module's partial frames go
        await super().run_connection(conn, blocks)

    async def _on_event(self, event: Any) -> None:
        """An event outside the block dialogue's expectations (the start, a rejected frame,
        an outcome of a block no longer awaited)."""
        if isinstance(event, TransmitterStarted):
            if event.epoch == self.epoch and self.first_block is None:
                self.first_block = event.first_block
                self.status.first_block = event.first_block
                self.status.run = (f"started at block {event.first_block} (arm {event.epoch}); "
                                   "waiting for the marker")
                expect = getattr(self.source, "expect_marker", None)
                if expect is not None:
                    expect()
                log.info("link %s: the transmitter started at block %d", self.link,
                         event.first_block)
                self._started.set()
        elif isinstance(event, TransmitterRestarted):
            if event.epoch == self.epoch:
                await self._rearm(event.epoch)
        elif isinstance(event, BlockCompleted | BlockAborted):
            await self._outcome(event)
        elif isinstance(event, FrameRejected):
            log.info("link %s: frame rejected: %s", self.link, event.reason)

    async def _next_block(self, conn: QdistConnection, tasks: list[asyncio.Task[Any]]
                          ) -> tuple[int, BobDetections]:
        """The next closed block; events that arrive meanwhile are handled."""
        getter = asyncio.ensure_future(self._queue.get())
        no_lock = asyncio.ensure_future(self._resync.wait())
        try:
            while True:
                event = asyncio.ensure_future(conn.events.get())
                done, _ = await asyncio.wait([getter, event, no_lock, *tasks],
                                             return_when=asyncio.FIRST_COMPLETED)
                if event in done:
                    await self._on_event(event.result())
                else:
                    event.cancel()
                if no_lock in done:
                    await self._relock()  # raises ConnectionError: a new arm (a block the
                    # getter took is of the lost run, dropped with it)
                if getter in done:
                    return getter.result()
                for task in done:
                    if task is not event:
                        task.result()
                        raise ConnectionError("Qdist connection closed by the peer")
        finally:
            for waiter in (getter, no_lock):
                if not waiter.done():
                    waiter.cancel()

    async def _dialogue(self, conn: QdistConnection, tasks: list[asyncio.Task[Any]],
                        blocks: int | None) -> None:
        await self._arm(conn, tasks)
        while blocks is None or len(self.results) < blocks:
            await _wait(self.running.wait(), tasks)  # Kq-2 stop: no new block
            block, det = await self._next_block(conn, tasks)
            if not self.running.is_set():
                # Stopped while waiting for the block: it is held (not announced) until a start.
                log.info("link %s: block %d closed while stopped; it waits for a start",
                         self.link, block)
                await _wait(self.running.wait(), tasks)
            await conn.call(self.qdist.start_block, block, det, self.clock())
            while True:
                event = await _next_event(conn, tasks)
                await self._on_event(event)
                if isinstance(event, BlockCompleted | BlockAborted) and event.block_id == block:
                    break


class BlockCutter:
    """Bob's detections cut into blocks by slot number (what :class:`BobModule` and the offline
    replay both do with Qsync's output).

    Block ``b`` can be closed once a detection of a later block is assigned; detections that
    arrive for a closed block are dropped (and counted as late).

    Args:
        plan: the link's frame plan.
        patterns: tagger channel -> detector mask.
        rng: the randomness of the squashing rule, one draw per block closed, in order: the
            link's RandomSource (one byte per click, its low two bits used; a recording's
            replay gives back the bytes the run drew), or a numpy Generator (tests only).

    Raises:
        TypeError: ``rng`` is neither.
    """

    def __init__(self, plan: FramePlan, patterns: NDArray[np.uint8],
                 rng: RandomSource | np.random.Generator) -> None:
        if not isinstance(rng, RandomSource | np.random.Generator):
            raise TypeError("the squashing bits need a RandomSource (or, in tests, a numpy "
                            f"Generator), got {type(rng).__name__}")
        self.plan = plan
        self.patterns = patterns
        self.rng = rng
        self.open = 0  # the first block not closed yet
        self._slots: list[NDArray[np.int64]] = []
        self._masks: list[NDArray[np.uint8]] = []

    def add(self, slots: NDArray[np.int64], channels: NDArray[np.integer]
            ) -> tuple[int, int, list[int]]:
        """Takes Qsync's slots and channels (slot -1: undecided, skipped). Returns the
        detections taken, those dropped as late, and the blocks that can be closed now."""
        n = self.plan.block_slots
        ok = slots >= 0
        slots = slots[ok]
        ch = channels[ok]
        masks = self.patterns[np.minimum(ch, self.patterns.size - 1)]
        late = slots < self.open * n
        self._slots.append(slots[~late])
        self._masks.append(masks[~late])
        top = int(slots.max()) // n if slots.size else self.open
        return int(slots.size), int(late.sum()), list(range(self.open, max(self.open, top)))

    def close(self, block: int) -> BobDetections:
        """Closes ``block`` (the first open one): its detections, decoded."""
        if block != self.open:
            raise ValueError(f"block {block} closed while block {self.open} is the first open")
        slots = np.concatenate(self._slots)
        masks = np.concatenate(self._masks)
        lo = (block + 1) * self.plan.block_slots
        later = slots >= lo
        self._slots, self._masks = [slots[later]], [masks[later]]
        self.open = block + 1
        count = int((~later).sum())
        if isinstance(self.rng, np.random.Generator):
            bits = self.rng.integers(0, 4, count, dtype=np.uint8)
        else:
            data = self.rng.random_bytes(count)
            if len(data) != count:
                raise ValueError(f"random source {self.rng!r} returned {len(data)} bytes for "
                                 f"a request of {count}")
            bits = np.frombuffer(data, np.uint8) & np.uint8(3)
        return self.plan.bob_block(block, slots[~later], masks[~later], bits)


async def _wait(awaitable: Any, tasks: list[asyncio.Task[Any]]) -> Any:
    """Awaits ``awaitable``; raises if a background task ends first (its error, or
    ConnectionError when the Qdist connection closed)."""
    getter = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    for task in done:
        task.result()
    raise ConnectionError("Qdist connection closed by the peer")


async def _next_event(conn: QdistConnection, tasks: list[asyncio.Task[Any]]) -> Any:
    return await _wait(conn.events.get(), tasks)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
