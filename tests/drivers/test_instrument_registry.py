"""The driver registry and open_instrument; the shared driver base (control, settings)."""

from __future__ import annotations

from typing import Any

import pytest

from qkdnode.drivers import registry
from qkdnode.drivers.errors import DeviceError
from qkdnode.drivers.instruments.base import (
    MessageInstrument,
    build_instrument,
    control,
    in_range,
    parse_scpi_error,
    to_units,
)
from qkdnode.drivers.instruments.generic.passive_receiver import PassiveReceiver
from qkdnode.drivers.instruments.idq.id120 import ID120
from qkdnode.drivers.instruments.thorlabs.mbx import MBX
from qkdnode.drivers.registry import DRIVERS, ROLE_PROTOCOLS, driver_names, open_instrument
from qkdnode.drivers.roles import OsRandomSource, SeededRandomSource
from qkdnode.drivers.transport import ScriptedTransport, scripted

OK = ("SYST:ERR?", '0,"No error"')


def test_driver_names():
    assert driver_names() == tuple(sorted(DRIVERS))
    for name in ("idq.id120", "s15.spd", "thorlabs.mbx", "thorlabs.pm100", "scpi.voa",
                 "keysight.33500", "os.csprng", "sim.seeded_random",
                 "generic.passive_receiver"):
        assert name in driver_names()


def test_every_entry_implements_its_roles():
    for info in DRIVERS.values():
        for role in info.roles:
            assert issubclass(info.cls, ROLE_PROTOCOLS[role])


def test_terminations_and_transport_kinds():
    mbx = DRIVERS["thorlabs.mbx"]
    assert (mbx.transport, mbx.write_termination, mbx.read_termination) == ("serial", "\r", "\n")
    assert DRIVERS["s15.spd"].write_termination == "\r\n"
    assert DRIVERS["idq.id120"].transport == "visa"
    assert DRIVERS["os.csprng"].transport is None


def test_unknown_driver_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown driver 'idq\.id999'") as info:
        open_instrument("d", "detector", "idq.id999", "visa://X::INSTR", 1.0, {})
    for name in driver_names():
        assert name in str(info.value)


def test_role_mismatch_names_what_the_driver_implements():
    with pytest.raises(ValueError, match="does not implement the role 'power_meter'") as info:
        open_instrument("d", "power_meter", "idq.id120", "visa://X::INSTR", 1.0, {})
    assert "implements: detector" in str(info.value)
    with pytest.raises(ValueError, match="unknown role 'laser'"):
        open_instrument("d", "laser", "idq.id120", "visa://X::INSTR", 1.0, {})


def test_unknown_setting_names_it_and_the_known_ones_before_opening_anything():
    with pytest.raises(ValueError, match="unknown setting 'bias'") as info:
        open_instrument("d", "detector", "idq.id120", "visa://NOWHERE::INSTR", 1.0, {"bias": 5})
    for known in ("bias_v", "dead_time_s", "max_bias_v"):
        assert known in str(info.value)
    with pytest.raises(ValueError, match=r"unknown setting 'seed' .*\(known: none\)"):
        open_instrument("r", "random_source", "os.csprng", "sim://b/r", 1.0, {"seed": 1})


def test_bad_setting_values_are_refused_before_the_transport_opens(monkeypatch):
    opener = FakeOpener([])
    monkeypatch.setattr(registry, "open_transport", opener)
    with pytest.raises(ValueError, match="detector 'apd': setting 'bias_v': must be a finite"):
        open_instrument("apd", "detector", "idq.id120", "visa://X::INSTR", 1.0,
                        {"bias_v": "high"})
    with pytest.raises(ValueError, match=r"min_temperature_c .* exceeds max_temperature_c"):
        open_instrument("apd", "detector", "idq.id120", "visa://X::INSTR", 1.0,
                        {"min_temperature_c": 10, "max_temperature_c": -10})
    assert opener.calls == []


def test_resource_the_driver_cannot_use():
    with pytest.raises(ValueError, match="serial:// resources cannot reach it"):
        open_instrument("pm", "power_meter", "thorlabs.pm100", "serial:///dev/ttyS0", 1.0, {})
    with pytest.raises(ValueError, match="lib:// resources cannot reach it"):
        open_instrument("spd", "detector", "s15.spd", "lib:///opt/x.so", 1.0, {})


