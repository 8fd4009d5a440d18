"""thorlabs.pm100: exact exchanges, error queue, faults, settings."""

from __future__ import annotations

import pytest

from qkdnode.drivers.errors import DeviceError, InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.thorlabs.pm100 import PM100
from qkdnode.drivers.roles import PowerMeter
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "power meter 'pm'", "resource": "visa://USB0::0x1313::0x8078::P1::INSTR"}
OK = ("SYST:ERR?", '+0,"No error"')


def test_is_a_power_meter():
    with scripted([], **NAMES) as t:
        assert isinstance(PM100(t), PowerMeter)


def test_identify_and_sensor():
    steps = [
        ("*IDN?", "Thorlabs,PM100USB,P1,1.7.0"),
        ("SYST:SENSOR:IDN?", "S122C,230301,22-Mar-2023,1,18,289"),
    ]
    with scripted(steps, **NAMES) as t:
        meter = PM100(t)
        assert meter.identify() == "Thorlabs,PM100USB,P1,1.7.0"
        assert meter.sensor_identify().startswith("S122C,")


def test_wavelength_averaging_and_power():
    steps = [
        ("SENSE:CORR:WAV 1550", None), OK,
        ("SENSE:CORR:WAV?", "1.550000E+03"),
        ("SENS:AVER:COUN 300", None), OK,
        ("SENS:AVER:COUN?", "300"),
        ("MEAS:POW?", "1.234000E-06"),
    ]
    with scripted(steps, **NAMES) as t:
        meter = PM100(t)
        meter.set_wavelength_nm(1550)
        assert meter.wavelength_nm() == 1550.0
        meter.set_averaging(300)
        assert meter.averaging() == 300
        assert meter.measure_power_w() == pytest.approx(1.234e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.set_wavelength_nm(100), "SENSE:CORR:WAV must be in 185..25000"),
        (lambda m: m.set_averaging(0), "SENS:AVER:COUN must be in 1..100000"),
        (lambda m: m.set_averaging(2.5), "must be an int"),
    ],
)
def test_out_of_range_values_are_refused_before_sending(call, match):
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=match):
        call(PM100(t))


def test_error_queue_is_drained_and_the_first_error_reported():
    steps = [
        ("SENSE:CORR:WAV 2000", None),
        ("SYST:ERR?", '-222,"Data out of range"'),
        ("SYST:ERR?", '-221,"Settings conflict"'),
        ("SYST:ERR?", '0,"No error"'),
    ]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError) as info:
        PM100(t).set_wavelength_nm(2000)
    assert info.value.code == -222
    assert info.value.message.endswith("Data out of range")


def test_garbage_from_the_error_queue_is_a_device_error():
    steps = [("SENSE:CORR:WAV 1310", None), ("SYST:ERR?", "what?")]
    with scripted(steps, **NAMES) as t, pytest.raises(DeviceError, match="SYST:ERR"):
        PM100(t).set_wavelength_nm(1310)


def test_timeout_and_disconnect():
    with scripted([("MEAS:POW?", SCRIPTED_TIMEOUT)], **NAMES) as t, pytest.raises(
        TransportTimeout, match=r"power meter 'pm' at visa://USB0.*'MEAS:POW\?'"
    ):
        PM100(t).measure_power_w()
    with scripted([("SENS:AVER:COUN 10", SCRIPTED_DISCONNECT)], **NAMES) as t, pytest.raises(
        TransportError, match="'SENS:AVER:COUN 10'"
    ):
        PM100(t).set_averaging(10)


def test_build_applies_the_settings():
    steps = [("SENSE:CORR:WAV 1310", None), OK, ("SENS:AVER:COUN 100", None), OK]
    with scripted(steps, **NAMES) as t:
        build_instrument(PM100, t, {"wavelength_nm": 1310, "averaging": 100})
