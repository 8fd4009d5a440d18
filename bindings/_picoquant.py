"""What the HydraHarp (HHLib) and MultiHarp (MHLib) bindings share.

The two libraries declare many calls alike with their own prefix (``HH_`` / ``MH_``): opening,
initialising, resolution, offsets, measurement control, flags. They differ where the hardware
does (CFD vs edge trigger inputs, settable dead time, ``ReadFiFo``'s arguments); those live in
:mod:`..hhlib` and :mod:`..mhlib`. Negative return codes are errors; the message is the
library's ``<prefix>GetErrorString``.
"""

from __future__ import annotations

import abc
import threading
from pathlib import Path
from typing import Any

import numpy as np
from cffi import FFI
from numpy.typing import NDArray

from qkdnode.drivers._closing import ClosesOnExit
from qkdnode.drivers.errors import DeviceError, VendorLibraryError

from ._loader import open_library

__all__ = ["ERROR_STRING_BYTES", "MAXDEVNUM", "MODE_T2", "PicoQuantLibrary", "common_cdef"]

MODE_T2 = 2
# PicoQuant's demos size these strings at 40 (error text), 8 (serial, version) and 16 (model)
# characters; 64 leaves room in every one.
ERROR_STRING_BYTES = 64
TEXT_BYTES = 64
# Device indices 0..7 (hhdefin.h / mhdefin.h MAXDEVNUM).
MAXDEVNUM = 8
FLAG_FIFOFULL = 0x0002


def common_cdef(prefix: str) -> str:
    """The declarations HHLib 3.0 and MHLib 3.x share, with ``prefix`` ``"HH_"`` or ``"MH_"``."""
    return f"""
int {prefix}GetLibraryVersion(char *vers);
int {prefix}GetErrorString(char *errstring, int errcode);
int {prefix}OpenDevice(int devidx, char *serial);
int {prefix}CloseDevice(int devidx);
int {prefix}Initialize(int devidx, int mode, int refsource);
int {prefix}GetHardwareInfo(int devidx, char *model, char *partno, char *version);
int {prefix}GetNumOfInputChannels(int devidx, int *nchannels);
int {prefix}SetSyncDiv(int devidx, int div);
int {prefix}SetSyncChannelOffset(int devidx, int value);
int {prefix}SetInputChannelOffset(int devidx, int channel, int value);
int {prefix}SetInputChannelEnable(int devidx, int channel, int enable);
int {prefix}GetResolution(int devidx, double *resolution);
int {prefix}StartMeas(int devidx, int tacq);
int {prefix}StopMeas(int devidx);
int {prefix}CTCStatus(int devidx, int *ctcstatus);
int {prefix}GetFlags(int devidx, int *flags);
"""


def check_rc(ffi: FFI, lib: Any, prefix: str, rc: int, call: str) -> None:
    """Raises VendorLibraryError with the library's message for a negative return code."""
    if rc < 0:
        buf = ffi.new("char[]", ERROR_STRING_BYTES)
        if getattr(lib, f"{prefix}GetErrorString")(buf, rc) < 0:
            text = "(no error text from the library)"
        else:
            text = ffi.string(buf).decode("ascii", "replace")
        raise VendorLibraryError(rc, f"{text} ({call})")


