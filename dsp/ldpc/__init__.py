"""LDPC codes for one-way syndrome reconciliation: the shipped family, loading and construction.

``codes`` holds :class:`LdpcCode` and the loaders (``get_code``, ``load_code``,
``code_from_matrix``, ``code_from_qc``); ``construct`` rebuilds the shipped family (quasi-cyclic
PEG) from the degree distributions kept next to it; ``decoder`` is the decoding API over the
kernels of ``kernels`` and ``phi``.
"""

from .codes import (
    LdpcCode,
    QcLayout,
    available_codes,
    code_from_matrix,
    code_from_qc,
    get_code,
    load_code,
    syndrome,
)

__all__ = [
    "LdpcCode",
    "QcLayout",
    "available_codes",
    "code_from_matrix",
    "code_from_qc",
    "get_code",
    "load_code",
    "syndrome",
]
