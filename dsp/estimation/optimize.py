"""Global optimisation of the decoy parameters (differential evolution)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import differential_evolution

from .bounds import FloatArray, KeyLengthResult, _bounds, _check_eps, _entropy
from .link import DecoyParams, LinkModel

__all__ = ["DecoyOptimum", "optimize_decoy"]

# Continuous fixed point ell = L(kappa * ell) inside the optimiser: at most this many secant
# steps, stopping when no ell moves by more than the tolerance (bits; far below the floor's 1).
_KAPPA_ITERATIONS = 30
_KAPPA_TOLERANCE = 1e-6
# Secant slopes are capped below 1 so that a step always exists (the bound's slope at its largest
# fixed point is <= 1; a cap only shortens the step).
_MAX_SECANT_SLOPE = 0.99


@dataclass(frozen=True, slots=True)
class DecoyOptimum:
    """The rate-maximising parameters for one link and block size.

    Attributes:
        params: the optimal free parameters.
        rate_per_pulse: ell / N at those parameters (0 if no key).
        pulses: N, pulses sent for the block.
        key: the bounds and ell at the optimum.
    """

    params: DecoyParams
    rate_per_pulse: float
    pulses: float
    key: KeyLengthResult

    @property
    def mu1(self) -> float:
        return self.params.mu1

    @property
    def mu2(self) -> float:
        return self.params.mu2

    @property
    def p_mu1(self) -> float:
        return self.params.p_mu1

    @property
    def p_mu2(self) -> float:
        return self.params.p_mu2

    @property
    def q_x(self) -> float:
        return self.params.q_x


# Search box in the unconstrained coordinates (see _decode). Wide enough that the optimum of
# every Fig. 1 point lies well inside: q_x in [0.001, 0.9999], p_mu1 from 0.1% to 99%,
# mu1 in [0.02, 2], mu2 anywhere between mu3 and mu1 - mu3.
_SEARCH_BOX = ((-7.0, 9.0), (-7.0, 5.0), (-7.0, 7.0), (math.log(0.02), math.log(2.0)), (-7.0, 6.0))
# Differential evolution settings: population 20 per dimension, fixed seed (reproducible).
_DE_POPSIZE = 20
_DE_MAXITER = 400
_DE_TOL = 1e-7


def _sigmoid(t: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-t))


def _decode(theta: FloatArray, mu3: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Unconstrained theta (5, S) -> (mu (3, S), p (3, S), q_x (S,)) satisfying every constraint:
    q_x = sigmoid(t0); p_mu1 = sigmoid(t1), p_mu2 = (1 - p_mu1) sigmoid(t2) (stick breaking);
    mu1 = exp(t3), mu2 = mu3 + sigmoid(t4) (mu1 - 2 mu3), so mu3 < mu2 < mu1 - mu3."""
    q_x = _sigmoid(theta[0])
    p1 = _sigmoid(theta[1])
    p2 = (1.0 - p1) * _sigmoid(theta[2])
    mu1 = np.exp(theta[3])
    mu2 = mu3 + _sigmoid(theta[4]) * (mu1 - 2.0 * mu3)
    mu = np.stack([mu1, mu2, np.full_like(mu1, mu3)])
    p = np.stack([p1, p2, 1.0 - p1 - p2])
    return mu, p, q_x


def _largest_fixed_point(bound: Callable[[FloatArray], FloatArray], ell: FloatArray) -> FloatArray:
    """Continuous ell = bound(ell) from above, vectorised: plain steps ell <- min(ell, bound(ell))
    converge only linearly near the distance limit (slope of bound ~ 0.8 there), so each step is
    a Newton step on bound(ell) - ell with the secant slope of the last two points, which never
    steps further than Newton for a concave bound and never less far than the plain step."""
    prev, f_prev = ell, bound(ell)
    ell = np.minimum(ell, f_prev)
    for _ in range(_KAPPA_ITERATIONS):
        f = bound(ell)
        gap = prev - ell
        slope = np.where(gap > 0.0, (f_prev - f) / np.where(gap > 0.0, gap, 1.0), 0.0)
        slope = np.clip(np.nan_to_num(slope), 0.0, _MAX_SECANT_SLOPE)
        new = np.minimum(ell, ell + (f - ell) / (1.0 - slope))
        prev, f_prev = ell, f
        converged = bool(np.all(np.abs(new - ell) <= _KAPPA_TOLERANCE))
        ell = new
        if converged:
            break
    return ell


