"""Alice, the transmitter's end of Qdist: sifting answers, counts, syndromes, length and seed.

Her block, once Bob's :class:`~.messages.DetectionsAnnounced` arrives and her choices are given
(:meth:`QdistAlice.start_block`, before or after it):

1. sift (:func:`qkdnode.dsp.sifting.alice_sift`) and answer (:class:`~.messages.SiftingAnswered`);
2. with Bob's Z bits, count Z errors per intensity and announce them
   (:class:`~.messages.CountsAnnounced`); above the QBER limit both ends abort alike, else
   every frame's first syndrome follows;
3. answer each :class:`~.messages.ReconciliationReplied` with reveals and verification tags
   (:class:`qkdnode.dsp.reconcile.AliceFrame`) until every frame is verified or discarded;
4. the finite-key length (:func:`qkdnode.dsp.estimation.finite_key_length`, leakage as in
   :func:`qkdnode.dsp.distill.distill_local`) and a fresh Toeplitz seed
   (:class:`~.messages.AmplificationAnnounced`); on :class:`~.messages.KeyConfirmed`, the key.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.estimation import DecoyCounts
from qkdnode.dsp.privacy import toeplitz_hash
from qkdnode.dsp.reconcile import (
    AliceFrame,
    BitsRevealed,
    ReconcileHistory,
    TagComputed,
    choose_code,
    plan_frame,
)
from qkdnode.dsp.sifting import AliceChoices, BasisAnnouncement, SiftedBits, alice_sift, z_errors
from qkdnode.dsp.verification import hash_points

from ...errors import LocalProtocolError, RemoteProtocolError
from .accounting import frame_starts, key_length, payable, precheck
from .events import DetectionsReceived, QdistParams, ReceiverArmed
from .messages import (
    AmplificationAnnounced,
    ArmedAnnounced,
    BlockAbandoned,
    CountsAnnounced,
    DetectionsAnnounced,
    KeyConfirmed,
    Message,
    ReconciliationReplied,
    ReconciliationSent,
    ResumeAnnounced,
    SiftingAnswered,
    StartAnnounced,
    ZBitsDisclosed,
)
from .session import PAD_BITS, QdistEnd
from .wire import RawFrame

__all__ = ["QdistAlice"]

# QBER assumed for planning when the block has no Z detections to estimate it from.
FALLBACK_QBER = 0.05
# Efficiency each blind round reveals. Over Qdist a round costs a round trip and two
# authentication pads (2 x 64 bits off the key), so the module keeps the 0.01 step it was
# measured with (bench_link, sessions 3-5) rather than reconcile_local's 0.005, which was
# measured in one process only (at 50 km a 0.005 step on a 16 000-bit frame reveals ~5 bits).
QDIST_STEP_EFFICIENCY = 0.01


class QdistAlice(QdistEnd):
    """Alice's end of a Qdist link: one block at a time, for as many blocks as the key lasts.

    Args:
        params: the parameters shared with Bob.
        secret: the pre-shared authentication key (see :mod:`.session`).
        rng: randomness of the verification and privacy-amplification seeds (public values,
            but they must be unpredictable before they are sent): None (the default) draws
            them from the operating system's CSPRNG (:mod:`secrets`); a numpy Generator is
            for tests only (PCG64 is no CSPRNG).
        random_bytes: where the CSPRNG bytes come from when ``rng`` is None (default
            :func:`secrets.token_bytes`; a recorded run keeps what it drew, its replay
            gives the same bytes back).
    """

    role = "alice"
    _SENDS_AB = True

    def __init__(self, params: QdistParams, secret: bytes | bytearray,
                 rng: np.random.Generator | None = None,
                 random_bytes: Callable[[int], bytes] | None = None) -> None:
        super().__init__(params, secret)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator or None, got {type(rng).__name__}")
        self._rng = rng
        # Looked up at each draw when not given, so the OS CSPRNG is the one ``secrets`` has then.
        self._random_bytes = random_bytes
        self._announced: tuple[RawFrame, DetectionsAnnounced] | None = None
        # Bob's last arm epoch (0: he has not armed in this session).
        self.armed_epoch = 0
        # After a restart from saved state: the arm epoch Bob was last told to arm anew
        # after (None: not yet), and whether he has (a later arm came).
        self._resume_told: int | None = None
        self._resume_done = False
        # Where frames of each code decoded, across blocks: the start rule of reconcile_local.
        self.history = ReconcileHistory()
        # Why a restored session's saved history was not taken up (None: it was, or none).
        self.history_dropped: str | None = None
        self._reset_block()

    def _history_state(self) -> dict[str, Any]:
        """The reconciliation history, saved with the session: a restarted Alice starts
        frames where they decoded before the restart, not at the default start efficiency
        (fewer blind rounds)."""
        return self.history.to_dict()

    def _restore_history(self, data: dict[str, Any] | None) -> None:
        """Takes up the saved history; one it cannot read (public statistics only, never
        worth the session) is replaced by a fresh one, the reason in
        :attr:`history_dropped`. A state saved before the history was kept has none."""
        if data is None:
            return
        try:
            self.history = ReconcileHistory.from_dict(data)
        except (TypeError, ValueError) as exc:
            self.history = ReconcileHistory()
            self.history_dropped = f"the saved reconciliation history is unusable ({exc})"

    def _draw(self, n: int) -> bytes:
        """``n`` bytes from the given source, else from the OS CSPRNG."""
        if self._random_bytes is not None:
            return self._random_bytes(n)
        return secrets.token_bytes(n)

    def _tag_source(self, n_bits: int) -> np.random.Generator | bytes:
        """The randomness of one verification seed (:func:`~qkdnode.dsp.verification.draw_seed`)."""
        if self._rng is not None:
            return self._rng
        return self._draw(8 * hash_points(n_bits, self._eps_frame))

    def _random_bits(self, n: int) -> NDArray[np.uint8]:
        """``n`` random bits (0/1), e.g. a privacy-amplification seed."""
        if self._rng is not None:
            return self._rng.integers(0, 2, size=n, dtype=np.uint8)
        raw = np.frombuffer(self._draw(-(-n // 8)), np.uint8)
        return np.unpackbits(raw, count=n)

    def _reset_block(self) -> None:
        self._state = "idle"
        self._choices: AliceChoices | None = None
        self._sifted: SiftedBits | None = None
        self._counts: DecoyCounts | None = None
        self._frames: list[AliceFrame] = []
        self._spans: list[tuple[int, int]] = []
        self._waiting: dict[int, str] = {}  # frame -> "report" or "verdict"
        self._status: dict[int, tuple[bool, int]] = {}  # frame -> (kept, errors)
        self._disclosed: list[int] = []  # per frame, before its tag
        self._eps_frame = 0.0
        self._key: NDArray[np.uint8] | None = None
        self._pads = (0, 0)

    def start_block(self, block_id: int, choices: AliceChoices, now: float) -> None:
        """Starts a block with Alice's choices for its slots.

        Bob's announcement may already have arrived (:class:`~.events.DetectionsReceived`) or
        come later; :meth:`next_event` then carries on.

        Raises:
            LocalProtocolError: a block is running.
            TypeError, ValueError: bad arguments.
        """
        if not isinstance(choices, AliceChoices):
            raise TypeError(f"choices must be AliceChoices, got {type(choices).__name__}")
        self._begin(block_id, now)
        self._choices = choices
        self._state = "detections"
        if self._announced is not None and self._announced[0].block == block_id:
            raw, message = self._announced
            self._announced = None
            self._first_in = raw.seq
            self.audit.add("frames_received", 1)
            try:
                self._on_detections(message)
            except RemoteProtocolError as exc:
                self._abort(str(exc), notify=True)

    def refuse_announced(self, reason: str, now: float) -> None:
        """Aborts the announced block without starting it (Alice holds no choices for it: its
        frame never played); Bob is told, and the abort with ``reason`` is an event.

        Raises:
            LocalProtocolError: no announcement waits, or a block is running.
        """
        if self._announced is None:
            raise LocalProtocolError("Qdist: no announced block waits")
        block = self._announced[0].block
        self._announced = None
        self._begin(block, now)
        self._abort(reason, notify=True)

    def announce_start(self, epoch: int, first_block: int, now: float) -> None:
        """Tells Bob that the output started for his arm ``epoch`` with its start marker at
        the first slot of ``first_block`` (bytes in :meth:`data_to_send`).

        Raises:
            LocalProtocolError: a block is running, no pad is left, or ``epoch`` is not the
                arm epoch Bob announced last.
            ValueError: ``first_block`` not above the last completed block.
        """
        del now
        if epoch != self.armed_epoch:
            raise LocalProtocolError(f"Qdist: Bob's arm epoch is {self.armed_epoch}, not "
                                     f"{epoch}")
        if isinstance(first_block, bool) or not isinstance(first_block, int) or not \
                self.completed < first_block < 2**63:
            raise ValueError(f"first_block must be an int above the last completed block "
                             f"{self.completed}, got {first_block!r}")
        self._announced = None
        self._send_control(StartAnnounced(epoch, first_block))

    @property
    def _epoch(self) -> int:
        return self.armed_epoch

    @_epoch.setter
    def _epoch(self, value: int) -> None:
        self.armed_epoch = value

    def _control(self, message: ArmedAnnounced | StartAnnounced | ResumeAnnounced
                 ) -> str | None:
        if not isinstance(message, ArmedAnnounced):
            return super()._control(message)
        if message.epoch < self.armed_epoch:
            return (f"arm epoch {message.epoch} is before the last one ({self.armed_epoch}): "
                    "stale")
        if self.restored and not self._resume_done:
            if self._resume_told is None or message.epoch <= self._resume_told:
                # This end restarted: the output's run Bob's tagger was timed by is gone.
                # Every arm until a new one (his answer) is told so.
                self.armed_epoch = message.epoch
                self._announced = None
                try:
                    self._send_control(ResumeAnnounced(message.epoch))
                except LocalProtocolError as exc:
                    return f"cannot answer with ResumeAnnounced: {exc}"
                self._resume_told = message.epoch
                return None
            self._resume_done = True
        if message.epoch > self.armed_epoch:
            self._restart_block(message)
            self.armed_epoch = message.epoch
            self._announced = None  # an announcement of the old run will not be started
        # The same epoch again: Bob reconnected without the start (announce it again).
        self._events.append(ReceiverArmed(message.epoch))
        return None

    @property
    def announced(self) -> int | None:
        """The block whose announcement waits for :meth:`start_block` (None: none waits)."""
        return None if self._announced is None else self._announced[0].block

    # ----------------------------------------------------------------------- dispatch

    def _new_block(self, raw: RawFrame, message: Message) -> bool:
        if isinstance(message, BlockAbandoned) and raw.block == self.announced:
            # Bob gave up the block he announced before Alice started it (she was stopped
            # over Kq-2 while his block timed out): it will not be started.
            self._announced = None
            return False
        if not isinstance(message, DetectionsAnnounced) or raw.block <= self.completed:
            return False
        if self.block is not None:
            if raw.block < self.block:
                return False
            # An authentic announcement of a later block: Bob has moved on (his abort of this
            # one may have been lost with a connection), so this block cannot complete.
            self._abort(f"peer started block {raw.block} instead", notify=True)
        self._announced = (raw, message)
        self._events.append(DetectionsReceived(raw.block))
        return True

    def _handle(self, message: Message) -> None:
        expected = {"detections": DetectionsAnnounced, "zbits": ZBitsDisclosed,
                    "reconcile": ReconciliationReplied, "confirm": KeyConfirmed}[self._state]
        if not isinstance(message, expected):
            raise RemoteProtocolError(f"Qdist: {type(message).__name__} out of order (Alice "
                                      f"expects {expected.__name__})")
        if isinstance(message, DetectionsAnnounced):
            self._on_detections(message)
        elif isinstance(message, ZBitsDisclosed):
            self._on_z_bits(message)
        elif isinstance(message, ReconciliationReplied):
            self._on_reply(message)
        elif isinstance(message, KeyConfirmed):
            self._on_confirmed(message)

    # ----------------------------------------------------------------------- steps

    def _on_detections(self, m: DetectionsAnnounced) -> None:
        assert self._choices is not None
        if m.params_digest != self.params.digest():
            raise RemoteProtocolError("Qdist: Bob's parameters differ from Alice's")
        self._settle(m.completed)
        self.audit["detections"] = int(m.slots.size)
        try:
            sifted, reply = alice_sift(self._choices, BasisAnnouncement(m.slots, m.basis))
        except ValueError as exc:
            raise RemoteProtocolError(f"Qdist: announcement does not fit: {exc}") from None
        self._sifted = sifted
        self._send(SiftingAnswered(self.completed, reply.match, reply.intensity))
        self._state = "zbits"

    def _on_z_bits(self, m: ZBitsDisclosed) -> None:
        sifted = self._sifted
        assert sifted is not None
        if m.bits.size != sifted.z_bits.size:
            raise RemoteProtocolError(f"Qdist: Bob disclosed {m.bits.size} Z bits, Alice "
                                      f"sifted {sifted.z_bits.size}")
        counts = CountsAnnounced(sifted.n_x, sifted.n_z,
                                 z_errors(sifted.z_bits, m.bits, sifted.z_intensity))
        self._counts = DecoyCounts(counts.n_x, counts.n_z, counts.m_z)
        a = self.audit
        a["n_x"], a["n_z"], a["m_z"] = counts.n_x, counts.n_z, counts.m_z
        a["qber_z"] = self._counts.qber_z
        a["sifted_bits"] = int(sifted.x_bits.size)
        reason = precheck(self._counts, self.params)
        if reason is not None:
            # Bob gets the counts and aborts alike (precheck), so both audit logs hold the
            # block's counts and QBER (his module watches it for misnumbered slots). Without a
            # pad left he cannot be told; his block times out instead.
            with contextlib.suppress(LocalProtocolError):
                self._send(counts)
            self._abort(reason, notify=False)
            return
        qber = self._counts.qber_z if self._counts.qber_z is not None else FALLBACK_QBER
        try:
            code = choose_code(qber, self.params.code_length)
        except ValueError as exc:
            # No shipped code of this length was validated at this QBER: an abort (the reason,
            # which names the validated ranges, goes to the audit), not a dead module.
            self._abort(f"no reconciliation code: {exc}", notify=True)
            return
        self._send(counts)
        full = plan_frame(code, code.n, qber).payload_length
        self._spans = frame_starts(sifted.x_bits.size, full)
        if not self._spans:
            self._abort("too few sifted X bits for one reconciliation frame", notify=True)
            return
        self._eps_frame = self.params.eps_cor / len(self._spans)
        start = self.history.start_efficiency(code, qber, self.params.start_quantile)
        self._frames = [AliceFrame(code, k, np.ascontiguousarray(sifted.x_bits[a0:a1]), qber,
                                   start, QDIST_STEP_EFFICIENCY)
                        for k, (a0, a1) in enumerate(self._spans)]
        syndromes = tuple(f.start() for f in self._frames)
        self._disclosed = [s.disclosed_bits for s in syndromes]
        self._waiting = {k: "report" for k in range(len(self._frames))}
        a["frames_attempted"] = len(self._frames)
        a.add("disclosed_bits", sum(s.disclosed_bits for s in syndromes))
        self._send(ReconciliationSent(syndromes=syndromes))
        self._state = "reconcile"

    def _on_reply(self, m: ReconciliationReplied) -> None:
        answered = [r.frame for r in m.reports] + [v.frame for v in m.verdicts]
        if sorted(answered) != sorted(self._waiting):
            raise RemoteProtocolError("Qdist: Bob's reply does not answer exactly the frames "
                                      "in progress")
        self.audit.add("rounds", 1)
        reveals: list[BitsRevealed] = []
        tags: list[TagComputed] = []
        for v in m.verdicts:
            if self._waiting[v.frame] != "verdict":
                raise RemoteProtocolError(f"Qdist: verdict for frame {v.frame} before its tag")
            if not 0 <= v.errors <= self._frames[v.frame].payload.size:
                raise RemoteProtocolError(f"Qdist: verdict for frame {v.frame} counts "
                                          f"{v.errors} errors in "
                                          f"{self._frames[v.frame].payload.size} bits")
            del self._waiting[v.frame]
            self._status[v.frame] = (v.accepted, v.errors)
            if v.accepted:
                frame = self._frames[v.frame]
                self.history.record(frame.code.name, frame.payload.size,
                                    self._disclosed[v.frame], frame.plan.step, v.errors)
        for r in m.reports:
            if self._waiting[r.frame] != "report":
                raise RemoteProtocolError(f"Qdist: report for frame {r.frame} after its tag")
            frame = self._frames[r.frame]
            if r.status == "decoded":
                tags.append(frame.tag(self._tag_source(frame.payload.size), self._eps_frame))
                self._waiting[r.frame] = "verdict"
            elif r.status == "need_more" and (reveal := frame.on_report(r)) is not None:
                reveals.append(reveal)
                self._disclosed[r.frame] += reveal.disclosed_bits
            else:
                del self._waiting[r.frame]
                self._status[r.frame] = (False, 0)
        if reveals or tags:
            self.audit.add("disclosed_bits", sum(x.disclosed_bits for x in reveals)
                           + sum(x.disclosed_bits for x in tags))
            self._send(ReconciliationSent(reveals=tuple(reveals), tags=tuple(tags)))
        if not self._waiting:
            self._amplify()

    def _amplify(self) -> None:
        assert self._sifted is not None
        assert self._counts is not None
        kept = np.zeros(self._sifted.x_bits.size, dtype=np.bool_)
        errors = 0
        self.audit["frames_discarded"] = sum(1 for ok, _ in self._status.values() if not ok)
        for k, (a0, a1) in enumerate(self._spans):
            accepted, err = self._status[k]
            if accepted:
                kept[a0:a1] = True
                errors += err
        # Pads owed: those spent since the last settled block, this block's announcement, and
        # Bob's confirmation; the block pays back what its key allows (payable).
        owed = self._auth_bits(1, 1)
        length, reason = key_length(self.audit, self._counts, self.params, kept, errors,
                                    self._eps_frame, 0)
        if reason is not None:
            self._abort(reason, notify=True)
            return
        self._pads = payable(owed, length, PAD_BITS)
        self.audit["auth_bits"] = PAD_BITS * sum(self._pads)
        seed = self._random_bits(int(kept.sum()) + length - 1)
        self._key = toeplitz_hash(np.ascontiguousarray(self._sifted.x_bits[kept]), seed, length)
        self._send(AmplificationAnnounced(length, seed, self._pads))
        self._state = "confirm"

    def _on_confirmed(self, m: KeyConfirmed) -> None:
        assert self._key is not None
        if m.length != self._key.size:
            raise RemoteProtocolError(f"Qdist: Bob confirmed {m.length} bits, Alice announced "
                                      f"{self._key.size}")
        self._complete(self._key, *self._pads)

