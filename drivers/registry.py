"""The driver registry: driver names (``"idq.id120"``, ...) to classes, and opening them.

The node's configuration names each instrument's role, driver, resource URL, timeout and a
free settings table; :func:`open_instrument` takes exactly those (plain values, so the device
layer never imports the node) and returns a ready driver::

    detector = open_instrument("spd", "detector", "idq.id120",
                               "visa://USB0::0x1DDC::0x0120::INSTR", 2.0, {"bias_v": 48.5})

The same driver opens a ``sim://BENCH/INSTRUMENT`` resource: the simulated bench speaks the
instrument's protocol behind the same transport, and nothing here treats it specially (the
bench's package is imported on demand so that it can register the ``sim://`` transport).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .instruments.base import MessageInstrument, build_instrument, check_settings
from .instruments.generic.passive_receiver import PassiveReceiver
from .instruments.idq.id120 import ID120
from .instruments.keysight.awg33500 import AWG33500
from .instruments.picoquant import hydraharp, multiharp
from .instruments.qutools import qutag
from .instruments.s15.spd import SPD
from .instruments.scpi.frame_streamer import FrameStreamerScpi
from .instruments.scpi.voa import ScpiVoa
from .instruments.swabian import timetagger as swabian_timetagger
from .instruments.thorlabs.mbx import MBX
from .instruments.thorlabs.pm100 import PM100
from .resource import parse_resource_url
from .roles import (
    Attenuator,
    BiasController,
    Detector,
    FrameStreamer,
    Limits,
    OsRandomSource,
    PowerMeter,
    RandomSource,
    Receiver,
    SeededRandomSource,
    TimeTagger,
    Transmitter,
)
from .transport import open_transport, registered_schemes

__all__ = ["DRIVERS", "ROLE_PROTOCOLS", "DriverInfo", "driver_names", "open_instrument"]

# The role names of the node configuration and the protocol each stands for.
ROLE_PROTOCOLS: dict[str, type] = {
    "time_tagger": TimeTagger,
    "detector": Detector,
    "transmitter": Transmitter,
    "frame_streamer": FrameStreamer,
    "receiver": Receiver,
    "bias_controller": BiasController,
    "attenuator": Attenuator,
    "power_meter": PowerMeter,
    "random_source": RandomSource,
}

# Which resource URL schemes reach an instrument of each transport kind: its own, the simulated
# bench, and for serial instruments also VISA (ASRL resources are serial ports).
_SCHEMES_FOR_KIND = {"visa": ("visa", "sim"), "serial": ("serial", "visa", "sim")}


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a non-negative integer, got {value!r}")
    return value


def _build_os_random(resource: str, settings: Mapping[str, Any]) -> Any:
    del resource  # the operating system's CSPRNG is not addressed by the URL
    return OsRandomSource()


def _build_seeded_random(resource: str, settings: Mapping[str, Any]) -> Any:
    return SeededRandomSource(resource, _seed(settings.get("seed", 0)))


def _build_passive_receiver(resource: str, settings: Mapping[str, Any]) -> Any:
    del resource  # configuration only: the detectors behind it are instruments of their own
    return PassiveReceiver.from_settings(settings)


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """One registered driver.

    Attributes:
        roles: the roles it implements (configuration names, e.g. ``"detector"``).
        cls: the driver class.
        transport: the transport kind it needs (``"visa"`` or ``"serial"``), or None for a
            driver without a transport (built by ``build``).
        write_termination: appended to each command.
        read_termination: ends each reply.
        settings: settings keys accepted by a driver without a transport (with a transport, the
            class's ``SETTINGS`` and the Limits keys).
        build: for a driver without a transport, ``build(resource, settings)``.
        doc: one line on what it drives.
    """

    roles: tuple[str, ...]
    cls: type
    transport: str | None
    write_termination: str = "\n"
    read_termination: str = "\n"
    settings: tuple[str, ...] = ()
    build: Callable[[str, Mapping[str, Any]], Any] | None = field(default=None, repr=False)
    doc: str = ""

    def known_settings(self) -> tuple[str, ...]:
        """The settings keys the driver accepts, sorted."""
        if self.transport is not None and issubclass(self.cls, MessageInstrument):
            return tuple(sorted({*self.cls.SETTINGS, *Limits.KEYS}))
        return tuple(sorted(self.settings))


def _message_driver(cls: type[MessageInstrument], roles: tuple[str, ...], transport: str,
                    doc: str) -> DriverInfo:
    return DriverInfo(roles, cls, transport, cls.WRITE_TERMINATION, cls.READ_TERMINATION, doc=doc)


DRIVERS: dict[str, DriverInfo] = {
    "idq.id120": _message_driver(ID120, ("detector",), "visa",
                                 "ID120-class SCPI detector controller"),
    "s15.spd": _message_driver(SPD, ("detector",), "serial", "S-Fifteen-style serial SPD"),
    "thorlabs.mbx": _message_driver(MBX, ("bias_controller", "attenuator"), "serial",
                                    "MBX-class modulator bias controller and its VOA"),
    "thorlabs.pm100": _message_driver(PM100, ("power_meter",), "visa",
                                      "PM100-class optical power meter"),
    "scpi.voa": _message_driver(ScpiVoa, ("attenuator",), "visa",
                                "generic SCPI variable optical attenuator"),
    "keysight.33500": _message_driver(AWG33500, ("transmitter",), "visa",
                                      "33500-class AWG playing the transmitter frame"),
    "scpi.frame_streamer": _message_driver(
        FrameStreamerScpi, ("frame_streamer",), "visa",
        "FPGA pattern generator streaming one frame per block (qkdnode's SCPI interface)"),
    "os.csprng": DriverInfo(("random_source",), OsRandomSource, None, build=_build_os_random,
                            doc="the operating system's CSPRNG"),
    "sim.seeded_random": DriverInfo(("random_source",), SeededRandomSource, None,
                                    settings=("seed",), build=_build_seeded_random,
                                    doc="seeded generator, simulated bench only"),
    "generic.passive_receiver": DriverInfo(("receiver",), PassiveReceiver, None,
                                           settings=("channel_map",),
                                           build=_build_passive_receiver,
                                           doc="passive basis choice: channel -> (basis, bit)"),
    # Time taggers on vendor C libraries: lib:///path?device=N, or sim://BENCH/INSTRUMENT for
    # the library's C mock fed by the simulated bench (same binding, same driver).
    "qutools.qutag": DriverInfo(("time_tagger",), qutag.QuTag, None, settings=qutag.SETTINGS,
                                build=qutag.build, doc="quTAG through tdcbase (library V1.5.x)"),
    "picoquant.hydraharp": DriverInfo(("time_tagger",), hydraharp.HydraHarp, None,
                                      settings=hydraharp.SETTINGS, build=hydraharp.build,
                                      doc="HydraHarp 400 through HHLib 3.0, T2 mode"),
    "picoquant.multiharp": DriverInfo(("time_tagger",), multiharp.MultiHarp, None,
                                      settings=multiharp.SETTINGS, build=multiharp.build,
                                      doc="MultiHarp 150/160 through MHLib 3.x, T2 mode"),
    "swabian.timetagger": DriverInfo(("time_tagger",), swabian_timetagger.SwabianTimeTagger, None,
                                     settings=swabian_timetagger.SETTINGS,
                                     build=swabian_timetagger.build,
                                     doc="Swabian Time Tagger through its Python SDK"),
}
"""Driver name -> :class:`DriverInfo`."""


def driver_names() -> tuple[str, ...]:
    """The registered driver names, sorted."""
    return tuple(sorted(DRIVERS))


def _driver(driver: str) -> DriverInfo:
    info = DRIVERS.get(driver)
    if info is None:
        raise ValueError(f"unknown driver {driver!r} (known: {', '.join(driver_names())})")
    return info


def _check_role(name: str, role: str, driver: str, info: DriverInfo) -> None:
    protocol = ROLE_PROTOCOLS.get(role)
    if protocol is None:
        raise ValueError(
            f"instrument {name!r}: unknown role {role!r} (known: {', '.join(ROLE_PROTOCOLS)})"
        )
    if role not in info.roles or not issubclass(info.cls, protocol):
        raise ValueError(
            f"instrument {name!r}: driver {driver!r} does not implement the role {role!r} "
            f"(it implements: {', '.join(info.roles)})"
        )


def _check_settings(name: str, driver: str, info: DriverInfo, settings: Mapping[str, Any]) -> None:
    known = info.known_settings()
    for key in settings:
        if key not in known:
            raise ValueError(
                f"instrument {name!r}: unknown setting {key!r} for driver {driver!r} "
                f"(known: {', '.join(known) or 'none'})"
            )


def open_instrument(
    name: str,
    role: str,
    driver: str,
    resource: str,
    timeout_s: float,
    settings: Mapping[str, Any] | None = None,
) -> Any:
    """Opens one configured instrument and applies its settings.

    Args:
        name: the instrument's name in the configuration (for messages).
        role: the role it is used for (``"detector"``, ``"bias_controller"``, ...).
        driver: the driver name (see :func:`driver_names`).
        resource: its resource URL.
        timeout_s: the reply timeout, s.
        settings: its settings table, validated by the driver.

    Returns:
        The driver instance; it implements the protocol of ``role``.

    Raises:
        ValueError: an unknown driver (listing the known ones), a role the driver does not
            implement, an unknown setting (naming it and the known ones), a bad value, a limit
            refusing an initial setting, or a resource the driver cannot use.
        DeviceError: the instrument could not be reached or refused a setting.
    """
    info = _driver(driver)
    _check_role(name, role, driver, info)
    table = dict(settings or {})
    label = f"{role.replace('_', ' ')} {name!r}"
    if info.transport is None:
        _check_settings(name, driver, info, table)
        assert info.build is not None
        return info.build(resource, table)
    assert issubclass(info.cls, MessageInstrument)
    check_settings(info.cls, table, instrument=label)  # before anything is opened
    url = parse_resource_url(resource)
    allowed = _SCHEMES_FOR_KIND[info.transport]
    if url.scheme not in allowed:
        raise ValueError(
            f"instrument {name!r}: driver {driver!r} talks over {info.transport}; "
            f"{url.scheme}:// resources cannot reach it (use "
            + " or ".join(f"{s}://" for s in allowed)
            + ")"
        )
    if url.scheme == "sim" and "sim" not in registered_schemes():
        # The simulated bench registers its transport when imported; if it cannot be,
        # open_transport explains what is missing.
        with contextlib.suppress(ImportError):
            importlib.import_module("qkdnode.drivers.sim")
    transport = open_transport(
        resource,
        instrument=label,
        timeout_s=timeout_s,
        write_termination=info.write_termination,
        read_termination=info.read_termination,
        driver=driver,
    )
    return build_instrument(info.cls, transport, table)
