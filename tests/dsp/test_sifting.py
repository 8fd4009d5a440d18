"""Sifting: pattern decoding, the two-sided protocol, and agreement with a per-detection loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.estimation import DecoyCounts
from qkdnode.dsp.sifting import (
    X0,
    X1,
    Z0,
    Z1,
    AliceChoices,
    BasisAnnouncement,
    CrossBasisRule,
    SiftReply,
    alice_sift,
    bob_announcement,
    bob_sift,
    decode_patterns,
    measure,
    pattern_of,
    sift,
    z_errors,
)

U8 = np.uint8


def u8(*values: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.array(values, dtype=U8)


def i64(*values: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------- reference twin


def reference_outcome(pattern: int, rand: int, rule: CrossBasisRule) -> tuple[int, int] | None:
    """(basis, bit) of one pattern, written from the rule's words, one detection at a time."""
    clicked = [(b, v) for b in (0, 1) for v in (0, 1) if pattern & (1 << (2 * b + v))]
    bases = {b for b, _ in clicked}
    if len(bases) == 2:
        if rule is CrossBasisRule.DISCARD:
            return None
        basis = (rand >> 1) & 1
    else:
        (basis,) = bases
    values = [v for b, v in clicked if b == basis]
    return basis, values[0] if len(values) == 1 else rand & 1


def reference_sift(
    first: int,
    a_basis: list[int],
    a_bit: list[int],
    a_int: list[int],
    slots: list[int],
    patterns: list[int],
    rand: list[int],
    rule: CrossBasisRule,
) -> dict[str, Any]:
    out: dict[str, Any] = {k: [] for k in ("xa", "xb", "xs", "za", "zb", "zs")}
    n_x, n_z, m_z, m_x = [0] * 3, [0] * 3, [0] * 3, [0] * 3
    for slot, pattern, r in sorted(zip(slots, patterns, rand, strict=True)):
        outcome = reference_outcome(pattern, r, rule)
        if outcome is None:
            continue
        basis, bob_bit = outcome
        i = slot - first
        if a_basis[i] != basis:
            continue
        k = a_int[i]
        if basis == 0:
            out["xa"].append(a_bit[i])
            out["xb"].append(bob_bit)
            out["xs"].append(slot)
            n_x[k] += 1
            m_x[k] += a_bit[i] != bob_bit
        else:
            out["za"].append(a_bit[i])
            out["zb"].append(bob_bit)
            out["zs"].append(slot)
            n_z[k] += 1
            m_z[k] += a_bit[i] != bob_bit
    out.update(n_x=tuple(n_x), n_z=tuple(n_z), m_z=tuple(m_z), m_x=tuple(m_x))
    return out


@st.composite
def sifting_case(draw: st.DrawFn) -> dict[str, Any]:
    n_slots = draw(st.integers(1, 60))
    first = draw(st.integers(-(2**40), 2**40))
    a_basis = draw(st.lists(st.integers(0, 1), min_size=n_slots, max_size=n_slots))
    a_bit = draw(st.lists(st.integers(0, 1), min_size=n_slots, max_size=n_slots))
    a_int = draw(st.lists(st.integers(0, 2), min_size=n_slots, max_size=n_slots))
    offsets = draw(st.lists(st.integers(0, n_slots - 1), unique=True, max_size=n_slots))
    patterns = draw(st.lists(st.integers(1, 15), min_size=len(offsets), max_size=len(offsets)))
    rand = draw(st.lists(st.integers(0, 255), min_size=len(offsets), max_size=len(offsets)))
    rule = draw(st.sampled_from(CrossBasisRule))
    return dict(
        first=first,
        a_basis=a_basis,
        a_bit=a_bit,
        a_int=a_int,
        slots=[first + o for o in offsets],
        patterns=patterns,
        rand=rand,
        rule=rule,
    )


