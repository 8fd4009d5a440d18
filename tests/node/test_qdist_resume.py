"""Qdist sessions survive a restart of either end's process: each end saves its state (pads,
positions, replenishment, block numbers, arm epoch) before a pad beyond its last reservation
is used and when a block completes; a new end restored from the last save never reuses a pad,
numbers blocks on, and the two ends agree on keys and accounting afterwards."""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import pytest

from qkdnode.dsp.authentication import TAG_BYTES
from qkdnode.dsp.estimation import LinkModel
from qkdnode.dsp.sifting import AliceChoices, BobDetections, measure, pattern_of
from qkdnode.node.errors import LocalProtocolError
from qkdnode.node.protocol.qdist import (
    NEED_DATA,
    RESERVE_PADS,
    BlockAborted,
    BlockCompleted,
    DetectionsReceived,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
    ReceiverArmed,
    TransmitterRestarted,
    TransmitterStarted,
)
from qkdnode.node.protocol.qdist.wire import HEADER

LINK = LinkModel(5.0)
MU = (0.485, 0.130, LINK.mu3)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
Q_X = 0.577
PULSES = 11_400_000
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
SECRET = bytes(np.random.default_rng(11).integers(0, 256, 2048, dtype=np.uint8))
POOL = (len(SECRET) - 16) // 16


@functools.lru_cache(maxsize=2)
def block(seed: int) -> tuple[AliceChoices, BobDetections]:
    """One simulated block of a 5 km Fig. 1 link (Lim et al. 2014), as in test_protocol_qdist."""
    rng = np.random.default_rng(seed)
    basis = (rng.random(PULSES, dtype=np.float32) >= Q_X).astype(np.uint8)
    bit = rng.integers(0, 2, PULSES, dtype=np.uint8)
    intensity = rng.choice(3, size=PULSES, p=P).astype(np.uint8)
    mu = np.asarray(MU)
    click = LINK.detection_probability(mu) / (1.0 + LINK.afterpulse_probability)
    error = LINK.error_probability(mu) / click
    slots = np.flatnonzero(rng.random(PULSES, dtype=np.float32) < click[intensity])
    bob_basis = (rng.random(slots.size) >= Q_X).astype(np.uint8)
    flip = rng.random(slots.size) < error[intensity[slots]]
    bob_bit = np.where(bob_basis == basis[slots], bit[slots] ^ flip,
                       rng.integers(0, 2, slots.size)).astype(np.uint8)
    detections = measure(slots.astype(np.int64), pattern_of(bob_basis, bob_bit), seed=seed)
    return AliceChoices(0, basis, bit, intensity), detections


class Disk:
    """What a state file holds: the last state an end saved (writes counted)."""

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.saves = 0

    def __call__(self, state: bytes) -> None:
        self.state = state
        self.saves += 1


