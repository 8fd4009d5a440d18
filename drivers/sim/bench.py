"""A named simulated bench: one :class:`SimulatedLink` and the state of its instruments.

The simulated instruments (:mod:`qkdnode.drivers.sim.devices`) act on the bench, and the bench
turns their settings into the link's physics:

* attenuators (a SCPI VOA, the MBX's built-in VOA) scale every mean photon number by their
  attenuation *relative to their power-on setting* (the configured ``mu`` values are what leaves
  Alice with every attenuator as it powers on); a closed shutter attenuates by
  :data:`SHUTTER_ATTENUATION_DB`;
* detector controllers set the detectors' efficiency (through the APD bias), dark count rate
  and dead time;
* the bias controller sets the modulator's bias voltage (and tracks its drifting null in the
  lock modes, see :meth:`Bench.set_bias_lock`);
* the AWG loads the frame it decodes from its waveforms (:meth:`Bench.load_frame`);
* a frame streamer (:meth:`Bench.attach_streamer`) loads the frame of each block exactly at
  its first slot, and its marker output is cabled to the tagger's ``marker_channel``: see
  "Streaming" below.

Readings come back from the same physics: a detector's count rate (:meth:`Bench.count_rate_hz`),
the optical power at Alice's output (:meth:`Bench.optical_power_w`), the modulator's
transmission (:meth:`Bench.modulator_transmission`).

Streaming: the bench's time is virtual, it advances only when a tagger reads. With a frame
streamer attached, a read never runs past the first slot of a block whose frame the streamer
does not have (or while its output is off): it returns the tags up to that boundary, after
waiting up to :attr:`Bench.boundary_wait_s` for the frame. So a slow transmitter holds the
simulated link back instead of running dry: the simulator's choice, in place of hardware's
real-time underruns. A run of the streamer (``OUTP ON``) begins at the next slot that is a
multiple of ``L`` (the link's frame positions); its first block is the streamer's
``first_block``, and block ``first + k`` begins ``k L`` slots later. While the streamer's
marker is on, a block's first slot puts a marker tag on the tagger's ``marker_channel``,
``marker_delay_ps`` later on Alice's axis (no jitter: a sharp electrical edge), delivered in
time order with the other tags. To test underruns, :attr:`Bench.underrun_after_s` makes
the bench give up on a
missing frame after that long: the streamer then plays the block as vacuum (light blocked by
:data:`SHUTTER_ATTENUATION_DB`) and reports the underrun, as hardware would.

Benches are found by name in an in-process registry (:func:`create_bench`, :func:`get_bench`);
an entry may also be a client of a bench hosted by another process
(:mod:`qkdnode.drivers.sim.service`). Everything the instruments do goes through
:attr:`Bench.lock`, so instruments of one bench may be driven from several threads.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from . import optics
from .link import Origin, SimulatedLink, TagBatch, TagTruth
from .params import N_DETECTORS, BenchParams, DetectorParams

if TYPE_CHECKING:
    from collections.abc import Callable

    from .devices.base import MessageDevice

__all__ = [
    "DETECTOR_NAMES",
    "PHOTON_ENERGY_J",
    "SHUTTER_ATTENUATION_DB",
    "Bench",
    "BenchHandle",
    "DeviceHandle",
    "create_bench",
    "get_bench",
    "register_bench",
    "remove_bench",
]

# Energy of a 1550 nm photon, h c / lambda (the source of the default link is a C-band laser).
LASER_WAVELENGTH_NM = 1550.0
PHOTON_ENERGY_J = 6.62607015e-34 * 299_792_458.0 / (LASER_WAVELENGTH_NM * 1e-9)
# A closed shutter or blocked VOA output: benchtop attenuators block by 60-100 dB; the link
# needs a positive mean photon number, and 1e-10 of the signal reaches nothing measurable.
SHUTTER_ATTENUATION_DB = 100.0
# How long one tagger read waits at a block boundary for the streamer's frame before it returns
# the tags up to the boundary: long enough that a waiting reader does not spin, short enough
# that a stopping reader is not held.
BOUNDARY_WAIT_S = 0.5
# Detector names in the order of BenchParams.detectors.
DETECTOR_NAMES = ("X0", "X1", "Z0", "Z1")
# The link needs an efficiency > 0: a detector biased below breakdown is given this instead
# (it then counts nothing measurable).
OFF_EFFICIENCY = 1e-12


class DeviceHandle(Protocol):
    """A simulated instrument as its transports see it: bytes in, bytes out."""

    @property
    def kind(self) -> str:
        """``"visa"`` or ``"serial"``: the transport the real instrument uses."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Takes bytes written by the host; returns the instrument's replies."""
        ...

    def clear(self) -> None:
        """A device clear (partial input dropped)."""
        ...


