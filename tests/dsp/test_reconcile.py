"""Tests of rate-adaptive blind LDPC reconciliation (both ends wired together in memory)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp import reconcile
from qkdnode.dsp.ldpc import codes
from qkdnode.dsp.ldpc.codes import LdpcCode, code_from_matrix, syndrome
from qkdnode.dsp.reconcile import (
    ABORT_QBER,
    AliceFrame,
    BitsRevealed,
    BobFrame,
    SyndromeComputed,
    TagComputed,
    binary_entropy,
    choose_code,
    modulated_positions,
    plan_frame,
    reconcile_local,
)


def random_code(n: int, m: int, var_degree: int, seed: int) -> LdpcCode:
    """A random LDPC code: each variable joins ``var_degree`` distinct random checks."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(m, size=var_degree, replace=False) for _ in range(n)])
    cols = np.repeat(np.arange(n), var_degree)
    H = sp.csr_matrix((np.ones(rows.size, dtype=np.uint8), (rows, cols)), shape=(m, n))
    return code_from_matrix(H, name=f"random{n}x{m}s{seed}")


CODE = random_code(2000, 1000, 3, seed=1)


def bsc(seed: int, size: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, size, dtype=np.uint8)
    bob = alice ^ (rng.random(size) < qber).astype(np.uint8)
    return alice, bob


def test_reexports() -> None:
    assert reconcile.get_code is codes.get_code
    assert callable(reconcile.decode_syndrome)
    assert callable(reconcile.decode_syndromes)


def test_modulated_positions_have_private_checks() -> None:
    positions, checks = modulated_positions(CODE)
    assert positions.size == int(reconcile.plan.MAX_MODULATED_FRACTION * CODE.n)
    assert np.unique(positions).size == positions.size
    assert np.unique(checks).size == checks.size
    H = CODE.H.toarray()
    is_modulated = np.zeros(CODE.n, bool)
    is_modulated[positions] = True
    for v, c in zip(positions, checks, strict=True):
        assert H[c, v] == 1
        # The dedicated check touches no other modulated position.
        assert H[c, is_modulated].sum() == 1


def test_punctured_values_zero_their_checks() -> None:
    alice, _ = bsc(1, 5000, 0.05)
    frame = AliceFrame(CODE, 0, alice[: plan_frame(CODE, 5000, 0.05).payload_length], 0.05)
    message = frame.start()
    assert message.syndrome.size == CODE.m - frame.plan.n_punctured
    full = syndrome(CODE, frame._word)
    assert not full[frame._layout.punctured_checks].any()
    np.testing.assert_array_equal(full[frame._layout.sent_rows], message.syndrome)


def test_both_ends_share_one_read_only_layout() -> None:
    # The layout of a plan is built once (cached) and cannot be changed by either end.
    alice, bob = bsc(2, 5000, 0.05)
    payload = plan_frame(CODE, 5000, 0.05).payload_length
    a = AliceFrame(CODE, 0, alice[:payload], 0.05)
    b = BobFrame(CODE, a.start(), bob[:payload])
    assert a._layout is b._layout
    for array in (a._layout.payload, a._layout.shortened, a._layout.punctured,
                  a._layout.punctured_checks, a._layout.sent_rows, a._layout.reveal_order):
        with pytest.raises(ValueError, match="read-only"):
            array[:1] = 0
    other = AliceFrame(CODE, 1, alice[: payload - 7], 0.05)
    assert other._layout is not a._layout


def test_reconciles_and_corrects() -> None:
    alice, bob = bsc(2, 12_000, 0.03)
    report = reconcile_local(alice, bob, 0.03, rng=np.random.default_rng(0), code=CODE)
    assert not report.aborted
    assert report.corrected.shape == alice.shape
    assert report.kept.sum() > 10_000
    assert report.frames_attempted >= 6
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])
    # Bits outside kept frames are Bob's, unchanged.
    np.testing.assert_array_equal(report.corrected[~report.kept], bob[~report.kept])
    assert report.errors_corrected == int((alice != bob)[report.kept].sum())
    # Slepian-Wolf: no protocol can disclose less than n h(q) about the kept bits.
    actual = float((alice != bob)[report.kept].mean())
    assert report.kept_disclosed_bits > report.kept.sum() * binary_entropy(actual)


