"""pyserial URL handlers of the simulated bench (``sim://BENCH/INSTRUMENT``).

pyserial looks for ``protocol_<scheme>`` modules in the packages listed in
``serial.protocol_handler_packages``; :func:`qkdnode.drivers.sim.serial_handler.install` adds
this one, so ``serial.serial_for_url("sim://bench/bias")`` opens a simulated instrument.
"""

from __future__ import annotations

import serial

__all__ = ["install"]


def install() -> None:
    """Registers the ``sim://`` URL handler with pyserial (idempotent)."""
    if __name__ not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(__name__)
