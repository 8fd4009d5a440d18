"""The simulated bench's numba kernels agree with their plain twins, and keep their invariants."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.drivers.sim import kernels

seeds = st.integers(0, 2**32 - 1)


@settings(deadline=None)
@given(seed=seeds, n=st.integers(0, 200), span=st.integers(1, 5000),
       p_max=st.sampled_from([1e-4, 0.01, 0.3, 0.999]), frame_len=st.integers(1, 40),
       start=st.integers(-1, 10**12))
def test_thin_geometric_matches_twin(seed: int, n: int, span: int, p_max: float,
                                     frame_len: int, start: int) -> None:
    rng = np.random.default_rng(seed)
    u_gap, u_acc = rng.random(n), rng.random(n)
    types = rng.integers(0, 12, frame_len).astype(np.uint8)
    accept = rng.random(12)
    log1m = math.log1p(-p_max)
    got = kernels.thin_geometric(start, start + 1 + span, u_gap, u_acc, log1m,
                                 types, accept)
    ref = kernels.thin_geometric_reference(start, start + 1 + span, u_gap, u_acc, log1m, types,
                                           accept)
    np.testing.assert_array_equal(got[0], ref[0])
    assert int(got[1]) == ref[1]
    assert bool(got[2]) == ref[2]
    slots = got[0]
    assert np.all(np.diff(slots) > 0)
    assert np.all((slots > start) & (slots <= start + span))


def test_thin_geometric_rate() -> None:
    """Every kept slot has probability p_max * accept: counts per type follow it."""
    rng = np.random.default_rng(5)
    types = np.array([0, 1, 2, 1], dtype=np.uint8)
    accept = np.array([1.0, 0.5, 0.0])
    p_max, n_slots = 0.02, 4_000_000
    slots, _, done = kernels.thin_geometric(-1, n_slots, rng.random(200_000),
                                            rng.random(200_000), math.log1p(-p_max), types, accept)
    assert done
    per_pos = np.bincount(slots % 4, minlength=4)
    expected = n_slots / 4 * p_max * accept[types]
    assert per_pos[2] == 0
    for pos in (0, 1, 3):
        assert abs(per_pos[pos] - expected[pos]) < 5 * math.sqrt(expected[pos])


def _primaries(rng: np.random.Generator, n: int, t_max: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.sort(rng.random(n) * t_max)
    return t, rng.integers(0, 2, n).astype(np.uint8), rng.integers(-1, 100, n).astype(np.int64)


@settings(deadline=None)
@given(seed=seeds, n=st.integers(0, 60), n_pend=st.integers(0, 4), dead=st.floats(0, 300),
       p_ap=st.sampled_from([0.0, 0.3, 0.9]), n_u_extra=st.integers(-20, 30),
       cut_frac=st.floats(0, 1.2))
def test_dead_time_scan_matches_twin(seed: int, n: int, n_pend: int, dead: float, p_ap: float,
                                     n_u_extra: int, cut_frac: float) -> None:
    rng = np.random.default_rng(seed)
    t_max = 2000.0
    t, kind, slot = _primaries(rng, n, t_max)
    pending = np.sort(rng.random(n_pend) * t_max)
    ap_u = rng.random(max(0, n + n_pend + n_u_extra))
    last = -math.inf if seed % 2 else -50.0
    args = (t, kind, slot, pending, last, cut_frac * t_max, dead, p_ap, 70.0, ap_u)
    got = kernels.dead_time_scan(*args, 2)
    ref = kernels.dead_time_scan_reference(*args, 2)
    for a, b in zip(got[:3], ref[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(got[3]) == ref[3]
    np.testing.assert_array_equal(got[4], ref[4])
    assert float(got[5]) == ref[5]
    assert bool(got[6]) == ref[6]
    clicks = got[0]
    assert np.all(np.diff(clicks) >= dead)
    assert np.all(clicks < cut_frac * t_max)
    if got[6]:
        assert np.all(got[4] >= cut_frac * t_max)


def test_dead_time_scan_retry_gives_same_prefix() -> None:
    """Running out of uniforms, then retrying with a longer array (same prefix), is seamless."""
    rng = np.random.default_rng(3)
    t, kind, slot = _primaries(rng, 500, 1e6)
    u = rng.random(2000)
    short = kernels.dead_time_scan(t, kind, slot, np.empty(0), -math.inf, 1e6, 100.0, 0.5,
                                   500.0, u[:300], 2)
    full = kernels.dead_time_scan(t, kind, slot, np.empty(0), -math.inf, 1e6, 100.0, 0.5,
                                  500.0, u, 2)
    assert not short[6]
    assert full[6]
    np.testing.assert_array_equal(short[0], full[0][:300])


@settings(deadline=None)
@given(seed=seeds, n=st.integers(0, 100), sigma=st.floats(0, 50),
       drift=st.floats(-1e-4, 1e-4), res=st.sampled_from([1, 3, 10, 1000]),
       base_bins=st.integers(-10**9, 10**12))
def test_tagger_times_matches_twin(seed: int, n: int, sigma: float, drift: float, res: int,
                                   base_bins: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random(n) * 1e9 - 1e3
    z = rng.standard_normal(n)
    base_frac = float(rng.random() * res)
    got = kernels.tagger_times(rel, z, sigma, 1.0 + drift, base_frac, base_bins, res)
    ref = kernels.tagger_times_reference(rel, z, sigma, 1.0 + drift, base_frac, base_bins, res)
    np.testing.assert_array_equal(got, ref)
    assert np.all(got % res == 0)


def test_tagger_times_quantises_by_floor() -> None:
    rel = np.array([0.0, 0.4, 9.99, 10.0, -0.5])
    got = kernels.tagger_times(rel, np.zeros(5), 0.0, 1.0, 0.0, 7, 10)
    np.testing.assert_array_equal(got, [70, 70, 70, 80, 60])