def test_blind_rounds_reveal_bits_and_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rate-0.85 code planned for 2 %: its first syndromes are too short for this random code
    # (far from capacity at n = 4000), so frames need blind reveals, warm-started rounds. The
    # room for reveals is widened beyond the default, made for the shipped codes.
    monkeypatch.setattr(reconcile.plan, "MIN_FULL_EFFICIENCY", 1.5)
    monkeypatch.setattr(reconcile.plan, "BLIND_STEP_EFFICIENCY", 0.03)
    code = random_code(4000, 600, 3, seed=2)
    alice, bob = bsc(3, 12_000, 0.012)
    report = reconcile_local(
        alice, bob, 0.02, rng=np.random.default_rng(1), code=code, keep_messages=True
    )
    reveals = [m for m in report.messages if isinstance(m, BitsRevealed)]
    assert reveals
    assert any(f.rounds > 1 and f.kept for f in report.frames)
    # Every failed round but the last of a frame is followed by exactly one reveal.
    assert len(reveals) == sum(f.rounds - 1 for f in report.frames)
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_leakage_is_the_sum_of_message_sizes() -> None:
    alice, bob = bsc(4, 9000, 0.06)
    report = reconcile_local(
        alice, bob, 0.05, rng=np.random.default_rng(2), code=CODE, keep_messages=True
    )
    syndromes = sum(m.syndrome.size for m in report.messages if isinstance(m, SyndromeComputed))
    reveals = sum(m.values.size for m in report.messages if isinstance(m, BitsRevealed))
    tags = sum(m.tag.size for m in report.messages if isinstance(m, TagComputed))
    assert report.disclosed_bits == syndromes + reveals + tags
    assert report.disclosed_bits == sum(f.disclosed_bits for f in report.frames)
    assert tags == 64 * sum(1 for m in report.messages if isinstance(m, TagComputed))
    assert syndromes == sum(CODE.m - f.plan.n_punctured for f in _syndrome_messages(report))


def _syndrome_messages(report: reconcile.ReconcileReport) -> list[SyndromeComputed]:
    return [m for m in report.messages if isinstance(m, SyndromeComputed)]


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), qber=st.sampled_from([0.05, 0.1, 0.15, 0.25]))
def test_never_keeps_a_frame_that_differs(seed: int, qber: float) -> None:
    # A tiny code at high noise: the decoder often converges to a wrong word of the right
    # syndrome; verification must discard every such frame.
    tiny = random_code(60, 24, 3, seed=seed % 1000)
    alice, bob = bsc(seed, 300, qber)
    report = reconcile_local(
        alice, bob, min(qber, ABORT_QBER), rng=np.random.default_rng(seed), code=tiny,
        max_iterations=10,
    )
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])
    for outcome in report.frames:
        span = slice(outcome.start, outcome.start + outcome.payload_length)
        assert outcome.kept == bool(report.kept[span].all())
        assert outcome.kept or not report.kept[span].any()
    assert report.frames_discarded == sum(1 for f in report.frames if not f.kept)


def test_wrong_convergence_is_caught_by_verification() -> None:
    tiny = random_code(60, 24, 3, seed=5)
    statuses = set()
    for seed in range(40):
        alice, bob = bsc(seed, 300, 0.1)
        report = reconcile_local(alice, bob, 0.1, rng=np.random.default_rng(seed), code=tiny)
        statuses |= {f.status for f in report.frames}
        np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])
    assert "tag_mismatch" in statuses


def test_bob_never_sees_alice_bits() -> None:
    # Bob's constructor and handlers take only public data, Bob's bits and Alice's messages
    # (and, optionally, the buffer his own decoder keeps its messages in between rounds and
    # how many blind steps he asks for after a round that ended far from convergence).
    assert list(inspect.signature(BobFrame.__init__).parameters) == [
        "self", "code", "message", "bob_payload", "messages", "far_steps", "warm_iterations",
    ]
    alice, bob = bsc(6, 1700, 0.02)
    plan = plan_frame(CODE, alice.size, 0.02)
    alice_end = AliceFrame(CODE, 0, alice[: plan.payload_length], 0.02)
    first = alice_end.start()
    bob_end = BobFrame(CODE, first, bob[: plan.payload_length].copy())
    report = bob_end.decode()
    assert report.status == "decoded"
    verdict = bob_end.on_tag(alice_end.tag(np.random.default_rng(0), 1e-15))
    assert verdict.accepted
    assert verdict.errors == int((alice != bob)[: plan.payload_length].sum())
    assert bob_end.corrected is not None
    np.testing.assert_array_equal(bob_end.corrected, alice[: plan.payload_length])


def test_unknown_qber_is_estimated() -> None:
    alice, bob = bsc(7, 15_000, 0.03)
    report = reconcile_local(alice, bob, None, rng=np.random.default_rng(3), code=CODE)
    assert report.kept.sum() > 12_000
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])
    assert report.frames_attempted > 1


