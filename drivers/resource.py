"""Resource URLs: where an instrument is and which transport reaches it.

One URL per instrument in the node configuration selects the transport:

``visa://<VISA resource>[?backend=@py]``
    A message-based instrument through pyvisa, e.g. ``visa://USB0::0x1313::0x8078::P0012345::INSTR``.
``serial://<port>[?baudrate=115200&...]``
    A serial instrument through pyserial, e.g. ``serial:///dev/ttyUSB0?baudrate=115200`` or
    ``serial://COM3``.
``lib://<library path>[?device=0]``
    An instrument that comes only with a vendor C library, reached through ``bindings/``, e.g.
    ``lib:///opt/qutag/libtdcbase.so?device=0``.
``sim://<BENCH>/<INSTRUMENT>``
    The simulated counterpart on the simulated optical bench named BENCH.

Parsing checks the form only; whether the port or library exists is found when it is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = ["SCHEMES", "ResourceUrl", "parse_resource_url"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return check


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


# The query parameters each scheme accepts, with their parsers. Anything else is refused, so a
# typo (``baud=115200``) is an error rather than a silently ignored setting.
_PARAMS: dict[str, dict[str, Callable[[str], object]]] = {
    "visa": {"backend": _text},
    "serial": {
        "baudrate": _positive_int,
        "bytesize": _one_of("5", "6", "7", "8"),
        "parity": _one_of("N", "E", "O", "M", "S"),
        "stopbits": _one_of("1", "1.5", "2"),
        "rtscts": _one_of("0", "1"),
        "xonxoff": _one_of("0", "1"),
        "write_timeout": _seconds,
    },
    "lib": {"device": _non_negative_int, "serial": _text},
    "sim": {},
}
SCHEMES = tuple(_PARAMS)


@dataclass(frozen=True, slots=True)
class ResourceUrl:
    """A parsed resource URL.

    Attributes:
        scheme: ``visa``, ``serial``, ``lib`` or ``sim``.
        target: the VISA resource string, the serial port, the library path, or
            ``BENCH/INSTRUMENT`` for ``sim``.
        params: the query parameters, parsed to their types.
    """

    scheme: str
    target: str
    params: dict[str, object] = field(default_factory=dict)

    @property
    def bench(self) -> str:
        """The bench name of a ``sim://`` URL."""
        if self.scheme != "sim":
            raise ValueError(f"{self.scheme}:// URLs have no bench")
        return self.target.split("/", 1)[0]

    @property
    def instrument(self) -> str:
        """The instrument name of a ``sim://`` URL."""
        if self.scheme != "sim":
            raise ValueError(f"{self.scheme}:// URLs have no simulated instrument")
        return self.target.split("/", 1)[1]

    def __str__(self) -> str:
        query = "&".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.scheme}://{self.target}" + (f"?{query}" if query else "")


def parse_resource_url(url: str) -> ResourceUrl:
    """Parses and checks a resource URL.

    Raises:
        ValueError: naming what is wrong (unknown scheme, missing target, unknown or bad
            parameter).
    """
    if not isinstance(url, str):
        raise TypeError(f"resource URL must be a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"resource URL {url!r} has no scheme; expected one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme not in _PARAMS:
        raise ValueError(
            f"unknown resource URL scheme {scheme!r}; expected one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    target, _, query = rest.partition("?")
    if not target:
        raise ValueError(f"resource URL {url!r} names no {_TARGET_NAMES[scheme]}")
    if scheme == "sim":
        parts = target.split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(
                f"resource URL {url!r}: a sim:// URL is sim://BENCH/INSTRUMENT"
            )
    params: dict[str, object] = {}
    allowed = _PARAMS[scheme]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"resource URL {url!r}: malformed query {query!r}") from exc
    for key, value in pairs:
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise ValueError(
                f"resource URL {url!r}: unknown parameter {key!r} for {scheme}:// "
                f"(known: {known})"
            )
        if key in params:
            raise ValueError(f"resource URL {url!r}: parameter {key!r} given twice")
        try:
            params[key] = allowed[key](value)
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else "is not a valid value"
            raise ValueError(f"resource URL {url!r}: {key}={value!r} {reason}") from None
    return ResourceUrl(scheme, target, params)


_TARGET_NAMES = {
    "visa": "VISA resource",
    "serial": "serial port",
    "lib": "library",
    "sim": "bench and instrument",
}