class PicoQuantLibrary(ClosesOnExit, abc.ABC):
    """One PicoQuant device in T2 mode through its library (base of the HH and MH bindings).

    Opens device ``device_index``, initialises it in T2 mode with the internal clock and keeps
    the device's serial number, model and resolution.
    """

    PREFIX = ""
    WHAT = ""
    ffi: FFI

    def __init__(self, path: str | Path, device_index: int = 0) -> None:
        if (isinstance(device_index, bool) or not isinstance(device_index, int)
                or not 0 <= device_index < MAXDEVNUM):
            raise ValueError(f"device index must be in 0..{MAXDEVNUM - 1}, got {device_index!r}")
        self.path = str(path)
        self.device_index = device_index
        self._lib = open_library(self.ffi, path, self.WHAT)
        self._lock = threading.RLock()
        self._open = False
        serial = self.ffi.new("char[]", TEXT_BYTES)
        self._call("OpenDevice", device_index, serial)
        self._open = True
        self.serial = self.ffi.string(serial).decode("ascii", "replace")
        try:
            self._call("Initialize", device_index, MODE_T2, 0)
            self._after_initialize()
            model, partno, version = (self.ffi.new("char[]", TEXT_BYTES) for _ in range(3))
            self._call("GetHardwareInfo", device_index, model, partno, version)
            self.model = self.ffi.string(model).decode("ascii", "replace")
        except BaseException:
            self.close()
            raise

    def _after_initialize(self) -> None:
        """Model-specific steps after Initialize (the HydraHarp calibrates)."""

    @abc.abstractmethod
    def _check(self, rc: int, call: str) -> None:
        """Raises VendorLibraryError with the library's own message for an error code."""

    def _call(self, name: str, *args: Any) -> None:
        with self._lock:
            self._check(getattr(self._lib, self.PREFIX + name)(*args), self.PREFIX + name)

    def _require_open(self) -> None:
        if not self._open:
            raise DeviceError(f"{self.WHAT} library {self.path}: device {self.device_index} "
                              "is closed")

    def _get_int(self, name: str, *args: Any) -> int:
        self._require_open()
        out = self.ffi.new("int *")
        self._call(name, self.device_index, *args, out)
        return int(out[0])

    def library_version(self) -> str:
        """``GetLibraryVersion`` (e.g. ``"3.0"``)."""
        buf = self.ffi.new("char[]", TEXT_BYTES)
        self._call("GetLibraryVersion", buf)
        return str(self.ffi.string(buf).decode("ascii", "replace"))

    def num_input_channels(self) -> int:
        """``GetNumOfInputChannels``."""
        return self._get_int("GetNumOfInputChannels")

    def resolution_ps(self) -> float:
        """``GetResolution``: the T2 time unit, ps."""
        self._require_open()
        out = self.ffi.new("double *")
        self._call("GetResolution", self.device_index, out)
        return float(out[0])

    def set_sync_divider(self, divider: int) -> None:
        """``SetSyncDiv``."""
        self._require_open()
        self._call("SetSyncDiv", self.device_index, int(divider))

    def set_sync_offset_ps(self, offset_ps: int) -> None:
        """``SetSyncChannelOffset``, ps."""
        self._require_open()
        self._call("SetSyncChannelOffset", self.device_index, int(offset_ps))

    def set_input_offset_ps(self, channel: int, offset_ps: int) -> None:
        """``SetInputChannelOffset`` of API channel ``channel`` (0-based), ps."""
        self._require_open()
        self._call("SetInputChannelOffset", self.device_index, int(channel), int(offset_ps))

    def set_input_enabled(self, channel: int, enabled: bool) -> None:
        """``SetInputChannelEnable`` of API channel ``channel`` (0-based)."""
        self._require_open()
        self._call("SetInputChannelEnable", self.device_index, int(channel), 1 if enabled else 0)

    def start(self, acquisition_ms: int) -> None:
        """``StartMeas`` for ``acquisition_ms``."""
        self._require_open()
        self._call("StartMeas", self.device_index, int(acquisition_ms))

    def stop(self) -> None:
        """``StopMeas``."""
        self._require_open()
        self._call("StopMeas", self.device_index)

    def acquisition_done(self) -> bool:
        """``CTCStatus``: the acquisition time has elapsed."""
        return self._get_int("CTCStatus") != 0

    def flags(self) -> int:
        """``GetFlags`` (``FLAG_FIFOFULL`` = 0x2)."""
        return self._get_int("GetFlags")

    def fifo_full(self) -> bool:
        """Whether the FIFO overran (events were lost)."""
        return bool(self.flags() & FLAG_FIFOFULL)

    @abc.abstractmethod
    def record_type(self) -> int:
        """The PicoQuant T2 record type the library writes."""

    @abc.abstractmethod
    def read_fifo(self) -> NDArray[np.uint32]:
        """``ReadFiFo``: the next T2 records (a copy)."""

    def _records(self, buffer: Any, n: int, capacity: int) -> NDArray[np.uint32]:
        if not 0 <= n <= capacity:
            raise DeviceError(f"{self.WHAT} library {self.path}: ReadFiFo reported {n} records "
                              f"for a buffer of {capacity}")
        return np.frombuffer(self.ffi.buffer(buffer, 4 * n), dtype=np.uint32).copy()

    def close(self) -> None:
        """``CloseDevice`` (once)."""
        with self._lock:
            if self._open:
                self._open = False
                self._call("CloseDevice", self.device_index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, device_index={self.device_index})"
