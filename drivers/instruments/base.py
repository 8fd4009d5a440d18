"""What message-based drivers share: the ``control`` descriptor, settings, error checks.

A driver is a class taking a :class:`~qkdnode.drivers.transport.Transport`. Its wire protocol is
declared in a table of :func:`control` descriptors in the instrument's own units (in the spirit
of PyMeasure's ``Instrument.control``)::

    class Meter(MessageInstrument):
        _wavelength_nm = control("SENSE:CORR:WAV?", "SENSE:CORR:WAV {:g}", "Wavelength, nm.",
                                 parse=float, validator=in_range(400, 1700))

Reading ``meter._wavelength_nm`` sends the query and parses the reply; assigning validates the
value, sends the formatted command and then runs the driver's :meth:`~MessageInstrument._check`
(a SCPI error queue query, an acknowledgement, or nothing). The role methods on top convert
units and enforce :class:`~qkdnode.drivers.roles.Limits` before any control is touched.

Settings: each driver lists what its ``settings`` table accepts in ``SETTINGS`` (name ->
:class:`Setting`); :func:`build_instrument` validates a table against it and applies it.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast, overload

from .._closing import ClosesOnExit
from ..errors import DeviceError, InstrumentError
from ..roles import Limits
from ..transport import Transport
from ..transport.base import describe_command, error_prefix

__all__ = [
    "MessageInstrument",
    "ScpiInstrument",
    "Setting",
    "atomic",
    "boolean",
    "build_instrument",
    "check_settings",
    "control",
    "finite",
    "in_range",
    "one_of",
    "parse_bool",
    "parse_scpi_error",
    "positive_int",
    "to_units",
]

T = TypeVar("T")
I = TypeVar("I", bound="MessageInstrument")  # noqa: E741
F = TypeVar("F", bound=Callable[..., Any])

# Values given to instruments in integer sub-units (µV, µs, m°C) must be whole numbers of the
# unit; anything else would be silently rounded. This relative tolerance only absorbs binary
# floating-point error (about 1e-16 of the value), so 48.25 V is 48250000 µV.
UNIT_ROUNDING_TOLERANCE = 1e-9


def atomic(method: F) -> F:
    """Runs a driver method under the driver's lock, so that its exchanges are not interleaved
    with another thread's (a set command and its error check, an upload and its verification).
    """

    @functools.wraps(method)
    def locked(self: MessageInstrument, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, locked)


def in_range(low: float, high: float) -> Callable[[Any], Any]:
    """A validator accepting numbers in ``[low, high]`` (the instrument's own range)."""

    span = f"{low:g}..{high:g}" if isinstance(low, float) or isinstance(high, float) else (
        f"{low}..{high}"
    )

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"must be in {span}, got {value!r}")
        return value

    return check


def one_of(*choices: Any) -> Callable[[Any], Any]:
    """A validator accepting only the given values."""

    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def to_units(value: float, scale: float, what: str) -> int:
    """Converts ``value`` (SI) to an integer count of ``1/scale`` units, refusing to round.

    Example: ``to_units(2e-6, 1e6, "dead time")`` is ``2`` (µs); ``to_units(1.5e-6, 1e6, ...)``
    raises, since 1.5 µs is not a whole number of µs.

    Raises:
        ValueError: if ``value`` is not finite or not a whole number of units.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    scaled = value * scale
    whole = round(scaled)
    if abs(scaled - whole) > UNIT_ROUNDING_TOLERANCE * max(1.0, abs(scaled)):
        raise ValueError(
            f"{what} {value!r} is not a whole number of the instrument's unit "
            f"({1 / scale:g} in SI units)"
        )
    return int(whole)


def finite(value: Any) -> float:
    """A settings check: a finite number (returned as float)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return float(value)


def boolean(value: Any) -> bool:
    """A settings check: true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def positive_int(value: Any) -> int:
    """A settings check: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def parse_bool(reply: str) -> bool:
    """Parses ``1``/``0``/``ON``/``OFF`` replies."""
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean reply: {reply!r}")


_SCPI_ERROR = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_scpi_error(reply: str) -> tuple[int, str]:
    """Parses a SCPI error queue entry ``<code>,"<message>"`` (code 0 is "no error").

    Raises:
        ValueError: if the reply has another form.
    """
    match = _SCPI_ERROR.match(reply)
    if match is None:
        raise ValueError(f"not a SCPI error queue entry: {reply!r}")
    return int(match.group(1)), match.group(2)


