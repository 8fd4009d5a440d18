"""Qdist's frames outside blocks: Bob's "armed" and Alice's "started" (the start order of the
instruments). Authenticated and numbered like the others; each bad kind (replayed, stale,
out of order, to the wrong role, malformed, forged, flipped) has its outcome, and one that
arrives during a block aborts that block."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.authentication import TAG_BYTES
from qkdnode.dsp.sifting import AliceChoices, BobDetections
from qkdnode.node.errors import LocalProtocolError, RemoteProtocolError
from qkdnode.node.protocol.qdist import (
    NEED_DATA,
    BlockAborted,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
    ReceiverArmed,
    TransmitterStarted,
)
from qkdnode.node.protocol.qdist.messages import (
    CONTROL_BLOCK,
    ArmedAnnounced,
    StartAnnounced,
    decode_message,
)
from qkdnode.node.protocol.qdist.wire import HEADER, PadStream, encode_frame

MU = (0.485, 0.13, 2e-4)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
SECRET = bytes(range(256)) * 8


def ends() -> tuple[QdistAlice, QdistBob]:
    return QdistAlice(PARAMS, SECRET, rng=np.random.default_rng(1)), QdistBob(PARAMS, SECRET)


def events(end: QdistAlice | QdistBob) -> list[object]:
    out = []
    while (event := end.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def bob_pads() -> PadStream:
    """A copy of Bob's outgoing pad stream (frames Alice takes as Bob's)."""
    half = 16 + (len(SECRET) - 16) // 2
    return PadStream(SECRET[8:16], SECRET[half:])


def alice_pads() -> PadStream:
    half = 16 + (len(SECRET) - 16) // 2
    return PadStream(SECRET[:8], SECRET[16:half])


def test_armed_then_started_reach_the_other_end() -> None:
    alice, bob = ends()
    assert bob.announce_armed(0.0) == 1
    frame = bob.data_to_send()
    assert HEADER.unpack_from(frame)[3] == CONTROL_BLOCK  # belongs to no block
    alice.receive_data(frame)
    assert events(alice) == [ReceiverArmed(1)]
    assert alice.armed_epoch == 1
    alice.announce_start(1, 5, 0.0)
    bob.receive_data(alice.data_to_send())
    assert events(bob) == [TransmitterStarted(1, 5)]
    assert bob.started == 5
    # A new arm (a restarted acquisition) is a new epoch; its start comes anew.
    assert bob.announce_armed(1.0) == 2
    assert bob.started is None
    alice.receive_data(bob.data_to_send())
    assert events(alice) == [ReceiverArmed(2)]


def test_a_repeated_arm_asks_for_the_start_again() -> None:
    alice, bob = ends()
    bob.announce_armed(0.0)
    alice.receive_data(bob.data_to_send())
    events(alice)
    bob.announce_armed(0.0, repeat=True)  # a new connection before the start came
    alice.receive_data(bob.data_to_send())
    assert events(alice) == [ReceiverArmed(1)]  # the same epoch: announce the start again
    alice.announce_start(1, 0, 0.0)
    alice.announce_start(1, 0, 0.0)  # twice: the second is refused, nothing else happens
    bob.receive_data(alice.data_to_send())
    got = events(bob)
    assert got[0] == TransmitterStarted(1, 0)
    assert isinstance(got[1], FrameRejected)
    assert "second start" in got[1].reason


def test_replayed_and_stale_control_frames_are_rejected() -> None:
    alice, bob = ends()
    bob.announce_armed(0.0)
    first = bob.data_to_send()
    bob.announce_armed(0.0)
    second = bob.data_to_send()
    alice.receive_data(second)
    assert events(alice) == [ReceiverArmed(2)]
    alice.receive_data(first)  # replayed (or overtaken): its sequence number is below
    (rejected,) = events(alice)
    assert isinstance(rejected, FrameRejected)
    assert "replay" in rejected.reason
    # An authentic arm of an older epoch with a fresh sequence number (a confused peer).
    stale = encode_frame(ArmedAnnounced.KIND, CONTROL_BLOCK, 2,
                         ArmedAnnounced(1).body(), bob_pads())
    alice.receive_data(stale)
    (rejected,) = events(alice)
    assert isinstance(rejected, FrameRejected)
    assert "stale" in rejected.reason
    assert alice.armed_epoch == 2


def test_out_of_order_and_misdirected_starts_are_rejected() -> None:
    alice, bob = ends()
    alice_out = alice_pads()
    # A start before Bob armed, and one for another epoch: stale or out of order.
    for seq, epoch in ((0, 1), (1, 7)):
        bob.receive_data(encode_frame(StartAnnounced.KIND, CONTROL_BLOCK, seq,
                                      StartAnnounced(epoch, 3).body(), alice_out))
        (rejected,) = events(bob)
        assert isinstance(rejected, FrameRejected)
        assert "stale or out of order" in rejected.reason
    assert bob.started is None
    # An authentic StartAnnounced from Bob's direction reaches Alice: not for her.
    alice.receive_data(encode_frame(StartAnnounced.KIND, CONTROL_BLOCK, 0,
                                    StartAnnounced(1, 3).body(), bob_pads()))
    (rejected,) = events(alice)
    assert isinstance(rejected, FrameRejected)
    assert "not for the alice" in rejected.reason
    # A control message in a frame that names a block.
    alice.receive_data(encode_frame(ArmedAnnounced.KIND, 4, 1, ArmedAnnounced(1).body(),
                                    bob_pads()))
    (rejected,) = events(alice)
    assert isinstance(rejected, FrameRejected)
    assert "in a frame of block 4" in rejected.reason
    assert alice.armed_epoch == 0


def test_malformed_forged_or_flipped_control_frames_are_rejected() -> None:
    alice, _ = ends()
    pads = bob_pads()
    # Authentic but malformed: a negative epoch; then two values where one belongs.
    for seq, body in ((0, ArmedAnnounced(-1).body()), (1, StartAnnounced(1, 2).body())):
        alice.receive_data(encode_frame(ArmedAnnounced.KIND, CONTROL_BLOCK, seq, body, pads))
        (rejected,) = events(alice)
        assert isinstance(rejected, FrameRejected)
        assert "malformed" in rejected.reason
    # A flipped bit anywhere fails authentication (no block runs: rejected, nothing else).
    good = encode_frame(ArmedAnnounced.KIND, CONTROL_BLOCK, 2, ArmedAnnounced(1).body(), pads)
    for position in (3, len(good) - TAG_BYTES - 1, len(good) - 1):
        flipped = bytearray(good)
        flipped[position] ^= 0x10
        alice.receive_data(bytes(flipped))
        got = events(alice)
        assert len(got) == 1
        assert isinstance(got[0], FrameRejected)
    assert alice.armed_epoch == 0
    with pytest.raises(RemoteProtocolError, match="epoch"):
        decode_message(ArmedAnnounced.KIND, ArmedAnnounced(-5).body())


def test_a_control_frame_during_a_block_aborts_it_first() -> None:
    alice, bob = ends()
    bob.announce_armed(0.0)
    alice.receive_data(bob.data_to_send())
    events(alice)
    alice.announce_start(1, 0, 0.0)
    bob.receive_data(alice.data_to_send())
    events(bob)
    detections = BobDetections(np.array([3, 9, 40], np.int64), np.zeros(3, np.uint8),
                               np.zeros(3, np.uint8), np.zeros(3, np.bool_))
    bob.start_block(0, detections, 0.0)
    alice.receive_data(bob.data_to_send())
    assert [type(e).__name__ for e in events(alice)] == ["DetectionsReceived"]
    # Bob's module restarted (his new arm); the block Alice holds cannot complete.
    bob.abort_block("module restarted")  # its last frames never left (a killed module)
    bob.data_to_send()
    bob.announce_armed(1.0)
    alice.receive_data(bob.data_to_send())
    assert events(alice) == [ReceiverArmed(2)]
    # She had not started it; now with a block running at Alice:
    alice2, bob2 = ends()
    bob2.announce_armed(0.0)
    alice2.receive_data(bob2.data_to_send())
    events(alice2)
    alice2.announce_start(1, 0, 0.0)
    bob2.receive_data(alice2.data_to_send())
    events(bob2)
    bob2.start_block(0, detections, 0.0)
    alice2.receive_data(bob2.data_to_send())
    events(alice2)
    n = 64
    alice2.start_block(0, AliceChoices(0, np.zeros(n, np.uint8), np.zeros(n, np.uint8),
                                       np.zeros(n, np.uint8)), 0.0)
    assert alice2.block == 0
    bob2.receive_data(alice2.data_to_send())
    bob2.abort_block("module restarted")
    bob2.data_to_send()
    bob2.announce_armed(1.0)
    alice2.receive_data(bob2.data_to_send())
    got = events(alice2)
    aborted = [e for e in got if isinstance(e, BlockAborted)]
    assert len(aborted) == 1
    assert "instruments restarted" in aborted[0].reason
    assert aborted[0].audit.reason == aborted[0].reason
    assert got[-1] == ReceiverArmed(2)


def test_control_frames_are_refused_locally_while_a_block_runs() -> None:
    _, bob = ends()
    bob.announce_armed(0.0)
    bob.data_to_send()
    detections = BobDetections(np.array([3], np.int64), np.zeros(1, np.uint8),
                               np.zeros(1, np.uint8), np.zeros(1, np.bool_))
    bob.start_block(0, detections, 0.0)
    with pytest.raises(LocalProtocolError, match="running"):
        bob.announce_armed(1.0)
    alice, _ = ends()
    with pytest.raises(LocalProtocolError, match="arm epoch"):
        alice.announce_start(3, 0, 0.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_control_messages_round_trip(epoch: int, first_block: int) -> None:
    for message in (ArmedAnnounced(epoch), StartAnnounced(epoch, first_block)):
        assert decode_message(message.KIND, message.body()) == message


def test_a_duplicate_start_during_a_block_leaves_it_running() -> None:
    # Alice announced the start twice (Bob's repeated arm after a reconnect crossed her first
    # announcement): the second reaches Bob while his first block runs. It is rejected, and
    # his block goes on (it was aborted first, before the check, until the review).
    alice, bob = ends()
    bob.announce_armed(0.0)
    alice.receive_data(bob.data_to_send())
    events(alice)
    alice.announce_start(1, 0, 0.0)
    first_start = alice.data_to_send()
    alice.announce_start(1, 0, 0.1)
    second_start = alice.data_to_send()
    bob.receive_data(first_start)
    assert events(bob) == [TransmitterStarted(1, 0)]
    detections = BobDetections(np.array([3, 9, 40], np.int64), np.zeros(3, np.uint8),
                               np.zeros(3, np.uint8), np.zeros(3, np.bool_))
    bob.start_block(0, detections, 0.0)
    bob.data_to_send()
    bob.receive_data(second_start)
    got = events(bob)
    assert [type(e).__name__ for e in got] == ["FrameRejected"]
    assert "second start" in got[0].reason  # type: ignore[attr-defined]
    assert bob.block == 0
