"""Real FFTs of long rows by the four-step method: short batched transforms, one twiddle pass.

A length-``F`` transform with ``F = N1 * N2`` is done as ``N2`` transforms of length ``N1``, a
pointwise twiddle multiplication and ``N1 / 2 + 1`` transforms of length ``N2`` (Bailey's
four-step FFT without the final transpose). The short transforms fit in cache, which a single
1-D transform of 10^7 points does not: numpy's pocketfft then spends most of its time waiting
for memory. Measured on the development machine at ``F ~ 1.5e7``: about 0.17 s per transform
instead of 0.5 s (see ``MIN_LENGTH`` and ``benchmarks/README.md``).

Layout (no transposes): the row ``x`` of length ``F`` is viewed as ``A[n1, n2] = x[N2 n1 + n2]``
(C order, shape ``(N1, N2)``). Then, with ``W_L = exp(-2 pi i / L)``,

    X[k1 + N1 k2] = sum_n2 W_N2^(n2 k2) W_F^(n2 k1) sum_n1 A[n1, n2] W_N1^(n1 k1),

so a real FFT along axis 0 (``k1 <= N1/2``, the rest follows from conjugate symmetry), the
twiddle ``W_F^(n2 k1)`` and a complex FFT along axis 1 give ``S[k1, k2] = X[k1 + N1 k2]`` for
``k1 <= N1/2``. That half determines the whole spectrum of a real row, and a pointwise product of
two such arrays is the same half of the product spectrum, so a cyclic convolution is
``inverse(forward(a) * forward(b))``: the inverse runs the three steps backwards (complex inverse
FFT along axis 1, conjugate twiddle, real inverse FFT along axis 0). Spectra are never needed in
natural order, so they stay in this layout.

Accuracy: this is a mixed-radix Cooley-Tukey factorisation with one explicit twiddle stage per
direction. The twiddles come from the exact integer ``(n2 k1) mod F``: four table entries (each
one rounding of the angle, then ``exp``) multiplied together, so a twiddle is off by at most
about ``beta = (4 + 3 sqrt5) u ~ 11 u`` (relative; ``u`` the unit roundoff) where Percival's
analysis assumes ``beta <= u``. His first-order constant per level is ``3 + 3 sqrt5 + 3 beta/u``:
about 12.7 at ``beta = u``, 43 at ``beta = 11 u``. ``dsp.privacy`` charges 16 per level, so each
of the two twiddle stages is charged as three levels (48), and one more level covers
``ceil(log2 N1) + ceil(log2 N2)`` exceeding ``ceil(log2 F)`` by one: ``EXTRA_LEVELS = 7`` on
top of ``ceil(log2 F)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor

import numba
import numpy as np
import scipy.fft
from numpy.typing import NDArray

__all__ = [
    "EXTRA_LEVELS",
    "MIN_LENGTH",
    "TWIDDLE_BLOCK",
    "FourStepFFT",
    "fft_length",
    "twiddle_kernel",
    "twiddle_reference",
]

# Below this many points a 1-D transform runs from cache and the four-step's extra pass costs
# about what it saves. Forward plus inverse, CPU, at a load of 10: 2**16 points 1.4-1.7 ms
# against 1.3-2.6 ms (1-D), 2**17 2.4 ms against 3.3-6.2 ms, 2**18 5.4-6.1 ms against 12.5 ms,
# 1.5e7 0.35 s against about 1 s.
MIN_LENGTH = 2**17
# Levels charged on top of ceil(log2 F) in the rounding bound: three for each twiddle stage
# (forward, inverse; products of four table entries) and one for the split's ceilings. See the
# module docstring.
EXTRA_LEVELS = 7
# Columns per twiddle block (twiddle_kernel): the first block's twiddles are tabulated per row, so
# the inner loop needs no table gathers; 64-1024 measured alike, 32 slower.
TWIDDLE_BLOCK = 256
# Shortest first-axis length: below it the strided first pass loses its batching.
_MIN_N1 = 64
# N1 ~ sqrt(F) / 4: short strided columns, long contiguous rows (see _split).
_N1_SHRINK = 4


def _split(length: int) -> tuple[int, int]:
    """``(N1, N2)`` with ``N1`` a power of two, about ``sqrt(length) / 4``, ``N1 N2 >= length``.

    The strided first pass is cheapest when its ``N1``-point columns are short (measured,
    interleaved, at ``F ~ 1.5e7``: N1 = 256-512 took 0.35 s for forward plus inverse, 1024 0.42 s,
    2048 0.53 s; at ``F ~ 1.25e6``: 256 best, 0.023 s against 0.037 s for 2048).
    """
    n1 = max(_MIN_N1, 1 << ((math.isqrt(length) // _N1_SHRINK).bit_length() - 1))
    # 5-smooth (real=True): numpy's pocketfft is ~10 % slower per point on radix 7 and 11,
    # measured on rows of 29 400 (= 2^3 3 5^2 7^2) against 30 000 points.
    n2 = scipy.fft.next_fast_len(-(-length // n1), real=True)
    return n1, n2


def fft_length(at_least: int) -> int:
    """The transform length used for a cyclic convolution of at least ``at_least`` points."""
    if at_least < MIN_LENGTH:
        return int(scipy.fft.next_fast_len(at_least, real=True))
    n1, n2 = _split(at_least)
    return n1 * n2


class FourStepFFT:
    """Forward and inverse real FFT of length ``F = N1 * N2`` in the layout described above.

    The twiddles are not stored: ``W_F^r`` for ``r = (k1 n2) mod F`` is formed on the fly from
    two tables of about ``sqrt(F)`` entries each (see :func:`twiddle_kernel`). The tables are
    only read, so one plan can serve several threads, each with its own arrays.

    Args:
        length: ``F``; must be a length :func:`fft_length` returns for four-step sizes.
    """

    def __init__(self, length: int) -> None:
        n1, _ = _split(length)
        # fft_length chose N1 for its own argument; any power-of-two divisor does (the largest
        # one not above this length's choice).
        while n1 > _MIN_N1 and length % n1:
            n1 //= 2
        if length < MIN_LENGTH or length % n1:
            raise ValueError(f"{length} is not a four-step length (use fft_length)")
        n2 = length // n1
        self.length = length
        self.n1 = n1
        self.n2 = n2
        self.lo_bits = ((length - 1).bit_length() + 1) // 2
        lo_size = 1 << self.lo_bits
        hi_size = -(-length // lo_size)
        scale = -2j * np.pi / length
        # Exact integer exponents, one rounding of the angle each.
        self.lo: NDArray[np.complex128] = np.exp(scale * np.arange(lo_size, dtype=np.int64))
        self.hi: NDArray[np.complex128] = np.exp(
            scale * (np.arange(hi_size, dtype=np.int64) << self.lo_bits)
        )

    @property
    def spectrum_shape(self) -> tuple[int, int]:
        """Shape of a spectrum array: ``(N1 // 2 + 1, N2)``."""
        return self.n1 // 2 + 1, self.n2

    def forward(
        self,
        row: NDArray[np.float64],
        out: NDArray[np.complex128],
        pool: Executor | None = None,
    ) -> None:
        """Spectrum of the real ``row`` (length ``F``) into ``out`` (``spectrum_shape``).

        With a ``pool`` (one worker), every pass is split in two halves, one run on the pool and
        one on the calling thread (numpy.fft and the twiddle kernel release the GIL); the
        result is bit-identical to the one-thread run.
        """
        a = row.reshape(self.n1, self.n2)
        _halves(pool, self.n2, lambda c0, c1: np.fft.rfft(a[:, c0:c1], axis=0, out=out[:, c0:c1]))
        _halves(pool, out.shape[0], lambda r0, r1: self._rows(out, r0, r1, inverse=False))

    def inverse(
        self,
        spec: NDArray[np.complex128],
        out: NDArray[np.float64],
        pool: Executor | None = None,
    ) -> None:
        """Real row (length ``F``) of the spectrum ``spec`` into ``out``; ``spec`` is consumed.

        ``pool``: as in :meth:`forward`.
        """
        _halves(pool, spec.shape[0], lambda r0, r1: self._rows(spec, r0, r1, inverse=True))
        o = out.reshape(self.n1, self.n2)
        _halves(
            pool,
            self.n2,
            lambda c0, c1: np.fft.irfft(spec[:, c0:c1], n=self.n1, axis=0, out=o[:, c0:c1]),
        )

    def _rows(self, spec: NDArray[np.complex128], r0: int, r1: int, *, inverse: bool) -> None:
        """The row pass over rows ``[r0, r1)``: twiddles then FFT forward, the reverse inverse."""
        rows = spec[r0:r1]
        if inverse:
            np.fft.ifft(rows, axis=1, out=rows)
        twiddle_kernel(
            rows, self.length, self.lo_bits, self.lo, self.hi, inverse, r0, TWIDDLE_BLOCK
        )
        if not inverse:
            np.fft.fft(rows, axis=1, out=rows)


def _halves(pool: Executor | None, size: int, run: Callable[[int, int], object]) -> None:
    """``run(0, size)``; with a pool, ``run`` on the two halves of ``[0, size)`` at once."""
    if pool is None or size < 2:
        run(0, size)
        return
    mid = size // 2
    other = pool.submit(run, 0, mid)
    run(mid, size)
    other.result()


@numba.njit(cache=True, nogil=True)
def twiddle_kernel(
    spec: NDArray[np.complex128],
    length: int,
    lo_bits: int,
    lo: NDArray[np.complex128],
    hi: NDArray[np.complex128],
    conjugate: bool,
    first_row: int,
    block: int,
) -> None:
    """``spec[i, j] *= W^(k1 j)`` with ``W = exp(-2 pi i / length)``, ``k1 = first_row + i``.

    ``spec`` may be a block of rows of the whole spectrum; ``w`` is conjugated when
    ``conjugate`` is true. ``W^r`` is read as ``hi[r >> lo_bits] * lo[r & mask]`` (tables of about
    ``sqrt(length)`` entries) for ``r = k1 j mod length`` at the first ``block`` columns of a row
    (``p[t]``) and at every ``block``-th column (``b[q]``); ``w = b[q] * p[t]`` for
    ``j = q * block + t``. The inner loop then has no table gathers and vectorises: 13-16 ms
    against 18-21 ms per pass of 7.7e6 points when ``r`` was looked up at every point (a
    memory-bound multiply of the same array takes 8-9 ms). Each twiddle is a product of four
    rounded table entries (three roundings more than one exact ``exp``), within the three error
    levels ``EXTRA_LEVELS`` charges per twiddle pass. ``r`` advances by one subtraction, no division
    in the inner loops. Numba kernel; :func:`twiddle_reference` is its plain-numpy twin.
    """
    mask = (1 << lo_bits) - 1
    sign = -1.0 if conjugate else 1.0
    n_cols = spec.shape[1]
    pr = np.empty(block)
    pi = np.empty(block)
    for i in range(spec.shape[0]):
        step = (first_row + i) % length
        r = 0
        for t in range(min(block, n_cols)):
            w = hi[r >> lo_bits] * lo[r & mask]
            pr[t] = w.real
            pi[t] = sign * w.imag
            r += step
            if r >= length:
                r -= length
        block_step = (step * block) % length
        rb = 0
        for j0 in range(0, n_cols, block):
            b = hi[rb >> lo_bits] * lo[rb & mask]
            br = b.real
            bi = sign * b.imag
            rb += block_step
            if rb >= length:
                rb -= length
            row = spec[i, j0 : min(j0 + block, n_cols)]
            for t in range(row.shape[0]):
                wr = br * pr[t] - bi * pi[t]
                wi = br * pi[t] + bi * pr[t]
                v = row[t]
                row[t] = complex(v.real * wr - v.imag * wi, v.real * wi + v.imag * wr)


def twiddle_reference(
    spec: NDArray[np.complex128],
    length: int,
    lo_bits: int,
    lo: NDArray[np.complex128],
    hi: NDArray[np.complex128],
    conjugate: bool,
    first_row: int,
    block: int,
) -> None:
    """Plain-numpy twin of :func:`twiddle_kernel` (the same products, in the same order)."""
    mask = (1 << lo_bits) - 1
    k1 = first_row + np.arange(spec.shape[0], dtype=np.int64)[:, None]
    j = np.arange(spec.shape[1], dtype=np.int64)[None, :]
    r_first = (k1 * (j % block)) % length  # the first block's exponents, repeated
    r_block = (k1 * (j - j % block)) % length
    p = hi[r_first >> lo_bits] * lo[r_first & mask]
    b = hi[r_block >> lo_bits] * lo[r_block & mask]
    if conjugate:
        p, b = np.conjugate(p), np.conjugate(b)
    w = (b.real * p.real - b.imag * p.imag) + 1j * (b.real * p.imag + b.imag * p.real)
    re = spec.real * w.real - spec.imag * w.imag
    im = spec.real * w.imag + spec.imag * w.real
    spec[...] = re + 1j * im
