"""LDPC parity-check matrices for syndrome reconciliation, with the index arrays decoders need.

The shipped family lives in ``qkdnode/dsp/codes/*.npz`` (package data), one file per code, built by
:mod:`qkdnode.dsp.ldpc.construct`: quasi-cyclic PEG codes named ``n{n}_r{100 R}``, rates 0.50 to
0.95 in steps of 0.05, at n = 64 000 (default) and n = 16 000. Two storage formats are understood:

* ``format == "qc"``: a quasi-cyclic code given by its base graph. Arrays ``rows``, ``cols``,
  ``shifts`` (one entry per base edge) and the lifting size ``z``; base edge ``(i, j, s)`` expands
  to the ``z`` edges ``(check i*z + (t + s) % z, variable j*z + t)`` for ``t`` in ``0..z-1``.
* ``format == "csr"``: ``row_ptr`` and ``col_idx`` of ``H`` directly, with ``n`` and ``m``.

Both carry ``n``, ``m`` and optional metadata (``girth``, ``distribution``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple, TypeVar

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_N",
    "CodeInfo",
    "LdpcCode",
    "QcLayout",
    "available_codes",
    "code_from_matrix",
    "code_from_qc",
    "get_code",
    "load_code",
    "qc_layout",
    "required_efficiency",
    "syndrome",
    "syndrome_reference",
    "validated_qber",
]

# Frame length of the shipped family used when get_code is called without n: long enough that
# rates 0.5-0.8 decode within 10-14 % of the Slepian-Wolf bound at 1 % frame errors, short enough
# to keep the latency and memory of one frame small (see the table in construct.py). A 16 000-bit
# family is shipped too (n=16000), for small blocks, at a cost of about 0.02-0.07 in efficiency.
DEFAULT_N = 64000

# Shipped design rates are exact fractions (m/n with n a multiple of 20), but compare with slack so
# that get_code(0.8) matches a code whose rate is 0.8 up to float rounding.
_RATE_TOLERANCE = 1e-9

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True, eq=False)
class LdpcCode:
    """A binary LDPC code given by its parity-check matrix, with decoder index arrays.

    The ``E`` edges (ones of ``H``) are numbered in *check-major* order: the edges of check 0 with
    increasing variable index, then those of check 1, and so on (the CSR order of ``H``).
    All arrays are C-contiguous and read-only.

    Attributes:
        H: ``scipy.sparse.csr_matrix`` of ``uint8``, shape ``(m, n)``, sorted indices, all ones.
        n: Number of variable nodes (frame length in bits).
        m: Number of check nodes (syndrome length in bits).
        rate: Design rate ``1 - m/n`` (the true rate is higher if ``H`` has dependent rows).
        name: Name of the code (file stem for shipped codes).
        chk_ptr: ``int64[m + 1]``; edges of check ``c`` are ``chk_ptr[c]:chk_ptr[c + 1]``
            (the CSR row pointer of ``H``).
        chk_var: ``int32[E]``; variable index of each edge in check-major order (CSR column
            indices), increasing within each check.
        var_ptr: ``int64[n + 1]``; the variable-major edge slots of variable ``v`` are
            ``var_ptr[v]:var_ptr[v + 1]`` (the CSC column pointer of ``H``).
        var_edge: ``int32[E]``; for each variable-major slot, the index of that same edge in
            check-major order, so ``chk_var[var_edge[k]] == v`` for every slot ``k`` of ``v``;
            within a variable the slots go by increasing check index. It is a permutation of
            ``0..E-1``.
        var_chk: ``int32[E]``; check index of each variable-major slot (CSC row indices), so
            ``var_chk[k]`` is the check of edge ``var_edge[k]``.
        var_degree: ``int32[n]``; number of checks of each variable.
        chk_degree: ``int32[m]``; number of variables of each check.
        qc: The quasi-cyclic structure when the code has one (shipped codes), which the decoder
            uses to update ``z`` checks at once; ``None`` for other codes.
    """

    H: sp.csr_matrix
    n: int
    m: int
    rate: float
    name: str
    chk_ptr: NDArray[np.int64]
    chk_var: NDArray[np.int32]
    var_ptr: NDArray[np.int64]
    var_edge: NDArray[np.int32]
    var_chk: NDArray[np.int32]
    var_degree: NDArray[np.int32]
    chk_degree: NDArray[np.int32]
    qc: QcLayout | None = None

    @property
    def n_edges(self) -> int:
        """Number of ones in ``H``."""
        return int(self.chk_var.shape[0])

    def __repr__(self) -> str:
        return f"LdpcCode(name={self.name!r}, n={self.n}, m={self.m}, rate={self.rate:.4f})"


@dataclass(frozen=True, slots=True, eq=False)
class QcLayout:
    """Base graph of a quasi-cyclic code in the decoder's layer order.

    Base edges are sorted by base check, then base variable; base edge ``b`` joins base check
    ``i`` (``layer_ptr[i] <= b < layer_ptr[i + 1]``) to base variable ``layer_col[b]`` with shift
    ``layer_shift[b]``, i.e. lifted check ``i * z + u`` to variable ``layer_col[b] * z + (u -
    layer_shift[b]) mod z``. Its ``z`` messages sit at ``b * z + u`` in layer order;
    ``csr_edge[b * z + u]`` is the same edge's index in the check-major (CSR) order of ``H``.

    Attributes:
        z: Lifting size.
        layer_ptr: ``int64[mb + 1]``.
        layer_col: ``int32[Eb]``.
        layer_shift: ``int32[Eb]``, in ``0..z-1``.
        csr_edge: ``int64[E]``, a permutation of ``0..E-1``.
    """

    z: int
    layer_ptr: NDArray[np.int64]
    layer_col: NDArray[np.int32]
    layer_shift: NDArray[np.int32]
    csr_edge: NDArray[np.int64]


def qc_layout(
    z: int, base_m: int, rows: NDArray[np.integer], cols: NDArray[np.integer],
    shifts: NDArray[np.integer], chk_ptr: NDArray[np.int64],
) -> QcLayout | None:
    """The :class:`QcLayout` of a lifted base graph, or ``None`` if a base check meets a base
    variable twice (its ``z`` lifted checks would then share variables: no layer update)."""
    rows64 = np.asarray(rows, dtype=np.int64)
    cols64 = np.asarray(cols, dtype=np.int64)
    order = np.lexsort((cols64, rows64))
    rows64, cols64 = rows64[order], cols64[order]
    shifts64 = np.asarray(shifts, dtype=np.int64)[order] % z
    if rows64.size > 1 and bool(((rows64[1:] == rows64[:-1]) & (cols64[1:] == cols64[:-1])).any()):
        return None
    layer_ptr = np.zeros(base_m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows64, minlength=base_m), out=layer_ptr[1:])
    # Within lifted check (i, u) the CSR edges go by increasing variable, i.e. by base variable:
    # the rank r of base edge b in its row.
    rank = np.arange(rows64.size, dtype=np.int64) - layer_ptr[rows64]
    u = np.arange(z, dtype=np.int64)
    csr_edge = chk_ptr[rows64[:, None] * z + u[None, :]] + rank[:, None]
    return QcLayout(
        z=int(z),
        layer_ptr=_readonly(layer_ptr),
        layer_col=_readonly(cols64.astype(np.int32)),
        layer_shift=_readonly(shifts64.astype(np.int32)),
        csr_edge=_readonly(csr_edge.ravel()),
    )


def code_from_qc(
    z: int, base_m: int, base_n: int, rows: NDArray[np.integer], cols: NDArray[np.integer],
    shifts: NDArray[np.integer], name: str = "custom-qc",
) -> LdpcCode:
    """Builds a quasi-cyclic code from its base graph (see ``format == "qc"`` above).

    Raises:
        ValueError: Sizes, indices or shifts out of range, or a duplicate base edge with the same
            shift (a double edge).
    """
    if z < 1 or base_m < 1 or base_n <= base_m:
        raise ValueError(f"need z >= 1 and 1 <= base_m < base_n, got {z}, {base_m}, {base_n}")
    rows_a, cols_a, shifts_a = (np.asarray(a, dtype=np.int64) for a in (rows, cols, shifts))
    if not rows_a.shape == cols_a.shape == shifts_a.shape or rows_a.ndim != 1:
        raise ValueError("rows, cols and shifts must be 1-d of equal length")
    if rows_a.size and (
        rows_a.min() < 0 or rows_a.max() >= base_m or cols_a.min() < 0 or cols_a.max() >= base_n
        or shifts_a.min() < 0 or shifts_a.max() >= z
    ):
        raise ValueError("rows, cols or shifts out of range")
    if np.unique(np.stack([rows_a, cols_a, shifts_a]), axis=1).shape[1] != rows_a.size:
        raise ValueError("duplicate base edge (a double edge in the lifted graph)")
    chk_ptr, chk_var = expand_qc(z, base_m, rows_a, cols_a, shifts_a)
    code = _build(base_m * z, base_n * z, chk_ptr, chk_var, name)
    layout = qc_layout(z, base_m, rows_a, cols_a, shifts_a, code.chk_ptr)
    return dataclasses.replace(code, qc=layout)


class CodeInfo(NamedTuple):
    """One shipped code, as listed by :func:`available_codes`."""

    name: str
    n: int
    rate: float


_ArrayT = TypeVar("_ArrayT", bound=np.generic)


def _readonly(array: NDArray[_ArrayT]) -> NDArray[_ArrayT]:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def code_from_matrix(
    H: sp.spmatrix | sp.sparray | NDArray[np.integer], name: str = "custom"
) -> LdpcCode:
    """Builds an :class:`LdpcCode` from any binary parity-check matrix.

    Args:
        H: Dense or sparse ``m x n`` matrix of zeros and ones; duplicate sparse entries are not
            allowed (they would be a double edge).
        name: Name given to the code.

    Returns:
        The code, with all index arrays precomputed.

    Raises:
        TypeError: ``H`` is not a 2-d array or sparse matrix.
        ValueError: ``H`` is empty, has entries other than 0 and 1, or has fewer columns than rows.
    """
    if sp.issparse(H):
        csr = sp.csr_matrix(H)
        csr.sum_duplicates()
        csr.eliminate_zeros()
    elif isinstance(H, np.ndarray):
        if H.ndim != 2:
            raise TypeError(f"H must be 2-d, got shape {H.shape}")
        csr = sp.csr_matrix(H)
        csr.eliminate_zeros()
    else:
        raise TypeError(f"H must be a numpy array or scipy sparse matrix, got {type(H).__name__}")
    m, n = csr.shape
    if m == 0 or n == 0:
        raise ValueError(f"H must be non-empty, got shape {csr.shape}")
    if m >= n:
        raise ValueError(f"H must have fewer rows than columns, got shape {csr.shape}")
    if csr.nnz and (csr.data != 1).any():
        raise ValueError("H must contain only zeros and ones")
    csr.sort_indices()
    chk_ptr = csr.indptr.astype(np.int64)
    chk_var = csr.indices.astype(np.int32)
    return _build(m, n, chk_ptr, chk_var, name)


def _build(
    m: int, n: int, chk_ptr: NDArray[np.int64], chk_var: NDArray[np.int32], name: str
) -> LdpcCode:
    """Assembles the code from a sorted CSR structure (column indices increasing per row)."""
    n_edges = chk_var.shape[0]
    chk_degree = np.diff(chk_ptr).astype(np.int32)
    var_degree = np.bincount(chk_var, minlength=n).astype(np.int32)
    # A stable sort by variable keeps the check-major (increasing check) order within a variable.
    var_edge = np.argsort(chk_var, kind="stable").astype(np.int32)
    edge_chk = np.repeat(np.arange(m, dtype=np.int32), chk_degree)
    var_chk = edge_chk[var_edge]
    var_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(var_degree, out=var_ptr[1:])
    H = sp.csr_matrix(
        (np.ones(n_edges, dtype=np.uint8), chk_var.copy(), chk_ptr.copy()), shape=(m, n)
    )
    H.has_sorted_indices = True
    return LdpcCode(
        H=H,
        n=n,
        m=m,
        rate=1.0 - m / n,
        name=name,
        chk_ptr=_readonly(chk_ptr),
        chk_var=_readonly(chk_var),
        var_ptr=_readonly(var_ptr),
        var_edge=_readonly(var_edge),
        var_chk=_readonly(var_chk),
        var_degree=_readonly(var_degree),
        chk_degree=_readonly(chk_degree),
    )


def expand_qc(
    z: int, base_m: int, rows: NDArray[np.integer], cols: NDArray[np.integer],
    shifts: NDArray[np.integer],
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Lifts a quasi-cyclic base graph to the sorted CSR structure of the full matrix.

    Args:
        z: Lifting (circulant) size.
        base_m: Number of base checks.
        rows: Base check of each base edge.
        cols: Base variable of each base edge.
        shifts: Circulant shift of each base edge, in ``0..z-1``.

    Returns:
        ``(chk_ptr, chk_var)`` of the lifted ``base_m*z x base_n*z`` matrix.
    """
    t = np.arange(z, dtype=np.int64)
    rows64 = np.asarray(rows, dtype=np.int64)[:, None]
    checks = rows64 * z + (t[None, :] + np.asarray(shifts, dtype=np.int64)[:, None]) % z
    variables = np.asarray(cols, dtype=np.int64)[:, None] * z + t[None, :]
    checks = checks.ravel()
    variables = variables.ravel()
    order = np.lexsort((variables, checks))
    chk_var = variables[order].astype(np.int32)
    counts = np.bincount(checks, minlength=base_m * z)
    chk_ptr = np.zeros(base_m * z + 1, dtype=np.int64)
    np.cumsum(counts, out=chk_ptr[1:])
    return chk_ptr, chk_var


