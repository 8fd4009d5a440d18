"""Alice's reconciliation frames in a Qdist block: the equal split reconcile_local uses."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.reconcile.local import MIN_TAIL_FRACTION
from qkdnode.node.protocol.qdist.accounting import frame_starts


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2_000_000), st.integers(1, 200_000))
def test_frames_share_the_bits_equally(n_bits: int, full: int) -> None:
    spans = frame_starts(n_bits, full)
    lengths = [b - a for a, b in spans]
    assert all(a == b for (_, a), (b, _) in itertools.pairwise(spans))  # consecutive
    assert not spans or spans[0][0] == 0
    full_frames, rest = divmod(n_bits, full)
    if rest >= MIN_TAIL_FRACTION * full:
        assert sum(lengths) == n_bits
        assert len(spans) == full_frames + 1
        assert max(lengths) - min(lengths) <= 1
        assert max(lengths) <= full
    else:  # a short rest is left out
        assert lengths == [full] * full_frames


def test_a_tail_is_not_heavily_shortened() -> None:
    # 2.6 payloads: three frames of 0.87 payload each, not two full ones and a 0.6 tail.
    assert frame_starts(26_000, 10_000) == [(0, 8667), (8667, 17334), (17334, 26000)]
    assert frame_starts(20_100, 10_000) == [(0, 10_000), (10_000, 20_000)]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="full_payload >= 1"):
        frame_starts(10, 0)
