"""Bob, the receiver's end of Qdist: announcement, Z bits, decoding, verification, key.

His block (:meth:`QdistBob.start_block` with his detections):

1. announce (slot, basis) of every detection (:class:`~.messages.DetectionsAnnounced`);
2. sift with Alice's answer (:func:`qkdnode.dsp.sifting.bob_sift`) and disclose his Z bits;
3. check Alice's counts against his own (he knows the X and Z detections per intensity);
4. decode every frame (:class:`qkdnode.dsp.reconcile.BobFrame`, one parallel decoder call per
   round), asking for reveals until it converges or nothing is left, and check Alice's
   verification tags (a tag weaker than the block's correctness budget is refused);
5. compute the key length himself from the same counts and leakage, refuse an announcement
   that differs, hash, confirm (:class:`~.messages.KeyConfirmed`) and report the key.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.estimation import DecoyCounts
from qkdnode.dsp.ldpc.codes import load_code
from qkdnode.dsp.ldpc.decoder import decode_syndromes
from qkdnode.dsp.privacy import toeplitz_hash
from qkdnode.dsp.reconcile import BobFrame, DecodingReported, FrameVerified
from qkdnode.dsp.sifting import BobDetections, SiftedBits, SiftReply, bob_sift
from qkdnode.dsp.verification import hash_points

from ...errors import LocalProtocolError, RemoteProtocolError
from .accounting import key_length, payable, precheck
from .events import QdistParams, TransmitterRestarted, TransmitterStarted
from .messages import (
    AmplificationAnnounced,
    ArmedAnnounced,
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

__all__ = ["QdistBob"]


class QdistBob(QdistEnd):
    """Bob's end of a Qdist link: one block at a time, for as many blocks as the key lasts.

    Args:
        params: the parameters shared with Alice.
        secret: the pre-shared authentication key (see :mod:`.session`).
    """

    role = "bob"
    _SENDS_AB = False

    def __init__(self, params: QdistParams, secret: bytes | bytearray) -> None:
        super().__init__(params, secret)
        # The last arm epoch announced (0: none yet), and the first block of the start that
        # answered it (None: none yet).
        self.arm_epoch = 0
        self.started: int | None = None
        self._reset_block()

    def _reset_block(self) -> None:
        self._state = "idle"
        self._detections: BobDetections | None = None
        self._sifted: SiftedBits | None = None
        self._counts: DecoyCounts | None = None
        self._frames: list[BobFrame] = []
        # The frames' decoder messages: one array per code, a row per frame (``self._row``),
        # so that a round of consecutive rows decodes in place, with no copies.
        self._stores: dict[str, NDArray[np.float32]] = {}
        self._row: list[int] = []
        self._spans: list[tuple[int, int]] = []
        self._waiting: dict[int, str] = {}  # frame -> "reveal" or "tag"
        self._status: dict[int, tuple[bool, int]] = {}
        self._eps_frame = 0.0

    def start_block(self, block_id: int, detections: BobDetections, now: float) -> None:
        """Starts a block: announces Bob's detections (bytes in :meth:`data_to_send`).

        Raises:
            LocalProtocolError: a block is running, or no pad is left to send with.
            TypeError, ValueError: bad arguments.
        """
        if not isinstance(detections, BobDetections):
            raise TypeError(f"detections must be BobDetections, got {type(detections).__name__}")
        self._begin(block_id, now)
        self._detections = detections
        self.audit["detections"] = int(detections.slots.size)
        try:
            self._send(DetectionsAnnounced(self.params.digest(), self.completed,
                                           detections.slots, detections.basis))
        except Exception:
            self._end_block()
            raise
        self._state = "sift"

    def announce_armed(self, now: float, *, repeat: bool = False) -> int:
        """Tells Alice that the tagger runs and waits for the start marker; returns the arm
        epoch: a new one (one more than the last in this session: Alice starts a new run), or
        with ``repeat`` the current one again (a new connection that has not seen its start
        yet: Alice announces it again). Bytes in :meth:`data_to_send`.

        Raises:
            LocalProtocolError: a block is running (abort it first), no pad is left, or a
                repeat before any arm.
        """
        del now
        if repeat:
            if self.arm_epoch == 0:
                raise LocalProtocolError("Qdist: no arm to repeat")
            self._send_control(ArmedAnnounced(self.arm_epoch))
            return self.arm_epoch
        epoch = self.arm_epoch + 1
        before = self.arm_epoch, self.started
        self.arm_epoch, self.started = epoch, None
        try:
            # Saved before it is announced: a restarted Bob must never announce it again.
            self._save()
            self._send_control(ArmedAnnounced(epoch))
        except LocalProtocolError:
            self.arm_epoch, self.started = before
            raise
        return epoch

    @property
    def _epoch(self) -> int:
        return self.arm_epoch

    @_epoch.setter
    def _epoch(self, value: int) -> None:
        self.arm_epoch = value

    def _control(self, message: ArmedAnnounced | StartAnnounced | ResumeAnnounced
                 ) -> str | None:
        if isinstance(message, ResumeAnnounced):
            if message.epoch != self.arm_epoch:
                return (f"resume for arm epoch {message.epoch}, not the current one "
                        f"({self.arm_epoch}): stale")
            self._restart_block(message)
            self.started = None
            self._events.append(TransmitterRestarted(message.epoch))
            return None
        if not isinstance(message, StartAnnounced):
            return super()._control(message)
        if message.epoch != self.arm_epoch:
            return (f"start of arm epoch {message.epoch}, not of the current one "
                    f"({self.arm_epoch}): stale or out of order")
        if self.started is not None:
            return f"a second start for arm epoch {message.epoch}"
        if message.first_block <= self.completed:
            return (f"first block {message.first_block} is not after the last completed "
                    f"block {self.completed}")
        self._restart_block(message)
        self.started = message.first_block
        self._events.append(TransmitterStarted(message.epoch, message.first_block))
        return None

    def _handle(self, message: Message) -> None:
        expected = {"sift": SiftingAnswered, "counts": CountsAnnounced,
                    "reconcile": ReconciliationSent, "amplify": AmplificationAnnounced}[self._state]
        if not isinstance(message, expected):
            raise RemoteProtocolError(f"Qdist: {type(message).__name__} out of order (Bob "
                                      f"expects {expected.__name__})")
        if isinstance(message, SiftingAnswered):
            self._on_sifting(message)
        elif isinstance(message, CountsAnnounced):
            self._on_counts(message)
        elif isinstance(message, ReconciliationSent):
            self._on_reconciliation(message)
        elif isinstance(message, AmplificationAnnounced):
            self._on_amplification(message)

    def _on_sifting(self, m: SiftingAnswered) -> None:
        assert self._detections is not None
        self._settle(m.completed)
        try:
            self._sifted = bob_sift(self._detections, SiftReply(m.match, m.intensity))
        except ValueError as exc:
            raise RemoteProtocolError(f"Qdist: sifting answer does not fit: {exc}") from None
        self._send(ZBitsDisclosed(self._sifted.z_bits))
        self._state = "counts"

    def _on_counts(self, m: CountsAnnounced) -> None:
        sifted = self._sifted
        assert sifted is not None
        if m.n_x != sifted.n_x or m.n_z != sifted.n_z:
            raise RemoteProtocolError("Qdist: Alice's detection counts differ from Bob's")
        self._counts = DecoyCounts(m.n_x, m.n_z, m.m_z)
        a = self.audit
        a["n_x"], a["n_z"], a["m_z"] = m.n_x, m.n_z, m.m_z
        a["qber_z"] = self._counts.qber_z
        a["sifted_bits"] = int(sifted.x_bits.size)
        reason = precheck(self._counts, self.params)
        if reason is not None:
            self._abort(reason, notify=False)  # Alice aborted alike on sending the counts
            return
        self._state = "reconcile"

    def _on_reconciliation(self, m: ReconciliationSent) -> None:
        sifted = self._sifted
        assert sifted is not None
        first = not self._frames
        if first != bool(m.syndromes) or (first and (m.reveals or m.tags)):
            raise RemoteProtocolError("Qdist: syndromes must come first, once, on their own")
        wanted = {**{r.frame: "reveal" for r in m.reveals}, **{t.frame: "tag" for t in m.tags}}
        if len(wanted) != len(m.reveals) + len(m.tags) or wanted != self._waiting:
            raise RemoteProtocolError("Qdist: Alice's reconciliation does not answer exactly "
                                      "the frames in progress")
        if first:
            self._start_frames(m, sifted.x_bits)
        a = self.audit
        a.add("disclosed_bits", sum(x.disclosed_bits for x in m.syndromes)
              + sum(x.disclosed_bits for x in m.reveals) + sum(x.disclosed_bits for x in m.tags))
        verdicts: list[FrameVerified] = []
        decode = list(range(len(self._frames))) if first else []
        try:
            for reveal in m.reveals:
                self._frames[reveal.frame].on_reveal(reveal)
                decode.append(reveal.frame)
            for t in m.tags:
                frame = self._frames[t.frame]
                if t.seed.size < hash_points(frame.bob_payload.size, self._eps_frame):
                    raise RemoteProtocolError(f"Qdist: tag of frame {t.frame} is weaker than "
                                              "the block's correctness budget")
                verdict = frame.on_tag(t)
                verdicts.append(verdict)
                self._status[t.frame] = (verdict.accepted, verdict.errors)
                del self._waiting[t.frame]
        except ValueError as exc:
            raise RemoteProtocolError(f"Qdist: reconciliation message does not fit: {exc}") \
                from None
        reports = self._decode(decode)
        if reports or verdicts:
            self._send(ReconciliationReplied(tuple(reports), tuple(verdicts)))
            a.add("rounds", 1)
        if not self._waiting:
            self._state = "amplify"

    def _start_frames(self, m: ReconciliationSent, x_bits: NDArray[np.uint8]) -> None:
        offset = 0
        spans: list[tuple[int, int]] = []
        codes = []
        for k, s in enumerate(m.syndromes):
            stop = offset + s.plan.payload_length
            if s.frame != k or stop > x_bits.size:
                raise RemoteProtocolError("Qdist: frames are not consecutive spans of the "
                                          "sifted bits")
            try:
                codes.append(load_code(s.plan.code_name))
            except ValueError as exc:
                raise RemoteProtocolError(f"Qdist: frame {k} is malformed: {exc}") from None
            spans.append((offset, stop))
            offset = stop
        frames = []
        for k, (s, code, (a0, a1)) in enumerate(zip(m.syndromes, codes, spans, strict=True)):
            try:
                frames.append(BobFrame(code, s, np.ascontiguousarray(x_bits[a0:a1])))
            except ValueError as exc:
                raise RemoteProtocolError(f"Qdist: frame {k} is malformed: {exc}") from None
        # Every frame is valid: now the message stores (zeros, as each frame's own buffer,
        # which is dropped here untouched).
        rows: list[int] = []
        counts: dict[str, int] = {}
        for code in codes:
            rows.append(counts.get(code.name, 0))
            counts[code.name] = rows[-1] + 1
        edges = {code.name: code.n_edges for code in codes}
        stores = {name: np.zeros((count, edges[name]), dtype=np.float32)
                  for name, count in counts.items()}
        for frame, code, row in zip(frames, codes, rows, strict=True):
            frame.messages = stores[code.name][row]
        self._frames, self._spans, self._stores, self._row = frames, spans, stores, rows
        self._eps_frame = self.params.eps_cor / len(self._frames)
        self.audit["frames_attempted"] = len(self._frames)

    def _decode(self, frames: list[int]) -> list[DecodingReported]:
        """One decoding round of ``frames``: one parallel call per (code, budget) group."""
        groups: dict[tuple[str, int, int | None], list[int]] = {}
        for k in frames:
            f = self._frames[k]
            groups.setdefault((f.code.name, f.round_budget(), f.round_stall()), []).append(k)
        reports: list[DecodingReported] = []
        for (_, budget, stall), members in groups.items():
            inputs = [self._frames[k].decode_input() for k in members]
            code = self._frames[members[0]].code
            store = self._stores[code.name]
            rows = [self._row[k] for k in members]
            messages, in_place = _message_rows(store, rows)
            result = decode_syndromes(code, np.stack([s for s, _, _ in inputs]),
                                      np.stack([llr for _, llr, _ in inputs]), budget,
                                      messages=messages, stall_iterations=stall,
                                      stall_drop=self._frames[members[0]].round_stall_drop(),
                                      kernel_order=True)
            if not in_place:
                store[rows] = messages
            for row, k in enumerate(members):
                frame = self._frames[k]
                report = frame.absorb(result.bits[row], bool(result.converged[row]))
                reports.append(report)
                if report.status == "decoded":
                    self._waiting[k] = "tag"
                elif report.status == "need_more":
                    self._waiting[k] = "reveal"
                else:
                    self._waiting.pop(k, None)
                    self._status[k] = (False, 0)
        return reports

    def _on_amplification(self, m: AmplificationAnnounced) -> None:
        assert self._sifted is not None
        assert self._counts is not None
        kept = np.zeros(self._sifted.x_bits.size, dtype=np.bool_)
        corrected = np.zeros(self._sifted.x_bits.size, dtype=np.uint8)
        errors = 0
        self.audit["frames_discarded"] = sum(1 for ok, _ in self._status.values() if not ok)
        for k, (a0, a1) in enumerate(self._spans):
            accepted, err = self._status[k]
            fixed = self._frames[k].corrected
            if accepted and fixed is not None:
                kept[a0:a1] = True
                corrected[a0:a1] = fixed
                errors += err
        owed = self._auth_bits(1, 0)  # since the last settled block, and Bob's confirmation
        length, reason = key_length(self.audit, self._counts, self.params, kept, errors,
                                    self._eps_frame, 0)
        if reason is not None:
            raise RemoteProtocolError(f"Qdist: Alice announced a key where Bob computes none "
                                      f"({reason})")
        if m.length != length:
            raise RemoteProtocolError(f"Qdist: Alice announced {m.length} bits, Bob computes "
                                      f"{length}")
        pads = payable(owed, length, PAD_BITS)
        self.audit["auth_bits"] = PAD_BITS * sum(pads)
        if m.auth_pads != (pads[1], pads[0]):
            # Each end takes its own count off the key: different counts, different keys.
            raise RemoteProtocolError(f"Qdist: Alice pays back {m.auth_pads} pads (Alice -> "
                                      f"Bob, Bob -> Alice), Bob counts {(pads[1], pads[0])}: "
                                      "the ends' authentication accounting differs")
        kept_bits = int(np.count_nonzero(kept))
        if m.seed.size != kept_bits + length - 1:
            raise RemoteProtocolError(f"Qdist: Toeplitz seed of {m.seed.size} bits, expected "
                                      f"{kept_bits + length - 1}")
        key = toeplitz_hash(np.ascontiguousarray(corrected[kept]), m.seed, length)
        mark = len(self._outbox)
        self._send(KeyConfirmed(length))
        try:
            self._complete(key, *pads)
        except LocalProtocolError:
            # A completion that cannot be saved is no completion: the confirmation does not
            # leave (its pad is skipped and paid back later), and Alice's block times out.
            del self._outbox[mark:]
            raise


def _message_rows(store: NDArray[np.float32], rows: list[int]
                  ) -> tuple[NDArray[np.float32], bool]:
    """The decoder messages of ``rows`` of ``store`` for one decoding call, and whether they
    are ``store``'s own: consecutive rows (every frame of a code in the first round) are a
    view, decoded in place; others are gathered into a copy, which the caller writes back."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return store[rows[0] : rows[0] + len(rows)], True
    return store[rows], False
