"""Offline re-distillation of a recorded module run: what ``qkdnode distill`` does.

From a recording (:mod:`.recording`): Bob's tag reads go through a fresh Qsync
(:class:`qkdnode.dsp.qsync.SlotTracker` with the recorded settings) and the same block cutting
as the module (:class:`~.runtime.BlockCutter`, with the squashing bits the run drew); Alice's
Qdist end gets her recorded choices and the random bytes her public seeds were drawn from. The
two Qdist ends then run each block's dialogue in this process, bytes handed from one to the
other (no sockets, no timers: a replay has no deadlines). A block whose frame did not play in
the run (a transmitter underrun: the recording marks it, or holds no frame for it) is refused by
Alice when Bob announces it, with the run's reason, as the module refuses it. Each block's
outcome and audit record at both ends is compared with the recorded run's, and the bytes each
end sends with those it sent then.

A recorded run whose Qdist connection dropped (a block aborted with reason ``connection lost``),
whose block timed out (its deadline passed in the middle of its dialogue: a slow end), or whose
instruments restarted (a new arm of the receiver's) cannot be replayed past that block: which
frames the cut lost, how far the dialogue had got when the deadline passed, or the new run's
start is not recorded, and the pads and random values of the later blocks depend on it. The
replay runs and compares the blocks before it and says so (:attr:`Replay.cut_at`,
:attr:`Replay.cut_reason`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.qsync import SlotTracker
from qkdnode.dsp.sifting import AliceChoices, BobDetections

from ..protocol.qdist import (
    NEED_DATA,
    BlockAborted,
    BlockCompleted,
    DetectionsReceived,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
)
from ..protocol.qdist.session import CONNECTION_LOST
from .frames import FramePlan, channel_patterns
from .recording import PUBLIC, SQUASH, Recording, RecordingError
from .runtime import BlockCutter

__all__ = ["MISSED_REASON", "BlockReplay", "Replay", "plan_of", "replay"]

# The reason of a block whose deadline passed (QdistEnd.handle_timer).
TIMED_OUT = "block timed out after"
# The reasons of blocks a restart of the instruments ended (a new arm of the receiver's).
RESTARTED = "instruments restarted"
# The refusal of a block with no recorded frame whose refusal the run did not record.
MISSED_REASON = "its frame was not played or its choices are gone"


def plan_of(manifest: dict[str, Any]) -> FramePlan:
    p = manifest["plan"]
    return FramePlan(manifest["link"], int(p["block_slots"]), int(p["timing_slots"]),
                     tuple(p["mu"]), tuple(p["p"]), q_x=float(p["q_x"]))


def _params(manifest: dict[str, Any]) -> QdistParams:
    q = dict(manifest["qdist"])
    q["mu"], q["p"] = tuple(q["mu"]), tuple(q["p"])
    return QdistParams(**q)


def _canonical(record: dict[str, Any] | None) -> str | None:
    return None if record is None else json.dumps(record, sort_keys=True, allow_nan=True)


@dataclass
class BlockReplay:
    """One block of the replay at both ends (no key bits: lengths and comparisons only)."""

    block_id: int
    detections: int
    outcome: dict[str, str] = field(default_factory=dict)  # role -> completed / aborted
    reason: dict[str, str | None] = field(default_factory=dict)
    qber: float | None = None
    final_length: dict[str, int] = field(default_factory=dict)
    keys_agree: bool = False  # Alice's and Bob's replayed keys are equal (and non-empty)
    audit: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorded: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def matches(self, role: str) -> bool | None:
        """The replayed audit record equals the recorded one (None: none was recorded)."""
        rec = self.recorded.get(role)
        return None if rec is None else _canonical(rec) == _canonical(self.audit.get(role))


@dataclass
class Replay:
    """The replay of a recording.

    Attributes:
        blocks: every replayed block, in order.
        keys: role -> block -> key bits (key material: never print).
        bytes_match: role -> the bytes this end sent equal the recorded ones.
        reads, detections, late_detections: Qsync's input and output counts.
        cut_at: the first block the recorded run lost its Qdist connection in, or timed
            out in (the replay stops before it), or None.
        cut_reason: what happened to it ("lost its Qdist connection", "timed out",
            "restarted its instruments").
    """

    link: str
    blocks: list[BlockReplay]
    keys: dict[str, dict[int, NDArray[np.uint8]]] = field(repr=False)
    bytes_match: dict[str, bool]
    reads: int
    detections: int
    late_detections: int
    cut_at: int | None = None
    cut_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Every block's audit matches the recorded one at both ends and the keys agree."""
        return bool(self.blocks) and all(
            b.matches(r) is not False for b in self.blocks for r in ("alice", "bob")) and all(
            b.keys_agree for b in self.blocks if b.outcome.get("bob") == "completed")


