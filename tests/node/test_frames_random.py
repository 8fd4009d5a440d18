"""Alice's choices from a RandomSource's bytes: the exact mapping, the drawn probabilities,
the fractions on 2^20 slots, reproducibility on the simulated bench; Bob's squashing bits and
Alice's public Qdist seeds from a source too."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.drivers.roles import OsRandomSource, SeededRandomSource
from qkdnode.node.module.frames import (
    CHOICE_BITS,
    DRAW_SLOTS,
    FramePlan,
    channel_patterns,
    choices_from_bytes,
    drawn_probabilities,
)
from qkdnode.node.module.runtime import AliceModule, BlockCutter
from qkdnode.node.protocol.qdist import QdistAlice, QdistParams

MU = (0.485, 0.13, 2e-4)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
WORD = 1 << CHOICE_BITS
# Fractions are checked within this many standard deviations: a false alarm has probability
# ~2e-9 per check, so the test does not flake.
SIGMAS = 6.0


class PatternSource:
    """A RandomSource that replays fixed bytes (and records the requests)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.requests: list[int] = []

    def random_bytes(self, n: int) -> bytes:
        self.requests.append(n)
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def close(self) -> None:
        pass


def thresholds(p: tuple[float, float, float], q_x: float) -> tuple[int, int, int]:
    (p1, p2, _), qx = drawn_probabilities(p, q_x)
    return round(qx * WORD), round(p1 * WORD), round((p1 + p2) * WORD)


