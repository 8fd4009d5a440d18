"""``idq.id120``: a SCPI-style single-photon detector controller (ID Quantique ID120 class).

Wire protocol (VISA, ``\\n`` sent and received; values are integers in sub-units):

=================================  ============================  ==========================
command                            meaning                       unit on the wire
=================================  ============================  ==========================
``*IDN?``                          identification
``BIAS:VOLTAGE <n>`` / ``?``       APD bias (efficiency)         µV
``THRESHOLD:VOLTAGE <n>`` / ``?``  discriminator threshold       µV
``DEADTIME:TIME <n>`` / ``?``      dead time                     µs
``COUNTERS:INTEGRATION_TIME <n>``  counter window (and ``?``)    ms
``COUNTERS:DETECTION_FREQ?``       clicks per second, last window Hz
``REG:TEMP_SET_POINT <n>`` / ``?`` cooler set point              m°C
``REG:TEMP?``                      measured temperature          m°C
``REG:RUN 1|0`` / ``?``            temperature regulation on/off
``SYST:ERR?``                      error queue: ``<code>,"<text>"``, ``0,"No error"`` when empty
=================================  ============================  ==========================

``REG:TEMP?`` and ``SYST:ERR?`` are assumed (the standard SCPI error queue and the measured
counterpart of ``REG:TEMP_SET_POINT``); the rest is the command set of DEVICES.md. Every set
command is followed by ``SYST:ERR?``; an error raises
:class:`~qkdnode.drivers.errors.InstrumentError` with the instrument's code and text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import ClassVar

from ...roles import Limits
from ...transport import Transport
from ..base import (
    ScpiInstrument,
    Setting,
    atomic,
    boolean,
    control,
    finite,
    in_range,
    parse_bool,
    to_units,
)

__all__ = ["ID120"]

# Sub-units of the wire protocol, per SI unit.
MICRO = 1e6
MILLI = 1e3
# The instrument's own ranges (wire units), assumed wide enough for any unit of the class; the
# controller refuses more through its error queue, and Limits are checked before these.
# The bias supply of a silicon APD controller spans a few hundred volts.
BIAS_RANGE_UV = (0, 500_000_000)
# Discriminator thresholds of APD front ends sit in the tens to hundreds of millivolts; 2 V is
# beyond any pulse the front end produces.
THRESHOLD_RANGE_UV = (0, 2_000_000)
# Dead times below 1 µs cannot be expressed in whole µs; above 1 ms the detector counts nothing.
DEAD_TIME_RANGE_US = (1, 1_000)
# Counter windows from 1 ms (the wire unit) to a minute (longer exceeds any reply timeout).
INTEGRATION_RANGE_MS = (1, 60_000)
# Thermo-electric coolers reach about -80 C; above +40 C the regulation cannot hold.
TEMPERATURE_RANGE_MC = (-80_000, 40_000)
# After the counter window changes, the window running at that moment still has the old length:
# the first complete window under the new setting ends at most two windows later.
WINDOWS_TO_WAIT = 2


class ID120(ScpiInstrument):
    """ID120-class detector controller; implements :class:`~qkdnode.drivers.roles.Detector`.

    Args:
        transport: the instrument's transport.
        limits: safety limits (bias, temperature range).
        sleep: waits a number of seconds (:func:`time.sleep`; tests pass a recorder).
    """

    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "temperature_set_point_c": Setting(
            "cooler set point, degrees C", finite, "set_temperature_set_point_c"
        ),
        "regulation": Setting("temperature regulation on (true) or off", boolean,
                              "set_regulation"),
        "threshold_v": Setting("discriminator threshold, V", finite, "set_threshold_v"),
        "dead_time_s": Setting("dead time, s (whole µs)", finite, "set_dead_time_s"),
        "integration_time_s": Setting(
            "counter window, s (whole ms)", finite, "set_integration_time_s"
        ),
        "bias_v": Setting("APD bias, V (applied last, after the cooler)", finite, "set_bias_v"),
    }

    _bias_uv = control("BIAS:VOLTAGE?", "BIAS:VOLTAGE {:d}", "APD bias, µV.", parse=int,
                       validator=in_range(*BIAS_RANGE_UV), unit="µV")
    _threshold_uv = control("THRESHOLD:VOLTAGE?", "THRESHOLD:VOLTAGE {:d}",
                            "Discriminator threshold, µV.", parse=int,
                            validator=in_range(*THRESHOLD_RANGE_UV), unit="µV")
    _dead_time_us = control("DEADTIME:TIME?", "DEADTIME:TIME {:d}", "Dead time, µs.", parse=int,
                            validator=in_range(*DEAD_TIME_RANGE_US), unit="µs")
    _integration_ms = control("COUNTERS:INTEGRATION_TIME?", "COUNTERS:INTEGRATION_TIME {:d}",
                              "Counter window, ms.", parse=int,
                              validator=in_range(*INTEGRATION_RANGE_MS), unit="ms")
    _detection_hz = control("COUNTERS:DETECTION_FREQ?", None,
                            "Click rate over the last window, Hz.", parse=float)
    _temperature_set_point_mc = control("REG:TEMP_SET_POINT?", "REG:TEMP_SET_POINT {:d}",
                                        "Cooler set point, m°C.", parse=int,
                                        validator=in_range(*TEMPERATURE_RANGE_MC), unit="m°C")
    _temperature_mc = control("REG:TEMP?", None, "Measured temperature, m°C.", parse=float)
    _regulation = control("REG:RUN?", "REG:RUN {:d}", "Temperature regulation on/off.",
                          parse=parse_bool)

    def __init__(
        self,
        transport: Transport,
        *,
        limits: Limits | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(transport, limits=limits)
        self._sleep = sleep

    def set_bias_v(self, volts: float) -> None:
        """Sets the APD bias, V (checked against ``Limits.max_bias_v`` first)."""
        self._bias_uv = to_units(self.limits.check_bias_v(volts), MICRO, "bias (V)")

    def bias_v(self) -> float:
        """The APD bias, V."""
        return self._bias_uv / MICRO

    def set_threshold_v(self, volts: float) -> None:
        """Sets the discriminator threshold, V."""
        self._threshold_uv = to_units(volts, MICRO, "threshold (V)")

    def threshold_v(self) -> float:
        """The discriminator threshold, V."""
        return self._threshold_uv / MICRO

    def set_dead_time_s(self, seconds: float) -> None:
        """Sets the dead time, s (a whole number of µs)."""
        self._dead_time_us = to_units(seconds, MICRO, "dead time (s)")

    def dead_time_s(self) -> float:
        """The dead time, s."""
        return self._dead_time_us / MICRO

    def set_integration_time_s(self, seconds: float) -> None:
        """Sets the counter window, s (a whole number of ms)."""
        self._integration_ms = to_units(seconds, MILLI, "integration time (s)")

    def integration_time_s(self) -> float:
        """The counter window, s."""
        return self._integration_ms / MILLI

    def set_temperature_set_point_c(self, celsius: float) -> None:
        """Sets the cooler set point, degrees C (checked against the Limits range first)."""
        value = self.limits.check_temperature_c(celsius)
        self._temperature_set_point_mc = to_units(value, MILLI, "temperature (C)")

    def temperature_set_point_c(self) -> float:
        """The cooler set point, degrees C."""
        return self._temperature_set_point_mc / MILLI

    def temperature_c(self) -> float:
        """The measured temperature, degrees C."""
        return self._temperature_mc / MILLI

    def set_regulation(self, on: bool) -> None:
        """Starts (True) or stops the temperature regulation."""
        self._regulation = bool(on)

    def regulation(self) -> bool:
        """Whether the temperature regulation runs."""
        return self._regulation

    @atomic
    def count_rate_hz(self, integration_time_s: float) -> float:
        """Sets the counter window, waits for a complete window, returns the click rate, Hz."""
        self.set_integration_time_s(integration_time_s)
        self._sleep(WINDOWS_TO_WAIT * integration_time_s)
        return self._detection_hz
