"""Finite-key parameter estimation for decoy-state BB84.

The bounds are those of Lim, Curty, Walenta, Xu, Zbinden, "Concise security bounds for practical
decoy-state quantum key distribution", PRA 89, 022307 (2014), Eqs. (1)-(5), exactly as
``shared/reference/PHYSICS.md`` states them: key from the X basis, phase errors from the Z basis,
three intensities mu1 > mu2 + mu3, mu2 > mu3 >= 0, every error term eps_sec / 21.

* :func:`finite_key_length` turns observed per-intensity counts (:class:`DecoyCounts`) into a
  secret key length (:class:`KeyLengthResult`). A QBER above ``qber_abort`` is an abort result,
  not an exception.
* :class:`LinkModel` is the paper's dedicated-fibre model (Sec. IV, with eta_sys in the
  misalignment term as PHYSICS.md explains) giving expected counts and the rate per pulse.
* :func:`optimize_decoy` finds the rate-maximising (mu1, mu2, p_mu1, p_mu2, q_x) globally
  (differential evolution over an unconstrained parametrisation).

``eps_sec = kappa * ell`` (the paper's Fig. 1 choice) makes ell appear in its own bound. The
bound L(eps) is increasing in eps, so the largest integer ell with ell <= L(kappa * ell) is the
limit of ell_{n+1} = min(ell_n, floor(L(kappa * ell_n))) started at ell_0 = n_X (privacy
amplification never outputs more bits than it is given): the sequence never falls below that
largest solution and stops, after a few steps since L grows like log(ell), exactly on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import differential_evolution

__all__ = [
    "DecoyCounts",
    "DecoyOptimum",
    "DecoyParams",
    "KeyLengthResult",
    "LinkModel",
    "binary_entropy",
    "finite_key_length",
    "optimize_decoy",
]

# Lim et al. split eps_sec into 21 equal error terms (their Eq. (B4)).
EPS_SPLIT = 21.0
# Standard BB84 abort point: above ~11% QBER one-way post-processing yields no key.
DEFAULT_QBER_ABORT = 0.11
# Probabilities p_k must sum to one up to rounding of the caller's arithmetic.
PROBABILITY_SUM_TOLERANCE = 1e-9
# Continuous fixed point ell = L(kappa * ell) inside the optimiser: at most this many secant
# steps, stopping when no ell moves by more than the tolerance (bits; far below the floor's 1).
_KAPPA_ITERATIONS = 30
_KAPPA_TOLERANCE = 1e-6
# Secant slopes are capped below 1 so that a step always exists (the bound's slope at its largest
# fixed point is <= 1; a cap only shortens the step).
_MAX_SECANT_SLOPE = 0.99

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- helpers


def _entropy(p: FloatArray) -> FloatArray:
    """h(p) with p clipped into [0, 1]; no checks (internal, vectorised)."""
    q = np.clip(p, 0.0, 1.0)
    inner = (q > 0.0) & (q < 1.0)
    safe = np.where(inner, q, 0.5)
    h = -safe * np.log2(safe) - (1.0 - safe) * np.log2(1.0 - safe)
    return np.where(inner, h, 0.0)


@overload
def binary_entropy(p: float) -> float: ...
@overload
def binary_entropy(p: NDArray[Any]) -> FloatArray: ...
def binary_entropy(p: float | NDArray[Any]) -> float | FloatArray:
    """Binary entropy h(p) = -p log2 p - (1 - p) log2(1 - p), with h(0) = h(1) = 0.

    Args:
        p: a probability or an array of them, each in [0, 1].

    Returns:
        A float for a scalar input, else an array of the input's shape.

    Raises:
        ValueError: a value outside [0, 1] or NaN.
    """
    a = np.asarray(p, dtype=np.float64)
    if not bool(np.all((a >= 0.0) & (a <= 1.0))):
        raise ValueError("p must lie in [0, 1]")
    h = _entropy(a)
    return float(h) if h.ndim == 0 else h


def _check_eps(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return v


def _triple(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    if isinstance(values, str | bytes) or len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (one per intensity), got {values!r}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {values!r}")
    return out[0], out[1], out[2]


def _check_mu(mu: Sequence[float]) -> tuple[float, float, float]:
    m1, m2, m3 = _triple("mu", mu)
    if not (m3 >= 0.0 and m2 > m3 and m1 > m2 + m3):
        raise ValueError(f"mu must satisfy mu1 > mu2 + mu3 and mu2 > mu3 >= 0, got {mu!r}")
    return m1, m2, m3


def _check_p(p: Sequence[float]) -> tuple[float, float, float]:
    t = _triple("p", p)
    if not all(0.0 < v < 1.0 for v in t) or abs(sum(t) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(f"p must be three probabilities in (0, 1) summing to 1, got {p!r}")
    return t


# --------------------------------------------------------------------------- inputs, outputs


@dataclass(frozen=True, slots=True)
class DecoyCounts:
    """Observed (or expected) counts per intensity class k = 0, 1, 2 (mu1, mu2, mu3).

    Attributes:
        n_x: sifted X-basis detections per intensity.
        n_z: sifted Z-basis detections per intensity.
        m_z: Z-basis bit errors per intensity.
        m_x: X-basis bit errors per intensity, if known (gives the X QBER when no ``qber`` is
            passed to :func:`finite_key_length`).

    Counts are stored as floats so that expected (model) counts fit too; observed ones are
    integers. Each must be finite, >= 0, and errors may not exceed detections.
    """

    n_x: tuple[float, float, float]
    n_z: tuple[float, float, float]
    m_z: tuple[float, float, float]
    m_x: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("n_x", "n_z", "m_z", "m_x"):
            value = getattr(self, name)
            if value is None:
                continue
            t = _triple(name, value)
            if min(t) < 0.0:
                raise ValueError(f"{name} must be non-negative, got {value!r}")
            object.__setattr__(self, name, t)
        if any(m > n for m, n in zip(self.m_z, self.n_z, strict=True)):
            raise ValueError("m_z may not exceed n_z for any intensity")
        if self.m_x is not None and any(m > n for m, n in zip(self.m_x, self.n_x, strict=True)):
            raise ValueError("m_x may not exceed n_x for any intensity")

    def scaled(self, factor: float) -> DecoyCounts:
        """Every count times ``factor`` (e.g. expected counts per pulse times N)."""

        def times(t: tuple[float, float, float]) -> tuple[float, float, float]:
            return t[0] * factor, t[1] * factor, t[2] * factor

        m_x = None if self.m_x is None else times(self.m_x)
        return DecoyCounts(times(self.n_x), times(self.n_z), times(self.m_z), m_x)

    @property
    def n_x_total(self) -> float:
        """n_X = sum over intensities (the post-processing block size)."""
        return sum(self.n_x)

    @property
    def qber_z(self) -> float | None:
        """Observed Z-basis error rate, None without Z detections."""
        n = sum(self.n_z)
        return sum(self.m_z) / n if n > 0 else None

    @property
    def qber_x(self) -> float | None:
        """Observed X-basis error rate, None if m_x is unknown or there are no X detections."""
        n = self.n_x_total
        return sum(self.m_x) / n if self.m_x is not None and n > 0 else None


@dataclass(frozen=True, slots=True)
class KeyLengthResult:
    """The terms of Lim et al. Eq. (1) and the key length.

    Attributes:
        ell: secret key length in bits (>= 0; 0 means no key, see ``reason``).
        s_x0, s_x1: lower bounds on vacuum and single-photon events in the X key.
        s_z0, s_z1: the same for the Z basis.
        v_z1: upper bound on single-photon errors in Z.
        phi_x: upper bound on the single-photon phase error rate in X (nan without bound).
        lambda_ec: error-correction leakage charged, in bits.
        eps_sec: the secrecy parameter the bounds were evaluated at (kappa * ell with kappa).
        qber_x, qber_z: the error rates checked against ``qber_abort`` (None if unknown).
        reason: why ``ell`` is 0 (None when there is key).
    """

    ell: int
    s_x0: float
    s_x1: float
    s_z0: float
    s_z1: float
    v_z1: float
    phi_x: float
    lambda_ec: float
    eps_sec: float
    qber_x: float | None
    qber_z: float | None
    reason: str | None

    @property
    def aborted(self) -> bool:
        """True when the QBER exceeded the abort threshold."""
        return self.reason is not None and self.reason.startswith("abort")


# --------------------------------------------------------------------------- the bounds


class _Bounds(NamedTuple):
    s_x0: FloatArray
    s_x1: FloatArray
    s_z0: FloatArray
    s_z1: FloatArray
    v_z1: FloatArray
    phi_x: FloatArray
    ell_real: FloatArray  # Eq. (1) before the floor; negative means no key


def _bounds(
    n_x: FloatArray,
    n_z: FloatArray,
    m_z: FloatArray,
    mu: FloatArray,
    p: FloatArray,
    lambda_ec: FloatArray | float,
    eps_sec: FloatArray | float,
    eps_cor: float,
    *,
    finite: bool = True,
) -> _Bounds:
    """Lim et al. Eqs. (1)-(5), vectorised: the first axis of the count, mu and p arrays is the
    intensity (length 3), further axes broadcast. ``finite=False`` drops every finite-size term
    (the asymptotic, three-intensity rate of the paper's dashed curve)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ln_eps = np.log(EPS_SPLIT / eps_sec) if finite else 0.0
        weight = np.exp(mu) / p  # e^{mu_k} / p_k
        tau0 = np.sum(p * np.exp(-mu), axis=0)
        tau1 = np.sum(p * np.exp(-mu) * mu, axis=0)
        mu1, mu2, mu3 = mu[0], mu[1], mu[2]

        def spread(counts: FloatArray, total: FloatArray) -> tuple[FloatArray, FloatArray]:
            delta = np.sqrt(total / 2.0 * ln_eps)
            return weight * (counts - delta), weight * (counts + delta)

        def vacuum_and_single(counts: FloatArray) -> tuple[FloatArray, FloatArray]:
            lo, hi = spread(counts, np.sum(counts, axis=0))
            s0 = np.maximum(tau0 * (mu2 * lo[2] - mu3 * hi[1]) / (mu2 - mu3), 0.0)
            s1 = (
                tau1
                * mu1
                * (lo[1] - hi[2] - (mu2**2 - mu3**2) / mu1**2 * (hi[0] - s0 / tau0))
                / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
            )
            return s0, s1

        s_x0, s_x1 = vacuum_and_single(n_x)
        s_z0, s_z1 = vacuum_and_single(n_z)
        m_lo, m_hi = spread(m_z, np.sum(m_z, axis=0))
        v_z1 = np.maximum(tau1 * (m_hi[1] - m_lo[2]) / (mu2 - mu3), 0.0)

        ok = (s_x1 > 0.0) & (s_z1 > 0.0)
        c = np.where(ok, s_z1, 1.0)
        d = np.where(ok, s_x1, 1.0)
        b = np.where(ok, v_z1 / c, 0.5)
        if finite:
            # gamma(eps_sec, b, c, d); it tends to 0 as b -> 0 (b log 1/b), hence the guard.
            bb = np.clip(b, 1e-300, 1.0 - 1e-16) * (1.0 - np.clip(b, 0.0, 1.0 - 1e-16))
            log_arg = (c + d) / (c * d * bb) * EPS_SPLIT**2 / np.asarray(eps_sec) ** 2
            gamma = np.sqrt(np.maximum((c + d) * bb / (c * d * np.log(2.0)) * np.log2(log_arg), 0))
            gamma = np.where(b > 0.0, gamma, 0.0)
        else:
            gamma = np.zeros_like(b)
        phi = np.where(ok, b + gamma, np.nan)
        # Where no single-photon bound exists the key is charged the (negative) bounds
        # themselves: 0 for the literal formula at s = 0, and a slope the optimiser can climb.
        single = np.where(
            ok,
            d * (1.0 - _entropy(np.minimum(phi, 0.5))),
            np.minimum(s_x1, 0.0) + np.minimum(s_z1, 0.0),
        )
        cost = 6.0 * np.log2(EPS_SPLIT / eps_sec) + np.log2(2.0 / eps_cor) if finite else 0.0
        ell_real = s_x0 + single - lambda_ec - cost
    return _Bounds(s_x0, s_x1, s_z0, s_z1, v_z1, phi, ell_real)


def finite_key_length(
    counts: DecoyCounts,
    mu: Sequence[float],
    p: Sequence[float],
    *,
    eps_cor: float,
    eps_sec: float | None = None,
    kappa: float | None = None,
    ec_leak: float | None = None,
    f_ec: float | None = None,
    qber: float | None = None,
    qber_abort: float = DEFAULT_QBER_ABORT,
) -> KeyLengthResult:
    """Secret key length from observed counts (Lim et al. 2014, Eq. (1)).

    Args:
        counts: per-intensity detections and errors.
        mu: intensities (mu1, mu2, mu3), mu1 > mu2 + mu3, mu2 > mu3 >= 0.
        p: probabilities (p_mu1, p_mu2, p_mu3) of sending them, summing to 1.
        eps_cor: correctness parameter (verification hash), in (0, 1).
        eps_sec: secrecy parameter, in (0, 1); or else
        kappa: secrecy per key bit, eps_sec = kappa * ell (solved for, see the module doc).
        ec_leak: the bits error correction actually disclosed; or else
        f_ec: reconciliation efficiency (>= 1), charging f_ec * n_X * h(qber).
        qber: the X-basis error rate (default: from ``counts.m_x``); needed with ``f_ec``.
        qber_abort: abort above this X or Z error rate, in (0, 0.5].

    Returns:
        The bounds and ell; ell = 0 carries a ``reason`` (an abort starts with "abort").

    Raises:
        TypeError: ``counts`` is not a :class:`DecoyCounts`.
        ValueError: an argument is out of range (the message names it).
    """
    if not isinstance(counts, DecoyCounts):
        raise TypeError(f"counts must be a DecoyCounts, got {type(counts)}")
    mu_t = _check_mu(mu)
    p_t = _check_p(p)
    eps_cor = _check_eps("eps_cor", eps_cor)
    if (eps_sec is None) == (kappa is None):
        raise ValueError("give exactly one of eps_sec and kappa")
    if (ec_leak is None) == (f_ec is None):
        raise ValueError("give exactly one of ec_leak and f_ec")
    if not 0.0 < qber_abort <= 0.5:
        raise ValueError(f"qber_abort must lie in (0, 0.5], got {qber_abort}")
    if qber is not None and not 0.0 <= qber <= 0.5:
        raise ValueError(f"qber must lie in [0, 0.5], got {qber}")
    qber_x = qber if qber is not None else counts.qber_x
    n_x_total = counts.n_x_total
    if ec_leak is not None:
        if not (math.isfinite(ec_leak) and ec_leak >= 0.0):
            raise ValueError(f"ec_leak must be a finite number of bits >= 0, got {ec_leak}")
        lambda_ec = float(ec_leak)
    else:
        assert f_ec is not None
        if not f_ec >= 1.0:
            raise ValueError(f"f_ec must be >= 1 (Slepian-Wolf), got {f_ec}")
        if qber_x is None:
            raise ValueError("qber: needed with f_ec when counts has no m_x")
        lambda_ec = f_ec * n_x_total * binary_entropy(min(qber_x, 0.5))

    arrays = (np.asarray(counts.n_x), np.asarray(counts.n_z), np.asarray(counts.m_z))
    mu_a, p_a = np.asarray(mu_t), np.asarray(p_t)

    def evaluate(eps: float) -> _Bounds:
        return _bounds(*arrays, mu_a, p_a, lambda_ec, eps, eps_cor)

    ell_cap = math.floor(n_x_total)
    if eps_sec is not None:
        eps = _check_eps("eps_sec", eps_sec)
        bounds = evaluate(eps)
        ell = min(ell_cap, math.floor(float(bounds.ell_real)))
    else:
        kappa = _check_eps("kappa", kappa if kappa is not None else 0.0)
        # Largest integer ell <= L(kappa * ell), from above (module docstring); eps < 1.
        ell = max(1, min(ell_cap, math.ceil(1.0 / kappa) - 1))
        while True:
            eps = kappa * ell
            bounds = evaluate(eps)
            nxt = math.floor(float(bounds.ell_real))
            if nxt >= ell or nxt < 1:
                ell = ell if nxt >= ell else 0
                break
            ell = nxt
    ell = max(ell, 0)

    qber_z = counts.qber_z
    reason: str | None = None
    if qber_x is not None and qber_x > qber_abort:
        reason = f"abort: X-basis QBER {qber_x:.4f} above qber_abort {qber_abort}"
    elif qber_z is not None and qber_z > qber_abort:
        reason = f"abort: Z-basis QBER {qber_z:.4f} above qber_abort {qber_abort}"
    elif ell == 0:
        reason = _no_key_reason(bounds, n_x_total)
    if reason is not None:
        ell = 0
    return KeyLengthResult(
        ell=ell,
        s_x0=float(bounds.s_x0),
        s_x1=float(bounds.s_x1),
        s_z0=float(bounds.s_z0),
        s_z1=float(bounds.s_z1),
        v_z1=float(bounds.v_z1),
        phi_x=float(bounds.phi_x),
        lambda_ec=lambda_ec,
        eps_sec=eps,
        qber_x=qber_x,
        qber_z=qber_z,
        reason=reason,
    )


def _no_key_reason(b: _Bounds, n_x_total: float) -> str:
    if n_x_total < 1.0:
        return "no X-basis detections"
    if float(b.s_x1) <= 0.0:
        return "no single-photon X events can be bounded (s_x1 <= 0)"
    if float(b.s_z1) <= 0.0:
        return "no single-photon Z events can be bounded (s_z1 <= 0): no phase-error bound"
    if float(b.phi_x) >= 0.5:
        return f"phase-error bound {float(b.phi_x):.3f} >= 0.5"
    return f"finite-key costs exceed the entropy bound (Eq. (1) gives {float(b.ell_real):.1f})"


# --------------------------------------------------------------------------- link model


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


# --------------------------------------------------------------------------- optimisation


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
