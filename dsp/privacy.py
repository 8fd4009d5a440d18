"""Privacy amplification by Toeplitz hashing, computed exactly with floating-point FFTs.

Convention: for an input ``x`` of ``n`` bits and a seed of ``n + m - 1`` bits, ``T`` is the
``m x n`` matrix ``T[i, j] = seed[i - j + n - 1]`` and the hash is ``y = T x mod 2``. Toeplitz
matrices with a uniform seed form a two-universal family, which is what the leftover hash lemma
needs (the final key length comes from ``dsp.estimation``).

How it is computed: ``y[i] = c[i + n - 1] mod 2`` where ``c = seed * x`` is the linear convolution
over the integers. The wanted window of ``c`` is also the same window of the *cyclic* convolution of
any length ``F >= n + m - 1`` (wrap-around only lands below index ``n - 1``), so one real FFT
product of length ``F``, rounded to integers and reduced mod 2, gives ``y``. Large problems are cut
into tiles (a slice of ``x`` against a slice of ``y``, itself a Toeplitz product with a seed window)
whose parities are XORed, which bounds both memory and the FFT length.

Why the rounding is exact: every entry of ``c`` is an integer, so rounding recovers it whenever the
absolute floating-point error is below 1/2. For an FFT-based convolution of real vectors ``a`` and
``b`` of length ``F`` with ``k = ceil(log2 F)`` levels, Percival (Math. Comp. 72, 2003, Thm. 5.1)
bounds the error of every output by
``||a||_2 ||b||_2 ((1+u)^(3k) (1+u*sqrt5)^(3k+1) (1+beta)^(3k) - 1)`` with unit roundoff
``u = 2**-53`` and twiddle-factor error ``beta``; to first order ``(3 + 3*sqrt5 + 3) k u`` for
``beta <= u``, i.e. about ``12.7 k u ||a|| ||b||``. We charge ``FFT_ERROR_PER_LEVEL = 16`` per level
and require the resulting bound to stay below ``ROUNDING_BUDGET = 1/8``, four times inside the 1/2
that rounding tolerates. The norms are the actual ones: ``||x||_2 = sqrt(popcount)``. Caveat:
Percival's theorem is proved for radix-2 transforms; numpy.fft (pocketfft) mixes radix-2/3/4/5
passes with accurately computed twiddles, whose per-level error constants are of the same size,
and the 16 (vs 12.7) plus the factor 4 are the headroom we take for that; it is an engineering
extension of the theorem, not a proof for pocketfft's exact code. For plain 0/1 operands and
``F <= 2**27`` the bound is below ``1e-5``, five orders of magnitude inside 1/2, so the plain path
always qualifies (checked anyway, per tile); the packed path below is the one that uses the
budget, and the tripwire below backs it.

Two outputs per FFT element: when the bound allows it (roughly ``n`` up to a few million), the
seed windows of the two halves of ``y`` are packed into one real operand as
``s_top + 2**b s_bot`` with ``2**b > popcount(x)``. Then ``c = c_top + 2**b c_bot`` with
``0 <= c_top < 2**b``, so the low bit gives ``y_top`` and bit ``b`` gives ``y_bot``, and the FFT
length drops from ``n + m - 1`` to ``n + ceil(m/2) - 1``. The same error bound, with the packed
operand's norm, decides per tile.

Long transforms (``dsp.fourstep.MIN_LENGTH`` points and up) run as four-step FFTs: batched short
transforms that stay in cache, with one twiddle pass per direction, which the bound charges as
``EXTRA_LEVELS`` more levels; shorter ones are single numpy.fft transforms.

As a last line of defence every rounding is also measured: a residual above
``ROUNDING_TRIPWIRE`` raises :class:`~qkdnode.dsp.errors.DistillationError` (it cannot happen
while the bound above holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import numba
import numpy as np
from numpy.typing import NDArray

from ._validate import check_bits
from .errors import DistillationError
from .fourstep import EXTRA_LEVELS, MIN_LENGTH, FourStepFFT, fft_length

__all__ = ["FFTWorkspace", "ToeplitzHasher", "ToeplitzTile", "plan_tiles", "toeplitz_hash"]

# Percival's first-order constant is 3 + 3*sqrt(5) + 3 ~ 12.7 per radix-2 level; 16 leaves room
# for the mixed-radix butterflies of pocketfft (numpy.fft).
FFT_ERROR_PER_LEVEL = 16.0
# Unit roundoff of IEEE double precision.
UNIT_ROUNDOFF = 2.0**-53
# The a-priori error bound must stay below this (rounding is exact below 1/2; 4x margin).
ROUNDING_BUDGET = 0.125
# A measured distance to the nearest integer above this means the arithmetic went wrong.
ROUNDING_TRIPWIRE = 0.25
# Longest FFT per tile. A tile works in about 24 bytes per FFT point: one float64 row and two
# complex128 half spectra, reused across tiles (the four-step FFT's scratch is per batch, small;
# a 1-D numpy.fft transform, used below dsp.fourstep.MIN_LENGTH, takes 16 B/point more while it
# runs). 2**26 points are then ~1.5 GiB, and n = 1e8, m = 5e7 (six tiles of ~5.8e7 points)
# measured 1.8 GiB peak with the caller's arrays, inside a 4 GiB budget.
DEFAULT_MAX_FFT_LEN = 2**26
# With workers=2 the two forward transforms run at once: one more row, ~32 bytes per point.
# Longer tiles split every pass in halves instead (no extra memory), so that the memory bound
# above still holds.
PARALLEL_MAX_FFT_LEN = 2**25


def toeplitz_hash(
    x: NDArray[np.uint8],
    seed: NDArray[np.uint8],
    m: int,
    *,
    max_fft_len: int = DEFAULT_MAX_FFT_LEN,
    workspace: FFTWorkspace | None = None,
    workers: int = 1,
) -> NDArray[np.uint8]:
    """Hash ``x`` with the Toeplitz matrix given by ``seed``: ``y = T x mod 2``.

    ``T[i, j] = seed[i - j + n - 1]`` for ``0 <= i < m``, ``0 <= j < n``. Bit-exact (see the
    module docstring for the error bound that makes the FFT rounding exact).

    Args:
        x: Input bits, uint8 0/1, length ``n >= 1``.
        seed: Seed bits, uint8 0/1, length ``n + m - 1``.
        m: Output length, ``1 <= m <= n``.
        max_fft_len: Longest FFT per tile; bounds memory (about 24 bytes per point).
        workspace: Buffers to reuse across calls of the same size (saves page faults); by
            default fresh buffers are allocated and dropped on return.
        workers: 2 uses two threads: the input's and the seed's forward transforms run at
            once, each on its own row (~32 bytes per point), then at four-step lengths
            (``dsp.fourstep.MIN_LENGTH`` and up) the product, the inverse transform's passes and
            the rounding are split in halves; tiles longer than ``PARALLEL_MAX_FFT_LEN`` split
            every pass in halves instead (no extra memory). Output identical to
            ``workers=1``. The default 1 suits a node whose pool already runs one
            block per core.

    Returns:
        The ``m`` output bits as a new uint8 array.

    Raises:
        TypeError: ``x`` or ``seed`` is not a uint8 numpy array, or ``m`` is not an int.
        ValueError: Wrong seed length, ``m`` out of range, values other than 0/1, bad options.
        DistillationError: The FFT rounding tripwire fired (a numerical fault, never expected).
    """
    xb = check_bits("x", x)
    sb = check_bits("seed", seed)
    if xb.size < 1:
        raise ValueError("x must hold at least one bit")
    m = _check_sizes(xb.size, m, max_fft_len)
    n = xb.size
    if sb.size != n + m - 1:
        raise ValueError(f"seed must have n + m - 1 = {n + m - 1} bits, got {sb.size}")

    if workers not in (1, 2):
        raise ValueError(f"workers must be 1 or 2, got {workers}")

    tiles = plan_tiles(n, m, max_fft_len)
    y = np.zeros(m, dtype=np.uint8)
    cache = workspace.buffers if workspace is not None else {}
    pool = ThreadPoolExecutor(max_workers=1) if workers == 2 else None
    try:
        for tile in tiles:
            xt = xb[tile.x_start : tile.x_start + tile.n]
            st = sb[tile.seed_start : tile.seed_start + tile.n + tile.m - 1]
            weight = int(np.count_nonzero(xt))
            if weight == 0 or not st.any():
                continue
            fft_len, m_top, shift = _plan_operand(tile.n, tile.m, st, weight)
            # The two forward transforms run at once, each whole on one thread (a pass split
            # in halves costs a hand-over per pass, and the halves of a memory-bound pass do
            # not run twice as fast); four-step lengths then split the inverse's passes, and
            # tiles too long for a second row split every pass.
            split = pool if fft_len >= MIN_LENGTH else None
            parallel = pool is not None and fft_len <= PARALLEL_MAX_FFT_LEN
            ws = _workspace(cache, fft_len, with_seed=True, seed_row=parallel)
            assert ws.spec_b is not None
            op = _SeedOperand(ws.spec_b, ws.plan, fft_len, tile.n, tile.m, m_top, shift)
            if parallel and pool is not None and ws.seed_row is not None:
                # The two forward transforms are independent; numpy.fft releases the GIL.
                seed_done = pool.submit(_transform_seed, st, op, ws.seed_row)
                _forward_x(xt, ws)
                seed_done.result()
            else:
                _transform_seed(st, op, ws.real, split)
                _forward_x(xt, ws, split)
            if len(tiles) == 1:
                return _finish(ws, op, split)  # the whole output: no XOR into zeros
            rows = y[tile.y_start : tile.y_start + tile.m]
            rows ^= _finish(ws, op, split)
    finally:
        if pool is not None:
            pool.shutdown()
    return y


def _check_sizes(n: int, m: object, max_fft_len: int) -> int:
    if isinstance(m, bool) or not isinstance(m, int | np.integer):
        raise TypeError(f"m must be an int, got {type(m).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 1 <= m <= n:
        raise ValueError(f"m must satisfy 1 <= m <= n = {n}, got {m}")
    if max_fft_len < 16:
        raise ValueError(f"max_fft_len must be >= 16, got {max_fft_len}")
    return int(m)


class ToeplitzHasher:
    """A Toeplitz hash with a fixed seed: seed spectra computed once, reused for every input.

    Saves one of the three FFTs per tile on each call; holds about 8 bytes per FFT point per tile
    (the spectra) plus one 16-byte-per-point workspace for as long as it lives. Not thread-safe:
    use one hasher per thread. The packing decision assumes inputs of any weight.

    Args:
        seed: Seed bits, uint8 0/1, length ``n + m - 1``.
        n: Input length.
        m: Output length, ``1 <= m <= n``.
        max_fft_len: Longest FFT per tile.

    Raises:
        TypeError, ValueError: As :func:`toeplitz_hash`.
    """

    def __init__(
        self, seed: NDArray[np.uint8], n: int, m: int, *, max_fft_len: int = DEFAULT_MAX_FFT_LEN
    ) -> None:
        sb = check_bits("seed", seed)
        self.m = _check_sizes(n, m, max_fft_len)
        self.n = n
        if sb.size != n + self.m - 1:
            raise ValueError(f"seed must have n + m - 1 = {n + self.m - 1} bits, got {sb.size}")
        self._tiles = plan_tiles(n, self.m, max_fft_len)
        plans: dict[int, FourStepFFT] = {}
        self._ops = [
            _prepare_seed(sb[t.seed_start : t.seed_start + t.n + t.m - 1], t.n, t.m, t.n, plans)
            for t in self._tiles
        ]
        # Kept across calls: fresh buffers would be paid again in page faults on every call.
        self._cache: dict[int, _Workspace] = {}

    def __call__(self, x: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Hash ``x`` (uint8 0/1, length ``n``); same result as :func:`toeplitz_hash`."""
        xb = check_bits("x", x)
        if xb.size != self.n:
            raise ValueError(f"x must have n = {self.n} bits, got {xb.size}")
        y = np.zeros(self.m, dtype=np.uint8)
        for tile, op in zip(self._tiles, self._ops, strict=True):
            xt = xb[tile.x_start : tile.x_start + tile.n]
            if op is not None and xt.any():
                rows = y[tile.y_start : tile.y_start + tile.m]
                rows ^= _apply(xt, op, self._cache)
        return y