class Link:
    """Two persisting ends wired in memory; either can crash (its object is dropped, bytes in
    flight are lost) and restart from its last saved state."""

    def __init__(self) -> None:
        self.disks = {"alice": Disk(), "bob": Disk()}
        self.alice = self._new_alice()
        self.bob = self._new_bob()
        self.choices: dict[int, AliceChoices] = {}
        self.ended: dict[tuple[str, int], BlockCompleted | BlockAborted] = {}
        self.other: list[object] = []
        self.completions: dict[str, list[int]] = {"alice": [], "bob": []}
        # Every frame put on the wire, per direction: (sequence number, tag).
        self.wire: dict[str, list[tuple[int, bytes]]] = {"ab": [], "ba": []}
        self.frames: dict[str, list[bytes]] = {"ab": [], "ba": []}
        self.budget: int | None = None  # flights still delivered (None: all)
        self.now = 0.0

    def _new_alice(self) -> QdistAlice:
        alice = QdistAlice(PARAMS, SECRET, rng=np.random.default_rng(3))
        if self.disks["alice"].state is not None:
            alice.restore(self.disks["alice"].state)
        alice.persist_to(self.disks["alice"])
        return alice

    def _new_bob(self) -> QdistBob:
        bob = QdistBob(PARAMS, SECRET)
        if self.disks["bob"].state is not None:
            bob.restore(self.disks["bob"].state)
        bob.persist_to(self.disks["bob"])
        return bob

    def _log(self, direction: str, data: bytes) -> None:
        while data:
            *_, seq, length = HEADER.unpack_from(data)
            end = HEADER.size + length + TAG_BYTES
            self.wire[direction].append((seq, data[end - TAG_BYTES:end]))
            self.frames[direction].append(data[:end])
            data = data[end:]

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for name, end, peer, direction in (("alice", self.alice, self.bob, "ab"),
                                               ("bob", self.bob, self.alice, "ba")):
                while (event := end.next_event()) is not NEED_DATA:
                    moved = True
                    if isinstance(event, DetectionsReceived):
                        assert isinstance(end, QdistAlice)
                        if event.block_id in self.choices:
                            end.start_block(event.block_id, self.choices[event.block_id],
                                            self.now)
                        else:
                            end.refuse_announced("its frame was not played", self.now)
                    elif isinstance(event, BlockCompleted | BlockAborted):
                        self.ended[name, event.block_id] = event
                        if isinstance(event, BlockCompleted):
                            self.completions[name].append(event.block_id)
                    else:
                        self.other.append(event)
                out = end.data_to_send()
                if out:
                    self._log(direction, out)
                    if self.budget is None or self.budget > 0:
                        moved = True
                        peer.receive_data(out)
                        if self.budget is not None:
                            self.budget -= 1

    def start_run(self) -> int:
        """Bob arms anew and Alice starts a run at her next free block; returns it."""
        epoch = self.bob.announce_armed(self.now)
        self.pump()
        assert self.other[-1] == ReceiverArmed(epoch)
        first = self.alice.next_block
        self.alice.announce_start(epoch, first, self.now)
        self.pump()
        assert self.other[-1] == TransmitterStarted(epoch, first)
        return first

    def run(self, block_id: int, seed: int) -> tuple[object, object]:
        self.choices[block_id] = block(seed)[0]
        self.bob.start_block(block_id, block(seed)[1], self.now)
        self.pump()
        return self.ended.get(("alice", block_id)), self.ended.get(("bob", block_id))

    def crash(self, role: str) -> None:
        """``role``'s process dies: its object and unsent bytes go; the survivor sees the
        connection drop; the restarted end takes up the saved session."""
        self.budget = None
        survivor = self.bob if role == "alice" else self.alice
        survivor.connection_lost("reset by peer")
        self.pump()
        survivor.reset_stream()
        if role == "alice":
            self.alice = self._new_alice()
        else:
            self.bob = self._new_bob()
        self.choices.clear()  # Alice's choices of the old run are gone either way

    def resume(self, role: str) -> int:
        """What the modules do after ``role`` restarted; returns the new run's first block."""
        if role == "alice":
            # Bob reconnects and repeats his arm; the restarted Alice tells him to arm anew.
            epoch = self.bob.arm_epoch
            self.bob.announce_armed(self.now, repeat=True)
            self.pump()
            assert self.other[-1] == TransmitterRestarted(epoch)
        return self.start_run()


def assert_same_key(a: object, b: object) -> None:
    assert isinstance(a, BlockCompleted), getattr(a, "reason", None)
    assert isinstance(b, BlockCompleted), getattr(b, "reason", None)
    np.testing.assert_array_equal(a.key, b.key)
    for name in ("auth_pads_ab", "auth_pads_ba", "auth_pads_outside", "ell", "final_length"):
        assert getattr(a.audit, name) == getattr(b.audit, name), name


def assert_no_pad_reused(link: Link) -> None:
    for direction, frames in link.wire.items():
        seqs = [seq for seq, _ in frames]
        assert len(seqs) == len(set(seqs)), f"a pad index was used twice ({direction})"


@pytest.mark.parametrize("role", ["alice", "bob"])
@pytest.mark.parametrize("flights", [1, 4, 9])
def test_a_crash_mid_block_resumes_the_session(role, flights):
    """Block 1 runs for a few flights of bytes; then ``role``'s process dies. Restarted from
    its last save, the session goes on: keys identical, no pad index used twice, no block
    number (so no key ID) given twice, the pool paid back."""
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    link.budget = flights
    cut = first + 1
    link.run(cut, 2)
    link.crash(role)
    first = link.resume(role)
    assert first > cut  # both ends began the cut block: it is never numbered again
    keys = {}
    for k in range(3):
        a, b = link.run(first + k, 1 + k % 2)
        assert_same_key(a, b)
        assert isinstance(a, BlockCompleted)
        keys[first + k] = a.key
        held = link.alice.pads_left[0] + a.audit.auth_pads_ab
        assert held == POOL  # every pad spent so far is held or paid back
    assert_no_pad_reused(link)
    for blocks in link.completions.values():  # a block number (key ID) is never reused
        assert len(blocks) == len(set(blocks)) >= 4


def test_both_ends_crash_and_resume():
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    link.budget = 5
    link.run(first + 1, 2)
    link.budget = None
    link.alice = link._new_alice()
    link.bob = link._new_bob()
    link.choices.clear()
    # Bob's new module arms anew; the restarted Alice answers with a resume; he arms again.
    link.bob.announce_armed(link.now)
    link.pump()
    assert isinstance(link.other[-1], TransmitterRestarted)
    first = link.start_run()
    assert first >= 2
    assert_same_key(*link.run(first, 1))
    assert_no_pad_reused(link)


