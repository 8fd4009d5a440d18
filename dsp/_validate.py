"""Argument checks shared by the dsp modules (bad arguments raise TypeError/ValueError)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["check_bits"]


def check_bits(name: str, bits: object) -> NDArray[np.uint8]:
    """Checks a public bit array (1-d numpy ``uint8`` of 0/1) and returns it contiguous.

    Raises:
        TypeError: not a numpy array, or not uint8 (the message names ``name``).
        ValueError: not one-dimensional, or a value other than 0 and 1.
    """
    if not isinstance(bits, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint8 bits, got {type(bits).__name__}")
    if bits.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {bits.dtype}")
    if bits.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {bits.shape}")
    if bits.size and int(bits.max()) > 1:
        raise ValueError(f"{name} must hold only 0 and 1")
    return np.ascontiguousarray(bits)