def test_tail_rules() -> None:
    full = plan_frame(CODE, 10**9, 0.03).payload_length
    # A tail of 60 % of a frame is reconciled: three frames share the bits equally (each
    # shortened a little, none a heavily shortened tail); a tail of 10 % is left unkept.
    alice, bob = bsc(8, 2 * full + int(0.6 * full), 0.03)
    report = reconcile_local(alice, bob, 0.03, rng=np.random.default_rng(4), code=CODE)
    assert report.frames_attempted == 3
    lengths = [f.payload_length for f in report.frames]
    assert sum(lengths) == alice.size
    assert max(lengths) - min(lengths) <= 1
    alice, bob = bsc(9, 2 * full + int(0.1 * full), 0.03)
    report = reconcile_local(alice, bob, 0.03, rng=np.random.default_rng(4), code=CODE)
    assert report.frames_attempted == 2
    assert not report.kept[2 * full :].any()


@pytest.mark.slow
def test_shipped_code_at_two_percent() -> None:
    code = choose_code(0.02, None)
    payload = plan_frame(code, code.n, 0.02).payload_length
    alice, bob = bsc(10, 2 * payload, 0.02)
    report = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(5))
    assert report.frames_attempted == 2
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])
    assert report.kept.sum() >= payload


def test_abort_above_threshold() -> None:
    alice, bob = bsc(11, 1000, 0.2)
    report = reconcile_local(alice, bob, 0.2, code=CODE)
    assert report.aborted
    assert report.reason is not None
    assert "QBER" in report.reason
    assert not report.kept.any()
    assert report.disclosed_bits == 0
    assert report.frames_attempted == 0


def test_empty_input() -> None:
    empty = np.zeros(0, np.uint8)
    report = reconcile_local(empty, empty, 0.02, code=CODE)
    assert report.frames_attempted == 0
    assert report.corrected.size == 0


class TestBadInput:
    alice, bob = bsc(12, 100, 0.02)

    def test_types_and_dtypes(self) -> None:
        with pytest.raises(TypeError, match="alice_bits"):
            reconcile_local(list(self.alice), self.bob)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bob_bits"):
            reconcile_local(self.alice, self.bob.astype(np.int8))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="qber_estimate"):
            reconcile_local(self.alice, self.bob, "0.02")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="rng"):
            reconcile_local(self.alice, self.bob, 0.02, rng=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="code"):
            reconcile_local(self.alice, self.bob, 0.02, code="x")  # type: ignore[arg-type]

    def test_values_and_lengths(self) -> None:
        with pytest.raises(ValueError, match="bob_bits"):
            reconcile_local(self.alice, self.bob[:-1])
        with pytest.raises(ValueError, match="alice_bits"):
            reconcile_local(self.alice * 2, self.bob)
        with pytest.raises(ValueError, match="alice_bits"):
            reconcile_local(self.alice.reshape(10, 10), self.bob.reshape(10, 10))
        with pytest.raises(ValueError, match="qber_estimate"):
            reconcile_local(self.alice, self.bob, -0.1)
        with pytest.raises(ValueError, match="rng"):
            reconcile_local(self.alice, self.bob, 0.02, rng=b"short")

    def test_messages_that_do_not_fit(self) -> None:
        plan = plan_frame(CODE, 10**9, 0.02)
        alice_end = AliceFrame(CODE, 0, np.zeros(plan.payload_length, np.uint8), 0.02)
        first = alice_end.start()
        with pytest.raises(ValueError, match="bob_payload"):
            BobFrame(CODE, first, np.zeros(plan.payload_length - 1, np.uint8))
        with pytest.raises(TypeError, match="bob_payload"):
            BobFrame(CODE, first, np.zeros(plan.payload_length, np.int64))  # type: ignore[arg-type]
        forged = SyndromeComputed(0, first.plan, first.syndrome.astype(np.int64))
        with pytest.raises(TypeError, match=r"message\.syndrome"):
            BobFrame(CODE, forged, np.zeros(plan.payload_length, np.uint8))
        short = SyndromeComputed(0, first.plan, first.syndrome[:-1])
        with pytest.raises(ValueError, match="message"):
            BobFrame(CODE, short, np.zeros(plan.payload_length, np.uint8))
        other = random_code(2000, 1000, 3, seed=2)
        with pytest.raises(ValueError, match="message"):
            BobFrame(other, first, np.zeros(plan.payload_length, np.uint8))
        bob_end = BobFrame(CODE, first, np.zeros(plan.payload_length, np.uint8))
        with pytest.raises(ValueError, match="message"):
            bob_end.on_reveal(BitsRevealed(1, np.zeros(1, np.uint8)))
        with pytest.raises(ValueError, match="message"):
            bob_end.on_tag(alice_end.tag(np.random.default_rng(0), 1e-15))


