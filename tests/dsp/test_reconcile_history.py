"""Tests of the start statistics carried across blocks (ReconcileHistory) and their one rule."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.ldpc.codes import LdpcCode, code_from_matrix
from qkdnode.dsp.reconcile import (
    ReconcileHistory,
    SyndromeComputed,
    binary_entropy,
    choose_code,
    plan,
    plan_frame,
    reconcile_local,
)
from qkdnode.dsp.reconcile import history as hist


def random_code(n: int, m: int, var_degree: int, seed: int) -> LdpcCode:
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


def test_record_stores_the_success_in_units_of_the_frames_own_error_rate() -> None:
    h = ReconcileHistory()
    value = h.record("c", 10_000, 1_650, 50, 200)
    assert value == pytest.approx((1_650 - 25) / (10_000 * binary_entropy(0.02)))  # mid-step
    assert h.successes("c") == (value,)
    assert h.successes("other") == ()
    assert h.codes == ("c",)
    assert h.qber == pytest.approx(0.02)
    h.record("d", 30_000, 5_000, 60, 300)
    assert h.qber == pytest.approx(500 / 40_000)
    # An error-free frame is counted at the planning floor of the QBER, not h(0) = 0.
    assert h.record("c", 1_000, 20, 0, 0) == pytest.approx(20 / (1_000 * binary_entropy(1e-3)))


def test_the_window_keeps_the_most_recent() -> None:
    h = ReconcileHistory(window=3)
    for k in range(5):
        h.record("c", 1_000, 100 + k, 0, 10)
    assert len(h.successes("c")) == 3
    assert h.successes("c")[-1] == pytest.approx(104 / (1_000 * binary_entropy(0.01)))


@settings(max_examples=30, deadline=None)
@given(
    window=st.integers(1, 8),
    frames=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 10**6), st.integers(0, 10**6),
                  st.integers(0, 10**3), st.floats(0, 0.5)),
        max_size=12,
    ),
)
def test_round_trip_through_json(
    window: int, frames: list[tuple[str, int, int, int, float]]
) -> None:
    h = ReconcileHistory(window)
    for name, payload, disclosed, step, rate in frames:
        h.record(name, payload, disclosed + step, step, int(rate * payload))
    again = ReconcileHistory.from_dict(json.loads(json.dumps(h.to_dict())))
    assert again == h
    assert again.qber == h.qber
    before = h.to_dict()
    copy = h.copy()
    copy.record("a", 10, 5, 0, 1)
    assert copy != h
    assert h.to_dict() == before


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("", 10, 5, 1, 0), TypeError, "code_name"),
        (("c", 0, 5, 1, 0), ValueError, "payload_length"),
        (("c", 10, -1, 1, 0), ValueError, "decoded_disclosed"),
        (("c", 10, 5, -1, 0), ValueError, "last_step"),
        (("c", 10, 5, 1, 11), ValueError, "errors"),
        (("c", 10.0, 5, 1, 0), TypeError, "payload_length"),
        (("c", 10, 5, True, 0), TypeError, "last_step"),
    ],
)
def test_record_rejects_bad_input(args: tuple, error: type, match: str) -> None:
    h = ReconcileHistory()
    with pytest.raises(error, match=match):
        h.record(*args)
    assert h.codes == ()


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ([], TypeError, "mapping"),
        ({"window": 4, "successes": {}}, ValueError, "frames"),
        ({"window": 0, "successes": {}, "frames": []}, ValueError, "window"),
        ({"window": 4, "successes": [], "frames": []}, TypeError, "successes"),
        ({"window": 4, "successes": {"c": [1.1, "x"]}, "frames": []}, ValueError, "successes"),
        ({"window": 4, "successes": {"c": [float("nan")]}, "frames": []}, ValueError, "nan"),
        ({"window": 4, "successes": {}, "frames": [{"errors": 3}]}, ValueError, "frames"),
        ({"window": 4, "successes": {}, "frames": [{"errors": 3, "bits": 2}]}, ValueError,
         "more errors"),
    ],
)
def test_from_dict_rejects_bad_data(data: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ReconcileHistory.from_dict(data)  # type: ignore[arg-type]


def test_start_quantile_is_checked() -> None:
    h = ReconcileHistory()
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="start_quantile"):
            h.start_efficiency(CODE, 0.02, bad)
    with pytest.raises(TypeError, match="start_quantile"):
        h.start_efficiency(CODE, 0.02, "0.1")  # type: ignore[arg-type]
    alice, bob = bsc(1, 1_000, 0.02)
    with pytest.raises(ValueError, match="start_quantile"):
        reconcile_local(alice, bob, 0.02, start_quantile=1.5)
    with pytest.raises(TypeError, match="history"):
        reconcile_local(alice, bob, 0.02, history={})  # type: ignore[arg-type]


def test_start_efficiency_follows_earlier_successes() -> None:
    h = ReconcileHistory()
    assert h.start_efficiency(CODE, 0.02) == plan.START_EFFICIENCY
    # Frames whose last failed rounds were at 1.10-1.20 x h(their own error rates): the next
    # start is below their mean by the spread of theirs and of a frame's own error rate (their
    # variances add).
    successes = list(np.linspace(1.10, 1.20, 11))
    h = ReconcileHistory.from_dict(
        {"window": 64, "successes": {CODE.name: successes}, "frames": []}
    )
    payload = plan_frame(CODE, CODE.n, 0.02).payload_length
    relative = np.log2(0.98 / 0.02) / binary_entropy(0.02) * np.sqrt(0.02 * 0.98 / payload)
    for quantile in (hist.START_QUANTILE, 0.3):
        z = statistics.NormalDist().inv_cdf(1 - quantile)
        spread = np.hypot(1.15 * relative, np.std(successes, ddof=1) * np.sqrt(1 + 1 / 11))
        expected = 1.15 - z * spread - hist.START_MARGIN
        start = h.start_efficiency(CODE, 0.02, quantile)
        assert start == pytest.approx(max(expected, plan.START_EFFICIENCY))
    # A higher quantile starts higher.
    assert h.start_efficiency(CODE, 0.02, 0.5) > h.start_efficiency(CODE, 0.02)
    # One success: no spread of its own yet, the prior spread (for a mean of one) and the
    # error-count spread.
    long_code = choose_code(0.02, 192000)
    one = ReconcileHistory()
    one.record(long_code.name, 100_000, round(1.09 * 100_000 * binary_entropy(0.02)), 0, 2_000)
    payload = plan_frame(long_code, long_code.n, 0.02).payload_length
    relative = np.log2(0.98 / 0.02) / binary_entropy(0.02) * np.sqrt(0.02 * 0.98 / payload)
    spread = np.hypot(1.09 * relative, hist.START_PRIOR_SPREAD * np.sqrt(2))
    z = statistics.NormalDist().inv_cdf(1 - hist.START_QUANTILE)
    expected = 1.09 - z * spread - hist.START_MARGIN
    assert one.start_efficiency(long_code, 0.02) == pytest.approx(expected, rel=1e-4)
    # Never below the default start, however lucky the earlier frames were.
    low = ReconcileHistory.from_dict({"window": 8, "successes": {CODE.name: [0.5]}, "frames": []})
    assert low.start_efficiency(CODE, 0.02) == plan.START_EFFICIENCY


def test_codes_that_need_more_start_closer_to_it() -> None:
    from qkdnode.dsp.ldpc.codes import REQUIRED_EFFICIENCY, load_code

    name, needed = max(REQUIRED_EFFICIENCY.items(), key=lambda item: item[1])
    code = load_code(name)
    assert plan.full_efficiency(code) == needed
    start = ReconcileHistory().start_efficiency(code, 0.006)
    assert start == pytest.approx(needed - hist.START_BELOW_FULL)


def _first_plans(report) -> dict[int, SyndromeComputed]:  # type: ignore[no-untyped-def]
    return {m.frame: m for m in report.messages if isinstance(m, SyndromeComputed)}


def test_the_history_gives_the_qber_prior_without_an_estimate() -> None:
    alice, bob = bsc(4, 12_000, 0.03)
    history = ReconcileHistory()
    reconcile_local(alice, bob, 0.03, rng=np.random.default_rng(1), code=CODE, history=history)
    prior = history.qber
    assert prior == pytest.approx(0.03, abs=0.006)
    report = reconcile_local(alice, bob, None, rng=np.random.default_rng(1), code=CODE,
                             history=history, keep_messages=True)
    # The first frame is planned at the history's error rate, not at the blind guess.
    assert _first_plans(report)[0].plan.qber == pytest.approx(prior)
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def test_far_rounds_ask_for_more_steps_and_alice_checks_the_count() -> None:
    from qkdnode.dsp.reconcile import AliceFrame, BobFrame, DecodingReported

    code = random_code(4000, 600, 3, seed=2)
    alice, bob = bsc(7, 3_000, 0.02)
    a = AliceFrame(code, 0, alice[: plan_frame(code, 3_000, 0.02).payload_length], 0.02)
    first = a.start()
    with pytest.raises(ValueError, match="far_steps"):
        BobFrame(code, first, bob[: a.payload.size], far_steps=0)
    b = BobFrame(code, first, bob[: a.payload.size], far_steps=3)
    # A word far from the syndrome (about half the checks unsatisfied): Bob asks for 3 steps.
    word = np.zeros(code.n, np.uint8)
    word[::2] = 1
    unsatisfied = np.count_nonzero(((code.H @ word.astype(np.int64)) % 2) != b.decode_input()[0])
    assert unsatisfied > hist_far() * code.m
    assert b.absorb(word, False).steps == 3
    # A word satisfying every check (Alice's own) but reported unconverged: one step.
    assert b.absorb(a._word.copy(), False).steps == 1
    assert BobFrame(code, first, bob[: a.payload.size]).absorb(word, False).steps == 1
    reveal = a.on_report(DecodingReported(0, "need_more", 3))
    assert reveal is not None
    assert reveal.values.size == min(3 * a.plan.step, a._layout.reveal_order.size)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="steps"):
            a.on_report(DecodingReported(0, "need_more", bad))  # type: ignore[arg-type]
    # Far steps or not, the pool keeps only frames equal to Alice's.
    alice, bob = bsc(8, 30_000, 0.02)
    report = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(1), code=code)
    np.testing.assert_array_equal(report.corrected[report.kept], alice[report.kept])


def hist_far() -> float:
    from qkdnode.dsp.reconcile import ends

    return ends.FAR_UNSAT_FRACTION


def test_a_second_block_with_the_history_needs_fewer_rounds() -> None:
    # Deterministic: the same bits and seeds twice, on a long shipped code at QBER 2 % (where the
    # thresholds sit well above START_EFFICIENCY). The first block's pilots step up from there;
    # the second block, given the history, starts every frame near the thresholds.
    code = choose_code(0.02, 192000)
    payload = plan_frame(code, code.n, 0.02).payload_length
    alice, bob = bsc(3, 3 * payload, 0.02)
    history = ReconcileHistory()
    first = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(1), code=code,
                            history=history, keep_messages=True)
    assert len(history.successes(code.name)) == first.frames_attempted - first.frames_discarded
    learnt = history.copy()
    second = reconcile_local(alice, bob, 0.02, rng=np.random.default_rng(1), code=code,
                             history=history, keep_messages=True)
    rounds = [sum(f.rounds for f in r.frames) for r in (first, second)]
    assert rounds[1] < rounds[0]
    assert second.frames_discarded == 0
    np.testing.assert_array_equal(second.corrected[second.kept], alice[second.kept])
    # The first frame of the second block: no pilot (ordinary step), started by the history.
    plan0 = _first_plans(second)[0].plan
    expected = plan_frame(code, plan0.payload_length, 0.02, learnt.start_efficiency(code, 0.02))
    assert plan0 == expected
    # The first block's: a pilot, from START_EFFICIENCY with a double step.
    assert _first_plans(first)[0].plan == plan_frame(
        code, plan0.payload_length, 0.02, plan.START_EFFICIENCY, 2 * plan.BLIND_STEP_EFFICIENCY
    )
