"""scpi.voa: exact exchanges, attenuation floor, error queue, faults."""

from __future__ import annotations

import pytest

from qkdnode.drivers.errors import InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.scpi.voa import ScpiVoa
from qkdnode.drivers.roles import Attenuator, Limits
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "attenuator 'voa'", "resource": "visa://TCPIP0::10.0.0.7::inst0::INSTR"}
OK = ("SYST:ERR?", '0,"No error"')


def test_is_an_attenuator():
    with scripted([], **NAMES) as t:
        assert isinstance(ScpiVoa(t), Attenuator)


def test_exchanges():
    steps = [
        ("*IDN?", "ACME,VOA-1,42,1.0"),
        ("INP:ATT 12.500", None), OK,
        ("INP:ATT?", "+1.2500E+01"),
        ("OUTP:STAT ON", None), OK,
        ("OUTP:STAT?", "1"),
        ("OUTP:STAT OFF", None), OK,
        ("OUTP:STAT?", "0"),
    ]
    with scripted(steps, **NAMES) as t:
        voa = ScpiVoa(t)
        assert voa.identify() == "ACME,VOA-1,42,1.0"
        voa.set_attenuation_db(12.5)
        assert voa.attenuation_db() == 12.5
        voa.set_enabled(True)
        assert voa.enabled() is True
        voa.set_enabled(False)
        assert voa.enabled() is False


def test_attenuation_below_the_floor_is_refused_before_sending():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="min_attenuation_db") as info:
        ScpiVoa(t, limits=Limits(min_attenuation_db=20.0)).set_attenuation_db(10.0)
    assert "10.0 dB" in str(info.value)


def test_attenuation_outside_the_instrument_range_is_refused_before_sending():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="INP:ATT must be in"):
        ScpiVoa(t).set_attenuation_db(120.0)


def test_error_queue():
    steps = [("OUTP:STAT ON", None), ("SYST:ERR?", '-200,"Execution error; shutter fault"'), OK]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError) as info:
        ScpiVoa(t).set_enabled(True)
    assert info.value.code == -200
    assert "shutter fault" in info.value.message


def test_timeout_and_disconnect():
    with scripted([("INP:ATT?", SCRIPTED_TIMEOUT)], **NAMES) as t, pytest.raises(
        TransportTimeout, match=r"attenuator 'voa' at visa://TCPIP0.*'INP:ATT\?'"
    ):
        ScpiVoa(t).attenuation_db()
    with scripted([("INP:ATT 3.000", SCRIPTED_DISCONNECT)], **NAMES) as t, pytest.raises(
        TransportError, match=r"'INP:ATT 3\.000'"
    ):
        ScpiVoa(t).set_attenuation_db(3)


def test_build_checks_the_floor_from_settings():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="min_attenuation_db"):
        build_instrument(ScpiVoa, t, {"min_attenuation_db": 30, "attenuation_db": 25})
    steps = [("INP:ATT 35.000", None), OK, ("OUTP:STAT ON", None), OK]
    with scripted(steps, **NAMES) as t:
        build_instrument(ScpiVoa, t, {"min_attenuation_db": 30, "attenuation_db": 35,
                                      "enabled": True})