class StreamingSource(Protocol):
    """What a frame streamer offers the bench (called under :attr:`Bench.lock`)."""

    name: str

    def streaming_slots(self) -> int | None:
        """The frame length while the output plays, else None."""
        ...

    def take_frame(self, block: int) -> tuple[NDArray[np.uint8], ...] | None:
        """The frame of ``block`` if queued (it begins now), else None."""
        ...

    def played_vacuum(self, block: int) -> None:
        """``block`` begins without a frame: an underrun."""
        ...

    def first_block(self) -> int:
        """The block that plays first in a run."""
        ...

    def marker_fires(self, block: int) -> bool:
        """Whether the marker output fires at ``block``'s first slot."""
        ...


class BenchHandle(Protocol):
    """A bench in this process or a client of one hosted elsewhere."""

    name: str

    def device(self, instrument: str, driver: str | None = None) -> DeviceHandle:
        """The simulated instrument ``instrument``, created for ``driver`` if new."""
        ...

    def declare(self, instrument: str, driver: str) -> None:
        """Says which driver's instrument ``instrument`` is."""
        ...


class Bench:
    """A simulated optical bench: the link and its instruments' state.

    Args:
        name: the bench name of ``sim://NAME/INSTRUMENT`` URLs.
        params: the configured physics.
        seed: seeds the link and the instruments' own noise; the same seed, parameters and
            sequence of commands give the same results.
    """

    def __init__(self, name: str, params: BenchParams | None = None, seed: int = 0) -> None:
        if not name or "/" in name:
            raise ValueError(f"bench name must be non-empty without '/', got {name!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.name = name
        self.seed = seed
        self.configured = params if params is not None else BenchParams()
        link_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
        self.link = SimulatedLink(self.configured, seed=link_seed)
        self.rng = np.random.default_rng(noise_seed)
        self.lock = threading.RLock()
        self._attenuation_db: dict[str, float] = {}
        self._detectors = list(self.configured.detectors)
        self._drivers: dict[str, str] = {}
        self._devices: dict[str, MessageDevice] = {}
        self._bias_lock: Callable[[float], float] | None = None
        self._changed = threading.Condition(self.lock)
        self._streamer: StreamingSource | None = None
        self._boundary_since: tuple[int, float] | None = None
        # The streamer's run: (its first slot, its first block); None while the output is off.
        self._run_origin: tuple[int, int] | None = None
        # Marker tags not delivered yet: (Bob's time, channel, slot).
        self._markers: list[tuple[int, int, int]] = []
        self.boundary_wait_s = BOUNDARY_WAIT_S
        self.underrun_after_s: float | None = None

    def __repr__(self) -> str:
        return f"<Bench {self.name!r} seed={self.seed} instruments={sorted(self._drivers)}>"

    # -- instruments ----------------------------------------------------------------------------

    def declare(self, instrument: str, driver: str) -> None:
        """Says which driver's instrument ``instrument`` is (the node configuration does)."""
        from .devices import EMULATORS

        if driver not in EMULATORS:
            raise ValueError(
                f"bench {self.name!r}: no simulated instrument for driver {driver!r} "
                f"(simulated: {', '.join(sorted(EMULATORS))})")
        with self.lock:
            known = self._drivers.get(instrument)
            if known is not None and known != driver:
                raise ValueError(
                    f"bench {self.name!r}: instrument {instrument!r} is a {known}, "
                    f"not a {driver}")
            self._drivers[instrument] = driver

    def device(self, instrument: str, driver: str | None = None) -> MessageDevice:
        """The simulated instrument, created at its power-on state on first use.

        Raises:
            ValueError: an instrument the bench does not know without a driver, a driver with
                no emulator, or a driver other than the one the instrument was declared with.
        """
        from .devices import EMULATORS

        with self.lock:
            if driver is not None:
                self.declare(instrument, driver)
            existing = self._devices.get(instrument)
            if existing is not None:
                return existing
            known = self._drivers.get(instrument)
            if known is None:
                names = ", ".join(sorted(self._drivers)) or "none"
                raise ValueError(
                    f"bench {self.name!r} has no instrument {instrument!r} (instruments: "
                    f"{names}); open it through its driver or declare it in the configuration")
            device = EMULATORS[known](self, instrument)
            self._devices[instrument] = device
            return device

    def instruments(self) -> dict[str, str]:
        """Instrument name -> driver, for every declared instrument."""
        with self.lock:
            return dict(self._drivers)

    # -- settings that act on the physics -------------------------------------------------------

    def set_attenuation(self, owner: str, extra_db: float | None) -> None:
        """Sets the attenuation an attenuator adds to its power-on value, dB (None: blocked)."""
        with self.lock:
            if extra_db is None:
                extra_db = SHUTTER_ATTENUATION_DB
            if not math.isfinite(extra_db):
                raise ValueError(f"attenuation must be finite, got {extra_db!r}")
            self._attenuation_db[owner] = float(extra_db)
            self._apply()

    def attenuation_db(self) -> float:
        """Total attenuation the attenuators add to the configured source, dB."""
        with self.lock:
            return sum(self._attenuation_db.values())

    def set_detector(self, index: int, *, efficiency: float | None = None,
                     dark_count_rate_hz: float | None = None,
                     dead_time_ps: int | None = None) -> None:
        """Changes one detector's parameters (what a detector controller's settings do)."""
        with self.lock:
            d = self._detectors[index]
            changes: dict[str, float | int] = {}
            if efficiency is not None:
                changes["efficiency"] = max(OFF_EFFICIENCY, min(1.0, efficiency))
            if dark_count_rate_hz is not None:
                changes["dark_count_rate_hz"] = dark_count_rate_hz
            if dead_time_ps is not None:
                changes["dead_time_ps"] = int(dead_time_ps)
            self._detectors[index] = dataclasses.replace(d, **changes)  # type: ignore[arg-type]
            self._apply()

    def detector(self, index: int) -> DetectorParams:
        """One detector's parameters now."""
        with self.lock:
            return self._detectors[index]

    def _apply(self) -> None:
        src = self.configured.source
        scale = math.pow(10.0, -self.attenuation_db() / 10.0)
        source = dataclasses.replace(src, mu1=src.mu1 * scale, mu2=src.mu2 * scale,
                                     mu3=src.mu3 * scale)
        self.link.set_params(dataclasses.replace(
            self.link.params, source=source, detectors=tuple(self._detectors)))

    def set_bias_voltage(self, volts: float) -> None:
        """Applies a bias voltage to the intensity modulator (ends any lock)."""
        with self.lock:
            self._bias_lock = None
            self.link.set_bias_voltage(volts)

    def set_bias_lock(self, target: Callable[[float], float] | None) -> None:
        """Holds the bias at ``target(null voltage)``, re-evaluated as the null drifts.

        The lock is re-applied before every :meth:`run` and whenever the bias controller is
        asked; None releases it (the bias stays where it is).
        """
        with self.lock:
            self._bias_lock = target
            self.refresh_bias()

    def refresh_bias(self) -> float:
        """Re-applies the bias lock at the current null; returns the bias applied."""
        with self.lock:
            if self._bias_lock is not None:
                self.link.set_bias_voltage(self._bias_lock(self.link.bias_null_voltage()))
            return self.link.bias_voltage

    def load_frame(self, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        """Loads what the transmitter plays into the link (see SimulatedLink.load_frame)."""
        with self.lock:
            self.link.load_frame(basis, bit, intensity)

    @property
    def frame_loaded(self) -> bool:
        """Whether a frame was loaded (else the modulators are undriven)."""
        with self.lock:
            try:
                self.link.frame  # noqa: B018 (raises when none is loaded)
            except RuntimeError:
                return False
            return True

    # -- the stream -----------------------------------------------------------------------------

    def run(self, n_slots: int | None = None, *, duration_ps: int | None = None) -> TagBatch:
        """The next tags, with the bias lock applied first (see SimulatedLink.run).

        With a frame streamer attached, the run stops at a block boundary whose frame is
        missing (module docstring "Streaming").

        Raises:
            RuntimeError: no frame was loaded yet (the transmitter has played nothing).
        """
        return self.run_with_truth(n_slots, duration_ps=duration_ps)[0]

    def run_with_truth(self, n_slots: int | None = None, *, duration_ps: int | None = None
                       ) -> tuple[TagBatch, TagTruth]:
        """Like :meth:`run`, with the ground truth (tests only)."""
        with self.lock:
            if self._streamer is not None:
                return self._run_streamed(self.link.slots_in(n_slots, duration_ps))
            self._check_frame()
            self.refresh_bias()
            return self.link.run_with_truth(n_slots, duration_ps=duration_ps)

    # -- streaming ------------------------------------------------------------------------------

    def attach_streamer(self, streamer: StreamingSource) -> None:
        """Makes ``streamer`` the source of the frames, one per block (module docstring).

        Raises:
            ValueError: another streamer is attached.
        """
        with self.lock:
            if self._streamer is not None and self._streamer is not streamer:
                raise ValueError(f"bench {self.name!r} has a frame streamer already "
                                 f"({self._streamer.name!r})")
            self._streamer = streamer

    @property
    def streaming(self) -> bool:
        """Whether a frame streamer feeds the bench (reads then wait for its frames)."""
        return self._streamer is not None

    def output_switched(self, on: bool) -> None:
        """The streamer's output went on (a run begins at the next frame boundary of the
        link) or off (the run ends)."""
        with self.lock:
            streamer = self._streamer
            slots = None if streamer is None else streamer.streaming_slots()
            if not on or streamer is None or slots is None:
                self._run_origin = None
                return
            slot = self.link.slot
            aligned = -(-slot // slots) * slots
            if aligned != slot:
                self.link.skip_to(aligned)
            self._run_origin = (aligned, streamer.first_block())
            self._changed.notify_all()

    def frames_changed(self) -> None:
        """Wakes reads waiting for a frame (the streamer queued one, or switched on)."""
        with self.lock:
            self._changed.notify_all()

    def _run_streamed(self, n_slots: int) -> tuple[TagBatch, TagTruth]:
        streamer = self._streamer
        assert streamer is not None
        waiting_since: float | None = None  # when this read began waiting at a boundary
        parts: list[tuple[TagBatch, TagTruth]] = []
        left = n_slots
        while left > 0:
            frame_slots = streamer.streaming_slots()
            if frame_slots is not None and self._run_origin is None:
                self.output_switched(True)  # a streamer that did not say (tests)
            slot = self.link.slot
            if frame_slots is not None and self._run_origin is not None:
                first_slot, first_block = self._run_origin
                rel = slot - first_slot
                if rel % frame_slots == 0 and not self._begin(
                        streamer, first_block + rel // frame_slots):
                    frame_slots = None
            if frame_slots is None:  # no frame (or output off): wait, boundedly
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = now
                waited = now - waiting_since
                if waited >= self.boundary_wait_s:
                    break
                self._changed.wait(self._wait_s(self.boundary_wait_s - waited))
                continue
            waiting_since = None
            step = min(left, frame_slots - slot % frame_slots)
            self.refresh_bias()
            parts.append(self.link.run_with_truth(step))
            left -= step
        return self._with_markers(*self._joined(parts))

    def _begin(self, streamer: StreamingSource, block: int) -> bool:
        """Begins ``block`` at its first slot: its frame, or vacuum after underrun_after_s;
        False while it waits for the frame."""
        frame = streamer.take_frame(block)
        owner = f"{streamer.name}:underrun"
        if frame is None:
            now = time.monotonic()
            if self._boundary_since is None or self._boundary_since[0] != block:
                self._boundary_since = (block, now)
            if self.underrun_after_s is None or now - self._boundary_since[1] < (
                    self.underrun_after_s):
                return False
            streamer.played_vacuum(block)
            n = streamer.streaming_slots() or 2
            zeros = np.zeros(n, dtype=np.uint8)
            self.link.load_frame(zeros, zeros, np.full(n, 2, dtype=np.uint8))
            self.set_attenuation(owner, None)
        else:
            self.link.load_frame(*frame)
            if self._attenuation_db.get(owner):
                self.set_attenuation(owner, 0.0)
        self._boundary_since = None
        if streamer.marker_fires(block):
            tg = self.link.params.tagger
            slot = self.link.slot
            self._markers.append((self.link.tagger_time_ps(slot, tg.marker_delay_ps),
                                  tg.marker_channel, slot))
        return True

    def _with_markers(self, batch: TagBatch, truth: TagTruth) -> tuple[TagBatch, TagTruth]:
        """Adds the marker tags due before the batch's ``complete_until_ps`` (time order)."""
        due = [m for m in self._markers if m[0] < batch.complete_until_ps]
        if not due:
            return batch, truth
        self._markers = [m for m in self._markers if m[0] >= batch.complete_until_ps]
        times = batch.timestamps_ps
        for t, channel, slot in due:
            at = int(np.searchsorted(times, t, side="right"))
            times = np.insert(times, at, t)
            batch = TagBatch(times, np.insert(batch.channels, at, np.int16(channel)),
                             batch.lost_events, batch.complete_until_ps)
            truth = TagTruth(np.insert(truth.slots, at, slot),
                             np.insert(truth.origins, at, np.uint8(Origin.MARKER)),
                             np.insert(truth.detectors, at, np.int8(-1)), truth.lost_slots,
                             truth.lost_origins, truth.first_slot, truth.n_slots)
        return batch, truth

    def _wait_s(self, left: float) -> float:
        if self.underrun_after_s is not None and self._boundary_since is not None:
            due = self._boundary_since[1] + self.underrun_after_s - time.monotonic()
            return max(1e-3, min(left, due))
        return left

    def _joined(self, parts: list[tuple[TagBatch, TagTruth]]) -> tuple[TagBatch, TagTruth]:
        if not parts:
            if self.frame_loaded:
                return self.link.run_with_truth(0)
            empty64 = np.zeros(0, np.int64)
            return (TagBatch(empty64, np.zeros(0, np.int16), 0, 0),
                    TagTruth(empty64, np.zeros(0, np.uint8), np.zeros(0, np.int8), empty64,
                             np.zeros(0, np.uint8), self.link.slot, 0))
        if len(parts) == 1:
            return parts[0]
        batches = [b for b, _ in parts]
        truths = [t for _, t in parts]
        batch = TagBatch(np.concatenate([b.timestamps_ps for b in batches]),
                         np.concatenate([b.channels for b in batches]),
                         sum(b.lost_events for b in batches), batches[-1].complete_until_ps)
        truth = TagTruth(np.concatenate([t.slots for t in truths]),
                         np.concatenate([t.origins for t in truths]),
                         np.concatenate([t.detectors for t in truths]),
                         np.concatenate([t.lost_slots for t in truths]),
                         np.concatenate([t.lost_origins for t in truths]),
                         truths[0].first_slot, sum(t.n_slots for t in truths))
        return batch, truth

    def _check_frame(self) -> None:
        if not self.frame_loaded:
            raise RuntimeError(
                f"bench {self.name!r}: no frame loaded yet; the transmitter (its AWG, or "
                "Bench.load_frame) must play one before tags can be simulated")

    # -- readings -------------------------------------------------------------------------------

    def modulator_transmission(self) -> float:
        """The intensity modulator's transmission at the current bias, without drive."""
        with self.lock:
            self.refresh_bias()
            src = self.link.params.source
            return optics.transmission(src, self.link.bias_voltage, self.link.bias_null_voltage())

    def photons_per_slot(self) -> float:
        """Mean photon number per slot leaving Alice (frame average; undriven: the leak)."""
        with self.lock:
            self.refresh_bias()
            if not self.frame_loaded:
                return self.link.params.source.mu1 * self.modulator_transmission()
            mu = self.link.mean_photon_numbers()
            classes = self.link.frame[2]
            counts = np.bincount(classes, minlength=mu.shape[0])
            return float(counts @ mu) / int(classes.shape[0])

    def optical_power_w(self) -> float:
        """Average optical power at Alice's output (after the attenuators), W."""
        with self.lock:
            rate = self.link.params.source.slot_rate_hz
            return self.photons_per_slot() * rate * PHOTON_ENERGY_J

    def click_probability(self, index: int) -> float:
        """Photon click probability per slot of one detector, averaged over the frame.

        Undriven modulators send the leak ``mu1 T(V_bias)`` in the state of DAC code 0 (X0).
        """
        with self.lock:
            self.refresh_bias()
            if self.frame_loaded:
                return float(self.link.click_probabilities()[index].mean())
            params = self.link.params
            mu = params.source.mu1 * self.modulator_transmission()
            e = self.link.wrong_detector_probability()
            q = (params.receiver.q_x, 1.0 - params.receiver.q_x)
            c, d = divmod(index, 2)
            route = q[c] * ((1.0 - e) if d == 0 else e) if c == 0 else q[c] * 0.5
            eta = params.fibre.transmittance * params.detectors[index].efficiency
            return -math.expm1(-mu * eta * route)

    def count_rate_hz(self, index: int) -> float:
        """Expected click rate of one detector, Hz.

        Photon clicks (slot rate x click probability) and dark counts arrive at rate ``r``;
        a non-paralysable dead time ``tau`` and afterpulses (each click is followed by one
        with probability ``p``, after the dead time) give ``C = r / (1 - p + r tau)``: the
        live fraction is ``1 - C tau`` and afterpulses add ``p C``.
        """
        with self.lock:
            d = self.link.params.detectors[index]
            rate = self.link.params.source.slot_rate_hz
            r = rate * self.click_probability(index) + d.dark_count_rate_hz
            tau = d.dead_time_ps * 1e-12
            return r / (1.0 - d.afterpulse_probability + r * tau)

    def counts(self, indices: tuple[int, ...], window_s: float) -> int:
        """Clicks of the given detectors in one counter window (Poisson about the mean)."""
        with self.lock:
            mean = sum(self.count_rate_hz(j) for j in indices) * window_s
            return int(self.rng.poisson(mean))


def detector_indices(instrument: str) -> tuple[int, ...]:
    """Which detectors a detector controller named ``instrument`` drives.

    A name ending in a detector's name (``spd-z1``, ``det_X0``) drives that detector; any other
    name drives all four (a four-channel controller, counting their sum).
    """
    lowered = instrument.lower()
    for i, name in enumerate(DETECTOR_NAMES):
        if lowered.endswith(name.lower()) and (
                len(lowered) == 2 or not lowered[-3].isalnum()):
            return (i,)
    return tuple(range(N_DETECTORS))


# -- the in-process registry ---------------------------------------------------------------------

_REGISTRY: dict[str, BenchHandle] = {}
_REGISTRY_LOCK = threading.Lock()


def register_bench(bench: BenchHandle, *, replace: bool = False) -> None:
    """Makes ``sim://NAME/...`` URLs reach ``bench`` (a Bench or a service client)."""
    with _REGISTRY_LOCK:
        if bench.name in _REGISTRY and not replace:
            raise ValueError(f"a bench named {bench.name!r} exists (pass replace=True)")
        _REGISTRY[bench.name] = bench


def create_bench(name: str, params: BenchParams | None = None, seed: int = 0, *,
                 replace: bool = False) -> Bench:
    """Creates a bench and registers it under ``name``."""
    bench = Bench(name, params, seed)
    register_bench(bench, replace=replace)
    return bench


def get_bench(name: str) -> BenchHandle:
    """The registered bench ``name``.

    Raises:
        ValueError: naming the benches there are.
    """
    with _REGISTRY_LOCK:
        bench = _REGISTRY.get(name)
        if bench is None:
            names = ", ".join(sorted(_REGISTRY)) or "none"
            raise ValueError(
                f"no simulated bench named {name!r} (benches: {names}); the node "
                "configuration's [bench] section creates one")
        return bench


def remove_bench(name: str) -> None:
    """Forgets a bench (instruments already open keep it)."""
    with _REGISTRY_LOCK:
        bench = _REGISTRY.pop(name, None)
    close = getattr(bench, "close", None)
    if close is not None:
        close()
