"""Qsync: slot timing recovered from time tags (Bob's tagger clock to Alice's slot numbers).

Model
    Alice emits slot ``s`` at ``s * T`` on her clock; Bob's tagger reads ``t * (1 + d) + offset``
    and the photon arrives a fixed delay later (fibre, latency), plus Gaussian jitter. On Bob's
    clock slot ``s`` is therefore centred at ``t(s) = t0 + s * P`` with ``P = T * (1 + d)``.
    :class:`SlotClock` holds that line (a reference time and slot and the period). Nothing here
    reads the bench's true parameters: everything comes from the tags, the nominal period and
    the transmitter's announced pattern.

Acquisition (:func:`acquire`)
    1. Period: from a sync channel if there is one (least squares on the sync tags), else by a
       grid search over the frequency offset (``+-max_ppm``) of the Rayleigh power
       ``|sum_i exp(2 pi i t_i / P)|^2``: photon tags pile up at one phase of the slot, dark counts
       and afterpulses spread evenly. The grid step keeps the phase slip across the window under
       a quarter slot (:func:`rayleigh_kernel`, numba; :func:`rayleigh_reference` its twin).
    2. Fine phase and frequency: robust least squares on the wrapped residuals, a few rounds.
    3. Slot number: the tags, counted in Bob's periods, are histogrammed modulo the pattern
       length ``L`` and circularly cross-correlated (FFT) with the announced pattern (e.g. the
       expected click rate per frame position: signal slots click more than decoys). The peak
       gives the slot number modulo ``L``; the search window ``delay_ps +- max_offset_ps`` (the
       expected delay of slot 0 and the clock offset bound) makes it unique, which needs
       ``L * T > 2 * max_offset_ps``.

Tracking (:class:`SlotTracker`)
    Detections are taken in blocks of ``block_tags``: each tag gets the nearest slot of the
    current line, tags farther than ``accept_sigmas`` jitter sigmas from every slot centre are
    rejected (slot -1, counted), and a least-squares fit of the residuals moves the line
    (phase and frequency) to the block's end. A block is bad when its fraction of tags close
    to a slot centre falls to midway between the locked value (measured at acquisition) and
    that of tags at random phases (a fractional clock step, a frequency jump beyond what a
    block absorbs), or when the mean pattern weight of the assigned slots falls to half its
    locked value (a whole-slot step, which residuals cannot show). Then the change point is
    located in the last two blocks (a one-sided CUSUM), the tags before it are kept, and those
    from it on are re-acquired from scratch: loss of sync costs the tags misassigned between
    the change and its located point, not a restart. Output lags the input by at most two
    blocks (plus the acquisition window while unlocked); :meth:`SlotTracker.flush` drains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.fft
from numpy.typing import NDArray

from .errors import AcquisitionFailed

__all__ = [
    "DEFAULT_MAX_PPM",
    "MAX_OFFSET_PS",
    "Acquisition",
    "SlotBatch",
    "SlotClock",
    "SlotTracker",
    "TrackerStatus",
    "acquire",
    "assign",
    "rayleigh_kernel",
    "rayleigh_reference",
]

# Clock offsets up to +-1 ms between the tagger and the transmitter (issue 6).
MAX_OFFSET_PS = 10**9
# Each oscillator is specified to +-10 ppm, so the two ends differ by up to 20 ppm.
DEFAULT_MAX_PPM = 20.0
# Frequency grid step: the phase slips by at most this many slots across the acquisition window
# at the best grid point (half a step from the truth), well inside the unwrapped residuals.
GRID_SLIP_SLOTS = 0.25
# Frequencies tried at most: bounds the search (n_tags x points operations, ~1e7 at 2048 tags).
# With the 20 ppm default the window may then span 2.6e7 slots (26 ms at 1 GHz): 2048
# detections need ~80 kHz at 1 GHz, 8 kHz at 100 MHz; sparser links need a sync channel.
MAX_GRID_POINTS = 4097
# Rayleigh power of tags at random phases is Exp(1)-distributed; a grid of G points exceeds
# 30 with probability G * e^-30 (1e-10 for G = 1e3).
MIN_RAYLEIGH = 30.0
# Correlation peak in standard deviations of the correlation over all shifts: the largest of
# 2^22 Gaussian samples exceeds 8 with probability ~3e-9.
MIN_CORRELATION_Z = 8.0
# ... and ahead of the second-highest shift by this many (a pattern with a near-repeat inside
# its length cannot give a unique slot number).
MIN_CORRELATION_MARGIN = 3.0
# Residual spread floor as a fraction of the period (a tagger without jitter still quantises).
MIN_SIGMA_FRACTION = 0.005
# Tags within this many sigmas of a slot centre are "core" (locked: ~all photons, 4.7e-4 lost).
CORE_SIGMAS = 3.5
# Default acceptance: 5 sigmas loses 6e-7 of the photons and rejects most dark counts.
DEFAULT_ACCEPT_SIGMAS = 5.0
# Least-squares rounds in acquisition (each one halves the clip window at most).
REFINE_ROUNDS = 4
# Tags per tracking block: the core fraction of a block then has a binomial spread of ~0.02.
DEFAULT_BLOCK_TAGS = 512
# Detections per acquisition: enough for a correlation peak of ~20 sigma on a decoy pattern.
DEFAULT_ACQUIRE_TAGS = 2048
# Share of a block's fitted frequency error applied to the period: the noise of one block's
# slope (~0.04 ppm at 512 tags and 10 % jitter) averages over ~1 / gain blocks, while a
# frequency step is followed within a few blocks (larger steps lose lock and re-acquire).
FREQUENCY_GAIN = 0.25
# The pattern check is used when half the locked score is this many standard errors above 0.
PATTERN_CHECK_Z = 6.0
# Fewest core tags for a block's residual RMS to be reported.
MIN_RMS_TAGS = 16
# Fewest detections acquisition accepts (flush of a short stream).
MIN_ACQUIRE_TAGS = 64


@dataclass(frozen=True, slots=True)
class SlotClock:
    """Slot centres on Bob's clock: ``t(s) = ref_time_ps + (s - ref_slot) * period_ps``."""

    ref_time_ps: int
    ref_slot: int
    period_ps: float

    def time_of(self, slot: int) -> float:
        """Centre of ``slot`` on Bob's clock (ps)."""
        return self.ref_time_ps + (slot - self.ref_slot) * self.period_ps

    @property
    def delay_ps(self) -> float:
        """Where slot 0 sits on Bob's clock (the offset plus the propagation delay)."""
        return self.time_of(0)

    def ppm(self, nominal_period_ps: float) -> float:
        """Frequency difference of the two clocks in ppm (Bob's period against the nominal)."""
        return (self.period_ps / nominal_period_ps - 1.0) * 1e6


