"""Tests of the layered syndrome decoder (CSR and quasi-cyclic kernels) and its plain twin."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.ldpc.codes import LdpcCode, code_from_matrix, code_from_qc, syndrome
from qkdnode.dsp.ldpc.decoder import (
    _ALGORITHM_CODES,
    LLR_LIMIT,
    Algorithm,
    decode_syndrome,
    decode_syndrome_reference,
    decode_syndromes,
)
from qkdnode.dsp.ldpc.kernels_qc import qc_kernel
from qkdnode.dsp.ldpc.kernels_qc_narrow import qc_narrow_kernel
from qkdnode.dsp.ldpc.phi import (
    PHI_TINY_X,
    expansion_many,
    expansion_reference,
    phi_constants,
    phi_many,
    phi_reference,
)
from qkdnode.dsp.ldpc.phi_table import PHI_TABLE


def random_code(n: int, m: int, var_degree: int, seed: int) -> LdpcCode:
    """A random LDPC code: each variable joins ``var_degree`` distinct random checks."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(m, size=min(var_degree, m), replace=False) for _ in range(n)])
    cols = np.repeat(np.arange(n), min(var_degree, m))
    H = sp.csr_matrix((np.ones(rows.size, dtype=np.uint8), (rows, cols)), shape=(m, n))
    return code_from_matrix(H)


def random_qc_code(z: int, base_m: int, base_n: int, var_degree: int, seed: int) -> LdpcCode:
    """A random quasi-cyclic code: each base variable joins ``var_degree`` distinct base checks
    with random shifts (decoded by the QC kernel)."""
    rng = np.random.default_rng(seed)
    degree = min(var_degree, base_m)
    rows = np.concatenate([rng.choice(base_m, size=degree, replace=False) for _ in range(base_n)])
    cols = np.repeat(np.arange(base_n), degree)
    shifts = rng.integers(0, z, rows.size)
    code = code_from_qc(z, base_m, base_n, rows, cols, shifts)
    assert code.qc is not None
    return code


def either_code(kind: str, n_base: int, m_base: int, seed: int, z: int = 5) -> LdpcCode:
    """A random code of the given kind: ``csr`` (n_base x z variables) or ``qc``."""
    if kind == "qc":
        return random_qc_code(z, m_base, n_base, 3, seed)
    return random_code(n_base * z, m_base * z, 3, seed)


