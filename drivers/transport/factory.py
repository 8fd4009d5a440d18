"""Opening a transport from a resource URL, and the scheme registry.

``visa://`` and ``serial://`` are built in. ``sim://`` is provided by ``qkdnode.drivers.sim``,
which calls :func:`register_scheme` when imported (this module never imports it, so the real
transports do not depend on the simulated bench). ``lib://`` instruments are not message-based:
their drivers take a binding object from ``qkdnode.bindings`` instead of a transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..resource import SCHEMES, ResourceUrl, parse_resource_url
from .base import Transport, check_timeout
from .reconnect import ReconnectingTransport, ReconnectPolicy

__all__ = [
    "TransportFactory",
    "TransportOptions",
    "open_transport",
    "register_scheme",
    "registered_schemes",
    "unregister_scheme",
]


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """What :func:`open_transport` passes to a scheme's factory besides the parsed URL.

    Attributes:
        resource: the URL as configured (for messages).
        instrument: a name for messages, e.g. ``"detector 'spd'"``.
        timeout_s: the reply timeout in seconds.
        write_termination: appended to every text command.
        read_termination: ends every text reply.
        encoding: of commands and replies.
        driver: the driver name (``"thorlabs.mbx"``), when known: the simulated bench picks
            the instrument it emulates, and its transport, by it.
    """

    resource: str
    instrument: str
    timeout_s: float
    write_termination: str = "\n"
    read_termination: str = "\n"
    encoding: str = "ascii"
    driver: str | None = None


TransportFactory = Callable[[ResourceUrl, TransportOptions], Transport]
"""Builds an open transport for a parsed URL of its scheme."""


def _open_visa(url: ResourceUrl, options: TransportOptions) -> Transport:
    try:
        from .visa import VisaTransport
    except ImportError as exc:
        raise ImportError(f"{url.scheme}:// resources need pyvisa (pip install pyvisa)") from exc
    backend = url.params.get("backend")
    return VisaTransport(
        url.target,
        instrument=options.instrument,
        timeout_s=options.timeout_s,
        resource=options.resource,
        write_termination=options.write_termination,
        read_termination=options.read_termination,
        encoding=options.encoding,
        backend=str(backend) if backend is not None else None,
    )


# The URL's text values for pyserial's numeric settings (resource.py checks the choices).
_STOPBITS = {"1": 1, "1.5": 1.5, "2": 2}


def _open_serial(url: ResourceUrl, options: TransportOptions) -> Transport:
    try:
        from .serialport import DEFAULT_BAUDRATE, SerialTransport
    except ImportError as exc:
        raise ImportError(
            f"{url.scheme}:// resources need pyserial (pip install pyserial)"
        ) from exc
    params = url.params
    write_timeout = params.get("write_timeout")
    return SerialTransport(
        url.target,
        instrument=options.instrument,
        timeout_s=options.timeout_s,
        resource=options.resource,
        write_termination=options.write_termination,
        read_termination=options.read_termination,
        encoding=options.encoding,
        baudrate=int(str(params.get("baudrate", DEFAULT_BAUDRATE))),
        bytesize=int(str(params.get("bytesize", "8"))),
        parity=str(params.get("parity", "N")),
        stopbits=_STOPBITS[str(params.get("stopbits", "1"))],
        rtscts=params.get("rtscts") == "1",
        xonxoff=params.get("xonxoff") == "1",
        write_timeout_s=float(str(write_timeout)) if write_timeout is not None else None,
    )


# Schemes with a factory. A plug-in registry, like pyvisa's backends: the simulated bench adds
# ``sim`` without this module importing it.
_FACTORIES: dict[str, TransportFactory] = {"visa": _open_visa, "serial": _open_serial}

# Not message-based: reached through a binding object, never a transport.
_BINDING_SCHEMES = frozenset({"lib"})


def register_scheme(scheme: str, factory: TransportFactory, *, replace: bool = False) -> None:
    """Makes :func:`open_transport` build ``scheme://`` URLs with ``factory``.

    Args:
        scheme: a scheme :func:`~qkdnode.drivers.resource.parse_resource_url` accepts, e.g.
            ``"sim"``.
        factory: called with the parsed URL and the options; returns an open transport.
        replace: allow replacing an existing factory (for example in a test).

    Raises:
        ValueError: for an unknown scheme, for ``lib`` (not message-based), or if the scheme
            already has a factory and ``replace`` is false.
    """
    if scheme in _BINDING_SCHEMES:
        raise ValueError(f"{scheme}:// instruments take a binding object, not a transport")
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown resource URL scheme {scheme!r}; resource URLs know "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme in _FACTORIES and not replace:
        raise ValueError(f"{scheme}:// already has a transport factory (pass replace=True)")
    _FACTORIES[scheme] = factory


def unregister_scheme(scheme: str) -> None:
    """Removes a scheme's factory (``visa`` and ``serial`` return to the built-in ones)."""
    _FACTORIES.pop(scheme, None)
    if scheme == "visa":
        _FACTORIES[scheme] = _open_visa
    elif scheme == "serial":
        _FACTORIES[scheme] = _open_serial