def test_codes_that_need_more_get_a_larger_syndrome() -> None:
    from qkdnode.dsp.ldpc.codes import REQUIRED_EFFICIENCY, load_code
    from qkdnode.dsp.reconcile import plan

    name, needed = max(REQUIRED_EFFICIENCY.items(), key=lambda item: item[1])
    code = load_code(name)
    assert plan.full_efficiency(code) == needed
    assert plan.full_efficiency(CODE) == plan.MIN_FULL_EFFICIENCY
    # The payload is cut so that the whole syndrome reaches the code's own efficiency.
    qber = 0.006
    frame = plan_frame(code, code.n, qber)
    assert code.m / (frame.payload_length * binary_entropy(qber)) == pytest.approx(needed, rel=1e-3)
    # And its first frames start closer to where they decode.
    start = reconcile.ReconcileHistory().start_efficiency(code, qber)
    assert start == pytest.approx(needed - reconcile.history.START_BELOW_FULL)


def test_pilot_frames_go_first_and_every_later_frame_starts_from_the_history_of_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A code decoding well above START_EFFICIENCY: the pilots step up (double steps) from the
    # code's own start; every later frame starts where the frames verified before it say.
    monkeypatch.setattr(reconcile.plan, "MIN_FULL_EFFICIENCY", 1.8)
    monkeypatch.setattr(reconcile.plan, "BLIND_STEP_EFFICIENCY", 0.03)
    code = random_code(4000, 600, 3, seed=2)
    alice, bob = bsc(3, 40_000, 0.02)
    report = reconcile_local(
        alice, bob, 0.02, rng=np.random.default_rng(1), code=code, keep_messages=True
    )
    assert report.frames_attempted > reconcile.local.FRAMES_PER_BATCH  # the pool refills
    pilots = reconcile.local.PILOT_FRAMES
    outcome = {f.frame: f for f in report.frames}
    history = reconcile.ReconcileHistory()
    plans = {}
    for message in report.messages:
        if isinstance(message, SyndromeComputed):
            k = message.frame
            plans[k] = message.plan
            start = history.start_efficiency(code, 0.02)
            step = 0.06 if k < pilots else None
            assert bool(history.successes(code.name)) == (k >= pilots)
            assert plans[k] == plan_frame(code, plans[k].payload_length, 0.02, start, step)
        elif isinstance(message, reconcile.FrameVerified) and message.accepted:
            f = outcome[message.frame]
            history.record(code.name, f.payload_length, f.decoded_disclosed,
                           plans[f.frame].step, f.errors)
    assert any(report.frames[k].rounds > 1 for k in range(pilots))
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_pooled_rounds_match_frames_decoded_one_by_one() -> None:
    # The pool keeps the frames' messages in the rows of one array that move as frames finish
    # and new ones join; each frame must still see exactly its own warm start: Bob's end alone,
    # fed the same messages from Alice, takes the same rounds and gives the same bits.
    code = random_code(4000, 600, 3, seed=2)
    alice, bob = bsc(5, 12 * 2600, 0.012)
    report = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(1), code=code,
                             keep_messages=True)
    assert report.frames_attempted > reconcile.local.FRAMES_PER_BATCH
    assert len({f.rounds for f in report.frames}) > 1  # frames finish at different rounds
    for outcome in report.frames:
        mine = [m for m in report.messages if m.frame == outcome.frame]
        first = mine[0]
        assert isinstance(first, SyndromeComputed)
        span = slice(outcome.start, outcome.start + outcome.payload_length)
        b = BobFrame(code, first, bob[span],
                     warm_iterations=reconcile.local.WARM_ROUND_ITERATIONS)
        reveals = iter(m for m in mine if isinstance(m, BitsRevealed))
        report_ = b.decode()
        while report_.status == "need_more":
            b.on_reveal(next(reveals))
            report_ = b.decode()
        assert b.rounds == outcome.rounds
        assert (report_.status == "decoded") == (outcome.decoded_disclosed > 0)
        if outcome.kept:
            assert b.corrected is not None
            np.testing.assert_array_equal(b.corrected, alice[span])
            np.testing.assert_array_equal(report.corrected[span], alice[span])


