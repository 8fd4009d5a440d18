"""What a Qdist end reports to its caller, the per-block audit record, and the parameters."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.estimation import DEFAULT_QBER_ABORT, KeyLengthResult
from qkdnode.dsp.reconcile.history import START_QUANTILE

__all__ = [
    "NEED_DATA",
    "BlockAborted",
    "BlockAudit",
    "BlockCompleted",
    "DetectionsReceived",
    "FrameRejected",
    "QdistParams",
    "ReceiverArmed",
    "TransmitterRestarted",
    "TransmitterStarted",
]

# Seconds a block may take from its start before it is aborted; a block of 10^6 sifted bits
# takes a few seconds of decoding on one core, so a minute means a stalled peer or channel.
DEFAULT_BLOCK_TIMEOUT_S = 60.0
# Secrecy when neither eps_sec nor kappa is given (as dsp.distill.distill_local).
DEFAULT_EPS_SEC = 1e-10


@dataclass(frozen=True, slots=True)
class QdistParams:
    """Parameters both ends must share (Bob sends their digest; Alice refuses a mismatch).

    Attributes:
        mu: intensities (mu1, mu2, mu3) of the decoy-state source.
        p: probabilities of sending them.
        eps_cor: correctness of the whole block (split over its reconciliation frames).
        eps_sec: secrecy parameter; or else
        kappa: secrecy per key bit (eps_sec = kappa * length); neither: eps_sec = 1e-10.
        qber_abort: abort above this QBER (also capped by reconciliation's own limit).
        code_length: LDPC frame length of the shipped family (None: the default family).
        block_timeout_s: seconds from a block's start before it is aborted (local policy:
            not part of :meth:`digest`, so the two ends may differ).
        start_quantile: where Alice starts each frame's blind reconciliation
            (:meth:`qkdnode.dsp.reconcile.ReconcileHistory.start_efficiency`): higher trades a
            little key for fewer decoding rounds (Alice's own policy, not in :meth:`digest`).
    """

    mu: tuple[float, float, float]
    p: tuple[float, float, float]
    eps_cor: float = 1e-15
    eps_sec: float | None = None
    kappa: float | None = None
    qber_abort: float = DEFAULT_QBER_ABORT
    code_length: int | None = None
    block_timeout_s: float = DEFAULT_BLOCK_TIMEOUT_S
    start_quantile: float = START_QUANTILE

    def __post_init__(self) -> None:
        if self.eps_sec is not None and self.kappa is not None:
            raise ValueError("give at most one of eps_sec and kappa")
        if not 0.0 < self.eps_cor < 1.0:
            raise ValueError(f"eps_cor must lie in (0, 1), got {self.eps_cor}")
        if not self.block_timeout_s > 0.0:
            raise ValueError(f"block_timeout_s must be > 0, got {self.block_timeout_s}")
        if not 0.0 < self.start_quantile < 1.0:
            raise ValueError(f"start_quantile must lie in (0, 1), got {self.start_quantile}")

    @property
    def secrecy(self) -> tuple[float | None, float | None]:
        """The ``(eps_sec, kappa)`` arguments of ``finite_key_length``."""
        if self.eps_sec is None and self.kappa is None:
            return DEFAULT_EPS_SEC, None
        return self.eps_sec, self.kappa

    def digest(self) -> str:
        """A short digest of every field that both ends must share (they compare them); the
        block timeout and the start quantile are each end's own and left out."""
        shared = dataclasses.replace(self, block_timeout_s=DEFAULT_BLOCK_TIMEOUT_S,
                                     start_quantile=START_QUANTILE)
        return hashlib.sha256(repr(dataclasses.astuple(shared)).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BlockAudit:
    """The audit record of one block: everything needed to check its key length, no key bits.

    Attributes:
        block_id, role: the block and this end (``"alice"`` or ``"bob"``).
        outcome: ``"completed"`` or ``"aborted"``; ``reason`` says why for an abort.
        detections: detections Bob announced.
        n_x, n_z, m_z: sifted X and Z detections and Z errors per intensity class.
        qber_z: Z-basis error rate; ``qber``: error rate of the kept X bits before correction.
        sifted_bits, kept_bits: X bits sifted, and those in verified frames.
        frames_attempted, frames_discarded, rounds: reconciliation frames and dialogue rounds.
        disclosed_bits: syndrome, reveal and tag bits sent; ``leakage_bits`` adds the bits of
            discarded frames (see :mod:`qkdnode.dsp.distill`).
        eps_cor, eps_sec: correctness achieved and secrecy used.
        estimate: the finite-key bounds (Lim et al. 2014), None before estimation.
        ell: key length the bounds give (capped by the kept bits).
        auth_bits: authentication key the block used (both directions), taken from its key.
        auth_epsilon: forgery bound of the tags this end verified in the block.
        final_length: key bits delivered (``ell - auth_bits``, 0 on abort).
        frames_sent, frames_received, frames_rejected, pads_skipped: frame accounting.
        auth_pads_ab, auth_pads_ba: pads (64 bits each) the block paid back, per direction
            (``auth_bits`` is 64 times their sum): the pads spent since the last block both
            ends completed, up to this block's last frame, oldest first, at most
            ``accounting.PAYBACK_SHARE`` of the key per direction; 0 unless completed.
        auth_pads_outside: how many pads since the last settled block were spent outside
            this block's own frames (control frames, aborted blocks, rejected, failed or
            skipped frames).
        auth_pads_owed: pads spent and not yet paid back (carried to the next block).
    """

    block_id: int
    role: str
    outcome: str
    reason: str | None
    detections: int
    n_x: tuple[int, int, int] | None
    n_z: tuple[int, int, int] | None
    m_z: tuple[int, int, int] | None
    qber_z: float | None
    qber: float | None
    sifted_bits: int
    kept_bits: int
    frames_attempted: int
    frames_discarded: int
    rounds: int
    disclosed_bits: int
    leakage_bits: int
    eps_cor: float
    eps_sec: float | None
    estimate: KeyLengthResult | None
    ell: int
    auth_bits: int
    auth_epsilon: float
    final_length: int
    frames_sent: int
    frames_received: int
    frames_rejected: int
    pads_skipped: int
    auth_pads_ab: int = 0
    auth_pads_ba: int = 0
    auth_pads_outside: int = 0
    auth_pads_owed: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of the audit log)."""
        out = dataclasses.asdict(self)
        for name in ("n_x", "n_z", "m_z"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out


@dataclass(frozen=True, slots=True, eq=False)
class BlockCompleted:
    """The block gave a key (uint8 0/1; the authentication key already taken off)."""

    block_id: int
    key: NDArray[np.uint8] = field(repr=False)
    audit: BlockAudit


@dataclass(frozen=True, slots=True)
class BlockAborted:
    """The block gave no key, and why."""

    block_id: int
    reason: str
    audit: BlockAudit


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame was dropped without effect on the block (replayed, stale, or out of step)."""

    block_id: int
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class DetectionsReceived:
    """Alice: Bob announced a block she has not started; call ``start_block`` for it."""

    block_id: int


@dataclass(frozen=True, slots=True)
class ReceiverArmed:
    """Alice: Bob's tagger waits for the start marker (arm ``epoch``); start the output (anew,
    at a block later than every block played) and announce it (``announce_start``)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class TransmitterStarted:
    """Bob: Alice's output started for arm ``epoch``; the start marker is the first slot of
    block ``first_block``."""

    epoch: int
    first_block: int


@dataclass(frozen=True, slots=True)
class TransmitterRestarted:
    """Bob: Alice's end restarted from its saved session state (arm ``epoch`` was the last she
    knew): her output's run is gone; re-arm the tagger and announce a new arm."""

    epoch: int


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