@numba.njit(cache=True, nogil=True)
def _syndrome_kernel(
    chk_ptr: NDArray[np.int64], chk_var: NDArray[np.int32], bits: NDArray[np.uint8]
) -> NDArray[np.uint8]:  # pragma: no cover - compiled
    m = chk_ptr.shape[0] - 1
    out = np.zeros(m, dtype=np.uint8)
    for c in range(m):
        acc = np.uint8(0)
        for e in range(chk_ptr[c], chk_ptr[c + 1]):
            acc ^= bits[chk_var[e]]
        out[c] = acc & np.uint8(1)
    return out


@numba.njit(cache=True, nogil=True)
def _qc_syndrome_kernel(
    z: int, layer_ptr: NDArray[np.int64], layer_col: NDArray[np.int32],
    layer_shift: NDArray[np.int32], bits: NDArray[np.uint8],
) -> NDArray[np.uint8]:  # pragma: no cover - compiled
    """:func:`_syndrome_kernel` on a QC code, a layer of ``z`` checks at a time: each base
    edge adds one contiguous window of a copy of ``bits`` stored twice per block (the
    decoder's doubled layout), so the XORs run on ``z`` neighbouring bytes (vector
    instructions) instead of one random byte per edge."""
    nb = bits.shape[0] // z
    doubled = np.empty(2 * nb * z, dtype=np.uint8)
    for j in range(nb):
        row = bits[j * z : j * z + z]
        low = doubled[2 * z * j : 2 * z * j + z]
        high = doubled[2 * z * j + z : 2 * z * j + 2 * z]
        for t in range(z):
            low[t] = row[t]
            high[t] = row[t]
    mb = layer_ptr.shape[0] - 1
    out = np.zeros(mb * z, dtype=np.uint8)
    for i in range(mb):
        acc = out[i * z : i * z + z]
        for b in range(layer_ptr[i], layer_ptr[i + 1]):
            start = 2 * z * layer_col[b] + z - layer_shift[b]
            window = doubled[start : start + z]
            for u in range(z):
                acc[u] ^= window[u]
        for u in range(z):
            acc[u] &= np.uint8(1)
    return out