def test_bob_messages_buffer_is_checked() -> None:
    alice, bob = bsc(6, 1500, 0.02)
    first = AliceFrame(CODE, 0, alice, 0.02).start()
    with pytest.raises(ValueError, match="messages"):
        BobFrame(CODE, first, bob, messages=np.zeros(CODE.n_edges + 1, dtype=np.float32))
    buffer = np.full(CODE.n_edges, 7.0, dtype=np.float32)
    frame = BobFrame(CODE, first, bob, messages=buffer)
    assert frame.messages is buffer
    assert not buffer.any()


def test_frames_after_the_pilots_keep_the_pilots_code() -> None:
    # Three and a half full 64 000-bit payloads at 2 %: spread over four frames each would be
    # 12.5 % shortened, so the three full frames go first (pilots and the frame after them keep
    # that code) and the rest takes the code chosen for it.
    from qkdnode.dsp.reconcile import local

    code = choose_code(0.02, 64000)
    full = plan_frame(code, code.n, 0.02).payload_length
    alice, bob = bsc(12, 3 * full + full // 2, 0.02)
    assert choose_code(0.02, None, alice.size) == code
    assert local._packed_frames(alice.size, full, 0.02) == (code, 3)
    rest = choose_code(0.02, None, full // 2)
    assert rest.n < code.n
    report = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(6))
    names = [f.code_name for f in report.frames]
    assert names[:3] == [code.name] * 3
    assert set(names[3:]) == {rest.name}
    assert [f.payload_length for f in report.frames[:3]] == [full] * 3
    # The rest's frames cover it, but for a tail too short for a frame of its own (left
    # unkept, see the module docstring).
    rest_full = plan_frame(rest, rest.n, 0.02).payload_length
    uncovered = alice.size - sum(f.payload_length for f in report.frames)
    assert 0 <= uncovered < local.MIN_TAIL_FRACTION * rest_full
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_a_block_with_little_shortening_keeps_one_code() -> None:
    # Four 64 000-bit frames 2.5 % shortened: below PACK_SHORTENING, all the bits are spread
    # over frames of the one code chosen for them.
    from qkdnode.dsp.reconcile import local

    code = choose_code(0.02, 64000)
    full = plan_frame(code, code.n, 0.02).payload_length
    alice, bob = bsc(13, 4 * full - full // 40, 0.02)  # 4 frames 2.5 % shortened
    assert local._packed_frames(alice.size, full, 0.02) is None
    report = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(6), n=None)
    assert report.frames_attempted == 4
    assert {f.code_name for f in report.frames} == {choose_code(0.02, None, alice.size).name}
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_default_seeds_come_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    # rng=None: every verification seed is fresh bytes of secrets.token_bytes, never a numpy
    # generator (whose state its published outputs would reveal).
    alice, bob = bsc(11, 6000, 0.03)
    drawn: list[bytes] = []
    real = reconcile.local.secrets.token_bytes

    def token_bytes(size: int) -> bytes:
        drawn.append(real(size))
        return drawn[-1]

    def no_numpy(*args: object, **kwargs: object) -> None:
        raise AssertionError("a numpy generator was created for public seeds")

    monkeypatch.setattr(reconcile.local.secrets, "token_bytes", token_bytes)
    monkeypatch.setattr(np.random, "default_rng", no_numpy)
    report = reconcile_local(alice, bob, 0.03, code=CODE, keep_messages=True)
    monkeypatch.undo()
    tags = [m for m in report.messages if isinstance(m, TagComputed)]
    assert tags
    assert len(drawn) == len(tags)
    for tag, raw in zip(tags, drawn, strict=True):
        np.testing.assert_array_equal(tag.seed, np.frombuffer(raw, dtype=">u8").astype(np.uint64))
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_seed_bytes_make_a_run_reproducible() -> None:
    alice, bob = bsc(12, 6000, 0.03)
    runs = [
        reconcile_local(alice, bob, 0.03, rng=bytes(range(16)), code=CODE, keep_messages=True)
        for _ in range(2)
    ]
    seeds = [[m.seed for m in r.messages if isinstance(m, TagComputed)] for r in runs]
    assert seeds[0]
    for first, second in zip(*seeds, strict=True):
        np.testing.assert_array_equal(first, second)


def test_longest_code_only_where_it_is_validated() -> None:
    # n384000_r085 serves 1.75-2 % when the bits fill three of its frames; below its range (where
    # its frames would start heavily shortened) and for fewer bits the 192 000-bit codes do.
    assert choose_code(0.02, None, 4_000_000).name == "n384000_r085"
    assert choose_code(0.0175, None, 4_000_000).name == "n384000_r085"
    assert choose_code(0.02, None, 1_000_000).n == 192000
    assert choose_code(0.01, None, 4_000_000).n == 192000
    assert choose_code(0.025, None, 4_000_000).n < 384000