def test_saves_are_batched_and_the_restart_skips_the_reservation():
    link = Link()
    link.start_run()
    saves = link.disks["alice"].saves
    first_block = link.alice.next_block
    assert_same_key(*link.run(first_block, 1))
    sent = sum(1 for _ in link.wire["ab"])
    # One save per RESERVE_PADS frames sent, one at the block's start and one at its end.
    assert link.disks["alice"].saves - saves <= sent // RESERVE_PADS + 3
    state = json.loads(link.disks["alice"].state)["body"]
    assert state["send_next"] >= link.wire["ab"][-1][0] + 1
    restarted = QdistAlice(PARAMS, SECRET)
    restarted.restore(link.disks["alice"].state)
    assert restarted.completed == first_block
    assert restarted.next_block == first_block + 1


def fill_disk_before_completion(link: Link, role: str) -> None:
    """``role``'s disk fills up just before its first completion would be saved."""
    disk = link.disks[role]

    def full_disk(state: bytes) -> None:
        if json.loads(state)["body"]["completed"] >= 0:
            raise OSError(28, "No space left on device")
        disk(state)
    getattr(link, role)._store = full_disk


def test_a_completion_that_cannot_be_saved_is_no_completion():
    link = Link()
    first = link.start_run()
    fill_disk_before_completion(link, "alice")
    a, _ = link.run(first, 1)
    assert isinstance(a, BlockAborted)
    assert "cannot save the session state" in a.reason
    assert link.alice.completed == -1