class control(Generic[T]):  # lower case: declared like a function, as PyMeasure's
    """A declarative instrument property over a query and a set command (instrument units).

    Args:
        get_cmd: the query (None: write-only).
        set_fmt: the set command, a :meth:`str.format` template for the value (None: read-only).
        doc: what the property is, with its unit.
        parse: converts the reply text to the value (stripped of whitespace first).
        validator: checks (and may convert) a value before it is sent; raises ValueError.
        unit: the unit on the wire, named in validation messages (e.g. ``"µV"``).
    """

    def __init__(
        self,
        get_cmd: str | None,
        set_fmt: str | None,
        doc: str,
        *,
        parse: Callable[[str], T],
        validator: Callable[[Any], Any] | None = None,
        unit: str = "",
    ) -> None:
        if get_cmd is None and set_fmt is None:
            raise ValueError("a control needs a query, a set command, or both")
        self.get_cmd = get_cmd
        self.set_fmt = set_fmt
        self.parse = parse
        self.validator = validator
        self.unit = unit
        self.__doc__ = doc
        self.name = "control"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> control[T]: ...

    @overload
    def __get__(self, obj: MessageInstrument, owner: type | None = None) -> T: ...

    def __get__(self, obj: MessageInstrument | None, owner: type | None = None) -> T | control[T]:
        if obj is None:
            return self
        if self.get_cmd is None:
            raise AttributeError(f"{self.name} is write-only")
        return obj._query_parsed(self.get_cmd, self.parse)

    def __set__(self, obj: MessageInstrument, value: T) -> None:
        if self.set_fmt is None:
            raise AttributeError(f"{self.name} is read-only")
        if self.validator is not None:
            try:
                value = self.validator(value)
            except ValueError as exc:
                header = self.set_fmt.split(" ", 1)[0]
                unit = f" ({self.unit} on the wire)" if self.unit else ""
                raise ValueError(f"{obj.transport.instrument}: {header} {exc}{unit}") from None
        obj._set(self.set_fmt.format(value))


@dataclass(frozen=True, slots=True)
class Setting:
    """One key a driver's ``settings`` table accepts.

    Attributes:
        doc: what it sets, with its unit.
        check: converts and validates the configured value; raises ValueError or TypeError.
        apply: the driver method called with the value when the instrument opens, in
            ``SETTINGS`` order; None if the value goes to the constructor as a keyword.
    """

    doc: str
    check: Callable[[Any], Any]
    apply: str | None = None


def _limit_setting(name: str) -> Setting:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        return float(value)

    return Setting(f"safety limit {name} (see Limits)", check)


LIMIT_SETTINGS: dict[str, Setting] = {name: _limit_setting(name) for name in Limits.KEYS}


class MessageInstrument(ClosesOnExit):
    """Base of message-based drivers: a transport, limits, checked sets and parsed queries.

    Threads: every exchange that belongs together (a set command and its error check, a query
    and the error check after a bad reply, multi-command methods marked :func:`atomic`) runs
    under the driver's re-entrant lock, so threads may share a driver.

    Args:
        transport: the instrument's open transport (the driver owns it from now on).
        limits: the safety limits (defaults: :class:`Limits` ()).
    """

    SETTINGS: ClassVar[Mapping[str, Setting]] = {}
    """The keys the driver's settings table accepts (besides the :class:`Limits` keys)."""
    WRITE_TERMINATION: ClassVar[str] = "\n"
    READ_TERMINATION: ClassVar[str] = "\n"

    def __init__(self, transport: Transport, *, limits: Limits | None = None) -> None:
        self._transport = transport
        self._limits = limits if limits is not None else Limits()
        self._lock = threading.RLock()

    @property
    def transport(self) -> Transport:
        """The transport the driver talks through."""
        return self._transport

    @property
    def limits(self) -> Limits:
        """The safety limits enforced before set commands."""
        return self._limits

    def close(self) -> None:
        """Closes the transport."""
        self._transport.close()


    def __repr__(self) -> str:
        t = self._transport
        return f"<{type(self).__name__} {t.instrument} at {t.resource}>"

    # -- protocol hooks -------------------------------------------------------------------------

    def _where(self) -> str:
        return error_prefix(self._transport.instrument, self._transport.resource)

    def _bad_reply(self, command: str, reply: str, why: str) -> DeviceError:
        return DeviceError(
            f"{self._where()}: unexpected reply {reply!r} to {describe_command(command)} ({why})"
        )

    @atomic
    def _query_parsed(self, command: str, parse: Callable[[str], T]) -> T:
        reply = self._transport.query(command).strip()
        try:
            return parse(reply)
        except (ValueError, KeyError) as exc:
            self._check()
            raise self._bad_reply(command, reply, str(exc)) from None

    @atomic
    def _set(self, command: str) -> None:
        """Sends a set command and checks that the instrument accepted it."""
        self._transport.write(command)
        self._check()

    def _check(self) -> None:
        """Checks the instrument's error state after a command (drivers override)."""


