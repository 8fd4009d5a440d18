"""Binding of PicoQuant's HydraHarp 400 library (``libhh400.so``, HHLib 3.0 ABI).

:class:`HydraHarpLib` opens a device in T2 mode, calibrates it, and wraps the calls a time
tagger needs. Inputs are constant-fraction discriminators (``HH_SetInputCFD``: level 0..1000 mV,
zero cross 0..40 mV); ``HH_ReadFiFo`` takes a record count of at most :data:`TTREADMAX`. Every
return code goes through :func:`_check`, which raises
:class:`~qkdnode.drivers.errors.VendorLibraryError` with ``HH_GetErrorString``'s text.

Records: HHLib 1.x writes v1 T2 records (rtHydraHarpT2), 2.x and later v2 (rtHydraHarp2T2);
:meth:`HydraHarpLib.record_type` says which by the library version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cffi import FFI
from numpy.typing import NDArray

from qkdnode.drivers.picoquant.records import RT_HYDRAHARP2_T2, RT_HYDRAHARP_T2

from .._picoquant import PicoQuantLibrary, check_rc, common_cdef

__all__ = ["TTREADMAX", "HydraHarpLib"]

# Records one HH_ReadFiFo call can return (hhdefin.h).
TTREADMAX = 131072

ffi = FFI()
ffi.cdef(common_cdef("HH_") + """
int HH_Calibrate(int devidx);
int HH_SetSyncCFD(int devidx, int level, int zc);
int HH_SetInputCFD(int devidx, int channel, int level, int zc);
int HH_ReadFiFo(int devidx, unsigned int *buffer, int count, int *nactual);
""")


def _check(lib: Any, rc: int, call: str) -> None:
    """Raises VendorLibraryError with HH_GetErrorString's text for a negative return code."""
    check_rc(ffi, lib, "HH_", rc, call)


class HydraHarpLib(PicoQuantLibrary):
    """One HydraHarp 400 in T2 mode.

    Args:
        path: the library file (``libhh400.so``).
        device_index: the USB device index, 0..7.

    Raises:
        TransportError: the library cannot be loaded.
        VendorLibraryError: the device cannot be opened, initialised or calibrated.
    """

    PREFIX = "HH_"
    WHAT = "HydraHarp HHLib"
    ffi = ffi

    def __init__(self, path: Any, device_index: int = 0) -> None:
        self._buffer = ffi.new("unsigned int[]", TTREADMAX)
        super().__init__(path, device_index)

    def _check(self, rc: int, call: str) -> None:
        _check(self._lib, rc, call)

    def _after_initialize(self) -> None:
        self._call("Calibrate", self.device_index)

    def record_type(self) -> int:
        """The T2 record type the library writes (v1 for HHLib 1.x, v2 from 2.0 on)."""
        major = self.library_version().split(".", 1)[0]
        return RT_HYDRAHARP_T2 if major == "1" else RT_HYDRAHARP2_T2

    def set_sync_cfd(self, level_mv: int, zero_cross_mv: int) -> None:
        """``HH_SetSyncCFD``: discriminator level and zero cross, mV."""
        self._require_open()
        self._call("SetSyncCFD", self.device_index, int(level_mv), int(zero_cross_mv))

    def set_input_cfd(self, channel: int, level_mv: int, zero_cross_mv: int) -> None:
        """``HH_SetInputCFD`` of API channel ``channel`` (0-based), mV."""
        self._require_open()
        self._call("SetInputCFD", self.device_index, int(channel), int(level_mv),
                   int(zero_cross_mv))

    def read_fifo(self) -> NDArray[np.uint32]:
        """``HH_ReadFiFo`` of up to :data:`TTREADMAX` records (a copy)."""
        self._require_open()
        n = ffi.new("int *")
        with self._lock:
            self._call("ReadFiFo", self.device_index, self._buffer, TTREADMAX, n)
            return self._records(self._buffer, int(n[0]), TTREADMAX)