def _objective(
    theta: FloatArray, link: LinkModel, n_x: float, eps_cor: float, kappa: float
) -> FloatArray:
    """Smooth surrogate of the rate, vectorised over columns of theta (5, S): ell / N where
    Eq. (1) is positive, else Eq. (1) itself (negative), so that an infeasible population still
    climbs toward key. ell is continuous (no floor), eps_sec = kappa * ell by fixed point."""
    mu, p, q_x = _decode(theta, link.mu3)
    nx_pp, nz_pp, mz_pp, mx_pp = link._per_pulse(mu, p, q_x)
    pulses = n_x / nx_pp.sum(axis=0)
    lam = link.ec_efficiency * n_x * _entropy(mx_pp.sum(axis=0) / nx_pp.sum(axis=0))

    def bound(ell: FloatArray) -> FloatArray:
        eps = kappa * np.maximum(ell, 1.0)
        counts = (nx_pp * pulses, nz_pp * pulses, mz_pp * pulses)
        return _bounds(*counts, mu, p, lam, eps, eps_cor).ell_real

    ell = _largest_fixed_point(bound, np.full(pulses.shape, min(n_x, (1.0 - 1e-9) / kappa)))
    value = np.where(ell > 0.0, ell / pulses, ell)
    return -np.nan_to_num(value, nan=-np.inf)


def optimize_decoy(
    link: LinkModel,
    n_x: float,
    eps_cor: float = 1e-15,
    kappa: float = 1e-15,
    *,
    seed: int = 0,
) -> DecoyOptimum:
    """Maximise the rate per pulse over (mu1, mu2, p_mu1, p_mu2, q_x), globally.

    Differential evolution (fixed ``seed``) over an unconstrained parametrisation (see
    ``_decode``) of a smooth surrogate that is negative where there is no key, run to a tight
    tolerance; the result is re-evaluated exactly with :meth:`LinkModel.key_length`.
    A local search from typical values finds no key at small blocks, where the optimum has
    p_mu1 of a few percent, hence the global search.

    Args:
        link: the link model.
        n_x: block size n_X (expected X detections over all intensities), >= 1.
        eps_cor: correctness parameter.
        kappa: secrecy per key bit (eps_sec = kappa * ell).
        seed: seed of the differential evolution.

    Returns:
        The optimum; ``rate_per_pulse`` is 0 (and ``key.reason`` says why) if there is no key.
    """
    if not isinstance(link, LinkModel):
        raise TypeError(f"link must be a LinkModel, got {type(link)}")
    if not (math.isfinite(n_x) and n_x >= 1.0):
        raise ValueError(f"n_x must be a finite block size >= 1, got {n_x}")
    eps_cor = _check_eps("eps_cor", eps_cor)
    kappa = _check_eps("kappa", kappa)
    args = (link, float(n_x), eps_cor, kappa)
    de = differential_evolution(
        _objective,
        _SEARCH_BOX,
        args=args,
        popsize=_DE_POPSIZE,
        maxiter=_DE_MAXITER,
        tol=_DE_TOL,
        seed=seed,
        init="sobol",
        polish=False,
        vectorized=True,
        updating="deferred",
    )
    best = np.asarray(de.x, dtype=np.float64)
    mu, p, q_x = _decode(best.reshape(5, 1), link.mu3)
    params = DecoyParams(
        mu1=float(mu[0, 0]),
        mu2=float(mu[1, 0]),
        p_mu1=float(p[0, 0]),
        p_mu2=float(p[1, 0]),
        q_x=float(q_x[0]),
    )
    key, pulses = link.key_length(params, n_x, eps_cor, kappa)
    return DecoyOptimum(params=params, rate_per_pulse=key.ell / pulses, pulses=pulses, key=key)
