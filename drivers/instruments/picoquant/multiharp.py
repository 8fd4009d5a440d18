"""PicoQuant MultiHarp 150/160 time tagger (TimeTagger role) over MHLib (T2 mode).

Inputs are edge triggers: ``set_threshold_v`` takes -1.2..1.2 V (sent in mV); a negative level
triggers on the falling edge, a positive one on the rising edge. ``set_dead_time_ps`` sets the
extended dead time (800..160000 ps) or, with 0, the minimal one. Streaming, overflows and FIFO
overruns: see :mod:`._t2tagger`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qkdnode.bindings.mhlib import EXTDEADMAX, EXTDEADMIN, MultiHarpLib

from .._tagger import COMMON_SETTINGS, build_tagger
from ._t2tagger import T2Tagger

__all__ = ["SETTINGS", "MultiHarp", "build"]

# Edge trigger range, mV (mhdefin.h TRGLVLMIN..TRGLVLMAX).
TRIGGER_LEVEL_MAX_MV = 1200

SETTINGS = COMMON_SETTINGS


class MultiHarp(T2Tagger):
    """A MultiHarp streaming T2 events.

    Args:
        binding: an open :class:`MultiHarpLib` (T2 mode).
        channels: the inputs to stream (1-based); default all.
        keepalive: an object to keep and ``detach()`` on close (the simulated bench's hook).
    """

    MODEL = "MultiHarp"
    _binding: MultiHarpLib

    def set_threshold_v(self, channel: int, volts: float) -> None:
        """Sets an input's trigger level, -1.2..1.2 V; negative selects the falling edge."""
        api = self._api_channel(channel)
        limit = TRIGGER_LEVEL_MAX_MV / 1000
        if not (isinstance(volts, int | float) and -limit <= volts <= limit):
            raise ValueError(f"MultiHarp trigger level must be -{limit}..{limit} V, got {volts!r}")
        with self._lock:
            self._binding.set_input_edge(api, round(volts * 1000), volts >= 0)

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """Sets an input's extended dead time, 800..160000 ps, or 0 for the minimal one."""
        api = self._api_channel(channel)
        if (isinstance(dead_time_ps, bool) or not isinstance(dead_time_ps, int)
                or not (dead_time_ps == 0 or EXTDEADMIN <= dead_time_ps <= EXTDEADMAX)):
            raise ValueError(f"MultiHarp dead time must be 0 (minimal) or {EXTDEADMIN}.."
                             f"{EXTDEADMAX} ps, got {dead_time_ps!r}")
        with self._lock:
            self._binding.set_input_dead_time_ps(api, dead_time_ps)


def _channels(settings: Mapping[str, Any]) -> tuple[int, ...] | None:
    channels = settings.get("channels")
    return tuple(channels) if channels is not None else None


def build(resource: str, settings: Mapping[str, Any]) -> MultiHarp:
    """Opens a MultiHarp from its resource URL (``lib:///path/mhlib.so?device=N``)."""
    return build_tagger(
        resource, settings, "mhlib",
        lambda path, device: MultiHarpLib(path, 0 if device is None else device),
        lambda binding, keepalive: MultiHarp(binding, _channels(settings), keepalive=keepalive))
