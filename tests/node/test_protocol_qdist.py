"""Qdist: two ends wired in memory on simulated decoy-state blocks, block after block; every
kind of bad frame and any flipped bit has its outcome, and a wrong key is never one."""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.authentication import TAG_BYTES
from qkdnode.dsp.estimation import DecoyCounts, LinkModel, finite_key_length
from qkdnode.dsp.sifting import AliceChoices, BobDetections, measure, pattern_of
from qkdnode.node.errors import LocalProtocolError
from qkdnode.node.protocol.qdist import (
    MIN_SECRET_BYTES,
    NEED_DATA,
    BlockAborted,
    BlockCompleted,
    DetectionsReceived,
    FrameRejected,
    QdistAlice,
    QdistBob,
    QdistParams,
)
from qkdnode.node.protocol.qdist.messages import (
    CountsAnnounced,
    DetectionsAnnounced,
    ReconciliationSent,
    SiftingAnswered,
    decode_message,
)
from qkdnode.node.protocol.qdist.wire import HEADER, MAX_BODY, PadStream, encode_frame

# A 5 km Fig. 1 link (Lim et al. 2014) at the decoy settings dsp.estimation.optimize_decoy
# finds for n_X = 3e4 (rounded): about 11 million pulses give a block of ~3e4 sifted X bits.
LINK = LinkModel(5.0)
MU = (0.485, 0.130, LINK.mu3)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
Q_X = 0.577
PULSES = 11_400_000
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
SECRET = bytes(range(256)) * 8  # 2048 bytes: 16 for the hash keys, 126 pads per direction


@dataclass(frozen=True, repr=False)
class BlockData:
    """One block's inputs: Alice's choices and Bob's detections."""

    choices: AliceChoices
    detections: BobDetections

    def __repr__(self) -> str:
        return f"BlockData(detections={self.detections.slots.size})"


@functools.lru_cache(maxsize=4)
def block_data(seed: int, misalignment: float = 0.0, pulses: int = PULSES) -> BlockData:
    """Simulated block: Poisson-source click probabilities and errors of the link model, Bob's
    passive basis choice with probability Q_X, extra optical errors ``misalignment``."""
    rng = np.random.default_rng(seed)
    basis = (rng.random(pulses, dtype=np.float32) >= Q_X).astype(np.uint8)
    bit = rng.integers(0, 2, pulses, dtype=np.uint8)
    intensity = rng.choice(3, size=pulses, p=P).astype(np.uint8)
    mu = np.asarray(MU)
    click = LINK.detection_probability(mu) / (1.0 + LINK.afterpulse_probability)
    error = np.minimum(LINK.error_probability(mu) / click + misalignment, 0.5)
    slots = np.flatnonzero(rng.random(pulses, dtype=np.float32) < click[intensity])
    n = slots.size
    bob_basis = (rng.random(n) >= Q_X).astype(np.uint8)
    flip = rng.random(n) < error[intensity[slots]]
    bob_bit = np.where(bob_basis == basis[slots], bit[slots] ^ flip,
                       rng.integers(0, 2, n)).astype(np.uint8)
    detections = measure(slots.astype(np.int64), pattern_of(bob_basis, bob_bit), seed=seed)
    return BlockData(AliceChoices(0, basis, bit, intensity), detections)


def split_frames(data: bytes) -> list[bytes]:
    """Cuts a byte string of whole frames into frames."""
    out = []
    while data:
        length = HEADER.unpack_from(data)[-1]
        end = HEADER.size + length + TAG_BYTES
        out.append(data[:end])
        data = data[end:]
    return out


Tamper = Callable[[str, int, bytes], list[bytes]]


