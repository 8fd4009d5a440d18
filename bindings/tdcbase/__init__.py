"""Binding of qutools' quTAG library ``tdcbase``, standard library V1.5.x ABI.

:class:`TdcBase` opens the library at the configured path (``lib:///opt/qutools/libtdcbase.so``),
connects to a device with ``TDC_init`` and wraps the calls qkdnode needs. It refuses a library
whose ``TDC_getVersion`` is not 1.5.x, since the quTAG MC/HR library (1.8) declares different
signatures (see :mod:`._cdef`). Every return code goes through :func:`_check`, which raises
:class:`~qkdnode.drivers.errors.VendorLibraryError` with the text of ``TDC_perror``.

Channel numbers are the library's: 0 is the start input, 1..4 the stop inputs, as in
``TDC_enableChannels``' mask and ``TDC_configureSignalConditioning``; ``TDC_getLastTimestamps``
reports events with the same numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cffi import FFI
from numpy.typing import NDArray

from qkdnode.drivers._closing import ClosesOnExit
from qkdnode.drivers.errors import DeviceError, VendorLibraryError

from .._loader import open_library
from ._cdef import CDEF, EXPECTED_VERSION

__all__ = [
    "BUFFER_SIZE_MAX",
    "CHANNELS",
    "DELAY_SLOTS",
    "SCOND_LVTTL",
    "SCOND_MISC",
    "SCOND_NIM",
    "TDC_OK",
    "TdcBase",
]

ffi = FFI()
ffi.cdef(CDEF)

TDC_OK = 0
# Inputs of a quTAG: start (0) and four stop channels (tdcbase.h TDC_QUTAG_CHANNELS).
CHANNELS = 5
# TDC_setChannelDelays reads five entries; TDC_getChannelDelays writes eight.
DELAY_SLOTS = 8
# TDC_setTimestampBufferSize's range (tdcbase.h).
BUFFER_SIZE_MAX = 1_000_000
SCOND_LVTTL = 1
SCOND_NIM = 2
SCOND_MISC = 3


def _check(lib: Any, rc: int, call: str) -> None:
    """Raises VendorLibraryError with the library's own message for a non-zero return code."""
    if rc != TDC_OK:
        text = ffi.string(lib.TDC_perror(rc)).decode("ascii", "replace")
        raise VendorLibraryError(rc, f"{text} ({call})")


