"""Instrument roles: what the node needs from each kind of instrument, independent of model.

Every role is a :class:`typing.Protocol` with methods only (so ``isinstance`` and ``issubclass``
checks never touch the instrument), and every quantity carries its unit in its name: ``_ps``,
``_s``, ``_v``, ``_w``, ``_db``, ``_hz``, ``_nm``, ``_c`` (degrees Celsius).

Safety: :class:`Limits` holds the lab's hard limits (detector bias, modulator bias, optical
power, temperature range, least attenuation). Drivers check a requested value against them
*before* anything is sent, and refuse with a ValueError naming the limit and the value.

Random sources live here too, because they are small and have no transport:
:class:`OsRandomSource` (the operating system's CSPRNG, for real use) and
:class:`SeededRandomSource` (reproducible, for the simulated bench only: it refuses any resource
other than ``sim://``). The passive receiver, which is configuration rather than an
instrument, is :class:`~qkdnode.drivers.instruments.generic.passive_receiver.PassiveReceiver`.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .resource import parse_resource_url

__all__ = [
    "BASIS_NAMES",
    "DEFAULT_MAX_DETECTOR_BIAS_V",
    "DEFAULT_MAX_MODULATOR_BIAS_V",
    "DEFAULT_MAX_OPTICAL_POWER_W",
    "DEFAULT_MAX_TEMPERATURE_C",
    "DEFAULT_MIN_ATTENUATION_DB",
    "DEFAULT_MIN_TEMPERATURE_C",
    "MAX_RANDOM_BYTES",
    "ActiveReceiver",
    "Attenuator",
    "BiasController",
    "Detector",
    "FrameStreamer",
    "Limits",
    "LockMode",
    "OsRandomSource",
    "PowerMeter",
    "RandomSource",
    "Receiver",
    "SeededRandomSource",
    "TagRead",
    "TimeTagger",
    "Transmitter",
    "check_frame",
]

# --- safety limits ----------------------------------------------------------------------------

# InGaAs/InP SPADs break down at ~40-70 V and run a few volts above; 75 V covers them with no
# room for a typo such as 750. Detectors that need more (silicon APDs run near 200 V) must say
# so in their settings table (``max_bias_v``).
DEFAULT_MAX_DETECTOR_BIAS_V = 75.0
# Lithium niobate modulator bias ports are specified for about +/-10 V (the MBX's output range);
# more risks the modulator's DC electrodes.
DEFAULT_MAX_MODULATOR_BIAS_V = 10.0
# 1 mW is the most a fibre power meter on the transmitter's monitor tap should see; more means a
# misconfigured source that could blind or damage the receiver's detectors.
DEFAULT_MAX_OPTICAL_POWER_W = 1e-3
# Thermo-electrically cooled detectors regulate between about -60 and +40 degrees C; a set point
# outside that range is a mistake (or condensation on the diode).
DEFAULT_MIN_TEMPERATURE_C = -60.0
DEFAULT_MAX_TEMPERATURE_C = 40.0
# No attenuation is the default floor; a receiver-side attenuator guarding single-photon
# detectors should set ``min_attenuation_db`` so that no command can open it fully.
DEFAULT_MIN_ATTENUATION_DB = 0.0


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits a driver enforces before it sends a set command.

    Every field can be set in the instrument's ``settings`` table under the same name.

    Attributes:
        max_bias_v: largest detector bias magnitude, V.
        max_modulator_bias_v: largest modulator bias magnitude (bias controller set point), V.
        max_optical_power_w: largest optical power an instrument may be asked to produce, W.
        min_temperature_c: lowest temperature set point, degrees C.
        max_temperature_c: highest temperature set point, degrees C.
        min_attenuation_db: least attenuation an attenuator may be set to, dB.
    """

    max_bias_v: float = DEFAULT_MAX_DETECTOR_BIAS_V
    max_modulator_bias_v: float = DEFAULT_MAX_MODULATOR_BIAS_V
    max_optical_power_w: float = DEFAULT_MAX_OPTICAL_POWER_W
    min_temperature_c: float = DEFAULT_MIN_TEMPERATURE_C
    max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C
    min_attenuation_db: float = DEFAULT_MIN_ATTENUATION_DB

    KEYS: ClassVar[tuple[str, ...]] = (
        "max_bias_v",
        "max_modulator_bias_v",
        "max_optical_power_w",
        "min_temperature_c",
        "max_temperature_c",
        "min_attenuation_db",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _finite_number(f.name, getattr(self, f.name))
        for name in ("max_bias_v", "max_modulator_bias_v", "max_optical_power_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.min_temperature_c > self.max_temperature_c:
            raise ValueError(
                f"min_temperature_c {self.min_temperature_c} exceeds max_temperature_c "
                f"{self.max_temperature_c}"
            )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Limits:
        """Builds limits from the keys of a settings table that name them (others ignored).

        Raises:
            ValueError: if a limit is not a finite number or the range is inverted.
        """
        values = {k: _finite_number(k, settings[k]) for k in cls.KEYS if k in settings}
        return cls(**values)

    def check_bias_v(self, volts: float) -> float:
        """Returns ``volts`` if its magnitude is within ``max_bias_v``, else raises ValueError."""
        v = _finite_number("detector bias (V)", volts)
        if abs(v) > self.max_bias_v:
            raise ValueError(
                f"detector bias {v} V exceeds the limit max_bias_v = {self.max_bias_v} V"
            )
        return v

    def check_modulator_bias_v(self, volts: float) -> float:
        """Returns ``volts`` if within ``max_modulator_bias_v``, else raises ValueError."""
        v = _finite_number("modulator bias (V)", volts)
        if abs(v) > self.max_modulator_bias_v:
            raise ValueError(
                f"modulator bias {v} V exceeds the limit max_modulator_bias_v = "
                f"{self.max_modulator_bias_v} V"
            )
        return v

    def check_optical_power_w(self, watts: float) -> float:
        """Returns ``watts`` if within ``max_optical_power_w``, else raises ValueError."""
        w = _finite_number("optical power (W)", watts)
        if w > self.max_optical_power_w:
            raise ValueError(
                f"optical power {w} W exceeds the limit max_optical_power_w = "
                f"{self.max_optical_power_w} W"
            )
        return w

    def check_temperature_c(self, celsius: float) -> float:
        """Returns ``celsius`` if within the temperature range, else raises ValueError."""
        c = _finite_number("temperature (degrees C)", celsius)
        if not self.min_temperature_c <= c <= self.max_temperature_c:
            raise ValueError(
                f"temperature set point {c} C is outside the limits min_temperature_c = "
                f"{self.min_temperature_c} C .. max_temperature_c = {self.max_temperature_c} C"
            )
        return c

    def check_attenuation_db(self, db: float) -> float:
        """Returns ``db`` if at least ``min_attenuation_db``, else raises ValueError."""
        a = _finite_number("attenuation (dB)", db)
        if a < self.min_attenuation_db:
            raise ValueError(
                f"attenuation {a} dB is below the limit min_attenuation_db = "
                f"{self.min_attenuation_db} dB"
            )
        return a


# --- roles ------------------------------------------------------------------------------------


@runtime_checkable
class Detector(Protocol):
    """A single-photon detector (or its controller)."""

    def identify(self) -> str:
        """The instrument's identification string."""
        ...

    def set_bias_v(self, volts: float) -> None:
        """Sets the bias (efficiency) set point, V; checked against ``Limits.max_bias_v``."""
        ...

    def bias_v(self) -> float:
        """The bias voltage the instrument reports, V."""
        ...

    def set_dead_time_s(self, seconds: float) -> None:
        """Sets the dead time (hold-off after a click), s."""
        ...

    def dead_time_s(self) -> float:
        """The dead time, s."""
        ...

    def set_threshold_v(self, volts: float) -> None:
        """Sets the discriminator threshold (or gate level), V."""
        ...

    def threshold_v(self) -> float:
        """The discriminator threshold, V."""
        ...

    def set_temperature_set_point_c(self, celsius: float) -> None:
        """Sets the cooler's temperature set point, degrees C; checked against Limits."""
        ...

    def temperature_c(self) -> float:
        """The measured temperature, degrees C."""
        ...

    def count_rate_hz(self, integration_time_s: float) -> float:
        """Counts clicks over ``integration_time_s`` and returns the rate, Hz."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


class LockMode(enum.Enum):
    """Where a bias controller holds a Mach-Zehnder modulator on its transfer curve."""

    PEAK = "peak"
    NULL = "null"
    QUADRATURE_POSITIVE = "quadrature+"
    QUADRATURE_NEGATIVE = "quadrature-"
    MANUAL = "manual"


@runtime_checkable
class BiasController(Protocol):
    """A modulator bias controller (dither lock on a monitor tap)."""

    def identify(self) -> str:
        """The instrument's identification string."""
        ...

    def set_lock_mode(self, mode: LockMode) -> None:
        """Selects the lock point (or manual bias)."""
        ...

    def lock_mode(self) -> LockMode:
        """The current lock mode."""
        ...

    def set_manual_bias_v(self, volts: float) -> None:
        """Sets the bias held in MANUAL mode, V; checked against ``max_modulator_bias_v``."""
        ...

    def bias_v(self) -> float:
        """The bias voltage applied now (readback), V."""
        ...

    def tap_power_w(self) -> float:
        """Optical power on the controller's monitor tap, W."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


@runtime_checkable
class Attenuator(Protocol):
    """A variable optical attenuator."""

    def set_attenuation_db(self, db: float) -> None:
        """Sets the attenuation, dB; checked against ``Limits.min_attenuation_db``."""
        ...

    def attenuation_db(self) -> float:
        """The attenuation set point, dB."""
        ...

    def set_enabled(self, enabled: bool) -> None:
        """True applies the set attenuation; what False does is the model's (see its driver)."""
        ...

    def enabled(self) -> bool:
        """Whether the attenuator is enabled."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


@runtime_checkable
class PowerMeter(Protocol):
    """An optical power meter."""

    def identify(self) -> str:
        """The instrument's identification string."""
        ...

    def set_wavelength_nm(self, nm: float) -> None:
        """Sets the wavelength the sensor's responsivity is corrected for, nm."""
        ...

    def wavelength_nm(self) -> float:
        """The correction wavelength, nm."""
        ...

    def set_averaging(self, count: int) -> None:
        """Sets how many samples one reading averages."""
        ...

    def averaging(self) -> int:
        """The averaging count."""
        ...

    def measure_power_w(self) -> float:
        """Measures the optical power, W."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


# Intensity classes of a frame: 0 = signal mu1, 1 = decoy mu2, 2 = mu3.
FRAME_INTENSITIES = 3


def _choice_array(name: str, values: Any, high: int) -> NDArray[np.uint8]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got {array.ndim} dimensions")
    if array.dtype.kind not in "uib":
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > high):
        raise ValueError(f"{name} values must be in 0..{high}")  # the values are key material
    return array.astype(np.uint8, copy=False)


def check_frame(basis: Any, bit: Any, intensity: Any
                ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """A frame's three choice arrays (see :class:`Transmitter`) checked and as ``uint8``:
    1-D integer arrays of one length, basis and bit 0/1, intensity 0..2. The messages name
    shapes and ranges only, never the contents (key material).

    Raises:
        TypeError: not an integer array. ValueError: wrong shape, value or length.
    """
    b = _choice_array("basis", basis, 1)
    v = _choice_array("bit", bit, 1)
    k = _choice_array("intensity", intensity, FRAME_INTENSITIES - 1)
    if not b.size == v.size == k.size:
        raise ValueError(f"basis, bit and intensity must have one length, got {b.size}, "
                         f"{v.size}, {k.size}")
    return b, v, k


@runtime_checkable
class Transmitter(Protocol):
    """The modulation hardware that plays Alice's per-slot choices, repeated frame by frame.

    A frame is three equally long ``uint8`` arrays: ``basis`` (0 = X, 1 = Z), ``bit`` (0/1) and
    ``intensity`` (class 0 = signal mu1, 1 = decoy mu2, 2 = mu3). They are key material: an
    implementation never logs them or puts them into exception text.
    """

    def load_frame(
        self, basis: NDArray[np.uint8], bit: NDArray[np.uint8], intensity: NDArray[np.uint8]
    ) -> None:
        """Loads one frame into the modulation hardware (output state unchanged)."""
        ...

    def frame_slots(self) -> int:
        """Slots in the loaded frame (0 if none)."""
        ...

    def set_slot_rate_hz(self, rate_hz: float) -> None:
        """Sets the slot (pulse) rate, Hz."""
        ...

    def slot_rate_hz(self) -> float:
        """The slot rate, Hz."""
        ...

    def start(self) -> None:
        """Starts playing the loaded frame."""
        ...

    def stop(self) -> None:
        """Stops playing."""
        ...

    def trigger(self) -> None:
        """Sends a software trigger (starts a triggered frame)."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


@runtime_checkable
class FrameStreamer(Protocol):
    """Modulation hardware fed one fresh frame per block, played back to back.

    A :class:`Transmitter` repeats one frame; a QKD block of 2^20..2^26 slots needs fresh
    choices in every slot, which no AWG memory holds for long. A frame streamer (an FPGA
    pattern generator fed by the host) plays its blocks back to back from :meth:`start`,
    block :meth:`first_block` first (``L`` = :meth:`frame_slots` slots each), and the host
    queues the frames ahead of time.

    Its marker output (an electrical pulse, cabled to a channel of the receiver's time tagger)
    fires at the first slot of the first block after :meth:`start` (marker mode ``"start"``)
    or of every block (``"block"``) while enabled (:meth:`set_marker`): the only common time
    origin of two instruments on two PCs, so the receiver numbers slots from it.

    A block whose frame is not queued when its
    first slot comes is played as vacuum (the intensity modulator blocks the light) and
    reported by :meth:`underruns`: its choices never reached the light, so they must never be
    used for key. A frame for a block that has begun is refused.

    Frames are the same three ``uint8`` arrays as a :class:`Transmitter`'s; they are key
    material: an implementation never logs them or puts them into exception text.
    """

    def set_frame_slots(self, slots: int) -> None:
        """Sets the frame (block) length, slots; only while stopped."""
        ...

    def frame_slots(self) -> int:
        """The frame (block) length, slots."""
        ...

    def set_slot_rate_hz(self, rate_hz: float) -> None:
        """Sets the slot (pulse) rate, Hz."""
        ...

    def slot_rate_hz(self) -> float:
        """The slot rate, Hz."""
        ...

    def queue_frame(
        self,
        block: int,
        basis: NDArray[np.uint8],
        bit: NDArray[np.uint8],
        intensity: NDArray[np.uint8],
    ) -> None:
        """Queues the frame of ``block`` (at least :meth:`next_block`, one frame slot free)."""
        ...

    def frames_queued(self) -> int:
        """Frames queued and not yet begun."""
        ...

    def frames_free(self) -> int:
        """Frames that can be queued now."""
        ...

    def next_block(self) -> int:
        """The first block whose frame can still be queued."""
        ...

    def underruns(self) -> tuple[int, ...]:
        """Blocks played as vacuum (no frame queued in time) since the previous call."""
        ...

    def set_first_block(self, block: int) -> None:
        """While stopped: the block that plays first at the next :meth:`start` (frames queued
        for earlier blocks are dropped)."""
        ...

    def first_block(self) -> int:
        """The block that plays (or played) first after the last :meth:`start`."""
        ...

    def set_marker(self, mode: str | None) -> None:
        """The marker output: ``"start"``, ``"block"`` or None (off)."""
        ...

    def marker(self) -> str | None:
        """The marker mode, None while the marker is off."""
        ...

    def start(self) -> None:
        """Starts playing: the first slot of :meth:`first_block` is now (the marker fires)."""
        ...

    def stop(self) -> None:
        """Stops playing (the output is blocked)."""
        ...

    def close(self) -> None:
        """Releases the instrument's transport."""
        ...


@dataclass(frozen=True, slots=True)
class TagRead:
    """What one :meth:`TimeTagger.read` returns: tags plus what was lost, never hidden.

    Attributes:
        timestamps_ps: ``int64`` timestamps, ps, non-decreasing.
        channels: ``int32`` channel of each tag (same length).
        lost_events: tags the tagger dropped since the previous read (0 if it cannot tell).
        overflows: buffer overflows since the previous read.
    """

    timestamps_ps: NDArray[np.int64]
    channels: NDArray[np.int32]
    lost_events: int = 0
    overflows: int = 0

    @property
    def complete(self) -> bool:
        """True if nothing was lost."""
        return self.lost_events == 0 and self.overflows == 0


@runtime_checkable
class TimeTagger(Protocol):
    """A time-to-digital converter streaming (timestamp_ps, channel) tags."""

    def channels(self) -> tuple[int, ...]:
        """The input channels."""
        ...

    def set_threshold_v(self, channel: int, volts: float) -> None:
        """Sets a channel's trigger threshold, V."""
        ...

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Sets a channel's input delay, ps."""
        ...

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """Sets a channel's dead time, ps."""
        ...

    def start(self) -> None:
        """Starts streaming tags."""
        ...

    def stop(self) -> None:
        """Stops streaming tags."""
        ...

    def read(self) -> TagRead:
        """Returns the tags since the previous read, with lost and overflow counts."""
        ...

    def close(self) -> None:
        """Releases the instrument."""
        ...


# --- random sources ---------------------------------------------------------------------------

# One request is at most this many bytes: a frame of 10^8 slots needs a few times 10^8 random
# bits; larger requests are split by the caller, so no single call holds gigabytes.
MAX_RANDOM_BYTES = 1 << 30


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"the number of random bytes must be an int, got {type(n).__name__}")
    if not 0 <= n <= MAX_RANDOM_BYTES:
        raise ValueError(f"the number of random bytes must be in 0..{MAX_RANDOM_BYTES}, got {n}")
    return n


@runtime_checkable
class RandomSource(Protocol):
    """Where the per-slot choices come from."""

    def random_bytes(self, n: int) -> bytes:
        """Returns ``n`` random bytes."""
        ...

    def close(self) -> None:
        """Releases the source."""
        ...


class OsRandomSource:
    """The operating system's CSPRNG (:func:`secrets.token_bytes`, i.e. ``os.urandom``)."""

    def random_bytes(self, n: int) -> bytes:
        """Returns ``n`` bytes from the operating system's CSPRNG."""
        return secrets.token_bytes(_check_count(n))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "OsRandomSource()"


class SeededRandomSource:
    """A reproducible generator (numpy PCG64) for the simulated bench ONLY.

    Its output is predictable from the seed, so a key built from it is no key. It therefore
    refuses to exist for any resource but a ``sim://BENCH/INSTRUMENT`` URL.

    Args:
        resource: the configured resource URL; must be ``sim://...``.
        seed: the seed (a non-negative integer).

    Raises:
        ValueError: if ``resource`` is not a ``sim://`` URL, or the seed is invalid.
    """

    def __init__(self, resource: str, seed: int) -> None:
        try:
            url = parse_resource_url(resource)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"SeededRandomSource is for the simulated bench only and needs a "
                f"sim://BENCH/INSTRUMENT resource; {resource!r} is not one ({exc})"
            ) from None
        if url.scheme != "sim":
            raise ValueError(
                "SeededRandomSource is for the simulated bench only: its output is predictable "
                f"from the seed, so it refuses the non-sim resource {resource!r}; use the "
                "operating system's CSPRNG (OsRandomSource) or a hardware QRNG"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._resource = resource
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def random_bytes(self, n: int) -> bytes:
        """Returns the next ``n`` bytes of the seeded stream."""
        return self._rng.bytes(_check_count(n))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"SeededRandomSource({self._resource!r})"


# --- receivers --------------------------------------------------------------------------------

# Basis letters as written in settings tables, in basis-index order (0 = X, 1 = Z).
BASIS_NAMES = ("X", "Z")


@runtime_checkable
class Receiver(Protocol):
    """Bob's measurement choice: which (basis, bit) each detector channel stands for."""

    def basis_bit(self, channel: int) -> tuple[int, int]:
        """The (basis, bit) of a detector channel."""
        ...

    def decode(
        self, channels: NDArray[np.int32]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.bool_]]:
        """Maps tag channels to (basis, bit, known) arrays; ``known`` is False elsewhere."""
        ...


@runtime_checkable
class ActiveReceiver(Receiver, Protocol):
    """A receiver that chooses the basis with a modulator (documented only: no driver yet).

    It loads per-slot basis choices like a transmitter, and the (basis, bit) of a click then
    depends on the slot as well as the channel.
    """

    def load_bases(self, basis: NDArray[np.uint8]) -> None:
        """Loads the per-slot basis choices (key-related: never logged)."""
        ...

    def start(self) -> None:
        """Starts the basis modulation."""
        ...

    def stop(self) -> None:
        """Stops the basis modulation."""
        ...
