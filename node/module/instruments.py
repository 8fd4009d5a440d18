"""A module's instruments: the transmitter's frame streamer and the receiver's time tagger.

Both ends reach their instruments through the drivers and transports
(:func:`qkdnode.drivers.registry.open_instrument`), on real instruments and on the simulated
bench alike; only the resource URL differs. A link names them in ``links.instruments`` (a
``frame_streamer`` for the transmitter, a ``time_tagger`` for the receiver). A link on the
simulated bench that names none gets the bench's own: a ``scpi.frame_streamer`` at
``sim://BENCH/<link>-tx`` and a ``qutools.qutag`` (its C mock fed by the bench) at
``sim://BENCH/<link>-tagger``, so ``qkdnode module`` and ``qkdnode demo`` run the lab's code.

:class:`StreamerFrames` is what :class:`~.runtime.AliceModule` hands its frames to: it queues
each block's frame when the streamer has a free buffer (polling, a full queue back-pressures
the drawing), and reports blocks that did not play (the streamer refused a late frame, or
reported an underrun) so that their choices are dropped. The module switches the output on
(:meth:`StreamerFrames.start`, marker mode ``start``) only once Bob's tagger is armed, and
for a new run (:meth:`StreamerFrames.restart`) at a block after every block played.

:class:`TaggerSource` is what :class:`~.runtime.BobModule` reads: :meth:`TimeTagger.read` in a
worker thread, as a tag batch, timed from the frame streamer's start marker. The tagger's own
clock has an arbitrary origin (it counts from its power-on or start; the transmitter is
another program on another PC), so the marker's pulse on ``marker_channel`` is slot 0's
origin: tags before it are dropped (counted, logged), marker tags never reach Qsync, and
every tag's time is given relative to the marker. Qsync then searches +-1 ms around the
link's ``slot_delay_ps``, which is the optical path minus the marker's cable.

A marker of an earlier run is never taken (a *stale* marker: Bob's module re-armed moments
after an earlier arm, and the previous run's marker is still in the tagger or on its way).
The transmitter starts the run of an arm only once Bob's arm was announced, so everything a
tagger read returned before :meth:`TaggerSource.armed_announced` (called just before the
announcement is sent) registered before this arm's run could start: a marker in it is a
previous run's, and is dropped and counted (``stale_markers``); so is one the tagger kept
across its stop and start (a ring a driver does not clear) when the first read after the arm
returns before the announcement, as a real tagger's does. A marker of the previous run that
registers after the announcement was sent (the transmitter had not received it yet), or one
kept in the tagger and first returned by a read that ends after it, cannot be told from this
run's by Bob alone; a second marker after the origin (one per run in marker mode ``start``) is
then logged and counted (``markers_after_origin``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.errors import DeviceError, InstrumentError
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import FrameStreamer, TagRead, TimeTagger
from qkdnode.drivers.sim.link import TagBatch

from ..config.schema import InstrumentConfig, LinkConfig, NodeConfig
from ..errors import ConfigError

__all__ = [
    "EMPTY_READ_S",
    "FREE_POLL_S",
    "MARKER_TIMEOUT_S",
    "FrameMissed",
    "MarkerMissing",
    "StreamerFrames",
    "TaggerSource",
    "link_instrument",
    "marker_channel",
    "open_link_instrument",
]

log = logging.getLogger(__name__)

# How often Alice first asks a full streamer whether a buffer is free: a 2^24-slot block lasts
# 16.8 ms at 1 GHz, so 5 ms polls see a buffer free within a third of a block. While it stays
# full the interval doubles, up to a quarter of a block's duration (each query costs a round
# trip; the simulated bench, whose blocks last seconds of wall time, is asked far less often).
FREE_POLL_S = 0.005
# A tagger read that returned nothing waits this long before the next (a real tagger's buffer
# fills in real time; the simulated bench's reads wait at block boundaries themselves).
EMPTY_READ_S = 0.005
# SCPI error of a frame for a block that has begun (the driver's module docstring).
BLOCK_BEGUN = -221
# Seconds a simulated default instrument's exchange may take (a frame upload of 2^26 slots is
# 32 MiB through the transport).
SIM_TIMEOUT_S = 30.0
# How long Bob waits for the start marker once Alice said her output started: her first
# block begins within a block's duration (16.8 ms at 1 GHz) of the start, the simulated bench
# takes seconds of wall time per block on a loaded machine.
MARKER_TIMEOUT_S = 30.0
# The detectors' tagger channels when no receiver instrument maps them (launch's default).
_DEFAULT_DETECTORS = (1, 2, 3, 4)
_DEFAULT_ROLE = {"transmitter": "frame_streamer", "receiver": "time_tagger"}
_DEFAULT_DRIVER = {"frame_streamer": "scpi.frame_streamer", "time_tagger": "qutools.qutag"}
_DEFAULT_SUFFIX = {"frame_streamer": "tx", "time_tagger": "tagger"}


# How long closing the streamer waits for a worker thread's exchange with it to end.
CLOSE_WAIT_S = 10.0


class FrameMissed(Exception):
    """The block began before its frame could be queued (it plays as vacuum)."""

    def __init__(self, block: int) -> None:
        super().__init__(block)
        self.block = block


class StreamerFrames:
    """Alice's frames into a :class:`~qkdnode.drivers.roles.FrameStreamer`.

    Args:
        streamer: the opened streamer (its frame length is set to ``block_slots`` here).
        block_slots: slots per block.
        poll_s: how soon a full queue is asked again (doubling while it stays full, up to a
            quarter of a block's duration).
    """

    def __init__(self, streamer: FrameStreamer, block_slots: int,
                 poll_s: float = FREE_POLL_S) -> None:
        self.streamer = streamer
        self.block_slots = block_slots
        self.poll_s = poll_s
        self.max_poll_s = max(poll_s, block_slots / streamer.slot_rate_hz() / 4)
        if streamer.frame_slots() != block_slots:
            streamer.set_frame_slots(block_slots)
        self._started = False
        self.first_block = 0
        # One exchange with the streamer at a time: a run's task cancelled while its worker
        # thread uploads a frame (or switches the output on) leaves that thread running, and
        # the next run's restart must not interleave its commands (and their error checks)
        # with it; it waits for the thread's exchange to end.
        self._lock = threading.Lock()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(*args)
        return await asyncio.to_thread(locked)

    async def next_block(self) -> int:
        """The first block whose frame can still be queued."""
        return int(await self._call(self.streamer.next_block))

    async def restart(self, first_block: int) -> int:
        """Prepares a new run: the output off, the queue dropped, the marker at the run's first
        block. Returns the run's first block: ``first_block``, or the streamer's first free
        block if that is later (asked once the output is off: a block with no frame may have
        begun, as vacuum, until then).
        """
        def prepare() -> int:
            # Off whatever ``_started`` says: a start cancelled mid-way may have switched the
            # output on (OUTP OFF on a stopped output is harmless).
            self.streamer.stop()
            self._started = False
            first = max(first_block, int(self.streamer.next_block()))
            self.streamer.set_first_block(first)
            self.streamer.set_marker("start")
            return first
        first = int(await self._call(prepare))
        self.first_block = first
        return first

    async def start(self) -> None:
        """Switches the output on: the run's first block begins, and the marker fires."""
        await self._call(self.streamer.start)
        self._started = True

    async def load(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        """Queues the frame of ``block`` once a buffer is free.

        Raises:
            FrameMissed: the block has begun (the streamer plays it as vacuum).
        """
        # The instrument only answers when asked: polling is its interface.
        wait_s = self.poll_s
        while await self._call(self.streamer.frames_free) < 1:
            await asyncio.sleep(wait_s)
            wait_s = min(2 * wait_s, self.max_poll_s)
        try:
            await self._call(self.streamer.queue_frame, block, basis, bit, intensity)
        except InstrumentError as exc:
            if exc.code == BLOCK_BEGUN:
                raise FrameMissed(block) from None
            raise

    async def underruns(self) -> tuple[int, ...]:
        """Blocks the streamer played as vacuum since the previous call."""
        return tuple(await self._call(self.streamer.underruns))

    def close(self) -> None:
        """Stops the output and releases the streamer, once a worker thread's exchange (a
        cancelled run's upload) has ended, or after ``CLOSE_WAIT_S`` (then anyway, logged).
        The output is switched off whatever ``_started`` says: a start cancelled mid-way may
        have switched it on."""
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        if not locked:
            log.warning("frame streamer: an exchange still runs after %g s; closing anyway",
                        CLOSE_WAIT_S)
        try:
            self.streamer.stop()
        finally:
            try:
                self.streamer.close()
            finally:
                if locked:
                    self._lock.release()


class MarkerMissing(DeviceError):
    """No start marker came on the tagger's marker channel in time (the wiring, or the
    channel setting, is wrong: ``qkdnode`` commands report it as an instrument failure)."""


class TaggerSource:
    """Bob's tags from a :class:`~qkdnode.drivers.roles.TimeTagger` (reads in a thread), timed
    from the frame streamer's start marker (module docstring).

    A read's lost events and overflows (an overflow: at least one tag lost) are counted in
    the batch's ``lost_events``; ``complete_until_ps`` is the last tag's time. Until the marker
    has come, reads return no tags. After :meth:`arm`, a marker is taken only from reads that
    returned after :meth:`armed_announced` (earlier ones are a previous run's: module
    docstring); a source read without arming first (no start order) takes the first marker
    after the tagger started.

    Args:
        tagger: the opened tagger.
        marker_channel: the channel the streamer's marker output is cabled to.
        name: the tagger's name (for messages).
        marker_timeout_s: how long after :meth:`expect_marker` the marker may take.
        empty_read_s: the pause after a read that returned nothing.
    """

    def __init__(self, tagger: TimeTagger, marker_channel: int, name: str = "tagger",
                 marker_timeout_s: float = MARKER_TIMEOUT_S,
                 empty_read_s: float = EMPTY_READ_S) -> None:
        self.tagger = tagger
        self.marker_channel = marker_channel
        self.name = name
        self.marker_timeout_s = marker_timeout_s
        self.empty_read_s = empty_read_s
        self._started = False
        self._until = 0
        self.lost = 0
        self._origin: int | None = None
        self._expected_since: float | None = None
        # When the current arm was announced (time.monotonic()); None: not yet.
        self._announced: float | None = None
        self.arms = 0
        self.before_marker = 0  # tags dropped because they came before the marker (all arms)
        self.markers = 0  # marker tags taken as the origin or after it (removed from the stream)
        self.stale_markers = 0  # markers dropped: read before the arm was announced (all arms)
        self.markers_after_origin = 0  # further markers after the origin (all arms)

    @property
    def marker_seen(self) -> bool:
        """Whether the current arm's marker came."""
        return self._origin is not None

    async def arm(self) -> None:
        """(Re)starts the tagger and waits for a new marker: the previous origin is gone.

        Until :meth:`armed_announced`, a marker read is a previous run's (dropped, counted).
        No read is made here: on the simulated bench a read can wait for the transmitter's
        next frame, which may wait for this arm's announcement."""
        def restart() -> None:
            if self._started:
                self.tagger.stop()
                self._started = False
            self.tagger.start()
            self._started = True
        await asyncio.to_thread(restart)
        self._origin = None
        self._expected_since = None
        self._announced = None
        self._until = 0
        self.arms += 1

    def armed_announced(self) -> None:
        """The arm is about to be announced to the transmitter (call it just before the
        announcement is sent): a marker in a read that returns from now on may be this arm's
        run's."""
        if self._announced is None:
            self._announced = time.monotonic()

    def expect_marker(self, now: float | None = None) -> None:
        """The transmitter says its output started: the marker is due (the timeout runs)."""
        if self._expected_since is None:
            self._expected_since = time.monotonic() if now is None else now

    async def read(self) -> TagBatch:
        """The tags since the previous read, relative to the marker.

        Raises:
            MarkerMissing: the marker did not come within ``marker_timeout_s`` of
                :meth:`expect_marker`.
        """
        if not self._started:
            await self.arm()
            self.armed_announced()  # no start order: the first marker after the start counts

        def read() -> tuple[TagRead, float]:
            got = self.tagger.read()
            return got, time.monotonic()  # when the read returned (the tags had registered)

        got, returned = await asyncio.to_thread(read)
        times, channels, lost = self._unpack(got)
        is_marker = channels == self.marker_channel
        if self._origin is None and (self._announced is None or returned < self._announced):
            # Registered before the transmitter could start this arm's run.
            self._drop_stale(times.size, int(is_marker.sum()))
            self._check_timeout()
            await asyncio.sleep(self.empty_read_s)
            return TagBatch(times[:0], channels[:0], lost, self._until)
        if self._origin is None:
            found = np.flatnonzero(is_marker)
            if found.size == 0:
                self._count_before(times.size)
                self._check_timeout()
                await asyncio.sleep(self.empty_read_s)
                return TagBatch(times[:0], channels[:0], lost, self._until)
            first = int(found[0])
            self._origin = int(times[first])
            self._count_before(first)
            log.info("time tagger %s: start marker on channel %d (%d tags before it dropped "
                     "since the tagger was armed)", self.name, self.marker_channel,
                     self.before_marker)
            times, channels, is_marker = times[first:], channels[first:], is_marker[first:]
            self.markers += 1
            is_marker[0] = False  # counted; removed from the stream below
            keep = channels != self.marker_channel
        else:
            keep = ~is_marker
        later = int(is_marker.sum())
        if later:
            self.markers += later
            self.markers_after_origin += later
            log.warning("time tagger %s: %d more start marker(s) on channel %d after the "
                        "origin: a run starts with one, so the origin taken may be a previous "
                        "run's (Bob re-armed while it started); re-arm if blocks fail",
                        self.name, later, self.marker_channel)
        rel = times[keep] - self._origin
        if rel.size:
            self._until = int(rel[-1])
        else:
            await asyncio.sleep(self.empty_read_s)
        return TagBatch(rel, channels[keep], lost, self._until)

    def _unpack(self, got: TagRead) -> tuple[NDArray[np.int64], NDArray[np.int16], int]:
        """A read's times and channels, its losses counted and logged."""
        lost = got.lost_events + got.overflows
        if lost:
            self.lost += lost
            log.warning("time tagger %s lost %d tags (%d overflows)", self.name,
                        got.lost_events, got.overflows)
        return (np.asarray(got.timestamps_ps, np.int64),
                np.asarray(got.channels).astype(np.int16), lost)

    def _drop_stale(self, tags: int, markers: int) -> None:
        """Drops a read from before the arm was announced (``markers`` of its ``tags``)."""
        self._count_before(tags - markers)
        if markers:
            self.stale_markers += markers
            log.warning("time tagger %s: %d start marker(s) on channel %d dropped: read "
                        "before arm %d was announced, so a previous run's", self.name, markers,
                        self.marker_channel, self.arms)

    def _count_before(self, n: int) -> None:
        if n:
            self.before_marker += n
            log.debug("time tagger %s: %d tags before the start marker dropped", self.name, n)

    def _check_timeout(self) -> None:
        if self._expected_since is None:
            return
        waited = time.monotonic() - self._expected_since
        if waited > self.marker_timeout_s:
            raise MarkerMissing(
                f"no start marker on channel {self.marker_channel} of tagger {self.name!r} "
                f"after {waited:.0f} s: is the streamer's marker output cabled to it? "
                f"({self.before_marker} tags came meanwhile, on other channels; "
                f"{self.stale_markers} markers read before the arm was announced were "
                "dropped as a previous run's)")

    def close(self) -> None:
        """Stops and releases the tagger."""
        try:
            if self._started:
                self.tagger.stop()
        finally:
            self.tagger.close()


def _error(config: NodeConfig, key: str, reason: str) -> ConfigError:
    return ConfigError(None, key, None, f"node {config.node.name!r}: {reason}")


def link_instrument(config: NodeConfig, i: int, link: LinkConfig) -> InstrumentConfig:
    """The instrument a link end drives (its frame streamer or time tagger), as configured, or
    the simulated bench's default for a link that names none.

    A receiver's tagger must stream its link's marker channel (:func:`marker_channel`); the
    simulated bench's default tagger streams the bench's detector channels and the marker's.

    Raises:
        ConfigError: the link names none of that role (and is not on the simulated bench), or
            several; a real tagger without a ``marker_channel``, or not streaming it.
    """
    role = _DEFAULT_ROLE[link.role]
    by_name = {inst.name: inst for inst in config.instruments}
    named = [by_name[n] for n in link.instruments if n in by_name and by_name[n].role == role]
    if len(named) > 1:
        raise _error(config, f"links[{i}].instruments",
                     f"names {len(named)} instruments of role {role} "
                     f"({', '.join(n.name for n in named)}); a {link.role} drives one")
    if named:
        inst = named[0]
        if role == "time_tagger":
            marker = marker_channel(config, i, link)
            streamed = inst.settings.get("channels")
            if streamed is not None and marker not in streamed:
                raise _error(config, f"links[{i}].marker_channel",
                             f"marker channel {marker} is not among the channels tagger "
                             f"{inst.name!r} streams ({streamed}); add it to its settings' "
                             "channels")
        return inst
    # A link naming real instruments must name its streamer or tagger too; a random source
    # (``os.csprng`` has no resource) does not make a simulated link a real one.
    others = [n for n in link.instruments if n in by_name
              and by_name[n].role != "random_source"
              and not (by_name[n].resource or "").startswith("sim://")]
    if others:
        raise _error(config, f"links[{i}].instruments",
                     f"a {link.role} needs an instrument of role {role} among its instruments "
                     f"(it names {', '.join(link.instruments)})")
    name = f"{link.name}-{_DEFAULT_SUFFIX[role]}"
    settings: dict[str, Any] = {}
    if role == "time_tagger":
        marker = marker_channel(config, i, link)
        settings["channels"] = sorted({*config.bench.tagger.channels, marker})
    return InstrumentConfig(name=name, role=role, driver=_DEFAULT_DRIVER[role],  # type: ignore[arg-type]
                            resource=f"sim://{config.bench.name}/{name}",
                            timeout_s=SIM_TIMEOUT_S, settings=settings)


def marker_channel(config: NodeConfig, i: int, link: LinkConfig) -> int:
    """The tagger channel of the start marker of a receiver's link: its ``marker_channel``,
    or on the simulated bench the bench's.

    Raises:
        ConfigError: a real tagger and no ``marker_channel``, or one that is a detector's.
    """
    by_name = {inst.name: inst for inst in config.instruments}
    taggers = [by_name[n] for n in link.instruments
               if n in by_name and by_name[n].role == "time_tagger"]
    real = [t for t in taggers if not (t.resource or "").startswith("sim://")]
    channel = link.marker_channel
    if channel is None:
        if real:
            raise _error(config, f"links[{i}].marker_channel",
                         f"tagger {real[0].name!r} is a real instrument: give the channel the "
                         "frame streamer's marker output is cabled to (its pulse at the first "
                         "slot of a run is the only time origin the two ends share; README: "
                         "One end per PC)")
        channel = config.bench.tagger.marker_channel
    detectors = {int(k) for inst in config.instruments_with_role("receiver")
                 for k in (inst.settings.get("channel_map") or {})} or set(_DEFAULT_DETECTORS)
    if channel in detectors:
        raise _error(config, f"links[{i}].marker_channel",
                     f"channel {channel} is a detector's (channel_map: "
                     f"{sorted(detectors)}); the marker needs a channel of its own")
    return int(channel)


def open_link_instrument(config: NodeConfig, i: int, link: LinkConfig
                         ) -> StreamerFrames | TaggerSource:
    """Opens the instrument of a link end (:func:`link_instrument`) and wraps it.

    Raises:
        ConfigError: no such instrument, or it cannot be opened (the driver's reason).
    """
    inst = link_instrument(config, i, link)
    settings: Mapping[str, Any] = dict(inst.settings)
    try:
        driver: Any = open_instrument(inst.name, inst.role, inst.driver, inst.resource or "",
                                      inst.timeout_s, settings)
    except (ValueError, OSError) as exc:
        raise _error(config, f"links[{i}].instruments",
                     f"cannot open {inst.role.replace('_', ' ')} {inst.name!r}: {exc}") from None
    try:
        if inst.role == "frame_streamer":
            return StreamerFrames(driver, link.block_slots)
        return TaggerSource(driver, marker_channel(config, i, link), inst.name,
                            link.marker_timeout_s)
    except BaseException:
        driver.close()
        raise
