"""Swabian Instruments Time Tagger (TimeTagger role) through the vendor's Python SDK.

The SDK is the Python module ``TimeTagger`` that Swabian's installer ships (it is not on PyPI;
PyPI's ``timetagger`` is an unrelated time tracker), so it is imported only when a tagger is
opened, and its absence is a clear error. The resource is ``lib://TimeTagger`` (the SDK module)
with an optional ``?serial=...`` selecting the device (``createTimeTagger(serial)``).

Streaming uses ``TimeTagStream(tagger, buffer_events, channels)``: each :meth:`read` takes
``getData()``. Only ``TimeTag`` events become tags; what the SDK reports as lost is counted,
never hidden: the ``getMissedEvents()`` counts of ``MissedEvents`` entries are ``lost_events``,
and overflow intervals (``OverflowBegin`` entries, ``hasOverflows()``), error entries and a
buffer that came back full (the stream keeps at most ``buffer_events``) are ``overflows``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._closing import ClosesOnExit
from ...errors import TransportError
from ...resource import parse_resource_url
from ...roles import TagRead
from .._tagger import channel_values, parse_channels

__all__ = ["SDK_MODULE", "SETTINGS", "SwabianTimeTagger", "build", "import_sdk"]

SDK_MODULE = "TimeTagger"
# TagType values of TimeTagStreamBuffer.getEventTypes() (Swabian's SDK).
TAG_TIME_TAG = 0
TAG_ERROR = 1
TAG_OVERFLOW_BEGIN = 2
TAG_OVERFLOW_END = 3
TAG_MISSED_EVENTS = 4
# Tags the stream holds between two reads: 10^7 covers 0.1 s at ~10^8 tags/s, the order of the
# Time Tagger Ultra's USB 3 transfer limit, so a reader polling at 10 Hz does not fill it.
DEFAULT_BUFFER_EVENTS = 10_000_000
# The Time Tagger's inputs are numbered 1..18 (Ultra) and their falling edges -1..-18.
MAX_INPUT = 18
INPUTS = tuple(c for c in range(-MAX_INPUT, MAX_INPUT + 1) if c != 0)

SETTINGS = ("channels", "threshold_v", "dead_time_ps", "delay_ps", "buffer_events")


def import_sdk() -> Any:
    """Imports the vendor SDK module, or raises TransportError saying where it comes from."""
    try:
        return importlib.import_module(SDK_MODULE)
    except ImportError as exc:
        raise TransportError(
            f"the Swabian Time Tagger SDK (Python module {SDK_MODULE!r}) is not installed: it "
            "ships with Swabian Instruments' installer, not PyPI (PyPI's 'timetagger' is an "
            f"unrelated time tracker); import failed with: {exc}") from None


class SwabianTimeTagger(ClosesOnExit):
    """A Swabian Time Tagger streaming (timestamp, channel) tags.

    Args:
        sdk: the imported ``TimeTagger`` module.
        tagger: the SDK's tagger object (``createTimeTagger()``).
        channels: the inputs to stream (1..18 rising edges, -1..-18 falling edges).
        buffer_events: the stream's buffer between two reads.
    """

    def __init__(self, sdk: Any, tagger: Any, channels: tuple[int, ...] = (1, 2, 3, 4),
                 buffer_events: int = DEFAULT_BUFFER_EVENTS) -> None:
        self._sdk = sdk
        self._tagger = tagger
        self._channels = parse_channels(list(channels), INPUTS, "Swabian Time Tagger")
        if (isinstance(buffer_events, bool) or not isinstance(buffer_events, int)
                or buffer_events < 1):
            raise ValueError(f"buffer_events must be a positive integer, got {buffer_events!r}")
        self._buffer_events = buffer_events
        self._stream: Any = None
        self._lock = threading.Lock()

    def _check_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int) or channel not in INPUTS:
            raise ValueError(f"Swabian channel must be 1..{MAX_INPUT} or -{MAX_INPUT}..-1, "
                             f"got {channel!r}")
        return channel

    def channels(self) -> tuple[int, ...]:
        """The streamed inputs."""
        return self._channels

    def set_threshold_v(self, channel: int, volts: float) -> None:
        """``setTriggerLevel``, V."""
        ch = self._check_channel(channel)
        if not isinstance(volts, int | float) or not np.isfinite(volts):
            raise ValueError(f"trigger level must be a finite number of volts, got {volts!r}")
        with self._lock:
            self._tagger.setTriggerLevel(ch, float(volts))

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """``setInputDelay``, ps."""
        ch = self._check_channel(channel)
        if isinstance(delay_ps, bool) or not isinstance(delay_ps, int):
            raise ValueError(f"delay must be an integer of ps, got {delay_ps!r}")
        with self._lock:
            self._tagger.setInputDelay(ch, delay_ps)

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """``setDeadtime``, ps (the device rounds to its clock; see :meth:`dead_time_ps`)."""
        ch = self._check_channel(channel)
        if isinstance(dead_time_ps, bool) or not isinstance(dead_time_ps, int) or dead_time_ps < 0:
            raise ValueError(f"dead time must be a non-negative integer of ps, "
                             f"got {dead_time_ps!r}")
        with self._lock:
            self._tagger.setDeadtime(ch, dead_time_ps)

    def dead_time_ps(self, channel: int) -> int:
        """``getDeadtime``, ps."""
        with self._lock:
            return int(self._tagger.getDeadtime(self._check_channel(channel)))

    def start(self) -> None:
        """Creates (first time) or restarts the tag stream of the configured inputs."""
        with self._lock:
            if self._stream is None:
                self._stream = self._sdk.TimeTagStream(self._tagger, self._buffer_events,
                                                       list(self._channels))
            else:
                self._stream.clear()
                self._stream.start()

    def stop(self) -> None:
        """Stops the stream (what it holds stays readable)."""
        with self._lock:
            if self._stream is not None:
                self._stream.stop()

    def read(self) -> TagRead:
        """The tags since the previous read, with what the SDK reports as missed or overflowed."""
        with self._lock:
            if self._stream is None:
                return TagRead(np.empty(0, np.int64), np.empty(0, np.int32))
            data = self._stream.getData()
            times = np.asarray(data.getTimestamps(), dtype=np.int64)
            chans = np.asarray(data.getChannels(), dtype=np.int32)
            types = np.asarray(data.getEventTypes(), dtype=np.uint8)
            missed = np.asarray(data.getMissedEvents(), dtype=np.int64)
            overflowed = bool(data.hasOverflows())
        tags = types == TAG_TIME_TAG
        lost = int(missed[types == TAG_MISSED_EVENTS].sum())
        intervals = int(np.count_nonzero(types == TAG_OVERFLOW_BEGIN))
        errors = int(np.count_nonzero(types == TAG_ERROR))
        full = times.shape[0] >= self._buffer_events
        overflows = max(intervals, int(overflowed)) + errors + int(full)
        return TagRead(times[tags], chans[tags], lost, overflows)

    def close(self) -> None:
        """Stops the stream and frees the tagger (``freeTimeTagger``)."""
        with self._lock:
            try:
                if self._stream is not None:
                    self._stream.stop()
                    self._stream = None
            finally:
                if self._tagger is not None:
                    self._sdk.freeTimeTagger(self._tagger)
                    self._tagger = None

    def __repr__(self) -> str:
        return f"SwabianTimeTagger(channels={self._channels})"


def build(resource: str, settings: Mapping[str, Any]) -> SwabianTimeTagger:
    """Opens a Swabian Time Tagger: ``lib://TimeTagger`` or ``lib://TimeTagger?serial=...``.

    Raises:
        ValueError: another resource (the simulated bench has no Swabian counterpart).
        TransportError: the SDK is not installed.
    """
    url = parse_resource_url(resource)
    if url.scheme != "lib" or url.target != SDK_MODULE:
        raise ValueError(f"resource {resource!r}: a Swabian Time Tagger is reached through its "
                         f"Python SDK as lib://{SDK_MODULE}[?serial=...] (there is no simulated "
                         "counterpart; use a quTAG or PicoQuant driver with sim://)")
    if "device" in url.params:
        raise ValueError(f"resource {resource!r}: select a Swabian Time Tagger by serial=, "
                         "not device=")
    sdk = import_sdk()
    tagger = sdk.createTimeTagger(str(url.params.get("serial", "")))
    try:
        driver = SwabianTimeTagger(sdk, tagger, tuple(settings.get("channels", (1, 2, 3, 4))),
                                   settings.get("buffer_events", DEFAULT_BUFFER_EVENTS))
    except BaseException:
        sdk.freeTimeTagger(tagger)
        raise
    try:
        chans = driver.channels()
        for key, setter in (("threshold_v", driver.set_threshold_v),
                            ("dead_time_ps", driver.set_dead_time_ps),
                            ("delay_ps", driver.set_delay_ps)):
            if key in settings:
                for ch, value in channel_values(settings[key], chans, key).items():
                    setter(ch, value)
    except BaseException:
        driver.close()
        raise
    return driver
