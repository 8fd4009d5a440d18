"""Qdist replenishes every pad spent since the last block both ends completed: control frames
(re-arms and starts), aborted blocks, frames that failed authentication and skipped pads are
paid back by the next completed block, from its key, and counted in its length. A run that
spends several times the pre-shared pool this way keeps going, with identical keys."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest

from qkdnode.dsp.estimation import LinkModel
from qkdnode.dsp.sifting import AliceChoices, BobDetections, measure, pattern_of
from qkdnode.node.protocol.qdist import (
    MIN_SECRET_BYTES,
    NEED_DATA,
    BlockAborted,
    BlockCompleted,
    DetectionsReceived,
    QdistAlice,
    QdistBob,
    QdistParams,
    ReceiverArmed,
    TransmitterStarted,
)
from qkdnode.node.protocol.qdist.accounting import PAYBACK_SHARE
from qkdnode.node.protocol.qdist.session import PAD_BITS
from qkdnode.node.protocol.qdist.wire import PadStream, encode_frame

# A 5 km Fig. 1 link (Lim et al. 2014), as in test_protocol_qdist: ~3e4 sifted X bits a block.
LINK = LinkModel(5.0)
MU = (0.485, 0.130, LINK.mu3)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
Q_X = 0.577
PULSES = 11_400_000
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
SECRET = bytes(np.random.default_rng(7).integers(0, 256, MIN_SECRET_BYTES, dtype=np.uint8))
POOL = (MIN_SECRET_BYTES - 16) // 16  # pads per direction in the secret

Ended = BlockCompleted | BlockAborted


@functools.lru_cache(maxsize=2)
def block(seed: int) -> tuple[AliceChoices, BobDetections]:
    """Alice's choices and Bob's detections of one simulated block (Poisson source, the link
    model's click and error probabilities, Bob's passive basis choice)."""
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


class Link:
    """Alice and Bob wired in memory; ``drop(direction, data)`` may lose a flight of bytes."""

    def __init__(self) -> None:
        self.alice = QdistAlice(PARAMS, SECRET, rng=np.random.default_rng(3))
        self.bob = QdistBob(PARAMS, SECRET)
        self.choices: dict[int, AliceChoices] = {}
        self.ended: dict[tuple[str, int], Ended] = {}
        self.other: list[object] = []
        self.drop: Callable[[str, bytes], bool] = lambda direction, data: False
        self.now = 0.0

    def pump(self) -> None:
        """Moves bytes and events until both ends are quiet."""
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
                    else:
                        self.other.append(event)
                out = end.data_to_send()
                if out:
                    moved = True
                    if not self.drop(direction, out):
                        peer.receive_data(out)

    def rearm(self, first_block: int) -> None:
        """Bob re-arms and Alice answers with a start: one pad each way."""
        epoch = self.bob.announce_armed(self.now)
        self.pump()
        assert self.other[-1] == ReceiverArmed(epoch)
        self.alice.announce_start(epoch, first_block, self.now)
        self.pump()
        assert self.other[-1] == TransmitterStarted(epoch, first_block)

    def run(self, block_id: int, seed: int, *, played: bool = True) -> tuple[Ended, Ended]:
        """One block at both ends (Alice refuses it if ``played`` is False)."""
        choices, detections = block(seed)
        if played:
            self.choices[block_id] = choices
        self.bob.start_block(block_id, detections, self.now)
        self.pump()
        for name, end in (("alice", self.alice), ("bob", self.bob)):
            if (name, block_id) not in self.ended and end.block == block_id:
                self.now += PARAMS.block_timeout_s
                end.handle_timer(self.now)
        self.pump()
        return self.ended["alice", block_id], self.ended["bob", block_id]


def forged_frame(seq: int) -> bytes:
    """A control frame numbered ``seq`` with a tag under the wrong key."""
    forger = PadStream(b"\x01" * 8, b"\x02" * 8 * (seq + 1))
    return encode_frame(2, 2**64 - 1, seq, b"", forger)


def assert_paid_back(a: BlockCompleted, b: BlockCompleted, link: Link) -> None:
    """Identical keys and accounting; held pads plus those paid back make the whole pool."""
    np.testing.assert_array_equal(a.key, b.key)
    for name in ("auth_pads_ab", "auth_pads_ba", "auth_pads_outside", "auth_bits", "ell",
                 "final_length"):
        assert getattr(a.audit, name) == getattr(b.audit, name), name
    for r in (a, b):
        assert r.audit.auth_bits == 64 * (r.audit.auth_pads_ab + r.audit.auth_pads_ba)
        assert r.key.size == r.audit.final_length == r.audit.ell - r.audit.auth_bits
        assert r.audit.to_json()["auth_pads_outside"] == r.audit.auth_pads_outside
    # Right after a completion, every pad spent since the session started is held or paid
    # back by this block (appended at the next block's start, once both ends know).
    assert link.alice.pads_left[0] + a.audit.auth_pads_ab == POOL
    assert link.alice.pads_left[1] + a.audit.auth_pads_ba == POOL
    assert link.bob.pads_left == link.alice.pads_left[::-1]


def test_aborts_and_rearms_beyond_the_pool_are_paid_back():
    link = Link()
    block_id = 0
    spent = 0
    pools = []
    for cycle in range(13):
        outside = 0
        # Re-arms (the instruments restarted): a pad each way per arm and start.
        for _ in range(3):
            link.rearm(block_id)
            outside += 2
        # A block Alice refuses (its frame was not played): Bob's announcement, her abort.
        a, b = link.run(block_id, 1, played=False)
        assert isinstance(a, BlockAborted)
        assert isinstance(b, BlockAborted)
        block_id += 1
        outside += 2
        # A forged frame at Alice's next expected number spends that pad; Bob's frame that
        # was due there is then rejected, and his next arm goes through.
        link.alice.receive_data(forged_frame(link.alice._recv_seq))
        link.pump()
        assert link.other[-1].reason == "failed authentication"
        link.bob.announce_armed(link.now)
        link.pump()
        assert "replay" in link.other[-1].reason
        link.rearm(block_id)
        outside += 3
        # A re-arm whose frame is lost: Alice skips its pad when the next one arrives.
        link.drop = lambda direction, data: direction == "ba"
        link.bob.announce_armed(link.now)
        link.pump()
        link.drop = lambda direction, data: False
        link.rearm(block_id)
        outside += 3
        a, b = link.run(block_id, 1 + cycle % 2)
        assert isinstance(a, BlockCompleted), getattr(a, "reason", None)
        assert isinstance(b, BlockCompleted), getattr(b, "reason", None)
        assert_paid_back(a, b, link)
        assert a.audit.auth_pads_outside == outside
        assert a.audit.auth_pads_ab + a.audit.auth_pads_ba == \
            outside + a.audit.frames_sent + a.audit.frames_received
        spent += a.audit.auth_pads_ab
        pools.append(link.alice.pads_left[0] + a.audit.auth_pads_ab)
        block_id += 1
    assert spent > 2 * POOL  # more than the pre-shared pool would have allowed
    assert pools == [POOL] * len(pools)


def test_a_block_only_bob_completed_is_paid_back_by_the_next():
    """Bob completes, his confirmation is lost, Alice times out: Bob's pending pads are never
    appended (Alice did not complete), and the next completed block pays for both blocks."""
    link = Link()
    link.rearm(0)
    a, b = link.run(0, 1)
    assert_paid_back(a, b, link)

    def lose_confirmation(direction: str, data: bytes) -> bool:
        return direction == "ba" and link.bob.block is None and link.bob.completed == 1
    link.drop = lose_confirmation
    a1, b1 = link.run(1, 2)
    link.drop = lambda direction, data: False
    assert isinstance(b1, BlockCompleted)
    assert isinstance(a1, BlockAborted)
    assert "timed out" in a1.reason
    a2, b2 = link.run(2, 1)
    assert isinstance(a2, BlockCompleted), getattr(a2, "reason", None)
    assert isinstance(b2, BlockCompleted)
    assert_paid_back(a2, b2, link)
    # Block 1's frames, its lost confirmation and Alice's abort are paid by block 2.
    assert a2.audit.auth_pads_outside == b1.audit.frames_sent + b1.audit.frames_received + 1


@pytest.mark.parametrize("role", ["alice", "bob"])
def test_the_pads_counted_must_be_the_pads_used(role):
    """A block whose pads differ from those its length paid for ends without a key."""
    link = Link()
    end = link.alice if role == "alice" else link.bob
    original = end._complete

    def skewed(hashed, pads_out, pads_in):
        original(hashed, pads_out + 1, pads_in)
    end._complete = skewed  # type: ignore[method-assign]
    a, b = link.run(0, 1)
    mine = a if role == "alice" else b
    assert isinstance(mine, BlockAborted)
    assert "pays back other pads than it owes" in mine.reason


def test_ends_that_count_different_pads_give_no_key():
    """Should the two ends ever count different pads to pay back (each takes its own count
    off the key), Bob sees it in Alice's announcement and the block ends without a key at
    both ends, never with different keys."""
    link = Link()
    link.rearm(0)
    link.bob._covered = (link.bob._covered[0], link.bob._covered[1] + 1)  # a diverged count
    a, b = link.run(0, 1)
    assert isinstance(b, BlockAborted)
    assert "authentication accounting differs" in b.reason
    assert isinstance(a, BlockAborted)
    assert a.reason.startswith("peer aborted")


def test_a_debt_beyond_one_blocks_key_is_paid_over_several_blocks():
    """More pads owed than a quarter of a block's key per direction (many re-arms in a row):
    each block pays what its key allows, oldest first, and carries the rest; blocks keep
    completing with identical keys (they used to abort, "key does not cover", until the pads
    ran out) and the debt falls to nothing."""
    link = Link()
    for _ in range(45):  # 45 pads each way, beyond one block's payback
        link.rearm(0)
    owed = []
    for block_id in range(6):
        a, b = link.run(block_id, block_id + 1)
        assert isinstance(a, BlockCompleted), getattr(a, "reason", None)
        assert isinstance(b, BlockCompleted), getattr(b, "reason", None)
        assert np.array_equal(a.key, b.key)
        cap = int(a.audit.ell * PAYBACK_SHARE) // PAD_BITS
        assert a.audit.auth_pads_ab <= cap
        assert a.audit.auth_pads_ba <= cap
        assert a.audit.auth_pads_owed == b.audit.auth_pads_owed
        assert a.audit.final_length >= a.audit.ell // 2
        owed.append(a.audit.auth_pads_owed)
        if a.audit.auth_pads_owed == 0:
            break
    assert owed[0] > 0  # the first block could not pay it all
    assert owed[-1] == 0
    assert owed == sorted(owed, reverse=True)
