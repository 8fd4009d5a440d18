"""``scpi.voa``: a generic SCPI variable optical attenuator.

Assumed command set (common to benchtop SCPI attenuators; check the model's manual, and add a
model-specific driver where it differs). ``\\n`` sent and received:

========================  ==============================================  ====
command                   meaning                                         unit
========================  ==============================================  ====
``*IDN?``                 identification
``INP:ATT <x>`` / ``?``   attenuation set point                           dB
``OUTP:STAT ON|OFF`` / ?  output (shutter) open or closed; ``?`` -> 1|0
``SYST:ERR?``             error queue, ``0,"No error"`` when empty
========================  ==============================================  ====

Disabled (``OUTP:STAT OFF``) the attenuator blocks the light. Every set command is followed by
``SYST:ERR?``; an error raises :class:`~qkdnode.drivers.errors.InstrumentError` with the
instrument's code and text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..base import ScpiInstrument, Setting, boolean, control, finite, in_range, parse_bool

__all__ = ["ScpiVoa"]

# Benchtop attenuators span 0 to about 60-100 dB; the instrument refuses more through its error
# queue, and Limits.min_attenuation_db is checked before anything is sent.
ATTENUATION_RANGE_DB = (0.0, 100.0)


def _on_off(on: bool) -> str:
    return "ON" if on else "OFF"


class ScpiVoa(ScpiInstrument):
    """Generic SCPI VOA; implements :class:`~qkdnode.drivers.roles.Attenuator`."""

    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "attenuation_db": Setting("attenuation, dB", finite, "set_attenuation_db"),
        "enabled": Setting("output open (true) or blocked", boolean, "set_enabled"),
    }

    _attenuation_db = control("INP:ATT?", "INP:ATT {:.3f}", "Attenuation, dB.", parse=float,
                              validator=in_range(*ATTENUATION_RANGE_DB))
    _output = control("OUTP:STAT?", "OUTP:STAT {}", "Output open (ON) or blocked (OFF).",
                      parse=parse_bool, validator=_on_off)

    def set_attenuation_db(self, db: float) -> None:
        """Sets the attenuation, dB (``Limits.min_attenuation_db`` first)."""
        self._attenuation_db = self.limits.check_attenuation_db(db)

    def attenuation_db(self) -> float:
        """The attenuation set point, dB."""
        return self._attenuation_db

    def set_enabled(self, enabled: bool) -> None:
        """Opens (True) or blocks the output."""
        self._output = bool(enabled)

    def enabled(self) -> bool:
        """Whether the output is open."""
        return self._output
