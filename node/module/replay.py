"""Offline re-distillation of a recorded module run: what ``qkdnode distill`` does.

From a recording (:mod:`.recording`): Bob's tag reads go through a fresh Qsync
(:class:`qkdnode.dsp.qsync.SlotTracker` with the recorded settings) and the same block cutting
as the module (:class:`~.runtime.BlockCutter`, squashing bits from the recorded seed); Alice's
Qdist end gets her recorded choices and the recorded seed of her public random values. The two
Qdist ends then run each block's dialogue in this process, bytes handed from one to the other
(no sockets, no timers: a replay has no deadlines). Each block's outcome and audit record at
both ends is compared with the recorded run's, and the bytes each end sends with those it sent
then.

A recorded run whose Qdist connection dropped (a block aborted with reason ``connection lost``)
cannot be replayed past that block: which frames the cut lost is not recorded, and the pads
and random values of the later blocks depend on it. The replay runs and compares the blocks
before it and says so (:attr:`Replay.cut_at`).
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
from .recording import Recording, RecordingError
from .runtime import BlockCutter

__all__ = ["BlockReplay", "Replay", "plan_of", "replay"]


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
        cut_at: the first block the recorded run lost its Qdist connection in (the replay
            stops before it), or None.
    """

    link: str
    blocks: list[BlockReplay]
    keys: dict[str, dict[int, NDArray[np.uint8]]]
    bytes_match: dict[str, bool]
    reads: int
    detections: int
    late_detections: int
    cut_at: int | None = None

    @property
    def ok(self) -> bool:
        """Every block's audit matches the recorded one at both ends and the keys agree."""
        return bool(self.blocks) and all(
            b.matches(r) is not False for b in self.blocks for r in ("alice", "bob")) and all(
            b.keys_agree for b in self.blocks if b.outcome.get("bob") == "completed")


def _blocks(rec: Recording, plan: FramePlan) -> tuple[list[tuple[int, BobDetections]], int, int,
                                                      int]:
    m = rec.manifest
    t = m["tracker"]
    channel_map = {int(k): str(v) for k, v in m["channel_map"].items()}
    tracker = SlotTracker(period_ps=float(t["period_ps"]), pattern=plan.pattern(),
                          delay_ps=float(t["delay_ps"]),
                          detector_channels=tuple(int(c) for c in t["detector_channels"]))
    cutter = BlockCutter(plan, channel_patterns(channel_map),
                         np.random.default_rng(int(m["seeds"]["bob_squash"])))
    out: list[tuple[int, BobDetections]] = []
    reads = detections = late = 0
    for ts, ch in list(rec.tag_reads()):
        batch = tracker.process(ts, ch)
        n, n_late, closable = cutter.add(batch.slots, batch.channels)
        reads, detections, late = reads + 1, detections + n, late + n_late
        out.extend((b, cutter.close(b)) for b in closable)
    return out, reads, detections, late


def replay(rec: Recording, secrets: dict[str, bytes]) -> Replay:
    """Re-runs Qsync and both Qdist ends from ``rec``.

    Args:
        secrets: the pre-shared Qdist secret of each end (``"alice"``, ``"bob"``).

    Raises:
        RecordingError: a missing, truncated or corrupted file; a block Bob closed whose frame
            Alice's choices do not hold.
    """
    m = rec.manifest
    plan = plan_of(m)
    params = _params(m)
    recorded = {r: rec.outcomes(r) for r in ("alice", "bob")}
    cut_at = min((int(r["block_id"]) for rows in recorded.values() for r in rows
                  if str(r.get("reason") or "").startswith(CONNECTION_LOST)), default=None)
    wanted = len(recorded["bob"]) or None
    # Every file is read (and its records checked) before the work starts.
    choices = rec.choices()
    rec.qdist_bytes("alice"), rec.qdist_bytes("bob")
    blocks, reads, detections, late = _blocks(rec, plan)
    alice = QdistAlice(params, secrets["alice"],
                       rng=np.random.default_rng(int(m["seeds"]["alice_qdist"])))
    bob = QdistBob(params, secrets["bob"])
    sent: dict[str, list[bytes]] = {"alice": [], "bob": []}
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
                    if frame is None:
                        raise RecordingError(f"{rec.directory / 'alice-choices.rec'}: no frame "
                                             f"of block {event.block_id}, which Bob announced")
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
    return Replay(m["link"], order, keys, bytes_match, reads, detections, late, cut_at)
