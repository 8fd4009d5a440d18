"""Two inputs hashed with one Toeplitz seed in one FFT product (both ends of a simulated link).

``toeplitz_hash_pair(x1, x2, seed, m)`` returns ``(T x1 mod 2, T x2 mod 2)``, bit-exact, for the
convention of :mod:`qkdnode.dsp.privacy`. Where the rounding bound allows, the two inputs share
one real operand ``x1 + 2^b x2`` with ``2^b > popcount(x1)``, ``b >= 1``: the convolution is
``c1 + 2^b c2`` with ``0 <= c1 < 2^b``, so the low bit of each rounded value is ``y1`` and bit
``b`` is ``y2`` (the same digit argument as the module's seed packing, on the input side). One
seed transform, one input transform and one inverse replace the five transforms of two
separate hashes sharing a seed; the bound is the module's (Percival's, with its headroom and the
four-step levels) evaluated with the packed input's norm, per tile.

A tile the bound rejects (every tile of a block of a few Mbit: ``2^b`` then exceeds what
float64 holds exactly) shares the seed's transform instead: the seed is transformed once, and
the two inputs' products (forward transform, product, inverse, rounding) run at once on two
threads (numpy.fft and the rounding kernel release the GIL), at four-step lengths up to
``PAIR_PARALLEL_MAX_FFT_LEN`` points; other tiles are hashed twice with
:func:`~qkdnode.dsp.privacy.toeplitz_hash`. 3.9 Mbit, m = 0.29 n (a 4 Mbit block of the chain at
QBER 2 %), wall (CPU): 0.376 s (0.37) as two separate hashes, 0.175-0.19 s (0.31-0.36) so.

Equal inputs, which both ends' reconciled bits are whenever verification passed, are hashed
once by :func:`~qkdnode.dsp.privacy.toeplitz_hash` with ``workers=2`` (32 bytes per point) and
the result copied: the same outputs, about 60 % of the CPU. 3.9 Mbit, m = 0.29 n (load 0.5,
three runs): 0.17-0.29 s wall, 0.31-0.49 s CPU as a shared-seed pair; 0.105-0.146 s wall,
0.19-0.24 s CPU so.

A node hashes only its own bits; this is for :func:`qkdnode.dsp.distill.distill_local`, which
runs both ends in one process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from ._validate import check_bits
from .fourstep import MIN_LENGTH, FourStepFFT, fft_length
from .privacy import (
    DEFAULT_MAX_FFT_LEN,
    ROUNDING_BUDGET,
    ToeplitzTile,
    _apply,
    _check_residual,
    _check_sizes,
    _error_bound,
    _inverse,
    _prepare_seed,
    _rfft,
    _SeedOperand,
    _transform_seed,
    _Workspace,
    _workspace,
    plan_tiles,
    round_split_kernel,
    toeplitz_hash,
)

__all__ = ["PAIR_PARALLEL_MAX_FFT_LEN", "toeplitz_hash_pair"]

# Longest tile whose two products share the seed's transform and run on two threads: the seed's
# half spectrum (8 bytes per point), one workspace per thread (a float64 row and a half spectrum,
# 16 each; 24 for the first if packed tiles of that length left their seed spectrum in it) and
# the seed's row while it is transformed (8): 40-56 bytes per point, at most 0.9 GiB at this
# length (measured 40.5: 633 MiB above the inputs at n = 1.25e7, m = 0.29 n, 1.6e7 points,
# against 24.4 for two toeplitz_hash calls). Longer tiles are hashed one input after the other
# by toeplitz_hash (24 bytes per point, its memory bound); tiles shorter than a four-step
# transform too (no gain).
PAIR_PARALLEL_MAX_FFT_LEN = 2**24


def toeplitz_hash_pair(
    x1: NDArray[np.uint8],
    x2: NDArray[np.uint8],
    seed: NDArray[np.uint8],
    m: int,
    *,
    max_fft_len: int = DEFAULT_MAX_FFT_LEN,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """``(T x1 mod 2, T x2 mod 2)`` with ``T[i, j] = seed[i - j + n - 1]``, as two new arrays.

    Args:
        x1: First input, uint8 0/1, length ``n >= 1``.
        x2: Second input, the same length.
        seed: Seed bits, uint8 0/1, length ``n + m - 1``.
        m: Output length, ``1 <= m <= n``.
        max_fft_len: Longest FFT per tile (about 24 bytes per point; 40-56 for tiles that
            share the seed's transform on two threads, see ``PAIR_PARALLEL_MAX_FFT_LEN``;
            equal inputs: 32 for tiles up to ``privacy.PARALLEL_MAX_FFT_LEN``, as
            ``toeplitz_hash`` with ``workers=2``).

    Returns:
        The two ``m``-bit outputs; each equals ``toeplitz_hash(x, seed, m)`` of its input.

    Raises:
        TypeError, ValueError: As :func:`~qkdnode.dsp.privacy.toeplitz_hash`, and inputs of
            different lengths.
        DistillationError: The FFT rounding tripwire fired (a numerical fault, never expected).
    """
    a = check_bits("x1", x1)
    b = check_bits("x2", x2)
    sb = check_bits("seed", seed)
    if a.size < 1:
        raise ValueError("x1 must hold at least one bit")
    if b.size != a.size:
        raise ValueError(f"x2 must have the length of x1 ({a.size}), got {b.size}")
    n = a.size
    m = _check_sizes(n, m, max_fft_len)
    if sb.size != n + m - 1:
        raise ValueError(f"seed must have n + m - 1 = {n + m - 1} bits, got {sb.size}")

    if np.array_equal(a, b):
        # Equal inputs (both ends of a frame set whose reconciliation succeeded: the usual
        # case) have equal hashes: one product, on two threads.
        y = toeplitz_hash(a, sb, m, max_fft_len=max_fft_len, workers=2)
        return y, y.copy()
    y1 = np.zeros(m, dtype=np.uint8)
    y2 = np.zeros(m, dtype=np.uint8)
    cache: dict[int, _Workspace] = {}
    other_cache: dict[int, _Workspace] = {}
    plans: dict[int, FourStepFFT] = {}
    # The pool starts its thread only when a tile first submits work to it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        for tile in plan_tiles(n, m, max_fft_len):
            _pair_tile(a, b, sb, tile, y1, y2, cache, other_cache, plans, pool, max_fft_len)
    return y1, y2


def _pair_tile(
    a: NDArray[np.uint8],
    b: NDArray[np.uint8],
    sb: NDArray[np.uint8],
    tile: ToeplitzTile,
    y1: NDArray[np.uint8],
    y2: NDArray[np.uint8],
    cache: dict[int, _Workspace],
    other_cache: dict[int, _Workspace],
    plans: dict[int, FourStepFFT],
    pool: ThreadPoolExecutor,
    max_fft_len: int,
) -> None:
    """XORs one tile's products into ``y1`` and ``y2``."""
    at = a[tile.x_start : tile.x_start + tile.n]
    bt = b[tile.x_start : tile.x_start + tile.n]
    st = sb[tile.seed_start : tile.seed_start + tile.n + tile.m - 1]
    rows = slice(tile.y_start, tile.y_start + tile.m)
    w1, w2, w_seed = (int(np.count_nonzero(v)) for v in (at, bt, st))
    if w_seed == 0 or w1 + w2 == 0:
        return
    fft_len = fft_length(tile.n + tile.m - 1)
    # 2**shift > w1 >= every entry of T' at1, and shift >= 1 so that bit 0 is c1's alone.
    shift = max(1, w1.bit_length())
    # sum (u + 2^b v)^2 <= w1 + (2^(b+1) + 4^b) w2 for 0/1 entries u, v
    packed_sq = w1 + (2.0 ** (shift + 1) + 4.0**shift) * w2
    if _error_bound(fft_len, packed_sq, w_seed) >= ROUNDING_BUDGET:
        if not MIN_LENGTH <= fft_len <= PAIR_PARALLEL_MAX_FFT_LEN:
            # Short tiles gain nothing from threads; long ones keep toeplitz_hash's memory.
            y1[rows] ^= toeplitz_hash(at, st, tile.m, max_fft_len=max_fft_len)
            y2[rows] ^= toeplitz_hash(bt, st, tile.m, max_fft_len=max_fft_len)
            return
        # One seed transform for both inputs, then their products at once.
        op = _prepare_seed(st, tile.n, tile.m, max(w1, w2), plans, pool)
        if op is None:
            return
        other = pool.submit(_apply, bt, op, other_cache)
        y1[rows] ^= _apply(at, op, cache)
        y2[rows] ^= other.result()
        return
    ws = _workspace(cache, fft_len, with_seed=True)
    assert ws.spec_b is not None
    op = _SeedOperand(ws.spec_b, ws.plan, fft_len, tile.n, tile.m, tile.m, 0)
    _transform_seed(st, op, ws.real)
    row = ws.real
    row[: tile.n] = bt
    row[: tile.n] *= 2.0**shift
    row[: tile.n] += at
    row[tile.n :] = 0.0
    _rfft(ws.plan, row, ws.spec_x)
    conv = _inverse(ws, op.spectrum)
    lo = np.empty(tile.m, dtype=np.uint8)
    hi = np.empty(tile.m, dtype=np.uint8)
    _check_residual(round_split_kernel(conv, tile.n - 1, shift, lo, hi))
    y1[rows] ^= lo
    y2[rows] ^= hi
