"""Syndrome decoding of LDPC codes by layered belief propagation (sum-product or min-sum).

Bob holds a noisy copy ``y`` of Alice's word ``x`` and receives Alice's syndrome ``s = H x``. He
looks for the word closest to his channel evidence whose syndrome is ``s``: ordinary belief
propagation where each check ``c`` constrains the parity of its variables to ``s[c]`` instead of
zero, so the sign of every message leaving check ``c`` is flipped once more when ``s[c] == 1``.

The schedule is *layered* (each check in turn reads the current posteriors and writes them back at
once), which converges in about half the iterations of the flooding schedule. The check update is
one of:

* ``"sum-product-fast"`` (default): sum-product-taylor (below) with the exact messages given
  to every edge whose ``p`` equals the largest or second largest of its check (tied edges all
  get their exact value, so no edge indices are carried), phi's argument clamped at
  ``PHI_FAST_X_MAX`` = 30 (no float underflow on known bits), the phi of each input read
  from a table (:mod:`.phi_table`: 7 mantissa bits, one vector gather per 8 inputs), and, on
  QC codes of ``z >= NARROW_QC_Z``, fused multiply-adds (:mod:`.kernels_qc_fast`; the twin to
  float32 rounding). The table left n384000_r085 at QBER 2 %, f 1.10-1.16, with the same frame
  errors and mean iterations as the computed phi, at 2.2-2.6 ns CPU per edge-iteration
  against 3.0-3.6 (same run).
  In ``reconcile_local`` on every shipped family (n 16 000, 64 000, 192 000; QBER 0.5-8 %, 12
  frames per row, same seeds) it lost no frame and gave the same f as sum-product-taylor to
  within +/-0.001 (a frame whose blind rounds end one round apart, either way), and on
  n64000_r085 at QBER 2 % the same frame errors and iterations at f 1.08-1.16, for about half
  the CPU per edge-iteration on z >= 32 (``benchmarks/bench_decoder.py``);
* ``"sum-product-taylor"``: sum-product with one phi per edge instead of two. With
  ``p_j = phi(|t_j|)`` and ``T`` their sum, the two weakest inputs (largest ``p``) get the exact
  ``phi(T - p)`` and every other edge ``phi(T) + a1 p + a2 p^2``, the expansion of phi at ``T``
  (``p <= T / 3`` there, so the error is third order in a small ratio). On the shipped
  ``n64000_r085`` at QBER 2 % it gave the same frame errors and iterations as exact sum-product
  at f 1.08-1.16 (32 frames each) and the same f, rounds and iterations in blind
  reconciliation (``n192000_r085``, 23 frames), for 20-25 % less CPU per edge-iteration
  (``benchmarks/bench_decoder.py``);
* ``"sum-product"``: exact (to float32) sum-product, ``phi(T - p_i)`` for every edge;
* ``"min-sum"``, corrected by a scale factor (normalised) and/or a subtracted offset: ``|r| =
  max(scale * min - offset, 0)``; cheaper per edge, but it fails every frame of the shipped codes
  near their sum-product thresholds (variable degrees up to 21-66): it is there for codes built
  for it.

Messages are ``float32``. Decoding stops as soon as the hard decisions match the syndrome. The
CSR kernel and the plain twin are in :mod:`.kernels`; quasi-cyclic codes (the shipped family) are
decoded ``z`` checks at a time in vector instructions by :mod:`.kernels_qc` (or, for ``z`` below
``NARROW_QC_Z``, :mod:`.kernels_qc_narrow`), any other code check by check. All of them return
bit for bit what the twin returns, except the fused kernel of sum-product-fast (to rounding).

An optional *stall rule* (``stall_iterations=s``, off by default) stops a decode, unconverged, once
``s`` iterations in a row have not lowered the fewest unsatisfied checks seen so far (each check
counted just after its own layered update, so the count costs no extra pass). It is meant for the
rounds of blind reconciliation, where a stuck frame is better served by more revealed bits than by
the rest of the round's budget, and the next round continues from the same messages: on
``reconcile_local`` at QBER 2 % (n192000_r085) ``s = 3`` halved the iterations per frame
(144 -> 63) for f 1.1289 -> 1.1307 and no lost frame. It is wrong for a last-chance decode: it gives
up on frames that converge late (single decodes of n64000_r085 at f = 1.10: FER 0.31 -> 0.44).
With ``stall_drop=r`` the rule asks for progress at a rate: it also stops when ``s`` iterations
have not cut the unsatisfied checks by a fraction ``r`` of their count at the last mark (the
mark moves only on such a cut), so a round whose count keeps creeping down stops too.

LLR convention: ``llr[v] = log(P(x_v = 0) / P(x_v = 1))``; a negative posterior decides 1, zero
or positive decides 0. A known (shortened) bit gets ``+/-`` a large value, an unknown (punctured)
one 0.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numba
import numpy as np
from numpy.typing import NDArray

from .codes import QcLayout
from .kernels import (
    ALGORITHM_MIN_SUM,
    ALGORITHM_SUM_PRODUCT,
    ALGORITHM_SUM_PRODUCT_FAST,
    ALGORITHM_SUM_PRODUCT_TAYLOR,
    csr_batch_kernel,
    csr_kernel,
    decode_reference,
)
from .kernels_qc import qc_batch_kernel, qc_kernel
from .kernels_qc_fast import qc_fast_batch_kernel, qc_fast_kernel
from .kernels_qc_narrow import qc_narrow_batch_kernel, qc_narrow_kernel
from .phi import PHI_FAST_X_MAX, phi_constants
from .phi_table import PHI_TABLE

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_OFFSET",
    "DEFAULT_SCALE",
    "CheckMajorCode",
    "DecodeResult",
    "decode_syndrome",
    "decode_syndrome_reference",
    "decode_syndromes",
]

# Iteration budget: layered min-sum on the shipped codes converges in 10-30 iterations at the
# operating points of reconciliation; frames that have not converged after 60 almost never do, and
# blind reconciliation then discloses more bits instead of spending more time.
DEFAULT_MAX_ITERATIONS = 60

# Normalisation of min-sum: the minimum over-estimates the true (sum-product) check message; a
# factor of ~0.75-0.8 is the usual optimum for check degrees of 10-60 (Chen and Fossorier, 2002).
DEFAULT_SCALE = 0.78

# Offset min-sum correction, applied after the scale; 0 gives pure normalised min-sum.
DEFAULT_OFFSET = 0.0

# Channel LLRs are clipped to this magnitude: far beyond any channel LLR (|log(q/(1-q))| < 35 for
# q > 1e-15), yet small enough that float32 posteriors (sums of a few such terms) cannot overflow.
LLR_LIMIT = 1e6

# Largest check degree accepted: far above any useful code (the shipped ones stay below 120), and
# it bounds the per-check scratch the kernels allocate.
MAX_CHECK_DEGREE = (1 << 20) - 1

_PHI_CONSTANTS = phi_constants()
_FAST_PHI_CONSTANTS = phi_constants(PHI_FAST_X_MAX)

# Algorithms, as the integer codes the kernel takes.
Algorithm = Literal["sum-product", "sum-product-taylor", "sum-product-fast", "min-sum"]
_ALGORITHM_CODES: dict[str, int] = {
    "min-sum": ALGORITHM_MIN_SUM,
    "sum-product": ALGORITHM_SUM_PRODUCT,
    "sum-product-taylor": ALGORITHM_SUM_PRODUCT_TAYLOR,
    "sum-product-fast": ALGORITHM_SUM_PRODUCT_FAST,
}
DEFAULT_ALGORITHM: Algorithm = "sum-product-fast"

# Liftings below this go to the narrow QC kernel (one loop per base edge and pass), the others to
# the wide one (longer, more numerous loops): on z = 16 loops of z lanes are too short for LLVM's
# unrolled vector bodies (n16000_r080, taylor, same run: 12.7 narrow vs 15.5 wide ns per
# edge-iteration; n64000_r085: 7.0 vs 6.2).
NARROW_QC_Z = 32

# Upper bound on the iteration budget, so that a typo cannot stall a worker for minutes.
MAX_ITERATIONS_LIMIT = 10_000



class CheckMajorCode(Protocol):
    """What the decoder needs of a code (satisfied by :class:`qkdnode.dsp.ldpc.codes.LdpcCode`)."""

    @property
    def n(self) -> int: ...

    @property
    def m(self) -> int: ...

    @property
    def chk_ptr(self) -> NDArray[np.int64]: ...

    @property
    def chk_var(self) -> NDArray[np.int32]: ...


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """Outcome of syndrome decoding.

    For one frame (:func:`decode_syndrome`) the fields are a ``uint8[n]`` array, a bool and an
    int; for a batch (:func:`decode_syndromes`) they are arrays ``uint8[k, n]``, ``bool[k]`` and
    ``int32[k]``.

    Attributes:
        bits: Bob's corrected word (hard decisions of the last iteration).
        converged: Whether the hard decisions satisfy the syndrome. A converged word has exactly
            the requested syndrome; it may still differ from Alice's (verification catches that).
        iterations: Number of full iterations run (0 if the channel word already matched).
    """

    bits: Any
    converged: Any
    iterations: Any


def decode_syndrome_reference(
    chk_ptr: NDArray[np.int64],
    chk_var: NDArray[np.int32],
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.float32],
    max_iterations: int,
    scale: float,
    offset: float,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    messages: NDArray[np.float32] | None = None,
    stall_iterations: int = 0,
    stall_drop: float = 0.0,
) -> tuple[NDArray[np.uint8], int, bool]:
    """Plain-numpy twin of the decoding kernels (see :func:`kernels.decode_reference`).

    ``messages`` (updated in place) are the starting check-to-variable messages, and
    ``stall_iterations`` and ``stall_drop`` the stall rule (0: off), as for
    :func:`decode_syndrome`.

    Returns:
        ``(bits, iterations, converged)``, bit for bit what the compiled kernels return.
    """
    post = np.clip(np.array(llr, dtype=np.float32), -LLR_LIMIT, LLR_LIMIT).astype(np.float32)
    msg = np.zeros(chk_var.shape[0], dtype=np.float32) if messages is None else messages
    return decode_reference(
        chk_ptr, chk_var, syndrome, post, max_iterations, stall_iterations,
        _drop_permille(stall_drop), _ALGORITHM_CODES[algorithm], scale, offset, msg,
    )


def _check_array(name: str, array: object, dtype: type[np.generic], shape: tuple[int, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")


def _check_messages(name: str, messages: object, shape: tuple[int, ...]) -> None:
    _check_array(name, messages, np.float32, shape)
    assert isinstance(messages, np.ndarray)
    if not messages.flags.c_contiguous or not messages.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    # All finite if and only if the float64 sum is: |float32| < 3.5e38, so a sum of fewer than
    # 1e270 finite terms cannot overflow, and an inf or NaN term makes the sum inf or NaN.
    # (One pass and no temporary, unlike np.isfinite(...).all().)
    if not np.isfinite(messages.sum(dtype=np.float64)):
        raise ValueError(f"{name} must be finite")


def _check_code(code: CheckMajorCode) -> None:
    degrees = np.diff(code.chk_ptr)
    if degrees.size and int(degrees.max()) > MAX_CHECK_DEGREE:
        raise ValueError(f"code: check degree above {MAX_CHECK_DEGREE} is not supported")


def _check_parameters(
    max_iterations: int, scale: float, offset: float, algorithm: str, stall: int | None
) -> None:
    if stall is not None and (
        isinstance(stall, bool) or not isinstance(stall, int | np.integer) or stall < 1
    ):
        raise ValueError(f"stall_iterations must be None or an int >= 1, got {stall!r}")
    if algorithm not in _ALGORITHM_CODES:
        raise ValueError(f"algorithm must be one of {sorted(_ALGORITHM_CODES)}, got {algorithm!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int | np.integer):
        raise TypeError(f"max_iterations must be an int, got {type(max_iterations).__name__}")
    if not 0 <= max_iterations <= MAX_ITERATIONS_LIMIT:
        raise ValueError(f"max_iterations must be in [0, {MAX_ITERATIONS_LIMIT}]")
    if not (np.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if not (np.isfinite(offset) and offset >= 0.0):
        raise ValueError(f"offset must be finite and >= 0, got {offset}")


def _drop_permille(stall_drop: float) -> int:
    """The stall rule's required drop, a fraction in ``[0, 1)``, in the kernels' per mille."""
    if isinstance(stall_drop, bool) or not isinstance(stall_drop, int | float | np.floating):
        raise TypeError(f"stall_drop must be a float, got {type(stall_drop).__name__}")
    if not 0.0 <= stall_drop < 1.0:
        raise ValueError(f"stall_drop must be in [0, 1), got {stall_drop!r}")
    return round(float(stall_drop) * 1000)


def _check_llr(name: str, llr: NDArray[Any]) -> None:
    if llr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {llr.dtype}")
    if np.isnan(llr).any():
        raise ValueError(f"{name} must not contain NaN")


def _prepare(
    code: CheckMajorCode,
    syndrome_name: str,
    syndrome: object,
    llr_name: str,
    llr: object,
    messages: NDArray[np.float32] | None,
    batch: tuple[int, ...],
    max_iterations: int,
    scale: float,
    offset: float,
    algorithm: str,
    stall: int | None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Checks the inputs of one decode (``batch == ()``) or of ``k`` (``batch == (k,)``).

    Returns the clipped float32 LLRs and the message array to start from.
    """
    _check_code(code)
    _check_array(syndrome_name, syndrome, np.uint8, (*batch, code.m))
    if not isinstance(llr, np.ndarray):
        raise TypeError(f"{llr_name} must be a numpy array, got {type(llr).__name__}")
    _check_llr(llr_name, llr)
    if llr.shape != (*batch, code.n):
        raise ValueError(f"{llr_name} must have shape {(*batch, code.n)}, got {llr.shape}")
    _check_parameters(max_iterations, scale, offset, algorithm, stall)
    llr32 = np.ascontiguousarray(np.clip(llr, -LLR_LIMIT, LLR_LIMIT), dtype=np.float32)
    edges = code.chk_var.shape[0]
    if messages is None:
        return llr32, np.zeros((*batch, edges), dtype=np.float32)
    _check_messages("messages", messages, (*batch, edges))
    return llr32, messages