@dataclass
class Pair:
    """Alice and Bob wired in memory; ``tamper`` sees every frame (direction "ab"/"ba", its
    index in that direction) and returns what is delivered instead."""

    alice: QdistAlice
    bob: QdistBob
    tamper: Tamper | None = None
    now: float = 0.0
    sent: dict[str, list[bytes]] = field(default_factory=lambda: {"ab": [], "ba": []})
    rejected: list[FrameRejected] = field(default_factory=list)
    others: list[BlockCompleted | BlockAborted] = field(default_factory=list)

    @classmethod
    def new(cls, params: QdistParams = PARAMS, secret: bytes = SECRET, rng_seed: int = 1,
            bob_params: QdistParams | None = None) -> Pair:
        return cls(QdistAlice(params, secret, rng=np.random.default_rng(rng_seed)),
                   QdistBob(bob_params or params, secret))

    def _deliver(self, direction: str, data: bytes) -> bytes:
        out = bytearray()
        for frame in split_frames(data):
            index = len(self.sent[direction])
            self.sent[direction].append(frame)
            for piece in (self.tamper(direction, index, frame) if self.tamper else [frame]):
                out += piece
        return bytes(out)

    def run_block(self, block_id: int, data: BlockData
                  ) -> tuple[BlockCompleted | BlockAborted | None, BlockCompleted | BlockAborted]:
        """Runs one block to its end on both sides: (Alice's result, Bob's result); Alice's is
        None if she never heard of the block."""
        results: dict[str, BlockCompleted | BlockAborted | None] = {}
        self.bob.start_block(block_id, data.detections, self.now)
        idle = 0
        while len(results) < 2:
            moved = False
            for name, end, peer, direction in (("alice", self.alice, self.bob, "ab"),
                                               ("bob", self.bob, self.alice, "ba")):
                while (event := end.next_event()) is not NEED_DATA:
                    moved = True
                    if isinstance(event, DetectionsReceived):
                        assert isinstance(end, QdistAlice)
                        end.start_block(event.block_id, data.choices, self.now)
                    elif isinstance(event, FrameRejected):
                        self.rejected.append(event)
                    elif isinstance(event, BlockCompleted | BlockAborted):
                        if event.block_id == block_id:
                            results[name] = event
                        else:
                            self.others.append(event)
                out = end.data_to_send()
                if out:
                    moved = True
                    peer.receive_data(self._deliver(direction, out))
            if not moved:
                idle += 1
                if idle == 2 and "bob" in results and self.alice.block is None:
                    results["alice"] = None  # Bob's announcement never reached her
                    break
                assert idle < 3, "the dialogue stalled past its timeout"
                self.now += PARAMS.block_timeout_s
                self.alice.handle_timer(self.now)
                self.bob.handle_timer(self.now)
        bob = results["bob"]
        assert bob is not None
        return results["alice"], bob


def alice_pads(secret: bytes = SECRET) -> PadStream:
    """A copy of Alice's outgoing pad stream: frames the peer takes as Alice's."""
    half = 16 + (len(secret) - 16) // 2
    return PadStream(secret[:8], secret[16:half])


def header(frame: bytes) -> tuple[int, int, int, int]:
    """(kind, block, seq, body length) of a frame."""
    _, _, kind, block, seq, length = HEADER.unpack_from(frame)
    return kind, block, seq, length


@pytest.fixture(scope="module")
def data() -> BlockData:
    return block_data(1)


@pytest.fixture(scope="module")
def clean(data):
    """A clean run of block 0: (Alice's result, Bob's result, frames each way)."""
    pair = Pair.new()
    a, b = pair.run_block(0, data)
    assert isinstance(a, BlockCompleted)
    assert isinstance(b, BlockCompleted)
    return a, b, pair.sent


class CleanRun:
    """What the flipped-bit test compares with, holding no key bits (hypothesis prints its
    arguments when a test fails)."""

    def __init__(self, digest: str, frames: dict[str, list[bytes]]) -> None:
        self.digest = digest
        self.frames = frames

    def __repr__(self) -> str:
        return f"CleanRun(frames={ {d: len(f) for d, f in self.frames.items()} })"


