"""Simulated ``scpi.frame_streamer``: the FPGA pattern generator's SCPI interface on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.scpi.frame_streamer`), long or
short forms, SCPI error queue. The device attaches itself to its bench
(:meth:`~qkdnode.drivers.sim.bench.Bench.attach_streamer`) when created; the bench then takes
the frame of block ``b`` from it exactly at slot ``b * L`` and waits while the frame is
missing or the output is off (the bench's time is virtual: see the bench's "Streaming").

Runs: ``OUTP ON`` starts a run at the bench's next slot (moved on to a frame boundary of the
link's pattern); block ``FRAM:FIRS`` begins there, the next ones follow every ``L`` slots.
The marker output (``MARK ON``) puts a tag on the bench tagger's ``marker_channel``
``marker_delay_ps`` after the first slot of the run's first block (``MARK:MODE START``) or
of every block (``BLOCK``): the bench's cable (:meth:`~qkdnode.drivers.sim.bench.Bench.run`).

Memory: :data:`MEMORY_SLOTS` slots of 4 bits, at most :data:`QUEUE_FRAMES` frames queued
besides the one playing; a frame must leave room for two (one playing, one queued), so
``L <= MEMORY_SLOTS / 2``. Frames are
kept packed and unpacked when they begin. ``OUTP OFF`` halts the bench's virtual time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numpy.typing import NDArray

from ...instruments.scpi.frame_streamer import MIN_FRAME_SLOTS, UNDERRUN_LIST, unpack_frame
from ...transport.blocks import decode_block
from .base import (
    BLOCK_DATA_ERROR,
    ILLEGAL_PARAMETER,
    OUT_OF_MEMORY,
    SETTINGS_CONFLICT,
    DeviceFault,
    ScpiDevice,
    in_range,
    integer,
    no_args,
    number,
    on_off,
)

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["MEMORY_SLOTS", "QUEUE_FRAMES", "SimFrameStreamer"]

# A pattern generator board's frame memory: 2^28 4-bit slots (128 MiB of DDR): the frame
# playing and up to three queued at 2^26 slots.
MEMORY_SLOTS = 1 << 28
# Frames queued ahead of the one playing: one being filled while one waits keeps the host's
# drawing of the next frame in parallel with the play (as BenchFrames did), without holding
# more blocks of choices in flight.
QUEUE_FRAMES = 2
# Power-on frame length, slots.
DEFAULT_FRAME_SLOTS = 1 << 20
# Slot clock range, Hz.
RATE_RANGE = (1e3, 1e11)


class SimFrameStreamer(ScpiDevice):
    """A simulated frame streamer playing its queued frames into the bench."""

    KIND: ClassVar[str] = "visa"
    BLOCKS: ClassVar[bool] = True
    IDN: ClassVar[str] = "qkdnode,FrameStreamer (simulated),SIM0101,1.0"
    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("FRAMe:SLOTs", "_slots"), ("FRAMe:SLOTs?", "_slots_q"),
        ("SOURce:FREQuency", "_freq"), ("SOURce:FREQuency?", "_freq_q"),
        ("FRAMe:LOAD", "block_command"),
        ("FRAMe:QUEued?", "_queued_q"), ("FRAMe:FREE?", "_free_q"),
        ("FRAMe:NEXT?", "_next_q"), ("FRAMe:UNDerrun?", "_underrun_q"),
        ("FRAMe:FIRSt", "_first"), ("FRAMe:FIRSt?", "_first_q"),
        ("MARKer:MODE", "_mmode"), ("MARKer:MODE?", "_mmode_q"),
        ("MARKer[:STATe]", "_mark"), ("MARKer[:STATe]?", "_mark_q"),
        ("OUTPut[:STATe]", "_outp"), ("OUTPut[:STATe]?", "_outp_q"),
    )

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.reset()
        bench.attach_streamer(self)

    def reset(self) -> None:
        self._frame_slots = DEFAULT_FRAME_SLOTS
        self._rate = self.bench.link.params.source.slot_rate_hz
        self._queue: dict[int, bytes] = {}
        self._last_queued = -1
        self._begun = -1  # the last block that began (frame or vacuum)
        self._underruns: list[int] = []
        self._on = False
        self._first_block = 0
        self._floor = -1  # blocks up to this one are never queued (FRAM:FIRS)
        self._marker_on = False
        self._marker_block = False  # MARK:MODE BLOCK (else START)
        self.played: list[int] = []  # blocks that began with their frame (tests read it)
        if getattr(self, "_was_on", False):
            self.bench.output_switched(False)
        self._was_on = False

    # -- what the bench asks (under its lock) -------------------------------------------------

    def streaming_slots(self) -> int | None:
        return self._frame_slots if self._on else None

    def take_frame(self, block: int) -> tuple[NDArray[np.uint8], ...] | None:
        data = self._queue.pop(block, None)
        if data is None:
            return None
        self._begun = block
        self.played.append(block)
        return unpack_frame(data)

    def first_block(self) -> int:
        return self._first_block

    def marker_fires(self, block: int) -> bool:
        """Whether the marker output fires at ``block``'s first slot."""
        return self._marker_on and (self._marker_block or block == self._first_block)

    def played_vacuum(self, block: int) -> None:
        self._queue.pop(block, None)
        self._begun = block
        self._underruns.append(block)

    # -- commands -------------------------------------------------------------------------------

    def _capacity(self) -> int:
        return min(QUEUE_FRAMES, MEMORY_SLOTS // self._frame_slots - 1)

    def _slots(self, groups: tuple[str, ...], args: str) -> None:
        n = integer(args)
        if self._on:
            raise DeviceFault(SETTINGS_CONFLICT, "Settings conflict; output is on")
        if n < MIN_FRAME_SLOTS or n % 2 or n > MEMORY_SLOTS // 2:
            raise DeviceFault(-222, "Data out of range; frame length")
        self._frame_slots = n
        self._queue.clear()

    def _slots_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._frame_slots)

    def _freq(self, groups: tuple[str, ...], args: str) -> None:
        rate = in_range(number(args), *RATE_RANGE)
        if rate != self.bench.link.params.source.slot_rate_hz:
            # The bench's source is clocked at its configured slot rate; the generator must
            # follow that clock (in the lab it is the clock).
            raise DeviceFault(SETTINGS_CONFLICT, "Settings conflict; not the slot clock")
        self._rate = rate

    def _freq_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return f"{self._rate:.10E}"

    def block_command(self, groups: tuple[str, ...], args: bytes) -> None:
        head, sep, rest = args.partition(b",")
        try:
            block = int(head.decode("ascii").strip(), 10)
        except (UnicodeDecodeError, ValueError):
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; block") from None
        if not sep or block < 0:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; block")
        try:
            data, used = decode_block(rest.lstrip())
        except ValueError:
            raise DeviceFault(BLOCK_DATA_ERROR, "Block data error") from None
        if rest.lstrip()[used:].strip() or 2 * len(data) != self._frame_slots:
            raise DeviceFault(BLOCK_DATA_ERROR, "Block data error; not one frame")
        if block <= max(self._last_queued, self._begun, self._floor):
            raise DeviceFault(SETTINGS_CONFLICT,
                              "Settings conflict; block begun or not after the last queued")
        if len(self._queue) >= self._capacity():
            raise DeviceFault(OUT_OF_MEMORY, "Out of memory; no free frame buffer")
        packed = np.frombuffer(data, dtype=np.uint8)
        if int((packed & 0x0F).max()) >= 12 or int((packed >> 4).max()) >= 12:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; frame symbol")
        self._queue[block] = data
        self._last_queued = block
        self.bench.frames_changed()

    def _queued_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(len(self._queue))

    def _free_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(max(0, self._capacity() - len(self._queue)))

    def _next_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(max(self._last_queued, self._begun, self._floor) + 1)

    def _underrun_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        listed = self._underruns[:UNDERRUN_LIST]
        del self._underruns[:UNDERRUN_LIST]
        return ",".join(str(x) for x in (len(listed), *listed))

    def _first(self, groups: tuple[str, ...], args: str) -> None:
        block = integer(args)
        if self._on:
            raise DeviceFault(SETTINGS_CONFLICT, "Settings conflict; output is on")
        if block < 0:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; block")
        if block <= self._begun:
            raise DeviceFault(SETTINGS_CONFLICT, "Settings conflict; block begun already")
        self._queue.clear()
        self._last_queued = -1
        self._floor = block - 1
        self._first_block = block

    def _first_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._first_block)

    def _mmode(self, groups: tuple[str, ...], args: str) -> None:
        word = args.strip().upper()
        if word in ("STAR", "START"):
            self._marker_block = False
        elif word in ("BLOC", "BLOCK"):
            self._marker_block = True
        else:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; START or BLOCK")

    def _mmode_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "BLOC" if self._marker_block else "STAR"

    def _mark(self, groups: tuple[str, ...], args: str) -> None:
        self._marker_on = on_off(args)

    def _mark_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "1" if self._marker_on else "0"

    def _outp(self, groups: tuple[str, ...], args: str) -> None:
        on = on_off(args)
        if on and not self._on and self._floor < self._begun:
            # A new run after blocks began: its first block is the next one (the host moves
            # FRAM:FIRS on; a run never numbers a block twice).
            self._first_block = max(self._first_block, self._begun + 1)
        switched = on != self._on
        self._on = self._was_on = on
        if switched:
            self.bench.output_switched(on)
        self.bench.frames_changed()

    def _outp_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "1" if self._on else "0"