def decode_syndrome(
    code: CheckMajorCode,
    syndrome: NDArray[np.uint8],
    llr: NDArray[np.floating[Any]],
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    *,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    scale: float = DEFAULT_SCALE,
    offset: float = DEFAULT_OFFSET,
    messages: NDArray[np.float32] | None = None,
    stall_iterations: int | None = None,
    stall_drop: float = 0.0,
    kernel_order: bool = False,
) -> DecodeResult:
    """Finds the word of syndrome ``syndrome`` most consistent with Bob's channel LLRs.

    Args:
        code: The LDPC code (any object with ``n``, ``m``, ``chk_ptr``, ``chk_var``).
        syndrome: ``uint8[m]``, Alice's syndrome (0/1).
        llr: ``float32[n]`` (or float64, converted) channel log-likelihood ratios of Bob's bits,
            ``log(P(0)/P(1))``; values are clipped to ``+/-LLR_LIMIT``.
        max_iterations: Budget of layered iterations.
        algorithm: ``"sum-product-fast"`` (default), ``"sum-product-taylor"`` (the same
            efficiency on the shipped codes at about 2x the CPU per edge), ``"sum-product"``
            (about 1.25x taylor's; see the module docstring) or ``"min-sum"``
            (normalised/offset; cheaper per edge, but on the shipped codes it decodes only far
            below their sum-product threshold).
        scale: Normalisation factor of min-sum, in ``(0, 1]``.
        offset: Offset of offset min-sum, ``>= 0``.
        messages: Optional ``float32[E]`` check-to-variable messages (check-major edge order) to
            start from, updated in place: pass the array of an earlier failed decode of the same
            frame (after fixing more bits) to continue where it stopped; ``None`` starts cold.
        kernel_order: The ``messages`` are in the decoding kernel's own edge order instead
            (on QC codes, the layer order of :class:`.codes.QcLayout`; check-major otherwise):
            an opaque buffer that only ever goes back to this decoder with the same code and
            ``kernel_order=True``, as between the rounds of blind reconciliation. The
            decode and its results are the same; it saves reordering the messages on the way
            in and out (about 8 ms CPU per frame and call on a 384 000-bit frame here, 17.4 ->
            9.3 ms before the first iteration, the cost of one and a half iterations).
        stall_iterations: ``None`` (default) runs until convergence or ``max_iterations``; an
            int ``s >= 1`` also stops, unconverged, after ``s`` iterations in a row without a
            new low of unsatisfied checks (each check counted just after its update).
        stall_drop: With ``stall_iterations = s``, a fraction ``r`` in ``[0, 1)`` (in steps of
            0.001): the decode also gives up when the unsatisfied checks have not fallen by at
            least ``r`` of their count at the last mark within ``s`` iterations (a count that
            low becomes the new mark). ``0.0`` (default) is the plain stall rule above.

    Returns:
        A :class:`DecodeResult` with ``bits`` ``uint8[n]``, ``converged`` bool, ``iterations`` int.

    Raises:
        TypeError: An array has the wrong type or dtype.
        ValueError: An array has the wrong shape, ``llr`` holds NaN, or a parameter is out of range.
    """
    warm = messages is not None
    llr32, messages = _prepare(code, "syndrome", syndrome, "llr", llr, messages, (),
                               max_iterations, scale, offset, algorithm, stall_iterations)
    stall = (int(stall_iterations or 0), _drop_permille(stall_drop))
    result = _run(code, syndrome[None, :], llr32[None, :], messages[None, :], max_iterations,
                  stall, algorithm, scale, offset, parallel=False, warm=warm,
                  kernel_order=kernel_order)
    return DecodeResult(
        bits=result.bits[0], converged=bool(result.converged[0]),
        iterations=int(result.iterations[0]),
    )


