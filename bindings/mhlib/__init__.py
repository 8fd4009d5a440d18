"""Binding of PicoQuant's MultiHarp library (``mhlib.so``, MHLib 3.x ABI).

:class:`MultiHarpLib` opens a MultiHarp 150/160 in T2 mode. It is not a HydraHarp binding with
another prefix: ``MH_ReadFiFo(devidx, buffer, nactual)`` has no count argument and the buffer
must hold :data:`TTREADMAX` (1048576) records; inputs have edge triggers
(``MH_SetInputEdgeTrg``, -1200..1200 mV) and a settable extended dead time
(``MH_SetInputDeadTime``, 800..160000 ps); there is no calibration call. Records are always v2
(rtMultiHarpT2). Every return code goes through :func:`_check`, which raises
:class:`~qkdnode.drivers.errors.VendorLibraryError` with ``MH_GetErrorString``'s text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cffi import FFI
from numpy.typing import NDArray

from qkdnode.drivers.picoquant.records import RT_MULTIHARP_T2

from .._picoquant import PicoQuantLibrary, check_rc, common_cdef

__all__ = ["EXTDEADMAX", "EXTDEADMIN", "TTREADMAX", "MultiHarpLib"]

# Records MH_ReadFiFo may write: its buffer must hold this many (mhdefin.h).
TTREADMAX = 1048576
# Extended dead time range, ps (mhdefin.h).
EXTDEADMIN = 800
EXTDEADMAX = 160000

ffi = FFI()
ffi.cdef(common_cdef("MH_") + """
int MH_SetSyncEdgeTrg(int devidx, int level, int edge);
int MH_SetInputEdgeTrg(int devidx, int channel, int level, int edge);
int MH_SetInputDeadTime(int devidx, int channel, int on, int deadtime);
int MH_ReadFiFo(int devidx, unsigned int *buffer, int *nactual);
""")


def _check(lib: Any, rc: int, call: str) -> None:
    """Raises VendorLibraryError with MH_GetErrorString's text for a negative return code."""
    check_rc(ffi, lib, "MH_", rc, call)


class MultiHarpLib(PicoQuantLibrary):
    """One MultiHarp in T2 mode.

    Args:
        path: the library file (``mhlib.so``).
        device_index: the USB device index, 0..7.

    Raises:
        TransportError: the library cannot be loaded.
        VendorLibraryError: the device cannot be opened or initialised.
    """

    PREFIX = "MH_"
    WHAT = "MultiHarp MHLib"
    ffi = ffi

    def __init__(self, path: Any, device_index: int = 0) -> None:
        self._buffer = ffi.new("unsigned int[]", TTREADMAX)
        super().__init__(path, device_index)

    def _check(self, rc: int, call: str) -> None:
        _check(self._lib, rc, call)

    def record_type(self) -> int:
        """The T2 record type (MultiHarp writes v2 records)."""
        return RT_MULTIHARP_T2

    def set_sync_edge(self, level_mv: int, rising: bool) -> None:
        """``MH_SetSyncEdgeTrg``: trigger level, mV, and edge."""
        self._require_open()
        self._call("SetSyncEdgeTrg", self.device_index, int(level_mv), 1 if rising else 0)

    def set_input_edge(self, channel: int, level_mv: int, rising: bool) -> None:
        """``MH_SetInputEdgeTrg`` of API channel ``channel`` (0-based)."""
        self._require_open()
        self._call("SetInputEdgeTrg", self.device_index, int(channel), int(level_mv),
                   1 if rising else 0)

    def set_input_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """``MH_SetInputDeadTime``: 0 selects the minimal dead time, else 800..160000 ps."""
        self._require_open()
        on = 1 if dead_time_ps else 0
        self._call("SetInputDeadTime", self.device_index, int(channel), on, int(dead_time_ps))

    def read_fifo(self) -> NDArray[np.uint32]:
        """``MH_ReadFiFo``: up to :data:`TTREADMAX` records (a copy)."""
        self._require_open()
        n = ffi.new("int *")
        with self._lock:
            self._call("ReadFiFo", self.device_index, self._buffer, n)
            return self._records(self._buffer, int(n[0]), TTREADMAX)
