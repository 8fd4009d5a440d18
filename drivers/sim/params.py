"""Physical parameters of the simulated optical bench.

One frozen, slotted dataclass per part of the bench: :class:`SourceParams` (laser and intensity
modulator), :class:`FibreParams` (channel), :class:`ReceiverParams` (passive basis choice),
:class:`DetectorParams` (one single-photon detector), :class:`TaggerParams` (the time tagger),
gathered in :class:`BenchParams`. Every field carries ``metadata`` with ``doc``, ``unit`` and
``check`` (a callable returning ``None`` or the reason a value is wrong), the same shape the node
configuration uses, so a ``[bench]`` section can be declared from these classes later without
restating them. ``__post_init__`` runs every check and the cross-field rules and raises
``ValueError`` naming the field.

The defaults describe the dedicated-fibre link of Lim et al., PRA 89, 022307 (2014), Fig. 1:
detector efficiency 0.10, dark count probability 6e-7 per 1 GHz slot (600 Hz), afterpulse
probability 0.04, misalignment 0.005, 0.2 dB/km.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "BenchParams",
    "Check",
    "DetectorParams",
    "FibreParams",
    "ReceiverParams",
    "SourceParams",
    "TaggerParams",
]

# A check returns None when the value is good, else the reason in words ("must be > 0").
Check = Callable[[Any], str | None]

# Lim et al. 2014, Fig. 1 (see PHYSICS.md).
LIM_SLOT_RATE_HZ = 1e9
LIM_DARK_PROBABILITY_PER_SLOT = 6e-7
# Number of detectors of the passive BB84 receiver: X0, X1, Z0, Z1 (index = 2 * basis + bit).
N_DETECTORS = 4
# Speed of light in vacuum (m/s) and the group index of standard single-mode fibre (SMF-28 at
# 1550 nm: 1.4682) give the propagation delay, ~4.9 us per km.
SPEED_OF_LIGHT_M_PER_S = 299_792_458.0
SMF28_GROUP_INDEX = 1.4682
# A tagger's host-side buffer of 2^25 tags (512 MiB of 16-byte tags) is the order of what
# commercial taggers' drivers keep between reads.
DEFAULT_BUFFER_EVENTS = 1 << 25
# Channel numbers are stored as int16 in a TagBatch.
MAX_CHANNEL = 32_767


def _meta(doc: str, unit: str | None, check: Check | None) -> dict[str, Any]:
    return {"doc": doc, "unit": unit, "check": check}


def _finite(value: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):
        return "must be a finite number"
    return None


def _positive(value: float) -> str | None:
    return _finite(value) or (None if value > 0 else f"must be > 0, got {value!r}")


def _non_negative(value: float) -> str | None:
    return _finite(value) or (None if value >= 0 else f"must be >= 0, got {value!r}")


def _any_finite(value: float) -> str | None:
    return _finite(value)


def _probability(value: float) -> str | None:
    """[0, 1): 1 would be a certainty, which none of these physical probabilities is."""
    return _finite(value) or (None if 0 <= value < 1 else f"must be in [0, 1), got {value!r}")


def _unit_interval_open(value: float) -> str | None:
    return _finite(value) or (None if 0 < value < 1 else f"must be in (0, 1), got {value!r}")


def _efficiency(value: float) -> str | None:
    return _finite(value) or (None if 0 < value <= 1 else f"must be in (0, 1], got {value!r}")


def _misalignment(value: float) -> str | None:
    """[0, 0.5): at 0.5 the matching basis carries no information."""
    return _finite(value) or (None if 0 <= value < 0.5 else f"must be in [0, 0.5), got {value!r}")


def _channels(value: Any) -> str | None:
    if not isinstance(value, tuple) or len(value) != N_DETECTORS:
        return f"need {N_DETECTORS} channels (X0, X1, Z0, Z1), got {value!r}"
    for ch in value:
        reason = _integer(-MAX_CHANNEL, MAX_CHANNEL)(ch)
        if reason is not None:
            return reason
    if len(set(value)) != len(value):
        return f"channels must be distinct, got {value!r}"
    return None


def _detectors(value: Any) -> str | None:
    if not isinstance(value, tuple) or len(value) != N_DETECTORS or not all(
            isinstance(d, DetectorParams) for d in value):
        return f"need {N_DETECTORS} DetectorParams (X0, X1, Z0, Z1)"
    return None


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        return None if low <= value <= high else f"must be in [{low}, {high}], got {value!r}"

    return check


def _run_checks(obj: Any) -> None:
    for f in fields(obj):
        check = f.metadata.get("check")
        if check is None:
            continue
        reason = check(getattr(obj, f.name))
        if reason is not None:
            raise ValueError(f"{type(obj).__name__}.{f.name}: {reason}")


@dataclass(frozen=True, slots=True)
class SourceParams:
    """Alice's pulsed laser and the Mach-Zehnder intensity modulator that sets the decoy levels.

    The modulator's transmission is ``T(V) = T_min + (1 - T_min) sin^2(pi (V - V_null) / (2 V_pi))``
    with ``T_min = 10^(-ER/10)``: minimal (the leak of the "dark" level) at the null, 1 one
    half-wave voltage above it. The driver's drive levels are calibrated once, at the nominal
    bias ``bias_null_v``, so that class k gives ``mu_k`` (or the leak ``mu1 * T_min`` if ``mu_k``
    is below it). A bias away from the null shifts every level and lowers the contrast.
    """

    slot_rate_hz: float = field(default=LIM_SLOT_RATE_HZ, metadata=_meta(
        "pulse (slot) repetition rate of the source", "Hz", _positive))
    mu1: float = field(default=0.5, metadata=_meta(
        "mean photon number of the signal intensity (class 0)", "photons", _positive))
    mu2: float = field(default=0.1, metadata=_meta(
        "mean photon number of the first decoy (class 1)", "photons", _positive))
    mu3: float = field(default=2e-4, metadata=_meta(
        "mean photon number of the second decoy (class 2); 0 is a vacuum decoy (then the "
        "modulator's leak is what is sent)", "photons", _non_negative))
    extinction_ratio_db: float = field(default=40.0, metadata=_meta(
        "intensity modulator extinction ratio: the dark level transmits 10^(-ER/10) of the "
        "bright one", "dB", _positive))
    v_pi: float = field(default=4.0, metadata=_meta(
        "half-wave voltage of the intensity modulator", "V", _positive))
    bias_null_v: float = field(default=1.0, metadata=_meta(
        "bias voltage at which the modulator transmits least (its null) at t = 0", "V",
        _any_finite))
    bias_voltage_v: float = field(default=1.0, metadata=_meta(
        "bias voltage applied at start (the bias controller changes it with "
        "SimulatedLink.set_bias_voltage)", "V", _any_finite))
    bias_drift_v_per_s: float = field(default=0.0, metadata=_meta(
        "drift of the modulator's null voltage (what a bias controller has to track)", "V/s",
        _any_finite))

    def __post_init__(self) -> None:
        _run_checks(self)
        if not self.mu1 > self.mu2 > self.mu3:
            raise ValueError(
                f"SourceParams.mu2: need mu1 > mu2 > mu3, got {self.mu1}, {self.mu2}, {self.mu3}")

    @property
    def slot_period_ps(self) -> float:
        """Slot period in picoseconds (may be fractional, e.g. 1.5 GHz)."""
        return 1e12 / self.slot_rate_hz


@dataclass(frozen=True, slots=True)
class FibreParams:
    """The quantum channel from Alice's output to Bob's input."""

    length_km: float = field(default=50.0, metadata=_meta(
        "fibre length", "km", _non_negative))
    loss_db_per_km: float = field(default=0.2, metadata=_meta(
        "fibre attenuation", "dB/km", _non_negative))
    insertion_loss_db: float = field(default=0.0, metadata=_meta(
        "extra loss of connectors, splices and Bob's optics before the basis splitter", "dB",
        _non_negative))
    misalignment: float = field(default=0.005, metadata=_meta(
        "e_mis: probability that a photon measured in the matching basis reaches the wrong "
        "detector of the pair", None, _misalignment))
    group_index: float = field(default=SMF28_GROUP_INDEX, metadata=_meta(
        "group index of the fibre, for the propagation delay", None, _positive))

    def __post_init__(self) -> None:
        _run_checks(self)

    @property
    def transmittance(self) -> float:
        """eta_ch * insertion transmittance, 10^(-(alpha L + IL)/10)."""
        loss_db = self.loss_db_per_km * self.length_km + self.insertion_loss_db
        return math.pow(10.0, -loss_db / 10.0)

    @property
    def delay_ps(self) -> float:
        """Propagation delay of the fibre in picoseconds."""
        return self.length_km * 1e3 * self.group_index / SPEED_OF_LIGHT_M_PER_S * 1e12


@dataclass(frozen=True, slots=True)
class ReceiverParams:
    """Bob's passive basis choice: a beam splitter sends a photon to the X pair with q_x."""

    q_x: float = field(default=0.5, metadata=_meta(
        "probability that the basis splitter sends a photon to the X detectors", None,
        _unit_interval_open))

    def __post_init__(self) -> None:
        _run_checks(self)


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """One free-running single-photon detector (an InGaAs SPAD-like default)."""

    efficiency: float = field(default=0.10, metadata=_meta(
        "detection efficiency (eta_Bob of Lim et al. when the receiver optics are lossless)",
        None, _efficiency))
    dark_count_rate_hz: float = field(
        default=LIM_DARK_PROBABILITY_PER_SLOT * LIM_SLOT_RATE_HZ, metadata=_meta(
            "dark count rate: a Poisson process in continuous time", "Hz", _non_negative))
    dead_time_ps: int = field(default=50_000, metadata=_meta(
        "non-paralysable dead time after each click", "ps", _integer(0, 10**13)))
    afterpulse_probability: float = field(default=0.04, metadata=_meta(
        "probability that a click (an afterpulse included) is followed by an afterpulse",
        None, _probability))
    afterpulse_tau_ps: float = field(default=200_000.0, metadata=_meta(
        "time constant of the exponential afterpulse delay, counted from the end of the dead "
        "time", "ps", _positive))
    jitter_fwhm_ps: float = field(default=100.0, metadata=_meta(
        "FWHM of the detector's Gaussian timing jitter (sigma = FWHM / 2.355)", "ps",
        _non_negative))
    latency_ps: float = field(default=0.0, metadata=_meta(
        "fixed delay from photon arrival to the tag (cables, electronics)", "ps",
        _non_negative))

    def __post_init__(self) -> None:
        _run_checks(self)

    @property
    def jitter_sigma_ps(self) -> float:
        """Standard deviation of the Gaussian jitter: FWHM / (2 sqrt(2 ln 2))."""
        return self.jitter_fwhm_ps / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _default_detectors() -> tuple[DetectorParams, ...]:
    return tuple(DetectorParams() for _ in range(N_DETECTORS))


