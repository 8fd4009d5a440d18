"""Design of variable-node degree distributions for the BSC by Gaussian approximation and LP.

Density evolution under the Gaussian approximation of Chung, Richardson and Urbanke ("Analysis of
sum-product decoding of low-density parity-check codes using a Gaussian approximation", IEEE
Trans. IT 47(2), 2001), adapted to the binary symmetric channel:

* check-to-variable messages are modelled as consistent Gaussians ``N(mu, 2 mu)``;
* variable-to-check messages are *not* Gaussian: a variable of degree ``i`` sends its channel LLR
  (``+L`` with probability ``1 - p``, ``-L`` with probability ``p``, ``L = ln((1 - p) / p)``,
  all-zero codeword) plus ``i - 1`` check messages, i.e. the two-component mixture
  ``L_ch + N((i - 1) mu, 2 (i - 1) mu)``, kept exactly;
* a check node of degree ``j`` is exact in the mean of ``tanh(X / 2)``:
  ``E[tanh(Y / 2)] = E[tanh(X / 2)]^(j - 1)`` (independent inputs), and its output is mapped back
  to the Gaussian of the same ``tanh`` mean, ``mu' = phi^-1(1 - E[tanh(X / 2)]^(j - 1))`` with
  ``phi(mu) = 1 - E[tanh(G / 2)]``, ``G ~ N(mu, 2 mu)``; with several check degrees the new
  ``mu`` is their edge-weighted mean (as in Chung et al., eq. (8)).

With ``s(mu) = 1 - E[tanh(X / 2)]`` of the variable-to-check mixture, ``s(mu) = sum_i lambda_i
S_i(mu)`` is *linear* in the edge-perspective ``lambda``. For fixed check degrees the update map is
increasing in ``1 - s``, so "the map takes ``mu`` above ``mu``" (an open tunnel at ``mu``) is
the linear constraint ``sum_i lambda_i S_i(mu) <= s*(mu)``, where ``s*(mu)`` solves
``sum_j rho_j phi^-1(1 - (1 - s)^(j - 1)) = mu``. On a grid of ``mu`` this makes the design a
linear program (:func:`optimise`): for a target rate ``R`` and a mean check degree ``a`` the rate
fixes ``sum_i lambda_i / i = 1 / (a (1 - R))``; the constraints are the tunnel on the grid, the
stability condition ``lambda_2 rho'(1) < 1 / B`` (``B = 2 sqrt(p (1 - p))``, the Bhattacharyya
constant of the BSC), at most ``m`` degree-2 variables (more must close cycles among themselves,
see :func:`qkdnode.dsp.ldpc.construct.node_degrees`), ``lambda >= 0`` and a maximum degree. The
threshold is found by bisection on ``p`` (:func:`threshold`), over a grid of mean check degrees
(:func:`design`). Check degrees are concentrated, as :mod:`construct` builds them: the two
integers around ``a``.

A second, EXIT-chart criterion (ten Brink, Kramer, Ashikhmin, "Design of low-density
parity-check codes for modulation and detection", IEEE Trans. Comm. 52(4), 2004), ``method =
"exit"``: messages are tracked by mutual information; the variable-node curve is computed
exactly for the BSC mixture above (linear in ``lambda`` again), the check-node curve by the
duality approximation ``I_E,C = 1 - J(sqrt(j - 1) J^-1(1 - I_A))``, and the tunnel must be open
on a grid of variable-to-check informations.

Both are approximations, and at the check degrees of high rates (50-150) both are optimistic: for
the regular (3, 6) ensemble on the BSC the Gaussian approximation gives 0.0846 (exact density
evolution: 0.084), but for EL2009's rate-0.85 distribution (density evolution: 0.0199) it gives
0.0228, for the regular (3, 60) ensemble 0.0035 where sampled density evolution converges at
0.0025 and not at 0.003 (and 64 000-bit frames agree), and left free it even "finds" rate-0.90
ensembles beyond capacity at mean check degree ~45 and above. The EXIT criterion is worse on the
BSC (rate-0.90 ensembles at f = 0.75). So the LP only *proposes*: :func:`design` measures each
proposal (one per mean check degree) by sampled density evolution without any Gaussian
assumption (:func:`density_evolution`, population dynamics) and keeps the best. Everything is
deterministic (fixed quadrature grids, HiGHS LP, seeded sampling).

Command line (prints JSON; the distributions in ``distributions.py`` marked ``"source":
"qkdnode"`` were made with it)::

    python -m qkdnode.dsp.ldpc.design --rates 0.90 0.95 0.97 --max-degree 15
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

__all__ = [
    "METHODS",
    "Design",
    "check_distribution",
    "de_threshold",
    "density_evolution",
    "design",
    "ensemble_threshold",
    "main",
    "optimise",
    "phi",
    "phi_inverse",
    "threshold",
]

# The two criteria (see the module docstring).
METHODS = ("exit", "ga")

# Grid of check-to-variable means on which the Gaussian approximation's tunnel must be open.
# Below MU_MIN the map is always open (the first iteration gets the channel's information); above
# MU_MAX messages are wrong with probability below ~1e-7, the map grows by a constant step (the
# approximation's form of the stability condition, which is imposed exactly), and the tables
# would underflow.
MU_MIN = 1e-3
MU_MAX = 60.0
MU_POINTS = 100

# Grid of variable-to-check mutual-information complements (1 - I) for the EXIT criterion.
EXIT_MIN = 1e-7
EXIT_MAX = 0.999
EXIT_POINTS = 150

# Standard-normal quadrature grid (trapezoid on +-12 sigma): the integrands are sigmoids times a
# Gaussian. 1201 points (step 0.02) give the thresholds of the tests to 1e-4 relative (checked
# against 2401 points and a grid of 240 means).
_Z = np.linspace(-12.0, 12.0, 1201)
_LOG_W = -0.5 * _Z**2 - 0.5 * math.log(2 * math.pi) + math.log(_Z[1] - _Z[0])

# Tables of phi and of J (as 1 - J) for their inverses: log-spaced arguments (1 - J(45) ~ 1e-110;
# further out it would underflow).
_PHI_MU = np.concatenate([[0.0], np.geomspace(1e-7, 400.0, 3000)])
_J_SIGMA = np.concatenate([[0.0], np.geomspace(1e-4, 45.0, 3000)])

# Bisection steps on p (relative resolution ~ 2^-18 of the bracket).
_BISECTION_STEPS = 18

# Sampled density evolution (density_evolution): population size, iteration budget, clip of the
# tanh argument, and the convergence test (variable messages wrong with probability below
# DE_TARGET, mean check message above DE_CERTAIN). 50 000 samples resolve thresholds to ~2 %
# (regular (3, 6): converges at 0.080, not at 0.086; exact: 0.084).
DE_SAMPLES = 50_000
DE_ITERATIONS = 200
DE_CLIP = 40.0
DE_TARGET = 1e-5
DE_CERTAIN = 30.0
# Bisection steps of de_threshold over its bracket (5 steps: 1/32 of the log bracket).
DE_STEPS = 5


def _log_mean(
    log_integrand: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    mean: NDArray[np.float64], var: NDArray[np.float64],
) -> NDArray[np.float64]:
    """``E[exp(log_integrand(Y))]`` for ``Y ~ N(mean, var)``, summed in the log domain."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.sqrt(np.asarray(var, dtype=np.float64))
    y = mean[..., None] + std[..., None] * _Z
    with np.errstate(divide="ignore"):
        terms = log_integrand(y) + _LOG_W
    peak = terms.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    result: NDArray[np.float64] = np.exp(peak[..., 0]) * np.exp(terms - peak).sum(axis=-1)
    return result


