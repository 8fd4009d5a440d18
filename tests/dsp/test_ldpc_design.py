"""Tests of the degree-distribution design (Gaussian approximation on the BSC + linear program)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdnode.dsp.ldpc.construct import load_distributions
from qkdnode.dsp.ldpc.design import (
    check_distribution,
    de_threshold,
    density_evolution,
    design,
    ensemble_threshold,
    optimise,
    phi,
    phi_inverse,
    threshold,
)


def entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_phi_and_its_inverse() -> None:
    mu = np.array([0.0, 1e-3, 0.1, 1.0, 5.0, 20.0, 60.0])
    values = phi(mu)
    assert values[0] == pytest.approx(1.0)
    assert np.all(np.diff(values) < 0)
    # Chung et al.: phi(mu) ~ sqrt(pi / mu) exp(-mu / 4) (1 - 10 / (7 mu)) for large mu.
    assert values[-1] == pytest.approx(
        math.sqrt(math.pi / 60) * math.exp(-15) * (1 - 10 / 420), rel=0.02
    )
    np.testing.assert_allclose(phi_inverse(values[1:]), mu[1:], rtol=1e-3)


@pytest.mark.parametrize("mean", [6.0, 41.76, 99.5])
def test_check_distribution_is_concentrated(mean: float) -> None:
    rho = check_distribution(mean)
    assert sum(rho.values()) == pytest.approx(1.0)
    assert 1.0 / sum(f / d for d, f in rho.items()) == pytest.approx(mean)
    assert max(rho) - min(rho) <= 1


def test_regular_3_6_threshold() -> None:
    # Exact density evolution of sum-product on the BSC gives 0.084 (Richardson and Urbanke,
    # IEEE Trans. IT 47(2), 2001); the approximation keeps the channel's two LLR values exactly.
    assert ensemble_threshold({3: 1.0}, {6: 1.0}) == pytest.approx(0.084, rel=0.02)
    # Sampled density evolution brackets it: converges at 0.080, not at 0.088.
    assert density_evolution({3: 1.0}, {6: 1.0}, 0.080, samples=20_000)
    assert not density_evolution({3: 1.0}, {6: 1.0}, 0.088, samples=20_000, iterations=80)


def test_gaussian_approximation_is_optimistic_at_high_check_degree() -> None:
    # Regular (3, 60), rate 0.95: the approximation gives 0.0035; density evolution without
    # the Gaussian assumption does not converge at 0.0031 (and 64 000-bit frames fail there).
    assert ensemble_threshold({3: 1.0}, {60: 1.0}) == pytest.approx(0.0035, rel=0.03)
    assert not density_evolution({3: 1.0}, {60: 1.0}, 0.0031, samples=10_000, iterations=60)
    assert de_threshold({3: 1.0}, {60: 1.0}, 0.0015, 0.0035, steps=3, samples=10_000) < 0.0031


def test_elkouss_rate_085_threshold() -> None:
    # EL2009's rate-0.85 distribution, density-evolution threshold 0.0199, with concentrated
    # checks as construct.py builds them. The approximation is optimistic at check degrees
    # around 40: it gives 0.0228 (+14 %); at (3, 6) it is within 1 %.
    entry = load_distributions()["rates"]["0.85"]
    lam = {int(d): float(f) for d, f in entry["lambda"].items()}
    total = sum(lam.values())
    lam = {d: f / total for d, f in lam.items()}
    mean_check = sum(f / d for d, f in lam.items()) ** -1 / 0.15
    found = ensemble_threshold(lam, check_distribution(mean_check))
    assert entry["threshold"] < found < 1.2 * entry["threshold"]


def test_optimised_distribution_is_consistent() -> None:
    rate, mean_check, cap = 0.85, 40.0, 12
    p, lam = threshold(rate, mean_check, cap)
    assert lam is not None
    assert max(lam) <= cap
    assert min(lam) >= 2
    assert sum(lam.values()) == pytest.approx(1.0, abs=1e-9)
    # The rate equation holds: 1 - (sum rho_j / j) / (sum lambda_i / i) = R.
    rho = check_distribution(mean_check)
    design_rate = 1 - sum(f / d for d, f in rho.items()) / sum(f / d for d, f in lam.items())
    assert design_rate == pytest.approx(rate, abs=1e-9)
    # Not better than capacity; and the LP's answer really has its tunnel open at p.
    assert ensemble_threshold(lam, rho) >= p * 0.999
    # Beyond the threshold no distribution of that rate and degree cap is feasible.
    assert optimise(p * 1.05, rate, mean_check, cap) is None


def test_optimisation_beats_the_regular_code() -> None:
    # Rate 1/2 with degrees up to 8: the LP's proposal beats the (3, 6) ensemble (0.084) also
    # under density evolution, and stays below capacity (h(0.110) = 0.5).
    found = design(0.5, 8, mean_var_degrees=[3.5], samples=10_000)
    assert 0.086 < found.threshold < 0.110
    assert found.approx_threshold >= found.threshold * 0.95
    assert found.efficiency > 1.0
    assert design(0.5, 8, mean_var_degrees=[3.5], samples=10_000) == found  # deterministic


def test_shipped_designs_reproduce_their_thresholds() -> None:
    # Every distribution this project designed carries the approximation's threshold (recomputed
    # here) and the density-evolution one, which the approximation overestimates at high rate.
    data = load_distributions()
    checked = 0
    entries = [*data["rates"].items(), *data["designs"].items()]
    for key, entry in entries:
        if entry["source"] != "qkdnode":
            continue
        if "design" not in entry:
            # A design reused at another rate (denser checks): it says which, and has no
            # threshold of its own.
            assert "design (below) used at rate" in entry["note"], key
            assert entry["threshold"] is None, key
            continue
        lam = {int(d): float(f) for d, f in entry["lambda"].items()}
        mean_check = float(entry["design"]["mean_check_degree"])
        rho = check_distribution(mean_check)
        assert ensemble_threshold(lam, rho) == pytest.approx(entry["threshold_ga"], rel=0.02), key
        assert entry["threshold"] < entry["threshold_ga"]
        assert max(lam) <= entry["design"]["max_degree"]
        rate = 1 - sum(f / d for d, f in rho.items()) / sum(f / d for d, f in lam.items())
        assert rate == pytest.approx(float(key), abs=2e-4)
        checked += 1
    assert checked >= 3


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"0 < p < 0\.5"):
        optimise(0.6, 0.9, 50.0, 15)
    with pytest.raises(ValueError, match="mean check degree"):
        check_distribution(1.5)
