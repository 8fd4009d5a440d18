"""qutools quTAG time tagger (TimeTagger role) over the tdcbase binding (library V1.5.x).

Streaming: :meth:`QuTag.start` sizes the library's timestamp ring
(``TDC_setTimestampBufferSize``), clears the data-loss latch and enables the configured inputs;
each :meth:`QuTag.read` takes the ring's contents and clears it
(``TDC_getLastTimestamps(reset=1)``). Nothing lost is hidden: a latched ``TDC_getDataLost``
(the device could not deliver everything over USB) or a ring that came back full (it keeps only
the last N events, so older ones may have been overwritten) is reported as an overflow. The
library cannot say how many were lost, so ``lost_events`` stays 0 and ``overflows`` says so.

Channel numbers are the library's (1..4 the stop inputs, 0 the start input); a negative
threshold selects the falling edge (NIM-like detector pulses), a positive one the rising edge.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from qkdnode.bindings.tdcbase import BUFFER_SIZE_MAX, CHANNELS, SCOND_MISC, TdcBase

from ..._closing import ClosesOnExit
from ...errors import DeviceError
from ...roles import TagRead
from .._tagger import COMMON_SETTINGS, build_tagger, parse_channels

__all__ = ["DEFAULT_BUFFER_EVENTS", "SETTINGS", "QuTag", "build"]

# Ring size used when the settings do not say: at 10^6 tags/s and a read every 0.1 s this keeps
# a factor 10 of headroom; the library's maximum is 10^6.
DEFAULT_BUFFER_EVENTS = BUFFER_SIZE_MAX
# TDC_configureSignalConditioning's threshold range, V (tdcbase.h).
THRESHOLD_MIN_V = -2.0
THRESHOLD_MAX_V = 3.0
# TDC_setChannelDelays' range, ps (tdcbase.h: -100 ns .. 100 ns).
DELAY_MAX_PS = 100_000
INPUTS = tuple(range(CHANNELS))

SETTINGS = (*COMMON_SETTINGS, "buffer_events")


class QuTag(ClosesOnExit):
    """A quTAG streaming (timestamp, channel) tags.

    Args:
        binding: an open :class:`TdcBase`.
        channels: the inputs to stream (0..4).
        buffer_events: size of the library's timestamp ring between two reads.
        keepalive: an object to keep and ``detach()`` on close (the simulated bench's hook).
    """

    def __init__(self, binding: TdcBase, channels: tuple[int, ...] = (1, 2, 3, 4),
                 buffer_events: int = DEFAULT_BUFFER_EVENTS, *, keepalive: Any = None) -> None:
        self._binding = binding
        self._channels = parse_channels(list(channels), INPUTS, "quTAG")
        if (isinstance(buffer_events, bool) or not isinstance(buffer_events, int)
                or not 1 <= buffer_events <= BUFFER_SIZE_MAX):
            raise ValueError(f"buffer_events must be in 1..{BUFFER_SIZE_MAX}, "
                             f"got {buffer_events!r}")
        self._buffer_events = buffer_events
        self._keepalive = keepalive
        self._delays = [0] * CHANNELS
        self._lock = threading.Lock()
        self._running = False
        unit_ps = binding.timebase_s() * 1e12
        if not unit_ps > 0 or not math.isfinite(unit_ps):
            raise DeviceError(f"quTAG reports an invalid timebase of {unit_ps} ps")
        self._unit_int = round(unit_ps) if abs(unit_ps - round(unit_ps)) < 1e-9 * unit_ps else 0
        self._unit_ps = unit_ps

    def _check_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int) or channel not in INPUTS:
            raise ValueError(f"quTAG channel must be one of {list(INPUTS)}, got {channel!r}")
        return channel

    def channels(self) -> tuple[int, ...]:
        """The streamed inputs."""
        return self._channels

    def set_threshold_v(self, channel: int, volts: float) -> None:
        """Sets an input's threshold, V (-2..3); negative selects the falling edge."""
        ch = self._check_channel(channel)
        if not (isinstance(volts, int | float) and THRESHOLD_MIN_V <= volts <= THRESHOLD_MAX_V):
            raise ValueError(f"quTAG threshold must be in {THRESHOLD_MIN_V}..{THRESHOLD_MAX_V} V, "
                             f"got {volts!r}")
        with self._lock:
            self._binding.configure_signal_conditioning(ch, SCOND_MISC, volts >= 0, float(volts))

    def threshold_v(self, channel: int) -> float:
        """The threshold in effect on an input, V."""
        with self._lock:
            return self._binding.signal_conditioning(self._check_channel(channel))[1]

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Sets an input's delay, ps (-100000..100000), compensated by the device."""
        ch = self._check_channel(channel)
        if (isinstance(delay_ps, bool) or not isinstance(delay_ps, int)
                or abs(delay_ps) > DELAY_MAX_PS):
            raise ValueError(f"quTAG delay must be an integer in -{DELAY_MAX_PS}..{DELAY_MAX_PS} "
                             f"ps, got {delay_ps!r}")
        with self._lock:
            delays = list(self._delays)
            delays[ch] = delay_ps
            self._binding.set_channel_delays_ps(delays)
            self._delays = delays

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """Sets an input's dead time, ps."""
        ch = self._check_channel(channel)
        if isinstance(dead_time_ps, bool) or not isinstance(dead_time_ps, int) or dead_time_ps < 0:
            raise ValueError(f"dead time must be a non-negative integer of ps, "
                             f"got {dead_time_ps!r}")
        with self._lock:
            self._binding.set_dead_time_ps(ch, dead_time_ps)

    def dead_time_ps(self, channel: int) -> int:
        """An input's dead time, ps."""
        with self._lock:
            return self._binding.dead_time_ps(self._check_channel(channel))

    def start(self) -> None:
        """Clears the ring and the loss latch, then enables the streamed inputs."""
        with self._lock:
            self._binding.set_buffer_size(self._buffer_events)
            self._binding.data_lost()  # clears the latch of anything before this start
            self._binding.enable_channels(sum(1 << ch for ch in self._channels))
            self._running = True

    def stop(self) -> None:
        """Disables every input (what is in the ring stays readable)."""
        with self._lock:
            self._binding.enable_channels(0)
            self._running = False

    def read(self) -> TagRead:
        """The tags since the previous read; an overflow if data may have been lost."""
        with self._lock:
            times, channels = self._binding.last_timestamps(reset=True)
            lost = self._binding.data_lost()
        full = times.shape[0] >= self._buffer_events
        if self._unit_int:
            times_ps = times * np.int64(self._unit_int)
        else:
            times_ps = np.rint(times * self._unit_ps).astype(np.int64)
        return TagRead(times_ps, channels.astype(np.int32), 0, int(lost or full))

    def close(self) -> None:
        """Disables the inputs and releases the library (and the simulated bench's hook)."""
        try:
            with self._lock:
                if self._running:
                    self._running = False
                    self._binding.enable_channels(0)
        finally:
            self._binding.close()
            if self._keepalive is not None:
                self._keepalive.detach()
                self._keepalive = None

    def __repr__(self) -> str:
        return f"QuTag({self._binding!r}, channels={self._channels})"


def build(resource: str, settings: Mapping[str, Any]) -> QuTag:
    """Opens a quTAG from its resource URL and settings (see :mod:`.._tagger`).

    ``lib:///path/libtdcbase.so?device=N`` connects to device ID N (default: the first found).
    """
    return build_tagger(
        resource, settings, "tdcbase",
        lambda path, device: TdcBase(path, -1 if device is None else device),
        lambda binding, keepalive: QuTag(
            binding, tuple(settings.get("channels", (1, 2, 3, 4))),
            settings.get("buffer_events", DEFAULT_BUFFER_EVENTS), keepalive=keepalive))