def _sigmoid_mean(mean: NDArray[np.float64], var: NDArray[np.float64]) -> NDArray[np.float64]:
    """``E[2 / (1 + exp(Y))] = 1 - E[tanh(Y / 2)]``, elementwise, accurate for tiny results."""
    result = _log_mean(lambda y: math.log(2.0) - np.logaddexp(0.0, y), mean, var)
    return np.minimum(result, 1.0)


def _softplus_mean(mean: NDArray[np.float64], var: NDArray[np.float64]) -> NDArray[np.float64]:
    """``E[log2(1 + exp(-Y))]``: one minus the mutual information of a consistent LLR ``Y``."""
    result = _log_mean(lambda y: np.log(np.logaddexp(0.0, -y)), mean, var) / math.log(2.0)
    return np.minimum(result, 1.0)


def phi(mu: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """``phi(mu) = 1 - E[tanh(G / 2)]`` for ``G ~ N(mu, 2 mu)`` (Chung et al.); ``phi(0) = 1``."""
    return _sigmoid_mean(np.asarray(mu, dtype=np.float64), 2.0 * np.asarray(mu, dtype=np.float64))


@functools.cache
def _phi_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    # phi decreases strictly; interpolate mu against -log(phi) (increasing).
    return -np.log(phi(_PHI_MU)), _PHI_MU


def phi_inverse(value: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Inverse of :func:`phi` on ``(0, 1]`` (table interpolation in ``log phi``)."""
    x, mu = _phi_table()
    target = -np.log(np.clip(np.asarray(value, dtype=np.float64), 1e-300, 1.0))
    result: NDArray[np.float64] = np.interp(target, x, mu)
    return result


def _j_complement(sigma: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 - J(sigma)``: one minus the information of ``N(sigma^2 / 2, sigma^2)``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return _softplus_mean(sigma**2 / 2.0, sigma**2)


@functools.cache
def _j_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    return -np.log(_j_complement(_J_SIGMA)), _J_SIGMA


def _j_inverse_complement(value: NDArray[np.float64]) -> NDArray[np.float64]:
    """``sigma`` with ``1 - J(sigma) = value``."""
    x, sigma = _j_table()
    target = -np.log(np.clip(np.asarray(value, dtype=np.float64), 1e-300, 1.0))
    result: NDArray[np.float64] = np.interp(target, x, sigma)
    return result


def _mixture_terms(
    p: float, degrees: Sequence[int], mean: NDArray[np.float64],
    integrand: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]],
) -> NDArray[np.float64]:
    """``E[f(L_ch + N((i - 1) m, 2 (i - 1) m))]`` per grid point and degree ``i``.

    Returns ``float64[len(mean), len(degrees)]``.
    """
    llr = math.log((1.0 - p) / p)
    k = np.asarray(degrees, dtype=np.float64)[None, :] - 1.0
    m = k * mean[:, None]
    return (1.0 - p) * integrand(llr + m, 2.0 * m) + p * integrand(-llr + m, 2.0 * m)


def check_distribution(mean_degree: float) -> dict[int, float]:
    """Edge-perspective ``rho`` concentrated on the two integers around ``mean_degree``.

    Node fractions ``k + 1 - a`` and ``a - k`` of degrees ``k = floor(a)`` and ``k + 1``, so the
    node-average degree is ``a``; edge fractions are node fraction times degree over ``a``.
    """
    if mean_degree < 2:
        raise ValueError(f"mean check degree must be at least 2, got {mean_degree}")
    k = math.floor(mean_degree)
    low = k + 1 - mean_degree
    rho = {k: low * k / mean_degree}
    if mean_degree > k:
        rho[k + 1] = (mean_degree - k) * (k + 1) / mean_degree
    return {d: f for d, f in rho.items() if f > 1e-12}


def _ga_bound(rho: Mapping[int, float], mu: NDArray[np.float64]) -> NDArray[np.float64]:
    """``s*(mu)``: the largest variable-side ``1 - E[tanh]`` whose check output reaches ``mu``."""
    degrees = np.array(sorted(rho), dtype=np.float64)
    weights = np.array([rho[int(d)] for d in degrees], dtype=np.float64)
    # Bisection on log s, elementwise over mu: the check output decreases as s grows.
    lo = np.full(mu.shape, -745.0)
    hi = np.zeros(mu.shape)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        s = np.minimum(np.exp(mid), 1.0 - 1e-16)
        # 1 - (1 - s)^(j - 1), computed without cancellation.
        inner = -np.expm1((degrees[None, :] - 1.0) * np.log1p(-s)[:, None])
        out = (phi_inverse(inner) * weights[None, :]).sum(axis=1)
        reaches = out >= mu
        lo = np.where(reaches, mid, lo)
        hi = np.where(reaches, hi, mid)
    bound: NDArray[np.float64] = np.exp(lo)
    return bound


def _check_exit(rho: Mapping[int, float], c_in: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 - I_E,C`` of the check nodes (edge average) for inputs of information ``1 - c_in``.

    Duality: ``I_E,C = 1 - J(sqrt(j - 1) J^-1(1 - I_A))``, so ``1 - I_E,C = J(sqrt(j - 1)
    sigma)`` with ``1 - J(sigma) = I_A``.
    """
    sigma = _j_inverse_complement(1.0 - c_in)
    out = np.zeros_like(c_in)
    for j, f in rho.items():
        out += f * (1.0 - _j_complement(math.sqrt(j - 1) * sigma))
    return out


def _tunnel(
    method: str, p: float, degrees: Sequence[int], rho: Mapping[int, float]
) -> NDArray[np.float64]:
    """Rows ``A`` with "tunnel open at ``p``" <=> ``A @ lambda < 1`` (one row per grid point)."""
    if method == "ga":
        mu = np.geomspace(MU_MIN, MU_MAX, MU_POINTS)
        terms = _mixture_terms(p, degrees, mu, _sigmoid_mean)
        result: NDArray[np.float64] = terms / _ga_bound(rho, mu)[:, None]
        return result
    if method == "exit":
        # x: 1 - I of the variable-to-check messages; the checks return 1 - I = c; the
        # variables must then send less than x: sum_i lambda_i (1 - I_E,V,i(c)) < x.
        x = np.geomspace(EXIT_MIN, EXIT_MAX, EXIT_POINTS)
        sigma = _j_inverse_complement(_check_exit(rho, x))
        terms = _mixture_terms(p, degrees, sigma**2 / 2.0, _softplus_mean)
        result = terms / x[:, None]
        return result
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


@dataclass(frozen=True, slots=True)
class Design:
    """Result of :func:`design`.

    Attributes:
        rate: Design rate.
        method: Criterion used (``"exit"`` or ``"ga"``).
        threshold: Density-evolution threshold (sampled, see :func:`de_threshold`).
        approx_threshold: Threshold of the criterion ``method`` (what the LP optimised).
        mean_check_degree: Node-average check degree ``a``.
        edge_lambda: Edge-perspective variable distribution, degree -> fraction.
        rho: Edge-perspective check distribution, degree -> fraction.
        efficiency: ``(1 - R) / h(threshold)``, the asymptotic reconciliation efficiency.
    """

    rate: float
    method: str
    threshold: float
    approx_threshold: float
    mean_check_degree: float
    edge_lambda: dict[int, float]
    rho: dict[int, float]
    efficiency: float


def _binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def _stability(rho: Mapping[int, float], p: float) -> float:
    """``rho'(1) B``: ``lambda_2`` times it must stay below 1 (B: Bhattacharyya of the BSC)."""
    return sum(f * (d - 1) for d, f in rho.items()) * 2.0 * math.sqrt(p * (1.0 - p))


def optimise(
    p: float, rate: float, mean_check_degree: float, max_degree: int, method: str = "ga"
) -> dict[int, float] | None:
    """Finds an edge-perspective ``lambda`` of rate ``rate`` with an open tunnel at crossover ``p``.

    Among the feasible ones, the one with the widest tunnel (largest relative margin ``delta`` in
    ``A lambda <= 1 - delta``, see :func:`_tunnel`).

    Args:
        p: BSC crossover probability.
        rate: Design rate ``R``.
        mean_check_degree: Node-average check degree ``a`` (concentrated ``rho``).
        max_degree: Largest variable degree allowed.
        method: ``"exit"`` or ``"ga"``.

    Returns:
        ``lambda`` (degree -> fraction; zeros dropped) or ``None`` if none is feasible.
    """
    if not 0 < p < 0.5 or not 0 < rate < 1 or max_degree < 2:
        raise ValueError(
            f"need 0 < p < 0.5, 0 < rate < 1, max_degree >= 2; got {p}, {rate}, {max_degree}"
        )
    rho = check_distribution(mean_check_degree)
    degrees = list(range(2, max_degree + 1))
    nd = len(degrees)
    a_tunnel = _tunnel(method, p, degrees, rho)
    # Variables: lambda_2..lambda_D, delta. Maximise delta.
    cost = np.zeros(nd + 1)
    cost[-1] = -1.0
    a_tunnel = np.hstack([a_tunnel, np.ones((a_tunnel.shape[0], 1))])
    # Stability, and at most m degree-2 variables (node fraction of degree 2 at most 1 - R).
    a_more = np.zeros((2, nd + 1))
    a_more[0, 0] = _stability(rho, p)
    a_more[1, 0] = 0.5
    b_more = np.array([1.0 - 1e-6, 1.0 / mean_check_degree])
    a_eq = np.vstack([np.append(np.ones(nd), 0.0), np.append([1.0 / d for d in degrees], 0.0)])
    b_eq = np.array([1.0, 1.0 / (mean_check_degree * (1.0 - rate))])
    result = linprog(
        cost, A_ub=np.vstack([a_tunnel, a_more]),
        b_ub=np.concatenate([np.ones(a_tunnel.shape[0]), b_more]),
        A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * nd + [(0, 1)], method="highs",
    )
    if result.status != 0 or result.x[-1] <= 0:
        return None
    lam = np.clip(result.x[:nd], 0.0, None)
    return {d: float(f) for d, f in zip(degrees, lam, strict=True) if f > 1e-9}


def threshold(
    rate: float, mean_check_degree: float, max_degree: int, method: str = "ga",
    lo: float = 1e-4, hi: float = 0.2,
) -> tuple[float, dict[int, float] | None]:
    """Bisection on ``p``: the largest crossover with a feasible ``lambda`` (see :func:`optimise`).

    Returns:
        ``(p, lambda at p)``; ``(lo, None)`` if even ``lo`` is infeasible.
    """
    best = optimise(lo, rate, mean_check_degree, max_degree, method)
    if best is None:
        return lo, None
    for _ in range(_BISECTION_STEPS):
        mid = math.sqrt(lo * hi)
        found = optimise(mid, rate, mean_check_degree, max_degree, method)
        if found is None:
            hi = mid
        else:
            lo, best = mid, found
    return lo, best


def ensemble_threshold(
    edge_lambda: Mapping[int, float], rho: Mapping[int, float], method: str = "ga"
) -> float:
    """Threshold of a given ensemble ``(lambda, rho)`` on the BSC (bisection on ``p``)."""
    lam = {int(d): float(f) for d, f in edge_lambda.items() if f > 0}
    total = sum(lam.values())
    degrees = sorted(lam)
    vec = np.array([lam[d] / total for d in degrees])

    def open_at(p: float) -> bool:
        if vec[0] * _stability(rho, p) >= 1 and degrees[0] == 2:
            return False
        return bool((_tunnel(method, p, degrees, rho) @ vec < 1).all())

    lo, hi = 1e-5, 0.5
    if not open_at(lo):
        return 0.0
    for _ in range(_BISECTION_STEPS + 4):
        mid = 0.5 * (lo + hi)
        if open_at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def density_evolution(
    edge_lambda: Mapping[int, float], rho: Mapping[int, float], p: float,
    samples: int = DE_SAMPLES, iterations: int = DE_ITERATIONS, seed: int = 0,
) -> bool:
    """Sum-product density evolution on the BSC by sampling (population dynamics).

    Each message density is a population of ``samples`` LLRs. A variable message is a channel
    LLR (``-L`` with probability ``p``) plus ``i - 1`` check messages drawn from the population,
    ``i`` drawn from ``lambda``; a check message is ``2 atanh(prod tanh(x / 2))`` of ``j - 1``
    variable messages, ``j`` drawn from ``rho``. No Gaussian assumption: this is the check the
    approximations above need at high rates. Deterministic for a given ``seed``.

    Returns:
        Whether the error probability of the variable messages falls below ``DE_TARGET`` (and
        the check messages' mean LLR above ``DE_CERTAIN``) within ``iterations``.
    """
    rng = np.random.default_rng(seed)
    llr = math.log((1.0 - p) / p)
    var_degrees = np.array(sorted(edge_lambda), dtype=np.int64)
    var_weights = np.array([edge_lambda[int(d)] for d in var_degrees], dtype=np.float64)
    chk_degrees = np.array(sorted(rho), dtype=np.int64)
    chk_weights = np.array([rho[int(d)] for d in chk_degrees], dtype=np.float64)
    var_weights /= var_weights.sum()
    chk_weights /= chk_weights.sum()
    to_var = np.zeros(samples)
    for _ in range(iterations):
        to_chk = np.where(rng.random(samples) < p, -llr, llr)
        degree = rng.choice(var_degrees, samples, p=var_weights)
        for d in var_degrees:
            rows = np.flatnonzero(degree == d)
            if rows.size and d > 1:
                picks = rng.integers(0, samples, (rows.size, int(d) - 1))
                to_chk[rows] += to_var[picks].sum(axis=1)
        half = np.tanh(np.clip(to_chk, -DE_CLIP, DE_CLIP) / 2.0)
        degree = rng.choice(chk_degrees, samples, p=chk_weights)
        new = np.empty(samples)
        for d in chk_degrees:
            rows = np.flatnonzero(degree == d)
            if rows.size:
                picks = rng.integers(0, samples, (rows.size, int(d) - 1))
                product = np.prod(half[picks], axis=1)
                new[rows] = 2.0 * np.arctanh(np.clip(product, -1.0 + 1e-15, 1.0 - 1e-15))
        to_var = new
        if np.mean(to_chk < 0) < DE_TARGET and np.mean(to_var) > DE_CERTAIN:
            return True
    return False


def de_threshold(
    edge_lambda: Mapping[int, float], rho: Mapping[int, float], lo: float, hi: float,
    steps: int = DE_STEPS, samples: int = DE_SAMPLES,
) -> float:
    """Largest ``p`` in ``[lo, hi]`` at which :func:`density_evolution` converges (bisection on
    ``log p``; ``lo`` itself if it does not converge there either)."""
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if density_evolution(edge_lambda, rho, mid, samples=samples):
            lo = mid
        else:
            hi = mid
    return lo


def design(
    rate: float, max_degree: int, mean_var_degrees: Sequence[float] | None = None,
    method: str = "ga", samples: int = DE_SAMPLES,
) -> Design:
    """Best distribution of rate ``rate`` over a grid of mean variable degrees.

    For each mean variable degree ``dv`` on the grid (default 3.2, 3.5, 4.0, 4.5, 5.0), the mean
    check degree is ``a = dv / (1 - R)``; the linear program (:func:`threshold`, criterion
    ``method``) proposes the ``lambda`` with the highest approximate threshold, and sampled
    density evolution (:func:`de_threshold`, bracket ``[0.4, 1]`` times the approximate
    threshold) measures it. The proposal with the highest density-evolution threshold wins (ties:
    the lower ``dv``, fewer edges).
    """
    grid = mean_var_degrees if mean_var_degrees is not None else [3.2, 3.5, 4.0, 4.5, 5.0]
    best: Design | None = None
    for dv in grid:
        a = dv / (1.0 - rate)
        approx, lam = threshold(rate, a, max_degree, method)
        if lam is None:
            continue
        rho = check_distribution(a)
        measured = de_threshold(lam, rho, 0.4 * approx, approx, samples=samples)
        if best is None or measured > best.threshold:
            best = Design(
                rate=rate, method=method, threshold=measured, approx_threshold=approx,
                mean_check_degree=a, edge_lambda=lam, rho=rho,
                efficiency=(1 - rate) / _binary_entropy(measured),
            )
    if best is None:
        raise ValueError(f"no distribution of rate {rate} with degrees <= {max_degree} found")
    return best


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: design distributions for the given rates and print them as JSON."""
    parser = argparse.ArgumentParser(description="Design BSC LDPC degree distributions (LP + DE).")
    parser.add_argument("--rates", type=float, nargs="+", required=True)
    parser.add_argument("--max-degree", type=int, default=15)
    parser.add_argument("--method", choices=METHODS, default="ga")
    parser.add_argument("--dv", type=float, nargs="*", help="mean variable degrees to try")
    args = parser.parse_args(argv)
    for rate in args.rates:
        found = design(rate, args.max_degree, args.dv or None, method=args.method)
        print(json.dumps({
            "rate": rate,
            "method": args.method,
            "threshold": round(found.threshold, 5),
            f"threshold_{args.method}": round(found.approx_threshold, 5),
            "efficiency_at_threshold": round(found.efficiency, 4),
            "mean_check_degree": round(found.mean_check_degree, 3),
            "max_degree": args.max_degree,
            "lambda": {str(d): round(f, 5) for d, f in sorted(found.edge_lambda.items())},
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
