"""The simulated decoy-state BB84 link: Alice's loaded frame in, Bob's time tags out.

:class:`SimulatedLink` is the physics engine the simulated instruments sit on. It draws only
events, never empty slots:

1. photon clicks: candidate slots at geometric gaps with the largest probability that any
   detector clicks in a slot of the loaded frame, each kept with the ratio of its own slot's
   probability, then which detectors click given that one does
   (:func:`~qkdnode.drivers.sim.kernels.photon_clicks`);
2. their times: emission time + fibre delay + detector latency + Gaussian jitter (the
   detector's and the tagger's, in quadrature);
3. dark counts: a Poisson process in continuous time, per detector;
4. per detector, in time order: non-paralysable dead time and afterpulse cascades
   (:func:`~qkdnode.drivers.sim.kernels.dead_time_scan`);
5. the sync channel (a tag every K slots, with the tagger's jitter), Bob's clock (offset,
   drift) and quantisation (:func:`~qkdnode.drivers.sim.kernels.tagger_times`), time order;
6. the tagger's buffer: tags beyond ``buffer_events`` in one call are dropped and counted.

Calls continue the stream: a batch delivers every tag earlier than its
``complete_until_ps`` and keeps later ones (and the detectors' dead time and pending
afterpulses) for the next call, so tags come in time order across calls and batch boundaries
leave no trace in the statistics.

Time: Alice's axis starts at slot 0 at 0 ps; slot s is emitted at ``s * T``; frame position of
slot s is ``s mod L`` (an AWG repeating the loaded pattern). Bob's clock reads
``t * (1 + drift) + offset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import kernels, optics, prng
from .params import N_DETECTORS, BenchParams

__all__ = ["Origin", "SimulatedLink", "TagBatch", "TagTruth"]

# Gaussian jitters are truncated at this many sigma (the cut-off mass, 1.2e-15, is invisible
# in any run), which bounds how far an event can move and lets a batch finalise every event
# earlier than the next batch's earliest possible one.
JITTER_CLIP_SIGMA = 8.0
# Margin (ps) on top of the clipped jitter at batch cuts, for float rounding of the times.
CUT_MARGIN_PS = 1.0
# Photon clicks per detector and kernel call at most: bounds the memory of one call
# (4 detectors x 16 bytes x 2^22 = 256 MiB); larger calls take several.
CLICK_CHUNK = 1 << 22
# Work arrays grow to at least this factor of their previous size (or to what is needed).
WORK_GROWTH = 1.25
# Slot periods are kept as exact fractions of a picosecond with at most this denominator
# (1.5 GHz -> 2000/3 ps exactly); origins of batches are then exact integers.
PERIOD_MAX_DENOMINATOR = 1_000_000


class Origin(IntEnum):
    """What caused a tag (ground truth only)."""

    PHOTON = 0
    DARK = 1
    AFTERPULSE = 2
    SYNC = 3
    MARKER = 4


@dataclass(frozen=True, slots=True)
class TagBatch:
    """What the time tagger delivers for one read: tags in time order on Bob's clock.

    Attributes:
        timestamps_ps: tag times (int64 ps, multiples of the tagger resolution, non-decreasing).
        channels: tagger channel of each tag (int16).
        lost_events: tags dropped because the buffer was full (0 when none were).
        complete_until_ps: every tag before this time (Bob's clock) has been delivered or
            counted as lost; later tags come in later batches.
    """

    timestamps_ps: NDArray[np.int64]
    channels: NDArray[np.int16]
    lost_events: int
    complete_until_ps: int

    @property
    def overflow(self) -> bool:
        """True when tags were dropped (``lost_events > 0``)."""
        return self.lost_events > 0

    def __len__(self) -> int:
        return int(self.timestamps_ps.shape[0])


@dataclass(frozen=True, slots=True)
class TagTruth:
    """Ground truth of a :class:`TagBatch`, for tests only (the node never sees it).

    Arrays are aligned with the delivered tags; the ``lost_*`` arrays describe dropped tags.

    Attributes:
        slots: emission slot of photon clicks and sync tags; -1 for dark counts, afterpulses.
        origins: :class:`Origin` codes (uint8).
        detectors: detector index 0..3 (X0, X1, Z0, Z1); -1 for sync tags.
        lost_slots: ``slots`` of the dropped tags.
        lost_origins: ``origins`` of the dropped tags.
        first_slot: first slot simulated in this call.
        n_slots: slots simulated in this call.
    """

    slots: NDArray[np.int64]
    origins: NDArray[np.uint8]
    detectors: NDArray[np.int8]
    lost_slots: NDArray[np.int64]
    lost_origins: NDArray[np.uint8]
    first_slot: int
    n_slots: int


@dataclass(slots=True)
class _DetectorState:
    """What a detector carries across batches (times relative to the current origin)."""

    last_click: float
    pending: NDArray[np.float64]
    carry_t: NDArray[np.float64]
    carry_kind: NDArray[np.uint8]
    carry_slot: NDArray[np.int64]


def _empty_state() -> _DetectorState:
    return _DetectorState(-math.inf, np.empty(0, np.float64), np.empty(0, np.float64),
                          np.empty(0, np.uint8), np.empty(0, np.int64))


class SimulatedLink:
    """A seeded event-level simulation of a decoy-state BB84 link and Bob's time tagger.

    Args:
        params: every physical parameter.
        seed: seed of the ``numpy.random.Generator``; the same seed, parameters, frames and
            sequence of calls give the same tags.

    Usage::

        link = SimulatedLink(BenchParams(), seed=1)
        link.load_frame(basis, bit, intensity)       # uint8 arrays: what the AWG plays
        tags = link.run(n_slots=10**8)               # 0.1 s at 1 GHz
        tags, truth = link.run_with_truth(duration_ps=10**11)   # truth: tests only

    One link is one bench: not thread-safe (the simulated instruments share it under a lock);
    the kernels release the GIL.
    """

    def __init__(self, params: BenchParams, seed: int | np.random.SeedSequence) -> None:
        if not isinstance(params, BenchParams):
            raise TypeError(f"params must be BenchParams, got {type(params).__name__}")
        self._rng = np.random.default_rng(seed)
        self._state = prng.new_state(self._rng)
        self._zig = prng.ziggurat_tables()
        # Photon-click buffers and the other per-call work arrays, reused across calls: fresh
        # memory costs more than filling it (page faults, zeroing, and on a virtual machine
        # the host's faults: up to half a call's CPU time, measured). Sized by the largest
        # call so far (clicks: at most CLICK_CHUNK per detector); only the delivered arrays
        # are new per call.
        self._click_s = np.empty((N_DETECTORS, 0), dtype=np.int64)
        self._click_t = np.empty((N_DETECTORS, 0), dtype=np.float64)
        self._work: dict[str, NDArray[np.generic]] = {}
        self._params = params
        self._set_constants(params)
        self._bias = params.source.bias_voltage_v
        self._slot = 0
        self._origin = 0
        self._frame: tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]] | None = None
        self._types = np.zeros(1, dtype=np.uint8)
        self._present = self._types
        self._type_counts = np.zeros(optics.N_TYPES, dtype=np.float64)
        self._sync_next = 0
        self._det = [_empty_state() for _ in range(N_DETECTORS)]
        self._held_t = np.empty(0, np.int64)
        self._held_slot = np.empty(0, np.int64)
        self._held_origin = np.empty(0, np.uint8)
        self._held_det = np.empty(0, np.int8)

    # -- configuration ----------------------------------------------------------------------

    def _set_constants(self, params: BenchParams) -> None:
        period = Fraction(10**12) / Fraction(params.source.slot_rate_hz)
        self._period = period.limit_denominator(PERIOD_MAX_DENOMINATOR)
        self._period_f = float(self._period)
        fibre_delay = params.fibre.delay_ps
        self._delays = [fibre_delay + d.latency_ps for d in params.detectors]
        # The tagger's own jitter is independent and Gaussian: it is folded into each
        # detector's (one normal per click instead of two). It then acts before the dead time
        # rather than after, which only a tagger jitter comparable to the dead time could show.
        tagger_rms = params.tagger.jitter_rms_ps
        self._sigmas = [math.hypot(d.jitter_sigma_ps, tagger_rms) for d in params.detectors]
        # Events of detector j earlier than s1 * T + delay_j - guard_j are final once slots up
        # to s1 are simulated; the common cut is the earliest of them.
        self._cut_offset = min(
            dl - (JITTER_CLIP_SIGMA * sg + CUT_MARGIN_PS)
            for dl, sg in zip(self._delays, self._sigmas, strict=True))
        # Channel of detector index d at position d + 1; the sync channel (d = -1) at 0.
        self._channel_map = np.array([params.tagger.sync_channel, *params.tagger.channels],
                                     dtype=np.int16)

    @property
    def params(self) -> BenchParams:
        """The current parameters."""
        return self._params

    def set_params(self, params: BenchParams) -> None:
        """Changes parameters from the next call on (an attenuator, a detector setting...).

        The stream continues: the dead time and pending afterpulses carry over. The bias
        voltage stays what :meth:`set_bias_voltage` last set. Shortening the fibre or a
        detector latency moves later clicks earlier than tags already delivered: the tags
        after such a change are in order among themselves, not with the previous batch.
        """
        if not isinstance(params, BenchParams):
            raise TypeError(f"params must be BenchParams, got {type(params).__name__}")
        self._params = params
        self._set_constants(params)

    @property
    def bias_voltage(self) -> float:
        """Bias voltage of the intensity modulator (V)."""
        return self._bias

    def set_bias_voltage(self, volts: float) -> None:
        """Sets the modulator's bias voltage (what the bias controller's DAC applies)."""
        if not math.isfinite(volts):
            raise ValueError(f"bias voltage must be finite, got {volts!r}")
        self._bias = float(volts)

    def bias_null_voltage(self) -> float:
        """The modulator's null voltage now (it drifts at ``bias_drift_v_per_s``)."""
        src = self._params.source
        return src.bias_null_v + src.bias_drift_v_per_s * self.time_ps * 1e-12

    def load_frame(self, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        """Loads Alice's per-slot choices (what the transmitter's AWG plays, repeated).

        Slot s uses position ``s mod L`` of the frame, L its length; the frame applies from the
        next call of :meth:`run`.

        Args:
            basis: 0 = X, 1 = Z, per frame position.
            bit: 0 or 1.
            intensity: class 0 (mu1), 1 (mu2) or 2 (mu3).
        """
        arrays = []
        for name, arr, high in (("basis", basis, 1), ("bit", bit, 1), ("intensity", intensity, 2)):
            a = np.ascontiguousarray(arr)
            if a.ndim != 1 or a.size == 0:
                raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
            if a.dtype.kind not in "ub" and a.dtype.kind != "i":
                raise TypeError(f"{name} must be an integer array, got {a.dtype}")
            if a.min() < 0 or a.max() > high:
                raise ValueError(f"{name} values must be in 0..{high}")
            arrays.append(a.astype(np.uint8))
        if not arrays[0].size == arrays[1].size == arrays[2].size:
            raise ValueError("basis, bit and intensity must have the same length")
        for a in arrays:
            a.flags.writeable = False
        self._frame = (arrays[0], arrays[1], arrays[2])
        self._types = (6 * arrays[0] + 3 * arrays[1] + arrays[2]).astype(np.uint8)
        self._present = np.unique(self._types)
        self._type_counts = np.bincount(self._types, minlength=optics.N_TYPES).astype(np.float64)

    @property
    def frame(self) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
        """The loaded (basis, bit, intensity) arrays (read-only)."""
        if self._frame is None:
            raise RuntimeError("no frame loaded")
        return self._frame

    # -- analytic model -------------------------------------------------------------------

    def mean_photon_numbers(self) -> NDArray[np.float64]:
        """Mean photon numbers actually sent per class at the current bias."""
        return optics.mean_photon_numbers(self._params.source, self._bias,
                                          self.bias_null_voltage())

    def wrong_detector_probability(self) -> float:
        """Misalignment combined with the modulator's contrast at the current bias."""
        return optics.wrong_detector_probability(self._params, self._bias,
                                                 self.bias_null_voltage())

    def click_probabilities(self) -> NDArray[np.float64]:
        """Photon click probability per slot, shape (4 detectors, frame length)."""
        self.frame  # noqa: B018 (raises when no frame is loaded)
        table = optics.click_probability_table(self._params, self._bias, self.bias_null_voltage())
        return table[:, self._types]

    # -- stream ----------------------------------------------------------------------------

    @property
    def slot(self) -> int:
        """The next slot to simulate."""
        return self._slot

    @property
    def time_ps(self) -> int:
        """Alice's time of the next slot (ps, floored)."""
        return self._slot * self._period.numerator // self._period.denominator

    def skip_to(self, slot: int) -> None:
        """Moves on to ``slot`` without simulating the slots between (no light, and the dark
        counts of that gap left out: the bench's output was off). Carried dead time and
        afterpulses stay at their times."""
        if slot < self._slot:
            raise ValueError(f"cannot go back from slot {self._slot} to {slot}")
        self._slot = int(slot)

    def tagger_time_ps(self, slot: int, delay_ps: float) -> int:
        """Bob's tag (no jitter) of an event ``delay_ps`` after slot ``slot`` is emitted."""
        tg = self._params.tagger
        t = Fraction(slot) * self._period + Fraction(delay_ps)
        exact = t * (1 + Fraction(tg.drift_ppm * 1e-6)) + tg.offset_ps
        return math.floor(exact) // tg.resolution_ps * tg.resolution_ps

    def run(self, n_slots: int | None = None, *, duration_ps: int | None = None) -> TagBatch:
        """Simulates the next slots and returns what the tagger delivers.

        Args:
            n_slots: how many slots to simulate, or
            duration_ps: how long (Alice's time; rounded down to whole slots).
        """
        return self._run(self._slots_of(n_slots, duration_ps))[0]

    def run_with_truth(self, n_slots: int | None = None, *, duration_ps: int | None = None
                       ) -> tuple[TagBatch, TagTruth]:
        """Like :meth:`run`, with the ground truth of every tag (for tests)."""
        return self._run(self._slots_of(n_slots, duration_ps))

    def slots_in(self, n_slots: int | None, duration_ps: int | None) -> int:
        """The slots a run of ``n_slots`` or ``duration_ps`` (exactly one) simulates."""
        if (n_slots is None) == (duration_ps is None):
            raise TypeError("give exactly one of n_slots and duration_ps")
        if duration_ps is not None:
            n_slots = int(Fraction(int(duration_ps)) / self._period)
        assert n_slots is not None
        if n_slots < 0:
            raise ValueError(f"n_slots must be >= 0, got {n_slots}")
        return int(n_slots)

    def _slots_of(self, n_slots: int | None, duration_ps: int | None) -> int:
        slots = self.slots_in(n_slots, duration_ps)
        if self._frame is None:
            raise RuntimeError("load_frame() before run()")
        return slots

    def _run(self, n_slots: int) -> tuple[TagBatch, TagTruth]:
        s0, s1 = self._slot, self._slot + n_slots
        num, den = self._period.numerator, self._period.denominator
        origin, rem = divmod(s0 * num, den)
        frac0 = rem / den
        shift = float(origin - self._origin)
        t_span = n_slots * self._period_f
        cut = t_span + frac0 + self._cut_offset
        null_v = self.bias_null_voltage()
        table = optics.click_probability_table(self._params, self._bias, null_v)
        present = self._present

        parts_t, parts_kind, parts_slot = [], [], []
        photons = self._photons(s0, s1, table, present, frac0)
        for j in range(N_DETECTORS):
            st = self._det[j]
            st.last_click -= shift
            st.pending = st.pending - shift
            st.carry_t = st.carry_t - shift
            slots, t_ph = photons[j]
            rate = self._params.detectors[j].dark_count_rate_hz
            n_dark = int(self._rng.poisson(rate * t_span * 1e-12))
            t_dark = np.sort(self._rng.random(n_dark)) * t_span + (frac0 + self._delays[j])
            b_t = np.concatenate((st.carry_t, t_dark))
            b_kind = np.concatenate((st.carry_kind, np.full(n_dark, Origin.DARK, np.uint8)))
            b_slot = np.concatenate((st.carry_slot, np.full(n_dark, -1, np.int64)))
            order = np.argsort(b_t, kind="stable")
            b_t, b_kind, b_slot = b_t[order], b_kind[order], b_slot[order]
            a_kind = self._buffer("photon_kind", slots.shape[0], np.uint8)  # never written
            t, kind, slot = self._scan(j, st, (t_ph, a_kind, slots), (b_t, b_kind, b_slot), cut)
            parts_t.append(t)
            parts_kind.append(kind)
            parts_slot.append(slot)
        sync_slots = self._sync_slots(s0, s1)
        parts_t.append((sync_slots - s0).astype(np.float64) * self._period_f
                       + (frac0 + self._params.tagger.sync_delay_ps))
        parts_kind.append(np.full(sync_slots.shape[0], Origin.SYNC, np.uint8))
        parts_slot.append(sync_slots)

        tg = self._params.tagger
        margin = 2.0 * (JITTER_CLIP_SIGMA * tg.jitter_rms_ps + CUT_MARGIN_PS)
        complete = int(self._tag(origin, np.array([cut - margin]), noise=False)[0])
        # Runs, each in time order: held tags, detectors 0..3, sync; concatenated, the tags
        # written in place. Allocated here, not in the kernels: numpy puts large arrays on
        # huge pages.
        sizes = [self._held_t.shape[0], *(x.shape[0] for x in parts_t)]
        bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=bounds[1:])
        n_all = int(bounds[-1])
        cat_t = self._buffer("cat_t", n_all, np.int64)
        cat_det = self._buffer("cat_det", n_all, np.int8)
        cat_slot = self._buffer("cat_slot", n_all, np.int64)
        cat_origin = self._buffer("cat_origin", n_all, np.uint8)
        hi = int(bounds[1])
        cat_t[:hi], cat_det[:hi] = self._held_t, self._held_det
        cat_slot[:hi], cat_origin[:hi] = self._held_slot, self._held_origin
        for r, x in enumerate(parts_t):
            lo, hi = int(bounds[r + 1]), int(bounds[r + 2])
            self._tag(origin, x, noise=r == len(parts_t) - 1, out=cat_t[lo:hi])
            cat_det[lo:hi] = r if r < N_DETECTORS else -1
            cat_slot[lo:hi] = parts_slot[r]
            cat_origin[lo:hi] = parts_kind[r]
        bounds = np.unique(bounds)  # empty runs dropped: one comparison less per tag each
        all_t, all_ch = np.empty(n_all, np.int64), np.empty(n_all, np.int16)
        all_det, all_slot = np.empty(n_all, np.int8), np.empty(n_all, np.int64)
        all_origin = np.empty(n_all, np.uint8)
        kernels.merge_streams(cat_t, cat_det, cat_slot, cat_origin, bounds, self._channel_map,
                              all_t, all_ch, all_det, all_slot, all_origin)
        n_out = int(np.searchsorted(all_t, complete, side="left"))
        self._held_t, self._held_det = all_t[n_out:].copy(), all_det[n_out:].copy()
        self._held_slot, self._held_origin = all_slot[n_out:].copy(), all_origin[n_out:].copy()
        n_keep = min(n_out, tg.buffer_events)
        self._slot, self._origin = s1, origin
        batch = TagBatch(all_t[:n_keep], all_ch[:n_keep], n_out - n_keep, complete)
        truth = TagTruth(all_slot[:n_keep], all_origin[:n_keep], all_det[:n_keep],
                         all_slot[n_keep:n_out], all_origin[n_keep:n_out], s0, n_slots)
        return batch, truth

    def _photons(self, s0: int, s1: int, table: NDArray[np.float64],
                 present: NDArray[np.uint8], frac0: float
                 ) -> list[tuple[NDArray[np.int64], NDArray[np.float64]]]:
        """Per detector: slots in [s0, s1) where it sees a photon, and the click times, in time
        order; dead time not applied yet."""
        p_any, cum, masks = optics.click_patterns(table)
        p_max = float(p_any[present].max())
        empty = (np.empty(0, np.int64), np.empty(0, np.float64))
        if p_max <= 0.0 or s1 <= s0:
            return [empty] * N_DETECTORS
        accept = p_any / p_max
        log1m = math.log1p(-p_max)
        expected = (s1 - s0) * float((table @ self._type_counts).max()) / self._types.shape[0]
        cap = int(min(CLICK_CHUNK, expected + 6.0 * math.sqrt(expected) + 16))
        sigma = np.array(self._sigmas)
        t0 = frac0 + np.array(self._delays)
        if self._click_s.shape[1] < cap:
            self._click_s = np.empty((N_DETECTORS, cap), dtype=np.int64)
            self._click_t = np.empty((N_DETECTORS, cap), dtype=np.float64)
        out_s, out_t = self._click_s, self._click_t
        pos = s0 - 1
        chunks: list[list[tuple[NDArray[np.int64], NDArray[np.float64]]]] = []
        while True:
            t_ref = t0 + (pos - s0) * self._period_f
            counts, pos, done = kernels.photon_clicks(
                self._state, pos, s1, log1m, self._types, accept, cum, masks, t_ref, sigma,
                self._period_f, JITTER_CLIP_SIGMA, out_s, out_t, self._zig)
            # Views into the reused buffers while this is the only chunk (the callers copy
            # what they keep); copies when the next chunk overwrites them.
            chunk = [(out_s[j, :counts[j]], out_t[j, :counts[j]]) for j in range(N_DETECTORS)]
            if done and not chunks:
                chunks.append(chunk)
                break
            chunks.append([(sl.copy(), tm.copy()) for sl, tm in chunk])
            if done:
                break
        result = []
        for j in range(N_DETECTORS):
            if len(chunks) == 1:
                slots, times = chunks[0][j]
            else:
                slots = np.concatenate([c[j][0] for c in chunks])
                times = np.concatenate([c[j][1] for c in chunks])
            # Jitter reorders one detector's clicks only if it can span a slot period.
            reorder = 2.0 * JITTER_CLIP_SIGMA * sigma[j] >= self._period_f
            if reorder and np.any(np.diff(times) < 0):
                order = np.argsort(times, kind="stable")
                slots, times = slots[order], times[order]
            result.append((slots, times))
        return result

    def _buffer(self, name: str, n: int, dtype: type[np.generic]) -> NDArray[Any]:
        """The first n entries of a work array kept across calls (zeros when new; callers
        that need zeros never write to it)."""
        buf = self._work.get(name)
        if buf is None or buf.shape[0] < n:
            # Room to spare, so that calls of slowly varying size do not reallocate.
            size = max(n, int(WORK_GROWTH * (0 if buf is None else buf.shape[0])))
            buf = np.zeros(size, dtype=dtype)
            self._work[name] = buf
        return buf[:n]

    def _scan(self, j: int, st: _DetectorState,
              a: tuple[NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64]],
              b: tuple[NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64]], cut: float
              ) -> tuple[NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64]]:
        """Dead time and afterpulses of detector j up to ``cut``; updates its carried state."""
        d = self._params.detectors[j]
        cap = a[0].shape[0] + b[0].shape[0] + st.pending.shape[0] + 16
        t, kind, slot, ia, ib, pending, last = kernels.dead_time_scan(
            a[0], a[1], a[2], b[0], b[1], b[2], st.pending, st.last_click, cut,
            float(d.dead_time_ps), d.afterpulse_probability, d.afterpulse_tau_ps, self._state,
            int(Origin.AFTERPULSE), self._buffer(f"scan_t{j}", cap, np.float64),
            self._buffer(f"scan_kind{j}", cap, np.uint8),
            self._buffer(f"scan_slot{j}", cap, np.int64))
        st.pending, st.last_click = pending, last
        carry_t = np.concatenate((a[0][ia:], b[0][ib:]))
        order = np.argsort(carry_t, kind="stable")
        st.carry_t = carry_t[order]
        st.carry_kind = np.concatenate((a[1][ia:], b[1][ib:]))[order]
        st.carry_slot = np.concatenate((a[2][ia:], b[2][ib:]))[order]
        return t, kind, slot

    def _sync_slots(self, s0: int, s1: int) -> NDArray[np.int64]:
        """Slots of the sync tags whose (untagged) time falls in this batch's window."""
        k = self._params.tagger.sync_every_slots
        if k == 0:
            return np.empty(0, np.int64)
        shift = (self._cut_offset - self._params.tagger.sync_delay_ps) / self._period_f
        # Slots s < s1 + shift have their sync time before this batch's cut; the window
        # continues where the previous call's ended.
        lo = self._sync_next
        hi = max(lo, math.ceil(s1 + shift))
        self._sync_next = hi
        first = -(-lo // k) * k
        return np.arange(first, hi, k, dtype=np.int64)

    def _tag(self, origin: int, rel_t: NDArray[np.float64], *, noise: bool = True,
             out: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """Bob's tags of times relative to Alice's ``origin`` (written to ``out`` if given)."""
        tg = self._params.tagger
        drift = tg.drift_ppm * 1e-6
        base_exact = Fraction(origin) * (1 + Fraction(drift)) + tg.offset_ps
        base_int = math.floor(base_exact)
        base_bins, r = divmod(base_int, tg.resolution_ps)
        base_frac = r + float(base_exact - base_int)
        sigma = float(tg.jitter_rms_ps) if noise else 0.0
        return kernels.tagger_times(rel_t, self._state, sigma, JITTER_CLIP_SIGMA, 1.0 + drift,
                                    base_frac, base_bins, tg.resolution_ps, self._zig,
                                    np.empty(rel_t.shape[0], np.int64) if out is None else out)
