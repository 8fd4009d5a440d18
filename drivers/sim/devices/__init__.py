"""Simulated instruments: one emulator per message-based driver, speaking its command set.

Each is a message handler (bytes in, bytes out, no I/O) backed by a
:class:`~qkdnode.drivers.sim.bench.Bench`. :data:`EMULATORS` maps driver names to them.
"""

from __future__ import annotations

from .awg33500 import SimAWG33500
from .base import DeviceFault, MessageDevice, ScpiDevice
from .frame_streamer import SimFrameStreamer
from .id120 import SimID120
from .mbx import SimMBX
from .pm100 import SimPM100
from .spd import SimSPD
from .voa import SimVoa

__all__ = [
    "EMULATORS",
    "DeviceFault",
    "MessageDevice",
    "ScpiDevice",
    "SimAWG33500",
    "SimFrameStreamer",
    "SimID120",
    "SimMBX",
    "SimPM100",
    "SimSPD",
    "SimVoa",
]

EMULATORS: dict[str, type[MessageDevice]] = {
    "idq.id120": SimID120,
    "s15.spd": SimSPD,
    "thorlabs.mbx": SimMBX,
    "thorlabs.pm100": SimPM100,
    "scpi.voa": SimVoa,
    "keysight.33500": SimAWG33500,
    "scpi.frame_streamer": SimFrameStreamer,
}
"""Driver name -> emulator class."""