@dataclass(frozen=True, slots=True)
class Acquisition:
    """Result of :func:`acquire`.

    Attributes:
        clock: the recovered slot line.
        sigma_ps: robust (MAD) spread of the photon residuals, jitter included.
        rayleigh: Rayleigh power at the chosen period (``|sum exp(i phase)|^2 / n``).
        correlation_z: pattern correlation peak in standard deviations.
        core_fraction: fraction of the window's tags within ``CORE_SIGMAS`` of a slot centre.
        pattern_score: mean centred pattern weight of the window's assigned slots.
        n_tags: detections used.
    """

    clock: SlotClock
    sigma_ps: float
    rayleigh: float
    correlation_z: float
    core_fraction: float
    pattern_score: float
    n_tags: int


# -- kernels ------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def rayleigh_kernel(dt_ps: NDArray[np.int64], freqs: NDArray[np.float64],
                    out: NDArray[np.float64]) -> None:
    """``out[g] = |sum_i exp(2 pi i dt_i f_g)|^2 / n`` (``f_g`` in cycles per ps).

    The phase is reduced to a fraction of a cycle before the trigonometry so that ``dt * f``
    of ~1e8 cycles keeps its precision. Numba kernel; :func:`rayleigh_reference` is its twin.
    """
    n = dt_ps.shape[0]
    two_pi = 2.0 * math.pi
    for g in range(freqs.shape[0]):
        f = freqs[g]
        c = 0.0
        s = 0.0
        for i in range(n):
            x = dt_ps[i] * f
            x -= math.floor(x)
            c += math.cos(two_pi * x)
            s += math.sin(two_pi * x)
        out[g] = (c * c + s * s) / n if n else 0.0


def rayleigh_reference(dt_ps: NDArray[np.int64], freqs: NDArray[np.float64],
                       out: NDArray[np.float64]) -> None:
    """Plain-numpy twin of :func:`rayleigh_kernel`."""
    if dt_ps.shape[0] == 0:
        out[:] = 0.0
        return
    x = np.multiply.outer(freqs, dt_ps.astype(np.float64))
    x -= np.floor(x)
    z = np.exp(2j * np.pi * x).sum(axis=1)
    out[:] = np.abs(z) ** 2 / dt_ps.shape[0]