class TdcBase(ClosesOnExit):
    """One quTAG, through the tdcbase library.

    Args:
        path: the library file.
        device_id: the device ID to connect to (``-1``: the first device found).

    Raises:
        TransportError: the library cannot be loaded.
        DeviceError: the library is not the V1.5.x this binding declares.
        VendorLibraryError: ``TDC_init`` failed (no such device, device in use...).
    """

    def __init__(self, path: str | Path, device_id: int = -1) -> None:
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < -1:
            raise ValueError(f"device_id must be an integer >= -1, got {device_id!r}")
        self._lib = open_library(ffi, path, "quTAG tdcbase")
        self._lock = threading.RLock()
        self._open = False
        self.path = str(path)
        version = float(self._lib.TDC_getVersion())
        low, high = EXPECTED_VERSION
        if not low <= version < high:
            raise DeviceError(
                f"{self.path} is tdcbase version {version:g}; this binding declares the quTAG "
                f"standard library V{low:g}.x (the MC/HR library's signatures differ)")
        self._call("TDC_init", device_id)
        self._open = True
        self._ts = ffi.new("Int64[]", 0)
        self._ch = ffi.new("Uint8[]", 0)
        self._size = 0

    def _call(self, name: str, *args: Any) -> None:
        with self._lock:
            _check(self._lib, getattr(self._lib, name)(*args), name)

    def _require_open(self) -> None:
        if not self._open:
            raise DeviceError(f"quTAG library {self.path}: the device is closed")

    def version(self) -> float:
        """``TDC_getVersion()``."""
        return float(self._lib.TDC_getVersion())

    def timebase_s(self) -> float:
        """Seconds per timestamp unit (``TDC_getTimebase``)."""
        self._require_open()
        out = ffi.new("double *")
        self._call("TDC_getTimebase", out)
        return float(out[0])

    def enable_channels(self, mask: int) -> None:
        """``TDC_enableChannels``: bit n enables input n (0 = start)."""
        self._require_open()
        self._call("TDC_enableChannels", int(mask))

    def channels_enabled(self) -> int:
        """The channel mask in effect."""
        self._require_open()
        out = ffi.new("Int32 *")
        self._call("TDC_getChannelsEnabled", out)
        return int(out[0])

    def configure_signal_conditioning(self, channel: int, conditioning: int, rising: bool,
                                      threshold_v: float) -> None:
        """``TDC_configureSignalConditioning`` (the library checks the ranges)."""
        self._require_open()
        self._call("TDC_configureSignalConditioning", int(channel), int(conditioning),
                   1 if rising else 0, float(threshold_v))

    def signal_conditioning(self, channel: int) -> tuple[bool, float]:
        """``(rising edge, threshold in V)`` in effect on ``channel``."""
        self._require_open()
        edge = ffi.new("Bln32 *")
        threshold = ffi.new("double *")
        self._call("TDC_getSignalConditioning", int(channel), edge, threshold)
        return bool(edge[0]), float(threshold[0])

    def set_channel_delays_ps(self, delays_ps: Sequence[int]) -> None:
        """``TDC_setChannelDelays``: one delay per input 0..4, ps."""
        self._require_open()
        if len(delays_ps) != CHANNELS:
            raise ValueError(f"need {CHANNELS} channel delays (inputs 0..4), got {len(delays_ps)}")
        self._call("TDC_setChannelDelays", ffi.new("Int32[]", [int(d) for d in delays_ps]))

    def channel_delays(self) -> tuple[int, ...]:
        """``TDC_getChannelDelays``: the delays of inputs 0..4, in timebase units."""
        self._require_open()
        out = ffi.new("Int32[]", DELAY_SLOTS)
        self._call("TDC_getChannelDelays", out)
        return tuple(int(out[i]) for i in range(CHANNELS))

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """``TDC_setDeadTime``, ps."""
        self._require_open()
        self._call("TDC_setDeadTime", int(channel), int(dead_time_ps))

    def dead_time_ps(self, channel: int) -> int:
        """``TDC_getDeadTime``, ps."""
        self._require_open()
        out = ffi.new("Int32 *")
        self._call("TDC_getDeadTime", int(channel), out)
        return int(out[0])

    def set_buffer_size(self, size: int) -> None:
        """``TDC_setTimestampBufferSize`` (clears the buffer); sizes the read arrays."""
        self._require_open()
        self._call("TDC_setTimestampBufferSize", int(size))
        with self._lock:
            self._ts = ffi.new("Int64[]", int(size))
            self._ch = ffi.new("Uint8[]", int(size))
            self._size = int(size)

    def buffer_size(self) -> int:
        """``TDC_getTimestampBufferSize``."""
        self._require_open()
        out = ffi.new("Int32 *")
        self._call("TDC_getTimestampBufferSize", out)
        return int(out[0])

    def last_timestamps(self, reset: bool = True) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
        """``TDC_getLastTimestamps``: the buffered events (timebase units, channel numbers).

        Args:
            reset: clear the buffer after reading (what a stream reader wants).

        Raises:
            DeviceError: the buffer size was never set (the library would return nothing).
        """
        self._require_open()
        if self._size == 0:
            raise DeviceError(f"quTAG library {self.path}: set_buffer_size() before reading")
        valid = ffi.new("Int32 *")
        with self._lock:
            self._call("TDC_getLastTimestamps", 1 if reset else 0, self._ts, self._ch, valid)
            n = int(valid[0])
            if not 0 <= n <= self._size:
                raise DeviceError(f"quTAG library {self.path}: {n} valid timestamps reported "
                                  f"for a buffer of {self._size}")
            times = np.frombuffer(ffi.buffer(self._ts, 8 * n), dtype=np.int64).copy()
            channels = np.frombuffer(ffi.buffer(self._ch, n), dtype=np.uint8).copy()
        return times, channels

    def data_lost(self) -> bool:
        """``TDC_getDataLost``: whether data was lost since the previous call (clears the latch)."""
        self._require_open()
        out = ffi.new("Bln32 *")
        self._call("TDC_getDataLost", out)
        return bool(out[0])

    def close(self) -> None:
        """``TDC_deInit`` (once)."""
        with self._lock:
            if self._open:
                self._open = False
                self._call("TDC_deInit")

    def __repr__(self) -> str:
        return f"TdcBase({self.path!r})"
