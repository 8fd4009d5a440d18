"""Exceptions of the distillation layer.

Bad arguments (wrong dtype, length, seed size) raise the built-in ``TypeError``/``ValueError``;
these classes are for a distillation step that could not produce its result. A QBER above the
abort threshold is an ordinary abort result, not an exception. No message ever holds key bits.
"""

from __future__ import annotations


class DistillationError(Exception):
    """Base of all distillation failures."""


class ReconciliationFailed(DistillationError):
    """Error correction did not converge within its budget of rounds."""


class VerificationFailed(DistillationError):
    """The verification tags of the two ends differ: the block must be discarded."""


class AcquisitionFailed(DistillationError):
    """Qsync found no slot timing in a window of time tags (too few, no pattern correlation)."""
