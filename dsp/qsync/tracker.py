"""Qsync tracking: a stream of tags to slots, with loss-of-lock detection and re-acquisition."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ..errors import AcquisitionFailed
from .acquire import (
    CORE_SIGMAS,
    DEFAULT_ACCEPT_SIGMAS,
    DEFAULT_MAX_PPM,
    MAX_OFFSET_PS,
    MIN_ACQUIRE_TAGS,
    Acquisition,
    SlotClock,
    _check_period,
    _check_tags,
    _Pattern,
    _reach,
    acquire,
    max_search_span_ps,
)
from .kernels import track_kernel

__all__ = [
    "DEFAULT_ACQUIRE_TAGS",
    "DEFAULT_BLOCK_TAGS",
    "SlotBatch",
    "SlotTracker",
    "TrackerStatus",
]

# Tags per tracking block: the core fraction of a block then has a binomial spread of ~0.02.
DEFAULT_BLOCK_TAGS = 512
# Detections per acquisition: enough for a correlation peak of ~20 sigma on a decoy pattern.
DEFAULT_ACQUIRE_TAGS = 2048
# Share of a block's fitted frequency error applied to the period: the noise of one block's
# slope (0.05-0.2 ppm at 512 tags and 10 % jitter, by the block's duration) averages over
# ~1 / gain blocks, while a frequency step is followed within a few blocks (larger steps lose
# lock and re-acquire).
FREQUENCY_GAIN = 0.25
# The pattern check is used when half the locked score is this many standard errors above 0.
PATTERN_CHECK_Z = 6.0
# The phase check is used when the locked core fraction exceeds that of tags at random phases
# by this much (else a block cannot tell them apart: jitter near the whole slot).
PHASE_CHECK_MARGIN = 0.2
# Fewest core tags for a block's residual RMS to be reported.
MIN_RMS_TAGS = 16
# Smallest block: the checks need a few tens of tags to mean anything.
MIN_BLOCK_TAGS = 16


@dataclass(frozen=True, slots=True)
class SlotBatch:
    """Detections whose slots are decided, in time order.

    Attributes:
        index: position of each tag in the stream passed to :meth:`SlotTracker.process`
            (counting every tag, detections or not, from 0).
        timestamps_ps: the tags' times.
        channels: their channels.
        slots: slot of each detection; -1 when rejected (far from every slot centre, or before
            slot 0) or unassigned (no lock).
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
        residual_rms_ps: RMS residual of the last good block's core tags (nan when none).
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
class _Buffer:
    """Detections not yet returned, oldest first, with the decisions held for the head."""

    index: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    t: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    ch: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    # The last good block, tracked but held until the next block's verdict: [0, held).
    held_slots: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    held_outside: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, np.bool_))
    held_weights: NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))


