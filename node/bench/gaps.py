"""Inter-arrival (gap) statistics of one free-running detector: the estimators behind the
``dark-counts``, ``afterpulsing`` and ``dead-time`` procedures.

Model (PHYSICS.md, event-level detector model): uncorrelated clicks (dark counts, or photons of
a weak continuous-looking pulse train) form a Poisson process of rate ``r``; after each click
the detector is dead for ``d`` (non-paralysable), and with probability ``p`` it afterpulses at
``d + Exp(tau)`` after the click. By the exponential's lack of memory the gap ``g`` from one
click to the next is, beyond the dead time (``s = g - d >= 0``), the mixture

    f(s) = (1 - q) r exp(-r s) + q (r + lam) exp(-(r + lam) s),   lam = 1 / tau

where ``q`` is the probability that an afterpulse is pending when the dead time ends: the
click's own (``p``), or one left over from the click before that survived this click's dead
time. With ``rho = r exp(-lam d) / (r + lam)`` (an earlier afterpulse loses the race to a
Poisson click, then outlives the dead time) the stationary ``q = 1 - (1 - p)(1 - q rho)``, so

    p = 1 - (1 - q) / (1 - q rho).

Estimators:

* ``d``: the histogram's cutoff, the smallest gap, less its expected excess ``1 / (N f(0))``
  (the minimum of N draws of a density starting at ``f(0)``); standard uncertainty
  ``1 / (N f(0))`` with the timing uncertainty of a gap in quadrature.
* ``r, q, lam``: maximum likelihood on the gaps beyond ``d``; covariance from the outer product
  of the per-gap scores (the BHHH estimate of the inverse Fisher information). ``p`` and its
  uncertainty by the delta method. With no significant afterpulse component the model falls
  back to the single exponential (``r = N / sum s``, ``u(r) = r / sqrt(N)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

__all__ = ["GapFit", "cutoff_on_slot_grid", "fit_gaps", "mixture_density", "primary_rate"]

# Fewest gaps a fit accepts: below this the asymptotic (Fisher) uncertainties mean little.
MIN_GAPS = 50
# An afterpulse fraction below this, or one whose uncertainty exceeds it, is taken as absent
# (the mixture's lam is then not identifiable).
MIN_AFTERPULSE_FRACTION = 1e-4
# EM stops when an iteration gains less log-likelihood than this, or after this many steps.
EM_TOLERANCE = 1e-6
MAX_EM_ITERATIONS = 200
# The cutoff posterior is evaluated where its log is above -POSTERIOR_SPAN (e^-50: nothing
# beyond matters to a mean or a standard deviation), on at most POSTERIOR_POINTS points, each
# at most a tenth of the comb's width or of the posterior's exponential scale.
POSTERIOR_SPAN = 50.0
POSTERIOR_POINTS = 200_000
# The Gaussians of the photon comb are summed over this many widths either side of a point;
# a comb whose width spans this many periods is flat (a continuous-looking source).
COMB_SIGMAS = 8.0
FLAT_COMB_PERIODS = 20.0
# Gaps farther than this many comb widths from every tooth end on a continuous-time click
# (an afterpulse or a dark count): their density over EDGE_WINDOW_PERIODS slot periods beyond
# the smallest gap is the continuous hazard at the edge (an afterpulse tail of 200 ns decays by
# 5 % over 20 periods of 1 ns). With less than MIN_OFF_TEETH of the period between teeth the
# comb is taken as flat.
TOOTH_SIGMAS = 4.0
EDGE_WINDOW_PERIODS = 20
MIN_OFF_TEETH = 0.2


@dataclass(frozen=True, slots=True)
class GapFit:
    """The fitted gap model of one channel (times in s, rates in Hz).

    Attributes:
        n_gaps: gaps used.
        dead_time_s, u_dead_time_s: ``d`` and its standard uncertainty.
        rate_hz, u_rate_hz: the uncorrelated click rate ``r``.
        q, u_q: the fraction of gaps ending in an afterpulse race (see module docstring).
        lam_hz, u_lam_hz: the afterpulse decay rate ``1 / tau`` (nan without afterpulses).
        afterpulse_probability, u_afterpulse_probability: ``p`` per click.
        covariance: covariance of (r, q, lam) (zeros for q and lam without afterpulses).
    """

    n_gaps: int
    dead_time_s: float
    u_dead_time_s: float
    rate_hz: float
    u_rate_hz: float
    q: float
    u_q: float
    lam_hz: float
    u_lam_hz: float
    afterpulse_probability: float
    u_afterpulse_probability: float
    covariance: tuple[tuple[float, ...], ...]


def mixture_density(s: NDArray[np.float64], r: float, q: float, lam: float
                    ) -> NDArray[np.float64]:
    """``f(s)`` of the module docstring (per second), for gaps ``s >= 0`` beyond the dead time."""
    b = r + lam
    return np.asarray((1.0 - q) * r * np.exp(-r * s) + q * b * np.exp(-b * s))


def _scores(s: NDArray[np.float64], r: float, q: float, lam: float) -> NDArray[np.float64]:
    """Per-gap gradient of log f with respect to (r, q, lam): shape (n, 3)."""
    b = r + lam
    ea = np.exp(-r * s)
    eb = np.exp(-b * s)
    f = (1.0 - q) * r * ea + q * b * eb
    d_r = (1.0 - q) * (1.0 - r * s) * ea + q * (1.0 - b * s) * eb
    d_q = -r * ea + b * eb
    d_lam = q * (1.0 - b * s) * eb
    return np.stack([d_r, d_q, d_lam], axis=1) / f[:, None]


def _fit_mixture(s: NDArray[np.float64]) -> tuple[float, float, float]:
    """Maximum-likelihood (r, q, lam) on gaps ``s`` (s) by expectation-maximisation.

    The model is a two-component exponential mixture whose faster component is the
    afterpulse race (rate ``r + lam``); EM climbs the likelihood monotonically from starts
    at the histogram's short end, and the best of them is kept.
    """
    n = s.size
    mean = float(s.mean())
    short = np.sort(s)[: max(n // 20, 2)]
    starts = [1.0 / max(float(short.mean()), mean * 1e-9)]
    starts += [starts[0] * 10.0, 10.0 / mean]
    best: tuple[float, float, float, float] | None = None
    for b0 in starts:
        a, b, w = 1.0 / mean, max(b0, 2.0 / mean), 0.1
        ll = -math.inf
        for _ in range(MAX_EM_ITERATIONS):
            pa = (1.0 - w) * a * np.exp(-a * s)
            pb = w * b * np.exp(-b * s)
            total = np.maximum(pa + pb, 1e-300)
            new_ll = float(np.sum(np.log(total)))
            resp = pb / total
            w = float(resp.mean())
            if w < MIN_AFTERPULSE_FRACTION / 10 or w >= 1.0:
                break  # no afterpulse component: the single exponential takes over
            a = float((1.0 - resp).sum() / max(float(((1.0 - resp) * s).sum()), 1e-300))
            b = float(resp.sum() / max(float((resp * s).sum()), 1e-300))
            if new_ll - ll < EM_TOLERANCE:
                break
            ll = new_ll
        if b < a:  # the components swapped: the faster one is the afterpulse race
            a, b, w = b, a, 1.0 - w
        if best is None or ll > best[0]:
            best = (ll, a, w, b - a)
    assert best is not None
    _, a, w, lam = best
    if w < MIN_AFTERPULSE_FRACTION / 10 or not lam > 0:
        return a, w, lam
    return _polish(s, a, w, lam)


def _polish(s: NDArray[np.float64], r: float, q: float, lam: float
            ) -> tuple[float, float, float]:
    """Newton-type (L-BFGS) steps from EM's point to the likelihood's maximum.

    EM slows down where the components overlap; the analytic score makes the last steps cheap.
    Parameters are (log r, logit q, log lam), so every step stays in the model's domain.
    """
    x0 = np.array([math.log(r), math.log(q / (1.0 - q)), math.log(lam)])

    def unpack(x: NDArray[np.float64]) -> tuple[float, float, float]:
        return math.exp(x[0]), 1.0 / (1.0 + math.exp(-x[1])), math.exp(x[2])

    def nll(x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        rr, qq, ll = unpack(x)
        f = mixture_density(s, rr, qq, ll)
        grad = _scores(s, rr, qq, ll).sum(axis=0)
        jac = np.array([rr, qq * (1.0 - qq), ll])
        return float(-np.sum(np.log(np.maximum(f, 1e-300)))), -grad * jac

    res = minimize(nll, x0, jac=True, method="L-BFGS-B",
                   bounds=[(x0[0] - 5, x0[0] + 5), (-30.0, 30.0), (x0[2] - 5, x0[2] + 5)])
    if not res.fun <= nll(x0)[0]:
        return r, q, lam
    return unpack(res.x)


def _p_from_q(r: float, q: float, lam: float, d: float) -> float:
    rho = r * math.exp(-lam * d) / (r + lam)
    return 1.0 - (1.0 - q) / (1.0 - q * rho)


def fit_gaps(timestamps_ps: NDArray[np.int64], timing_rms_ps: float = 100.0) -> GapFit:
    """Fits the gap model to one channel's time-ordered tags.

    Args:
        timestamps_ps: one channel's tags, ps, non-decreasing, from one continuous acquisition.
        timing_rms_ps: RMS timing uncertainty of one tag (detector and tagger jitter, the
            tagger's resolution), ps: enters the dead time's uncertainty.

    Raises:
        ValueError: fewer than :data:`MIN_GAPS` gaps, or tags out of order.
    """
    t = np.asarray(timestamps_ps, dtype=np.int64)
    gaps_ps = np.diff(t)
    if gaps_ps.size < MIN_GAPS:
        raise ValueError(f"{gaps_ps.size} gaps are too few for the gap model (need at least "
                         f"{MIN_GAPS}): acquire longer or with more light")
    if np.any(gaps_ps < 0):
        raise ValueError("timestamps are not in time order")
    g = gaps_ps.astype(np.float64) * 1e-12
    n = g.size
    g_min = float(g.min())
    s_all = g - g_min
    r, q, lam = _fit_mixture(s_all)
    cov = np.zeros((3, 3))
    with_ap = q > MIN_AFTERPULSE_FRACTION and lam > r
    if with_ap:
        # In relative units (r, q, lam differ by orders of magnitude) the information
        # matrix is well conditioned exactly when the parameters are identifiable.
        x = np.array([r, q, lam])
        sc = _scores(s_all, r, q, lam) * x
        info = sc.T @ sc
        cond = np.linalg.cond(info)
        if math.isfinite(cond) and cond < 1e12:
            with np.errstate(over="ignore", invalid="ignore"):
                cov = np.linalg.inv(info) * np.outer(x, x)
            with_ap = bool(np.all(np.isfinite(cov))) and (
                math.sqrt(max(cov[1, 1], 0.0)) < max(q, MIN_AFTERPULSE_FRACTION))
        else:
            with_ap = False
    if not with_ap:
        r = n / float(s_all.sum())
        q, lam = 0.0, math.nan
        cov = np.zeros((3, 3))
        cov[0, 0] = r * r / n
    f0 = (1.0 - q) * r + (q * (r + lam) if with_ap else 0.0)
    excess = 1.0 / (n * f0)
    dead = g_min - excess
    u_dead = math.hypot(excess, math.sqrt(2.0) * timing_rms_ps * 1e-12)
    if with_ap:
        p = _p_from_q(r, q, lam, dead)
        grad = np.zeros(3)
        x = np.array([r, q, lam])
        for i in range(3):
            h = max(abs(x[i]) * 1e-6, 1e-12)
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            grad[i] = (_p_from_q(xp[0], xp[1], xp[2], dead)
                       - _p_from_q(xm[0], xm[1], xm[2], dead)) / (2 * h)
        u_p = math.sqrt(max(float(grad @ cov @ grad), 0.0))
    else:
        p, u_p = 0.0, 0.0
    return GapFit(
        n_gaps=n, dead_time_s=dead, u_dead_time_s=u_dead,
        rate_hz=r, u_rate_hz=math.sqrt(max(cov[0, 0], 0.0)),
        q=q, u_q=math.sqrt(max(cov[1, 1], 0.0)),
        lam_hz=lam, u_lam_hz=math.sqrt(max(cov[2, 2], 0.0)) if with_ap else math.nan,
        afterpulse_probability=p, u_afterpulse_probability=u_p,
        covariance=tuple(tuple(float(v) for v in row) for row in cov))


def primary_rate(count_rate_hz: float, u_count_rate_hz: float, fit: GapFit
                 ) -> tuple[float, float]:
    """The uncorrelated (Poisson) rate behind a plain count rate of sparse clicks, Hz.

    A dark-count rate measured by counting (light blocked) includes each dark count's
    afterpulses: a click is followed by one with probability ``p``, so a primary click brings
    ``1 / (1 - p)`` clicks on average, and the dead time ``d`` after each click hides ``m d`` of
    the time. The gap model's rate ``r`` of the same detector under light excludes both, so what
    is subtracted from it must too: ``r_dc = m (1 - p) / (1 - m d)``, with ``p`` and ``d`` from
    the detector's gap fit ``fit``. Counting the afterpulses as dark counts took
    ``m p`` too much (an efficiency of 0.6 read 1.4 % low at ``p`` = 0.15 and 3 kHz of dark
    counts).

    Returns:
        ``(r_dc, u(r_dc))``, ``u`` from ``u(m)`` and ``u(p)``.

    Raises:
        ValueError: a count rate so high that the dead time covers the whole time.
    """
    m, p, d = count_rate_hz, fit.afterpulse_probability, fit.dead_time_s
    live = 1.0 - m * max(d, 0.0)
    if not live > 0.0:
        raise ValueError(f"a count rate of {m:.4g} Hz with a dead time of {d * 1e9:.4g} ns "
                         "leaves no live time: is the light blocked?")
    r = m * (1.0 - p) / live
    u = math.hypot(u_count_rate_hz * (1.0 - p) / live, m * fit.u_afterpulse_probability / live)
    return r, u


def _comb_density(x_ps: NDArray[np.float64], period_ps: float, sigma_ps: float
                  ) -> NDArray[np.float64]:
    """``T sum_k phi((x - k T) / sigma) / sigma``: a unit-mean comb of Gaussians on the grid."""
    if COMB_SIGMAS * sigma_ps >= FLAT_COMB_PERIODS * period_ps:
        return np.ones_like(x_ps)
    reach = math.ceil(COMB_SIGMAS * sigma_ps / period_ps) + 1
    k = np.rint(x_ps / period_ps)[:, None] + np.arange(-reach, reach + 1)[None, :]
    z = (x_ps[:, None] - k * period_ps) / sigma_ps
    return np.asarray(np.exp(-0.5 * z * z).sum(axis=1) * period_ps
                      / (sigma_ps * math.sqrt(2.0 * math.pi)))


def cutoff_on_slot_grid(timestamps_ps: NDArray[np.int64], fit: GapFit, period_ps: float,
                        timing_rms_ps: float) -> tuple[float, float]:
    """Dead time from the gap histogram's edge when the light comes in pulses on a slot grid.

    A gap that ends on a photon is ``k T + (jitter difference)``: photon-ended gaps form a comb
    of Gaussians of width ``sqrt(2) sigma`` at the multiples of the slot period ``T`` (the
    channel's latency cancels in a difference), while afterpulses (``d + Exp(tau)`` after a
    click) and dark counts end gaps anywhere. Just beyond the dead time the hazard of a gap
    ending is therefore ``h(g) = c + r T comb(g)``, with ``r`` the uncorrelated rate of ``fit``
    (dark counts are counted in the comb as well: that only widens the result) and ``c`` the
    density of the gaps that end between the teeth just beyond the edge (the mixture fit's
    afterpulse term cannot be used: on pulsed light it also takes up the comb's structure).
    When the teeth fill the period the comb is flat and ``h`` is the fit's ``f(0)``.

    Every one of the N gaps survived from ``d`` to the smallest gap ``g_min``, so the
    likelihood of ``d <= g_min`` is ``exp(-N integral_d^g_min h)`` (the same for the full
    data: the gaps' own hazards do not depend on ``d``). With a flat prior its mean is the
    estimate and its standard deviation the uncertainty: a dead time that ends inside a comb
    tooth or with afterpulses is found at the jitter's scale, one that ends between teeth with
    no continuous clicks only to the gap between teeth (about ``T / sqrt(12)``), as the
    physics allows. The timing uncertainty of a gap (``sqrt(2)`` times ``timing_rms_ps``) is
    added in quadrature.

    Returns:
        (dead time, standard uncertainty), ps.

    Raises:
        ValueError: a non-positive ``period_ps`` or ``timing_rms_ps``.
    """
    if not period_ps > 0.0 or not timing_rms_ps > 0.0:
        raise ValueError(f"period_ps ({period_ps}) and timing_rms_ps ({timing_rms_ps}) must be "
                         "positive")
    t = np.asarray(timestamps_ps, dtype=np.int64)
    gaps = np.diff(t).astype(np.float64)
    n = gaps.size
    g_min = float(gaps.min())
    sigma = math.sqrt(2.0) * timing_rms_ps
    r = fit.rate_hz * 1e-12
    half = TOOTH_SIGMAS * sigma
    if 1.0 - 2.0 * half / period_ps < MIN_OFF_TEETH:
        # Flat comb: photons arrive as if continuously; the fit's f(0) is the hazard.
        c, r = r + (fit.q * fit.lam_hz * 1e-12 if fit.q > 0.0 else 0.0), 0.0
    else:
        width = EDGE_WINDOW_PERIODS * period_ps
        near = gaps[gaps < g_min + width]
        off = np.abs(near - period_ps * np.rint(near / period_ps)) > half
        grid = g_min + np.linspace(0.0, width, 64 * EDGE_WINDOW_PERIODS, endpoint=False)
        off_len = width * float(np.mean(
            np.abs(grid - period_ps * np.rint(grid / period_ps)) > half))
        c = float(np.count_nonzero(off)) / (n * off_len)
    # Per period the comb alone adds N r T to -log L (and the continuous part N c T): the
    # posterior is negligible beyond POSTERIOR_SPAN over their sum, plus the teeth's reach.
    span = min(g_min, POSTERIOR_SPAN / (n * (c + r)) + 2.0 * period_ps + COMB_SIGMAS * sigma)
    scale = 1.0 / (n * max(c, 1e-300))
    step = max(span / POSTERIOR_POINTS, min(sigma, scale, period_ps) / 10.0)
    x = g_min - np.arange(0.0, span + step, step)[::-1]
    x = x[x >= 0.0]
    if x.size < 2:
        return g_min, sigma
    hazard = c + r * _comb_density(x, period_ps, sigma)
    # -log L(d) = N * integral from d to g_min: the reversed cumulative trapezoid.
    seg = 0.5 * (hazard[1:] + hazard[:-1]) * np.diff(x)
    tail = np.concatenate((np.cumsum(seg[::-1])[::-1], [0.0]))
    w = np.exp(-n * tail)
    w /= w.sum()
    mean = float((w * x).sum())
    sd = math.sqrt(max(float((w * (x - mean) ** 2).sum()), 0.0))
    return mean, math.hypot(sd, step / math.sqrt(12.0), sigma)
