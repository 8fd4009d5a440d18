"""Closed-form optics of the simulated link: modulator, channel, routing, click probabilities.

These are the model's analytic parts; :class:`~qkdnode.drivers.sim.link.SimulatedLink` draws
events from them, and tests and bench procedures compare measured rates with them.

Intensity modulator (a Mach-Zehnder, see :class:`~qkdnode.drivers.sim.params.SourceParams`):
``T(V) = T_min + (1 - T_min) sin^2(pi (V - V_null) / (2 V_pi))``, ``T_min = 10^(-ER/10)``.
The transmitter's drive level of class k, ``v_k``, is calibrated at the nominal bias (the null)
so that ``mu1 T(V_null + v_k) = mu_k``; the mean photon number actually sent is
``mu1 T(V_bias + v_k)``. The same modulator carves the encoded states, so the fraction of light
in the wrong state is its contrast at the current bias, ``T(V_bias) / (T(V_bias) +
T(V_bias + V_pi))``; combined with the fibre's misalignment it gives the probability that a
photon measured in the matching basis reaches the wrong detector.

A photon of a slot with Alice's basis a and bit b reaches detector (basis c, bit d) with
probability ``q_c ((1 - e) if d == b else e)`` when c == a, ``q_c / 2`` otherwise
(``q_0 = q_x``, ``q_1 = 1 - q_x``). Photon numbers are Poisson, so the numbers detected by the
four detectors are independent Poisson variables and detector j clicks in a slot with
probability ``1 - exp(-mu eta_ch eta_j r_j)``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .params import N_DETECTORS, BenchParams, SourceParams

__all__ = [
    "N_TYPES",
    "click_patterns",
    "click_probability_table",
    "drive_levels",
    "encoding_error",
    "mean_photon_numbers",
    "slot_type",
    "transmission",
    "wrong_detector_probability",
]

# Slot types: basis (2) x bit (2) x intensity class (3); type = 6 * basis + 3 * bit + class.
N_TYPES = 12
N_CLASSES = 3


def slot_type(basis: int, bit: int, intensity: int) -> int:
    """Index of a (basis, bit, intensity class) combination in the probability tables."""
    return 6 * basis + 3 * bit + intensity


def transmission(src: SourceParams, voltage: float, null_v: float) -> float:
    """Intensity transmission of the modulator at ``voltage`` when its null is at ``null_v``."""
    t_min = math.pow(10.0, -src.extinction_ratio_db / 10.0)
    s = math.sin(math.pi * (voltage - null_v) / (2.0 * src.v_pi))
    return t_min + (1.0 - t_min) * s * s


def drive_levels(src: SourceParams) -> NDArray[np.float64]:
    """Drive voltage of each intensity class, calibrated at the nominal bias (the null).

    A class whose mu is below the modulator's leak ``mu1 T_min`` gets no drive (0 V): the leak
    is the least it can send.
    """
    t_min = math.pow(10.0, -src.extinction_ratio_db / 10.0)
    levels = np.empty(N_CLASSES, dtype=np.float64)
    for k, mu in enumerate((src.mu1, src.mu2, src.mu3)):
        x = min(1.0, max(0.0, (mu / src.mu1 - t_min) / (1.0 - t_min)))
        levels[k] = 2.0 * src.v_pi / math.pi * math.asin(math.sqrt(x))
    return levels


def mean_photon_numbers(src: SourceParams, bias_v: float, null_v: float) -> NDArray[np.float64]:
    """Mean photon numbers actually sent for classes 0, 1, 2 at a bias voltage."""
    return np.array([src.mu1 * transmission(src, bias_v + v, null_v) for v in drive_levels(src)],
                    dtype=np.float64)


def encoding_error(src: SourceParams, bias_v: float, null_v: float) -> float:
    """Fraction of the light the modulator leaves in the wrong state at a bias voltage."""
    off = transmission(src, bias_v, null_v)
    on = transmission(src, bias_v + src.v_pi, null_v)
    return off / (off + on)


def wrong_detector_probability(params: BenchParams, bias_v: float, null_v: float) -> float:
    """Probability that a photon measured in Alice's basis reaches the wrong detector."""
    e_mis = params.fibre.misalignment
    e_enc = encoding_error(params.source, bias_v, null_v)
    return e_mis * (1.0 - e_enc) + e_enc * (1.0 - e_mis)


def click_probability_table(params: BenchParams, bias_v: float, null_v: float
                            ) -> NDArray[np.float64]:
    """Photon click probability per slot, shape (4 detectors, 12 slot types).

    Dark counts, dead time and afterpulses are not included (they are not per-slot events).
    """
    mu = mean_photon_numbers(params.source, bias_v, null_v)
    e = wrong_detector_probability(params, bias_v, null_v)
    eta_ch = params.fibre.transmittance
    q = (params.receiver.q_x, 1.0 - params.receiver.q_x)
    table = np.empty((N_DETECTORS, N_TYPES), dtype=np.float64)
    for det in range(N_DETECTORS):
        c, d = divmod(det, 2)
        eta = eta_ch * params.detectors[det].efficiency
        for a in range(2):
            for b in range(2):
                route = (q[c] * ((1.0 - e) if d == b else e)) if a == c else q[c] * 0.5
                for k in range(N_CLASSES):
                    table[det, slot_type(a, b, k)] = -math.expm1(-mu[k] * eta * route)
    return table


def click_patterns(table: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.uint8]]:
    """Which detectors click in a slot, given that at least one does.

    Detectors click independently (Poisson photon numbers split independently), so pattern m
    (bit j set: detector j clicks) has probability ``prod p_j^[j in m] (1 - p_j)^[j not in m]``.

    Args:
        table: click probabilities, shape (detectors, types), from
            :func:`click_probability_table`.

    Returns:
        (any-click probability per type, cumulative conditional pattern probabilities per
        type in decreasing order of probability (the last entry set to 2 against rounding),
        the patterns' bit masks), the last two of shape (types, 2^detectors - 1).
    """
    n_det, n_types = table.shape
    n_pat = (1 << n_det) - 1
    p_any = -np.expm1(np.log1p(-table).sum(axis=0))
    cum = np.full((n_types, n_pat), 2.0)
    masks = np.zeros((n_types, n_pat), dtype=np.uint8)
    for t in range(n_types):
        probs = np.empty(n_pat)
        for m in range(1, n_pat + 1):
            probs[m - 1] = math.prod(
                table[j, t] if (m >> j) & 1 else 1.0 - table[j, t] for j in range(n_det))
        order = np.argsort(-probs, kind="stable")
        masks[t] = (order + 1).astype(np.uint8)
        if p_any[t] > 0.0:
            cum[t] = np.cumsum(probs[order]) / p_any[t]
            cum[t, -1] = 2.0
    return p_any, cum, masks
