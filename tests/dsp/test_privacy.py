"""Tests of Toeplitz privacy amplification against independent exact references."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from qkdnode.dsp import fourstep, privacy, privacy_pair
from qkdnode.dsp.errors import DistillationError
from qkdnode.dsp.privacy import FFTWorkspace, ToeplitzHasher, plan_tiles, toeplitz_hash


def dense_reference(x: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.uint8]:
    """The definition itself: build T and multiply (small n only)."""
    n = x.size
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    t = seed[i - j + n - 1].astype(np.int64)
    return ((t @ x.astype(np.int64)) & 1).astype(np.uint8)


def bitsliced_reference(x: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.uint8]:
    """GF(2) row by row on packed bytes: y[i] = parity(popcount(row_i & x)); no FFT, no floats.

    Row i of T is r[m-1-i : m-1-i+n] with r the reversed seed.
    """
    n = x.size
    nbytes = -(-n // 8)
    xp = np.packbits(x)
    r = np.concatenate((seed[::-1], np.zeros(8 * nbytes + 8, dtype=np.uint8)))
    y = np.empty(m, dtype=np.uint8)
    starts = m - 1 - np.arange(m)
    for shift in range(8):
        rows = np.nonzero(starts % 8 == shift)[0]
        if rows.size == 0:
            continue
        rp = np.packbits(r[shift:])
        windows = np.lib.stride_tricks.sliding_window_view(rp, nbytes)[starts[rows] // 8]
        counts = np.bitwise_count(windows & xp).sum(axis=1, dtype=np.int64)
        y[rows] = (counts & 1).astype(np.uint8)
    return y


def random_bits(rng: np.random.Generator, size: int) -> NDArray[np.uint8]:
    return rng.integers(0, 2, size, dtype=np.uint8)


@st.composite
def problems(draw: st.DrawFn, max_n: int = 300) -> tuple[NDArray[np.uint8], NDArray[np.uint8], int]:
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, n))
    seed_int = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    rng = np.random.default_rng(seed_int)
    x = (rng.random(n) < density).astype(np.uint8)
    seed = random_bits(rng, n + m - 1)
    return x, seed, m


# --- agreement with the definition -----------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(problems())
def test_matches_dense_matrix_product(problem: tuple[NDArray[np.uint8], ...]) -> None:
    x, seed, m = problem
    y = toeplitz_hash(x, seed, int(m))
    assert y.dtype == np.uint8
    assert y.shape == (m,)
    np.testing.assert_array_equal(y, dense_reference(x, seed, int(m)))


@settings(deadline=None, max_examples=40)
@given(problems(max_n=200), st.integers(16, 120))
def test_tiling_gives_the_same_result(
    problem: tuple[NDArray[np.uint8], ...], max_fft_len: int
) -> None:
    x, seed, m = problem
    np.testing.assert_array_equal(
        toeplitz_hash(x, seed, int(m), max_fft_len=max_fft_len), dense_reference(x, seed, int(m))
    )


def test_bitsliced_reference_matches_dense() -> None:
    rng = np.random.default_rng(7)
    for n, m in [(1, 1), (9, 4), (64, 64), (101, 37)]:
        x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
        np.testing.assert_array_equal(bitsliced_reference(x, seed, m), dense_reference(x, seed, m))


@pytest.mark.parametrize(("n", "m"), [(20_000, 10_000), (40_001, 7_777), (65_536, 65_536)])
def test_matches_bitsliced_reference_medium(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    expected = bitsliced_reference(x, seed, m)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m), expected)
    # Tiled: 3 x 2 tiles and more.
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m, max_fft_len=n // 2), expected)


@pytest.mark.parametrize(("n", "m"), [(300_000, 600), (262_100, 200)])
def test_four_step_lengths_match_bitsliced_reference(n: int, m: int) -> None:
    # n + m - 1 >= fourstep.MIN_LENGTH: the tile runs on the four-step FFT, packed and plain.
    assert n + m - 1 >= fourstep.MIN_LENGTH
    rng = np.random.default_rng(n)
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    expected = bitsliced_reference(x, seed, m)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m), expected)
    np.testing.assert_array_equal(ToeplitzHasher(seed, n, m)(x), expected)
    ws = FFTWorkspace()
    for _ in range(2):
        np.testing.assert_array_equal(toeplitz_hash(x, seed, m, workspace=ws, workers=2), expected)


@pytest.mark.parametrize("at_least", [fourstep.MIN_LENGTH, 3 * 2**18 + 5])
def test_four_step_convolution_equals_one_dimensional(at_least: int) -> None:
    length = fourstep.fft_length(at_least)
    assert length >= at_least
    plan = fourstep.FourStepFFT(length)
    assert plan.n1 * plan.n2 == length
    rng = np.random.default_rng(at_least)
    a = rng.integers(0, 2, length).astype(np.float64)
    b = rng.integers(0, 2, length).astype(np.float64)
    sa, sb = np.empty(plan.spectrum_shape, complex), np.empty(plan.spectrum_shape, complex)
    plan.forward(a, sa)
    plan.forward(b, sb)
    sa *= sb
    out = np.empty(length)
    plan.inverse(sa, out)
    ref = np.fft.irfft(np.fft.rfft(a) * np.fft.rfft(b), length)
    assert np.max(np.abs(out - np.rint(out))) < 1e-6
    np.testing.assert_array_equal(np.rint(out), np.rint(ref))


def test_four_step_with_a_pool_is_bit_identical() -> None:
    length = fourstep.fft_length(300_001)
    plan = fourstep.FourStepFFT(length)
    row = np.random.default_rng(2).integers(0, 2, length).astype(np.float64)
    one, two = (np.empty(plan.spectrum_shape, complex) for _ in range(2))
    with ThreadPoolExecutor(max_workers=1) as pool:
        plan.forward(row, one)
        plan.forward(row, two, pool)
        np.testing.assert_array_equal(one, two)
        out_one, out_two = np.empty(length), np.empty(length)
        plan.inverse(one, out_one)
        plan.inverse(two, out_two, pool)
    np.testing.assert_array_equal(out_one, out_two)
    np.testing.assert_allclose(out_one, row, atol=1e-9)


def test_four_step_rejects_other_lengths() -> None:
    with pytest.raises(ValueError, match="not a four-step length"):
        fourstep.FourStepFFT(fourstep.MIN_LENGTH + 1)


@pytest.mark.parametrize("n", [1_000_003, 3_000_000])
def test_worst_case_all_ones_has_known_answer(n: int) -> None:
    # Every partial sum is as large as it can be: c[i + n - 1] = n for all rows.
    m = n // 2
    y = toeplitz_hash(np.ones(n, np.uint8), np.ones(n + m - 1, np.uint8), m)
    assert np.all(y == n % 2)


def test_all_ones_input_against_closed_form() -> None:
    # seed[k] = k mod 2: row i sums seed[i .. i + n - 1], i.e. counts odd k in that range.
    n, m = 200_001, 100_000
    seed = (np.arange(n + m - 1) % 2).astype(np.uint8)
    i = np.arange(m)
    odd_count = (i + n) // 2 - i // 2  # odd numbers in [i, i + n - 1]
    y = toeplitz_hash(np.ones(n, np.uint8), seed, m)
    np.testing.assert_array_equal(y, (odd_count % 2).astype(np.uint8))


@settings(deadline=None, max_examples=40)
@given(problems(max_n=400), st.integers(0, 2**32 - 1))
def test_linear_in_the_input(problem: tuple[NDArray[np.uint8], ...], salt: int) -> None:
    x, seed, m = problem
    other = random_bits(np.random.default_rng(salt), x.size)
    lhs = toeplitz_hash(x ^ other, seed, int(m))
    rhs = toeplitz_hash(x, seed, int(m)) ^ toeplitz_hash(other, seed, int(m))
    np.testing.assert_array_equal(lhs, rhs)


@settings(deadline=None, max_examples=25)
@given(problems(max_n=400), st.integers(0, 2**32 - 1))
def test_linear_in_the_seed(problem: tuple[NDArray[np.uint8], ...], salt: int) -> None:
    x, seed, m = problem
    other = random_bits(np.random.default_rng(salt), seed.size)
    lhs = toeplitz_hash(x, seed ^ other, int(m))
    rhs = toeplitz_hash(x, seed, int(m)) ^ toeplitz_hash(x, other, int(m))
    np.testing.assert_array_equal(lhs, rhs)


def test_packed_and_plain_paths_are_both_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"split": 0, "parity": 0}
    real_split, real_parity = privacy.round_split_kernel, privacy.round_parity_kernel

    def split(*args: object) -> float:
        calls["split"] += 1
        return float(real_split(*args))

    def parity(*args: object) -> float:
        calls["parity"] += 1
        return float(real_parity(*args))

    monkeypatch.setattr(privacy, "round_split_kernel", split)
    monkeypatch.setattr(privacy, "round_parity_kernel", parity)
    rng = np.random.default_rng(3)
    n, m = 50_000, 20_000
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m), bitsliced_reference(x, seed, m))
    assert calls == {"split": 1, "parity": 0}
    # m = 1 has no second half to pack.
    np.testing.assert_array_equal(toeplitz_hash(x, seed[:n], 1), dense_reference(x, seed[:n], 1))
    assert calls == {"split": 1, "parity": 1}


def test_error_bound_rejects_packing_for_huge_operands() -> None:
    # The bound that guards the packed path: tiny for plain bits, above budget for 2**26 packing.
    assert privacy._error_bound(2**27, 2**27, 2**27) < 1e-5
    assert privacy._error_bound(2**24, 1e7, 1e7 * 4.0**24) > privacy.ROUNDING_BUDGET


@pytest.mark.parametrize("density", [0.5, 1.0])
def test_error_bound_covers_the_measured_fft_error(density: float) -> None:
    # Packed operand against the exact integer convolution: the bound must exceed the real error.
    rng = np.random.default_rng(9)
    n, m = 6000, 4000
    x = (rng.random(n) < density).astype(np.uint8)
    seed = (rng.random(n + m - 1) < density).astype(np.uint8)
    m_top = (m + 1) // 2
    shift = int(x.sum()).bit_length()
    packed = seed[: n + m_top - 1].astype(np.int64)
    packed[: n + m - 1 - m_top] += seed[m_top:].astype(np.int64) << shift
    exact = np.convolve(packed, x.astype(np.int64))
    length = n + m_top - 1
    fx = np.fft.rfft(x.astype(np.float64), length)
    fs = np.fft.rfft(packed.astype(np.float64), length)
    approx = np.fft.irfft(fx * fs, length)
    window = slice(n - 1, n - 1 + m_top)
    measured = float(np.max(np.abs(approx[window] - exact[window])))
    bound = privacy._error_bound(length, float(x.sum()), float(np.sum(packed.astype(float) ** 2)))
    assert measured <= bound
    assert bound < privacy.ROUNDING_BUDGET


def test_rounding_tripwire(monkeypatch: pytest.MonkeyPatch) -> None:
    real = privacy._inverse

    def off_by_0_4(*args: object) -> NDArray[np.float64]:
        return real(*args) + 0.4  # type: ignore[arg-type]

    monkeypatch.setattr(privacy, "_inverse", off_by_0_4)
    rng = np.random.default_rng(1)
    with pytest.raises(DistillationError, match="residual"):
        toeplitz_hash(random_bits(rng, 100), random_bits(rng, 149), 50)


def test_workspace_reuse_across_calls_and_sizes() -> None:
    rng = np.random.default_rng(12)
    ws = FFTWorkspace()
    for n, m in [(5000, 2500), (5000, 2500), (777, 300), (5000, 2500), (5000, 1)]:
        x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
        np.testing.assert_array_equal(
            toeplitz_hash(x, seed, m, workspace=ws), bitsliced_reference(x, seed, m)
        )
        np.testing.assert_array_equal(
            toeplitz_hash(x, seed, m, workspace=ws, max_fft_len=1000),
            bitsliced_reference(x, seed, m),
        )
    assert ws.buffers
    ws.clear()
    assert not ws.buffers


@settings(deadline=None, max_examples=25)
@given(problems(max_n=300), st.integers(16, 200))
def test_two_workers_give_the_same_result(
    problem: tuple[NDArray[np.uint8], ...], max_fft_len: int
) -> None:
    x, seed, m = problem
    np.testing.assert_array_equal(
        toeplitz_hash(x, seed, int(m), workers=2, max_fft_len=max_fft_len),
        dense_reference(x, seed, int(m)),
    )


def test_two_workers_medium_and_bad_workers() -> None:
    rng = np.random.default_rng(13)
    n, m = 40_000, 20_000
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    ws = FFTWorkspace()
    for _ in range(2):
        np.testing.assert_array_equal(
            toeplitz_hash(x, seed, m, workers=2, workspace=ws), bitsliced_reference(x, seed, m)
        )
    with pytest.raises(ValueError, match="workers must be 1 or 2, got 3"):
        toeplitz_hash(x, seed, m, workers=3)


@pytest.mark.parametrize("packed", [True, False])
def test_two_workers_at_four_step_lengths_packed_and_plain(
    packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both forward transforms at once, then the product, the inverse passes and the rounding
    # split in halves: the plain path (parity rounding) is forced by a budget packing cannot
    # meet, which the plain operands still do.
    if not packed:
        monkeypatch.setattr(privacy, "ROUNDING_BUDGET", 1e-5)
    rng = np.random.default_rng(17)
    n, m = 131_101, 2_001
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    _, m_top, _ = privacy._plan_operand(n, m, seed, int(np.count_nonzero(x)))
    assert (m_top < m) == packed
    assert privacy.fft_length(n + m_top - 1) >= fourstep.MIN_LENGTH
    expected = bitsliced_reference(x, seed, m)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m, workers=2), expected)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m), expected)


def test_zero_input_gives_zero_output() -> None:
    rng = np.random.default_rng(2)
    y = toeplitz_hash(np.zeros(1000, np.uint8), random_bits(rng, 1499), 500)
    assert y.shape == (500,)
    assert not y.any()


def test_input_arrays_are_not_modified() -> None:
    rng = np.random.default_rng(5)
    x, seed = random_bits(rng, 500), random_bits(rng, 749)
    x0, s0 = x.copy(), seed.copy()
    toeplitz_hash(x, seed, 250)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(seed, s0)


def test_non_contiguous_input() -> None:
    rng = np.random.default_rng(6)
    x = random_bits(rng, 600)[::2]
    seed = random_bits(rng, 449)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, 150), dense_reference(x, seed, 150))


# --- reusable seed ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=30)
@given(problems(max_n=200), st.integers(16, 400), st.integers(0, 2**32 - 1))
def test_hasher_reuses_the_seed(
    problem: tuple[NDArray[np.uint8], ...], max_fft_len: int, salt: int
) -> None:
    x, seed, m = problem
    hasher = ToeplitzHasher(seed, x.size, int(m), max_fft_len=max_fft_len)
    other = random_bits(np.random.default_rng(salt), x.size)
    for inp in (x, other, x):
        np.testing.assert_array_equal(hasher(inp), dense_reference(inp, seed, int(m)))


def test_hasher_medium_and_errors() -> None:
    rng = np.random.default_rng(11)
    n, m = 30_000, 12_345
    seed = random_bits(rng, n + m - 1)
    hasher = ToeplitzHasher(seed, n, m)
    for _ in range(2):
        x = random_bits(rng, n)
        np.testing.assert_array_equal(hasher(x), bitsliced_reference(x, seed, m))
    np.testing.assert_array_equal(
        hasher(np.ones(n, np.uint8)), toeplitz_hash(np.ones(n, np.uint8), seed, m)
    )
    with pytest.raises(ValueError, match="x must have n = 30000 bits, got 29999"):
        hasher(np.zeros(n - 1, np.uint8))
    with pytest.raises(ValueError, match=r"seed must have n \+ m - 1 = 42344 bits, got 42343"):
        ToeplitzHasher(seed[:-1], n, m)
    with pytest.raises(ValueError, match="m must satisfy"):
        ToeplitzHasher(seed, n, n + 1)


# --- tiling plan -----------------------------------------------------------------------------


@given(st.integers(1, 5000), st.data(), st.integers(16, 700))
def test_tiles_cover_the_matrix_once(n: int, data: st.DataObject, max_len: int) -> None:
    m = data.draw(st.integers(1, n))
    cover = np.zeros((m, n), dtype=np.int64) if m * n <= 200_000 else None
    total = 0
    for t in plan_tiles(n, m, max_len):
        assert t.n + t.m - 1 <= max_len or (t.n, t.m) == (n, m)
        assert t.seed_start == t.y_start - t.x_start - t.n + n
        assert t.seed_start >= 0
        assert t.seed_start + t.n + t.m - 1 <= n + m - 1
        total += t.n * t.m
        if cover is not None:
            cover[t.y_start : t.y_start + t.m, t.x_start : t.x_start + t.n] += 1
    assert total == n * m
    if cover is not None:
        assert np.all(cover == 1)


# --- both ends in one product (privacy_pair) -----------------------------------------------


@settings(deadline=None, max_examples=40)
@given(problems(max_n=200), st.integers(0, 2**32 - 1), st.sampled_from([None, 16, 40]))
def test_pair_equals_two_single_hashes(
    problem: tuple[NDArray[np.uint8], ...], salt: int, max_fft_len: int | None
) -> None:
    x1, seed, m = problem
    rng = np.random.default_rng(salt)
    x2 = x1 ^ (rng.random(x1.size) < rng.choice([0.0, 0.03, 0.5])).astype(np.uint8)
    opts = {} if max_fft_len is None else {"max_fft_len": max_fft_len}
    y1, y2 = privacy_pair.toeplitz_hash_pair(x1, x2, seed, int(m), **opts)
    np.testing.assert_array_equal(y1, dense_reference(x1, seed, int(m)))
    np.testing.assert_array_equal(y2, dense_reference(x2, seed, int(m)))


def test_pair_packs_at_four_step_sizes_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n, m = 300_000, 600
    x1, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    x2 = x1 ^ (rng.random(n) < 0.02).astype(np.uint8)
    expected = (bitsliced_reference(x1, seed, m), bitsliced_reference(x2, seed, m))
    seeds: list[int] = []
    applied: list[str] = []
    real_prepare, real_apply = privacy_pair._prepare_seed, privacy_pair._apply

    def counting_prepare(*args: Any, **kwargs: Any) -> Any:
        seeds.append(1)
        return real_prepare(*args, **kwargs)

    def counting_apply(*args: Any, **kwargs: Any) -> Any:
        applied.append(threading.current_thread().name)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(privacy_pair, "_prepare_seed", counting_prepare)
    monkeypatch.setattr(privacy_pair, "_apply", counting_apply)
    for got, want in zip(privacy_pair.toeplitz_hash_pair(x1, x2, seed, m), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert seeds == []  # one packed product, no fallback
    assert applied == []
    # The bound rejects every packed tile: one seed transform, two products on two threads.
    monkeypatch.setattr(privacy_pair, "ROUNDING_BUDGET", 0.0)
    for got, want in zip(privacy_pair.toeplitz_hash_pair(x1, x2, seed, m), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(seeds) == 1
    assert len(applied) == 2
    assert len(set(applied)) == 2
    # Above PAIR_PARALLEL_MAX_FFT_LEN each input is hashed alone (toeplitz_hash's memory).
    seeds.clear()
    applied.clear()
    hashes: list[int] = []
    real_hash = privacy_pair.toeplitz_hash

    def counting_hash(*args: Any, **kwargs: Any) -> Any:
        hashes.append(1)
        return real_hash(*args, **kwargs)

    monkeypatch.setattr(privacy_pair, "toeplitz_hash", counting_hash)
    monkeypatch.setattr(privacy_pair, "PAIR_PARALLEL_MAX_FFT_LEN", 1024)
    for got, want in zip(privacy_pair.toeplitz_hash_pair(x1, x2, seed, m), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert seeds == []
    assert applied == []
    assert len(hashes) == 2


def test_pair_of_equal_inputs_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both ends' bits after a successful reconciliation: one toeplitz_hash on two threads, the
    # result returned twice as separate arrays; one differing bit takes the pair's own path.
    rng = np.random.default_rng(8)
    n, m = 300_000, 90_000
    x, seed = random_bits(rng, n), random_bits(rng, n + m - 1)
    calls: list[int] = []
    real_hash = privacy_pair.toeplitz_hash

    def counting_hash(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("workers", 1))
        return real_hash(*args, **kwargs)

    monkeypatch.setattr(privacy_pair, "toeplitz_hash", counting_hash)
    expected = bitsliced_reference(x, seed, m)
    y1, y2 = privacy_pair.toeplitz_hash_pair(x, x.copy(), seed, m)
    assert calls == [2]
    assert y1 is not y2
    np.testing.assert_array_equal(y1, expected)
    np.testing.assert_array_equal(y2, expected)
    other = x.copy()
    other[n // 2] ^= 1
    z1, z2 = privacy_pair.toeplitz_hash_pair(x, other, seed, m)
    assert calls == [2]
    np.testing.assert_array_equal(z1, expected)
    np.testing.assert_array_equal(z2, bitsliced_reference(other, seed, m))


def test_pair_argument_errors() -> None:
    x = np.zeros(10, np.uint8)
    with pytest.raises(ValueError, match="x2 must have the length of x1"):
        privacy_pair.toeplitz_hash_pair(x, x[:9], np.zeros(14, np.uint8), 5)
    with pytest.raises(ValueError, match="seed must have"):
        privacy_pair.toeplitz_hash_pair(x, x, np.zeros(13, np.uint8), 5)
    with pytest.raises(TypeError, match="x2 must have dtype uint8"):
        privacy_pair.toeplitz_hash_pair(x, x.astype(np.int64), np.zeros(14, np.uint8), 5)


# --- kernels agree with their twins ----------------------------------------------------------

finite = st.floats(min_value=-(2.0**50), max_value=2.0**50, allow_nan=False)


@settings(deadline=None, max_examples=60)
@given(st.lists(finite, min_size=1, max_size=64), st.data())
def test_round_parity_kernel_matches_twin(values: list[float], data: st.DataObject) -> None:
    conv = np.array(values, dtype=np.float64)
    start = data.draw(st.integers(0, conv.size - 1))
    count = data.draw(st.integers(0, conv.size - start))
    a, b = np.empty(count, np.uint8), np.empty(count, np.uint8)
    ra = privacy.round_parity_kernel(conv, start, a)
    rb = privacy.round_parity_reference(conv, start, b)
    np.testing.assert_array_equal(a, b)
    assert ra == rb


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.floats(min_value=0.0, max_value=2.0**50), min_size=1, max_size=64),
    st.integers(1, 30),
    st.data(),
)
def test_round_split_kernel_matches_twin(
    values: list[float], shift: int, data: st.DataObject
) -> None:
    conv = np.array(values, dtype=np.float64)
    start = data.draw(st.integers(0, conv.size - 1))
    n_lo = data.draw(st.integers(0, conv.size - start))
    n_hi = data.draw(st.integers(0, n_lo))
    lo_a, hi_a = np.empty(n_lo, np.uint8), np.empty(n_hi, np.uint8)
    lo_b, hi_b = np.empty(n_lo, np.uint8), np.empty(n_hi, np.uint8)
    ra = privacy.round_split_kernel(conv, start, shift, lo_a, hi_a)
    rb = privacy.round_split_reference(conv, start, shift, lo_b, hi_b)
    np.testing.assert_array_equal(lo_a, lo_b)
    np.testing.assert_array_equal(hi_a, hi_b)
    assert ra == rb


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 60), st.data())
def test_pack_seed_kernel_matches_twin(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(2, n + 5))
    m_top = (m + 1) // 2
    seed = np.array(
        data.draw(st.lists(st.integers(0, 1), min_size=n + m - 1, max_size=n + m - 1)), np.uint8
    )
    length = n + m_top - 1 + data.draw(st.integers(0, 7))
    shift = data.draw(st.integers(1, 30))
    a = np.full(length, np.nan)
    b = np.full(length, np.nan)
    privacy.pack_seed_kernel(seed, n + m_top - 1, m_top, float(2**shift), a)
    privacy.pack_seed_reference(seed, n + m_top - 1, m_top, float(2**shift), b)
    np.testing.assert_array_equal(a, b)
    expected = np.zeros(length)
    expected[: n + m_top - 1] += seed[: n + m_top - 1]
    expected[: n + m - 1 - m_top] += 2.0**shift * seed[m_top:]
    np.testing.assert_array_equal(a, expected)


@settings(deadline=None, max_examples=40)
@given(
    st.integers(2, 64), st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans(),
    st.integers(0, 9), st.sampled_from([1, 3, 8, fourstep.TWIDDLE_BLOCK]),
)
def test_twiddle_kernel_matches_twin(
    rows: int, cols: int, salt: int, conjugate: bool, first_row: int, block: int
) -> None:
    length = (first_row + rows) * cols + salt % 7  # any length; r is reduced mod length
    lo_bits = ((length - 1).bit_length() + 1) // 2
    lo = np.exp(-2j * np.pi / length * np.arange(1 << lo_bits))
    hi = np.exp(-2j * np.pi / length * (np.arange(-(-length // (1 << lo_bits))) << lo_bits))
    rng = np.random.default_rng(salt)
    spec = rng.normal(size=(rows, cols)) + 1j * rng.normal(size=(rows, cols))
    a, b = spec.copy(), spec.copy()
    fourstep.twiddle_kernel(a, length, lo_bits, lo, hi, conjugate, first_row, block)
    fourstep.twiddle_reference(b, length, lo_bits, lo, hi, conjugate, first_row, block)
    np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-300)
    # And the twiddles are the exact roots of unity up to a few roundings.
    k1, j = first_row + np.arange(rows)[:, None], np.arange(cols)[None, :]
    exact = np.exp((2j if conjugate else -2j) * np.pi * ((k1 * j) % length) / length)
    np.testing.assert_allclose(a, spec * exact, rtol=1e-14)


def test_round_kernels_report_residuals() -> None:
    conv = np.array([3.0, 4.2, 5.49, -1.1, 2.0**20 + 2.0**5 + 1], dtype=np.float64)
    out = np.empty(5, np.uint8)
    assert privacy.round_parity_kernel(conv, 0, out) == pytest.approx(0.49)
    np.testing.assert_array_equal(out, [1, 0, 1, 1, 1])
    lo, hi = np.empty(1, np.uint8), np.empty(1, np.uint8)
    assert privacy.round_split_kernel(conv, 4, 5, lo, hi) == 0.0
    assert (lo[0], hi[0]) == (1, 1)


# --- argument errors ---------------------------------------------------------------------------


def test_wrong_seed_length_names_both_lengths() -> None:
    with pytest.raises(ValueError, match=r"seed must have n \+ m - 1 = 14 bits, got 13"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(13, np.uint8), 5)


@pytest.mark.parametrize("m", [0, -1, 11])
def test_m_out_of_range(m: int) -> None:
    with pytest.raises(ValueError, match="m must satisfy"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(max(1, 10 + m - 1), np.uint8), m)


def test_m_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="m must be an int"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(14, np.uint8), 5.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="m must be an int"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(10, np.uint8), True)


def test_non_binary_values() -> None:
    with pytest.raises(ValueError, match="x must hold only 0 and 1"):
        toeplitz_hash(np.full(10, 2, np.uint8), np.zeros(14, np.uint8), 5)
    with pytest.raises(ValueError, match="seed must hold only 0 and 1"):
        toeplitz_hash(np.zeros(10, np.uint8), np.full(14, 255, np.uint8), 5)


def test_wrong_dtype_and_type() -> None:
    with pytest.raises(TypeError, match="x must have dtype uint8"):
        toeplitz_hash(np.zeros(10, np.int64), np.zeros(14, np.uint8), 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must have dtype uint8"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(14, bool), 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x must be a numpy array"):
        toeplitz_hash([0, 1], np.zeros(2, np.uint8), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one-dimensional"):
        toeplitz_hash(np.zeros((2, 5), np.uint8), np.zeros(14, np.uint8), 5)
    with pytest.raises(ValueError, match="at least one bit"):
        toeplitz_hash(np.zeros(0, np.uint8), np.zeros(0, np.uint8), 1)


def test_bad_max_fft_len() -> None:
    with pytest.raises(ValueError, match="max_fft_len"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(14, np.uint8), 5, max_fft_len=3)


@pytest.mark.slow
def test_large_tiled_worst_case() -> None:
    # 2e7 bits cut into many tiles, all partial sums maximal.
    n, m = 20_000_001, 10_000_000
    y = toeplitz_hash(np.ones(n, np.uint8), np.ones(n + m - 1, np.uint8), m, max_fft_len=2**23)
    assert np.all(y == 1)
