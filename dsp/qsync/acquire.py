"""Qsync acquisition: the slot line found from a window of tags (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from ..errors import AcquisitionFailed
from .kernels import rayleigh_kernel

__all__ = [
    "CORE_SIGMAS",
    "DEFAULT_ACCEPT_SIGMAS",
    "DEFAULT_MAX_PPM",
    "MAX_OFFSET_PS",
    "MIN_ACQUIRE_TAGS",
    "MIN_CORRELATION_Z",
    "Acquisition",
    "SlotClock",
    "acquire",
    "assign",
    "max_search_span_ps",
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


def max_search_span_ps(period_ps: float, max_ppm: float) -> float:
    """Longest acquisition window (ps) the frequency search takes without a sync channel."""
    if max_ppm <= 0:
        return math.inf
    # Two grid points short of the limit, so that rounding cannot push a window over it.
    return (MAX_GRID_POINTS - 3) / 2 * GRID_SLIP_SLOTS / (max_ppm * 1e-6) * period_ps


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
    """Nearest slot of each tag on ``clock`` (-1 when farther than ``half_width_ps``, or before
    slot 0, the transmitter's first).

    Returns:
        slots (int64, -1 for rejected tags) and residuals (ps, tag time minus slot centre).
    """
    if not isinstance(timestamps_ps, np.ndarray) or timestamps_ps.dtype != np.int64:
        raise TypeError("timestamps_ps must be a numpy int64 array")
    n, r, _ = _residuals(timestamps_ps, clock.ref_time_ps, clock.period_ps)
    s = n + clock.ref_slot
    slots = np.where((np.abs(r) <= half_width_ps) & (s >= 0), s, -1)
    return slots.astype(np.int64), r


