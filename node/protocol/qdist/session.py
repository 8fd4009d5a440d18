"""What both Qdist ends share: authentication, sequence numbers, bad-frame outcomes, blocks.

Outcomes of bad input (every one has a test):

* foreign magic, another version, an oversized body (:class:`~.wire.StreamError`): the stream
  cannot be cut into frames any more; the block is **aborted**, later bytes are discarded until
  the caller has a new connection and calls :meth:`QdistEnd.reset_stream`;
* a sequence number below the next expected one (a replay, or a frame of a block already
  closed): **rejected** (:class:`~.events.FrameRejected`), no pad used, the block goes on;
* a tag that does not verify (any bit flipped, a forged frame, a sequence number beyond the
  pads held): the block is **aborted**, and the peer told so (authenticated
  :class:`~.messages.BlockAbandoned`); the pad is spent if the frame carried the next
  expected number, as :mod:`qkdnode.dsp.authentication` asks, else nothing is released (a
  number further on is untrusted and could otherwise burn every pad);
* an authentic frame whose sequence number jumps ahead (frames lost with a broken connection):
  **resync**: the pads in between are skipped, and the frame is taken if the block expects it;
* an authentic frame of another block: rejected; of the current block but not expected in its
  state, or with a malformed body: the block is aborted (the peer is out of step or broken).

Frames outside blocks (block field :data:`~.messages.CONTROL_BLOCK`): Bob's
:class:`~.messages.ArmedAnnounced` and Alice's :class:`~.messages.StartAnnounced`, the start
order of the instruments. They are authenticated and numbered like the others (a replay is
rejected by its sequence number); a malformed one, one sent to the wrong role, or one of a
stale arm epoch is **rejected**; one that arrives while a block runs **aborts** that block
first (a restart of the instruments ends the blocks in flight, and the pads of the block
could not be counted alike at both ends).

Authentication key: the pre-shared secret holds the hash key of each direction (8 bytes each)
then the pads, the first half for Alice -> Bob and the second for Bob -> Alice.

Replenishment. Each end keeps, per direction, the *covered* position: the pad index up to which
spent pads have been paid back by a *settled* block (0 at the start of the session). A block
that completes pays back every pad from the covered position to its own end position (one past
its last frame in that direction): its own frames' pads, and every pad spent since the last
settled block, by control frames, aborted blocks, rejected or skipped frames. It takes those
pads off the front of its key (so its key length is shorter by them; the audit shows both
directions and how many were spent outside the block) and sets them aside; they are appended
to the pad streams, and the covered positions move to the block's end, once both ends know the
other completed the block too (each end's first message of the next block names the last
block it completed: the *settle* point). If the peer did not complete it, the material is
dropped and the covered positions stay, so the next completed block pays for those pads.

Why both ends count alike: a block's end positions are the sequence numbers of its frames,
which both ends saw (a block completes only if every one of its frames arrived in order), and
the covered positions are end positions of settled blocks. Both ends decide whether to settle
a block from the same two numbers (the last block each completed, carried in the block's
first two messages, the announcement and the sifting answer), and a block completes only after
both messages arrived, so by the time it computes its length both ends have settled the same
blocks. Each end checks at its completion that the pads counted are the pads used, and
Alice's :class:`~.messages.AmplificationAnnounced` carries her count, which Bob compares with
his before he takes any key: a mismatch aborts the block at both ends (no key), never keys of
different lengths.

Restarts (:meth:`QdistEnd.persist_to`, :meth:`QdistEnd.restore`). An end that persists saves
its state (hash keys, held pads, positions, covered positions, the pending replenishment, the
completed block, a floor above every block begun, the arm epoch) before it sends with a pad at
or beyond its last *reservation* (then reserving :data:`RESERVE_PADS` more), when a block
begins or completes, and when Bob's arm epoch changes. A restored end sends from the saved
reservation on, so no pad is used twice; its peer skips the unused pads in between as it
skips lost frames (they are counted as spent, and paid back by the next completed block).
The agreement needs no extra exchange: the settle decision is made from the two completed
numbers the block's first messages carry, a completion is saved before this end can
announce it, and a settle before this end's next frame, so a restarted end settles exactly
what its peer settles (a completion it lost
is not announced, and the peer drops that block's replenishment as after any lost
confirmation). The receive position is saved with every save, not per frame: a restarted
end may take once more an authentic frame it had received since its last save (a replay by
an eavesdropper); such a frame belongs to the block that was in flight, which no longer
runs, so it is rejected or refused (a pad or two, never a key). A restarted Alice answers
Bob's next arm with :class:`~.messages.ResumeAnnounced` (her output's run is gone); Bob re-arms
(:class:`~.events.TransmitterRestarted`).
"""

