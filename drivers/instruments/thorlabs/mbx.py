"""``thorlabs.mbx``: Thorlabs MBX-class modulator bias controller, with its built-in VOA.

Wire protocol (serial 115200 baud, ``\\r`` sent, replies end with ``\\n``). Every command gets
one reply line: a set command answers ``1`` when accepted, a query answers its value, and a
refused command answers ``Err: <reason>`` (e.g. ``Err: Parameter error``).

================================  ===============================================  ==========
command                           meaning                                          unit
================================  ===============================================  ==========
``*IDN?``                         identification
``MZM:MODE: <n>`` / ``MZM:MODE?`` bias lock mode, numbered as :data:`MODE_CODES`
``MZM:HOLD:VOLTAGE: <n>`` / ``?`` bias held in MANUAL mode                         mV
``MZM:HOLD:RATIO: <n>`` / ``?``   tap power ratio held in the ratio modes          ratio x 100
``MZM:VOLTAGE?``                  bias applied now                                 V
``MZM:TAP:MW?``                   optical power on the monitor tap                 mW
``VOA:ATTEN: <x>`` / ``?``        VOA attenuation set point (1.0 .. 20.0)          dB
``VOA:POWER: 1|0`` / ``?``        VOA regulation on/off
================================  ===============================================  ==========

Mode numbering (DEVICES.md gives 1 = AUTOPEAK and 7 = MANUAL with AUTONULL, AUTOQUADPOS,
AUTOQUADNEG between; we take them in that order, and the two remaining codes as the ratio
modes that ``MZM:HOLD:RATIO`` serves): 1 AUTOPEAK, 2 AUTONULL, 3 AUTOQUADPOS, 4 AUTOQUADNEG,
5 ratio hold on the positive slope, 6 ratio hold on the negative slope, 7 MANUAL.

The MBX reports refusals as text only, so :class:`~qkdnode.drivers.errors.InstrumentError`
carries code :data:`MBX_ERROR_CODE` and the instrument's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ...errors import InstrumentError
from ...roles import LockMode
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

T = TypeVar("T")

__all__ = ["MBX", "MBX_ERROR_CODE", "MODE_CODES", "RATIO_MODE_NEGATIVE", "RATIO_MODE_POSITIVE"]

# The MBX's wire code of each lock mode (module docstring).
MODE_CODES: dict[LockMode, int] = {
    LockMode.PEAK: 1,
    LockMode.NULL: 2,
    LockMode.QUADRATURE_POSITIVE: 3,
    LockMode.QUADRATURE_NEGATIVE: 4,
    LockMode.MANUAL: 7,
}
RATIO_MODE_POSITIVE = 5
RATIO_MODE_NEGATIVE = 6
_MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}
# What an MBX error carries as its code: the instrument reports text only.
MBX_ERROR_CODE = -1
# The acknowledgement of an accepted set command.
ACK = "1"
# The MBX's error replies start with this.
ERROR_PREFIX = "Err:"
MILLI = 1e3
# The built-in VOA's attenuation range, dB (Thorlabs' remote control guide).
VOA_RANGE_DB = (1.0, 20.0)
# The bias output spans +/-10 V, i.e. +/-10000 mV on the wire (Limits are checked first).
HOLD_VOLTAGE_RANGE_MV = (-10_000, 10_000)
# A tap power ratio is held between 0 and 1, sent as an integer percentage.
RATIO_RANGE = (0, 100)


def _mode_code(code: int) -> int:
    if code not in range(1, 8):
        raise ValueError(f"must be a mode code 1..7, got {code!r}")
    return code


def _lock_mode(value: Any) -> LockMode:
    try:
        return LockMode(value)
    except ValueError:
        raise ValueError(
            f"must be one of {', '.join(m.value for m in LockMode)}, got {value!r}"
        ) from None


class MBX(MessageInstrument):
    """MBX-class bias controller; implements BiasController and Attenuator (its VOA).

    As an Attenuator, *enabled* means the VOA regulates to its set attenuation; disabled, its
    bias is 0 V and it attenuates least. Disabling therefore raises the optical power, and is
    refused while ``Limits.min_attenuation_db`` is above zero.
    """

    WRITE_TERMINATION = "\r"
    READ_TERMINATION = "\n"
    SETTINGS: ClassVar[Mapping[str, Setting]] = {
        "manual_bias_v": Setting("bias held in MANUAL mode, V", finite, "set_manual_bias_v"),
        "lock_mode": Setting(
            "lock mode: " + ", ".join(m.value for m in LockMode), _lock_mode, "set_lock_mode"
        ),
        "attenuation_db": Setting("VOA attenuation, dB", finite, "set_attenuation_db"),
        "voa_enabled": Setting("VOA regulation on (true) or off", boolean, "set_enabled"),
    }

    _mode = control("MZM:MODE?", "MZM:MODE: {:d}", "Lock mode code 1..7.", parse=int,
                    validator=_mode_code)
    _hold_mv = control("MZM:HOLD:VOLTAGE?", "MZM:HOLD:VOLTAGE: {:d}", "Manual bias, mV.",
                       parse=int, validator=in_range(*HOLD_VOLTAGE_RANGE_MV))
    _hold_ratio = control("MZM:HOLD:RATIO?", "MZM:HOLD:RATIO: {:d}", "Held ratio x 100.",
                          parse=int, validator=in_range(*RATIO_RANGE))
    _voltage_v = control("MZM:VOLTAGE?", None, "Bias applied now, V.", parse=float)
    _tap_mw = control("MZM:TAP:MW?", None, "Monitor tap power, mW.", parse=float)
    _voa_db = control("VOA:ATTEN?", "VOA:ATTEN: {:.2f}", "VOA attenuation, dB.", parse=float,
                      validator=in_range(*VOA_RANGE_DB))
    _voa_on = control("VOA:POWER?", "VOA:POWER: {:d}", "VOA regulation on/off.",
                      parse=parse_bool)

    def _raise_if_error(self, command: str, reply: str) -> None:
        if reply.startswith(ERROR_PREFIX):
            message = reply[len(ERROR_PREFIX):].strip()
            raise InstrumentError(
                MBX_ERROR_CODE, f"{self._where()}: {message} (command {command!r})"
            )

    @atomic
    def _query_parsed(self, command: str, parse: Callable[[str], T]) -> T:
        reply = self.transport.query(command).strip()
        self._raise_if_error(command, reply)
        try:
            return parse(reply)
        except (ValueError, KeyError) as exc:
            raise self._bad_reply(command, reply, str(exc)) from None

    @atomic
    def _set(self, command: str) -> None:
        """Sends a set command; the MBX acknowledges with ``1`` or answers ``Err: ...``."""
        reply = self.transport.query(command).strip()
        self._raise_if_error(command, reply)
        if reply != ACK:
            raise self._bad_reply(command, reply, f"expected the acknowledgement {ACK!r}")

    def identify(self) -> str:
        """The ``*IDN?`` reply."""
        return self._query_parsed("*IDN?", str)

    # -- BiasController -------------------------------------------------------------------------

    def set_lock_mode(self, mode: LockMode) -> None:
        """Selects the lock point (MZM:MODE)."""
        self._mode = MODE_CODES[LockMode(mode)]

    def lock_mode(self) -> LockMode:
        """The lock mode.

        Raises:
            ValueError: in a ratio mode (5 or 6), which LockMode does not name; see
                :meth:`mode_code`.
        """
        code = self._mode
        if code not in _MODES_BY_CODE:
            raise ValueError(
                f"{self.transport.instrument}: in ratio mode {code}, which has no LockMode"
            )
        return _MODES_BY_CODE[code]

    def mode_code(self) -> int:
        """The raw MZM:MODE code, 1..7."""
        return self._mode

    def set_manual_bias_v(self, volts: float) -> None:
        """Sets the bias held in MANUAL mode, V (``max_modulator_bias_v`` first; whole mV)."""
        self._hold_mv = to_units(self.limits.check_modulator_bias_v(volts), MILLI, "bias (V)")

    def manual_bias_v(self) -> float:
        """The bias held in MANUAL mode, V."""
        return self._hold_mv / MILLI

    @atomic
    def hold_ratio(self, positive_slope: bool, ratio: float) -> None:
        """Holds the tap power at ``ratio`` (0..1, in steps of 0.01) of its peak.

        Sets MZM:HOLD:RATIO then selects ratio mode 5 (positive slope) or 6 (negative).
        """
        self._hold_ratio = to_units(ratio, 100, "ratio")
        self._mode = RATIO_MODE_POSITIVE if positive_slope else RATIO_MODE_NEGATIVE

    def bias_v(self) -> float:
        """The bias applied now, V."""
        return self._voltage_v

    def tap_power_w(self) -> float:
        """Optical power on the monitor tap, W."""
        return self._tap_mw / MILLI

    # -- Attenuator (the built-in VOA) ---------------------------------------------------------

    def set_attenuation_db(self, db: float) -> None:
        """Sets the VOA attenuation, dB (``min_attenuation_db`` first, then 1.0..20.0)."""
        self._voa_db = self.limits.check_attenuation_db(db)

    def attenuation_db(self) -> float:
        """The VOA attenuation set point, dB."""
        return self._voa_db

    def set_enabled(self, enabled: bool) -> None:
        """Turns the VOA regulation on or off (off attenuates least: refused under a floor).

        Raises:
            ValueError: disabling while ``Limits.min_attenuation_db`` > 0 (nothing is sent).
        """
        if not enabled and self.limits.min_attenuation_db > 0:
            raise ValueError(
                f"{self.transport.instrument}: turning the VOA off removes its attenuation, "
                f"below the limit min_attenuation_db = {self.limits.min_attenuation_db} dB"
            )
        self._voa_on = bool(enabled)

    def enabled(self) -> bool:
        """Whether the VOA regulates."""
        return self._voa_on