def digest(key: np.ndarray) -> str:
    return hashlib.sha256(key.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def clean_run(clean) -> CleanRun:
    a, _, frames = clean
    return CleanRun(digest(a.key), frames)


def assert_completed(a, b):
    assert isinstance(a, BlockCompleted), getattr(a, "reason", None)
    assert isinstance(b, BlockCompleted), getattr(b, "reason", None)
    np.testing.assert_array_equal(a.key, b.key)
    assert a.key.size > 0


# --------------------------------------------------------------------------- good runs


def test_blocks_give_identical_keys_block_after_block(data):
    pair = Pair.new()
    keys = []
    for block_id, d in enumerate([data, block_data(2), data]):
        a, b = pair.run_block(block_id, d)
        assert_completed(a, b)
        for r in (a, b):
            assert r.audit.outcome == "completed"
            assert r.key.size == r.audit.final_length == r.audit.ell - r.audit.auth_bits
            # one 64-bit pad per frame, both directions, paid back from the block's key
            assert r.audit.auth_bits == 64 * (r.audit.frames_sent + r.audit.frames_received)
        assert not r.key.flags.writeable
        keys.append(a.key)
    assert not np.array_equal(keys[0], keys[2][: keys[0].size])  # fresh PA seed per block
    assert 0.4 < keys[1].mean() < 0.6
    assert not pair.rejected


def test_bob_decodes_rows_in_place_and_a_gathered_copy_alike(monkeypatch):
    # Bob keeps every frame's decoder messages in one array per code; a decoding call on
    # consecutive rows works on them in place, others on a gathered copy written back after.
    # Forcing the copy on every call decodes every round from the same messages (warm rounds
    # included: seed 3 takes several) and gives the same key.
    import qkdnode.node.protocol.qdist.bob as bob_module

    store = np.arange(12, dtype=np.float32).reshape(4, 3)
    view, own = bob_module._message_rows(store, [1, 2])
    assert own
    assert np.shares_memory(view, store)
    copy, own = bob_module._message_rows(store, [0, 2])
    assert not own
    assert not np.shares_memory(copy, store)
    np.testing.assert_array_equal(copy, store[[0, 2]])

    seen: list[list[str]] = [[], []]
    warm: list[list[bool]] = [[], []]
    real_decode = bob_module.decode_syndromes

    def recording(code, syndromes, llrs, budget, *, messages, **kwargs):
        seen[run].append(hashlib.sha256(messages.tobytes()).hexdigest())
        warm[run].append(bool(messages.any()))
        return real_decode(code, syndromes, llrs, budget, messages=messages, **kwargs)

    monkeypatch.setattr(bob_module, "decode_syndromes", recording)
    keys = []
    for run in (0, 1):
        if run == 1:
            monkeypatch.setattr(bob_module, "_message_rows",
                                lambda store, rows: (store[rows].copy(), False))
        a, b = Pair.new().run_block(0, block_data(3))
        assert_completed(a, b)
        keys.append(b.key)
    # Warm rounds, from the messages earlier rounds left, in each run.
    assert sum(warm[0]) >= 2
    assert sum(warm[1]) >= 2
    assert seen[0] == seen[1]
    np.testing.assert_array_equal(keys[0], keys[1])


def test_authentication_key_is_replenished_from_block_keys(data):
    # The smallest secret holds 64 pads per direction; blocks go on until they have used more
    # than that (a block takes 5-6 frames each way; how many depends on reconciliation).
    secret = bytes(np.random.default_rng(5).integers(0, 256, MIN_SECRET_BYTES, dtype=np.uint8))
    pair = Pair.new(secret=secret)
    used = 0
    for block_id in range(40):
        if used > 64 + 8:
            break
        a, b = pair.run_block(block_id, data)
        assert_completed(a, b)
        used += a.audit.frames_sent
        # Each block's pads come back once the next block confirms both ends completed it,
        # so only the last block's are missing.
        assert pair.alice.pads_left == (64 - a.audit.frames_sent, 64 - a.audit.frames_received)
        assert pair.bob.pads_left == pair.alice.pads_left[::-1]
    assert used > 64
    with pytest.raises(ValueError, match="secret"):
        QdistBob(PARAMS, secret[:-16])


def test_key_length_is_what_estimation_gives(clean):
    a, b, _ = clean
    for r in (a, b):
        au = r.audit
        counts = DecoyCounts(au.n_x, au.n_z, au.m_z)
        est = finite_key_length(counts, MU, P, eps_cor=au.eps_cor, kappa=1e-15,
                                ec_leak=float(au.leakage_bits), qber=au.qber)
        assert au.estimate == est
        assert au.ell == min(est.ell, au.kept_bits)
        assert au.leakage_bits == au.disclosed_bits + au.sifted_bits - au.kept_bits
        assert au.eps_cor <= PARAMS.eps_cor * (1 + 1e-12)
        assert sum(au.n_x) == au.sifted_bits
    for name in ("n_x", "n_z", "m_z", "disclosed_bits", "kept_bits", "ell", "auth_bits",
                 "rounds", "leakage_bits", "frames_attempted", "frames_discarded"):
        assert getattr(a.audit, name) == getattr(b.audit, name), name
    assert 0.02 < a.audit.qber < 0.03


def test_audit_is_json_without_key_material(clean):
    a, _, _ = clean
    line = json.dumps(a.audit.to_json())
    record = json.loads(line)
    assert record["outcome"] == "completed"
    assert record["final_length"] == a.key.size
    assert record["estimate"]["ell"] == a.audit.estimate.ell
    assert "key" not in record
    assert "key=" not in repr(a)


def test_alice_may_start_before_the_announcement(data):
    pair = Pair.new()
    pair.alice.start_block(0, data.choices, 0.0)
    assert_completed(*pair.run_block(0, data))


def test_high_qber_aborts_with_a_reason():
    noisy = block_data(3, misalignment=0.12, pulses=3_000_000)
    a, b = Pair.new().run_block(0, noisy)
    assert isinstance(a, BlockAborted)
    assert isinstance(b, BlockAborted)
    assert a.reason.startswith("abort: QBER estimate")
    assert b.reason == a.reason  # both ends decide alike on the counts Alice announced
    assert a.audit.qber_z > 0.11
    assert b.audit.qber_z == a.audit.qber_z  # Bob's audit log has the counts too
    assert b.audit.m_z == a.audit.m_z
    assert a.audit.final_length == 0
    assert a.audit.frames_attempted == 0


def test_a_qber_no_code_is_validated_for_aborts_the_block_and_the_next_one_runs(data):
    # QBER ~10 %: below qber_abort (11 %) but above every n16000 code's validated range (the
    # widest, r050, ends at 9.18 %): choose_code raises ValueError, which must end the block
    # (reason in the audit), not the end.
    noisy = block_data(3, misalignment=0.07, pulses=3_000_000)
    pair = Pair.new()
    a, b = pair.run_block(0, noisy)
    assert isinstance(a, BlockAborted)
    assert isinstance(b, BlockAborted)
    assert a.reason.startswith("no reconciliation code: "), a.reason
    assert "n16000_r050" in a.reason
    assert b.reason == f"peer aborted: {a.reason}"
    assert 0.0918 < a.audit.qber_z <= PARAMS.qber_abort
    assert a.audit.final_length == 0
    assert a.audit.frames_attempted == 0
    assert_completed(*pair.run_block(1, data))


# --------------------------------------------------------------------------- bad frames


@settings(max_examples=12, deadline=None)
@given(direction=st.sampled_from(["ab", "ba"]), which=st.integers(0, 100),
       region=st.sampled_from(["header", "body", "tag"]), where=st.floats(0.0, 1.0))
def test_a_flipped_bit_in_any_frame_is_detected(clean_run, data, direction, which, region,
                                                where):
    frames = clean_run.frames
    index = which % len(frames[direction])
    size = len(frames[direction][index])
    start, stop = {"header": (0, HEADER.size), "body": (HEADER.size, size - TAG_BYTES),
                   "tag": (size - TAG_BYTES, size)}[region]
    if stop == start:
        start, stop = 0, size
    bit = int(8 * start + where * (8 * (stop - start) - 1))

    def flip(d: str, i: int, frame: bytes) -> list[bytes]:
        if (d, i) != (direction, index):
            return [frame]
        out = bytearray(frame)
        out[bit // 8] ^= 0x80 >> (bit % 8)
        return [bytes(out)]

    pair = Pair.new()
    pair.tamper = flip
    a, b = pair.run_block(0, data)
    assert not (isinstance(a, BlockCompleted) and isinstance(b, BlockCompleted))
    for r in (a, b):
        if isinstance(r, BlockCompleted):  # the end whose last frame arrived intact
            assert digest(r.key) == clean_run.digest
    # The link goes on: a new connection, and the next block gives a key.
    pair.tamper = None
    pair.alice.reset_stream()
    pair.bob.reset_stream()
    assert_completed(*pair.run_block(1, data))


def test_replayed_frames_are_rejected_and_the_block_goes_on(clean, data):
    clean_a, _, _ = clean

    def replay(d: str, i: int, frame: bytes) -> list[bytes]:
        return [frame, frame] if i in (0, 2) else [frame]

    pair = Pair.new()
    pair.tamper = replay
    a, b = pair.run_block(0, data)
    assert_completed(a, b)
    np.testing.assert_array_equal(a.key, clean_a.key)
    assert len(pair.rejected) == 4
    assert all("replay" in r.reason for r in pair.rejected)
    assert a.audit.frames_rejected + b.audit.frames_rejected == 4


def test_frames_of_an_old_block_are_rejected(clean, data):
    _, _, old = clean
    pair = Pair.new()
    assert_completed(*pair.run_block(0, data))
    # A copy of block 0's first frame replayed into block 1: its sequence number is spent.
    pair.bob.start_block(1, data.detections, 0.0)
    pair.alice.receive_data(old["ba"][0])
    event = pair.alice.next_event()
    assert isinstance(event, FrameRejected)
    assert event.block_id == 0
    assert "replay" in event.reason


def test_out_of_order_frames_abort_the_block(data):
    held: list[bytes] = []

    def swap(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 1:  # CountsAnnounced, held back behind the syndromes
            held.append(frame)
            return []
        if d == "ab" and i == 2:
            return [frame, *held]
        return [frame]

    pair = Pair.new()
    pair.tamper = swap
    a, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert "out of order" in b.reason
    assert isinstance(a, BlockAborted)
    assert a.reason.startswith("peer aborted")
    assert [r.reason for r in pair.rejected] == [
        "sequence number below the next expected (replay or stale)"]
    pair.tamper = None
    assert_completed(*pair.run_block(1, data))


def test_unauthenticated_frames_abort_the_block(data):
    forger = PadStream(b"\x01" * 8, b"\x02" * 8 * 64)

    def forge(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 1:
            kind, block, seq, _ = header(frame)
            body = CountsAnnounced((1, 1, 1), (1, 1, 1), (0, 0, 0)).body()
            return [encode_frame(kind, block, seq, body, forger)]
        return [frame]

    pair = Pair.new()
    pair.tamper = forge
    a, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert b.reason == "a frame failed authentication"
    assert isinstance(a, BlockAborted)
    assert pair.bob.pads_left[1] == (len(SECRET) - 16) // 16 - len(pair.sent["ab"])
    pair.tamper = None
    assert_completed(*pair.run_block(1, data))


def test_a_failed_verification_spends_only_the_expected_pad(data):
    bob = QdistBob(PARAMS, SECRET)
    bob.start_block(0, data.detections, 0.0)
    forger = PadStream(b"\x01" * 8, b"\x02" * 8 * 64)
    full = (len(SECRET) - 16) // 16
    bob.receive_data(encode_frame(2, 0, 0, b"", forger))
    event = bob.next_event()
    assert isinstance(event, BlockAborted)
    assert bob.pads_left[1] == full - 1  # the pad of number 0 was used: spent
    bob.receive_data(encode_frame(2, 0, 40, b"", forger))
    event = bob.next_event()
    assert isinstance(event, FrameRejected)
    assert event.reason == "failed authentication"
    assert bob.pads_left[1] == full - 1  # an untrusted number further on spends nothing


@pytest.mark.parametrize("body", [
    b"",                                        # fields missing
    b"\x03\x00\x00\x00\x03" + bytes(24),        # three int64 for n_x, then nothing
    CountsAnnounced((1, 2, 3), (1, 1, 1), (2, 0, 0)).body(),   # more errors than detections
    CountsAnnounced((1, 2, 3), (1, 1, 1), (0, 0, 0)).body() + b"\x00",  # trailing byte
])
def test_malformed_authentic_frames_abort_the_block(data, body):
    def replace(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 1:
            kind, block, seq, _ = header(frame)
            return [encode_frame(kind, block, seq, body, alice_pads())]
        return [frame]

    pair = Pair.new()
    pair.tamper = replace
    a, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert b.reason.startswith("malformed frame: Qdist CountsAnnounced")
    assert isinstance(a, BlockAborted)


def test_authentic_frame_of_unknown_kind_or_wrong_counts_aborts(data):
    def replace(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 1:
            _, block, seq, _ = header(frame)
            return [encode_frame(99, block, seq, b"", alice_pads())]
        return [frame]

    pair = Pair.new()
    pair.tamper = replace
    _, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert "unknown frame kind 99" in b.reason

    def lie(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 1:
            kind, block, seq, _ = header(frame)
            body = CountsAnnounced((1, 1, 1), (1, 1, 1), (0, 0, 0)).body()
            return [encode_frame(kind, block, seq, body, alice_pads())]
        return [frame]

    pair = Pair.new()
    pair.tamper = lie
    _, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert "counts differ" in b.reason


@pytest.mark.parametrize(("field_", "value", "message"), [
    (0, b"XX", "wrong magic"), (2, b"\x07", "version 7"),
    (16, struct.pack(">I", MAX_BODY + 1), "exceeds the limit"),
])
def test_broken_streams_abort_the_block_until_a_new_connection(data, field_, value, message):
    def corrupt(d: str, i: int, frame: bytes) -> list[bytes]:
        if d == "ab" and i == 0:
            return [frame[:field_] + value + frame[field_ + len(value):]]
        return [frame]

    pair = Pair.new()
    pair.tamper = corrupt
    a, b = pair.run_block(0, data)
    assert isinstance(b, BlockAborted)
    assert b.reason.startswith("stream broken")
    assert message in b.reason
    assert isinstance(a, BlockAborted)
    assert pair.bob.broken
    pair.tamper = None
    pair.bob.reset_stream()
    assert_completed(*pair.run_block(1, data))


def _flights(pair: Pair, data: BlockData, limit: int,
             ended: dict[str, BlockCompleted | BlockAborted]) -> int:
    """Starts block 0 and delivers up to ``limit`` flights of bytes (one end's output at a
    time); the rest is lost. Each end then takes what it received (as the IO layer does before
    it reports a lost connection). Returns the flights delivered."""
    pair.bob.start_block(0, data.detections, 0.0)
    flights = 0
    moved = True
    while moved and flights < limit:
        moved = False
        for name, end, peer in (("alice", pair.alice, pair.bob), ("bob", pair.bob, pair.alice)):
            while (event := end.next_event()) is not NEED_DATA:
                if isinstance(event, DetectionsReceived):
                    end.start_block(event.block_id, data.choices, 0.0)
                elif isinstance(event, BlockCompleted | BlockAborted):
                    ended[name] = event
            out = end.data_to_send()
            if out and flights < limit:
                peer.receive_data(out)
                flights += 1
                moved = True
    for name, end in (("alice", pair.alice), ("bob", pair.bob)):
        while (event := end.next_event()) is not NEED_DATA:
            if isinstance(event, DetectionsReceived):
                end.start_block(event.block_id, data.choices, 0.0)
            elif isinstance(event, BlockCompleted | BlockAborted):
                ended[name] = event
    return flights


@pytest.mark.parametrize("cut", ["first", "early", "middle", "last", "after"])
def test_a_lost_connection_aborts_the_block_in_flight_and_the_next_one_completes(data, cut):
    """The connection drops after some flights of bytes of block 0 (the first; a few; half;
    all but the last, so one end has completed and the other has not; after the block
    ended): each end that still runs the block aborts it with the reason, no key; unsent and
    partial bytes are dropped; after reset_stream the next blocks complete with identical
    keys (the pads stay in step, whichever end had completed)."""
    total = _flights(Pair.new(), data, 10_000, {})
    limit = {"first": 1, "early": 3, "middle": total // 2, "last": total - 1,
             "after": total}[cut]
    pair = Pair.new()
    ended: dict[str, BlockCompleted | BlockAborted] = {}
    _flights(pair, data, limit, ended)
    if cut == "last":
        assert len(ended) == 1  # one end completed, the other waits for the lost bytes
    running = {name: end.block is not None for name, end in
               (("alice", pair.alice), ("bob", pair.bob))}
    for name, end in (("alice", pair.alice), ("bob", pair.bob)):
        end.receive_data(b"\x00partial frame")  # half a frame was in the socket
        end.connection_lost("reset by peer")
        assert end.data_to_send() == b""
        events = []
        while (event := end.next_event()) is not NEED_DATA:
            events.append(event)
        if running[name]:
            [aborted] = events
            assert isinstance(aborted, BlockAborted)
            assert aborted.reason == "connection lost: reset by peer"
            assert aborted.audit.final_length == 0
            ended[name] = aborted
        else:
            assert events == []
        assert end.block is None
    if cut == "after":
        assert_completed(ended["alice"], ended["bob"])
    else:  # the block was cut short: never a key at both ends from it
        assert any(isinstance(e, BlockAborted) for e in ended.values())
    pair.alice.reset_stream()
    pair.bob.reset_stream()
    assert_completed(*pair.run_block(1, data))
    assert_completed(*pair.run_block(2, block_data(2)))


def test_the_block_timeout_is_each_ends_own():
    slow = QdistParams(MU, P, kappa=1e-15, code_length=16_000, block_timeout_s=600.0)
    assert slow.digest() == PARAMS.digest()
    assert QdistParams(MU, P, kappa=1e-14, code_length=16_000).digest() != PARAMS.digest()
    bob = QdistBob(slow, SECRET)
    bob.start_block(0, block_data(1).detections, now=5.0)
    assert bob.get_timer() == 605.0


def test_an_announcement_of_a_later_block_ends_the_running_one(data):
    pair = Pair.new()
    pair.bob.start_block(0, data.detections, 0.0)
    pair.alice.receive_data(pair.bob.data_to_send())
    assert pair.alice.next_event() == DetectionsReceived(0)
    pair.alice.start_block(0, data.choices, 0.0)
    pair.alice.data_to_send()  # lost
    pair.bob.abort_block("stopped by the operator")
    assert isinstance(pair.bob.next_event(), BlockAborted)
    pair.bob.data_to_send()  # lost as well
    assert_completed(*pair.run_block(1, data))
    [old] = pair.others
    assert isinstance(old, BlockAborted)
    assert old.block_id == 0
    assert old.reason == "peer started block 1 instead"


def test_an_exhausted_authentication_key_ends_the_link():
    # Aborted blocks pay no pads back: the smallest secret lasts a few dozen of them.
    noisy = block_data(3, misalignment=0.12, pulses=3_000_000)
    secret = bytes(MIN_SECRET_BYTES)
    pair = Pair.new(secret=secret)
    with pytest.raises(LocalProtocolError, match="authentication key exhausted"):  # noqa: PT012
        for block_id in range(40):
            a, b = pair.run_block(block_id, noisy)
            assert isinstance(a, BlockAborted)
            assert isinstance(b, BlockAborted)
    assert pair.bob.pads_left[0] == 0
    assert pair.bob.block is None


def test_a_stalled_block_times_out(data):
    pair = Pair.new()
    pair.bob.start_block(0, data.detections, now=10.0)
    assert pair.bob.get_timer() == 10.0 + PARAMS.block_timeout_s
    pair.bob.handle_timer(11.0)
    assert pair.bob.next_event() is NEED_DATA
    pair.bob.handle_timer(10.0 + PARAMS.block_timeout_s)
    event = pair.bob.next_event()
    assert isinstance(event, BlockAborted)
    assert "timed out" in event.reason
    assert pair.bob.get_timer() is None


def test_different_parameters_abort_the_block(data):
    other = QdistParams(MU, P, kappa=1e-14, code_length=16_000)
    a, b = Pair.new(bob_params=other).run_block(0, data)
    assert isinstance(a, BlockAborted)
    assert "parameters differ" in a.reason
    assert isinstance(b, BlockAborted)


def test_local_misuse_is_refused(data):
    bob = QdistBob(PARAMS, SECRET)
    bob.start_block(0, data.detections, 0.0)
    with pytest.raises(LocalProtocolError, match="still running"):
        bob.start_block(1, data.detections, 0.0)
    with pytest.raises(TypeError, match="detections"):
        QdistBob(PARAMS, SECRET).start_block(0, data.choices, 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        QdistAlice(PARAMS, SECRET, rng=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- wire codec


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1), completed=st.integers(-1, 2**40))
def test_messages_round_trip(n, seed, completed):
    rng = np.random.default_rng(seed)
    slots = np.cumsum(rng.integers(1, 1000, n)).astype(np.int64)
    basis = rng.integers(0, 2, n, dtype=np.uint8)
    m = decode_message(1, DetectionsAnnounced("d" * 32, completed, slots, basis).body())
    assert isinstance(m, DetectionsAnnounced)
    assert (m.params_digest, m.completed) == ("d" * 32, completed)
    np.testing.assert_array_equal(m.slots, slots)
    np.testing.assert_array_equal(m.basis, basis)
    match = rng.integers(0, 2, n).astype(np.bool_)
    intensity = rng.integers(0, 3, n, dtype=np.uint8)
    s = decode_message(2, SiftingAnswered(completed, match, intensity).body())
    assert isinstance(s, SiftingAnswered)
    np.testing.assert_array_equal(s.match, match)
    np.testing.assert_array_equal(s.intensity, intensity)


def test_reconciliation_messages_round_trip(clean):
    _, _, frames = clean
    for frame in frames["ab"]:
        kind, _, _, _ = header(frame)
        body = frame[HEADER.size:-TAG_BYTES]
        message = decode_message(kind, body)
        assert message.body() == body
        if isinstance(message, ReconciliationSent) and message.syndromes:
            assert message.syndromes[0].plan.code_name.startswith("n16000")
    for frame in frames["ba"]:
        kind, _, _, _ = header(frame)
        body = frame[HEADER.size:-TAG_BYTES]
        assert decode_message(kind, body).body() == body
