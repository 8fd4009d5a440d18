"""Finite-key parameter estimation for decoy-state BB84.

The bounds are those of Lim, Curty, Walenta, Xu, Zbinden, "Concise security bounds for practical
decoy-state quantum key distribution", PRA 89, 022307 (2014), Eqs. (1)-(5), exactly as
``shared/reference/PHYSICS.md`` states them: key from the X basis, phase errors from the Z basis,
three intensities mu1 > mu2 + mu3, mu2 > mu3 >= 0, every error term eps_sec / 21.

* :func:`finite_key_length` (module ``bounds``) turns observed per-intensity counts
  (:class:`DecoyCounts`) into a secret key length (:class:`KeyLengthResult`). A QBER above
  ``qber_abort`` is an abort result, not an exception.
* :class:`LinkModel` (module ``link``) is the paper's dedicated-fibre model (Sec. IV, with
  eta_sys in the misalignment term as PHYSICS.md explains) giving expected counts and the rate per
  pulse.
* :func:`optimize_decoy` (module ``optimize``) finds the rate-maximising (mu1, mu2, p_mu1, p_mu2,
  q_x) globally (differential evolution over an unconstrained parametrisation).
"""

from __future__ import annotations

from .bounds import (
    DEFAULT_QBER_ABORT,
    DecoyCounts,
    KeyLengthResult,
    binary_entropy,
    finite_key_length,
)
from .link import DecoyParams, LinkModel
from .optimize import DecoyOptimum, optimize_decoy

__all__ = [
    "DEFAULT_QBER_ABORT",
    "DecoyCounts",
    "DecoyOptimum",
    "DecoyParams",
    "KeyLengthResult",
    "LinkModel",
    "binary_entropy",
    "finite_key_length",
    "optimize_decoy",
]