from __future__ import annotations

import abc
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.authentication import HASH_KEY_BYTES, TAG_BYTES

from ...errors import LocalProtocolError, RemoteProtocolError
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
    _NeedData,
)
from .messages import (
    CONTROL_BLOCK,
    ArmedAnnounced,
    BlockAbandoned,
    Message,
    ResumeAnnounced,
    StartAnnounced,
    decode_message,
)
from .state import SessionState, decode_state, encode_state, session_id
from .wire import PadStream, RawFrame, StreamError, WireReader, encode_frame

__all__ = ["CONNECTION_LOST", "MIN_SECRET_BYTES", "PAD_BITS", "RESERVE_PADS", "QdistEnd"]

# The reason of a block aborted by :meth:`QdistEnd.connection_lost` starts with this.
CONNECTION_LOST = "connection lost"

# One pad per frame, each direction; a block takes about ten frames each way, so 64 pads per
# direction are enough for a few blocks (and aborts) before the first replenishment.
MIN_PADS_PER_DIRECTION = 64
MIN_SECRET_BYTES = 2 * HASH_KEY_BYTES + 2 * TAG_BYTES * MIN_PADS_PER_DIRECTION
PAD_BITS = 8 * TAG_BYTES

# Pads reserved per save of the session state: a frame beyond the last reservation first
# saves a new one this far ahead, so a busy link saves about once a block (ten frames each
# way), and a restart skips at most this many unused pads (well inside the 64-pad minimum).
RESERVE_PADS = 8

Event = (BlockCompleted | BlockAborted | FrameRejected | DetectionsReceived | ReceiverArmed
         | TransmitterStarted | TransmitterRestarted)
# The reason of a block aborted by a control frame (a restart of the instruments).
RESTARTED = "instruments restarted"


class _Audit:
    """The audit record while a block runs (mutable; frozen into a BlockAudit at the end)."""

    def __init__(self, block_id: int, role: str) -> None:
        self.values: dict[str, Any] = dict(
            block_id=block_id, role=role, detections=0, n_x=None, n_z=None, m_z=None,
            qber_z=None, qber=None, sifted_bits=0, kept_bits=0, frames_attempted=0,
            frames_discarded=0, rounds=0, disclosed_bits=0, leakage_bits=0, eps_cor=0.0,
            eps_sec=None, estimate=None, ell=0, auth_bits=0, auth_epsilon=0.0, final_length=0,
            frames_sent=0, frames_received=0, frames_rejected=0, pads_skipped=0,
            auth_pads_ab=0, auth_pads_ba=0, auth_pads_outside=0, auth_pads_owed=0)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self.values:
            raise KeyError(name)
        self.values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def add(self, name: str, amount: int | float) -> None:
        self.values[name] += amount

    def freeze(self, outcome: str, reason: str | None) -> BlockAudit:
        return BlockAudit(outcome=outcome, reason=reason, **self.values)


