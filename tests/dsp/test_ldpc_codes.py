"""Tests of the LDPC code family: index arrays, syndrome kernel, loading, construction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.dsp.ldpc.codes import (
    DEFAULT_N,
    LdpcCode,
    available_codes,
    code_from_matrix,
    get_code,
    load_code,
    syndrome,
    syndrome_reference,
)


def _random_matrix(seed: int, m: int, n: int, density: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    H = (rng.random((m, n)) < density).astype(np.uint8)
    return H


def _check_index_arrays(code: LdpcCode) -> None:
    H = code.H
    assert isinstance(H, sp.csr_matrix)
    assert H.dtype == np.uint8
    assert H.shape == (code.m, code.n)
    coo = H.tocoo()
    assert code.chk_ptr.dtype == np.int64
    assert code.var_ptr.dtype == np.int64
    for name in ("chk_var", "var_edge", "var_chk", "var_degree", "chk_degree"):
        assert getattr(code, name).dtype == np.int32, name
        assert getattr(code, name).flags.c_contiguous
    # Check-major edges match the CSR order of H.
    assert np.array_equal(code.chk_ptr, H.indptr)
    assert np.array_equal(code.chk_var, H.indices)
    edge_chk = np.repeat(np.arange(code.m), code.chk_degree)
    assert np.array_equal(edge_chk, coo.row)
    # Variable-major slots point back at the same edges.
    slot_var = np.repeat(np.arange(code.n), code.var_degree)
    assert np.array_equal(code.chk_var[code.var_edge], slot_var)
    assert np.array_equal(edge_chk[code.var_edge], code.var_chk)
    assert np.array_equal(np.sort(code.var_edge), np.arange(code.n_edges))
    assert np.array_equal(np.diff(code.var_ptr), code.var_degree)
    assert np.array_equal(np.asarray(H.sum(axis=0)).ravel(), code.var_degree)
    assert np.array_equal(np.asarray(H.sum(axis=1)).ravel(), code.chk_degree)
    # Within each variable the checks increase.
    for v in range(min(code.n, 50)):
        checks = code.var_chk[code.var_ptr[v] : code.var_ptr[v + 1]]
        assert np.all(np.diff(checks) > 0)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 12),
    extra=st.integers(1, 20),
    density=st.floats(0.05, 0.9),
)
def test_code_from_matrix_index_arrays(seed: int, m: int, extra: int, density: float) -> None:
    H = _random_matrix(seed, m, m + extra, density)
    code = code_from_matrix(H, name="random")
    assert (code.n, code.m) == (m + extra, m)
    assert code.rate == pytest.approx(1 - m / (m + extra))
    assert np.array_equal(code.H.toarray(), H)
    _check_index_arrays(code)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 15), extra=st.integers(1, 30))
def test_syndrome_kernel_matches_twin(seed: int, m: int, extra: int) -> None:
    H = _random_matrix(seed, m, m + extra)
    code = code_from_matrix(sp.csr_matrix(H))
    bits = np.random.default_rng(seed + 1).integers(0, 2, code.n).astype(np.uint8)
    result = syndrome(code, bits)
    assert result.dtype == np.uint8
    assert np.array_equal(result, syndrome_reference(code, bits))
    assert np.array_equal(result, (H.astype(np.int64) @ bits) % 2)


def test_syndrome_rejects_bad_bits() -> None:
    code = code_from_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.uint8))
    with pytest.raises(TypeError, match="bits"):
        syndrome(code, np.zeros(3, dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits"):
        syndrome(code, np.zeros(4, dtype=np.uint8))


def test_code_from_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="zeros and ones"):
        code_from_matrix(np.array([[2, 1, 0]]))
    with pytest.raises(ValueError, match="fewer rows"):
        code_from_matrix(np.eye(3, dtype=np.uint8))
    with pytest.raises(TypeError, match="H"):
        code_from_matrix([[1, 0]])  # type: ignore[arg-type]


def test_shipped_codes_are_listed_and_load() -> None:
    infos = available_codes()
    assert infos, "no shipped codes"
    for info in infos:
        code = load_code(info.name)
        assert code.name == info.name
        assert code.n == info.n
        assert code.rate == pytest.approx(info.rate)
        assert code.var_degree.min() >= 2
        assert code.chk_degree.min() >= 2


def test_shipped_code_index_arrays() -> None:
    _check_index_arrays(load_code(available_codes()[0].name))


def test_get_code_rule() -> None:
    default = sorted(info.rate for info in available_codes() if info.n == DEFAULT_N)
    assert default
    for rate in default:
        code = get_code(rate)
        assert code.rate == pytest.approx(rate)
        assert code.n == DEFAULT_N
        # Just below a shipped rate picks the smallest rate at or above it.
        below = get_code(rate - 1e-3)
        assert below.rate >= rate - 1e-3
        assert below.rate <= rate + 1e-12
    assert get_code(default[0]) is get_code(default[0])
    with pytest.raises(ValueError, match="rate"):
        get_code(min(default[-1] + 1e-3, 0.999))
    with pytest.raises(ValueError, match="n=12345"):
        get_code(0.5, n=12345)
    with pytest.raises(ValueError, match="rate"):
        get_code(1.5)
    with pytest.raises(ValueError, match="no shipped code"):
        load_code("nonexistent")
