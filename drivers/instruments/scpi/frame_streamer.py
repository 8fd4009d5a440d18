"""``scpi.frame_streamer``: a block-sequenced pattern generator fed over SCPI (FrameStreamer role).

No commercial instrument plays a fresh 2^24-slot frame per QKD block from host memory; labs
build one from an FPGA board (a pattern generator driving the modulators' DACs) whose firmware
takes frames from the host. This driver defines the small SCPI interface such firmware must
implement, over a raw TCP socket (a VISA ``TCPIP0::HOST::5025::SOCKET`` resource, ``\\n``
terminated, like a LAN instrument's SCPI port). The simulated bench implements it
(:mod:`qkdnode.drivers.sim.devices.frame_streamer`), so CI runs exactly this code.

The interface (IEEE 488.2 / SCPI-99 conventions; every set command is followed by
``SYST:ERR?``):

``*IDN?``, ``*RST``, ``*CLS``, ``SYSTem:ERRor[:NEXT]?``
    as SCPI-99 (``*RST``: output off, queue empty, block counter 0).
``FRAMe:SLOTs <L>`` / ``FRAMe:SLOTs?``
    frame (block) length in slots, even, ``MIN_FRAME_SLOTS``..the memory; only while the
    output is off (else -221 "Settings conflict").
``SOURce:FREQuency <Hz>`` / ``SOURce:FREQuency?``
    slot clock.
``FRAMe:LOAD <block>,#<n><len><data>``
    queues the frame of ``block`` (non-negative decimal). ``data`` is the frame packed two
    slots per byte, slot ``2k`` in the low nibble of byte ``k``, slot ``2k+1`` in its high
    nibble; a slot's nibble is ``4 * intensity + 2 * basis + bit`` (intensity class 0..2,
    basis 0 = X / 1 = Z, bit 0/1), so ``len = L / 2`` bytes: a 2^24-slot frame is 8 MiB on
    the wire. Refused with -221 when the block has begun, is before ``FRAMe:FIRSt`` (a frame
    of an ended run, uploaded late, must not hold a buffer), or is not later than the last one
    queued, -225 "Out of memory" when no frame buffer is free, -160 "Block data error" for a
    block of the wrong length, -224 for a nibble above 11. An error text never holds data.
``FRAMe:QUEued?``, ``FRAMe:FREE?``
    frames queued and not begun; frame buffers free.
``FRAMe:NEXT?``
    the first block whose frame can still be queued.
``FRAMe:UNDerrun?``
    blocks that played as vacuum since the last query because their frame was not queued
    when their first slot came: ``<n>[,<block>]...`` listing at most :data:`UNDERRUN_LIST`
    (the next query lists the rest). The firmware must block the light for such a block.
``FRAMe:FIRSt <block>`` / ``FRAMe:FIRSt?``
    the block that plays first at the next ``OUTP ON`` (default 0 after ``*RST``); only while
    the output is off (else -221), and later than every block begun since ``*RST`` (else
    -221: a block number is never played twice). Frames queued for earlier blocks are
    dropped. The query answers the first block of the current (or last) run.
``MARKer:MODE START|BLOCK`` / ``MARKer:MODE?``
    when the marker output fires: at the first slot of the first block after each
    ``OUTP ON`` (``START``), or at the first slot of every block (``BLOCK``).
``MARKer[:STATe] ON|OFF`` / ``MARKer[:STATe]?``
    enables the marker output (off after ``*RST``). The marker is an electrical pulse (a
    lab's firmware: a TTL/NIM edge at the slot clock's phase of the block's first slot)
    cabled to a channel of the receiver's time tagger: the one time origin the two ends
    share. Its delay (cable and electronics) is fixed, so the tagger's time of a block's
    first slot is the marker's time plus a constant (the receiver's ``slot_delay_ps`` is the
    optical path minus that delay).
``OUTPut[:STATe] ON|OFF`` / ``OUTPut[:STATe]?``
    starts a run (block ``F = FRAM:FIRS?`` over the ``L`` slots from ON, block ``F + k``
    ``k L`` slots later) and ends it; the next ON starts a new run at ``FRAM:FIRS``, or at
    the block after the last one begun if ``FRAM:FIRS`` was not moved past it (a block
    number is never played twice).

Frames, like the :class:`~qkdnode.drivers.roles.FrameStreamer` role's, are key material:
this driver never logs them and puts only sizes and block numbers into messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from ...errors import DeviceError
from ...roles import Limits, check_frame
from ...transport import Transport, write_block
from ..base import ScpiInstrument, Setting, atomic, finite, positive_int

__all__ = ["MARKER_MODES", "MIN_FRAME_SLOTS", "UNDERRUN_LIST", "FrameStreamerScpi",
           "pack_frame", "unpack_frame"]

# Shortest frame: below this, the query round trips per frame would dominate; Qsync's timing
# pattern is at least 1024 slots too.
MIN_FRAME_SLOTS = 1 << 10
# Blocks one FRAME:UNDERRUN? reply lists at most (keeps the reply under ~1 kB).
UNDERRUN_LIST = 32
# Marker modes of the role (None: off) and their SCPI names.
MARKER_MODES = {"start": "STAR", "block": "BLOC"}
# Intensity classes: signal, decoy, vacuum-like (nibbles 12..15 are invalid).
N_INTENSITIES = 3
SYMBOLS = 4 * N_INTENSITIES


def pack_frame(basis: NDArray[np.uint8], bit: NDArray[np.uint8],
               intensity: NDArray[np.uint8]) -> bytes:
    """Packs a frame, two slots per byte (module docstring).

    Raises:
        ValueError, TypeError: malformed choices (the message never shows them).
    """
    b, v, k = check_frame(basis, bit, intensity)
    if b.size % 2:
        raise ValueError(f"a frame holds an even number of slots, got {b.size}")
    sym = (k << 2) | (b << 1) | v
    return (sym[0::2] | (sym[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_frame(data: bytes) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Inverts :func:`pack_frame`: (basis, bit, intensity) of ``2 * len(data)`` slots.

    Raises:
        ValueError: a nibble above 11 (no such symbol).
    """
    packed = np.frombuffer(data, dtype=np.uint8)
    sym = np.empty(2 * packed.size, dtype=np.uint8)
    sym[0::2] = packed & 0x0F
    sym[1::2] = packed >> 4
    if sym.size and int(sym.max()) >= SYMBOLS:
        raise ValueError("a frame symbol is above 11 (intensity class 3 does not exist)")
    one = np.uint8(1)
    return (sym >> one) & one, sym & one, sym >> np.uint8(2)