@settings(max_examples=300, deadline=None)
@given(sifting_case())
def test_sift_agrees_with_per_detection_loop(case: dict[str, Any]) -> None:
    choices = AliceChoices(
        case["first"], u8(*case["a_basis"]), u8(*case["a_bit"]), u8(*case["a_int"])
    )
    result = sift(
        choices,
        i64(*case["slots"]),
        u8(*case["patterns"]),
        random_bits=u8(*case["rand"]),
        cross_basis=case["rule"],
    )
    ref = reference_sift(**case)
    assert result.x_alice.tolist() == ref["xa"]
    assert result.x_bob.tolist() == ref["xb"]
    assert result.x_slots.tolist() == ref["xs"]
    assert result.z_alice.tolist() == ref["za"]
    assert result.z_bob.tolist() == ref["zb"]
    assert result.z_slots.tolist() == ref["zs"]
    assert (result.n_x, result.n_z, result.m_z, result.m_x) == (
        ref["n_x"],
        ref["n_z"],
        ref["m_z"],
        ref["m_x"],
    )


# --------------------------------------------------------------------------- decoding


def test_single_clicks_decode_to_their_detector() -> None:
    out = decode_patterns(u8(X0, X1, Z0, Z1), random_bits=u8(3, 3, 3, 3))
    assert out.basis.tolist() == [0, 0, 1, 1]
    assert out.bit.tolist() == [0, 1, 0, 1]
    assert not out.multi_click.any()
    assert out.valid.all()


def test_double_click_in_one_basis_takes_the_random_bit() -> None:
    out = decode_patterns(u8(X0 | X1, X0 | X1, Z0 | Z1, Z0 | Z1), random_bits=u8(0, 1, 2, 3))
    assert out.basis.tolist() == [0, 0, 1, 1]
    assert out.bit.tolist() == [0, 1, 0, 1]
    assert out.multi_click.all()


def test_cross_basis_random_rule_draws_the_basis_from_bit_1() -> None:
    # X1 and Z0 clicked: random basis X gives bit 1, Z gives bit 0; bit 0 of rand is unused.
    out = decode_patterns(u8(X1 | Z0, X1 | Z0, X1 | Z0), random_bits=u8(0, 2, 1))
    assert out.basis.tolist() == [0, 1, 0]
    assert out.bit.tolist() == [1, 0, 1]
    assert out.valid.all()
    assert out.multi_click.all()
    # All four clicked: random basis, then the double-click bit.
    out = decode_patterns(u8(15, 15), random_bits=u8(2, 1))
    assert out.basis.tolist() == [1, 0]
    assert out.bit.tolist() == [0, 1]


def test_cross_basis_discard_rule_marks_only_cross_clicks_invalid() -> None:
    patterns = u8(*range(1, 16))
    out = decode_patterns(patterns, seed=1, cross_basis=CrossBasisRule.DISCARD)
    cross = [(p & 3) != 0 and (p & 12) != 0 for p in range(1, 16)]
    assert out.valid.tolist() == [not c for c in cross]


def test_pattern_of_round_trips_through_decoding() -> None:
    basis, bit = u8(0, 0, 1, 1), u8(0, 1, 0, 1)
    patterns = pattern_of(basis, bit)
    assert patterns.tolist() == [X0, X1, Z0, Z1]
    out = decode_patterns(patterns, seed=0)
    assert np.array_equal(out.basis, basis)
    assert np.array_equal(out.bit, bit)