# -- validation ---------------------------------------------------------------------------


def _check_tags(timestamps_ps: object, channels: object) -> tuple[NDArray[np.int64],
                                                                  NDArray[np.int64]]:
    if not isinstance(timestamps_ps, np.ndarray) or timestamps_ps.dtype != np.int64:
        kind = getattr(timestamps_ps, "dtype", type(timestamps_ps).__name__)
        raise TypeError(f"timestamps_ps must be a numpy int64 array, got {kind}")
    if not isinstance(channels, np.ndarray) or channels.dtype.kind not in "iu":
        kind = getattr(channels, "dtype", type(channels).__name__)
        raise TypeError(f"channels must be a numpy integer array, got {kind}")
    if timestamps_ps.ndim != 1 or channels.shape != timestamps_ps.shape:
        raise ValueError(f"timestamps_ps and channels must be 1-D of one length, got shapes "
                         f"{timestamps_ps.shape} and {channels.shape}")
    if timestamps_ps.size > 1 and bool(np.any(np.diff(timestamps_ps) < 0)):
        first = int(np.argmax(np.diff(timestamps_ps) < 0)) + 1
        raise ValueError(f"timestamps_ps must be non-decreasing (tag {first} is earlier than "
                         f"the one before it)")
    return np.ascontiguousarray(timestamps_ps), channels.astype(np.int64)


def _check_period(period_ps: float) -> float:
    if isinstance(period_ps, bool) or not isinstance(period_ps, int | float):
        raise TypeError(f"period_ps must be a number, got {type(period_ps).__name__}")
    if not math.isfinite(period_ps) or period_ps <= 0:
        raise ValueError(f"period_ps must be a finite number > 0, got {period_ps!r}")
    return float(period_ps)


def _check_pattern(pattern: object) -> NDArray[np.float64]:
    if not isinstance(pattern, np.ndarray) or pattern.dtype.kind not in "iuf":
        raise TypeError("pattern must be a numpy array of numbers (a weight per frame slot)")
    if pattern.ndim != 1 or pattern.size < 2:
        raise ValueError(f"pattern must be 1-D with at least 2 slots, got shape {pattern.shape}")
    w = pattern.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("pattern must be finite")
    w -= w.mean()
    if not np.any(w):
        raise ValueError("pattern is constant: it cannot mark any slot")
    return w


class _Pattern:
    """The centred pattern with what correlations need, computed once."""

    __slots__ = ("spectrum", "std", "weights")

    def __init__(self, pattern: object) -> None:
        self.weights = _check_pattern(pattern)
        self.std = float(self.weights.std())
        self.spectrum = scipy.fft.rfft(self.weights)


def _reach(length: int, period_ps: float, delay_ps: float, max_offset_ps: int,
           max_ppm: float) -> float:
    """Half-width of the window searched for slot 0 (ps); checks the pattern is longer."""
    if not math.isfinite(max_ppm) or max_ppm < 0:
        raise ValueError(f"max_ppm must be >= 0, got {max_ppm!r}")
    if not math.isfinite(delay_ps):
        raise ValueError(f"delay_ps must be finite, got {delay_ps!r}")
    if max_offset_ps < 0:
        raise ValueError(f"max_offset_ps must be >= 0, got {max_offset_ps!r}")
    # Bob's clock also scales the delay itself (by up to max_ppm), and a slot either side.
    reach = max_offset_ps + abs(delay_ps) * max_ppm * 1e-6 + 2 * period_ps
    if length * period_ps <= 2 * reach:
        raise ValueError(f"pattern of {length} slots spans {length * period_ps:.4g} ps, not "
                         f"more than the search window of {2 * reach:.4g} ps (twice "
                         f"max_offset_ps and margins): the slot number would be ambiguous")
    return reach


# -- acquisition --------------------------------------------------------------------------