class QdistEnd(abc.ABC):
    """The part of a Qdist end both roles share. Use :class:`QdistAlice` or :class:`QdistBob`.

    Sans-IO: :meth:`receive_data` takes bytes, :meth:`next_event` processes frames and returns
    events (or :data:`NEED_DATA`), :meth:`data_to_send` gives the bytes to send; time comes in
    through ``now`` arguments, :meth:`get_timer` and :meth:`handle_timer`.
    """

    role = ""
    _SENDS_AB = True  # whether this end sends Alice -> Bob

    def __init__(self, params: QdistParams, secret: bytes | bytearray) -> None:
        if not isinstance(params, QdistParams):
            raise TypeError(f"params must be QdistParams, got {type(params).__name__}")
        if not isinstance(secret, bytes | bytearray):
            raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
        body = len(secret) - 2 * HASH_KEY_BYTES
        if len(secret) < MIN_SECRET_BYTES or body % (2 * TAG_BYTES):
            raise ValueError(f"secret must hold at least {MIN_SECRET_BYTES} bytes, 16 plus a "
                             f"multiple of {2 * TAG_BYTES}; got {len(secret)}")
        half = 2 * HASH_KEY_BYTES + body // 2
        ab = PadStream(bytes(secret[:HASH_KEY_BYTES]), bytes(secret[2 * HASH_KEY_BYTES:half]))
        ba = PadStream(bytes(secret[HASH_KEY_BYTES:2 * HASH_KEY_BYTES]), bytes(secret[half:]))
        self._out, self._in = (ab, ba) if self._SENDS_AB else (ba, ab)
        self.params = params
        self._reader = WireReader()
        self._outbox = bytearray()
        self._events: deque[Event] = deque()
        self._send_seq = 0
        self._recv_seq = 0
        self.broken = False
        # The current block.
        self.block: int | None = None
        self._audit: _Audit | None = None
        self._deadline = 0.0
        self._first_out = 0
        self._first_in: int | None = None
        # Replenishment of the last completed block, until both ends know it completed:
        # (block, Alice -> Bob material, Bob -> Alice material, its end positions out and in).
        self.completed = -1
        self._pending: tuple[int, bytes, bytes, int, int] | None = None
        # Pad positions (out, in) up to which spent pads are paid back by settled blocks.
        self._covered = (0, 0)
        # Persistence (see :meth:`persist_to`): the saver, the first send position not yet
        # reserved, one past the highest block begun, and whether this end was restored.
        self._session = session_id(secret)
        self._store: Callable[[bytes], None] | None = None
        self._reserved = 0
        self._block_floor = 0
        self.restored = False

    # ----------------------------------------------------------------------- public

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer (discarded while the stream is broken)."""
        if not self.broken:
            self._reader.feed(data)

    def data_to_send(self) -> bytes:
        """Bytes to send to the peer (and forget here)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> Event | _NeedData:
        """Processes received frames until one yields an event; :data:`NEED_DATA` when none."""
        while not self._events:
            if self.broken:
                return NEED_DATA
            try:
                raw = self._reader.next_frame()
            except StreamError as exc:
                self.broken = True
                self._reader.clear()
                if self.block is not None:
                    self._abort(f"stream broken: {exc}", notify=True)
                continue
            if raw is None:
                return NEED_DATA
            self._accept(raw)
        return self._events.popleft()

    def reset_stream(self) -> None:
        """A new connection is up: start cutting frames afresh (sequence numbers carry on)."""
        self._reader.clear()
        self.broken = False

    def authentic_new(self, raw: RawFrame) -> bool:
        """Whether ``raw``, the first frame of a new connection, is authentic and numbered at or
        after the next expected frame (so the peer, not a stranger or a replay, is on it):
        False for a sequence number already received, or a tag that does not verify.

        Changes nothing but the authentication's epsilon account (every attempt is charged): no
        pad is released, so a stranger cannot run the pads down; the frame is processed again,
        normally, if the connection it came on is taken.
        """
        if raw.seq < self._recv_seq:
            return False
        return self._in.verify(raw.signed, raw.tag, raw.seq)

    def connection_lost(self, reason: str) -> None:
        """The connection dropped: the running block is aborted (``reason`` in its audit; the
        peer cannot be told and aborts on its own loss or at its deadline), and unsent bytes and
        partial frames are dropped. Frames lost with the connection are resynced by sequence
        number. Call :meth:`reset_stream` once a new connection is up."""
        self._outbox.clear()
        self._reader.clear()
        self.broken = True
        if self.block is not None:
            self._abort(f"{CONNECTION_LOST}: {reason}", notify=False)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called (None: no block running)."""
        return self._deadline if self.block is not None else None

    def handle_timer(self, now: float) -> None:
        """Aborts the block if its time is up (its events come from :meth:`next_event`)."""
        if self.block is not None and now >= self._deadline:
            self._abort(f"block timed out after {self.params.block_timeout_s} s", notify=True)

    def abort_block(self, reason: str) -> None:
        """Aborts the current block from this side (the peer is told)."""
        if self.block is None:
            raise LocalProtocolError("Qdist: no block is running")
        self._abort(reason, notify=True)

    @property
    def pads_left(self) -> tuple[int, int]:
        """Pads held for (sending, receiving)."""
        return self._out.pads_left, self._in.pads_left

    @property
    def next_block(self) -> int:
        """The lowest block number above every block this session completed or began (also
        across restarts from saved state): new blocks are numbered from here on."""
        return max(self.completed + 1, self._block_floor)

    # ----------------------------------------------------------------------- persistence

    def persist_to(self, store: Callable[[bytes], None]) -> None:
        """Keeps the session across restarts of this end's process: ``store(state)`` must make
        ``state`` durable before it returns (an atomic replace of a file, say); it is called
        now, before a pad beyond the last reservation is used (reserving
        :data:`RESERVE_PADS` more), when a block begins or completes, and when Bob's arm
        epoch changes (a few saves per block).
        The state holds key material (hash keys, pads): keep it secret. A new end restored
        from it (:meth:`restore`) never reuses a pad and numbers blocks on.

        Raises:
            LocalProtocolError: the first save failed (the message says why).
        """
        self._store = store
        self._reserved = max(self._reserved, self._send_seq)
        self._save()

    def snapshot(self) -> bytes:
        """The session state (see :meth:`persist_to` and :mod:`.state`)."""
        return encode_state(SessionState(
            role=self.role, session=self._session,
            send_next=max(self._reserved, self._send_seq), recv_next=self._recv_seq,
            completed=self.completed, block_floor=self.next_block, covered=self._covered,
            pending=self._pending, epoch=self._epoch, out=self._out, into=self._in,
            history=self._history_state()))

    def restore(self, state: bytes) -> None:
        """Takes up the session a process of this end saved (:meth:`persist_to`): sending
        resumes at the saved reservation (the pads before it may have been used and are never
        used again), receiving where it was saved (the peer's frames resync it), block numbers
        and the arm epoch carry on, and a completed block's replenishment still waits for its
        settle point. A block that was in flight is gone (its pads are paid back by the next
        completed block, as those of any abort). Only on a new end, before anything else.

        Raises:
            ValueError: not a state of this end's role and secret, truncated, corrupt (the
                checksum does not match) or malformed; the message never quotes a value.
            LocalProtocolError: the end has already sent or received frames.
        """
        if self._send_seq or self._recv_seq or self.block is not None or self._store:
            raise LocalProtocolError("Qdist: restore only a new end")
        saved = decode_state(state, self.role, self._session)
        self._out, self._in = saved.out, saved.into
        self._send_seq = self._reserved = saved.send_next
        self._out.release(self._send_seq)
        self._recv_seq = saved.recv_next
        self.completed = saved.completed
        self._block_floor = saved.block_floor
        self._covered = saved.covered
        self._pending = saved.pending
        self._epoch = saved.epoch
        self._restore_history(saved.history)
        self.restored = True

    @property
    def _epoch(self) -> int:
        """The role's arm epoch (kept across restarts)."""
        return 0

    @_epoch.setter
    def _epoch(self, value: int) -> None:
        del value

    def _history_state(self) -> dict[str, Any] | None:
        """What the role keeps of its reconciliation history across restarts (Alice's)."""
        return None

    def _restore_history(self, data: dict[str, Any] | None) -> None:
        """Takes up the saved history (Alice's; see :meth:`_history_state`)."""
        del data

    def _save(self) -> None:
        """Saves the state if persisting.

        Raises:
            LocalProtocolError: the save failed (this end must not go on as if it had).
        """
        if self._store is None:
            return
        try:
            self._store(self.snapshot())
        except OSError as exc:
            raise LocalProtocolError(f"Qdist: cannot save the session state: {exc}") from None

    def _reserve(self) -> None:
        """Saves a reservation before the pad of the next send is used beyond the last one."""
        if self._store is not None and self._send_seq >= self._reserved:
            before = self._reserved
            # Never beyond the pads held (a restart resumes sending at the reservation: past
            # the end it would find no pad, though some were left); at least this send's.
            self._reserved = max(self._send_seq + 1,
                                 min(self._send_seq + RESERVE_PADS, self._out.end_seq))
            try:
                self._save()
            except LocalProtocolError:
                self._reserved = before
                raise

    # ----------------------------------------------------------------------- for the roles

    def _begin(self, block_id: int, now: float) -> None:
        if self.block is not None:
            raise LocalProtocolError(f"Qdist: block {self.block} is still running")
        if isinstance(block_id, bool) or not isinstance(block_id, int) or not \
                0 <= block_id < 2**63 or block_id <= self.completed:
            raise ValueError(f"block_id must be an int in [0, 2**63) above the last completed "
                             f"block {self.completed}, got {block_id!r}")
        # Saved before the block's first frame: a restarted end numbers its blocks above
        # every block it began, so above every block the peer may have completed.
        floor = self._block_floor
        self._block_floor = max(floor, block_id + 1)
        try:
            self._save()
        except LocalProtocolError:
            self._block_floor = floor
            raise
        self.block = block_id
        self._audit = _Audit(block_id, self.role)
        self._deadline = now + self.params.block_timeout_s
        self._first_out = self._send_seq
        self._first_in = None

    @property
    def audit(self) -> _Audit:
        if self._audit is None:
            raise LocalProtocolError("Qdist: no block is running")
        return self._audit

    def _send(self, message: Message) -> None:
        assert self.block is not None
        self._reserve()
        try:
            frame = encode_frame(message.KIND, self.block, self._send_seq, message.body(),
                                 self._out)
        except ValueError as exc:
            raise LocalProtocolError(f"Qdist: cannot send {type(message).__name__}: {exc}") \
                from None
        self._send_seq += 1
        self._out.release(self._send_seq)
        self._outbox += frame
        self.audit.add("frames_sent", 1)

    def _send_control(self, message: ArmedAnnounced | StartAnnounced | ResumeAnnounced
                      ) -> None:
        """Sends a frame that belongs to no block.

        Raises:
            LocalProtocolError: a block is running (end it first), or no pad is left.
        """
        if self.block is not None:
            raise LocalProtocolError(f"Qdist: block {self.block} is running; end it before "
                                     f"sending {type(message).__name__}")
        self._reserve()
        try:
            frame = encode_frame(message.KIND, CONTROL_BLOCK, self._send_seq, message.body(),
                                 self._out)
        except ValueError as exc:
            raise LocalProtocolError(f"Qdist: cannot send {type(message).__name__}: {exc}") \
                from None
        self._send_seq += 1
        self._out.release(self._send_seq)
        self._outbox += frame

    def _settle(self, peer_completed: int) -> None:
        """Appends the pending replenishment if both ends completed its block, else drops it."""
        if self._pending is None:
            return
        block, ab, ba, end_out, end_in = self._pending
        if peer_completed == block == self.completed:
            out, into = (ab, ba) if self._SENDS_AB else (ba, ab)
            self._out.extend(out)
            self._in.extend(into)
            self._covered = (end_out, end_in)
            self._pending = None
            # Saved before this end's next frame (the peer may settle on it, and complete a
            # block on the new count): a restart must come back with the block settled.
            self._save()
        self._pending = None

    def _auth_bits(self, extra_out: int, extra_in: int) -> tuple[int, int]:
        """Pads (out, in) the block pays back, counting ``extra`` frames still to come: every
        pad from the covered positions to the block's end (see the module docstring)."""
        return (self._send_seq + extra_out - self._covered[0],
                self._recv_seq + extra_in - self._covered[1])

    def _count_pads(self, pads_out: int, pads_in: int) -> None:
        """Puts the pads the block pays back in its audit (by direction), how many pads were
        spent outside the block's own frames since the last settled block, and how many are
        still owed (carried to the next block); the same numbers at both ends."""
        assert self._first_in is not None
        own = (self._send_seq - self._first_out) + (self._recv_seq - self._first_in)
        owed = sum(self._auth_bits(0, 0))
        a = self.audit
        a["auth_pads_ab"], a["auth_pads_ba"] = \
            (pads_out, pads_in) if self._SENDS_AB else (pads_in, pads_out)
        a["auth_pads_outside"] = owed - own
        a["auth_pads_owed"] = owed - pads_out - pads_in

    def _complete(self, hashed: NDArray[np.uint8], pads_out: int, pads_in: int) -> None:
        """Takes the authentication key off the front of ``hashed`` and reports the key."""
        assert self.block is not None
        owed = self._auth_bits(0, 0)
        if not (0 <= pads_out <= owed[0] and 0 <= pads_in <= owed[1]):
            raise LocalProtocolError("Qdist: block pays back other pads than it owes")
        auth = PAD_BITS * (pads_out + pads_in)
        n_ab, n_ba = (pads_out, pads_in) if self._SENDS_AB else (pads_in, pads_out)
        material = np.packbits(hashed[:auth]).tobytes()
        before = self._pending, self.completed
        # The oldest pads owed are paid first: the covered positions move by what was paid.
        self._pending = (self.block, material[:TAG_BYTES * n_ab], material[TAG_BYTES * n_ab:],
                         self._covered[0] + pads_out, self._covered[1] + pads_in)
        assert len(self._pending[2]) == TAG_BYTES * n_ba
        self.completed = self.block
        try:
            # Before this end tells the peer (its next block's first message) that it completed
            # the block: a restart must not forget a completion the peer settles on.
            self._save()
        except LocalProtocolError:
            self._pending, self.completed = before
            raise
        self._count_pads(pads_out, pads_in)
        key = hashed[auth:].copy()
        key.flags.writeable = False
        self.audit["final_length"] = int(key.size)
        record = self.audit.freeze("completed", None)
        self._events.append(BlockCompleted(self.block, key, record))
        self._end_block()

    def _abort(self, reason: str, *, notify: bool) -> None:
        assert self.block is not None
        if notify:
            # Without a pad left the peer cannot be told; its block times out instead.
            with contextlib.suppress(LocalProtocolError):
                self._send(BlockAbandoned(reason))
        self.audit["final_length"] = 0
        record = self.audit.freeze("aborted", reason)
        self._events.append(BlockAborted(self.block, reason, record))
        self._end_block()

    def _end_block(self) -> None:
        self.block = None
        self._audit = None
        self._reset_block()

    def _reject(self, raw: RawFrame, reason: str) -> None:
        if self._audit is not None:
            self._audit.add("frames_rejected", 1)
        self._events.append(FrameRejected(raw.block, raw.seq, reason))

    def _accept(self, raw: RawFrame) -> None:
        """Authenticates one frame and hands its message to the role."""
        if raw.seq < self._recv_seq:
            self._reject(raw, "sequence number below the next expected (replay or stale)")
            return
        before = self._in.epsilon_spent
        ok = self._in.verify(raw.signed, raw.tag, raw.seq)
        if self._audit is not None:
            self._audit.add("auth_epsilon", self._in.epsilon_spent - before)
        if not ok:
            if raw.seq == self._recv_seq and self._in.has_pad(raw.seq):
                # The pad was used for a verification: never use it again (the frame that
                # was due at this number is lost anyway). A failed frame numbered further on
                # releases nothing: its number is untrusted and could burn every pad.
                self._recv_seq += 1
                self._in.release(self._recv_seq)
            if self.block is not None:
                self._abort("a frame failed authentication", notify=True)
            else:
                self._reject(raw, "failed authentication")
            return
        if self._audit is not None:
            self._audit.add("pads_skipped", raw.seq - self._recv_seq)
        self._recv_seq = raw.seq + 1
        self._in.release(self._recv_seq)
        try:
            message = decode_message(raw.kind, raw.body)
        except RemoteProtocolError as exc:
            if self.block == raw.block:
                self._abort(f"malformed frame: {exc}", notify=True)
            else:
                self._reject(raw, f"malformed frame: {exc}")
            return
        if isinstance(message, ArmedAnnounced | StartAnnounced | ResumeAnnounced):
            if raw.block != CONTROL_BLOCK:
                self._reject(raw, f"{type(message).__name__} in a frame of block {raw.block}")
                return
            # The role aborts a block in flight only for a control frame it takes as a
            # restart (a stale or duplicate one is rejected and leaves the block alone).
            reason = self._control(message)
            if reason is not None:
                self._reject(raw, reason)
            return
        if raw.block == CONTROL_BLOCK:
            self._reject(raw, f"{type(message).__name__} outside a block")
            return
        if self.block is None or raw.block != self.block:
            if not self._new_block(raw, message):
                self._reject(raw, f"frame of block {raw.block}, not of a running block")
            return
        if self._first_in is None:
            self._first_in = raw.seq
        self.audit.add("frames_received", 1)
        if isinstance(message, BlockAbandoned):
            self._abort(f"peer aborted: {message.reason}", notify=False)
            return
        try:
            self._handle(message)
        except RemoteProtocolError as exc:
            if self.block is not None:
                self._abort(str(exc), notify=True)
        except LocalProtocolError as exc:  # this end cannot go on (no pad left to send with)
            if self.block is not None:
                self._abort(str(exc), notify=False)

    # ----------------------------------------------------------------------- role hooks

    def _control(self, message: ArmedAnnounced | StartAnnounced | ResumeAnnounced
                 ) -> str | None:
        """The role's step for an authentic control frame: None if taken (its event queued),
        else why it is rejected."""
        return f"{type(message).__name__} is not for the {self.role}"

    def _restart_block(self, message: ArmedAnnounced | StartAnnounced | ResumeAnnounced
                       ) -> None:
        """Aborts the block in flight (if any) for a control frame taken as a restart of the
        instruments: its detections belong to a run that ended."""
        if self.block is not None:
            self._abort(f"{RESTARTED}: the peer sent {type(message).__name__}", notify=True)

    def _new_block(self, raw: RawFrame, message: Message) -> bool:
        """An authentic frame outside the current block: True if the role took it."""
        return False

    @abc.abstractmethod
    def _handle(self, message: Message) -> None:
        """The role's step for an authentic message of the current block."""

    @abc.abstractmethod
    def _reset_block(self) -> None:
        """Forgets the role's state of the current block."""
