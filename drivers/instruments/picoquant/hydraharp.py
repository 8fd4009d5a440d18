"""PicoQuant HydraHarp 400 time tagger (TimeTagger role) over HHLib (T2 mode).

Inputs are constant-fraction discriminators for negative pulses: ``set_threshold_v`` takes the
discrimination level as a negative voltage (-1.0..0 V, sent as 0..1000 mV) with a zero cross of
:data:`ZERO_CROSS_MV`. The HydraHarp's input dead time is fixed by the hardware, so
``set_dead_time_ps`` refuses. Streaming, overflows and FIFO overruns: see
:mod:`._t2tagger`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qkdnode.bindings.hhlib import HydraHarpLib

from .._tagger import COMMON_SETTINGS, build_tagger
from ._t2tagger import T2Tagger

__all__ = ["SETTINGS", "ZERO_CROSS_MV", "HydraHarp", "build"]

# CFD zero-cross level, mV: PicoQuant's demos use 10 mV (range 0..40 mV).
ZERO_CROSS_MV = 10
# CFD discriminator range, mV (hhdefin.h DISCRMIN..DISCRMAX).
CFD_LEVEL_MAX_MV = 1000
# The HydraHarp 400's input dead time, < 80 ps per PicoQuant's specifications.
FIXED_DEAD_TIME_PS = 80

SETTINGS = COMMON_SETTINGS


class HydraHarp(T2Tagger):
    """A HydraHarp 400 streaming T2 events.

    Args:
        binding: an open :class:`HydraHarpLib` (T2 mode, calibrated).
        channels: the inputs to stream (1-based); default all.
        keepalive: an object to keep and ``detach()`` on close (the simulated bench's hook).
    """

    MODEL = "HydraHarp 400"
    _binding: HydraHarpLib

    def set_threshold_v(self, channel: int, volts: float) -> None:
        """Sets an input's CFD level: a negative voltage, -1.0..0 V."""
        api = self._api_channel(channel)
        if not (isinstance(volts, int | float) and -CFD_LEVEL_MAX_MV / 1000 <= volts <= 0):
            raise ValueError(f"HydraHarp CFD level must be -1.0..0 V (negative pulses), "
                             f"got {volts!r}")
        with self._lock:
            self._binding.set_input_cfd(api, round(-volts * 1000), ZERO_CROSS_MV)

    def set_dead_time_ps(self, channel: int, dead_time_ps: int) -> None:
        """Refuses: the HydraHarp 400's input dead time is fixed by the hardware."""
        self._api_channel(channel)
        raise ValueError(f"the HydraHarp 400's input dead time is fixed (< {FIXED_DEAD_TIME_PS} "
                         f"ps); it cannot be set to {dead_time_ps!r} ps (a MultiHarp or quTAG "
                         "has a settable dead time)")


def _channels(settings: Mapping[str, Any]) -> tuple[int, ...] | None:
    channels = settings.get("channels")
    return tuple(channels) if channels is not None else None


def build(resource: str, settings: Mapping[str, Any]) -> HydraHarp:
    """Opens a HydraHarp from its resource URL (``lib:///path/libhh400.so?device=N``)."""
    return build_tagger(
        resource, settings, "hhlib",
        lambda path, device: HydraHarpLib(path, 0 if device is None else device),
        lambda binding, keepalive: HydraHarp(binding, _channels(settings), keepalive=keepalive))