class FakeOpener:
    """Stands in for open_transport: records its arguments, returns a scripted transport."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.calls: list[dict[str, Any]] = []
        self.transport: ScriptedTransport | None = None

    def __call__(self, url: str, **kwargs: Any) -> ScriptedTransport:
        self.calls.append({"url": url, **kwargs})
        self.transport = ScriptedTransport(
            self.steps, instrument=kwargs["instrument"], resource=url,
            timeout_s=kwargs["timeout_s"],
        )
        return self.transport


def test_open_instrument_opens_with_the_driver_terminations_and_applies_settings(monkeypatch):
    opener = FakeOpener([("MZM:HOLD:VOLTAGE: 1200", "1"), ("MZM:MODE: 7", "1")])
    monkeypatch.setattr(registry, "open_transport", opener)
    url = "serial:///dev/ttyUSB0?baudrate=115200"
    mbx = open_instrument("mbx", "bias_controller", "thorlabs.mbx", url, 1.5,
                          {"manual_bias_v": 1.2, "lock_mode": "manual"})
    assert isinstance(mbx, MBX)
    assert opener.calls == [{
        "url": url, "instrument": "bias controller 'mbx'", "timeout_s": 1.5,
        "write_termination": "\r", "read_termination": "\n", "driver": "thorlabs.mbx",
    }]
    assert opener.transport is not None
    opener.transport.assert_done()


def test_the_same_driver_opens_a_simulated_resource(monkeypatch):
    opener = FakeOpener([("BIAS:VOLTAGE 40000000", None), OK])
    monkeypatch.setattr(registry, "open_transport", opener)
    detector = open_instrument("apd", "detector", "idq.id120", "sim://bench/apd", 2.0,
                               {"bias_v": 40})
    assert isinstance(detector, ID120)
    assert opener.calls[0]["url"] == "sim://bench/apd"


def test_a_failing_initial_setting_closes_the_transport(monkeypatch):
    opener = FakeOpener([])
    monkeypatch.setattr(registry, "open_transport", opener)
    with pytest.raises(ValueError, match="max_bias_v"):
        open_instrument("apd", "detector", "idq.id120", "visa://X::INSTR", 2.0,
                        {"bias_v": 100})
    assert opener.transport is not None
    assert opener.transport.closed


def test_drivers_without_a_transport():
    assert isinstance(
        open_instrument("rng", "random_source", "os.csprng", "sim://b/rng", 1.0, None),
        OsRandomSource,
    )
    seeded = open_instrument("rng", "random_source", "sim.seeded_random", "sim://b/rng", 1.0,
                             {"seed": 3})
    assert isinstance(seeded, SeededRandomSource)
    with pytest.raises(ValueError, match="simulated bench only"):
        open_instrument("rng", "random_source", "sim.seeded_random",
                        "visa://USB0::1::2::QRNG::INSTR", 1.0, {"seed": 3})
    receiver = open_instrument("bob", "receiver", "generic.passive_receiver", "sim://b/rx", 1.0,
                               {"channel_map": {"1": "X0", "2": "X1", "3": "Z0", "4": "Z1"}})
    assert isinstance(receiver, PassiveReceiver)


# --- the driver base ----------------------------------------------------------------------------


class Toy(MessageInstrument):
    level = control("LEV?", "LEV {:d}", "A level.", parse=int, validator=in_range(0, 9))
    status = control("STAT?", None, "Read-only.", parse=str)
    reset = control(None, "RST {}", "Write-only.", parse=str)


def test_control_descriptor():
    steps = [("LEV 3", None), ("LEV?", "3"), ("STAT?", " ready \r"), ("RST now", None)]
    with scripted(steps) as t:
        toy = Toy(t)
        toy.level = 3
        assert toy.level == 3
        assert toy.status == "ready"
        toy.reset = "now"
        with pytest.raises(ValueError, match=r"LEV must be in 0\.\.9, got 12"):
            toy.level = 12
        with pytest.raises(AttributeError, match="read-only"):
            toy.status = "x"
        with pytest.raises(AttributeError, match="write-only"):
            toy.reset  # noqa: B018 - the read is the point
    assert isinstance(Toy.level, control)
    assert Toy.level.__doc__ == "A level."


def test_unparsable_reply_is_a_device_error_naming_command_and_reply():
    names = {"instrument": "toy 't'", "resource": "scripted://toy"}
    with scripted([("LEV?", "high")], **names) as t, pytest.raises(DeviceError) as info:
        Toy(t).level  # noqa: B018 - the query is the point
    assert str(info.value) == "toy 't' at scripted://toy: unexpected reply 'high' to 'LEV?' " + (
        "(invalid literal for int() with base 10: 'high')"
    )


def test_to_units_refuses_to_round():
    assert to_units(48.25, 1e6, "bias") == 48_250_000
    assert to_units(-40.5, 1e3, "t") == -40_500
    with pytest.raises(ValueError, match="whole number"):
        to_units(1.0000005, 1e3, "t")
    with pytest.raises(ValueError, match="finite"):
        to_units(float("inf"), 1e3, "t")


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        ('0,"No error"', (0, "No error")),
        ('+0,"No error"', (0, "No error")),
        ('-113,"Undefined header"', (-113, "Undefined header")),
        ("-350,Queue overflow", (-350, "Queue overflow")),
    ],
)
def test_parse_scpi_error(reply, parsed):
    assert parse_scpi_error(reply) == parsed


def test_build_instrument_refuses_unknown_settings_with_the_known_list_and_closes():
    with scripted([]) as t:
        with pytest.raises(ValueError, match="unknown setting 'colour'") as info:
            build_instrument(Toy, t, {"colour": "red"})
        assert t.closed
    assert "max_bias_v" in str(info.value)