def _residuals(t: NDArray[np.int64], ref_time: int, period: float
               ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Nearest slot (relative to the reference), residual (ps) and time since the reference."""
    u = (t - ref_time).astype(np.float64)
    x = u / period
    n = np.rint(x)
    return n.astype(np.int64), (x - n) * period, u


def _fit_line(u: NDArray[np.float64], r: NDArray[np.float64]) -> tuple[float, float]:
    """Least squares ``r = a + b u``; returns (value at u = 0, slope)."""
    if u.size < 2:
        return (float(r.mean()) if r.size else 0.0), 0.0
    um = float(u.mean())
    du = u - um
    den = float(du @ du)
    b = float(du @ (r - r.mean())) / den if den > 0 else 0.0
    return float(r.mean()) - b * um, b


def _sync_period(sync_t: NDArray[np.int64], nominal: float, every: int) -> float | None:
    if sync_t.size < 3:
        return None
    k = np.rint((sync_t - sync_t[0]) / (nominal * every))
    if np.any(np.diff(k) <= 0):
        return None
    _, slope = _fit_line(k, (sync_t - sync_t[0]).astype(np.float64))
    return slope / every


def _grid_period(t: NDArray[np.int64], ref: int, nominal: float, max_ppm: float
                 ) -> tuple[float, float]:
    span_slots = max(float(t[-1] - t[0]) / nominal, 1.0)
    step = GRID_SLIP_SLOTS / span_slots
    half = max_ppm * 1e-6
    n_grid = 2 * math.ceil(half / step) + 1
    if n_grid > MAX_GRID_POINTS:
        raise AcquisitionFailed(
            f"detections too sparse for a frequency search: the window spans "
            f"{span_slots:.3g} slots ({n_grid} frequencies to try, at most {MAX_GRID_POINTS}); "
            f"use a sync channel or more detections per second")
    deltas = np.linspace(-half, half, n_grid) if n_grid > 1 else np.zeros(1)
    freqs = 1.0 / (nominal * (1.0 + deltas))
    power = np.empty(n_grid, np.float64)
    rayleigh_kernel(t - ref, freqs, power)
    g = int(np.argmax(power))
    return nominal * (1.0 + float(deltas[g])), float(power[g])


def _core_fraction(r: NDArray[np.float64], core: float) -> float:
    return float(np.mean(np.abs(r) <= core)) if r.size else 0.0


def acquire(timestamps_ps: NDArray[np.int64], channels: NDArray[np.integer], *,
            period_ps: float, pattern: NDArray[np.floating] | NDArray[np.integer],
            delay_ps: float, detector_channels: tuple[int, ...],
            max_offset_ps: int = MAX_OFFSET_PS, max_ppm: float = DEFAULT_MAX_PPM,
            sync_channel: int | None = None, sync_every_slots: int = 0,
            accept_sigmas: float = DEFAULT_ACCEPT_SIGMAS) -> Acquisition:
    """Finds the slot line from a window of tags.

    Args:
        timestamps_ps: tag times on Bob's clock (int64, non-decreasing).
        channels: tagger channel of each tag.
        period_ps: nominal slot period (Alice's).
        pattern: announced weight per frame position (the frame repeats with its length ``L``),
            e.g. the mean photon number of each slot's intensity class.
        delay_ps: expected time of slot 0 on Bob's clock (e.g. the fibre delay).
        detector_channels: channels of the detectors.
        max_offset_ps: slot 0 is searched within ``delay_ps +- max_offset_ps``.
        max_ppm: frequency difference searched (without a sync channel).
        sync_channel: channel of a sync signal, a tag every ``sync_every_slots`` slots; when it
            has at least three tags in the window, the period comes from it.
        accept_sigmas: acceptance half-width in residual sigmas (for the reported statistics).

    Raises:
        AcquisitionFailed: no significant phase concentration or pattern correlation, or the
            slot number lies outside the search window.
        TypeError, ValueError: bad arguments.
    """
    t_all, ch = _check_tags(timestamps_ps, channels)
    nominal = _check_period(period_ps)
    pat = pattern if isinstance(pattern, _Pattern) else _Pattern(pattern)
    w = pat.weights
    reach = _reach(w.size, nominal, delay_ps, max_offset_ps, max_ppm)
    det = np.isin(ch, np.asarray(detector_channels, dtype=np.int64))
    t = t_all[det]
    if t.size < MIN_ACQUIRE_TAGS:
        raise AcquisitionFailed(f"{t.size} detections in the window, need {MIN_ACQUIRE_TAGS}")
    ref = int(t[t.size // 2])
    period = None
    if sync_channel is not None and sync_every_slots > 0:
        period = _sync_period(t_all[ch == sync_channel], nominal, sync_every_slots)
    if period is None:
        period, _ = _grid_period(t, ref, nominal, max_ppm)
    z = np.exp(2j * np.pi * (((t - ref) / period) % 1.0)).sum()
    ref += round(float(np.angle(z)) / (2 * np.pi) * period)
    rayleigh = float(abs(z) ** 2 / t.size)
    if rayleigh < MIN_RAYLEIGH:
        raise AcquisitionFailed(f"no slot phase in the tags (Rayleigh power {rayleigh:.1f}, "
                                f"need {MIN_RAYLEIGH})")

    clip = 0.25 * period
    for _ in range(REFINE_ROUNDS):
        _, r, u = _residuals(t, ref, period)
        keep = np.abs(r) <= clip
        a, b = _fit_line(u[keep], r[keep])
        ref += round(a)
        period *= 1.0 + b
        _, r, _ = _residuals(t, ref, period)
        core = r[np.abs(r) <= clip]
        mad = float(np.median(np.abs(core - np.median(core)))) if core.size else clip
        sigma = max(1.4826 * mad, MIN_SIGMA_FRACTION * period)
        clip = min(0.25 * period, 4.0 * sigma)

    n, r, _ = _residuals(t, ref, period)
    half_width = min(0.5 * period, accept_sigmas * sigma)
    acc = np.abs(r) <= half_width
    length = w.size
    hist = np.bincount(n[acc] % length, minlength=length).astype(np.float64)
    corr = scipy.fft.irfft(np.conj(scipy.fft.rfft(hist)) * pat.spectrum, n=length)
    k0 = int(np.argmax(corr))
    spread = float(corr.std())
    peak = float(corr[k0])
    z_peak = (peak - float(corr.mean())) / spread if spread > 0 else 0.0
    second = float(np.partition(corr, length - 2)[length - 2])
    if z_peak < MIN_CORRELATION_Z or (peak - second) / spread < MIN_CORRELATION_MARGIN:
        raise AcquisitionFailed(f"no unique pattern correlation (peak {z_peak:.1f} sigma, "
                                f"need {MIN_CORRELATION_Z})")
    # Slot of the reference tag (n = 0) is k = k0 + m L; slot 0 then sits at ref - k * P.
    lo = math.ceil((ref - delay_ps - reach) / period)
    hi = math.floor((ref - delay_ps + reach) / period)
    k = lo + (k0 - lo) % length
    if k > hi:
        raise AcquisitionFailed("the pattern's position puts slot 0 outside delay_ps +- "
                                "max_offset_ps")
    core_fraction = _core_fraction(r, min(half_width, CORE_SIGMAS * sigma))
    # Rejected tags count as weight 0, as in the tracker's blocks.
    score = float(w[(n[acc] + k) % length].sum()) / t.size
    return Acquisition(SlotClock(ref, k, period), sigma, rayleigh, z_peak, core_fraction,
                       score, int(t.size))


def assign(timestamps_ps: NDArray[np.int64], clock: SlotClock, half_width_ps: float
           ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Nearest slot of each tag on ``clock`` (-1 when farther than ``half_width_ps``).

    Returns:
        slots (int64, -1 for rejected tags) and residuals (ps, tag time minus slot centre).
    """
    if not isinstance(timestamps_ps, np.ndarray) or timestamps_ps.dtype != np.int64:
        raise TypeError("timestamps_ps must be a numpy int64 array")
    n, r, _ = _residuals(timestamps_ps, clock.ref_time_ps, clock.period_ps)
    slots = np.where(np.abs(r) <= half_width_ps, n + clock.ref_slot, -1)
    return slots.astype(np.int64), r


# -- tracking -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotBatch:
    """Detections whose slots are decided, in time order.

    Attributes:
        index: position of each tag in the stream passed to :meth:`SlotTracker.process`
            (counting every tag, detections or not, from 0).
        timestamps_ps: the tags' times.
        channels: their channels.
        slots: slot of each detection; -1 when rejected (far from every slot centre) or
            unassigned (no lock).
    """

    index: NDArray[np.int64]
    timestamps_ps: NDArray[np.int64]
    channels: NDArray[np.int64]
    slots: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True, slots=True)
class TrackerStatus:
    """What a :class:`SlotTracker` reports.

    Attributes:
        locked: a slot line is held.
        clock: the current line (None before the first lock).
        ppm: estimated frequency difference of the clocks (ppm; nan before the first lock).
        residual_rms_ps: RMS residual of the last block's core tags (nan when none).
        assigned: detections given a slot.
        rejected: detections far from every slot centre while locked.
        unassigned: detections dropped without a lock (failed acquisitions, stream end).
        losses: losses of lock detected.
        acquisitions: successful acquisitions (the first one included).
        pending: detections held back, not yet in a returned batch.
    """

    locked: bool
    clock: SlotClock | None
    ppm: float
    residual_rms_ps: float
    assigned: int
    rejected: int
    unassigned: int
    losses: int
    acquisitions: int
    pending: int


@dataclass(slots=True)
class _Block:
    """A tracked block awaiting its successor's verdict."""

    start: int
    stop: int
    slots: NDArray[np.int64]
    outside: NDArray[np.bool_]
    weights: NDArray[np.float64]


@dataclass(slots=True)
class _Buffer:
    index: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    t: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    ch: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))