def _check_bits(code: LdpcCode, bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if not isinstance(bits, np.ndarray):
        raise TypeError(f"bits must be a numpy array, got {type(bits).__name__}")
    if bits.dtype != np.uint8:
        raise TypeError(f"bits must have dtype uint8, got {bits.dtype}")
    if bits.shape != (code.n,):
        raise ValueError(f"bits must have shape ({code.n},), got {bits.shape}")
    return np.ascontiguousarray(bits)


def syndrome(code: LdpcCode, bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Computes the syndrome ``H @ bits mod 2``.

    Args:
        code: The code.
        bits: ``uint8[n]`` of zeros and ones.

    Returns:
        ``uint8[m]`` of zeros and ones.

    Raises:
        TypeError: ``bits`` is not a uint8 numpy array.
        ValueError: ``bits`` does not have length ``code.n``.
    """
    checked = _check_bits(code, bits)
    qc = code.qc
    result: NDArray[np.uint8]
    if qc is not None:
        result = _qc_syndrome_kernel(qc.z, qc.layer_ptr, qc.layer_col, qc.layer_shift, checked)
    else:
        result = _syndrome_kernel(code.chk_ptr, code.chk_var, checked)
    return result


def syndrome_reference(code: LdpcCode, bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Plain scipy twin of :func:`syndrome` (``H @ bits mod 2``)."""
    checked = _check_bits(code, bits)
    product = code.H.astype(np.int64) @ (checked & 1).astype(np.int64)
    return (np.asarray(product) % 2).astype(np.uint8)


def _code_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("qkdnode.dsp").joinpath("codes")
    if not folder.is_dir():
        return {}
    return {
        entry.name[: -len(".npz")]: entry
        for entry in folder.iterdir()
        if entry.name.endswith(".npz")
    }


def _scalar(data: np.lib.npyio.NpzFile, key: str) -> int:
    return int(data[key])


@functools.cache
def available_codes() -> tuple[CodeInfo, ...]:
    """Lists the shipped codes, sorted by frame length then rate.

    Returns:
        One :class:`CodeInfo` (name, n, design rate) per shipped code.
    """
    infos = []
    for name, entry in _code_files().items():
        with entry.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            n = _scalar(data, "n")
            m = _scalar(data, "m")
        infos.append(CodeInfo(name=name, n=n, rate=1.0 - m / n))
    return tuple(sorted(infos, key=lambda info: (info.n, info.rate, info.name)))


@functools.lru_cache(maxsize=64)
def load_code(name: str) -> LdpcCode:
    """Loads a shipped code by name (cached).

    Args:
        name: One of the names listed by :func:`available_codes`.

    Returns:
        The code.

    Raises:
        ValueError: No shipped code has that name.
    """
    files = _code_files()
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name not in files:
        raise ValueError(f"name: no shipped code {name!r}; available: {sorted(files)}")
    with files[name].open("rb") as handle, np.load(handle, allow_pickle=False) as data:
        n = _scalar(data, "n")
        m = _scalar(data, "m")
        fmt = str(data["format"])
        if fmt == "qc":
            z = _scalar(data, "z")
            return code_from_qc(
                z, m // z, n // z, data["rows"], data["cols"], data["shifts"], name
            )
        if fmt == "csr":
            chk_ptr = data["row_ptr"].astype(np.int64)
            chk_var = data["col_idx"].astype(np.int32)
        else:
            raise ValueError(f"name: code file {name!r} has unknown format {fmt!r}")
    return _build(m, n, chk_ptr, chk_var, name)


# QBER range over which each shipped code has been shown to decode in blind rate-adaptive
# reconciliation (how each range was measured is noted). "Every frame kept" over the tens of
# frames noted shows f, not FER <= 1 %: zero failures in N frames bounds the FER only at about
# 3/N (95 % confidence), e.g. ~8 % for 36 frames; the "evaluate" runs measured FER. A code
# without an entry is never chosen by ``qkdnode.dsp.reconcile.choose_code``. The lower end is 0
# where the code was measured at a QBER low enough that its frame carries the full payload: below
# it the frame layout no longer changes and only the number of errors falls.
#
# "evaluate": ``python -m qkdnode.dsp.ldpc.construct --out dsp/codes --no-build --evaluate``
# (2026-11-22, table in construct.py): FER <= 1 % with the full syndrome at efficiency <= 1.34,
# within what a frame may disclose (plan.MIN_FULL_EFFICIENCY + plan.PAYLOAD_REVEAL_EFFICIENCY).
VALIDATED_QBER: dict[str, tuple[float, float]] = {
    # n = 64 000, rates 0.50-0.85: reconcile_local kept every frame at the upper end of each
    # range (2026-11-22; 8/8 for r085 at 2.6 and 3 %, f = 1.13, and r080 at 3.7 %, f = 1.13;
    # 6/6 for r075 ... r055 at 4.2 / 5.5 / 6.5 / 7.5 / 9 %, f = 1.10 / 1.11 / 1.09 / 1.10 /
    # 1.10) and benchmarks/bench_reconcile.py 12/12 inside them.
    # r050: evaluate up to 9.42 %; reconcile_local kept 4/4 frames each at 10 % and 11 %
    # (f = 1.10, 1.11), the abort QBER.
    "n64000_r050": (0.0, 0.1100),
    "n64000_r055": (0.0, 0.0900),
    "n64000_r060": (0.0, 0.0750),
    "n64000_r065": (0.0, 0.0650),
    "n64000_r070": (0.0, 0.0550),
    "n64000_r075": (0.0, 0.0420),
    "n64000_r080": (0.0, 0.0370),
    "n64000_r085": (0.0, 0.0300),
    # reconcile_local with REQUIRED_EFFICIENCY below: every frame kept, 4 frames at 1.2 % and
    # 12 each at 0.8 / 1.0 / 1.5 % (f = 1.26 / 1.19 / 1.19; 2026-11-22). With the default margin
    # a frame at 1.5 % was discarded (seed 5 of /tmp/lowq.py).
    "n64000_r090": (0.0, 0.0150),
    # reconcile_local with REQUIRED_EFFICIENCY below: every frame kept at 0.3 / 0.4 / 0.5 / 0.6 /
    # 0.7 % (8 or 16 frames each, 2026-11-22); at 0.3 % the frame carries its full payload.
    "n64000_r095": (0.0, 0.0070),
    # n = 16 000: "evaluate" (above), raised where reconcile_local kept 8/8 frames (2026-11-22:
    # r090 at 1 %, r080 at 3 %, r070 at 5 %, r055 at 8 %, f = 1.24 / 1.22 / 1.15 / 1.11);
    # r085 discarded 1 of 8 at 2 % with the default full-syndrome efficiency 1.14; with 1.31
    # (REQUIRED_EFFICIENCY below) it kept every frame at 1.75 and 2 % (see there), so it now
    # covers up to 2.1 %, where r080 gave f 1.33-1.48.
    "n16000_r050": (0.0, 0.0918),
    "n16000_r055": (0.0, 0.0800),
    "n16000_r060": (0.0, 0.0637),
    "n16000_r065": (0.0, 0.0518),
    "n16000_r070": (0.0, 0.0500),
    "n16000_r075": (0.0, 0.0328),
    "n16000_r080": (0.0, 0.0300),
    "n16000_r085": (0.0, 0.0210),
    "n16000_r090": (0.0, 0.0100),
    # The rate-0.91 design at rate 0.92, with REQUIRED_EFFICIENCY below: reconcile_local on
    # 42 000-bit blocks (16 seeds each, 2026-11-22) kept every frame at QBER 0.5 / 0.7 / 0.85 /
    # 0.95 / 1.1 % (48 / 48 / 48 / 64 / 64 frames; f = 1.60 / 1.36 / 1.32 / 1.43 / 1.33), and
    # discarded 1 of 80 at 1.3 %. With 1.30 it discarded 2 of 48 at 0.7 % and 1 of 48 at 0.85 %.
    "n16000_r092": (0.0, 0.0110),
    # benchmarks/bench_reconcile.py (2026-11-22): every frame kept, 4 frames at QBER 2 %
    # (n192000_r085, f = 1.10).
    "n192000_r085": (0.0, 0.0200),
    # The project's rate-0.91 design (distributions.py), reconcile_local 1.5 Mbit per run
    # (2026-11-22): every frame kept at QBER 0.6 / 0.8 / 1.0 / 1.2 / 1.4 % (8 / 8 / 24 / 10 / 11
    # frames; f = 1.35 / 1.14 / 1.13 / 1.19 / 1.19; at 0.6 % the frame carries its full payload
    # and decodes at the first syndrome). It replaces n192000_r090 (f = 1.16-1.17 at 1 % on the
    # same inputs), which keeps its file but is no longer chosen. benchmarks/bench_reconcile.py
    # --frames 12 --long-frames 8: 8/8 kept at 1 %, f = 1.114.
    "n192000_r091": (0.0, 0.0140),
    # The EL2009 rate-0.85 distribution lifted by z = 384 (finite-length gap at QBER 2 %: cold
    # 60-iteration decodes of 6 frames succeed from f = 1.088 on average, 1.085-1.094, where
    # n192000_r085's 12 frames need 1.0925, 1.075-1.105). reconcile_local (2026-11-22, the
    # sum-product-fast decoder, blind steps of 0.005) kept every frame: QBER 1.75 % 16 frames,
    # f = 1.110 (n192000_r085 at 1.75 %: 1.109), 1.9 % 8 frames 1.093, 2 % 36 frames 1.094-1.095.
    # Below 1.75 % its frames would start above f 1.05 even with every modulated bit punctured.
    # FER at 2 % (2026-11-22, /tmp script: 24 runs of reconcile_local on 12 payloads each,
    # seeds 1000-1023, with the blind give-up rule): 336 frames, none discarded (FER < 0.9 % at
    # 95 % confidence), f 1.0963 on average (runs 1.093-1.102), 242 CPU s.
    "n384000_r085": (0.0175, 0.0200),
}


# Efficiency f the whole syndrome of a frame of the code must reach (the payload is cut to make
# room for it, see qkdnode.dsp.reconcile.plan.plan_frame) where the default margin is not enough:
# the high-rate codes need more than their neighbours. Measured with reconcile_local (2026-11-22):
# n64000_r095 (built from the project's own rate-0.95 design) with 1.35 kept 8/8 frames at each
# of QBER 0.3 / 0.4 / 0.5 / 0.7 % (f = 1.42 / 1.31 / 1.30 / 1.28) and 16/16 at 0.5 / 0.6 % with
# another seed, but discarded 1 of 6 at 0.5 % with a third (tests/dsp/test_reconcile_low_qber);
# with 1.45, 8/8 at each of 0.3 / 0.5 / 0.6 / 0.7 % (f = 1.42 / 1.36 / 1.34 / 1.34). The code it
# replaced discarded 4 of 6 at 0.6 % with the default 1.14, 1 of 8 at 0.5 % with 1.35.
# n64000_r090: --evaluate measured FER <= 1 % at f = 1.26; with 1.30 see VALIDATED_QBER.
# n16000_r092: 1.40, see VALIDATED_QBER (1.30 discarded frames at 0.7 and 0.85 %).
# n64000_r085 and n192000_r091: with the default 1.14, a frame whose error count lay 2-3 sigma
# above the plan's QBER ran out of punctured values, and the payload reveals after them (a
# disclosed bit each, worth far less to the decoder than a syndrome bit) did not save it: it
# was discarded, costing its whole disclosure (benchmarks/bench_reconcile.py rows, 3 seeds
# each, 2026-11-22): n64000_r085 at QBER 2 % 4 of 300 frames discarded, f 1.1448; n192000_r091
# at 1 % 2 of 99, f 1.153, at 1.3 % 3 of 99, f 1.196. With 1.18: 0 of 300, f 1.1163; 0 of 99,
# f 1.115; 0 of 99, f 1.128 (n64000_r085 at 1.75 %: f 1.1222 either way). Raising the default
# instead cost f at 5 and 8 % (n64000_r070 1.0974 -> 1.110, n64000_r055 1.095 -> 1.130: their
# frames could then no longer start low enough) and changed nothing where no frame was lost.
# n16000_r085: benchmarks/bench_reconcile.py rows of 400 frames, 3 seeds each (2026-11-22): at
# QBER 2 % with 1.18 / 1.22 / 1.28 / 1.31 / 1.34, 56 / 18 / 1 / 0 / 0 of 1200 frames discarded,
# f 1.253 / 1.200 / 1.185 / 1.196 / 1.212; at 1.75 %, 1.28: 3 of 1200, f 1.189; 1.31: 0 of 1200,
# f 1.198. (n16000_r080, chosen there before: 0 discarded, f 1.329 at 2 % and 1.477 at 1.75 %.)
# At 1.5 % its frames carry their full payload either way (f 1.231).
REQUIRED_EFFICIENCY: dict[str, float] = {
    "n16000_r085": 1.31,
    "n16000_r092": 1.40,
    "n64000_r085": 1.18,
    "n64000_r090": 1.30,
    "n64000_r095": 1.45,
    "n192000_r091": 1.18,
}


def required_efficiency(name: str) -> float | None:
    """The efficiency a frame's whole syndrome must reach with this code, if it has its own."""
    return REQUIRED_EFFICIENCY.get(name)


def validated_qber(name: str) -> tuple[float, float] | None:
    """The QBER range ``(low, high)`` over which a shipped code was shown to decode, or ``None``."""
    return VALIDATED_QBER.get(name)


@functools.lru_cache(maxsize=64)
def get_code(rate: float, n: int | None = None) -> LdpcCode:
    """Returns the shipped code of lowest design rate at or above ``rate``.

    The rule: among the shipped codes of frame length ``n`` (``DEFAULT_N`` when ``None``), take
    the one whose design rate is the smallest that is ``>= rate``. A code of higher rate discloses
    fewer bits; the caller raises its effective rate by puncturing (fewer syndrome bits sent,
    see :mod:`qkdnode.dsp.reconcile`) or lowers it by shortening (known bits in the frame).

    Args:
        rate: Wanted rate, in ``(0, 1)``.
        n: Wanted frame length, or ``None`` for the default family.

    Returns:
        The code (cached; the same object for repeated calls).

    Raises:
        TypeError: ``rate`` is not a real number or ``n`` not an int.
        ValueError: ``rate`` is outside ``(0, 1)``, or no code of that length has a rate high
            enough (the message names the available lengths and rates).
    """
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.floating):
        raise TypeError(f"rate must be a real number, got {type(rate).__name__}")
    if not 0.0 < float(rate) < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer)):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    length = DEFAULT_N if n is None else int(n)
    candidates = [info for info in available_codes() if info.n == length]
    fitting = [info for info in candidates if info.rate >= float(rate) - _RATE_TOLERANCE]
    if not fitting:
        lengths = sorted({info.n for info in available_codes()})
        rates = [round(info.rate, 4) for info in candidates]
        raise ValueError(
            f"rate: no shipped code with n={length} and rate >= {rate}; "
            f"rates at n={length}: {rates}; lengths available: {lengths}"
        )
    return load_code(min(fitting, key=lambda info: info.rate).name)
