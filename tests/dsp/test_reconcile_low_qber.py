"""Reconciliation with the shipped codes at the low QBER of real links (0.3-1.5 %).

Every frame must be kept: a discarded frame costs a whole QKD block its key at these rates. The
efficiency ``f`` (every disclosed bit over ``kept * h(actual QBER)``) is recorded with
``record_property`` and bounded loosely (the codes' measured efficiency is in the report of the
change that added these tests, not asserted: tests check correctness, not performance).
"""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.dsp.ldpc.codes import VALIDATED_QBER, available_codes
from qkdnode.dsp.reconcile import binary_entropy, choose_code, reconcile_local

BITS = 300_000


def run(qber: float, seed: int, bits: int = BITS) -> tuple[float, int, int]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, bits, dtype=np.uint8)
    bob = alice ^ (rng.random(bits) < qber).astype(np.uint8)
    report = reconcile_local(alice, bob, qber, rng=np.random.default_rng(seed + 1))
    kept = report.kept
    np.testing.assert_array_equal(report.corrected[kept], alice[kept])
    actual = float((alice != bob)[kept].mean())
    efficiency = report.disclosed_bits / (int(kept.sum()) * binary_entropy(actual))
    # Only a short tail (below MIN_TAIL_FRACTION of a frame) may be left unkept.
    assert kept.sum() >= 0.75 * bits
    return efficiency, report.frames_attempted, report.frames_discarded


@pytest.mark.parametrize("qber", [0.003, 0.005, 0.008, 0.015])
def test_every_frame_is_kept_at_low_qber(
    qber: float, record_property: pytest.RecordProperty
) -> None:
    efficiency, attempted, discarded = run(qber, seed=int(qber * 1e4))
    record_property("efficiency_f", round(efficiency, 4))
    record_property("frames", attempted)
    assert attempted >= 2
    assert discarded == 0
    assert 1.0 < efficiency < 2.5


@pytest.mark.slow
@pytest.mark.parametrize("qber", [0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.01, 0.012,
                                  0.015])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_frame_is_kept_sweep(qber: float, seed: int) -> None:
    _, attempted, discarded = run(qber, seed=seed, bits=2 * BITS)
    assert discarded == 0, f"{discarded}/{attempted} frames discarded at QBER {qber}"


@pytest.mark.parametrize("qber", [0.001, 0.003, 0.005, 0.008, 0.012, 0.02, 0.05, 0.09])
@pytest.mark.parametrize("available", [None, 40_000, 300_000, 2_000_000])
def test_choice_is_validated_at_the_qber(qber: float, available: int | None) -> None:
    code = choose_code(qber, None, available)
    low, high = VALIDATED_QBER[code.name]
    assert low <= qber <= high


def test_frame_length_follows_the_bits_available() -> None:
    lengths = sorted({info.n for info in available_codes()})
    small = choose_code(0.02, None, 30_000)
    large = choose_code(0.02, None, 5_000_000)
    assert small.n == lengths[0]
    assert large.n == lengths[-1]
    assert choose_code(0.02, None).n == 64000  # no size given: the default length
    assert choose_code(0.02, 16000, 5_000_000).n == 16000  # an explicit length wins


def test_no_validated_code_is_an_error() -> None:
    with pytest.raises(ValueError, match="validated"):
        choose_code(0.2, None)


@pytest.mark.parametrize("seed", [1, 2])
def test_small_block_at_low_qber(seed: int, record_property: pytest.RecordProperty) -> None:
    # A 50 km block: ~42 000 sifted bits at QBER 0.85 % go to 16 000-bit frames of the rate-0.92
    # code (the rate-0.90 one must puncture a tenth of its checks and left f ~1.4 here).
    assert choose_code(0.0085, None, 42_000).name == "n16000_r092"
    efficiency, attempted, discarded = run(0.0085, seed=seed, bits=42_000)
    record_property("efficiency_f", round(efficiency, 4))
    assert attempted == 3
    assert discarded == 0
    assert 1.0 < efficiency < 1.6


def test_long_frames_at_one_percent_use_the_rate_091_code() -> None:
    # n192000_r091 (the project's rate-0.91 design) supersedes n192000_r090 at and below 1.4 %.
    assert choose_code(0.01, 192000).name == "n192000_r091"
    assert choose_code(0.014, 192000).name == "n192000_r091"
    assert choose_code(0.02, 192000).name == "n192000_r085"
