"""The two ends of a link on one in-process simulated bench, without instruments (tests and
benchmarks only: ``qkdnode module``, ``run`` and ``demo`` go through the frame streamer and the
time tagger, :mod:`.instruments`, whose simulated bench now holds the frames the same way).

On hardware the transmitter's AWG plays continuously and reloads its frame at each block
boundary on its own trigger. The simulated bench only advances when the tagger reads, so
:class:`BenchFrames` plays the AWG's role in time: Alice's module hands it the frame of each
block (:meth:`BenchFrames.load`; it waits while :data:`MAX_FRAMES_AHEAD` frames are queued, so a
slow receiver back-pressures the transmitter), and Bob's reads (:meth:`BenchFrames.read`) load
the frame of a block into the bench exactly at its first slot. Reads never straddle a block
boundary: ``block_slots`` is a multiple of ``read_slots``.
"""

from __future__ import annotations

import asyncio

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.sim.bench import Bench
from qkdnode.drivers.sim.link import TagBatch

__all__ = ["MAX_FRAMES_AHEAD", "BenchFrames"]

# Frames the transmitter may queue ahead of the receiver's reads: one being read, one ready.
MAX_FRAMES_AHEAD = 2


class BenchFrames:
    """Alice's frames and Bob's reads on one simulated bench (both modules in this process).

    Args:
        bench: the bench (fresh: its next slot is 0).
        block_slots: slots per block (each frame's length).
        read_slots: slots per tagger read (divides ``block_slots``).
    """

    def __init__(self, bench: Bench, block_slots: int, read_slots: int) -> None:
        if read_slots < 1 or block_slots % read_slots:
            raise ValueError(f"read_slots ({read_slots}) must divide block_slots "
                             f"({block_slots})")
        if bench.link.slot % block_slots:
            raise ValueError(f"bench {bench.name!r} is at slot {bench.link.slot}, not at a block "
                             "boundary")
        self.bench = bench
        self.block_slots = block_slots
        self.read_slots = read_slots
        self._frames: dict[int, tuple[NDArray[np.uint8], ...]] = {}
        self._changed = asyncio.Condition()

    async def load(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        """Queues the frame of ``block`` (waits while MAX_FRAMES_AHEAD are queued)."""
        if basis.size != self.block_slots:
            raise ValueError(f"a frame holds {self.block_slots} slots, got {basis.size}")
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._frames) < MAX_FRAMES_AHEAD)
            self._frames[block] = (basis, bit, intensity)
            self._changed.notify_all()

    async def read(self) -> TagBatch:
        """The tags of the next ``read_slots`` slots (waits for the frame of a new block)."""
        slot = self.bench.link.slot
        if slot % self.block_slots == 0:
            block = slot // self.block_slots
            async with self._changed:
                await self._changed.wait_for(lambda: block in self._frames)
                frame = self._frames.pop(block)
                self._changed.notify_all()
            self.bench.load_frame(*frame)
        return await asyncio.to_thread(self.bench.run, self.read_slots)