def _parse_underruns(reply: str) -> tuple[int, ...]:
    fields = [f.strip() for f in reply.split(",")]
    count = int(fields[0])
    blocks = tuple(int(f) for f in fields[1:])
    if count != len(blocks) or count > UNDERRUN_LIST or any(b < 0 for b in blocks):
        raise ValueError(f"{count} underruns announced, {len(blocks)} listed")
    return blocks


def _marker_mode(reply: str) -> str:
    word = reply.strip().upper()
    for mode, short in MARKER_MODES.items():
        if word.startswith(short):
            return mode
    raise ValueError("not START or BLOCK")


def _count(reply: str) -> int:
    value = int(reply)
    if value < 0:
        raise ValueError("negative count")
    return value


class FrameStreamerScpi(ScpiInstrument):
    """A pattern generator playing one queued frame per block (module docstring).

    Args:
        transport: the instrument's transport.
        limits: safety limits (none applies to a pattern generator; accepted for uniformity).
    """

    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "frame_slots": Setting("frame (block) length, slots", positive_int, "set_frame_slots"),
        "slot_rate_hz": Setting("slot rate, Hz", finite, "set_slot_rate_hz"),
    }

    def __init__(self, transport: Transport, *, limits: Limits | None = None) -> None:
        super().__init__(transport, limits=limits)
        self._frame_slots = 0

    @atomic
    def set_frame_slots(self, slots: int) -> None:
        """Sets the frame (block) length; only while stopped.

        Raises:
            ValueError: not an even integer of at least :data:`MIN_FRAME_SLOTS` (nothing sent).
            InstrumentError: the instrument refused (running, or beyond its memory).
        """
        if isinstance(slots, bool) or not isinstance(slots, int | np.integer):
            raise TypeError(f"frame_slots must be an integer, got {type(slots).__name__}")
        n = int(slots)
        if n < MIN_FRAME_SLOTS or n % 2:
            raise ValueError(f"frame_slots must be even and at least {MIN_FRAME_SLOTS}, got {n}")
        self._frame_slots = 0
        self._set(f"FRAM:SLOT {n}")
        self._frame_slots = n

    def frame_slots(self) -> int:
        """The frame length the instrument reports, slots."""
        self._frame_slots = self._query_parsed("FRAM:SLOT?", _count)
        return self._frame_slots

    @atomic
    def set_slot_rate_hz(self, rate_hz: float) -> None:
        """Sets the slot clock, Hz."""
        rate = finite(rate_hz)
        if rate <= 0:
            raise ValueError(f"slot rate must be positive, got {rate} Hz")
        self._set(f"SOUR:FREQ {rate:.10g}")

    def slot_rate_hz(self) -> float:
        """The slot clock, Hz."""
        rate = self._query_parsed("SOUR:FREQ?", float)
        if not math.isfinite(rate) or rate <= 0:
            raise self._bad_reply("SOUR:FREQ?", str(rate), "not a positive finite rate")
        return rate

    @atomic
    def queue_frame(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                    intensity: NDArray[np.uint8]) -> None:
        """Packs and queues the frame of ``block``.

        Raises:
            ValueError, TypeError: a bad block number or malformed choices, or a frame whose
                length is not the frame length (nothing sent; no choice in the message).
            InstrumentError: the instrument refused it (block begun or out of order: -221;
                no free buffer: -225).
        """
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 0:
            raise ValueError(f"block must be a non-negative integer, got {block!r}")
        data = pack_frame(basis, bit, intensity)
        expected = self._frame_slots or self.frame_slots()
        if 2 * len(data) != expected:
            raise ValueError(f"a frame of {2 * len(data)} slots does not fit the instrument's "
                             f"frame length of {expected} slots")
        write_block(self.transport, f"FRAM:LOAD {int(block)},", data)
        self._check()

    def frames_queued(self) -> int:
        """Frames queued and not begun."""
        return self._query_parsed("FRAM:QUE?", _count)

    def frames_free(self) -> int:
        """Frame buffers free."""
        return self._query_parsed("FRAM:FREE?", _count)

    def next_block(self) -> int:
        """The first block whose frame can still be queued."""
        return self._query_parsed("FRAM:NEXT?", _count)

    @atomic
    def underruns(self) -> tuple[int, ...]:
        """Blocks played as vacuum since the previous call (all of them, in order)."""
        found: list[int] = []
        while True:
            listed = self._query_parsed("FRAM:UND?", _parse_underruns)
            found.extend(listed)
            if len(listed) < UNDERRUN_LIST:
                return tuple(found)

    @atomic
    def set_first_block(self, block: int) -> None:
        """Sets the block that plays first at the next start (only while stopped).

        Raises:
            ValueError: not a non-negative integer (nothing sent).
            InstrumentError: refused (running, or not after every block begun: -221).
        """
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 0:
            raise ValueError(f"block must be a non-negative integer, got {block!r}")
        self._set(f"FRAM:FIRS {int(block)}")

    def first_block(self) -> int:
        """The block that plays first after the last (or next) start."""
        return self._query_parsed("FRAM:FIRS?", _count)

    @atomic
    def set_marker(self, mode: str | None) -> None:
        """The marker output: ``"start"`` (first block after each start), ``"block"`` (every
        block) or None (off)."""
        if mode is None:
            self._set("MARK OFF")
            return
        if mode not in MARKER_MODES:
            raise ValueError(f"marker mode must be one of {sorted(MARKER_MODES)} or None, "
                             f"got {mode!r}")
        self._set(f"MARK:MODE {MARKER_MODES[mode]}")
        self._set("MARK ON")

    def marker(self) -> str | None:
        """The marker mode, None while off."""
        state = self._query_parsed("MARK?", _count)
        if state not in (0, 1):
            raise DeviceError(f"{self._where()}: MARK? answered {state}, not 0 or 1")
        if not state:
            return None
        return self._query_parsed("MARK:MODE?", _marker_mode)

    def running(self) -> bool:
        """Whether the output plays."""
        reply = self._query_parsed("OUTP?", _count)
        if reply not in (0, 1):
            raise DeviceError(f"{self._where()}: OUTP? answered {reply}, not 0 or 1")
        return bool(reply)

    def start(self) -> None:
        """Starts playing (``OUTP ON``)."""
        self._set("OUTP ON")

    def stop(self) -> None:
        """Stops playing (``OUTP OFF``)."""
        self._set("OUTP OFF")
