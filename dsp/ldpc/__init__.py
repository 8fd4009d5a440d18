"""LDPC codes for one-way syndrome reconciliation: the shipped family, loading and construction.

``codes`` holds :class:`LdpcCode` and the loaders (``get_code``, ``load_code``,
``code_from_matrix``); ``construct`` rebuilds the shipped family (quasi-cyclic PEG) from the degree
distributions kept next to it.
"""

from .codes import (
    LdpcCode,
    available_codes,
    code_from_matrix,
    get_code,
    load_code,
    syndrome,
)

__all__ = [
    "LdpcCode",
    "available_codes",
    "code_from_matrix",
    "get_code",
    "load_code",
    "syndrome",
]