@pytest.mark.parametrize(("damage", "message"), [
    (lambda s: s[: len(s) // 2], "truncated"),
    (lambda s: s.replace(b'"completed": 0', b'"completed": 7'), "checksum"),
    (lambda s: b"", "truncated"),
])
def test_a_damaged_state_is_refused_with_a_reason(damage, message):
    link = Link()
    assert_same_key(*link.run(link.start_run(), 1))
    state = link.disks["bob"].state
    assert b'"completed": 0' in state
    with pytest.raises(ValueError, match=message):
        QdistBob(PARAMS, SECRET).restore(damage(state))


def test_a_state_of_another_secret_or_role_is_refused():
    link = Link()
    link.start_run()
    state = link.disks["alice"].state
    with pytest.raises(ValueError, match="another pre-shared secret"):
        QdistAlice(PARAMS, bytes(len(SECRET))).restore(state)
    with pytest.raises(ValueError, match="'alice' end"):
        QdistBob(PARAMS, SECRET).restore(state)
    used = QdistAlice(PARAMS, SECRET)
    used.persist_to(Disk())
    with pytest.raises(LocalProtocolError, match="new end"):
        used.restore(state)


def test_alice_crashing_after_bob_completed_keeps_the_replenishment_in_step(monkeypatch):
    """Alice settles block M's replenishment at the start of block N, Bob completes N, and
    Alice dies before his confirmation arrives. She must come back with M settled (saved at
    the settle), else the two ends would count different pads from then on and every later
    block would end without a key. (Reservations far apart, so that no other save hides it.)"""
    monkeypatch.setattr("qkdnode.node.protocol.qdist.session.RESERVE_PADS", 20)
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    choices, detections = block(2)
    link.choices[first + 1] = choices
    link.bob.start_block(first + 1, detections, link.now)
    # Deliver everything but Bob's confirmation.
    link.budget = 10**6

    def lose_confirmation() -> None:
        if link.bob.completed == first + 1:
            link.budget = 0
    original = link.bob._complete

    def completing(*args):
        original(*args)
        lose_confirmation()
    link.bob._complete = completing  # type: ignore[method-assign]
    link.pump()
    assert link.bob.completed == first + 1
    assert link.alice.completed == first
    link.crash("alice")
    start = link.resume("alice")
    for k in range(2):
        assert_same_key(*link.run(start + k, 1 + k % 2))
    assert_no_pad_reused(link)


@pytest.mark.parametrize(("field", "value"), [
    ("covered", 5), ("covered", [1]), ("covered", [1, -2]), ("pending", "x"),
    ("pending", {"block": 1}), ("send_next", -1), ("completed", True), ("epoch", "1"),
    ("out", None), ("in", {"hash_key": "00"}), ("version", 99),
])
def test_a_malformed_state_with_a_valid_checksum_is_refused(field, value):
    """A state written by something else (its checksum recomputed) is checked field by
    field: a ValueError naming what is wrong, never another exception."""
    link = Link()
    link.start_run()
    outer = json.loads(link.disks["bob"].state)
    body = outer["body"]
    body[field] = value
    outer["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    with pytest.raises(ValueError, match=r"field|version|pad stream") as info:
        QdistBob(PARAMS, SECRET).restore(json.dumps(outer).encode())
    assert "00" not in str(info.value).replace("version", "")


@pytest.mark.parametrize("flights", [5, 7])
def test_frames_replayed_to_a_restarted_end_give_no_key(flights):
    """A restarted Alice's receive position is that of her last save: an eavesdropper may
    replay Bob's frames sent since then. They belong to the block that was in flight, which
    she no longer runs: rejected, no key, and the session goes on."""
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    link.budget = flights
    link.run(first + 1, 2)
    link.crash("alice")
    window = [f for f in link.frames["ba"]
              if HEADER.unpack_from(f)[4] >= link.alice._recv_seq]
    assert window  # frames Bob sent after her last save
    before = len(link.other)
    for frame in window:
        link.alice.receive_data(frame)
    events = []
    while (event := link.alice.next_event()) is not NEED_DATA:
        events.append(event)
    assert events
    assert all(isinstance(e, FrameRejected) for e in events), events
    assert len(link.other) == before
    link.alice.data_to_send()  # nothing of consequence (no block runs)
    start = link.resume("alice")
    assert_same_key(*link.run(start, 1))


def test_the_reservation_never_passes_the_pads_held():
    """With fewer than RESERVE_PADS pads left, the saved reservation stops at the last pad
    held: a restart resumes sending there and still has pads (it used to resume past them)."""
    alice = QdistAlice(PARAMS, SECRET)
    disk = Disk()
    alice.persist_to(disk)
    end_seq = alice._out.end_seq
    alice._send_seq = end_seq - 3  # as if all but 3 pads had been used
    alice._reserve()
    assert alice._reserved == end_seq
    restarted = QdistAlice(PARAMS, SECRET)
    restarted.restore(disk.state)
    assert restarted._send_seq <= restarted._out.end_seq


def test_a_completion_bob_cannot_save_leaves_no_key_at_alice_either():
    link = Link()
    first = link.start_run()
    fill_disk_before_completion(link, "bob")
    a, b = link.run(first, 1)
    assert isinstance(b, BlockAborted)
    assert "cannot save the session state" in b.reason
    assert a is None  # the confirmation never left: Alice waits for it...
    assert link.alice.block == first
    link.now += PARAMS.block_timeout_s
    link.alice.handle_timer(link.now)  # ...until her block times out
    link.pump()
    assert isinstance(link.ended["alice", first], BlockAborted)
    assert link.alice.completed == link.bob.completed == -1


def _resealed(state: bytes, edit) -> bytes:
    """``state`` with its body edited by ``edit(body)`` and the checksum recomputed."""
    outer = json.loads(state)
    edit(outer["body"])
    outer["sha256"] = hashlib.sha256(
        json.dumps(outer["body"], sort_keys=True).encode()).hexdigest()
    return json.dumps(outer).encode()


def test_alice_keeps_her_reconcile_history_across_a_restart():
    """A restarted Alice starts frames where they decoded before (her ReconcileHistory is
    saved with the session), not at the default start efficiency."""
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    learnt = link.alice.history.to_dict()
    assert any(learnt["successes"].values())  # frames of block 1 were recorded
    link.crash("alice")
    assert link.alice.history.to_dict() == learnt
    code = next(name for name, values in learnt["successes"].items() if values)
    assert link.alice.history.successes(code)
    start = link.resume("alice")
    assert_same_key(*link.run(start, 2))
    assert len(link.alice.history.successes(code)) > len(learnt["successes"][code])
    assert_no_pad_reused(link)


def test_a_state_saved_before_the_history_was_kept_restores_with_a_fresh_one():
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    old = _resealed(link.disks["alice"].state, lambda body: body.pop("history"))
    alice = QdistAlice(PARAMS, SECRET)
    alice.restore(old)
    assert alice.restored
    assert not any(alice.history.to_dict()["successes"].values())


@pytest.mark.parametrize("history", ["x", {"window": 4}, {"window": 4, "successes": {},
                                                         "frames": [{"errors": 9, "bits": 1}]}])
def test_a_malformed_history_is_replaced_by_a_fresh_one(history):
    # The history is public statistics: an unreadable one costs blind rounds, never the
    # session. Not a dict at all: the state itself is malformed (refused before any change).
    link = Link()
    first = link.start_run()
    assert_same_key(*link.run(first, 1))
    state = _resealed(link.disks["alice"].state,
                      lambda body: body.__setitem__("history", history))
    alice = QdistAlice(PARAMS, SECRET)
    if not isinstance(history, dict):
        with pytest.raises(ValueError, match="field 'history'"):
            alice.restore(state)
        assert not alice.restored
        alice.restore(link.disks["alice"].state)  # still a new end: the good state restores
        assert alice.restored
        return
    alice.restore(state)
    assert alice.restored
    assert alice.history_dropped is not None
    assert "unusable" in alice.history_dropped
    assert not any(alice.history.to_dict()["successes"].values())