def decode_syndromes(
    code: CheckMajorCode,
    syndromes: NDArray[np.uint8],
    llrs: NDArray[np.floating[Any]],
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    *,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    scale: float = DEFAULT_SCALE,
    offset: float = DEFAULT_OFFSET,
    messages: NDArray[np.float32] | None = None,
    stall_iterations: int | None = None,
    stall_drop: float = 0.0,
    kernel_order: bool = False,
) -> DecodeResult:
    """Decodes ``k`` frames in parallel on all cores (numba ``prange`` over frames).

    Args:
        code: The LDPC code.
        syndromes: ``uint8[k, m]``, one syndrome per frame.
        llrs: ``float32[k, n]`` (or float64), one row of channel LLRs per frame.
        max_iterations: Budget of layered iterations per frame.
        algorithm: ``"sum-product-fast"``, ``"sum-product-taylor"``, ``"sum-product"`` or
            ``"min-sum"`` (see
            :func:`decode_syndrome`).
        scale: Normalisation factor of min-sum, in ``(0, 1]``.
        offset: Offset of offset min-sum, ``>= 0``.
        messages: Optional ``float32[k, E]`` starting messages, updated in place (see
            :func:`decode_syndrome`).
        stall_iterations: Stall rule, as for :func:`decode_syndrome`.
        stall_drop: Its required drop, as for :func:`decode_syndrome`.
        kernel_order: ``messages`` in the kernel's own edge order, as for
            :func:`decode_syndrome`.

    Returns:
        A :class:`DecodeResult` of arrays: ``bits`` ``uint8[k, n]``, ``converged`` ``bool[k]``,
        ``iterations`` ``int32[k]``.

    Raises:
        TypeError: An array has the wrong type or dtype.
        ValueError: Shapes disagree, ``llrs`` holds NaN, or a parameter is out of range.
    """
    if not isinstance(syndromes, np.ndarray) or syndromes.ndim != 2:
        raise TypeError("syndromes must be a 2-d numpy array")
    k = syndromes.shape[0]
    warm = messages is not None
    llrs32, messages = _prepare(code, "syndromes", syndromes, "llrs", llrs, messages, (k,),
                                max_iterations, scale, offset, algorithm, stall_iterations)
    stall = (int(stall_iterations or 0), _drop_permille(stall_drop))
    return _run(code, syndromes, llrs32, messages, max_iterations, stall, algorithm,
                scale, offset, parallel=True, warm=warm, kernel_order=kernel_order)


