"""``s15.spd``: a serial single-photon detector (S-Fifteen open SPD style).

Wire protocol (serial, ``\\r\\n`` sent, lines received; values in SI-ish plain decimals):

=========================  ====================================  ==============
command                    meaning                               unit
=========================  ====================================  ==============
``*IDN?``                  identification
``hvolt <x>`` / ``?``      APD bias                              V (3 decimals)
``threshvolt <x>`` / ``?`` discriminator threshold               V (3 decimals)
``time <n>`` / ``?``       counter window                        ms
``counts?``                clicks in one window (blocks for it)  counts
``temp?``                  measured temperature                  degrees C
``settemp <x>`` / ``?``    cooler set point                      degrees C
``loop 1|0`` / ``?``       temperature regulation on/off
=========================  ====================================  ==============

The instrument answers queries only and has no error queue, so every set command is verified
by reading the value back; a mismatch raises
:class:`~qkdnode.drivers.errors.InstrumentError` with code :data:`READBACK_MISMATCH`. The dead
time is fixed by the quenching circuit: give the unit's value in the settings (``dead_time_s``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from ...errors import InstrumentError
from ...roles import Limits
from ...transport import Transport
from ..base import (
    MessageInstrument,
    Setting,
    atomic,
    boolean,
    control,
    finite,
    in_range,
    parse_bool,
    to_units,
)

__all__ = ["READBACK_MISMATCH", "SPD"]

# Our code for "the value read back is not the value set": the instrument has no codes of its own.
READBACK_MISMATCH = -1
# Voltages go to the instrument with three decimals (its DAC steps are coarser than 1 mV).
MILLI = 1e3
# A read-back voltage within this of the set value is accepted (half a DAC step of ~2 mV).
VOLTAGE_READBACK_TOLERANCE_V = 0.002
# A read-back temperature set point within this is accepted (the set point is stored in 0.01 C).
TEMPERATURE_READBACK_TOLERANCE_C = 0.01
# The instrument's ranges: an SPAD bias supply of up to ~100 V, a 0-3.3 V comparator, a
# counter window of 1 ms to 60 s (Limits are checked before these).
BIAS_RANGE_V = (0.0, 100.0)
THRESHOLD_RANGE_V = (0.0, 3.3)
WINDOW_RANGE_MS = (1, 60_000)


def _positive_seconds(value: Any) -> float:
    seconds = finite(value)
    if seconds <= 0:
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return seconds


class SPD(MessageInstrument):
    """S-Fifteen-style SPD; implements :class:`~qkdnode.drivers.roles.Detector`.

    Args:
        transport: the instrument's transport (its timeout must exceed the counter window).
        limits: safety limits (bias, temperature range).
        dead_time_s: the unit's fixed dead time, s (None: not known).
    """

    WRITE_TERMINATION = "\r\n"
    READ_TERMINATION = "\n"
    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "dead_time_s": Setting("the unit's fixed dead time, s", _positive_seconds),
        "temperature_set_point_c": Setting("cooler set point, degrees C", finite,
                                           "set_temperature_set_point_c"),
        "regulation": Setting("temperature regulation on (true) or off", boolean,
                              "set_regulation"),
        "threshold_v": Setting("discriminator threshold, V", finite, "set_threshold_v"),
        "integration_time_s": Setting("counter window, s (whole ms)", finite,
                                      "set_integration_time_s"),
        "bias_v": Setting("APD bias, V (applied last)", finite, "set_bias_v"),
    }

    _hvolt = control("hvolt?", "hvolt {:.3f}", "APD bias, V.", parse=float,
                     validator=in_range(*BIAS_RANGE_V))
    _threshvolt = control("threshvolt?", "threshvolt {:.3f}", "Threshold, V.", parse=float,
                          validator=in_range(*THRESHOLD_RANGE_V))
    _time_ms = control("time?", "time {:d}", "Counter window, ms.", parse=int,
                       validator=in_range(*WINDOW_RANGE_MS))
    _counts = control("counts?", None, "Clicks in one window.", parse=int)
    _temp_c = control("temp?", None, "Measured temperature, degrees C.", parse=float)
    _settemp_c = control("settemp?", "settemp {:.2f}", "Cooler set point, degrees C.",
                         parse=float)
    _loop = control("loop?", "loop {:d}", "Temperature regulation on/off.", parse=parse_bool)

    def __init__(
        self,
        transport: Transport,
        *,
        limits: Limits | None = None,
        dead_time_s: float | None = None,
    ) -> None:
        super().__init__(transport, limits=limits)
        self._dead_time_s = dead_time_s

    def identify(self) -> str:
        """The ``*IDN?`` reply."""
        return self.transport.query("*IDN?").strip()

    def _mismatch(self, what: str, wanted: object, got: object) -> InstrumentError:
        return InstrumentError(
            READBACK_MISMATCH, f"{self._where()}: {what} set to {wanted}, reads back {got}"
        )

    def _verify_close(self, what: str, wanted: float, got: float, tolerance: float) -> None:
        if not math.isclose(wanted, got, rel_tol=0.0, abs_tol=tolerance):
            raise self._mismatch(what, wanted, got)

    @atomic
    def set_bias_v(self, volts: float) -> None:
        """Sets the APD bias, V (Limits first), and verifies it by reading back."""
        mv = to_units(self.limits.check_bias_v(volts), MILLI, "bias (V)")
        self._hvolt = mv / MILLI
        self._verify_close("hvolt", mv / MILLI, self._hvolt, VOLTAGE_READBACK_TOLERANCE_V)

    def bias_v(self) -> float:
        """The APD bias, V."""
        return self._hvolt

    @atomic
    def set_threshold_v(self, volts: float) -> None:
        """Sets the discriminator threshold, V, and verifies it by reading back."""
        mv = to_units(volts, MILLI, "threshold (V)")
        self._threshvolt = mv / MILLI
        got = self._threshvolt
        self._verify_close("threshvolt", mv / MILLI, got, VOLTAGE_READBACK_TOLERANCE_V)

    def threshold_v(self) -> float:
        """The discriminator threshold, V."""
        return self._threshvolt

    def set_dead_time_s(self, seconds: float) -> None:
        """The dead time is fixed: accepts only the configured value (nothing is sent).

        Raises:
            ValueError: for any other value, or if the unit's dead time is not configured.
        """
        fixed = self.dead_time_s()
        if not math.isclose(seconds, fixed, rel_tol=1e-9):
            raise ValueError(
                f"{self.transport.instrument}: the dead time is fixed at {fixed} s by the "
                f"quenching circuit; cannot set {seconds} s"
            )

    def dead_time_s(self) -> float:
        """The configured fixed dead time, s.

        Raises:
            ValueError: if the settings did not give ``dead_time_s``.
        """
        if self._dead_time_s is None:
            raise ValueError(
                f"{self.transport.instrument}: dead time not known; give the unit's value as "
                "dead_time_s in its settings table"
            )
        return self._dead_time_s

    @atomic
    def set_integration_time_s(self, seconds: float) -> None:
        """Sets the counter window, s (whole ms), and verifies it by reading back."""
        ms = to_units(seconds, MILLI, "integration time (s)")
        self._check_window(ms)
        self._time_ms = ms
        got = self._time_ms
        if got != ms:
            raise self._mismatch("time", ms, got)

    def integration_time_s(self) -> float:
        """The counter window, s."""
        return self._time_ms / MILLI

    def _check_window(self, ms: int) -> None:
        # counts? blocks for one window: a window as long as the reply timeout always times out.
        timeout_s = getattr(self.transport, "timeout_s", None)
        if isinstance(timeout_s, float) and ms / MILLI >= timeout_s:
            raise ValueError(
                f"{self.transport.instrument}: a counter window of {ms / MILLI} s needs a reply "
                f"timeout above it, the transport's is {timeout_s} s"
            )

    @atomic
    def set_temperature_set_point_c(self, celsius: float) -> None:
        """Sets the cooler set point, degrees C (Limits first), verified by reading back."""
        value = self.limits.check_temperature_c(celsius)
        self._settemp_c = value
        got = self._settemp_c
        self._verify_close("settemp", value, got, TEMPERATURE_READBACK_TOLERANCE_C)

    def temperature_set_point_c(self) -> float:
        """The cooler set point, degrees C."""
        return self._settemp_c

    def temperature_c(self) -> float:
        """The measured temperature, degrees C."""
        return self._temp_c

    @atomic
    def set_regulation(self, on: bool) -> None:
        """Starts (True) or stops the temperature regulation, verified by reading back."""
        self._loop = bool(on)
        got = self._loop
        if got != bool(on):
            raise self._mismatch("loop", int(on), int(got))

    def regulation(self) -> bool:
        """Whether the temperature regulation runs."""
        return self._loop

    @atomic
    def count_rate_hz(self, integration_time_s: float) -> float:
        """Sets the window, counts one window (the reply comes when it ends), returns Hz."""
        self.set_integration_time_s(integration_time_s)
        return self._counts / integration_time_s