def _blocks(rec: Recording, plan: FramePlan, first: int
            ) -> tuple[list[tuple[int, BobDetections]], int, int, int]:
    """Bob's blocks as the module cut them; Qsync numbers the slots from the run's first
    block's first slot (``first``)."""
    m = rec.manifest
    t = m["tracker"]
    channel_map = {int(k): str(v) for k, v in m["channel_map"].items()}
    tracker = SlotTracker(period_ps=float(t["period_ps"]), pattern=plan.pattern(),
                          delay_ps=float(t["delay_ps"]),
                          detector_channels=tuple(int(c) for c in t["detector_channels"]))
    squash = rec.draws(SQUASH)
    cutter = BlockCutter(plan, channel_patterns(channel_map), squash)
    cutter.open = first
    base = first * plan.block_slots
    out: list[tuple[int, BobDetections]] = []
    reads = detections = late = 0
    for ts, ch in list(rec.tag_reads()):
        batch = tracker.process(ts, ch)
        slots = np.where(batch.slots >= 0, batch.slots + base, batch.slots)
        n, n_late, closable = cutter.add(slots, batch.channels)
        reads, detections, late = reads + 1, detections + n, late + n_late
        # The run closed as many blocks as it drew squashing bits for (one draw per block);
        # the tags read after its last block closed are read, not cut.
        out.extend((b, cutter.close(b)) for b in closable if squash.remaining)
    return out, reads, detections, late


def _start_order(alice: Any, bob: Any, first: int, sent: dict[str, list[bytes]]) -> bool:
    """The instruments' start order as the run began it (one run: a run restarted by a new
    arm of Bob's is cut, :func:`_cut`): Bob announces his tagger armed, Alice the run's first
    block (her first recorded frame's). False where the Qdist ends have no start order (the
    ends are ``Any`` here for that reason)."""
    announce_armed = getattr(bob, "announce_armed", None)
    if announce_armed is None:
        return False
    epoch = announce_armed(0.0)
    data = bob.data_to_send()
    sent["bob"].append(data)
    alice.receive_data(data)
    if getattr(alice.next_event(), "epoch", None) != epoch:
        # Alice did not take the arm (a wrong secret: the frame is rejected): no start, and
        # the blocks' comparison shows that the replay differs from the run.
        return True
    alice.announce_start(epoch, first, 0.0)
    data = alice.data_to_send()
    sent["alice"].append(data)
    bob.receive_data(data)
    bob.next_event()  # the start (anything else: the blocks will not match the run's)
    return True


def _cut(recorded: dict[str, list[dict[str, Any]]]) -> tuple[int | None, str | None]:
    """The first block the run lost its connection in or timed out in, and which."""
    cuts = []
    for rows in recorded.values():
        for row in rows:
            reason = str(row.get("reason") or "")
            if reason.startswith(CONNECTION_LOST):
                cuts.append((int(row["block_id"]), "lost its Qdist connection"))
            elif TIMED_OUT in reason:  # either end's deadline (the peer's: "peer aborted: ...")
                cuts.append((int(row["block_id"]), "timed out"))
            elif RESTARTED in reason:  # a new arm: a new run with its own start order
                cuts.append((int(row["block_id"]), "restarted its instruments"))
    if not cuts:
        return None, None
    return min(cuts)


def _missed_reason(recorded: list[dict[str, Any]], block: int) -> str:
    """The reason Alice's module gave for refusing ``block`` in the run (the reason depends on
    how the transmitter reported it), or a generic one if the run recorded no outcome."""
    for row in recorded:
        if row.get("block_id") == block and row.get("outcome") == "aborted" and row.get("reason"):
            return str(row["reason"])
    return MISSED_REASON


