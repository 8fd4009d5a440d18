"""What the HydraHarp and MultiHarp drivers share: T2 streaming with overflow state and loss.

:meth:`T2Tagger.start` starts a measurement of the longest acquisition time the libraries
accept (100 h) and resets the decoder; each :meth:`T2Tagger.read` takes one FIFO block
(``ReadFiFo``), decodes it with :func:`qkdnode.drivers.picoquant.decode_t2` and keeps the
running overflow offset for the next block, so a stream cut anywhere (even between an overflow
record and its event) decodes as one. A FIFO overrun (``FLAG_FIFOFULL``) is reported as an
overflow on the first read that sees it; the device cannot say how many events it lost, so
``lost_events`` stays 0.

Channels are input numbers 1..N (the API's index + 1, as the T2 decoder numbers them); sync
events come as channel 0 and markers as -1..-15.
"""

from __future__ import annotations

import threading
from typing import Any

from qkdnode.bindings._picoquant import PicoQuantLibrary

from ..._closing import ClosesOnExit
from ...errors import DeviceError
from ...picoquant.records import T2State, decode_t2
from ...roles import TagRead
from .._tagger import parse_channels

__all__ = ["ACQUISITION_MAX_MS", "CHANNEL_OFFSET_MAX_PS", "T2Tagger"]

# StartMeas' longest acquisition time (hhdefin.h / mhdefin.h ACQTMAX, 100 h).
ACQUISITION_MAX_MS = 360_000_000
# SetInputChannelOffset's range, ps.
CHANNEL_OFFSET_MAX_PS = 99_999


class T2Tagger(ClosesOnExit):
    """A PicoQuant device streaming T2 events (base of the HydraHarp and MultiHarp drivers)."""

    MODEL = ""

    def __init__(self, binding: PicoQuantLibrary, channels: tuple[int, ...] | None = None, *,
                 keepalive: Any = None) -> None:
        self._binding = binding
        self._keepalive = keepalive
        self._lock = threading.Lock()
        n = binding.num_input_channels()
        self._inputs = tuple(range(1, n + 1))
        self._channels = parse_channels(list(channels or self._inputs), self._inputs, self.MODEL)
        self._record_type = binding.record_type()
        resolution = binding.resolution_ps()
        if not resolution >= 1 or resolution != round(resolution):
            raise DeviceError(f"{self.MODEL} reports a resolution of {resolution} ps; the T2 "
                              "decoder needs a whole number of ps")
        self._resolution_ps = round(resolution)
        self._state = T2State()
        self._fifo_full_reported = False
        self._running = False
        for ch in self._inputs:
            binding.set_input_enabled(ch - 1, ch in self._channels)

    def _api_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int) or channel not in self._inputs:
            raise ValueError(f"{self.MODEL} channel must be one of 1..{len(self._inputs)}, "
                             f"got {channel!r}")
        return channel - 1

    def channels(self) -> tuple[int, ...]:
        """The streamed inputs (1-based)."""
        return self._channels

    @property
    def resolution_ps(self) -> int:
        """The T2 time unit, ps."""
        return self._resolution_ps

    @property
    def record_type(self) -> int:
        """The PicoQuant record type the library writes."""
        return self._record_type

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Sets an input's offset, ps (-99999..99999)."""
        api = self._api_channel(channel)
        if (isinstance(delay_ps, bool) or not isinstance(delay_ps, int)
                or abs(delay_ps) > CHANNEL_OFFSET_MAX_PS):
            raise ValueError(f"{self.MODEL} input offset must be an integer in "
                             f"-{CHANNEL_OFFSET_MAX_PS}..{CHANNEL_OFFSET_MAX_PS} ps, "
                             f"got {delay_ps!r}")
        with self._lock:
            self._binding.set_input_offset_ps(api, delay_ps)

    def start(self) -> None:
        """Starts a T2 measurement (the decoder starts from a zero offset)."""
        with self._lock:
            self._binding.start(ACQUISITION_MAX_MS)
            self._state = T2State()
            self._fifo_full_reported = False
            self._running = True

    def stop(self) -> None:
        """Stops the measurement (records still in the FIFO stay readable)."""
        with self._lock:
            self._binding.stop()
            self._running = False

    def read(self) -> TagRead:
        """One FIFO block of events; an overflow when the FIFO overran."""
        with self._lock:
            records = self._binding.read_fifo()
            full = self._binding.fifo_full()
            events, self._state = decode_t2(records, self._record_type, self._resolution_ps,
                                            self._state)
            overflows = int(full and not self._fifo_full_reported)
            self._fifo_full_reported = full
        return TagRead(events.timestamps_ps, events.channels.astype("int32"), 0, overflows)

    def close(self) -> None:
        """Stops a running measurement and closes the device (and the bench's hook)."""
        try:
            with self._lock:
                if self._running:
                    self._running = False
                    self._binding.stop()
        finally:
            self._binding.close()
            if self._keepalive is not None:
                self._keepalive.detach()
                self._keepalive = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._binding!r}, channels={self._channels})"
