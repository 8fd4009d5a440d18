"""Simulated ``keysight.33500``: a 33500-class AWG driving the bench's modulators.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.keysight.awg33500`), SCPI long or
short forms, error queue: ``FORM:BORD``, ``SOURn:DATA:VOL:CLE``, ``SOURn:DATA:ARB:DAC`` with
a definite-length block of int16 codes, ``SOURn:DATA:ATTR:POIN?``, ``SOURn:FUNC``,
``SOURn:FUNC:ARB``, ``SOURn:FUNC:ARB:SRAT``, ``FUNC:ARB:SYNC``, ``OUTPn``, ``*TRG``.

Physics: ``FUNC:ARB:SYNC`` restarts both channels' waveforms together, and the bench's
modulators then play them: the frame is decoded slot by slot and loaded into the link. The
sample clock is locked to the source's slot clock, so a slot is ``SRAT / slot rate`` samples
(the power-on sample rate is the slot rate); the first sample of each slot counts. Channel 1
drives the intensity modulator, calibrated to :data:`INTENSITY_CODES` (a code goes to the
nearest level's class); channel 2 the phase modulator, ``pi/2`` per :data:`PHASE_STEP` codes
(phase 0, pi/2, pi, 3 pi/2 prepare X0, Z0, X1, Z1). A corrupted upload therefore plays other
states than the transmitter meant, and the QBER measured against its frame rises.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numpy.typing import NDArray

from ...instruments.keysight.awg33500 import DEFAULT_INTENSITY_CODES, DEFAULT_MAX_POINTS, MIN_POINTS
from ...transport.blocks import decode_block
from .base import (
    BLOCK_DATA_ERROR,
    DATA_OUT_OF_RANGE,
    ILLEGAL_PARAMETER,
    OUT_OF_MEMORY,
    SETTINGS_CONFLICT,
    DeviceFault,
    ScpiDevice,
    in_range,
    no_args,
    number,
    on_off,
)

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["INTENSITY_CODES", "PHASE_STEP", "SimAWG33500", "decode_frame"]

# The simulated modulators' calibration: the DAC code of intensity classes 0, 1, 2, and the
# codes per quarter wave of the phase modulator (the driver's placeholder linear drive).
INTENSITY_CODES = np.array(DEFAULT_INTENSITY_CODES, dtype=np.int32)
PHASE_STEP = 8191
# Phase quarter-wave k (0..3) prepares (basis, bit): 0 X0, 1 Z0, 2 X1, 3 Z1.
_BASIS_OF_PHASE = np.array([0, 1, 0, 1], dtype=np.uint8)
_BIT_OF_PHASE = np.array([0, 0, 1, 1], dtype=np.uint8)
# The sample rate range, Sa/s, of the family's fastest members (33600A: 1 GSa/s), so that a
# bench at 1 GHz slots can be driven with one sample per slot.
SAMPLE_RATE_RANGE = (1e-6, 1e9)
# Slot length in samples must be a whole number to this relative precision.
RATIO_TOLERANCE = 1e-9
FUNCTIONS = ("SIN", "SQU", "TRI", "RAMP", "PULS", "PRBS", "NOIS", "ARB", "DC")
_BYTE_ORDERS = {"NORM": ">i2", "NORMAL": ">i2", "SWAP": "<i2", "SWAPPED": "<i2"}


def decode_frame(channel1: NDArray[np.int16], channel2: NDArray[np.int16],
                 samples_per_slot: int
                 ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """What the modulators prepare per slot: (basis, bit, intensity) from the two waveforms."""
    c1 = channel1[::samples_per_slot].astype(np.int32)
    c2 = channel2[::samples_per_slot].astype(np.int32)
    intensity = np.abs(c1[:, None] - INTENSITY_CODES[None, :]).argmin(axis=1).astype(np.uint8)
    quarter = np.rint(c2 / PHASE_STEP).astype(np.int64) % 4
    return _BASIS_OF_PHASE[quarter], _BIT_OF_PHASE[quarter], intensity


class SimAWG33500(ScpiDevice):
    """A two-channel 33500-class AWG."""

    KIND: ClassVar[str] = "visa"
    BLOCKS: ClassVar[bool] = True
    IDN: ClassVar[str] = "Keysight Technologies,33622A (simulated),SIM0007,4.0"
    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("FORMat:BORDer", "_bord"), ("FORMat:BORDer?", "_bord_q"),
        ("SOURce#:DATA:VOLatile:CLEar", "_clear"),
        ("SOURce#:DATA:ARBitrary:DAC", "block_command"),
        ("SOURce#:DATA:ATTRibute:POINts?", "_points_q"),
        ("SOURce#:FUNCtion", "_func"), ("SOURce#:FUNCtion?", "_func_q"),
        ("SOURce#:FUNCtion:ARBitrary", "_arb"), ("SOURce#:FUNCtion:ARBitrary?", "_arb_q"),
        ("SOURce#:FUNCtion:ARBitrary:SRATe", "_srat"),
        ("SOURce#:FUNCtion:ARBitrary:SRATe?", "_srat_q"),
        ("FUNCtion:ARBitrary:SYNChronize", "_sync"),
        ("OUTPut#[:STATe]", "_outp"), ("OUTPut#[:STATe]?", "_outp_q"),
        ("*TRG", "_trg"),
    )

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.reset()

    def reset(self) -> None:
        self._order = ">i2"
        self._memory: list[dict[str, NDArray[np.int16]]] = [{}, {}]
        self._function = ["SIN", "SIN"]
        self._selected: list[str | None] = [None, None]
        rate = self.bench.link.params.source.slot_rate_hz
        self._srate = [min(rate, SAMPLE_RATE_RANGE[1])] * 2
        self._output = [False, False]

    def _channel(self, groups: tuple[str, ...]) -> int:
        text = groups[0] if groups else ""
        if text in ("", "1"):
            return 0
        if text == "2":
            return 1
        raise DeviceFault(-114, "Header suffix out of range")

    def _bord(self, groups: tuple[str, ...], args: str) -> None:
        order = _BYTE_ORDERS.get(args.upper())
        if order is None:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value")
        self._order = order

    def _bord_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "SWAP" if self._order == "<i2" else "NORM"

    def _clear(self, groups: tuple[str, ...], args: str) -> None:
        n = self._channel(groups)
        self._memory[n].clear()
        self._selected[n] = None

    def block_command(self, groups: tuple[str, ...], args: bytes) -> None:
        n = self._channel(groups)
        name_bytes, sep, rest = args.partition(b",")
        name = name_bytes.decode("ascii", "replace").strip().upper()
        if not sep or not name or not name[0].isalpha() or len(name) > 12:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; waveform name")
        try:
            data, used = decode_block(rest.lstrip())
        except ValueError:
            raise DeviceFault(BLOCK_DATA_ERROR, "Block data error") from None
        if rest.lstrip()[used:].strip() or len(data) % 2:
            raise DeviceFault(BLOCK_DATA_ERROR, "Block data error")
        codes = np.frombuffer(data, dtype=self._order).astype(np.int16)
        if codes.size < MIN_POINTS:
            raise DeviceFault(DATA_OUT_OF_RANGE, "Data out of range; too few points")
        held = sum(w.size for k, w in self._memory[n].items() if k != name)
        if held + codes.size > DEFAULT_MAX_POINTS:
            raise DeviceFault(OUT_OF_MEMORY, "Out of memory; waveform memory full")
        self._memory[n][name] = codes

    def _points_q(self, groups: tuple[str, ...], args: str) -> str:
        n = self._channel(groups)
        waveform = self._memory[n].get(args.strip().upper())
        if waveform is None:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; no such waveform")
        return str(waveform.size)

    def _func(self, groups: tuple[str, ...], args: str) -> None:
        n = self._channel(groups)
        function = args.strip().upper()
        if function not in FUNCTIONS:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value")
        self._function[n] = function

    def _func_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return self._function[self._channel(groups)]

    def _arb(self, groups: tuple[str, ...], args: str) -> None:
        n = self._channel(groups)
        name = args.strip().strip('"').upper()
        if name not in self._memory[n]:
            raise DeviceFault(ILLEGAL_PARAMETER, "Illegal parameter value; no such waveform")
        self._selected[n] = name

    def _arb_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return f'"{self._selected[self._channel(groups)] or ""}"'

    def _srat(self, groups: tuple[str, ...], args: str) -> None:
        self._srate[self._channel(groups)] = in_range(number(args), *SAMPLE_RATE_RANGE)

    def _srat_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return f"{self._srate[self._channel(groups)]:.10E}"

    def _outp(self, groups: tuple[str, ...], args: str) -> None:
        self._output[self._channel(groups)] = on_off(args)

    def _outp_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "1" if self._output[self._channel(groups)] else "0"

    def _trg(self, groups: tuple[str, ...], args: str) -> None:
        no_args(args)

    def _sync(self, groups: tuple[str, ...], args: str) -> None:
        no_args(args)
        waves = []
        for n in (0, 1):
            name = self._selected[n]
            if self._function[n] != "ARB" or name is None:
                raise DeviceFault(SETTINGS_CONFLICT,
                                  f"Settings conflict; channel {n + 1} plays no waveform")
            waves.append(self._memory[n][name])
        if waves[0].size != waves[1].size or self._srate[0] != self._srate[1]:
            raise DeviceFault(SETTINGS_CONFLICT, "Settings conflict; channels differ")
        ratio = self._srate[0] / self.bench.link.params.source.slot_rate_hz
        samples = round(ratio)
        if samples < 1 or not math.isclose(ratio, samples, rel_tol=RATIO_TOLERANCE) or (
                waves[0].size % samples):
            raise DeviceFault(SETTINGS_CONFLICT,
                              "Settings conflict; sample rate is not the slot clock")
        self.bench.load_frame(*decode_frame(waves[0], waves[1], samples))
