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
    Detections are taken in blocks of ``block_tags`` (:func:`~.kernels.track_kernel`, numba;
    :func:`~.kernels.track_reference` its twin): each tag gets the nearest slot of the
    current line, tags farther than ``accept_sigmas`` jitter sigmas from every slot centre are
    rejected (slot -1, counted), and a least-squares fit of the residuals moves the line
    (phase and frequency) to the block's end. A block is bad when its fraction of tags close
    to a slot centre falls to midway between the locked value (measured at acquisition) and
    that of tags at random phases (a fractional clock step, a frequency jump beyond what a
    block absorbs), or when the mean pattern weight of the assigned slots falls to half its
    locked value (a whole-slot step, which residuals cannot show). Then the change point is
    located in the last two blocks (a one-sided CUSUM), the tags before it are kept, and those
    from it on are re-acquired from scratch: loss of sync costs the tags misassigned between
    the change and its located point, not a restart. A block that fails right after an
    acquisition has nothing verified before it: one block is dropped (unassigned) and the
    next window acquired. While acquisitions fail, the older half of each window is dropped
    (a long backlog is skipped to its newest two windows, so a dark or noisy stretch costs a
    bounded number of attempts). A read that starts earlier than the previous one ended is a
    backward clock step: the old segment is decided and the new one acquired. Slots before
    slot 0 (the transmitter's first) are never assigned. Output lags the input by at most two
    blocks (plus the acquisition window while unlocked); :meth:`SlotTracker.flush` drains it.

Limits
    The pattern must be longer than the search window (``L * T > 2 * max_offset_ps`` plus
    margins: 2^21 slots at 1 GHz for +-1 ms). Without a sync channel an acquisition window is
    cut to what the frequency search takes (~2.6e7 slots, :func:`max_search_span_ps`), so a
    sparse link acquires on fewer tags; the pattern correlation needs a few hundred. With
    jitter near a whole slot the phase check cannot tell lock from loss and is switched off;
    with a pattern of little contrast (or mostly dark counts) the whole-slot check is, and
    steps of whole slots then go unseen.
"""

from __future__ import annotations

from .acquire import (
    CORE_SIGMAS,
    DEFAULT_ACCEPT_SIGMAS,
    DEFAULT_MAX_PPM,
    MAX_OFFSET_PS,
    MIN_ACQUIRE_TAGS,
    MIN_CORRELATION_Z,
    Acquisition,
    SlotClock,
    acquire,
    assign,
    max_search_span_ps,
)
from .kernels import rayleigh_kernel, rayleigh_reference, track_kernel, track_reference
from .tracker import (
    DEFAULT_ACQUIRE_TAGS,
    DEFAULT_BLOCK_TAGS,
    SlotBatch,
    SlotTracker,
    TrackerStatus,
)

__all__ = [
    "CORE_SIGMAS",
    "DEFAULT_ACCEPT_SIGMAS",
    "DEFAULT_ACQUIRE_TAGS",
    "DEFAULT_BLOCK_TAGS",
    "DEFAULT_MAX_PPM",
    "MAX_OFFSET_PS",
    "MIN_ACQUIRE_TAGS",
    "MIN_CORRELATION_Z",
    "Acquisition",
    "SlotBatch",
    "SlotClock",
    "SlotTracker",
    "TrackerStatus",
    "acquire",
    "assign",
    "max_search_span_ps",
    "rayleigh_kernel",
    "rayleigh_reference",
    "track_kernel",
    "track_reference",
]
