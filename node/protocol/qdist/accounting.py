"""What both ends compute alike: frame spans, the pre-reconciliation check, the key length."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.estimation import DecoyCounts, finite_key_length
from qkdnode.dsp.reconcile import ABORT_QBER
from qkdnode.dsp.reconcile.local import MIN_TAIL_FRACTION

from .events import QdistParams
from .session import _Audit

__all__ = ["PAYBACK_SHARE", "frame_starts", "key_length", "payable", "precheck"]


def frame_starts(n_bits: int, full_payload: int) -> list[tuple[int, int]]:
    """(start, stop) of each reconciliation frame, as ``reconcile_local`` frames its bits: the
    frames the block needs (full payloads, and one more for a rest of at least
    ``MIN_TAIL_FRACTION`` of a payload) share the bits equally (lengths differ by at most one),
    so no frame is a heavily shortened tail whose first syndrome cannot start low; a shorter
    rest is left out and the frames are full. Bob reads the spans from the syndromes."""
    if n_bits < 0 or full_payload < 1:
        raise ValueError(f"need n_bits >= 0 and full_payload >= 1, got {n_bits}, "
                         f"{full_payload}")
    full, rest = divmod(n_bits, full_payload)
    frames = full + (1 if rest >= MIN_TAIL_FRACTION * full_payload else 0)
    if frames == 0:
        return []
    used = n_bits if frames > full else full * full_payload
    base, longer = divmod(used, frames)
    out = []
    offset = 0
    for k in range(frames):
        length = base + (1 if k < longer else 0)
        out.append((offset, offset + length))
        offset += length
    return out


def precheck(counts: DecoyCounts, params: QdistParams) -> str | None:
    """Why the block is aborted before reconciliation (both ends decide alike), else None."""
    limit = min(params.qber_abort, ABORT_QBER)
    qber = counts.qber_z
    if qber is not None and qber > limit:
        return f"abort: QBER estimate {qber:.4f} above {limit}"
    if counts.n_x_total < 1:
        return "no X-basis detections"
    return None


# A completed block pays back at most this share of its key per direction in authentication
# pads (oldest first); the rest of what is owed carries over to the next block. Without the
# cap, a debt larger than one block's key (many aborted blocks or re-arms in a row on a link
# with short blocks) made every later block abort, and the pads ran out.
PAYBACK_SHARE = 0.25


def payable(owed: tuple[int, int], length: int, pad_bits: int) -> tuple[int, int]:
    """Pads (out, in) a block of final ``length`` bits pays back of the ``owed`` ones: at most
    ``PAYBACK_SHARE`` of its key per direction (both ends compute it from numbers both hold)."""
    cap = int(length * PAYBACK_SHARE) // pad_bits
    return min(owed[0], cap), min(owed[1], cap)


def key_length(audit: _Audit, counts: DecoyCounts, params: QdistParams,
               kept: NDArray[np.bool_], errors: int, eps_frame: float,
               auth_bits: int) -> tuple[int, str | None]:
    """Final length before the authentication key is taken off, as both ends compute it.

    Mirrors :func:`qkdnode.dsp.distill.distill_local`: leakage is every disclosed bit (read
    from ``audit``) plus the bits of discarded and unattempted frames; the length is the
    Lim et al. bound capped by the kept bits; and it must exceed the ``auth_bits`` of
    authentication key the block used, which it pays back. Fills in the audit's estimate.

    Returns:
        ``(length, None)``, or ``(0, reason)`` for no key.
    """
    n_bits = int(kept.size)
    kept_bits = int(np.count_nonzero(kept))
    frames = audit["frames_attempted"]
    eps_cor = min(1.0, eps_frame * max(1, frames))
    leakage = audit["disclosed_bits"] + (n_bits - kept_bits)
    qber = errors / kept_bits if kept_bits else None
    audit["kept_bits"], audit["qber"], audit["leakage_bits"] = kept_bits, qber, leakage
    audit["eps_cor"] = eps_cor
    estimate = finite_key_length(counts, params.mu, params.p, eps_cor=eps_cor,
                                 ec_leak=float(leakage), qber=qber,
                                 qber_abort=params.qber_abort, eps_sec=params.secrecy[0],
                                 kappa=params.secrecy[1])
    audit["estimate"], audit["eps_sec"] = estimate, estimate.eps_sec
    length = max(0, min(estimate.ell, kept_bits))
    audit["ell"], audit["auth_bits"] = length, auth_bits
    if length == 0:
        return 0, estimate.reason or "no frame was reconciled"
    if length <= auth_bits:
        return 0, (f"key of {length} bits does not cover the {auth_bits} bits of "
                   "authentication key the block used")
    return length, None