class ScpiInstrument(MessageInstrument):
    """A SCPI instrument with an error queue (``SYST:ERR?``) checked after every set command."""

    ERROR_QUERY: ClassVar[str] = "SYST:ERR?"
    # Enough to drain a queue after a burst of bad commands; a queue that never empties means
    # the instrument is not answering the error query as SCPI says.
    MAX_ERRORS_DRAINED: ClassVar[int] = 16

    def identify(self) -> str:
        """The ``*IDN?`` reply."""
        return self._transport.query("*IDN?").strip()

    def _check(self) -> None:
        """Drains the error queue; raises InstrumentError for the first error found."""
        first: tuple[int, str] | None = None
        for _ in range(self.MAX_ERRORS_DRAINED):
            reply = self._transport.query(self.ERROR_QUERY).strip()
            try:
                code, message = parse_scpi_error(reply)
            except ValueError:
                raise self._bad_reply(self.ERROR_QUERY, reply, "not an error queue entry") from None
            if code == 0:
                break
            if first is None:
                first = (code, message)
        if first is not None:
            raise InstrumentError(first[0], f"{self._where()}: {first[1]}")


def check_settings(
    cls: type[MessageInstrument], settings: Mapping[str, Any] | None, *, instrument: str
) -> dict[str, Any]:
    """Validates a settings table against ``cls.SETTINGS`` and the :class:`Limits` keys.

    Nothing is sent: a registry calls this before it opens the transport.

    Args:
        cls: the driver class.
        settings: the instrument's settings table.
        instrument: a name for messages, e.g. ``"detector 'apd'"``.

    Returns:
        The checked (converted) values.

    Raises:
        ValueError: for an unknown setting (naming it and the known ones), a bad value (naming
            the setting) or inconsistent limits.
    """
    known = {**LIMIT_SETTINGS, **cls.SETTINGS}
    checked: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        if key not in known:
            raise ValueError(
                f"{instrument}: unknown setting {key!r} for {cls.__name__} "
                f"(known: {', '.join(sorted(known))})"
            )
        try:
            checked[key] = known[key].check(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{instrument}: setting {key!r}: {exc}") from None
    try:
        Limits.from_settings(checked)
    except ValueError as exc:
        raise ValueError(f"{instrument}: {exc}") from None
    return checked


def build_instrument(
    cls: type[I], transport: Transport, settings: Mapping[str, Any] | None = None
) -> I:
    """Validates a settings table, builds the driver and applies the settings in order.

    Settings with an ``apply`` method are applied in ``cls.SETTINGS`` order (so a driver lists
    its cooler before its bias); the others go to the constructor.

    Args:
        cls: the driver class.
        transport: its open transport (closed again if building fails).
        settings: the instrument's settings table.

    Raises:
        ValueError: see :func:`check_settings`; also a limit refusing an initial value.
        DeviceError: if applying a setting fails at the instrument.
    """
    try:
        checked = check_settings(cls, settings, instrument=transport.instrument)
        limits = Limits.from_settings(checked)
        kwargs = {
            k: v for k, v in checked.items()
            if k in cls.SETTINGS and cls.SETTINGS[k].apply is None
        }
        instrument = cls(transport, limits=limits, **kwargs)
        for key, spec in cls.SETTINGS.items():
            if spec.apply is not None and key in checked:
                getattr(instrument, spec.apply)(checked[key])
    except BaseException:
        transport.close()
        raise
    return instrument