def _change_point(y: NDArray[np.float64]) -> int:
    """Start of the suffix with the largest positive sum of ``y`` (a one-sided CUSUM)."""
    suffix = np.cumsum(y[::-1])[::-1]
    return int(np.argmax(suffix))


class SlotTracker:
    """Streaming slot assignment with frequency tracking, loss detection and re-acquisition.

    Args:
        period_ps, pattern, delay_ps, detector_channels, max_offset_ps, max_ppm,
        sync_channel, sync_every_slots, accept_sigmas: as for :func:`acquire`; after a loss the
            search window is centred on the last locked position of slot 0.
        block_tags: detections per tracking block.
        acquire_tags: detections per acquisition window.

    Usage::

        tracker = SlotTracker(period_ps=1000.0, pattern=mu_of_slot, delay_ps=2.45e8,
                              detector_channels=(1, 2, 3, 4))
        for batch in tag_batches:
            out = tracker.process(batch.timestamps_ps, batch.channels)   # a SlotBatch
        out = tracker.flush()
    """

    def __init__(self, *, period_ps: float, pattern: NDArray[np.floating] | NDArray[np.integer],
                 delay_ps: float, detector_channels: tuple[int, ...],
                 max_offset_ps: int = MAX_OFFSET_PS, max_ppm: float = DEFAULT_MAX_PPM,
                 sync_channel: int | None = None, sync_every_slots: int = 0,
                 accept_sigmas: float = DEFAULT_ACCEPT_SIGMAS,
                 block_tags: int = DEFAULT_BLOCK_TAGS,
                 acquire_tags: int = DEFAULT_ACQUIRE_TAGS) -> None:
        self._nominal = _check_period(period_ps)
        self._pattern = _Pattern(pattern)
        self._weights = self._pattern.weights
        _reach(self._weights.size, self._nominal, delay_ps, max_offset_ps, max_ppm)
        if not detector_channels:
            raise ValueError("detector_channels must name at least one channel")
        if sync_channel is not None and sync_channel in detector_channels:
            raise ValueError(f"sync_channel {sync_channel} is also a detector channel")
        if block_tags < 16:
            raise ValueError(f"block_tags must be >= 16, got {block_tags}")
        if acquire_tags < MIN_ACQUIRE_TAGS:
            raise ValueError(f"acquire_tags must be >= {MIN_ACQUIRE_TAGS}, got {acquire_tags}")
        if not accept_sigmas > 0:
            raise ValueError(f"accept_sigmas must be > 0, got {accept_sigmas!r}")
        self._det_channels = np.asarray(detector_channels, dtype=np.int64)
        self._delay = float(delay_ps)
        self._max_offset = int(max_offset_ps)
        self._max_ppm = float(max_ppm)
        self._sync_channel = sync_channel
        self._sync_every = int(sync_every_slots)
        self._accept_sigmas = float(accept_sigmas)
        self._block = int(block_tags)
        self._acquire_n = int(acquire_tags)
        self._seen = 0
        self._last_t = -(2**63)
        self._buf = _Buffer()
        self._sync_t = np.empty(0, np.int64)
        self._acq: Acquisition | None = None
        self._clock: SlotClock | None = None
        self._locked = False
        self._prev: _Block | None = None
        self._fresh = False
        self._rms = math.nan
        self._assigned = self._rejected = self._unassigned = 0
        self._losses = self._acquisitions = 0
        self._out: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
                              NDArray[np.int64]]] = []

    # -- public ----------------------------------------------------------------------------

    @property
    def status(self) -> TrackerStatus:
        """Lock state and counters."""
        clock = self._clock
        return TrackerStatus(
            self._locked, clock, clock.ppm(self._nominal) if clock else math.nan, self._rms,
            self._assigned, self._rejected, self._unassigned, self._losses, self._acquisitions,
            int(self._buf.t.size))

    def process(self, timestamps_ps: NDArray[np.int64], channels: NDArray[np.integer]
                ) -> SlotBatch:
        """Takes the next tags of the stream; returns the detections decided so far."""
        t, ch = _check_tags(timestamps_ps, channels)
        if t.size and t[0] < self._last_t:
            raise ValueError("timestamps_ps must continue the stream in time order (the first "
                             "tag is earlier than the last one of the previous call)")
        if t.size:
            self._last_t = int(t[-1])
        index = np.arange(self._seen, self._seen + t.size, dtype=np.int64)
        self._seen += int(t.size)
        if self._sync_channel is not None and self._sync_every:
            self._sync_t = np.concatenate((self._sync_t, t[ch == self._sync_channel]))
        det = np.isin(ch, self._det_channels)
        b = self._buf
        b.index = np.concatenate((b.index, index[det]))
        b.t = np.concatenate((b.t, t[det]))
        b.ch = np.concatenate((b.ch, ch[det]))
        self._run(final=False)
        return self._take()

    def flush(self) -> SlotBatch:
        """Decides every held detection (end of the stream) and returns them."""
        self._run(final=True)
        if self._prev is not None:
            self._commit(self._prev)
            self._prev = None
        if self._buf.t.size:
            self._drop(self._buf.t.size)
        return self._take()

    # -- internals ---------------------------------------------------------------------------

    def _take(self) -> SlotBatch:
        parts = self._out
        self._out = []
        if not parts:
            e = np.empty(0, np.int64)
            return SlotBatch(e, e.copy(), e.copy(), e.copy())
        return SlotBatch(*(np.concatenate([p[i] for p in parts]) for i in range(4)))

    def _emit(self, start: int, stop: int, slots: NDArray[np.int64]) -> None:
        """Moves buffer entries [start, stop) to the output; callers emit in order from 0."""
        b = self._buf
        self._out.append((b.index[start:stop], b.t[start:stop], b.ch[start:stop], slots))

    def _consume(self, n: int) -> None:
        b = self._buf
        b.index, b.t, b.ch = b.index[n:], b.t[n:], b.ch[n:]
        if self._sync_t.size and b.t.size:
            # Sync tags before the buffer's first detection can no longer serve an acquisition
            # window; keep a few for the period fit.
            cut = max(int(np.searchsorted(self._sync_t, b.t[0])) - 2, 0)
            self._sync_t = self._sync_t[cut:]

    def _drop(self, n: int) -> None:
        self._emit(0, n, np.full(n, -1, np.int64))
        self._unassigned += n
        self._consume(n)

    def _commit(self, blk: _Block) -> None:
        # Blocks are tracked on the buffer's head; the committed one is always at 0.
        n = blk.stop - blk.start
        self._emit(0, n, blk.slots)
        ok = int(np.count_nonzero(blk.slots >= 0))
        self._assigned += ok
        self._rejected += n - ok
        self._consume(n)

    def _run(self, final: bool) -> None:
        while True:
            if not self._locked:
                outcome = self._try_acquire(final)
                if outcome == "wait":
                    return
                if outcome == "retry":
                    continue
            offset = self._prev.stop if self._prev is not None else 0
            avail = self._buf.t.size - offset
            if avail <= 0 or (avail < self._block and not final):
                return
            self._track(offset, min(self._block, avail))

    def _try_acquire(self, final: bool) -> str:
        """"locked", "wait" (too few tags) or "retry" (failed; the window's head dropped)."""
        b = self._buf
        n = min(b.t.size, self._acquire_n)
        if n < self._acquire_n and not (final and n >= MIN_ACQUIRE_TAGS):
            if final and n:
                self._drop(n)
            return "wait"
        delay = self._clock.delay_ps if self._clock is not None else self._delay
        t0, t1 = b.t[0], b.t[n - 1]
        s_lo, s_hi = np.searchsorted(self._sync_t, [t0, t1 + 1])
        times = np.concatenate((b.t[:n], self._sync_t[s_lo:s_hi]))
        sync_ch = self._sync_channel if self._sync_channel is not None else 0
        chans = np.concatenate((b.ch[:n], np.full(s_hi - s_lo, sync_ch, np.int64)))
        order = np.argsort(times, kind="stable")
        try:
            acq = acquire(times[order], chans[order], period_ps=self._nominal,
                          pattern=self._pattern,  # type: ignore[arg-type]
                          delay_ps=delay,
                          detector_channels=tuple(int(c) for c in self._det_channels),
                          max_offset_ps=self._max_offset, max_ppm=self._max_ppm,
                          sync_channel=self._sync_channel, sync_every_slots=self._sync_every,
                          accept_sigmas=self._accept_sigmas)
        except AcquisitionFailed:
            # Give up the older half of the window and try again with newer tags.
            self._drop(max(n // 2, 1))
            return "retry"
        self._acq = acq
        self._clock = acq.clock
        self._locked = True
        self._fresh = True
        self._acquisitions += 1
        return "locked"

    def _track(self, start: int, n: int) -> None:
        acq, clock = self._acq, self._clock
        assert acq is not None
        assert clock is not None
        b = self._buf
        t = b.t[start:start + n]
        period = clock.period_ps
        sigma = acq.sigma_ps
        half = min(0.5 * period, self._accept_sigmas * sigma)
        core = min(half, CORE_SIGMAS * sigma)
        rel, r, u = _residuals(t, clock.ref_time_ps, period)
        acc = np.abs(r) <= half
        slots = np.where(acc, rel + clock.ref_slot, -1).astype(np.int64)
        outside = np.abs(r) > core
        w = self._weights
        weights = np.where(acc, w[np.where(acc, slots, 0) % w.size], 0.0)
        blk = _Block(start, start + n, slots, outside, weights)
        lost_at = self._verdict(blk, core / (0.5 * period))
        if lost_at is None:
            keep = ~outside
            a, slope = _fit_line(u[keep], r[keep])
            if np.count_nonzero(keep) >= MIN_RMS_TAGS:
                self._rms = float(np.sqrt(np.mean((r[keep] - a - slope * u[keep]) ** 2)))
            last = int(rel[-1])
            # The phase moves to the fitted line at the block's end; the period takes only a
            # share of the fitted slope, which averages its noise over a few blocks.
            ref_time = clock.ref_time_ps + a + last * period * (1.0 + slope)
            # A short block (the stream's end) carries less information: less gain.
            gain = FREQUENCY_GAIN * min(1.0, int(np.count_nonzero(keep)) / self._block)
            new_period = period * (1.0 + gain * slope)
            self._clock = SlotClock(round(ref_time), clock.ref_slot + last, new_period)
            if self._prev is not None:
                self._commit(self._prev)
                blk.start -= self._prev.stop - self._prev.start
                blk.stop -= self._prev.stop - self._prev.start
            self._prev = blk
            self._fresh = False
            return
        self._losses += 1
        self._locked = False
        if lost_at == 0 and self._fresh and self._prev is None:
            # Lost at once after acquiring: the window straddles a change; give up its head.
            self._drop(min(n, self._block))
            return
        if self._prev is not None:
            p = self._prev
            self._prev = None
            size = p.stop - p.start
            if lost_at < size:
                head = _Block(p.start, p.start + lost_at, p.slots[:lost_at],
                              p.outside[:lost_at], p.weights[:lost_at])
                if lost_at:
                    self._commit(head)
                return
            self._commit(p)
            lost_at -= size
        if lost_at:
            self._commit(_Block(0, lost_at, slots[:lost_at], outside[:lost_at],
                                weights[:lost_at]))

    def _verdict(self, blk: _Block, uniform: float) -> int | None:
        """None when the block is good, else the located loss point, counted from the start
        of the held previous block (or of this block when none is held)."""
        acq = self._acq
        assert acq is not None
        n = blk.stop - blk.start
        prev = self._prev
        points = []
        f0 = acq.core_fraction
        # Phase: the fraction of tags far from a slot centre jumps from 1 - f0 towards 1 - u.
        if f0 - uniform > 0.2:
            theta = 1.0 - 0.5 * (f0 + uniform)
            if float(np.mean(blk.outside)) > theta:
                out = blk.outside if prev is None else np.concatenate((prev.outside, blk.outside))
                points.append(_change_point(out.astype(np.float64) - theta))
        # Whole slots: the mean pattern weight of assigned slots drops from s0 towards 0.
        s0 = acq.pattern_score
        spread = self._pattern.std
        usable = s0 > 0 and 0.5 * s0 * math.sqrt(n) / spread >= PATTERN_CHECK_Z
        if usable and float(blk.weights.mean()) < 0.5 * s0:
            y = blk.weights if prev is None else np.concatenate((prev.weights, blk.weights))
            points.append(_change_point((0.5 * s0 - y).astype(np.float64)))
        return min(points) if points else None