@dataclass(frozen=True, slots=True)
class TaggerParams:
    """Bob's time tagger and its clock, relative to Alice's time axis.

    ``t_bob = t_alice * (1 + drift_ppm * 1e-6) + offset_ps``, then the tagger's own jitter, then
    quantisation to ``resolution_ps`` (floor to a bin edge).
    """

    resolution_ps: int = field(default=1, metadata=_meta(
        "timestamp bin: tags are multiples of it", "ps", _integer(1, 10**9)))
    jitter_rms_ps: float = field(default=8.0, metadata=_meta(
        "the tagger's own RMS timing jitter (Gaussian), added in quadrature", "ps",
        _non_negative))
    channels: tuple[int, ...] = field(default=(1, 2, 3, 4), metadata=_meta(
        "tagger channel of detectors X0, X1, Z0, Z1", None, _channels))
    sync_channel: int = field(default=0, metadata=_meta(
        "tagger channel of the sync signal", None, _integer(-MAX_CHANNEL, MAX_CHANNEL)))
    sync_every_slots: int = field(default=0, metadata=_meta(
        "a sync tag every K slots (0: no sync channel)", "slots", _integer(0, 10**15)))
    sync_delay_ps: float = field(default=0.0, metadata=_meta(
        "delay of the sync signal from Alice's slot start to the tagger input", "ps",
        _any_finite))
    marker_channel: int = field(default=0, metadata=_meta(
        "tagger channel the frame streamer's marker output is cabled to (its pulses come only "
        "while a streamer's marker is on)", None,
        _integer(-MAX_CHANNEL, MAX_CHANNEL)))
    marker_delay_ps: float = field(default=20_000.0, metadata=_meta(
        "delay of the marker pulse from its block's first slot to the tagger input (cable "
        "and electronics; 4 m of coax is 20 ns)", "ps", _any_finite))
    offset_ps: int = field(default=0, metadata=_meta(
        "offset of Bob's clock from Alice's", "ps", _integer(-(10**15), 10**15)))
    drift_ppm: float = field(default=0.0, metadata=_meta(
        "relative rate error of Bob's clock (t_bob = t_alice (1 + drift) + offset)", "ppm",
        lambda v: _finite(v) or (None if abs(v) < 1e3 else f"must be in (-1000, 1000), got {v}")))
    buffer_events: int = field(default=DEFAULT_BUFFER_EVENTS, metadata=_meta(
        "tags the tagger holds between reads; more are dropped and counted as lost", "events",
        _integer(1, 1 << 40)))

    def __post_init__(self) -> None:
        _run_checks(self)
        if self.sync_every_slots and self.sync_channel in self.channels:
            raise ValueError(f"TaggerParams.sync_channel: {self.sync_channel} is also a "
                             f"detector channel ({self.channels!r})")


@dataclass(frozen=True, slots=True)
class BenchParams:
    """Every physical parameter of the simulated bench."""

    source: SourceParams = field(default_factory=SourceParams, metadata=_meta(
        "laser and intensity modulator", None, None))
    fibre: FibreParams = field(default_factory=FibreParams, metadata=_meta(
        "quantum channel", None, None))
    receiver: ReceiverParams = field(default_factory=ReceiverParams, metadata=_meta(
        "passive basis choice", None, None))
    detectors: tuple[DetectorParams, ...] = field(
        default_factory=_default_detectors,
        metadata=_meta("the four detectors X0, X1, Z0, Z1", None, _detectors))
    tagger: TaggerParams = field(default_factory=TaggerParams, metadata=_meta(
        "time tagger and Bob's clock", None, None))

    def __post_init__(self) -> None:
        for name, cls in (("source", SourceParams), ("fibre", FibreParams),
                          ("receiver", ReceiverParams), ("tagger", TaggerParams)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"BenchParams.{name}: must be a {cls.__name__}")
        _run_checks(self)
