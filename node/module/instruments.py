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
the drawing), starts the output after the first frame, and reports blocks that did not play
(the streamer refused a late frame, or reported an underrun) so that their choices are dropped.
:class:`TaggerSource` is what :class:`~.runtime.BobModule` reads: :meth:`TimeTagger.read` in a
worker thread, as a tag batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.errors import InstrumentError
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import FrameStreamer, TimeTagger
from qkdnode.drivers.sim.link import TagBatch

from ..config.schema import InstrumentConfig, LinkConfig, NodeConfig
from ..errors import ConfigError

__all__ = [
    "EMPTY_READ_S",
    "FREE_POLL_S",
    "FrameMissed",
    "StreamerFrames",
    "TaggerSource",
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
_DEFAULT_ROLE = {"transmitter": "frame_streamer", "receiver": "time_tagger"}
_DEFAULT_DRIVER = {"frame_streamer": "scpi.frame_streamer", "time_tagger": "qutools.qutag"}
_DEFAULT_SUFFIX = {"frame_streamer": "tx", "time_tagger": "tagger"}


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

    async def next_block(self) -> int:
        """The first block whose frame can still be queued."""
        return await asyncio.to_thread(self.streamer.next_block)

    async def load(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        """Queues the frame of ``block`` once a buffer is free; starts the output after the
        first frame.

        Raises:
            FrameMissed: the block has begun (the streamer plays it as vacuum).
        """
        # The instrument only answers when asked: polling is its interface.
        wait_s = self.poll_s
        while await asyncio.to_thread(self.streamer.frames_free) < 1:
            await asyncio.sleep(wait_s)
            wait_s = min(2 * wait_s, self.max_poll_s)
        try:
            await asyncio.to_thread(self.streamer.queue_frame, block, basis, bit, intensity)
        except InstrumentError as exc:
            if exc.code == BLOCK_BEGUN:
                raise FrameMissed(block) from None
            raise
        if not self._started:
            await asyncio.to_thread(self.streamer.start)
            self._started = True

    async def underruns(self) -> tuple[int, ...]:
        """Blocks the streamer played as vacuum since the previous call."""
        return await asyncio.to_thread(self.streamer.underruns)

    def close(self) -> None:
        """Stops the output and releases the streamer."""
        try:
            if self._started:
                self.streamer.stop()
        finally:
            self.streamer.close()


class TaggerSource:
    """Bob's tags from a :class:`~qkdnode.drivers.roles.TimeTagger` (reads in a thread).

    A read's lost events and overflows (an overflow: at least one tag lost) are counted in
    the batch's ``lost_events``; ``complete_until_ps`` is the last tag's time.
    """

    def __init__(self, tagger: TimeTagger, empty_read_s: float = EMPTY_READ_S) -> None:
        self.tagger = tagger
        self.empty_read_s = empty_read_s
        self._started = False
        self._until = 0
        self.lost = 0

    async def read(self) -> TagBatch:
        """The tags since the previous read."""
        if not self._started:
            await asyncio.to_thread(self.tagger.start)
            self._started = True
        got = await asyncio.to_thread(self.tagger.read)
        lost = got.lost_events + got.overflows
        if lost:
            self.lost += lost
            log.warning("time tagger lost %d tags (%d overflows)", got.lost_events,
                        got.overflows)
        if got.timestamps_ps.size:
            self._until = int(got.timestamps_ps[-1])
        else:
            await asyncio.sleep(self.empty_read_s)
        return TagBatch(got.timestamps_ps, got.channels.astype(np.int16), lost, self._until)

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

    Raises:
        ConfigError: the link names none of that role (and is not on the simulated bench), or
            several.
    """
    role = _DEFAULT_ROLE[link.role]
    by_name = {inst.name: inst for inst in config.instruments}
    named = [by_name[n] for n in link.instruments if n in by_name and by_name[n].role == role]
    if len(named) > 1:
        raise _error(config, f"links[{i}].instruments",
                     f"names {len(named)} instruments of role {role} "
                     f"({', '.join(n.name for n in named)}); a {link.role} drives one")
    if named:
        if not (named[0].resource or "").startswith("sim://"):
            raise _error(config, f"links[{i}].instruments",
                         f"{named[0].name!r} is a real {role.replace('_', ' ')}: the module runs "
                         "on the simulated bench only for now. On real instruments the "
                         "tagger's clock needs a common origin with the transmitter's slot 0 "
                         "(a start marker from the frame streamer on a tagger channel), which "
                         "is not built yet (README: One end per PC)")
        return named[0]
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
    return InstrumentConfig(name=name, role=role, driver=_DEFAULT_DRIVER[role],  # type: ignore[arg-type]
                            resource=f"sim://{config.bench.name}/{name}",
                            timeout_s=SIM_TIMEOUT_S, settings={})


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
        return TaggerSource(driver)
    except BaseException:
        driver.close()
        raise