@functools.lru_cache(maxsize=8)
def _identity_edges(edges: int) -> NDArray[np.int64]:
    """``0 .. edges-1`` (read-only): the edge map of messages already in the kernel's order."""
    identity = np.arange(edges, dtype=np.int64)
    identity.setflags(write=False)
    return identity


def _run(
    code: CheckMajorCode,
    syndromes: NDArray[np.uint8],
    llrs: NDArray[np.float32],
    messages: NDArray[np.float32],
    max_iterations: int,
    stall: tuple[int, int],
    algorithm: str,
    scale: float,
    offset: float,
    parallel: bool,
    warm: bool = True,
    kernel_order: bool = False,
) -> DecodeResult:
    """Runs a QC kernel when the code has a :class:`QcLayout` (the narrow one below
    ``NARROW_QC_Z``), else the CSR kernel. ``warm=False`` (the caller passed no messages, so
    ``messages`` are zeros nobody reads back) lets the fused kernel skip loading and storing
    them. With ``kernel_order`` the QC kernels take the messages in their own order: the
    check-major map they permute through is the identity."""
    k = syndromes.shape[0]
    bits = np.empty((k, code.n), dtype=np.uint8)
    converged = np.zeros(k, dtype=np.bool_)
    iterations = np.zeros(k, dtype=np.int32)
    if k == 0:
        return DecodeResult(bits=bits, converged=converged, iterations=iterations)
    common = (int(max_iterations), stall[0], stall[1], _ALGORITHM_CODES[algorithm],
              np.float32(scale), np.float32(offset),
              _FAST_PHI_CONSTANTS if algorithm == "sum-product-fast" else _PHI_CONSTANTS,
              PHI_TABLE)
    synd = np.ascontiguousarray(syndromes)
    qc: QcLayout | None = getattr(code, "qc", None)
    if qc is not None and qc.z >= NARROW_QC_Z and algorithm == "sum-product-fast":
        # Its own wide QC kernel (fused multiply-adds), which takes no algorithm, scale or
        # offset; on narrow codes the narrow kernel runs it (bit for bit as the twin). With
        # kernel_order it updates the caller's messages where they are.
        _run_fast(qc, synd, llrs, messages, common[:3], warm, bits, converged, iterations,
                  parallel, in_place=kernel_order)
        return DecodeResult(bits=bits, converged=converged, iterations=iterations)
    if qc is not None and kernel_order:
        qc = dataclasses.replace(qc, csr_edge=_identity_edges(qc.csr_edge.shape[0]))
    narrow = qc is not None and qc.z < NARROW_QC_Z
    # (Typed loosely: the narrow kernels take one argument more, the phi table.)
    single: Callable[..., Any] = qc_narrow_kernel if narrow else qc_kernel
    batch: Callable[..., Any] = qc_narrow_batch_kernel if narrow else qc_batch_kernel
    # The wide QC kernel runs no sum-product-fast (that is _run_fast): no phi table argument.
    qc_common: tuple[Any, ...] = common if narrow else common[:-1]
    if parallel:
        # Frames take from a few to max_iterations iterations: threads take one frame at a time
        # (chunk size 1) rather than equal shares fixed in advance, which leave a core idle
        # while the other finishes its slow frames. (Set here: the with-block form inside the
        # kernel cannot be cached.)
        chunksize = numba.get_parallel_chunksize()
        numba.set_parallel_chunksize(1)
        try:
            if qc is None:
                csr_batch_kernel(code.chk_ptr, code.chk_var, synd, llrs, *common, messages, bits,
                                 converged, iterations)
            else:
                batch(qc.z, qc.layer_ptr, qc.layer_col, qc.layer_shift, qc.csr_edge, synd, llrs,
                      *qc_common, messages, bits, converged, iterations)
        finally:
            numba.set_parallel_chunksize(chunksize)
        return DecodeResult(bits=bits, converged=converged, iterations=iterations)
    # One frame at a time on this thread. The QC kernel permutes the (check-major) messages to
    # its layer order and back itself: no copies of the k x E message array here.
    for f in range(k):
        if qc is None:
            iterations[f], converged[f] = csr_kernel(
                code.chk_ptr, code.chk_var, synd[f], llrs[f], *common, messages[f], bits[f]
            )
        else:
            iterations[f], converged[f] = single(
                qc.z, qc.layer_ptr, qc.layer_col, qc.layer_shift, qc.csr_edge, synd[f], llrs[f],
                *qc_common, messages[f], bits[f],
            )
    return DecodeResult(bits=bits, converged=converged, iterations=iterations)