class ToeplitzTile:
    """One tile of a tiled Toeplitz product: ``y[y_start:+m] ^= T' x[x_start:+n]``.

    ``T'`` is itself a Toeplitz matrix whose seed is ``seed[seed_start : seed_start + n + m - 1]``.
    """

    __slots__ = ("m", "n", "seed_start", "x_start", "y_start")

    def __init__(self, x_start: int, n: int, y_start: int, m: int, seed_start: int) -> None:
        self.x_start = x_start
        self.n = n
        self.y_start = y_start
        self.m = m
        self.seed_start = seed_start

    def __repr__(self) -> str:
        return (
            f"ToeplitzTile(x_start={self.x_start}, n={self.n}, y_start={self.y_start}, "
            f"m={self.m}, seed_start={self.seed_start})"
        )


def plan_tiles(n: int, m: int, max_fft_len: int) -> list[ToeplitzTile]:
    """Cut an ``m x n`` Toeplitz product into tiles whose cyclic length fits ``max_fft_len``.

    A tile of ``kx`` columns and ``ky`` rows needs ``kx + ky - 1`` FFT points. Rows are split only
    when ``m`` alone exceeds half the budget; columns then take the rest of the budget.

    Args:
        n: Input length.
        m: Output length.
        max_fft_len: Largest allowed ``kx + ky - 1``.

    Returns:
        Tiles covering the matrix exactly once, rows-major.
    """
    if n + m - 1 <= max_fft_len:
        return [ToeplitzTile(0, n, 0, m, 0)]
    q = -(-m // (max_fft_len // 2))
    ky = -(-m // q)
    kx_max = max_fft_len + 1 - ky
    p = -(-n // kx_max)
    kx = -(-n // p)
    tiles = []
    for i0 in range(0, m, ky):
        mt = min(ky, m - i0)
        for j0 in range(0, n, kx):
            nt = min(kx, n - j0)
            # T[i, j] = seed[i - j + n - 1]; the tile's own convention needs seed'[0] at
            # i = i0, j = j0 + nt - 1.
            tiles.append(ToeplitzTile(j0, nt, i0, mt, i0 - j0 - nt + n))
    return tiles


def _error_bound(fft_len: int, norm_a_sq: float, norm_b_sq: float) -> float:
    levels = max(1, math.ceil(math.log2(fft_len)))
    if fft_len >= MIN_LENGTH:
        levels += EXTRA_LEVELS  # the four-step's twiddle stages and split (dsp.fourstep)
    return FFT_ERROR_PER_LEVEL * UNIT_ROUNDOFF * levels * math.sqrt(norm_a_sq * norm_b_sq)


class _SeedOperand:
    """A tile's seed side, transformed: reusable for every input of that tile."""

    __slots__ = ("fft_len", "m", "m_top", "n", "plan", "shift", "spectrum")

    def __init__(
        self,
        spectrum: NDArray[np.complex128],
        plan: FourStepFFT | None,
        fft_len: int,
        n: int,
        m: int,
        m_top: int,
        shift: int,
    ) -> None:
        self.spectrum = spectrum
        self.plan = plan
        self.fft_len = fft_len
        self.n = n
        self.m = m
        self.m_top = m_top  # rows from the low digit; m_top == m means unpacked
        self.shift = shift


class _Workspace:
    """FFT buffers of one length, reused across tiles (fresh pages cost page faults)."""

    __slots__ = ("fft_len", "plan", "real", "seed_row", "spec_b", "spec_x")

    def __init__(self, fft_len: int, plan: FourStepFFT | None = None) -> None:
        self.fft_len = fft_len
        if plan is None and fft_len >= MIN_LENGTH:
            plan = FourStepFFT(fft_len)
        self.plan = plan
        self.real = np.empty(fft_len, dtype=np.float64)
        self.spec_x = _new_spectrum(fft_len, plan)
        self.spec_b: NDArray[np.complex128] | None = None
        self.seed_row: NDArray[np.float64] | None = None  # only for two-thread runs


class FFTWorkspace:
    """FFT buffers a caller keeps to reuse across :func:`toeplitz_hash` calls of the same size.

    Holds about 24 bytes per FFT point of the last length used (32 with ``workers=2``), and at
    four-step lengths the plan's twiddle tables (about ``2 sqrt(F)`` complex entries). Not
    thread-safe: one per thread.
    """

    def __init__(self) -> None:
        self.buffers: dict[int, _Workspace] = {}

    def clear(self) -> None:
        """Drop the buffers."""
        self.buffers.clear()


def _new_spectrum(fft_len: int, plan: FourStepFFT | None) -> NDArray[np.complex128]:
    shape = plan.spectrum_shape if plan is not None else (fft_len // 2 + 1,)
    return np.empty(shape, dtype=np.complex128)


def _rfft(
    plan: FourStepFFT | None,
    row: NDArray[np.float64],
    out: NDArray[np.complex128],
    pool: Executor | None = None,
) -> None:
    """Spectrum of ``row`` into ``out``: four-step above ``MIN_LENGTH``, else one 1-D rfft."""
    if plan is not None:
        plan.forward(row, out, pool)
    else:
        np.fft.rfft(row, out=out)


def _workspace(
    cache: dict[int, _Workspace],
    fft_len: int,
    *,
    with_seed: bool = False,
    seed_row: bool = False,
    plan: FourStepFFT | None = None,
) -> _Workspace:
    """The workspace of ``fft_len``, dropping others (tiles of a call share one or two lengths)."""
    ws = cache.get(fft_len)
    if ws is None:
        cache.clear()
        ws = cache[fft_len] = _Workspace(fft_len, plan)
    if with_seed and ws.spec_b is None:
        ws.spec_b = np.empty_like(ws.spec_x)
    if seed_row and ws.seed_row is None:
        ws.seed_row = np.empty_like(ws.real)
    return ws


def _plan_operand(n: int, m: int, seed: NDArray[np.uint8], max_weight: int) -> tuple[int, int, int]:
    """``(fft_len, m_top, shift)`` for a tile: packed (``m_top < m``) when the bound allows."""
    # Packed variant: rows [0, m_top) from the low digit, [m_top, m) from the high digit.
    m_top = (m + 1) // 2
    shift = max_weight.bit_length()  # 2**shift > max_weight >= every low digit
    # One pass over the seed: the top window is [0, n + m_top - 1), the bottom [m_top, end).
    head, middle, tail = (
        int(np.count_nonzero(part))
        for part in (seed[:m_top], seed[m_top : n + m_top - 1], seed[n + m_top - 1 :])
    )
    if m - m_top > 0:
        fft_len = fft_length(n + m_top - 1)
        w_top = head + middle
        w_bot = middle + tail
        # sum (t + 2^b u)^2 <= w_top + (2^(b+1) + 4^b) w_bot for 0/1 entries t, u
        packed_sq = w_top + (2.0 ** (shift + 1) + 4.0**shift) * w_bot
        if _error_bound(fft_len, max_weight, packed_sq) < ROUNDING_BUDGET:
            return fft_len, m_top, shift
    fft_len = fft_length(n + m - 1)
    if _error_bound(fft_len, max_weight, head + middle + tail) >= ROUNDING_BUDGET:
        # Unreachable for fft_len <= 2**40; kept so that the bound is enforced, not assumed.
        raise ValueError(f"tile of {fft_len} FFT points is too long for exact rounding")
    return fft_len, m, 0


def _prepare_seed(
    seed: NDArray[np.uint8], n: int, m: int, max_weight: int, plans: dict[int, FourStepFFT],
    pool: Executor | None = None,
) -> _SeedOperand | None:
    """Transform a tile's seed (any ``m``, also ``m > n``) into a new spectrum array.

    ``max_weight`` bounds the number of ones of every input this operand will meet (packing is
    chosen by the error bound for that weight). ``plans`` shares four-step plans between tiles of
    one length. With ``pool``, four-step lengths split the transform's passes in halves.
    Returns ``None`` for an all-zero seed.
    """
    if not seed.any():
        return None
    fft_len, m_top, shift = _plan_operand(n, m, seed, max_weight)
    plan = None
    if fft_len >= MIN_LENGTH:
        plan = plans.get(fft_len)
        if plan is None:
            plan = plans[fft_len] = FourStepFFT(fft_len)
    op = _SeedOperand(_new_spectrum(fft_len, plan), plan, fft_len, n, m, m_top, shift)
    _transform_seed(seed, op, np.empty(fft_len, dtype=np.float64),
                    pool if plan is not None else None)
    return op


def _transform_seed(
    seed: NDArray[np.uint8],
    op: _SeedOperand,
    row: NDArray[np.float64],
    pool: Executor | None = None,
) -> None:
    """Fill ``row`` with the (packed) seed operand and write its rfft into ``op.spectrum``."""
    if op.m_top == op.m:
        row[: seed.size] = seed
        row[seed.size :] = 0.0
    else:
        pack_seed_kernel(seed, op.n + op.m_top - 1, op.m_top, float(2**op.shift), row)
    _rfft(op.plan, row, op.spectrum, pool)


def _forward_x(x: NDArray[np.uint8], ws: _Workspace, pool: Executor | None = None) -> None:
    """rfft of zero-padded ``x`` into ``ws.spec_x`` (numpy.fft with ``out=``: no new buffers)."""
    row = ws.real
    row[: x.size] = x
    row[x.size :] = 0.0
    _rfft(ws.plan, row, ws.spec_x, pool)


def _inverse(
    ws: _Workspace, spec_b: NDArray[np.complex128], pool: Executor | None = None
) -> NDArray[np.float64]:
    """Cyclic convolution from the two spectra; a view of the workspace's real buffer.

    Below ``MIN_LENGTH`` numpy.fft's own scratch (16 bytes per point while a transform runs)
    comes on top of the workspace's 24 (one more 8 with two threads); the four-step's is small.
    """
    if pool is not None and ws.plan is not None:
        _split_range(pool, ws.spec_x.shape[0], lambda r0, r1: _multiply(ws.spec_x, spec_b, r0, r1))
    else:
        ws.spec_x *= spec_b
    if ws.plan is not None:
        ws.plan.inverse(ws.spec_x, ws.real, pool)
    else:
        np.fft.irfft(ws.spec_x, ws.fft_len, out=ws.real)
    return ws.real


def _finish(
    ws: _Workspace, op: _SeedOperand, pool: Executor | None = None
) -> NDArray[np.uint8]:
    """Multiply, transform back, round and take the parities of the tile's rows."""
    conv = _inverse(ws, op.spectrum, pool)
    worst = [0.0, 0.0]
    if op.m_top == op.m:
        out = np.empty(op.m, dtype=np.uint8)

        def parity(i0: int, i1: int) -> None:
            worst[i0 > 0] = round_parity_kernel(conv, op.n - 1 + i0, out[i0:i1])

        _split_range(pool, op.m, parity)
        _check_residual(math.nan if math.isnan(sum(worst)) else max(worst))
        return out
    out = np.empty(op.m, dtype=np.uint8)
    lo, hi = out[: op.m_top], out[op.m_top :]  # rows from the low and the high digit

    def split(i0: int, i1: int) -> None:
        worst[i0 > 0] = round_split_kernel(
            conv, op.n - 1 + i0, op.shift, lo[i0:i1], hi[i0:min(i1, hi.size)]
        )

    _split_range(pool, op.m_top, split)
    _check_residual(math.nan if math.isnan(sum(worst)) else max(worst))
    return out


def _multiply(
    spec: NDArray[np.complex128], other: NDArray[np.complex128], r0: int, r1: int
) -> None:
    spec[r0:r1] *= other[r0:r1]


def _split_range(pool: Executor | None, size: int, run: Callable[[int, int], object]) -> None:
    """``run(0, size)``; with a pool, ``run`` on the two halves of ``[0, size)`` at once."""
    if pool is None or size < 2:
        run(0, size)
        return
    mid = size // 2
    other = pool.submit(run, 0, mid)
    run(mid, size)
    other.result()


def _apply(
    x: NDArray[np.uint8], op: _SeedOperand, cache: dict[int, _Workspace]
) -> NDArray[np.uint8]:
    """The tile's product ``T' x`` for a prepared seed operand."""
    ws = _workspace(cache, op.fft_len, plan=op.plan)
    _forward_x(x, ws)
    return _finish(ws, op)


def _check_residual(residual: float) -> None:
    if not residual <= ROUNDING_TRIPWIRE:  # also catches NaN
        raise DistillationError(
            f"FFT rounding residual {residual:.3g} exceeds {ROUNDING_TRIPWIRE}; result discarded"
        )


# --- kernels and their plain-numpy twins -------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def round_parity_kernel(conv: NDArray[np.float64], start: int, out: NDArray[np.uint8]) -> float:
    """Write ``round(conv[start + i]) mod 2`` into ``out``; return the largest rounding residual.

    Numba kernel; :func:`round_parity_reference` is its plain-numpy twin.
    """
    worst = 0.0
    for i in range(out.shape[0]):
        v = conv[start + i]
        r = np.floor(v + 0.5)
        d = abs(v - r)
        if d > worst or d != d:
            worst = d
        out[i] = np.uint8(np.int64(r) & 1)
    return worst


def round_parity_reference(conv: NDArray[np.float64], start: int, out: NDArray[np.uint8]) -> float:
    """Plain-numpy twin of :func:`round_parity_kernel`."""
    window = conv[start : start + out.size]
    r = np.floor(window + 0.5)
    out[:] = (r.astype(np.int64) & 1).astype(np.uint8)
    return float(np.max(np.abs(window - r))) if window.size else 0.0


@numba.njit(cache=True, nogil=True)
def round_split_kernel(
    conv: NDArray[np.float64],
    start: int,
    shift: int,
    lo: NDArray[np.uint8],
    hi: NDArray[np.uint8],
) -> float:
    """Round ``conv[start + i]`` to ``r``; ``lo[i] = r & 1``, ``hi[i] = (r >> shift) & 1``.

    ``hi`` may be shorter than ``lo``. Returns the largest rounding residual. Numba kernel;
    :func:`round_split_reference` is its plain-numpy twin.
    """
    worst = 0.0
    n_hi = hi.shape[0]
    for i in range(lo.shape[0]):
        v = conv[start + i]
        r = np.floor(v + 0.5)
        d = abs(v - r)
        if d > worst or d != d:
            worst = d
        k = np.int64(r)
        lo[i] = np.uint8(k & 1)
        if i < n_hi:
            hi[i] = np.uint8((k >> shift) & 1)
    return worst


@numba.njit(cache=True, nogil=True)
def pack_seed_kernel(
    seed: NDArray[np.uint8], top_len: int, m_top: int, scale: float, row: NDArray[np.float64]
) -> None:
    """``row[i] = seed[i] (i < top_len) + scale * seed[m_top + i]`` (where it exists), else 0.

    Builds the packed operand ``s_top + 2**b s_bot`` in one pass. Numba kernel;
    :func:`pack_seed_reference` is its plain-numpy twin.
    """
    # Four branch-free stretches (both digits, one of them, none) rather than two tests per
    # point: half the time (1.4 -> 0.7 ms at n = 1e6).
    size = row.shape[0]
    top = min(top_len, size)
    bot = min(seed.shape[0] - m_top, size)
    both = min(top, bot)
    for i in range(both):
        row[i] = float(seed[i]) + scale * float(seed[m_top + i])
    for i in range(both, top):
        row[i] = float(seed[i])
    for i in range(both, bot):
        row[i] = scale * float(seed[m_top + i])
    for i in range(max(top, bot), size):
        row[i] = 0.0


def pack_seed_reference(
    seed: NDArray[np.uint8], top_len: int, m_top: int, scale: float, row: NDArray[np.float64]
) -> None:
    """Plain-numpy twin of :func:`pack_seed_kernel`."""
    row[:] = 0.0
    top = seed[: min(top_len, row.size)]
    row[: top.size] = top
    bot = seed[m_top:][: row.size]
    row[: bot.size] += scale * bot.astype(np.float64)


def round_split_reference(
    conv: NDArray[np.float64],
    start: int,
    shift: int,
    lo: NDArray[np.uint8],
    hi: NDArray[np.uint8],
) -> float:
    """Plain-numpy twin of :func:`round_split_kernel`."""
    window = conv[start : start + lo.size]
    r = np.floor(window + 0.5)
    k = r.astype(np.int64)
    lo[:] = (k & 1).astype(np.uint8)
    hi[:] = ((k[: hi.size] >> shift) & 1).astype(np.uint8)
    return float(np.max(np.abs(window - r))) if window.size else 0.0
