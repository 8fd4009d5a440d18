"""Fuzzing Qdist: any body of any kind decodes to a message or a RemoteProtocolError, and any
bytes fed to an end give rejections or aborts, never an exception or an accepted frame."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.reconcile import (
    BitsRevealed,
    DecodingReported,
    FramePlan,
    FrameVerified,
    SyndromeComputed,
    TagComputed,
)
from qkdnode.dsp.sifting import BobDetections
from qkdnode.node.errors import RemoteProtocolError
from qkdnode.node.protocol.qdist import (
    NEED_DATA,
    BlockAborted,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
)
from qkdnode.node.protocol.qdist.messages import (
    AmplificationAnnounced,
    BlockAbandoned,
    CountsAnnounced,
    DetectionsAnnounced,
    KeyConfirmed,
    ReconciliationReplied,
    ReconciliationSent,
    SiftingAnswered,
    ZBitsDisclosed,
    decode_message,
)
from qkdnode.node.protocol.qdist.wire import HEADER, MAGIC, VERSION

PARAMS = QdistParams((0.5, 0.1, 2e-4), (0.6, 0.3, 0.1), code_length=16_000)
SECRET = bytes(range(256)) * 5  # 16 bytes of hash keys, 79 pads per direction


def _bits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)


# One valid body of every kind, to mutate.
VALID = [
    (1, DetectionsAnnounced("0" * 32, -1, np.arange(5, dtype=np.int64), _bits(5, 1)).body()),
    (2, SiftingAnswered(3, _bits(7, 2).astype(bool), np.array([0, 1, 2, 0, 1, 2, 0],
                                                              np.uint8)).body()),
    (3, ZBitsDisclosed(_bits(13, 3)).body()),
    (4, CountsAnnounced((5, 6, 7), (3, 2, 1), (1, 0, 0)).body()),
    (5, ReconciliationSent(
        (SyndromeComputed(0, FramePlan("n16000_r080", 12000, 30, 50, 3, 0.02), _bits(40, 4)),),
        (BitsRevealed(0, _bits(3, 5)),),
        (TagComputed(0, np.array([7, 9], np.uint64), _bits(128, 6)),)).body()),
    (6, ReconciliationReplied((DecodingReported(0, "need_more"),),
                              (FrameVerified(1, True, 17),)).body()),
    (7, AmplificationAnnounced(4, _bits(9, 7)).body()),
    (8, KeyConfirmed(4).body()),
    (9, BlockAbandoned("why").body()),
]


def decodes_or_refuses(kind: int, body: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_message(kind, body)


@settings(max_examples=150, deadline=None)
@given(kind=st.integers(0, 12), body=st.binary(max_size=200))
def test_any_body_decodes_or_is_refused(kind, body):
    decodes_or_refuses(kind, body)


@settings(max_examples=200, deadline=None)
@given(which=st.integers(0, len(VALID) - 1), data=st.data())
def test_mutated_bodies_decode_or_are_refused(which, data):
    kind, body = VALID[which]
    assert decode_message(kind, body).body() == body
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    decodes_or_refuses(kind, bytes(mutated[:cut]))
    decodes_or_refuses(kind, bytes(mutated))


frames = st.builds(
    lambda kind, block, seq, body, tag: HEADER.pack(MAGIC, VERSION, kind, block, seq, len(body))
    + body + tag,
    st.integers(0, 12), st.integers(0, 3), st.integers(0, 70), st.binary(max_size=60),
    st.binary(min_size=8, max_size=8))


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(frames | st.binary(max_size=40), max_size=6), alice=st.booleans())
def test_any_bytes_give_events_never_exceptions(stream, alice):
    end = QdistAlice(PARAMS, SECRET) if alice else QdistBob(PARAMS, SECRET)
    if isinstance(end, QdistBob):
        detections = BobDetections(np.arange(3, dtype=np.int64), np.zeros(3, np.uint8),
                                   np.zeros(3, np.uint8), np.zeros(3, np.bool_))
        end.start_block(0, detections, 0.0)
    for chunk in stream:
        end.receive_data(chunk)
        for _ in range(50):
            event = end.next_event()
            if event is NEED_DATA:
                break
            # Forged frames are never taken: rejected, or they end the block.
            assert isinstance(event, FrameRejected | BlockAborted)
    # A forged frame spends at most its own pad (when it carried the next expected number).
    assert end.pads_left[1] >= (len(SECRET) - 16) // 16 - len(stream)