def _change_point(y: NDArray[np.float64]) -> int:
    """Start of the suffix with the largest sum of ``y`` (a one-sided CUSUM)."""
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
        _reach(self._pattern.weights.size, self._nominal, delay_ps, max_offset_ps, max_ppm)
        if not detector_channels:
            raise ValueError("detector_channels must name at least one channel")
        if sync_channel is not None and sync_channel in detector_channels:
            raise ValueError(f"sync_channel {sync_channel} is also a detector channel")
        if block_tags < MIN_BLOCK_TAGS:
            raise ValueError(f"block_tags must be >= {MIN_BLOCK_TAGS}, got {block_tags}")
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
        if self._sync_channel is not None and self._sync_every:
            self._max_span_ps = math.inf
        else:
            self._max_span_ps = max_search_span_ps(self._nominal, self._max_ppm)
        self._seen = 0
        self._last_t = -(2**63)
        self._buf = _Buffer()
        self._sync_t = np.empty(0, np.int64)
        self._acq: Acquisition | None = None
        self._clock: SlotClock | None = None
        self._locked = False
        self._rms = math.nan
        self._assigned = self._rejected = self._unassigned = 0
        self._losses = self._acquisitions = 0
        self._out: list[tuple[NDArray[np.int64], ...]] = []

    # -- public ------------------------------------------------------------------------------

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
        """Takes the next tags of the stream; returns the detections decided so far.

        Tags must be in time order within a call. A call starting earlier than the previous
        one ended is a backward clock step: the tags before it are decided as at the stream's
        end, lock is lost (counted) and the new tags are acquired afresh.
        """
        t, ch = _check_tags(timestamps_ps, channels)
        if t.size and t[0] < self._last_t:
            # The tagger's clock stepped back between reads (within a read it never does):
            # finish the old segment and acquire the new one.
            self._end_segment()
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
        """Decides every held detection (end of the stream) and returns them.

        The tracker stays locked: later tags continue the stream.
        """
        locked = self._locked
        self._end_segment()
        self._locked = locked
        if locked:
            self._losses -= 1
        return self._take()

    def _end_segment(self) -> None:
        self._run(final=True)
        b = self._buf
        if b.held_slots.size:
            self._commit(b.held_slots)
        if b.t.size:
            self._drop(b.t.size)
        if self._locked:
            self._losses += 1
            self._locked = False
        self._sync_t = np.empty(0, np.int64)

    # -- output --------------------------------------------------------------------------------

    def _take(self) -> SlotBatch:
        parts = self._out
        self._out = []
        if not parts:
            e = np.empty(0, np.int64)
            return SlotBatch(e, e.copy(), e.copy(), e.copy())
        index, t, ch, slots = (np.concatenate([p[i] for p in parts]) for i in range(4))
        return SlotBatch(index, t, ch, slots)

    def _consume(self, n: int, slots: NDArray[np.int64]) -> None:
        """Returns the buffer's first ``n`` detections with ``slots``; forgets any held block."""
        b = self._buf
        self._out.append((b.index[:n], b.t[:n], b.ch[:n], slots))
        b.index, b.t, b.ch = b.index[n:], b.t[n:], b.ch[n:]
        b.held_slots = np.empty(0, np.int64)
        b.held_outside = np.empty(0, np.bool_)
        b.held_weights = np.empty(0, np.float64)
        if self._sync_t.size and b.t.size:
            # Sync tags long before the buffer's head can serve no acquisition window.
            cut = max(int(np.searchsorted(self._sync_t, b.t[0])) - 2, 0)
            self._sync_t = self._sync_t[cut:]

    def _drop(self, n: int) -> None:
        self._unassigned += n
        self._consume(n, np.full(n, -1, np.int64))

    def _commit(self, slots: NDArray[np.int64]) -> None:
        ok = int(np.count_nonzero(slots >= 0))
        self._assigned += ok
        self._rejected += slots.size - ok
        self._consume(slots.size, slots)

    # -- acquisition and tracking ----------------------------------------------------------------

    def _run(self, final: bool) -> None:
        while True:
            if not self._locked:
                outcome = self._try_acquire(final)
                if outcome == "wait":
                    return
                if outcome == "retry":
                    continue
            if not self._track(final):
                return

    def _try_acquire(self, final: bool) -> str:
        """"locked", "wait" (too few tags) or "retry" (failed; the window's head dropped)."""
        b = self._buf
        if b.t.size == 0:
            return "wait"
        # Without a sync channel the window must fit the frequency search: a sparse stream
        # is acquired on fewer tags rather than not at all.
        in_span = int(np.searchsorted(b.t, b.t[0] + self._max_span_ps, side="right"))
        n = min(b.t.size, self._acquire_n, in_span)
        more_may_come = n == b.t.size and n < self._acquire_n
        if more_may_come and not final:
            return "wait"
        if n < MIN_ACQUIRE_TAGS:
            self._drop(n)
            return "retry" if b.t.size else "wait"
        delay = self._clock.delay_ps if self._clock is not None else self._delay
        s_lo, s_hi = np.searchsorted(self._sync_t, [b.t[0], b.t[n - 1] + 1])
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
            # Give up the older half of the window and try again with newer tags; with a long
            # backlog, skip to its newest two windows (each attempt costs up to ~0.3 s, so
            # retrying every half window of a large read would fall behind the stream).
            self._drop(max(n // 2, b.t.size - 2 * self._acquire_n, 1))
            return "retry"
        self._acq = acq
        self._clock = acq.clock
        self._locked = True
        self._acquisitions += 1
        return "locked"

    def _thresholds(self, acq: Acquisition) -> tuple[float, float, float, float]:
        """(half, core, max_outside, min_weight) of the checks for this acquisition."""
        period = acq.clock.period_ps
        half = min(0.5 * period, self._accept_sigmas * acq.sigma_ps)
        core = min(half, CORE_SIGMAS * acq.sigma_ps)
        uniform = core / (0.5 * period)
        f0 = acq.core_fraction
        # Phase: the fraction of tags far from a slot centre rises from 1 - f0 towards 1 - u.
        max_outside = 1.0 - 0.5 * (f0 + uniform) if f0 - uniform > PHASE_CHECK_MARGIN else 2.0
        # Whole slots: the mean pattern weight of assigned slots drops from s0 towards 0.
        s0 = acq.pattern_score
        usable = s0 > 0 and 0.5 * s0 * math.sqrt(self._block) / self._pattern.std >= (
            PATTERN_CHECK_Z)
        return half, core, max_outside, 0.5 * s0 if usable else -math.inf

    def _track(self, final: bool) -> bool:
        """Tracks what the buffer holds; False when nothing more can be done now."""
        acq, clock, b = self._acq, self._clock, self._buf
        assert acq is not None
        assert clock is not None
        start = b.held_slots.size
        avail = b.t.size - start
        if avail <= 0 or (avail < self._block and not final):
            return False
        half, core, max_outside, min_weight = self._thresholds(acq)
        slots = np.empty(avail, np.int64)
        outside = np.empty(avail, np.bool_)
        weights = np.empty(avail, np.float64)
        stop, failed, last_good, ref_time, ref_slot, period, rms = track_kernel(
            b.t, start, self._block, final, clock.ref_time_ps, clock.ref_slot,
            clock.period_ps, half, core, self._pattern.weights, max_outside, min_weight,
            FREQUENCY_GAIN, MIN_RMS_TAGS, slots, outside, weights)
        if stop > start:
            self._clock = SlotClock(int(ref_time), int(ref_slot), float(period))
            if not math.isnan(rms):
                self._rms = float(rms)
        # Decisions for the buffer from 0: the held block, then this call's blocks.
        examined = stop - start + (min(self._block, avail - (stop - start)) if failed else 0)
        all_slots = np.concatenate((b.held_slots, slots[:examined]))
        all_outside = np.concatenate((b.held_outside, outside[:examined]))
        all_weights = np.concatenate((b.held_weights, weights[:examined]))
        # The last good block: this call's, or the held one when this call had none.
        good_start = last_good if stop > start else 0
        if not failed:
            if good_start:
                self._commit(all_slots[:good_start])
            b = self._buf
            b.held_slots = all_slots[good_start:stop]
            b.held_outside = all_outside[good_start:stop]
            b.held_weights = all_weights[good_start:stop]
            return stop > start
        # A failed block at [stop, stop + m): locate the change in the last good block and it.
        self._losses += 1
        self._locked = False
        window = slice(good_start, stop + examined - (stop - start))
        bad = slice(stop, None)
        points = []
        if float(np.mean(all_outside[bad])) > max_outside:
            points.append(_change_point(all_outside[window].astype(np.float64) - max_outside))
        if float(np.mean(all_weights[bad])) < min_weight:
            points.append(_change_point(min_weight - all_weights[window]))
        if stop == start and not b.held_slots.size:
            # Failed at once after acquiring: nothing before the change was verified (the window
            # straddles a change, or its head is noise); give up a block and acquire again.
            self._drop(min(self._block, b.t.size))
            return True
        lost_at = good_start + (min(points) if points else 0)
        if lost_at:
            self._commit(all_slots[:lost_at])
        else:
            self._consume(0, np.empty(0, np.int64))
        return True
