"""Qdist: the distillation dialogue between the two QKD modules of a link, sans-IO.

Bob (receiver) announces his detections; Alice (transmitter) answers sifting; Bob discloses his
Z bits; Alice announces the counts per intensity, then the reconciliation frames run
(syndromes, blind reveals, verification tags and verdicts, every frame of the block at once);
Alice announces the finite-key length and the privacy-amplification seed; Bob confirms. Every
frame is versioned, length-bounded, numbered and authenticated with a Wegman-Carter tag; the
authentication key starts from a pre-shared secret and is replenished from each block's key,
which is shortened by what the block used. See :mod:`.session` for the outcome of every kind
of bad frame, :mod:`.wire` for the frame format.

Results: :class:`BlockCompleted` (key and :class:`BlockAudit`) or :class:`BlockAborted`
(reason and audit); a wrong key is never an outcome. Outside blocks, Bob announces that his
tagger is armed (:meth:`QdistBob.announce_armed`, :class:`ReceiverArmed` at Alice) and Alice
that her output started and at which block (:meth:`QdistAlice.announce_start`,
:class:`TransmitterStarted` at Bob): the start order of the instruments.

A session can outlive the process of either end: :meth:`QdistEnd.persist_to` saves its state
at the points a restart needs, :meth:`QdistEnd.restore` takes it up in a new end (no pad is
ever used twice; block numbers go on); a restarted Alice tells Bob to arm anew
(:class:`TransmitterRestarted`). Every pad spent is paid back by the next block both ends
complete (see :mod:`.session`).
"""

from .alice import QdistAlice
from .bob import QdistBob
from .events import (
    NEED_DATA,
    BlockAborted,
    BlockAudit,
    BlockCompleted,
    DetectionsReceived,
    FrameRejected,
    QdistParams,
    ReceiverArmed,
    TransmitterRestarted,
    TransmitterStarted,
)
from .session import MIN_SECRET_BYTES, RESERVE_PADS, QdistEnd
from .wire import MAX_BODY, StreamError

__all__ = [
    "MAX_BODY",
    "MIN_SECRET_BYTES",
    "NEED_DATA",
    "RESERVE_PADS",
    "BlockAborted",
    "BlockAudit",
    "BlockCompleted",
    "DetectionsReceived",
    "FrameRejected",
    "QdistAlice",
    "QdistBob",
    "QdistEnd",
    "QdistParams",
    "ReceiverArmed",
    "StreamError",
    "TransmitterRestarted",
    "TransmitterStarted",
]
