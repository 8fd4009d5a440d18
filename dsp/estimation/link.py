"""The dedicated-fibre link model of Lim et al. 2014, Sec. IV: expected counts and rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .bounds import (
    DecoyCounts,
    FloatArray,
    KeyLengthResult,
    _bounds,
    _check_mu,
    _check_p,
    _entropy,
    finite_key_length,
)

__all__ = ["DecoyParams", "LinkModel"]


@dataclass(frozen=True, slots=True)
class DecoyParams:
    """The free parameters of the protocol (mu3 is fixed by the link).

    Attributes:
        mu1, mu2: signal and decoy intensities (mean photon numbers).
        p_mu1, p_mu2: probabilities of sending mu1 and mu2 (mu3 gets the rest).
        q_x: probability of the X basis, for Alice and for Bob.
    """

    mu1: float
    mu2: float
    p_mu1: float
    p_mu2: float
    q_x: float

    def __post_init__(self) -> None:
        if not 0.0 < self.q_x < 1.0:
            raise ValueError(f"q_x must lie in (0, 1), got {self.q_x}")
        _check_p((self.p_mu1, self.p_mu2, 1.0 - self.p_mu1 - self.p_mu2))


@dataclass(frozen=True, slots=True)
class LinkModel:
    """Dedicated-fibre model of Lim et al. 2014, Sec. IV (defaults: their Fig. 1).

    Per pulse of intensity mu: D = 1 - (1 - 2 p_dc) exp(-eta_sys mu) (a click),
    R = D (1 + p_ap) (with afterpulses), E = p_dc + e_mis (1 - exp(-eta_sys mu)) + p_ap D / 2
    (an error). The paper prints eta_ch in the misalignment term; eta_sys is what reproduces its
    results (PHYSICS.md).

    Attributes:
        distance_km: fibre length.
        fiber_loss_db_per_km: attenuation alpha.
        detector_efficiency: eta_Bob.
        dark_count_probability: p_dc per detector and gate.
        afterpulse_probability: p_ap.
        misalignment: e_mis, optical error rate.
        ec_efficiency: f_EC, error-correction leakage over n_X h(E_X).
        mu3: the weakest intensity, fixed.
    """

    distance_km: float
    fiber_loss_db_per_km: float = 0.2
    detector_efficiency: float = 0.1
    dark_count_probability: float = 6e-7
    afterpulse_probability: float = 0.04
    misalignment: float = 5e-3
    ec_efficiency: float = 1.16
    mu3: float = 2e-4

    def __post_init__(self) -> None:
        checks = {
            "distance_km": self.distance_km >= 0.0,
            "fiber_loss_db_per_km": self.fiber_loss_db_per_km >= 0.0,
            "detector_efficiency": 0.0 < self.detector_efficiency <= 1.0,
            "dark_count_probability": 0.0 <= self.dark_count_probability < 0.5,
            "afterpulse_probability": 0.0 <= self.afterpulse_probability < 1.0,
            "misalignment": 0.0 <= self.misalignment <= 0.5,
            "ec_efficiency": self.ec_efficiency >= 1.0,
            "mu3": self.mu3 >= 0.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)}")

    @property
    def eta_channel(self) -> float:
        """Fibre transmittance 10^(-alpha L / 10)."""
        return float(10.0 ** (-self.fiber_loss_db_per_km * self.distance_km / 10.0))

    @property
    def eta_system(self) -> float:
        """Fibre transmittance times detector efficiency."""
        return self.eta_channel * self.detector_efficiency

    def detection_probability(self, mu: ArrayLike) -> FloatArray:
        """R(mu): probability of a click (with afterpulses) per pulse of intensity mu."""
        d = 1.0 - (1.0 - 2.0 * self.dark_count_probability) * np.exp(
            -self.eta_system * np.asarray(mu, dtype=np.float64)
        )
        return d * (1.0 + self.afterpulse_probability)

    def error_probability(self, mu: ArrayLike) -> FloatArray:
        """E(mu): probability of an erroneous click per pulse of intensity mu."""
        m = np.asarray(mu, dtype=np.float64)
        d = 1.0 - (1.0 - 2.0 * self.dark_count_probability) * np.exp(-self.eta_system * m)
        return (
            self.dark_count_probability
            + self.misalignment * (1.0 - np.exp(-self.eta_system * m))
            + self.afterpulse_probability * d / 2.0
        )

    def _check(self, params: DecoyParams) -> None:
        _check_mu((params.mu1, params.mu2, self.mu3))

    def _per_pulse(
        self, mu: FloatArray, p: FloatArray, q_x: FloatArray | float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """(n_x, n_z, m_z, m_x) per pulse sent, first axis the intensity."""
        r, e = self.detection_probability(mu), self.error_probability(mu)
        qx2, qz2 = q_x**2, (1.0 - q_x) ** 2
        return qx2 * p * r, qz2 * p * r, qz2 * p * e, qx2 * p * e

    def expected_counts_per_pulse(self, params: DecoyParams) -> DecoyCounts:
        """Expected counts per pulse sent: n_X,k = q_x^2 p_k R_k, n_Z,k = (1 - q_x)^2 p_k R_k,
        and the errors with E_k in place of R_k."""
        self._check(params)
        mu, p = _mu_p(params, self.mu3)
        n_x, n_z, m_z, m_x = self._per_pulse(mu, p, params.q_x)
        return DecoyCounts(_tup(n_x), _tup(n_z), _tup(m_z), _tup(m_x))

    def pulses_for(self, params: DecoyParams, n_x: float) -> float:
        """N, the pulses to send so that the expected n_X (all intensities) equals ``n_x``."""
        return n_x / self.expected_counts_per_pulse(params).n_x_total

    def key_length(
        self, params: DecoyParams, n_x: float, eps_cor: float = 1e-15, kappa: float = 1e-15
    ) -> tuple[KeyLengthResult, float]:
        """The key length for the expected counts of a block of ``n_x``, and N.

        Charges lambda_EC = f_EC n_X h(E_X) and applies no QBER abort (the paper has none).
        """
        per_pulse = self.expected_counts_per_pulse(params)
        pulses = n_x / per_pulse.n_x_total
        result = finite_key_length(
            per_pulse.scaled(pulses),
            (params.mu1, params.mu2, self.mu3),
            (params.p_mu1, params.p_mu2, 1.0 - params.p_mu1 - params.p_mu2),
            eps_cor=eps_cor,
            kappa=kappa,
            f_ec=self.ec_efficiency,
            qber_abort=0.5,
        )
        return result, pulses

    def rate_per_pulse(
        self, params: DecoyParams, n_x: float, eps_cor: float = 1e-15, kappa: float = 1e-15
    ) -> float:
        """Secret key bits per pulse sent, ell / N, for a block of ``n_x`` (paper's Fig. 1)."""
        result, pulses = self.key_length(params, n_x, eps_cor, kappa)
        return result.ell / pulses

    def asymptotic_rate_per_pulse(self, params: DecoyParams) -> float:
        """The same bounds without finite-size terms (three intensities; Fig. 1 dashed curve)."""
        self._check(params)
        mu, p = _mu_p(params, self.mu3)
        n_x, n_z, m_z, m_x = self._per_pulse(mu, p, params.q_x)
        lam = self.ec_efficiency * n_x.sum() * _entropy(np.asarray(m_x.sum() / n_x.sum()))
        b = _bounds(n_x, n_z, m_z, mu, p, lam, 1.0, 1.0, finite=False)
        return max(float(b.ell_real), 0.0)


def _mu_p(params: DecoyParams, mu3: float) -> tuple[FloatArray, FloatArray]:
    mu = np.array([params.mu1, params.mu2, mu3])
    p = np.array([params.p_mu1, params.p_mu2, 1.0 - params.p_mu1 - params.p_mu2])
    return mu, p


def _tup(a: FloatArray) -> tuple[float, float, float]:
    return float(a[0]), float(a[1]), float(a[2])
