"""Opening a vendor library with cffi: one place for the error a missing library gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cffi import FFI

from qkdnode.drivers.errors import TransportError

__all__ = ["open_library"]


def open_library(ffi: FFI, path: str | Path, what: str) -> Any:
    """``ffi.dlopen(path)``, raising :class:`TransportError` naming ``what`` and the path."""
    try:
        return ffi.dlopen(str(path))
    except OSError as exc:
        raise TransportError(f"cannot load the {what} library {str(path)!r}: {exc}") from None
