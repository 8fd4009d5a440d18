"""``keysight.33500``: a Keysight 33500-class two-channel AWG playing the transmitter's frame.

Encoding of a frame (``basis``, ``bit``, ``intensity`` arrays of L slots; see
:class:`~qkdnode.drivers.roles.Transmitter`), ``S = samples_per_slot`` samples per slot:

* channel 1 (intensity modulator): slot s gives ``intensity_codes[intensity[s]]``, S times;
* channel 2 (phase modulator): slot s gives ``phase_codes[2 * basis[s] + bit[s]]``, S times,
  i.e. the codes are listed in the order X0, X1, Z0, Z1.

Codes are signed 16-bit DAC values (-32767 .. 32767 span the channel's amplitude setting). The
defaults are placeholders for a linear drive (intensity: full scale for the signal, a quarter
for the decoy, the bottom for mu3; phase: k * pi/2 as k * 8191) and must be calibrated against
the modulators (``intensity_codes``, ``phase_codes`` in the settings table). The sample rate is
``slot_rate_hz * S``; both channels run from one clock (``FUNC:ARB:SYNC``).

Upload, per channel n (``\\n`` sent and received; ``SYST:ERR?`` after every command):

1. ``FORM:BORD SWAP`` (once: the DAC codes go little-endian),
2. ``SOURn:DATA:VOL:CLE`` (frees the volatile waveform memory of the previous frame),
3. ``SOURn:DATA:ARB:DAC <name>,#<n><len><int16 codes>`` (an IEEE 488.2 definite-length block;
   ``DATA:ARB`` proper takes floats, its ``:DAC`` form the int16 codes),
4. ``SOURn:DATA:ATTR:POIN? <name>``: the point count must equal what was sent,
5. ``SOURn:FUNC ARB``, ``SOURn:FUNC:ARB <name>``;

then ``FUNC:ARB:SYNC``. ``start``/``stop`` switch ``OUTP1``/``OUTP2``; ``trigger`` sends
``*TRG``. The choices are key material: they appear in no log or exception text (transport
messages name the block by its size only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ...errors import DeviceError
from ...roles import Limits, check_frame
from ...transport import Transport, write_block
from ..base import ScpiInstrument, Setting, atomic, finite, positive_int

__all__ = ["AWG33500", "DEFAULT_INTENSITY_CODES", "DEFAULT_PHASE_CODES", "WAVEFORM_NAMES"]

# Signed 16-bit DAC code range of DATA:ARB:DAC (the 33500 uses the symmetric range).
DAC_MIN, DAC_MAX = -32767, 32767
# Placeholders for a linear drive, to be calibrated (module docstring).
DEFAULT_INTENSITY_CODES = (32767, 8191, -32767)
DEFAULT_PHASE_CODES = (0, 16382, 8191, 24573)
# Intensity classes and (basis, bit) states of a decoy-state BB84 frame.
N_INTENSITIES = 3
N_STATES = 4
# Waveform names (the 33500 allows 12 characters, starting with a letter).
WAVEFORM_NAMES = ("QKD_INT", "QKD_PHASE")
# An arbitrary waveform has at least 8 points; the standard memory holds 1 MSa per channel
# (16 MSa with the memory option: raise ``max_points`` in the settings).
MIN_POINTS = 8
DEFAULT_MAX_POINTS = 1 << 20
# The 33500B series samples at up to 250 MSa/s (the 33600A at 1 GSa/s: raise the setting).
DEFAULT_MAX_SAMPLE_RATE_HZ = 250e6
# The slowest arbitrary sample rate the 33500 accepts.
MIN_SAMPLE_RATE_HZ = 1e-6
# Little-endian int16, the byte order FORM:BORD SWAP selects.
_DAC_DTYPE = np.dtype("<i2")


def _codes(count: int) -> Any:
    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != count:
            raise ValueError(f"must be a list of {count} DAC codes")
        for code in value:
            if isinstance(code, bool) or not isinstance(code, int) or not (
                DAC_MIN <= code <= DAC_MAX
            ):
                raise ValueError(f"DAC codes must be integers in {DAC_MIN}..{DAC_MAX}")
        return tuple(value)

    return check


def _positive_rate(value: Any) -> float:
    rate = finite(value)
    if rate <= 0:
        raise ValueError(f"must be a positive rate, got {value!r}")
    return rate


def _lookup(name: str, samples: NDArray[Any], codes: NDArray[np.int16]) -> NDArray[np.uint8]:
    """The index of each sample in ``codes`` (first match); ValueError if one is not a code."""
    hits = samples[:, None] == codes[None, :]
    if not hits.any(axis=1).all():
        raise ValueError(f"{name} holds samples that are not configured codes")
    index: NDArray[np.uint8] = np.argmax(hits, axis=1).astype(np.uint8)
    return index


class AWG33500(ScpiInstrument):
    """Keysight 33500-class AWG; implements :class:`~qkdnode.drivers.roles.Transmitter`.

    Args:
        transport: the instrument's transport.
        limits: safety limits (none applies to the AWG itself).
        samples_per_slot: samples per slot, S.
        intensity_codes: DAC code of intensity classes 0, 1, 2 (channel 1).
        phase_codes: DAC code of X0, X1, Z0, Z1 (channel 2).
        max_points: the waveform memory per channel, samples.
        max_sample_rate_hz: the AWG's top sample rate.
    """

    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "samples_per_slot": Setting("samples per slot", positive_int),
        "intensity_codes": Setting("DAC codes of intensity classes 0, 1, 2", _codes(N_INTENSITIES)),
        "phase_codes": Setting("DAC codes of X0, X1, Z0, Z1", _codes(N_STATES)),
        "max_points": Setting("waveform memory per channel, samples", positive_int),
        "max_sample_rate_hz": Setting("top sample rate, Hz", _positive_rate),
        "slot_rate_hz": Setting("slot rate, Hz", _positive_rate, "set_slot_rate_hz"),
    }

    def __init__(
        self,
        transport: Transport,
        *,
        limits: Limits | None = None,
        samples_per_slot: int = 1,
        intensity_codes: Sequence[int] = DEFAULT_INTENSITY_CODES,
        phase_codes: Sequence[int] = DEFAULT_PHASE_CODES,
        max_points: int = DEFAULT_MAX_POINTS,
        max_sample_rate_hz: float = DEFAULT_MAX_SAMPLE_RATE_HZ,
    ) -> None:
        super().__init__(transport, limits=limits)
        self._samples_per_slot = positive_int(samples_per_slot)
        self._intensity_codes = np.array(_codes(N_INTENSITIES)(intensity_codes), dtype=_DAC_DTYPE)
        self._phase_codes = np.array(_codes(N_STATES)(phase_codes), dtype=_DAC_DTYPE)
        self._max_points = positive_int(max_points)
        self._max_sample_rate_hz = _positive_rate(max_sample_rate_hz)
        self._frame_slots = 0

    @property
    def samples_per_slot(self) -> int:
        """Samples per slot."""
        return self._samples_per_slot

    def encode(
        self, basis: NDArray[np.uint8], bit: NDArray[np.uint8], intensity: NDArray[np.uint8]
    ) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """The two channels' DAC codes for a frame (module docstring), without sending them.

        Raises:
            ValueError, TypeError: for malformed choices (the message never shows them).
        """
        b, v, k = check_frame(basis, bit, intensity)
        points = b.size * self._samples_per_slot
        if not MIN_POINTS <= points <= self._max_points:
            raise ValueError(
                f"a frame of {b.size} slots x {self._samples_per_slot} samples is {points} "
                f"points; the AWG takes {MIN_POINTS}..{self._max_points} per channel"
            )
        s = self._samples_per_slot
        channel1 = np.repeat(self._intensity_codes[k], s)
        channel2 = np.repeat(self._phase_codes[2 * b + v], s)
        return channel1, channel2

    @atomic
    def decode(
        self, channel1: NDArray[np.int16], channel2: NDArray[np.int16]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
        """Inverts :meth:`encode`: the (basis, bit, intensity) a pair of waveforms plays.

        The first sample of each slot is read; a simulated AWG (or a check of a read-back
        waveform) uses it.

        Raises:
            ValueError: if the waveforms differ in length, are not whole slots, or hold a code
                that is not one of the configured ones (the message shows no samples).
        """
        c1, c2 = np.asarray(channel1), np.asarray(channel2)
        s = self._samples_per_slot
        if c1.shape != c2.shape or c1.ndim != 1 or c1.size % s:
            raise ValueError(
                f"waveforms of {c1.size} and {c2.size} points are not one frame of "
                f"{s}-sample slots"
            )
        intensity = _lookup("channel 1", c1[::s], self._intensity_codes)
        state = _lookup("channel 2", c2[::s], self._phase_codes)
        return (state // 2).astype(np.uint8), (state % 2).astype(np.uint8), intensity

    def load_frame(
        self, basis: NDArray[np.uint8], bit: NDArray[np.uint8], intensity: NDArray[np.uint8]
    ) -> None:
        """Encodes and uploads a frame to both channels and selects it (outputs unchanged).

        Raises:
            ValueError, TypeError: for malformed choices, before anything is sent.
            InstrumentError: the AWG's error queue reported an error.
            DeviceError: the AWG holds a different number of points than was sent.
        """
        channels = self.encode(basis, bit, intensity)
        self._frame_slots = 0
        self._set("FORM:BORD SWAP")
        for n, (name, codes) in enumerate(zip(WAVEFORM_NAMES, channels, strict=True), start=1):
            self._set(f"SOUR{n}:DATA:VOL:CLE")
            write_block(
                self.transport,
                f"SOUR{n}:DATA:ARB:DAC {name},",
                codes.astype(_DAC_DTYPE, copy=False).tobytes(),
            )
            self._check()
            query = f"SOUR{n}:DATA:ATTR:POIN? {name}"
            held = self._query_parsed(query, int)
            if held != codes.size:
                raise DeviceError(
                    f"{self._where()}: waveform {name} holds {held} points after an upload of "
                    f"{codes.size}"
                )
            self._set(f"SOUR{n}:FUNC ARB")
            self._set(f"SOUR{n}:FUNC:ARB {name}")
        self._set("FUNC:ARB:SYNC")
        self._frame_slots = channels[0].size // self._samples_per_slot

    def frame_slots(self) -> int:
        """Slots in the frame loaded by this driver (0 if none, or after a failed upload)."""
        return self._frame_slots

    @atomic
    def set_slot_rate_hz(self, rate_hz: float) -> None:
        """Sets both channels' sample rate to ``rate_hz * samples_per_slot``.

        Raises:
            ValueError: if that sample rate is outside the AWG's range (nothing sent).
        """
        rate = finite(rate_hz)
        sample_rate = rate * self._samples_per_slot
        if not MIN_SAMPLE_RATE_HZ <= sample_rate <= self._max_sample_rate_hz:
            raise ValueError(
                f"{self.transport.instrument}: slot rate {rate} Hz x {self._samples_per_slot} "
                f"samples needs {sample_rate} Sa/s, outside {MIN_SAMPLE_RATE_HZ:g}.."
                f"{self._max_sample_rate_hz:g} Sa/s"
            )
        for n in (1, 2):
            self._set(f"SOUR{n}:FUNC:ARB:SRAT {sample_rate:.10g}")

    def slot_rate_hz(self) -> float:
        """The slot rate, Hz (channel 1's sample rate / samples per slot)."""
        sample_rate = self._query_parsed("SOUR1:FUNC:ARB:SRAT?", float)
        if not math.isfinite(sample_rate):
            raise self._bad_reply("SOUR1:FUNC:ARB:SRAT?", str(sample_rate), "not finite")
        return sample_rate / self._samples_per_slot

    @atomic
    def start(self) -> None:
        """Switches both outputs on."""
        for n in (1, 2):
            self._set(f"OUTP{n} ON")

    @atomic
    def stop(self) -> None:
        """Switches both outputs off."""
        for n in (1, 2):
            self._set(f"OUTP{n} OFF")

    def trigger(self) -> None:
        """Sends a software trigger (``*TRG``)."""
        self._set("*TRG")