def test_seed_is_reproducible_and_exactly_one_source_is_required() -> None:
    patterns = np.full(1000, X0 | X1, dtype=U8)
    a = decode_patterns(patterns, seed=7).bit
    assert np.array_equal(a, decode_patterns(patterns, seed=7).bit)
    assert 300 < int(a.sum()) < 700
    with pytest.raises(ValueError, match="exactly one"):
        decode_patterns(patterns)
    with pytest.raises(ValueError, match="exactly one"):
        decode_patterns(patterns, seed=1, random_bits=np.zeros(1000, U8))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"patterns": np.array([1], dtype=np.int64), "seed": 0}, TypeError, "patterns"),
        ({"patterns": [1, 2], "seed": 0}, TypeError, "patterns"),
        (
            {"patterns": u8(1), "random_bits": np.array([1], dtype=np.int8)},
            TypeError,
            "random_bits",
        ),
        ({"patterns": u8(1, 2), "random_bits": u8(1)}, ValueError, "random_bits"),
        ({"patterns": u8(0), "seed": 0}, ValueError, "empty pattern"),
        ({"patterns": u8(16), "seed": 0}, ValueError, "patterns"),
        ({"patterns": u8(1), "seed": 1.5}, TypeError, "seed"),
        ({"patterns": u8(1), "seed": 0, "cross_basis": "random"}, TypeError, "cross_basis"),
    ],
)
def test_decode_rejects_bad_arguments(kwargs: dict[str, Any], error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        decode_patterns(**kwargs)


# --------------------------------------------------------------------------- the protocol


def _link(n_slots: int = 20000, n_det: int = 4000, seed: int = 3) -> tuple[Any, ...]:
    """Random choices and detections where Bob's bit is Alice's except for ~3% flips."""
    rng = np.random.default_rng(seed)
    choices = AliceChoices(
        1_000_000,
        rng.integers(0, 2, n_slots, dtype=U8),
        rng.integers(0, 2, n_slots, dtype=U8),
        rng.integers(0, 3, n_slots, dtype=U8),
    )
    offsets = np.sort(rng.choice(n_slots, n_det, replace=False))
    bob_basis = rng.integers(0, 2, n_det, dtype=U8)
    bob_bit = np.where(
        bob_basis == choices.basis[offsets], choices.bit[offsets], rng.integers(0, 2, n_det)
    ).astype(U8)
    bob_bit ^= (rng.random(n_det) < 0.03).astype(U8)
    slots = offsets.astype(np.int64) + choices.first_slot
    return choices, slots, pattern_of(bob_basis, bob_bit), rng.integers(0, 4, n_det, dtype=U8)


def test_split_protocol_matches_the_in_memory_sift() -> None:
    choices, slots, patterns, rand = _link()
    whole = sift(choices, slots, patterns, random_bits=rand)

    detections = measure(slots, patterns, random_bits=rand)  # Bob
    announcement = bob_announcement(detections)  # -> Alice: slots and bases only
    alice, reply = alice_sift(choices, announcement)  # Alice -> Bob: match + intensities
    bob = bob_sift(detections, reply)  # Bob
    m_z = z_errors(alice.z_bits, bob.z_bits, alice.z_intensity)  # Bob disclosed his Z bits

    assert not hasattr(announcement, "bit")
    assert np.array_equal(alice.x_slots, bob.x_slots)
    assert np.array_equal(alice.x_intensity, bob.x_intensity)
    assert np.array_equal(whole.x_alice, alice.x_bits)
    assert np.array_equal(whole.x_bob, bob.x_bits)
    assert np.array_equal(whole.z_alice, alice.z_bits)
    assert np.array_equal(whole.z_bob, bob.z_bits)
    assert whole.n_x == alice.n_x == bob.n_x
    assert whole.n_z == alice.n_z == bob.n_z
    assert whole.m_z == m_z


def test_sifted_bits_are_alices_choices_at_matching_slots() -> None:
    choices, slots, patterns, rand = _link()
    r = sift(choices, slots, patterns, random_bits=rand)
    x_idx = r.x_slots - choices.first_slot
    z_idx = r.z_slots - choices.first_slot
    assert (choices.basis[x_idx] == 0).all()
    assert (choices.basis[z_idx] == 1).all()
    assert np.array_equal(r.x_alice, choices.bit[x_idx])
    assert np.array_equal(r.x_intensity, choices.intensity[x_idx])
    assert np.array_equal(r.z_alice, choices.bit[z_idx])
    assert (np.diff(r.x_slots) > 0).all()
    assert (np.diff(r.z_slots) > 0).all()
    # Half of the detections match in basis; ~3% of sifted bits differ.
    assert 0.4 < (sum(r.n_x) + sum(r.n_z)) / len(slots) < 0.6
    assert 0.015 < sum(r.m_z) / sum(r.n_z) < 0.05
    assert sum(r.m_x) == int(np.count_nonzero(r.x_alice != r.x_bob))
    counts = r.decoy_counts()
    assert counts == DecoyCounts(r.n_x, r.n_z, r.m_z, r.m_x)
    assert r.decoy_counts(with_x_errors=False).m_x is None


def test_results_are_read_only() -> None:
    choices, slots, patterns, rand = _link(200, 50)
    r = sift(choices, slots, patterns, random_bits=rand)
    with pytest.raises(ValueError, match="read-only"):
        r.x_alice[:1] = 1
    assert slots.flags.writeable  # the caller's array is left alone


def test_unsorted_detections_are_sorted_with_their_random_bits() -> None:
    choices, slots, patterns, rand = _link()
    order = np.random.default_rng(0).permutation(len(slots))
    a = sift(choices, slots, patterns, random_bits=rand)
    b = sift(choices, slots[order], patterns[order], random_bits=rand[order])
    assert np.array_equal(a.x_bob, b.x_bob)
    assert np.array_equal(a.x_slots, b.x_slots)
    assert a.m_z == b.m_z


def test_repeated_slot_is_an_error_naming_it() -> None:
    choices, _, _, _ = _link(100, 10)
    with pytest.raises(ValueError, match="slot 1000007 more than once"):
        sift(choices, i64(1000009, 1000007, 1000007), u8(1, 2, 4), seed=0)


@pytest.mark.parametrize("slot", [999_999, 1_000_100])
def test_detection_outside_choices_is_an_error_naming_it(slot: int) -> None:
    choices, _, _, _ = _link(100, 10)
    with pytest.raises(ValueError, match=f"slot {slot} is outside"):
        sift(choices, i64(1_000_050, slot), u8(1, 1), seed=0)


def test_empty_detections_give_empty_result() -> None:
    choices, _, _, _ = _link(100, 10)
    r = sift(choices, i64(), u8(), seed=0)
    assert r.n_x == r.n_z == r.m_z == (0, 0, 0)
    assert r.x_alice.dtype == U8
    assert r.x_slots.dtype == np.int64


@pytest.mark.parametrize("field", ["basis", "bit", "intensity"])
def test_choices_reject_wrong_dtype_naming_the_field(field: str) -> None:
    arrays = {f: np.zeros(4, U8) for f in ("basis", "bit", "intensity")}
    arrays[field] = np.zeros(4, dtype=np.int32)
    with pytest.raises(TypeError, match=field):
        AliceChoices(0, **arrays)


def test_choices_reject_bad_first_slot_and_lengths() -> None:
    z = np.zeros(4, U8)
    with pytest.raises(TypeError, match="first_slot"):
        AliceChoices(1.0, z, z, z)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lengths"):
        AliceChoices(0, z, z, np.zeros(3, U8))


def test_sift_rejects_wrong_slot_dtype() -> None:
    choices, _, _, _ = _link(100, 10)
    with pytest.raises(TypeError, match="slots"):
        sift(choices, np.array([1_000_001], dtype=np.int32), u8(1), seed=0)


def test_out_of_range_choice_values_are_caught_where_read() -> None:
    choices = AliceChoices(0, u8(0, 0), u8(0, 2), u8(0, 0))
    with pytest.raises(ValueError, match=r"choices\.bit"):
        sift(choices, i64(1), u8(X0), seed=0)
    choices = AliceChoices(0, u8(0, 0), u8(0, 0), u8(0, 3))
    with pytest.raises(ValueError, match="intensity"):
        sift(choices, i64(1), u8(X0), seed=0)


def test_malformed_messages_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"announcement\.slots"):
        BasisAnnouncement(i64(5, 3), u8(0, 1))
    with pytest.raises(ValueError, match=r"announcement\.basis"):
        BasisAnnouncement(i64(3, 5), u8(0, 2))
    with pytest.raises(ValueError, match=r"reply\.intensity"):
        SiftReply(np.array([True]), u8(3))
    _choices, slots, patterns, rand = _link(100, 10)
    detections = measure(slots, patterns, random_bits=rand)
    with pytest.raises(ValueError, match=r"reply.match covers 1"):
        bob_sift(detections, SiftReply(np.array([True]), u8(0)))


def test_z_errors_count_per_intensity() -> None:
    assert z_errors(u8(0, 1, 1, 0, 1), u8(1, 1, 0, 0, 0), u8(0, 0, 2, 2, 2)) == (1, 0, 2)