def channel(
    rng: np.random.Generator, n: int, qber: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alice's random word, Bob's noisy copy and Bob's LLRs for a BSC(qber)."""
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice ^ (rng.random(n) < qber).astype(np.uint8)
    llr = ((1.0 - 2.0 * bob) * np.log((1 - qber) / qber)).astype(np.float32)
    return alice, bob, llr


llr_values = st.sampled_from(
    [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 3.9, -3.9, 0.1, 0.01, 1e-13, 17.0, LLR_LIMIT, -LLR_LIMIT]
)


def test_phi_approximates_log_tanh() -> None:
    x = np.array([1e-11, 1e-5, 0.01, 0.0157, 0.1, 0.2499, 0.25, 0.5, 1.0, 2.5, 7.0, 15.9, 30.0],
                 np.float32)
    exact = -np.log(np.tanh(x.astype(np.float64) / 2.0))
    approx = phi_reference(x).astype(np.float64)
    np.testing.assert_allclose(approx, exact, rtol=2e-6, atol=1e-12)
    cap = np.log(2.0 / PHI_TINY_X)
    np.testing.assert_allclose(phi_reference(np.zeros(1, np.float32)), [cap], rtol=1e-6)
    assert 0.0 <= float(phi_reference(np.array([1e6], np.float32))[0]) < 1e-30


# Check-node magnitudes: any float32 in [0, 100] plus the clamp edges and a huge value.
PHI_INPUTS = st.lists(
    st.one_of(
        st.floats(0.0, 100.0, width=32),
        st.sampled_from([0.0, 1e-13, 1e-12, 0.25, 80.0, 1e6, np.float32(0.25).item()]),
    ),
    min_size=1,
    max_size=60,
)


@settings(deadline=None, max_examples=30)
@given(PHI_INPUTS)
def test_phi_kernel_agrees_with_twin(values: list[float]) -> None:
    x = np.array(values, np.float32)
    compiled = phi_many(x, phi_constants())
    np.testing.assert_array_equal(compiled.view(np.int32), phi_reference(x).view(np.int32))


def test_expansion_is_taylor_of_phi() -> None:
    x = np.array([1e-12, 1e-6, 0.01, 0.2, 0.25, 0.7, 1.5, 4.0, 12.0, 40.0], np.float32)
    xd = x.astype(np.float64)
    a1, a2 = expansion_reference(x)
    np.testing.assert_allclose(a1, 1.0 / np.sinh(xd), rtol=1e-5)
    np.testing.assert_allclose(a2, np.cosh(xd) / (2.0 * np.sinh(xd) ** 2), rtol=1e-5)
    # phi(x - p) against its expansion: the error is third order in p.
    for p in (1e-3, 1e-2):
        shifted = phi_reference((x[3:] - np.float32(p)).astype(np.float32)).astype(np.float64)
        approx = phi_reference(x[3:]) + p * (a1[3:] + p * a2[3:])
        np.testing.assert_allclose(approx, shifted, rtol=50 * p**3 + 2e-5)


@settings(deadline=None, max_examples=30)
@given(PHI_INPUTS)
def test_expansion_kernel_agrees_with_twin(values: list[float]) -> None:
    x = np.array(values, np.float32)
    compiled = expansion_many(x, phi_constants())
    for got, want in zip(compiled, expansion_reference(x), strict=True):
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@settings(deadline=None, max_examples=40)
@given(
    n=st.integers(4, 40),
    rate_tenths=st.integers(2, 8),
    var_degree=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
    scale=st.sampled_from([1.0, 0.78, 0.5, 0.8125]),
    offset=st.sampled_from([0.0, 0.15, 0.5]),
    max_iterations=st.integers(0, 8),
    algorithm=st.sampled_from(["sum-product", "sum-product-taylor", "min-sum"]),
    stall=st.sampled_from([None, 1, 2, 3]),
    drop=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
)
def test_csr_kernel_agrees_with_twin(
    n: int,
    rate_tenths: int,
    var_degree: int,
    seed: int,
    data: st.DataObject,
    scale: float,
    offset: float,
    max_iterations: int,
    algorithm: Algorithm,
    stall: int | None,
    drop: float,
) -> None:
    m = max(1, n * (10 - rate_tenths) // 10)
    code = random_code(n, m, var_degree, seed)
    synd = np.array(data.draw(st.lists(st.integers(0, 1), min_size=m, max_size=m)), np.uint8)
    llr = np.array(data.draw(st.lists(llr_values, min_size=n, max_size=n)), np.float32)
    result = decode_syndrome(
        code, synd, llr, max_iterations, algorithm=algorithm, scale=scale, offset=offset,
        stall_iterations=stall, stall_drop=drop,
    )
    bits, iterations, converged = decode_syndrome_reference(
        code.chk_ptr, code.chk_var, synd, llr, max_iterations, scale, offset, algorithm,
        stall_iterations=stall or 0, stall_drop=drop,
    )
    np.testing.assert_array_equal(result.bits, bits)
    assert result.iterations == iterations
    assert result.converged == converged


@settings(deadline=None, max_examples=40)
@given(
    z=st.integers(1, 9),
    base_m=st.integers(1, 5),
    extra=st.integers(1, 6),
    var_degree=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
    scale=st.sampled_from([1.0, 0.78, 0.5]),
    offset=st.sampled_from([0.0, 0.15]),
    max_iterations=st.integers(0, 8),
    algorithm=st.sampled_from(["sum-product", "sum-product-taylor", "min-sum"]),
    stall=st.sampled_from([None, 1, 2, 3]),
    drop=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
)
def test_qc_kernel_agrees_with_twin(
    z: int,
    base_m: int,
    extra: int,
    var_degree: int,
    seed: int,
    data: st.DataObject,
    scale: float,
    offset: float,
    max_iterations: int,
    algorithm: Algorithm,
    stall: int | None,
    drop: float,
) -> None:
    code = random_qc_code(z, base_m, base_m + extra, var_degree, seed)
    synd = np.array(data.draw(st.lists(st.integers(0, 1), min_size=code.m, max_size=code.m)),
                    np.uint8)
    llr = np.array(data.draw(st.lists(llr_values, min_size=code.n, max_size=code.n)), np.float32)
    messages = np.array(
        data.draw(st.lists(llr_values, min_size=code.n_edges, max_size=code.n_edges)), np.float32
    )
    initial = messages.copy()
    twin_messages = messages.copy()
    result = decode_syndrome(
        code, synd, llr, max_iterations, algorithm=algorithm, scale=scale, offset=offset,
        messages=messages, stall_iterations=stall, stall_drop=drop,
    )
    bits, iterations, converged = decode_syndrome_reference(
        code.chk_ptr, code.chk_var, synd, llr, max_iterations, scale, offset, algorithm,
        twin_messages, stall or 0, drop,
    )
    np.testing.assert_array_equal(result.bits, bits)
    assert result.iterations == iterations
    assert result.converged == converged
    np.testing.assert_array_equal(messages.view(np.int32), twin_messages.view(np.int32))
    # The decoder picks one QC kernel by z (here the narrow one): the other agrees as well.
    for kernel in (qc_kernel, qc_narrow_kernel):
        start = initial.copy()
        out = _run_qc_kernel(kernel, code, synd, llr, max_iterations, stall, drop, algorithm,
                             scale, offset, start)
        np.testing.assert_array_equal(out[0], bits)
        assert out[1:] == (iterations, converged)
        np.testing.assert_array_equal(start.view(np.int32), twin_messages.view(np.int32))


def _run_qc_kernel(
    kernel: Any, code: LdpcCode, synd: np.ndarray, llr: np.ndarray, max_iterations: int,
    stall: int | None, drop: float, algorithm: Algorithm, scale: float, offset: float,
    messages: np.ndarray,
) -> tuple[np.ndarray, int, bool]:
    """One QC kernel run directly (not through the decoder's choice by z)."""
    qc = code.qc
    assert qc is not None
    bits = np.empty(code.n, np.uint8)
    post = np.clip(llr, -LLR_LIMIT, LLR_LIMIT).astype(np.float32)
    # The narrow kernel also takes the phi table (sum-product-fast); the wide one does not.
    table = (PHI_TABLE,) if kernel is qc_narrow_kernel else ()
    iterations, converged = kernel(
        qc.z, qc.layer_ptr, qc.layer_col, qc.layer_shift, qc.csr_edge, synd, post,
        max_iterations, stall or 0, round(drop * 1000), _ALGORITHM_CODES[algorithm],
        np.float32(scale),
        np.float32(offset), phi_constants(), *table, messages, bits,
    )
    return bits, int(iterations), bool(converged)


@pytest.mark.parametrize("algorithm", ["sum-product", "sum-product-taylor", "min-sum"])
@pytest.mark.parametrize(("stall", "drop"), [(None, 0.0), (2, 0.0), (2, 0.1)])
def test_qc_kernel_agrees_with_twin_at_shipped_width(
    algorithm: Algorithm, stall: int | None, drop: float
) -> None:
    # z = 64 lanes and check degree ~30, as in the shipped codes (the hypothesis test above draws
    # z <= 9): the layer's long loops, vector bodies and shifted scatters all run.
    code = random_qc_code(64, 4, 40, 3, seed=21)
    rng = np.random.default_rng(22)
    alice, _, llr = channel(rng, code.n, 0.04)
    synd = syndrome(code, alice)
    messages = np.zeros(code.n_edges, np.float32)
    decode_syndrome(code, synd, llr, 2, algorithm=algorithm, messages=messages)
    twin_messages = messages.copy()
    result = decode_syndrome(code, synd, llr, 6, algorithm=algorithm, messages=messages,
                             stall_iterations=stall, stall_drop=drop)
    bits, iterations, converged = decode_syndrome_reference(
        code.chk_ptr, code.chk_var, synd, llr, 6, 0.78, 0.0, algorithm, twin_messages, stall or 0,
        drop,
    )
    np.testing.assert_array_equal(result.bits, bits)
    assert (result.iterations, result.converged) == (iterations, converged)
    np.testing.assert_array_equal(messages.view(np.int32), twin_messages.view(np.int32))


@settings(deadline=None, max_examples=30)
@given(
    kind=st.sampled_from(["csr", "qc"]),
    seed=st.integers(0, 2**32 - 1),
    qber=st.sampled_from([0.01, 0.05, 0.12, 0.3]),
    max_iterations=st.integers(0, 30),
    algorithm=st.sampled_from(["sum-product", "sum-product-taylor", "min-sum"]),
)
def test_converged_decode_matches_syndrome(
    kind: str, seed: int, qber: float, max_iterations: int, algorithm: Algorithm
) -> None:
    code = either_code(kind, 40, 16, seed)
    rng = np.random.default_rng(seed)
    alice, _, llr = channel(rng, code.n, qber)
    synd = syndrome(code, alice)
    result = decode_syndrome(code, synd, llr, max_iterations, algorithm=algorithm)
    assert result.iterations <= max_iterations
    if result.converged:
        np.testing.assert_array_equal(syndrome(code, result.bits), synd)
    else:
        assert result.iterations == max_iterations
        assert not np.array_equal(syndrome(code, result.bits), synd)


@pytest.mark.parametrize("kind", ["csr", "qc"])
@pytest.mark.parametrize("algorithm", ["sum-product", "sum-product-taylor", "min-sum"])
def test_corrects_errors_below_threshold(kind: str, algorithm: Algorithm) -> None:
    code = either_code(kind, 200, 100, seed=7, z=20)
    rng = np.random.default_rng(11)
    for _ in range(5):
        alice, bob, llr = channel(rng, code.n, 0.03)
        assert (alice != bob).sum() > 50
        result = decode_syndrome(code, syndrome(code, alice), llr, algorithm=algorithm)
        assert result.converged
        assert 0 < result.iterations < 60
        np.testing.assert_array_equal(result.bits, alice)


def test_zero_iterations_when_word_already_matches() -> None:
    code = random_code(100, 40, 3, seed=1)
    alice = np.random.default_rng(2).integers(0, 2, code.n, dtype=np.uint8)
    llr = (1.0 - 2.0 * alice).astype(np.float32)
    result = decode_syndrome(code, syndrome(code, alice), llr)
    assert result.converged
    assert result.iterations == 0
    np.testing.assert_array_equal(result.bits, alice)


def test_punctured_and_shortened_llrs() -> None:
    # Punctured bits (LLR 0) are recovered; shortened ones (huge LLR) are never flipped.
    code = random_code(2000, 1000, 3, seed=3)
    rng = np.random.default_rng(4)
    alice, _, llr = channel(rng, code.n, 0.02)
    llr[:100] = 0.0
    llr[100:200] = np.where(alice[100:200] == 0, LLR_LIMIT, -LLR_LIMIT)
    result = decode_syndrome(code, syndrome(code, alice), llr)
    assert result.converged
    np.testing.assert_array_equal(result.bits, alice)


@settings(deadline=None, max_examples=10)
@given(kind=st.sampled_from(["csr", "qc"]), seed=st.integers(0, 2**32 - 1),
       frames=st.integers(0, 5))
def test_batch_equals_single(kind: str, seed: int, frames: int) -> None:
    code = either_code(kind, 60, 30, seed)
    rng = np.random.default_rng(seed)
    words = [channel(rng, code.n, 0.08) for _ in range(frames)]
    synds = np.array([syndrome(code, a) for a, _, _ in words], np.uint8).reshape(frames, code.m)
    llrs = np.array([llr for _, _, llr in words], np.float32).reshape(frames, code.n)
    batch = decode_syndromes(code, synds, llrs, 20)
    assert batch.bits.shape == (frames, code.n)
    assert batch.converged.shape == (frames,)
    assert batch.iterations.shape == (frames,)
    for k in range(frames):
        single = decode_syndrome(code, synds[k], llrs[k], 20)
        np.testing.assert_array_equal(batch.bits[k], single.bits)
        assert bool(batch.converged[k]) == single.converged
        assert int(batch.iterations[k]) == single.iterations


def test_float64_llrs_are_accepted() -> None:
    code = random_code(100, 50, 3, seed=5)
    rng = np.random.default_rng(6)
    alice, _, llr = channel(rng, code.n, 0.02)
    a = decode_syndrome(code, syndrome(code, alice), llr.astype(np.float64))
    b = decode_syndrome(code, syndrome(code, alice), llr)
    np.testing.assert_array_equal(a.bits, b.bits)


class TestBadInput:
    code = random_code(50, 20, 3, seed=0)
    synd = np.zeros(20, np.uint8)
    llr = np.ones(50, np.float32)

    def test_syndrome_dtype(self) -> None:
        with pytest.raises(TypeError, match="syndrome"):
            decode_syndrome(self.code, self.synd.astype(np.int64), self.llr)

    def test_syndrome_length(self) -> None:
        with pytest.raises(ValueError, match="syndrome"):
            decode_syndrome(self.code, np.zeros(21, np.uint8), self.llr)

    def test_llr_type_dtype_shape_nan(self) -> None:
        with pytest.raises(TypeError, match="llr"):
            decode_syndrome(self.code, self.synd, [1.0] * 50)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="llr"):
            decode_syndrome(self.code, self.synd, np.ones(50, np.int32))
        with pytest.raises(ValueError, match="llr"):
            decode_syndrome(self.code, self.synd, np.ones(49, np.float32))
        with pytest.raises(ValueError, match="llr"):
            decode_syndrome(self.code, self.synd, np.full(50, np.nan, np.float32))

    def test_parameters(self) -> None:
        with pytest.raises(ValueError, match="max_iterations"):
            decode_syndrome(self.code, self.synd, self.llr, -1)
        with pytest.raises(TypeError, match="max_iterations"):
            decode_syndrome(self.code, self.synd, self.llr, 2.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="scale"):
            decode_syndrome(self.code, self.synd, self.llr, scale=0.0)
        with pytest.raises(ValueError, match="offset"):
            decode_syndrome(self.code, self.synd, self.llr, offset=-1.0)
        with pytest.raises(ValueError, match="algorithm"):
            decode_syndrome(self.code, self.synd, self.llr, algorithm="bp")  # type: ignore[arg-type]

    def test_stall_iterations(self) -> None:
        for bad in (0, -1, True, 2.0):
            with pytest.raises(ValueError, match="stall_iterations"):
                decode_syndrome(self.code, self.synd, self.llr, stall_iterations=bad)  # type: ignore[arg-type]
        for drop in (-0.1, 1.0, float("nan")):
            with pytest.raises(ValueError, match="stall_drop"):
                decode_syndrome(self.code, self.synd, self.llr, stall_iterations=2,
                                stall_drop=drop)
        with pytest.raises(TypeError, match="stall_drop"):
            decode_syndrome(self.code, self.synd, self.llr, stall_drop="0.1")  # type: ignore[arg-type]

    def test_batch_shapes(self) -> None:
        with pytest.raises(TypeError, match="syndromes"):
            decode_syndromes(self.code, self.synd, np.ones((1, 50), np.float32))
        with pytest.raises(ValueError, match="syndromes"):
            decode_syndromes(self.code, np.zeros((2, 19), np.uint8), np.ones((2, 50), np.float32))
        with pytest.raises(ValueError, match="llrs"):
            decode_syndromes(self.code, np.zeros((2, 20), np.uint8), np.ones((3, 50), np.float32))


@settings(deadline=None, max_examples=20)
@given(
    kind=st.sampled_from(["csr", "qc"]),
    seed=st.integers(0, 2**32 - 1),
    first=st.integers(0, 4),
    second=st.integers(0, 4),
    algorithm=st.sampled_from(["sum-product", "sum-product-taylor", "min-sum"]),
)
def test_warm_start_agrees_with_twin(
    kind: str, seed: int, first: int, second: int, algorithm: Algorithm
) -> None:
    code = either_code(kind, 24, 12, seed % 1000)
    rng = np.random.default_rng(seed)
    alice, _, llr = channel(rng, code.n, 0.1)
    synd = syndrome(code, alice)
    messages = np.zeros(code.n_edges, np.float32)
    decode_syndrome(code, synd, llr, first, algorithm=algorithm, messages=messages)
    # Fix a few bits (as a blind reveal does) and continue from the messages left.
    llr[:5] = np.where(alice[:5] == 0, LLR_LIMIT, -LLR_LIMIT)
    twin_messages = messages.copy()
    result = decode_syndrome(code, synd, llr, second, algorithm=algorithm, messages=messages)
    bits, iterations, converged = decode_syndrome_reference(
        code.chk_ptr, code.chk_var, synd, llr, second, 0.78, 0.0, algorithm, twin_messages
    )
    np.testing.assert_array_equal(result.bits, bits)
    assert (result.iterations, result.converged) == (iterations, converged)
    np.testing.assert_array_equal(messages, twin_messages)


# Every kind of code with every kernel path (the wide code with sum-product-fast is the fused
# kernel updating the messages in place); hypothesis draws the frames and rounds.
@pytest.mark.parametrize("kind", ["csr", "narrow", "wide"])
@pytest.mark.parametrize("algorithm", ["sum-product-fast", "sum-product", "min-sum"])
@settings(deadline=None, max_examples=4)
@given(
    seed=st.integers(0, 2**32 - 1),
    rounds=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    batch=st.booleans(),
)
def test_messages_in_kernel_order_decode_alike(
    kind: str, seed: int, rounds: list[int], algorithm: Algorithm, batch: bool
) -> None:
    # Warm rounds with the messages kept in the kernel's own order give the same bits,
    # iterations and messages (reordered) as rounds in check-major order.
    if kind == "csr":
        code = random_code(96, 48, 3, seed % 1000)
    else:
        code = random_qc_code(8 if kind == "narrow" else 32, 6, 12, 3, seed % 1000)
    rng = np.random.default_rng(seed)
    alice, _, llr = channel(rng, code.n, 0.08)
    synd = syndrome(code, alice)
    check_major = np.zeros(code.n_edges, np.float32)
    kernel = np.zeros(code.n_edges, np.float32)
    for k, budget in enumerate(rounds):
        llr[: 3 * k] = np.where(alice[: 3 * k] == 0, LLR_LIMIT, -LLR_LIMIT)  # a blind reveal
        if batch:
            a = decode_syndromes(code, synd[None, :], llr[None, :], budget, algorithm=algorithm,
                                 messages=check_major[None, :])
            b = decode_syndromes(code, synd[None, :], llr[None, :], budget, algorithm=algorithm,
                                 messages=kernel[None, :], kernel_order=True)
            np.testing.assert_array_equal(a.bits, b.bits)
            np.testing.assert_array_equal(a.iterations, b.iterations)
        else:
            a1 = decode_syndrome(code, synd, llr, budget, algorithm=algorithm,
                                 messages=check_major)
            b1 = decode_syndrome(code, synd, llr, budget, algorithm=algorithm, messages=kernel,
                                 kernel_order=True)
            np.testing.assert_array_equal(a1.bits, b1.bits)
            assert (a1.iterations, a1.converged) == (b1.iterations, b1.converged)
        if code.qc is None:
            np.testing.assert_array_equal(kernel, check_major)
        else:
            np.testing.assert_array_equal(kernel, check_major[code.qc.csr_edge])


def test_warm_start_checks_messages() -> None:
    code = random_code(50, 20, 3, seed=0)
    synd = np.zeros(20, np.uint8)
    llr = np.ones(50, np.float32)
    with pytest.raises(ValueError, match="messages"):
        decode_syndrome(code, synd, llr, messages=np.zeros(code.n_edges + 1, np.float32))
    with pytest.raises(TypeError, match="messages"):
        decode_syndrome(code, synd, llr, messages=np.zeros(code.n_edges, np.float64))
    bad = np.zeros(code.n_edges, np.float32)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="messages"):
        decode_syndrome(code, synd, llr, messages=bad)
    with pytest.raises(ValueError, match="messages"):
        decode_syndromes(
            code, np.zeros((2, 20), np.uint8), np.ones((2, 50), np.float32),
            messages=np.zeros((1, code.n_edges), np.float32),
        )


@pytest.mark.parametrize("drop", [0.0, 0.1])
@pytest.mark.parametrize("kind", ["csr", "qc"])
def test_stall_rule_stops_hopeless_decodes_early(kind: str, drop: float) -> None:
    # Far above the code's threshold BP cannot converge; the stall rule gives up long before the
    # budget, and a decode that can converge still does (the rule only ends stuck decodes).
    code = either_code(kind, 200, 100, seed=7, z=20)
    rng = np.random.default_rng(12)
    alice, _, llr = channel(rng, code.n, 0.2)
    hopeless = decode_syndrome(code, syndrome(code, alice), llr, 200, stall_iterations=3,
                               stall_drop=drop)
    assert not hopeless.converged
    assert 3 <= hopeless.iterations < 200
    alice, _, llr = channel(rng, code.n, 0.03)
    easy = decode_syndrome(code, syndrome(code, alice), llr, stall_iterations=3, stall_drop=drop)
    assert easy.converged
    np.testing.assert_array_equal(easy.bits, alice)
