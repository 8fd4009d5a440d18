"""``thorlabs.pm100``: Thorlabs PM100-class optical power meter (VISA, SCPI).

Wire protocol (``\\n`` sent and received):

==============================  =========================================  ======
command                         meaning                                    unit
==============================  =========================================  ======
``*IDN?``                       identification
``SYST:SENSOR:IDN?``            the attached sensor (model, serial, ...)
``SENSE:CORR:WAV <x>`` / ``?``  wavelength for the responsivity correction  nm
``SENS:AVER:COUN <n>`` / ``?``  samples averaged per reading (~3 ms each)
``MEAS:POW?``                   one power reading                          W
``SYST:ERR?``                   error queue, ``0,"No error"`` when empty
==============================  =========================================  ======

Every set command is followed by ``SYST:ERR?``; an error raises
:class:`~qkdnode.drivers.errors.InstrumentError` with the meter's code and text. A reading above
``Limits.max_optical_power_w`` is returned all the same (the meter is how one finds out), and
:meth:`PM100.measure_power_w` logs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..base import ScpiInstrument, Setting, control, finite, in_range, positive_int

__all__ = ["PM100"]

# Photodiode and thermal sensors for the PM100 family cover 185 nm .. 25 µm; the attached sensor
# narrows this and the meter reports anything outside as an error.
WAVELENGTH_RANGE_NM = (185.0, 25_000.0)
# The meter averages up to this many samples (beyond, one reading takes minutes).
AVERAGING_RANGE = (1, 100_000)


class PM100(ScpiInstrument):
    """PM100-class power meter; implements :class:`~qkdnode.drivers.roles.PowerMeter`."""

    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "wavelength_nm": Setting("correction wavelength, nm", finite, "set_wavelength_nm"),
        "averaging": Setting("samples averaged per reading", positive_int, "set_averaging"),
    }

    _wavelength_nm = control("SENSE:CORR:WAV?", "SENSE:CORR:WAV {:g}", "Wavelength, nm.",
                             parse=float, validator=in_range(*WAVELENGTH_RANGE_NM))
    _averaging = control("SENS:AVER:COUN?", "SENS:AVER:COUN {:d}", "Samples per reading.",
                         parse=lambda r: int(float(r)), validator=in_range(*AVERAGING_RANGE))
    _power_w = control("MEAS:POW?", None, "One power reading, W.", parse=float)
    _sensor = control("SYST:SENSOR:IDN?", None, "The attached sensor.", parse=str)

    def sensor_identify(self) -> str:
        """The attached sensor's identification (``SYST:SENSOR:IDN?``)."""
        return self._sensor

    def set_wavelength_nm(self, nm: float) -> None:
        """Sets the correction wavelength, nm."""
        self._wavelength_nm = nm

    def wavelength_nm(self) -> float:
        """The correction wavelength, nm."""
        return self._wavelength_nm

    def set_averaging(self, count: int) -> None:
        """Sets how many samples one reading averages."""
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(
                f"{self.transport.instrument}: averaging must be an int, got {count!r}"
            )
        self._averaging = count

    def averaging(self) -> int:
        """The averaging count."""
        return self._averaging

    def measure_power_w(self) -> float:
        """One power reading, W."""
        return self._power_w