def replay(rec: Recording, secrets: dict[str, bytes]) -> Replay:
    """Re-runs Qsync and both Qdist ends from ``rec``.

    Args:
        secrets: the pre-shared Qdist secret of each end (``"alice"``, ``"bob"``).

    Raises:
        RecordingError: a missing, truncated or corrupted file; a replay that asks for
            random values the run did not draw (it has diverged from the run).
    """
    m = rec.manifest
    plan = plan_of(m)
    params = _params(m)
    recorded = {r: rec.outcomes(r) for r in ("alice", "bob")}
    cut_at, cut_reason = _cut(recorded)
    wanted = len(recorded["bob"]) or None
    # Every file is read (and its records checked) before the work starts.
    choices, _ = rec.choices()
    public = rec.draws(PUBLIC)
    rec.qdist_bytes("alice"), rec.qdist_bytes("bob")
    first = rec.first_block()
    alice = QdistAlice(params, secrets["alice"], random_bytes=public)
    bob = QdistBob(params, secrets["bob"])
    sent: dict[str, list[bytes]] = {"alice": [], "bob": []}
    if not _start_order(alice, bob, first, sent):
        first = 0  # no start order: slots count from the bench's slot 0, block 0
    blocks, reads, detections, late = _blocks(rec, plan, first)
    keys: dict[str, dict[int, NDArray[np.uint8]]] = {"alice": {}, "bob": {}}
    by_block: dict[int, BlockReplay] = {}
    order: list[BlockReplay] = []
    ends: tuple[tuple[str, Any, Any], ...] = (("alice", alice, bob), ("bob", bob, alice))

    def outcome(role: str, event: BlockCompleted | BlockAborted) -> None:
        row = by_block.get(event.block_id)
        if row is None:
            row = by_block[event.block_id] = BlockReplay(event.block_id, event.audit.detections)
            order.append(row)
        a = event.audit
        row.outcome[role], row.reason[role] = a.outcome, a.reason
        row.final_length[role] = a.final_length
        row.qber = a.qber if a.qber is not None else row.qber
        row.audit[role] = json.loads(json.dumps(a.to_json(), allow_nan=True))
        if isinstance(event, BlockCompleted):
            keys[role][event.block_id] = event.key

    for block, det in blocks:
        if (wanted is not None and len(order) >= wanted) or (cut_at is not None
                                                             and block >= cut_at):
            break
        bob.start_block(block, det, 0.0)
        ended: set[str] = set()
        timed_out = False
        busy = True
        while busy:
            busy = False
            for role, end, peer in ends:
                event = end.next_event()
                data = end.data_to_send()
                if data:
                    sent[role].append(data)
                    peer.receive_data(data)
                    busy = True
                if event is NEED_DATA:
                    continue
                busy = True
                if isinstance(event, DetectionsReceived):
                    frame = choices.get(event.block_id)
                    if frame is None:  # it did not play: refused, as the module does
                        alice.refuse_announced(_missed_reason(recorded["alice"],
                                                              event.block_id), 0.0)
                    else:
                        alice.start_block(event.block_id, AliceChoices(
                            plan.first_slot(event.block_id), *frame), 0.0)
                elif isinstance(event, BlockCompleted | BlockAborted):
                    outcome(role, event)
                    ended.add(role)
                elif isinstance(event, FrameRejected):
                    pass  # counted in the block's audit
            if not busy and len(ended) < 2 and not timed_out:
                # Nothing moves and the block has not ended at both ends: as in the run, the
                # ends' deadlines pass (a replay has no clock; "now" is 0 at each start).
                timed_out = busy = True
                for role, end, _ in ends:
                    if role not in ended:
                        end.handle_timer(params.block_timeout_s)
        if block not in by_block:
            raise RecordingError(f"{rec.directory}: block {block} ended at neither end in the "
                                 "replay")
    for row in order:
        a, b = keys["alice"].get(row.block_id), keys["bob"].get(row.block_id)
        row.keys_agree = a is not None and b is not None and a.size > 0 and \
            np.array_equal(a, b)
    for row in order:
        for role in ("alice", "bob"):
            row.recorded[role] = next((r for r in recorded[role]
                                       if r.get("block_id") == row.block_id), None)
    bytes_match = {}
    for role in ("alice", "bob"):
        got = b"".join(sent[role])
        want = rec.qdist_bytes(role)
        bytes_match[role] = want.startswith(got) or got.startswith(want)
    return Replay(m["link"], order, keys, bytes_match, reads, detections, late, cut_at,
                  cut_reason)
