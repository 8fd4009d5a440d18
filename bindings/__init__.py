"""cffi declarations of vendor C libraries and their C mocks.

One sub-package per vendor library, each a binding object with Pythonic methods over cffi's ABI
mode (``ffi.cdef`` of the header subset used, ``ffi.dlopen`` of the configured path):

* :mod:`.tdcbase`: qutools quTAG, standard library V1.5.x (``libtdcbase.so``);
* :mod:`.hhlib`: PicoQuant HydraHarp 400, HHLib 3.0 (``libhh400.so``);
* :mod:`.mhlib`: PicoQuant MultiHarp 150/160, MHLib 3.x (``mhlib.so``).

Every return code goes through the library's ``_check``, which raises
:class:`~qkdnode.drivers.errors.VendorLibraryError` with the library's own message. Raw cffi
objects never leave these modules.

``bindings/mocks/*.c`` are C libraries with the same symbols and signatures, backed by the
simulated optical bench; ``pip install`` compiles them into the package, and
:func:`mock_library_path` finds them. CI runs the bindings against them, so the code that runs
in the lab is the code CI runs.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

__all__ = ["MOCK_LIBRARIES", "mock_library_path"]

# The vendor libraries that have a C mock, by binding name.
MOCK_LIBRARIES = ("tdcbase", "hhlib", "mhlib")

_MOCK_DIR = Path(__file__).resolve().parent / "mocks"


def mock_library_path(library: str) -> Path:
    """The built C mock of a vendor library (``"tdcbase"``, ``"hhlib"`` or ``"mhlib"``).

    Raises:
        ValueError: an unknown library name.
        FileNotFoundError: the mock is not built (no C compiler when the package was
            installed, or an editable install that predates it), naming where it looked.
    """
    if library not in MOCK_LIBRARIES:
        raise ValueError(
            f"no C mock for library {library!r} (mocks exist for: {', '.join(MOCK_LIBRARIES)})")
    stem = f"_mock_{library}"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _MOCK_DIR / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the C mock of {library} ({stem}{importlib.machinery.EXTENSION_SUFFIXES[0]}) is not "
        f"built in {_MOCK_DIR}: install the package with a C compiler available "
        "(`pip install .`, or `pip install -e . --no-deps` in a checkout) so that setup.py "
        "compiles bindings/mocks/*.c")
