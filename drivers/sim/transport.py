"""The ``sim://BENCH/INSTRUMENT`` transport: the lab's transports on a simulated instrument.

A VISA instrument's emulator is reached through :class:`~qkdnode.drivers.transport.visa.
VisaTransport` over the bench's pyvisa backend, a serial one's through
:class:`~qkdnode.drivers.transport.serialport.SerialTransport` over the ``sim://`` pyserial
handler: the same transport code as in the lab, only the bytes' far end differs.
"""

from __future__ import annotations

from ..errors import TransportError
from ..resource import ResourceUrl
from ..transport import Transport
from ..transport.factory import TransportOptions
from . import serial_handler, visa_backend
from .bench import get_bench

__all__ = ["open_sim_transport"]

# The serial instruments' line rate (the MBX's; nothing is clocked in the simulation).
SIM_BAUDRATE = 115_200


def open_sim_transport(url: ResourceUrl, options: TransportOptions) -> Transport:
    """Opens the transport of a simulated instrument (the ``sim`` scheme's factory).

    Raises:
        TransportError: the bench service hosting the bench cannot be reached.
        ValueError: no bench of that name, an instrument the bench does not know and no
            driver to create it, or a driver without a simulated counterpart.
    """
    try:
        device = get_bench(url.bench).device(url.instrument, options.driver)
    except ValueError as exc:
        raise ValueError(f"{options.instrument} at {options.resource}: {exc}") from None
    except OSError as exc:  # a bench service that cannot be reached
        raise TransportError(
            f"{options.instrument} at {options.resource}: bench service unreachable: {exc}"
        ) from exc
    if device.kind == "serial":
        from ..transport.serialport import SerialTransport

        serial_handler.install()
        return SerialTransport(
            f"sim://{url.bench}/{url.instrument}",
            instrument=options.instrument,
            timeout_s=options.timeout_s,
            resource=options.resource,
            write_termination=options.write_termination,
            read_termination=options.read_termination,
            encoding=options.encoding,
            baudrate=SIM_BAUDRATE,
        )
    from ..transport.visa import VisaTransport

    visa_backend.install()
    return VisaTransport(
        visa_backend.resource_name(url.bench, url.instrument),
        instrument=options.instrument,
        timeout_s=options.timeout_s,
        resource=options.resource,
        write_termination=options.write_termination,
        read_termination=options.read_termination,
        encoding=options.encoding,
        backend=visa_backend.backend_spec(),
    )
