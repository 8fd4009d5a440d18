"""Simulated ``thorlabs.mbx``: an MBX-class modulator bias controller and its VOA on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.thorlabs.mbx`). Every command
gets one reply line: ``1`` for an accepted set command, the value of a query, ``Err: ...``
for a refused one. Messages end with CR, LF or CRLF.

Physics: the bias output drives the bench's intensity modulator. MANUAL (7) applies the held
voltage; the lock modes hold a point of the transfer curve ``T(V)`` as the null drifts: the
null (2), the peak (1, null + V_pi), quadrature on the positive (3) or negative (4) slope
(null +/- V_pi/2), or a held ratio ``T / T_peak`` on either slope (5, 6). A lock point is
brought into the output range (+/-10 V) by whole periods (2 V_pi) of the curve. The monitor
tap reads :data:`TAP_FRACTION` of :data:`LASER_POWER_MW` times ``T(V_bias)``, with a monitor
photodiode's noise: :data:`TAP_RELATIVE_NOISE` of the reading plus :data:`TAP_DARK_NOISE_MW`
(both rms, drawn from the bench's seeded noise generator), as a real tap's transimpedance
amplifier gives; a noiseless tap would make a fitted extinction ratio's uncertainty (and any
model mismatch) look a million times smaller than on a real bench. The built-in
VOA sits after the modulator; its attenuation above its power-on value (1 dB, regulation off)
lowers every mean photon number.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from ...instruments.thorlabs.mbx import HOLD_VOLTAGE_RANGE_MV, RATIO_RANGE, VOA_RANGE_DB
from .base import MessageDevice

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["SimMBX"]

# The CW laser power reaching the modulator (a DFB laser of a few mW after isolator and
# polarisation controller) and the monitor tap's share of the modulator's output (a 1 % tap).
LASER_POWER_MW = 2.0
TAP_FRACTION = 0.01
# The monitor tap's reading noise (rms): relative (0.2 %), and the photodiode's dark noise, mW.
TAP_RELATIVE_NOISE = 2e-3
TAP_DARK_NOISE_MW = 1e-11
# The bias output's span, V.
OUTPUT_RANGE_V = (HOLD_VOLTAGE_RANGE_MV[0] / 1e3, HOLD_VOLTAGE_RANGE_MV[1] / 1e3)
MANUAL = 7
PARAMETER_ERROR = "Err: Parameter error"
UNKNOWN_COMMAND = "Err: Unknown command"
ACK = "1"


def _wrap(volts: float, period: float) -> float:
    """Brings a lock point into the output range by whole periods of the transfer curve."""
    low, high = OUTPUT_RANGE_V
    while volts > high:
        volts -= period
    while volts < low:
        volts += period
    return min(high, max(low, volts))


class SimMBX(MessageDevice):
    """An MBX-class bias controller with its built-in VOA."""

    KIND: ClassVar[str] = "serial"
    TERMINATORS: ClassVar[tuple[bytes, ...]] = (b"\r", b"\n")
    REPLY_TERMINATION: ClassVar[bytes] = b"\n"
    IDN: ClassVar[str] = "Thorlabs,MBX (simulated),SIM0004,1.0"

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self._mode = MANUAL
        self._hold_mv = round(bench.link.bias_voltage * 1e3)
        self._ratio = 50
        self._voa_db = VOA_RANGE_DB[0]
        self._voa_on = False

    def _tap_mw(self) -> float:
        """One reading of the monitor tap, mW (module docstring: signal and noise)."""
        power = LASER_POWER_MW * TAP_FRACTION * self.bench.modulator_transmission()
        with self.bench.lock:
            relative, dark = self.bench.rng.normal(0.0, 1.0, 2)
        return (power * (1.0 + TAP_RELATIVE_NOISE * float(relative))
                + TAP_DARK_NOISE_MW * float(dark))

    def _lock_target(self, null_v: float) -> float:
        src = self.bench.link.params.source
        v_pi = src.v_pi
        mode = self._mode
        if mode in (5, 6):
            t_min = math.pow(10.0, -src.extinction_ratio_db / 10.0)
            x = min(1.0, max(0.0, (self._ratio / 100 - t_min) / (1.0 - t_min)))
            offset = 2.0 * v_pi / math.pi * math.asin(math.sqrt(x))
            target = null_v + (offset if mode == 5 else -offset)
        else:
            target = null_v + {1: v_pi, 2: 0.0, 3: v_pi / 2, 4: -v_pi / 2}[mode]
        return _wrap(target, 2.0 * v_pi)

    def _apply_bias(self) -> None:
        if self._mode == MANUAL:
            self.bench.set_bias_voltage(self._hold_mv / 1e3)
        else:
            self.bench.set_bias_lock(self._lock_target)

    def _apply_voa(self) -> None:
        extra = (self._voa_db if self._voa_on else VOA_RANGE_DB[0]) - VOA_RANGE_DB[0]
        self.bench.set_attenuation(f"{self.name}/voa", extra)

    def handle(self, message: bytes) -> str | None:
        try:
            text = message.decode("ascii").strip()
        except UnicodeDecodeError:
            return UNKNOWN_COMMAND
        if not text:
            return None  # the LF of a CRLF
        upper = text.upper()
        if upper.endswith("?"):
            return self._query(upper)
        header, sep, arg = upper.rpartition(":")
        if not sep or not arg.strip():
            return PARAMETER_ERROR if header in self._SETTERS else UNKNOWN_COMMAND
        setter = self._SETTERS.get(header)
        if setter is None:
            return UNKNOWN_COMMAND
        try:
            value = float(arg)
        except ValueError:
            return PARAMETER_ERROR
        if not math.isfinite(value):
            return PARAMETER_ERROR
        return ACK if getattr(self, setter)(value) else PARAMETER_ERROR

    _SETTERS: ClassVar[dict[str, str]] = {
        "MZM:MODE": "_set_mode", "MZM:HOLD:VOLTAGE": "_set_hold",
        "MZM:HOLD:RATIO": "_set_ratio", "VOA:ATTEN": "_set_voa", "VOA:POWER": "_set_voa_on",
    }

    def _set_mode(self, value: float) -> bool:
        if not value.is_integer() or not 1 <= value <= 7:
            return False
        self._mode = int(value)
        self._apply_bias()
        return True

    def _set_hold(self, value: float) -> bool:
        if not value.is_integer() or not HOLD_VOLTAGE_RANGE_MV[0] <= value <= (
                HOLD_VOLTAGE_RANGE_MV[1]):
            return False
        self._hold_mv = int(value)
        if self._mode == MANUAL:
            self._apply_bias()
        return True

    def _set_ratio(self, value: float) -> bool:
        if not value.is_integer() or not RATIO_RANGE[0] <= value <= RATIO_RANGE[1]:
            return False
        self._ratio = int(value)
        if self._mode in (5, 6):
            self._apply_bias()
        return True

    def _set_voa(self, value: float) -> bool:
        if not VOA_RANGE_DB[0] <= value <= VOA_RANGE_DB[1]:
            return False
        self._voa_db = round(value, 2)
        self._apply_voa()
        return True

    def _set_voa_on(self, value: float) -> bool:
        if value not in (0.0, 1.0):
            return False
        self._voa_on = value == 1.0
        self._apply_voa()
        return True

    def _query(self, upper: str) -> str:
        if upper == "*IDN?":
            return self.IDN
        if upper == "MZM:MODE?":
            return str(self._mode)
        if upper == "MZM:HOLD:VOLTAGE?":
            return str(self._hold_mv)
        if upper == "MZM:HOLD:RATIO?":
            return str(self._ratio)
        if upper == "MZM:VOLTAGE?":
            return f"{self.bench.refresh_bias():.3f}"
        if upper == "MZM:TAP:MW?":
            return f"{self._tap_mw():.6g}"
        if upper == "VOA:ATTEN?":
            return f"{self._voa_db:.2f}"
        if upper == "VOA:POWER?":
            return "1" if self._voa_on else "0"
        return UNKNOWN_COMMAND