def test_every_16_bit_word_once_gives_the_drawn_probabilities_exactly() -> None:
    n = WORD
    t = thresholds(P, 0.3)
    words = np.arange(n, dtype="<u2")
    bits = np.full(n // 8, 0b1010_0101, np.uint8)
    data = words.tobytes() + words[::-1].tobytes() + bits.tobytes()
    basis, bit, intensity = choices_from_bytes(data, n, t)
    assert basis.dtype == bit.dtype == intensity.dtype == np.uint8
    assert int((basis == 0).sum()) == t[0]  # X below the threshold
    assert np.array_equal(np.bincount(intensity, minlength=3), [t[1], t[2] - t[1], n - t[2]])
    # Bit i is bit i % 8 (least significant first) of byte i // 8.
    assert np.array_equal(bit[:8], [1, 0, 1, 0, 0, 1, 0, 1])
    assert int(bit.sum()) == n // 2
    (p1, p2, p3), q_x = drawn_probabilities(P, 0.3)
    assert (basis == 0).mean() == q_x
    assert np.array_equal(np.bincount(intensity) / n, [p1, p2, p3])


def test_words_are_little_endian_and_the_length_is_checked() -> None:
    # One slot: basis word 0x8000, intensity word 0x0001, one bit byte.
    data = bytes([0x00, 0x80, 0x01, 0x00, 0x01])
    basis, bit, intensity = choices_from_bytes(data, 1, (0x8000, 0x0002, 0x0003))
    assert (basis[0], bit[0], intensity[0]) == (1, 1, 0)
    with pytest.raises(ValueError, match="1 slots need 5 random bytes, got 4"):
        choices_from_bytes(data[:4], 1, (1, 2, 3))


def reference_choices(data: bytes, n: int, t: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """Slot by slot, as the module docstring states the mapping (an independent reading)."""
    out = []
    for i in range(n):
        wb = data[2 * i] | data[2 * i + 1] << 8
        wi = data[2 * n + 2 * i] | data[2 * n + 2 * i + 1] << 8
        bit = data[4 * n + i // 8] >> (i % 8) & 1
        out.append((0 if wb < t[0] else 1, bit, 0 if wi < t[1] else 1 if wi < t[2] else 2))
    return out


@given(data=st.data(), n=st.integers(1, 40), a=st.integers(1, WORD - 1),
       b=st.integers(1, WORD - 2), c=st.integers(1, WORD - 2))
@settings(max_examples=60, deadline=None)
def test_choices_from_bytes_agrees_with_a_slot_by_slot_reading(
        data: st.DataObject, n: int, a: int, b: int, c: int) -> None:
    t = (a, min(b, c), max(b, c) + 1)
    raw = data.draw(st.binary(min_size=4 * n + -(-n // 8), max_size=4 * n + -(-n // 8)))
    basis, bit, intensity = choices_from_bytes(raw, n, t)
    assert list(zip(basis.tolist(), bit.tolist(), intensity.tolist(), strict=True)) == \
        reference_choices(raw, n, t)


@given(p1=st.floats(0.001, 0.9), p2=st.floats(0.001, 0.9), q_x=st.floats(0.001, 0.999))
@settings(max_examples=50, deadline=None)
def test_drawn_probabilities_are_16_bit_exact_and_close(p1: float, p2: float,
                                                        q_x: float) -> None:
    if p1 + p2 >= 0.999:
        p2 = (0.999 - p1) / 2
    p = (p1, p2, 1.0 - p1 - p2)
    drawn, qx = drawn_probabilities(p, q_x)
    assert sum(drawn) == 1.0
    for got, want in zip((*drawn, qx), (*p, q_x), strict=True):
        assert got * WORD == int(got * WORD)  # a multiple of 2^-16
        assert abs(got - want) <= 2.0 / WORD
    assert drawn_probabilities(drawn, qx) == (drawn, qx)  # idempotent


def test_a_probability_too_small_for_16_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="every intensity needs"):
        drawn_probabilities((0.5, 0.5 - 1e-6, 1e-6), 0.5)
    with pytest.raises(ValueError, match="both bases need"):
        FramePlan("ab", 64, 8, MU, P, q_x=1e-6)


def test_fractions_on_2_20_slots_match_the_configured_probabilities() -> None:
    plan = FramePlan("ab", 1 << 20, 1 << 12, MU, P, q_x=0.3)
    c = plan.alice_block(0, OsRandomSource())
    free = ~np.tile(plan.timing, plan.block_slots // plan.timing_slots)
    n = int(free.sum())
    (p1, p2, p3), q_x = plan.drawn
    for got, want in ((float((c.basis[free] == 0).mean()), q_x),
                      (float(c.bit[free].mean()), 0.5),
                      *zip(np.bincount(c.intensity[free], minlength=3) / n, (p1, p2, p3),
                           strict=True)):
        assert abs(got - want) <= SIGMAS * math.sqrt(want * (1 - want) / n), (got, want)
    assert np.all(c.intensity[~free] == plan.timing_class)
    assert c.first_slot == 0


def test_a_seeded_source_gives_the_same_choices_in_requests_of_draw_slots() -> None:
    n = 2 * DRAW_SLOTS + (1 << 12)  # two full requests and a short one
    plan = FramePlan("ab", n, 1 << 12, MU, P)
    a = plan.alice_block(3, SeededRandomSource("sim://bench/rng", 11))
    b = plan.alice_block(3, SeededRandomSource("sim://bench/rng", 11))
    c = plan.alice_block(3, SeededRandomSource("sim://bench/rng", 12))
    for name in ("basis", "bit", "intensity"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.basis, c.basis)
    # The same bytes mapped chunk by chunk give the same choices.
    data = SeededRandomSource("sim://bench/rng", 11).random_bytes(4 * n + n // 8)
    source = PatternSource(data)
    d = plan.alice_block(3, source)
    assert source.requests == [4 * DRAW_SLOTS + DRAW_SLOTS // 8] * 2 + [4 * 4096 + 512]
    assert np.array_equal(d.basis[:DRAW_SLOTS], choices_from_bytes(
        data[:source.requests[0]], DRAW_SLOTS, thresholds(P, 0.5))[0])
    for name in ("basis", "bit", "intensity"):  # one request or three: the same stream
        assert np.array_equal(getattr(d, name), getattr(a, name))


def test_a_source_that_returns_too_few_bytes_is_an_error() -> None:
    plan = FramePlan("ab", 64, 8, MU, P)
    with pytest.raises(ValueError, match=r"returned 10 bytes for a request of 264"):
        plan.alice_block(0, PatternSource(bytes(10)))


def test_alice_refuses_a_numpy_generator_for_her_choices() -> None:
    plan = FramePlan("ab", 64, 8, MU, P)
    with pytest.raises(TypeError, match="need a RandomSource, got Generator"):
        AliceModule(plan, QdistAlice(QdistParams(MU, P), bytes(range(256)) * 8),
                    None, None, None, np.random.default_rng(1))  # type: ignore[arg-type]


def test_bob_squashing_bits_are_the_low_two_bits_of_one_byte_per_detection() -> None:
    plan = FramePlan("ab", 64, 8, MU, P)
    patterns = channel_patterns({1: "X0", 2: "X1", 3: "Z0", 4: "Z1"})
    slots = np.flatnonzero(~np.tile(plan.timing, 8))[:6].astype(np.int64)
    # Double clicks (X0 + X1): the squashing rule takes bit 0 of the random value as the bit.
    # One byte per click of the block is drawn; the merged detections use the first ones.
    source = PatternSource(bytes([0b100, 0b101, 0b110, 0b111, 0b1000, 0b1001]) + bytes(6))
    cutter = BlockCutter(plan, patterns, source)
    cutter.add(np.r_[slots, slots, 64], np.r_[[1] * 6, [2] * 6, 1])
    det = cutter.close(0)
    assert source.requests == [12]
    assert det.slots.tolist() == slots.tolist()
    assert det.basis.tolist() == [0] * 6
    assert bool(det.multi_click.all())
    assert det.bit.tolist() == [0, 1, 0, 1, 0, 1]
    seeded = BlockCutter(plan, patterns, SeededRandomSource("sim://bench/rng", 1))
    seeded.add(np.r_[slots, slots, 64], np.r_[[1] * 6, [2] * 6, 1])
    assert det.slots.size == seeded.close(0).slots.size
    with pytest.raises(TypeError, match="squashing bits need a RandomSource"):
        BlockCutter(plan, patterns, object())  # type: ignore[arg-type]


def test_qdist_alice_draws_public_seeds_from_the_os_csprng_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import qkdnode.node.protocol.qdist.alice as alice_mod

    asked: list[int] = []

    def token_bytes(n: int) -> bytes:
        asked.append(n)
        return bytes([0b1000_0001]) * n

    monkeypatch.setattr(alice_mod.secrets, "token_bytes", token_bytes)
    alice = QdistAlice(QdistParams(MU, P), bytes(range(256)) * 8)
    bits = alice._random_bits(12)
    assert asked == [2]
    assert bits.tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    alice._eps_frame = 1e-12
    seed = alice._tag_source(4096)
    assert isinstance(seed, bytes)
    assert len(seed) == asked[-1]
    assert len(seed) % 8 == 0
    seeded = QdistAlice(QdistParams(MU, P), bytes(range(256)) * 8,
                        rng=np.random.default_rng(5))
    assert isinstance(seeded._tag_source(4096), np.random.Generator)