def _run_fast(
    qc: QcLayout,
    synd: NDArray[np.uint8],
    llrs: NDArray[np.float32],
    messages: NDArray[np.float32],
    budget: tuple[int, int, int],
    warm: bool,
    bits: NDArray[np.uint8],
    converged: NDArray[np.bool_],
    iterations: NDArray[np.int32],
    parallel: bool,
    in_place: bool = False,
) -> None:
    """``"sum-product-fast"`` on a wide QC code: :mod:`.kernels_qc_fast`, in parallel (one frame per
    thread at a time, as in :func:`_run`) or frame by frame on this thread."""
    max_iterations, stall, drop = budget
    layout = (qc.z, qc.layer_ptr, qc.layer_col, qc.layer_shift, qc.csr_edge)
    if parallel:
        chunksize = numba.get_parallel_chunksize()
        numba.set_parallel_chunksize(1)
        try:
            qc_fast_batch_kernel(*layout, synd, llrs, max_iterations, stall, drop,
                                 _FAST_PHI_CONSTANTS, PHI_TABLE, messages, warm, bits, converged,
                                 iterations, in_place)
        finally:
            numba.set_parallel_chunksize(chunksize)
        return
    for f in range(synd.shape[0]):
        iterations[f], converged[f] = qc_fast_kernel(
            *layout, synd[f], llrs[f], max_iterations, stall, drop, _FAST_PHI_CONSTANTS,
            PHI_TABLE, messages[f], warm, bits[f], in_place,
        )
