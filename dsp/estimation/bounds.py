"""The finite-key bounds of Lim et al. 2014 (Eqs. (1)-(5)) and the key length from counts.

``eps_sec = kappa * ell`` (the paper's Fig. 1 choice) makes ell appear in its own bound. The
bound L(eps) is increasing in eps, so the largest integer ell with ell <= L(kappa * ell) is the
limit of ell_{n+1} = min(ell_n, floor(L(kappa * ell_n))) started at ell_0 = n_X (privacy
amplification never outputs more bits than it is given): the sequence never falls below that
largest solution and stops, after a few steps since L grows like log(ell), exactly on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_QBER_ABORT",
    "DecoyCounts",
    "KeyLengthResult",
    "binary_entropy",
    "finite_key_length",
]

# Lim et al. split eps_sec into 21 equal error terms (their Eq. (B4)).
EPS_SPLIT = 21.0
# Standard BB84 abort point: above ~11% QBER one-way post-processing yields no key.
DEFAULT_QBER_ABORT = 0.11
# Probabilities p_k must sum to one up to rounding of the caller's arithmetic.
PROBABILITY_SUM_TOLERANCE = 1e-9

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
