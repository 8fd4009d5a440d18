"""Information reconciliation: one-way LDPC syndrome coding, rate-adaptive and blind.

Protocol, per frame of ``n`` bits (one LDPC codeword):

1. The frame holds ``P`` payload bits (key), ``d`` *modulated* positions and ``n - d - P`` extra
   shortened positions (known zeros; used to lower the rate and to fill the input's tail). The
   ``d`` modulated positions are chosen once per code by untainted puncturing (Elkouss, Martinez-
   Mateo, Martin, 2012): each has a *dedicated* check that touches no other modulated position.
   Initially the first ``d - p`` are shortened (known zeros) and the last ``p`` punctured.
2. Alice gives each punctured position the value that makes its dedicated check's syndrome zero.
   Those ``p`` syndrome bits are then known to be zero and are not sent: Alice sends ``m - p``
   syndrome bits (:class:`SyndromeComputed`), exactly what punctured rate adaptation leaks.
3. Bob decodes (:func:`decode_syndrome`): channel LLRs on the payload, ``+/-LLR_LIMIT`` on known
   bits, 0 on punctured ones. If decoding fails he asks for more (:class:`DecodingReported`), and
   Alice reveals the values of the next punctured positions (:class:`BitsRevealed`): blind
   reconciliation (Martinez-Mateo, Elkouss, Martin, 2012), so the rate falls only as far as the
   frame needs and a rough prior QBER suffices. After a round that ended far from convergence
   (most checks still unsatisfied) Bob may ask for several steps at once
   (``DecodingReported.steps``; channel data, like the verdict). Once every punctured value is
   revealed (the full ``m``-bit syndrome is then known), rounds reveal payload bits, spread over
   the frame, up to ``PAYLOAD_REVEAL_EFFICIENCY``; if decoding still fails, the frame is
   discarded. Rounds continue from the decoder messages of the previous round (warm start).
4. After a converged decode, Alice sends a verification tag of her payload under a fresh seed
   (:class:`TagComputed`, :mod:`qkdnode.dsp.verification`); Bob keeps the frame only if his tag
   matches (:class:`FrameVerified`).

Leakage: every message has ``disclosed_bits``, the number of bits it reveals about the key
(syndrome bits, revealed values, tag bits). Frame parameters, seeds, the decoder's verdicts and
Bob's error count depend only on the channel, never on the key, and count zero.

Alice's side (:class:`AliceFrame`) holds only Alice's payload; Bob's side (:class:`BobFrame`)
holds only Bob's payload and the messages. :func:`reconcile_local` drives both in one process.

The input's tail (fewer bits than a frame's payload) is reconciled, unless it is shorter than
``MIN_TAIL_FRACTION`` of a full payload: such a short tail is left unkept (not attempted),
because its frame would leak far more than it yields. ``reconcile_local`` spreads the bits
equally over the frames they need (each a little shortened) rather than filling full frames and
a heavily shortened tail, whose first syndrome cannot start low (too few modulated positions);
when that would shorten every frame by more than ``PACK_SHORTENING`` (shortening costs
efficiency), full frames of a long code go first and the rest goes to shorter frames.

The first syndrome of a frame starts near where earlier frames of its code decoded
(:class:`ReconcileHistory`, shared by the blocks of a link), so few blind rounds are spent
below the frames' thresholds.

The package: :mod:`.plan` (untainted puncturing, frame plans), :mod:`.messages`, :mod:`.ends`
(:class:`AliceFrame`, :class:`BobFrame`), :mod:`.history` (:class:`ReconcileHistory`, the start
rule) and :mod:`.local` (:func:`reconcile_local`).
"""

from __future__ import annotations

from ..estimation import binary_entropy
from ..ldpc.codes import get_code
from ..ldpc.decoder import DecodeResult, decode_syndrome, decode_syndromes
from .ends import AliceFrame, BobFrame
from .history import ReconcileHistory
from .local import (
    ABORT_QBER,
    MIN_TAIL_FRACTION,
    START_QUANTILE,
    START_WINDOW,
    FrameOutcome,
    ReconcileReport,
    choose_code,
    reconcile_local,
)
from .messages import (
    BitsRevealed,
    DecodingReported,
    FrameVerified,
    Message,
    SyndromeComputed,
    TagComputed,
)
from .plan import FramePlan, modulated_positions, plan_frame

__all__ = [
    "ABORT_QBER",
    "MIN_TAIL_FRACTION",
    "START_QUANTILE",
    "START_WINDOW",
    "AliceFrame",
    "BitsRevealed",
    "BobFrame",
    "DecodeResult",
    "DecodingReported",
    "FrameOutcome",
    "FramePlan",
    "FrameVerified",
    "Message",
    "ReconcileHistory",
    "ReconcileReport",
    "SyndromeComputed",
    "TagComputed",
    "binary_entropy",
    "choose_code",
    "decode_syndrome",
    "decode_syndromes",
    "get_code",
    "modulated_positions",
    "plan_frame",
    "reconcile_local",
]