def registered_schemes() -> tuple[str, ...]:
    """The schemes :func:`open_transport` can open now."""
    return tuple(sorted(_FACTORIES))


def open_transport(
    url: str,
    *,
    instrument: str,
    timeout_s: float,
    write_termination: str = "\n",
    read_termination: str = "\n",
    encoding: str = "ascii",
    reconnect: ReconnectPolicy | None = None,
    driver: str | None = None,
) -> Transport:
    """Opens the transport a resource URL names.

    Examples: ``visa://USB0::0x1313::0x8078::P0012345::INSTR``,
    ``visa://ASRL1::INSTR?backend=bench.yaml@sim``, ``serial:///dev/ttyUSB0?baudrate=115200``,
    ``serial://loop://`` (any pyserial URL after ``serial://``), ``sim://BENCH/INSTRUMENT`` once
    ``qkdnode.drivers.sim`` is imported.

    Args:
        url: the resource URL.
        instrument: a name for messages, e.g. ``"detector 'spd'"``.
        timeout_s: the reply timeout in seconds.
        write_termination: appended to every text command.
        read_termination: ends every text reply.
        encoding: of commands and replies.
        reconnect: if given, the transport reconnects with back-off under this policy (see
            :class:`~qkdnode.drivers.transport.reconnect.ReconnectingTransport`).
        driver: the driver name, for schemes that need it (``sim://``).

    Returns:
        An open transport.

    Raises:
        ValueError: for a malformed URL, a ``lib://`` URL, or a scheme nobody registered.
        TransportError: if the instrument cannot be reached.
    """
    parsed = parse_resource_url(url)
    options = TransportOptions(
        resource=url,
        instrument=instrument,
        timeout_s=check_timeout(timeout_s),
        write_termination=write_termination,
        read_termination=read_termination,
        encoding=encoding,
        driver=driver,
    )
    if parsed.scheme in _BINDING_SCHEMES:
        raise ValueError(
            f"{instrument} at {url}: {parsed.scheme}:// instruments are not message-based; their "
            "drivers take a binding object from qkdnode.bindings, not a transport"
        )
    factory = _FACTORIES.get(parsed.scheme)
    if factory is None:
        if parsed.scheme == "sim":
            raise ValueError(
                f"{instrument} at {url}: the simulated bench transport is provided by "
                "qkdnode.drivers.sim, which registers the sim:// scheme when imported; "
                "import qkdnode.drivers.sim before opening sim:// resources"
            )
        raise ValueError(f"{instrument} at {url}: no transport for {parsed.scheme}:// resources")
    if reconnect is None:
        return factory(parsed, options)
    return ReconnectingTransport(lambda: factory(parsed, options), policy=reconnect)
