"""The simulated bench's numba kernels agree with their plain twins, and keep their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from qkdnode.drivers.sim import kernels, optics, prng
from qkdnode.drivers.sim.prng import PyXoshiro

seeds = st.integers(0, 2**32 - 1)
ZIG = prng.exponential_tables()
NORM = prng.normal_tables()
TABLES = prng.ziggurat_tables()


def fresh(seed: int) -> tuple[NDArray[np.uint64], PyXoshiro]:
    state = prng.new_state(np.random.default_rng(seed))
    return state, PyXoshiro(state.copy())


@settings(deadline=None)
@given(seed=seeds)
def test_generator_matches_twin(seed: int) -> None:
    state, twin = fresh(seed)
    assert [int(kernels.next_u64(state)) for _ in range(20)] == [twin.u64() for _ in range(20)]
    assert [kernels.next_uniform(state) for _ in range(5)] == [twin.uniform() for _ in range(5)]
    normals = [kernels.next_normal(state, *NORM, prng.ZIGGURAT_NORMAL_R) for _ in range(300)]
    assert normals == [twin.normal(*NORM) for _ in range(300)]
    np.testing.assert_array_equal(state, twin.state())


def test_normal_matches_twin_through_wedges_and_tail() -> None:
    """Enough draws that the wedge test (about 1 %) and the tail (0.03 %) are both taken."""
    state, twin = fresh(17)
    got = np.array([kernels.next_normal(state, *NORM, prng.ZIGGURAT_NORMAL_R)
                    for _ in range(30_000)])
    np.testing.assert_array_equal(got, [twin.normal(*NORM) for _ in range(30_000)])
    assert np.any(np.abs(got) > prng.ZIGGURAT_NORMAL_R)
    np.testing.assert_array_equal(state, twin.state())


def test_normal_distribution() -> None:
    """Ziggurat normals: moments, symmetry and the mass per interval (tail included)
    against the standard normal."""
    state, _ = fresh(6)
    z = np.array([kernels.next_normal(state, *NORM, prng.ZIGGURAT_NORMAL_R)
                  for _ in range(500_000)])
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs((z**2).mean() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)
    edges = np.array([-np.inf, -prng.ZIGGURAT_NORMAL_R, -3, -2, -1, -0.5, -0.1, 0, 0.1, 0.5,
                      1, 2, 3, prng.ZIGGURAT_NORMAL_R, 4.5, np.inf])
    cdf = np.array([0.5 * math.erfc(-x / math.sqrt(2)) for x in edges])
    expected = n * np.diff(cdf)
    counts = np.histogram(z, bins=edges)[0]
    big = expected > 20
    assert np.all(np.abs(counts - expected)[big] < 5 * np.sqrt(expected[big]))


@settings(deadline=None)
@given(seed=seeds)
def test_exponential_matches_twin(seed: int) -> None:
    state, twin = fresh(seed)
    got = [kernels.next_exponential(state, *ZIG, prng.ZIGGURAT_EXP_R) for _ in range(300)]
    assert got == [twin.exponential(*ZIG) for _ in range(300)]
    np.testing.assert_array_equal(state, twin.state())


def test_exponential_distribution() -> None:
    """Ziggurat exponentials: moments and the tail beyond the base layer, against Exp(1)."""
    state, _ = fresh(4)
    x = np.array([kernels.next_exponential(state, *ZIG, prng.ZIGGURAT_EXP_R)
                  for _ in range(400_000)])
    n = x.size
    assert abs(x.mean() - 1) < 5 / math.sqrt(n)
    assert abs((x**2).mean() - 2) < 5 * math.sqrt(20 / n)
    edges = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 4.0, prng.ZIGGURAT_EXP_R, 10.0, np.inf])
    counts = np.histogram(x, bins=edges)[0]
    expected = n * -np.diff(np.exp(-edges))
    big = expected > 20
    assert np.all(np.abs(counts - expected)[big] < 5 * np.sqrt(expected[big]))
    assert counts[-2:].sum() > 0  # the tail beyond the base layer is reached


def test_generator_moments() -> None:
    state, _ = fresh(1)
    u = np.array([kernels.next_uniform(state) for _ in range(100_000)])
    z = np.array([kernels.next_normal(state, *NORM, prng.ZIGGURAT_NORMAL_R)
                  for _ in range(100_000)])
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.std() - 1) < 0.01
    assert u.min() >= 0
    assert u.max() < 1


def pattern_tables(rng: np.random.Generator, n_det: int = 4
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.uint8],
                              NDArray[np.float64]]:
    table = rng.random((n_det, 12)) * rng.choice([0.001, 0.3, 1.0])
    table[:, 5] = 0.0  # a type where nothing clicks
    p_any, cum, masks = optics.click_patterns(table)
    return p_any, cum, masks, table


@settings(deadline=None)
@given(seed=seeds, span=st.integers(1, 5000), frame_len=st.integers(1, 40),
       start=st.integers(-1, 10**12), sigma=st.sampled_from([0.0, 30.0, 700.0]),
       max_out=st.integers(1, 300))
def test_photon_clicks_match_twin(seed: int, span: int, frame_len: int, start: int,
                                  sigma: float, max_out: int) -> None:
    state, twin = fresh(seed)
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 12, frame_len).astype(np.uint8)
    p_any, cum, masks, _ = pattern_tables(rng)
    p_max = float(p_any[types].max())
    if p_max == 0.0:
        return
    t_ref = rng.random(4) * 1e4
    sig = np.array([sigma, 0.0, sigma / 2, sigma])
    args = (start, start + 1 + span, math.log1p(-p_max), types, p_any / p_max, cum, masks,
            t_ref, sig, 1000.0, 8.0)
    out_s = np.full((4, max_out), -7, np.int64)
    out_t = np.empty((4, max_out))
    counts, pos, done = kernels.photon_clicks(state, *args, out_s, out_t, TABLES)
    ref_s, ref_t, ref_pos, ref_done = kernels.photon_clicks_reference(twin, *args, max_out,
                                                                      TABLES)
    for j in range(4):
        np.testing.assert_array_equal(out_s[j, :counts[j]], ref_s[j])
        np.testing.assert_array_equal(out_t[j, :counts[j]], ref_t[j])
        slots, times = out_s[j, :counts[j]], out_t[j, :counts[j]]
        assert np.all(np.diff(slots) > 0)
        assert np.all((slots > start) & (slots <= start + span))
        assert np.all(np.abs(times - ((slots - start) * 1000.0 + t_ref[j]))
                      <= 8.0 * sig[j] + 1e-6)
    assert (int(pos), bool(done)) == (ref_pos, ref_done)
    np.testing.assert_array_equal(state, twin.state())


def test_photon_clicks_rates_follow_the_frame_and_detectors() -> None:
    """Each detector clicks in a slot of type t with its own probability table[j, t]."""
    state, _ = fresh(5)
    types = np.array([0, 1, 2, 1, 7], dtype=np.uint8)
    table = np.zeros((4, 12))
    table[:, 0] = [0.02, 0.001, 0.01, 0.0]
    table[:, 1] = [0.0, 0.015, 0.005, 0.005]
    table[:, 7] = [0.2, 0.2, 0.1, 0.3]  # dense: double clicks are common
    p_any, cum, masks = optics.click_patterns(table)
    p_max = float(p_any[types].max())
    n_slots = 2_000_000
    out_s, out_t = np.empty((4, 1_000_000), np.int64), np.empty((4, 1_000_000))
    counts, _, done = kernels.photon_clicks(
        state, -1, n_slots, math.log1p(-p_max), types, p_any / p_max, cum, masks,
        np.zeros(4), np.zeros(4), 1000.0, 8.0, out_s, out_t, TABLES)
    assert done
    for j in range(4):
        per_pos = np.bincount(out_s[j, :counts[j]] % 5, minlength=5)
        expected = n_slots / 5 * table[j, types]
        for pos in range(5):
            assert abs(per_pos[pos] - expected[pos]) <= 5 * math.sqrt(expected[pos]) + 1e-9
    # Double clicks in the dense type: X0 and X1 together with probability 0.2 * 0.2.
    both = np.intersect1d(out_s[0, :counts[0]], out_s[1, :counts[1]])
    expected_both = n_slots / 5 * 0.04
    assert abs(np.sum(both % 5 == 4) - expected_both) < 5 * math.sqrt(expected_both)


def test_click_patterns_are_the_conditional_distribution() -> None:
    table = np.array([[0.5], [0.1], [0.2], [0.0]])
    p_any, cum, masks = optics.click_patterns(table)
    assert p_any[0] == pytest.approx(1 - 0.5 * 0.9 * 0.8)
    probs = np.diff(np.concatenate(([0.0], cum[0, :-1], [1.0])))
    by_mask = dict(zip(masks[0].tolist(), probs.tolist(), strict=True))
    assert by_mask[0b0001] == pytest.approx(0.5 * 0.9 * 0.8 / p_any[0])
    assert by_mask[0b0011] == pytest.approx(0.5 * 0.1 * 0.8 / p_any[0])
    assert by_mask[0b1000] == pytest.approx(0.0)
    assert np.all(np.diff(cum[0, :-1]) >= 0)


def _stream(rng: np.random.Generator, n: int, t_max: float
            ) -> tuple[NDArray[np.float64], NDArray[np.uint8], NDArray[np.int64]]:
    # Coarse times, so that equal times across streams (tie-breaking) occur.
    t = np.sort(np.floor(rng.random(n) * t_max / 10) * 10)
    return t, rng.integers(0, 2, n).astype(np.uint8), rng.integers(-1, 100, n).astype(np.int64)


@settings(deadline=None)
@given(seed=seeds, na=st.integers(0, 60), nb=st.integers(0, 20), n_pend=st.integers(0, 4),
       dead=st.floats(0, 300), p_ap=st.sampled_from([0.0, 0.3, 0.95]),
       cut_frac=st.floats(0, 1.2))
def test_dead_time_scan_matches_twin(seed: int, na: int, nb: int, n_pend: int, dead: float,
                                     p_ap: float, cut_frac: float) -> None:
    rng = np.random.default_rng(seed)
    state, twin = fresh(seed)
    t_max = 2000.0
    a, b = _stream(rng, na, t_max), _stream(rng, nb, t_max)
    pending = np.sort(rng.random(n_pend) * t_max)
    last = -math.inf if seed % 2 else -50.0
    scalars = (last, cut_frac * t_max, dead, p_ap, 70.0)
    cap = na + nb + n_pend + 1  # small: long cascades continue in grown copies
    got = kernels.dead_time_scan(*a, *b, pending, *scalars, state, 2, np.empty(cap),
                                 np.empty(cap, np.uint8), np.empty(cap, np.int64))
    ref = kernels.dead_time_scan_reference(*a, *b, pending, *scalars, twin, 2)
    for x, y in zip(got[:3], ref[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert (int(got[3]), int(got[4])) == (ref[3], ref[4])
    np.testing.assert_array_equal(got[5], ref[5])
    assert got[6] == ref[6]
    np.testing.assert_array_equal(state, twin.state())
    clicks = got[0]
    assert np.all(np.diff(clicks) >= dead)
    assert np.all(clicks < cut_frac * t_max)
    assert np.all(got[5] >= cut_frac * t_max)
    # Every primary before the cut was consumed, none after it.
    assert np.all(a[0][:got[3]] < cut_frac * t_max)
    assert np.all(a[0][got[3]:] >= cut_frac * t_max)


def test_dead_time_scan_long_cascade_grows_its_buffers() -> None:
    """p_ap close to 1: far more clicks than primaries, all kept in order."""
    state, twin = fresh(3)
    a = (np.array([0.0]), np.zeros(1, np.uint8), np.zeros(1, np.int64))
    empty = (np.empty(0), np.empty(0, np.uint8), np.empty(0, np.int64))
    got = kernels.dead_time_scan(*a, *empty, np.empty(0), -math.inf, 1e12, 10.0, 0.999, 5.0,
                                 state, 2, np.empty(4), np.empty(4, np.uint8),
                                 np.empty(4, np.int64))
    ref = kernels.dead_time_scan_reference(*a, *empty, np.empty(0), -math.inf, 1e12, 10.0, 0.999,
                                           5.0, twin, 2)
    assert got[0].size > 100
    np.testing.assert_array_equal(got[0], ref[0])
    assert np.all(got[1][1:] == 2)


@settings(deadline=None)
@given(seed=seeds, n=st.integers(0, 100), sigma=st.sampled_from([0.0, 3.0, 50.0]),
       drift=st.floats(-1e-4, 1e-4), res=st.sampled_from([1, 3, 10, 1000]),
       base_bins=st.integers(-10**9, 10**12))
def test_tagger_times_matches_twin(seed: int, n: int, sigma: float, drift: float, res: int,
                                   base_bins: int) -> None:
    rng = np.random.default_rng(seed)
    state, twin = fresh(seed)
    rel = rng.random(n) * 1e9 - 1e3
    base_frac = float(rng.random() * res)
    got = kernels.tagger_times(rel, state, sigma, 8.0, 1.0 + drift, base_frac, base_bins, res,
                               TABLES, np.empty(n + 3, np.int64))
    ref = kernels.tagger_times_reference(rel, twin, sigma, 8.0, 1.0 + drift, base_frac,
                                         base_bins, res, TABLES)
    np.testing.assert_array_equal(got, ref)
    assert np.all(got % res == 0)


def test_tagger_times_quantises_by_floor() -> None:
    state, _ = fresh(0)
    rel = np.array([0.0, 0.4, 9.99, 10.0, -0.5])
    got = kernels.tagger_times(rel, state, 0.0, 8.0, 1.0, 0.0, 7, 10, TABLES,
                               np.empty(5, np.int64))
    np.testing.assert_array_equal(got, [70, 70, 70, 80, 60])


@settings(deadline=None)
@given(seed=seeds, lengths=st.lists(st.integers(0, 30), min_size=6, max_size=6),
       unsorted=st.booleans(), int64_max=st.booleans())
def test_merge_streams_matches_twin(seed: int, lengths: list[int], unsorted: bool,
                                    int64_max: bool) -> None:
    """Six runs, as the link passes them (held, four detectors, sync); the largest int64 (the
    merge's sentinel for an exhausted run) is a valid time too."""
    rng = np.random.default_rng(seed)
    ts = [np.sort(rng.integers(0, 50, n)).astype(np.int64) for n in lengths]
    if unsorted and ts[0].size > 1:
        ts[0] = ts[0][::-1].copy()
    if int64_max:
        for t in ts[1:3]:
            t[-1:] = np.iinfo(np.int64).max
    dets = [rng.integers(-1, 4, n).astype(np.int8) for n in lengths]
    slots = [rng.integers(-1, 10**9, n).astype(np.int64) for n in lengths]
    origins = [rng.integers(0, 4, n).astype(np.uint8) for n in lengths]
    channel_map = np.array([9, 1, 2, 3, 4], dtype=np.int16)
    bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    args = (np.concatenate(ts), np.concatenate(dets), np.concatenate(slots),
            np.concatenate(origins), bounds, channel_map)
    n = sum(lengths)
    got = (np.empty(n, np.int64), np.empty(n, np.int16), np.empty(n, np.int8),
           np.empty(n, np.int64), np.empty(n, np.uint8))
    kernels.merge_streams(*args, *got)
    ref = kernels.merge_streams_reference(*args)
    for x, y in zip(got, ref, strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.all(np.diff(got[0]) >= 0)
    with pytest.raises(ValueError, match="as long as ts"):
        kernels.merge_streams(*args, np.empty(n + 1, np.int64), *got[1:])
    with pytest.raises(ValueError, match="bounds"):
        kernels.merge_streams(*args[:4], bounds + 1, channel_map, *got)
