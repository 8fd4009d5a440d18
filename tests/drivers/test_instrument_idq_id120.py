"""idq.id120: exact exchanges, unit conversions, limits, error queue, timeouts."""

from __future__ import annotations

import threading
import time

import pytest

from qkdnode.drivers.errors import DeviceError, InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.idq.id120 import ID120
from qkdnode.drivers.roles import Detector, Limits
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "detector 'apd'", "resource": "visa://USB0::0x1DDC::0x0120::D1::INSTR"}
OK = ("SYST:ERR?", '0,"No error"')


def make(transport, **kw):
    sleeps: list[float] = []
    return ID120(transport, sleep=sleeps.append, **kw), sleeps


def test_is_a_detector():
    with scripted([], **NAMES) as t:
        assert isinstance(make(t)[0], Detector)


def test_identify():
    with scripted([("*IDN?", "ID Quantique,ID120,1234,2.1\n")], **NAMES) as t:
        assert make(t)[0].identify() == "ID Quantique,ID120,1234,2.1"


@pytest.mark.parametrize(
    ("method", "value", "command"),
    [
        ("set_bias_v", 48.25, "BIAS:VOLTAGE 48250000"),
        ("set_threshold_v", 0.0125, "THRESHOLD:VOLTAGE 12500"),
        ("set_dead_time_s", 10e-6, "DEADTIME:TIME 10"),
        ("set_integration_time_s", 0.25, "COUNTERS:INTEGRATION_TIME 250"),
        ("set_temperature_set_point_c", -40.5, "REG:TEMP_SET_POINT -40500"),
        ("set_regulation", True, "REG:RUN 1"),
        ("set_regulation", False, "REG:RUN 0"),
    ],
)
def test_set_commands_convert_to_wire_units_and_check_the_error_queue(method, value, command):
    with scripted([(command, None), OK], **NAMES) as t:
        getattr(make(t)[0], method)(value)


@pytest.mark.parametrize(
    ("method", "command", "reply", "expected"),
    [
        ("bias_v", "BIAS:VOLTAGE?", "48250000", 48.25),
        ("threshold_v", "THRESHOLD:VOLTAGE?", "12500", 0.0125),
        ("dead_time_s", "DEADTIME:TIME?", "10", 10e-6),
        ("integration_time_s", "COUNTERS:INTEGRATION_TIME?", "250", 0.25),
        ("temperature_set_point_c", "REG:TEMP_SET_POINT?", "-40500", -40.5),
        ("temperature_c", "REG:TEMP?", "-40490", -40.49),
        ("regulation", "REG:RUN?", "1", True),
    ],
)
def test_queries_convert_from_wire_units(method, command, reply, expected):
    with scripted([(command, reply)], **NAMES) as t:
        assert getattr(make(t)[0], method)() == pytest.approx(expected)


def test_count_rate_sets_the_window_waits_two_windows_then_reads():
    steps = [("COUNTERS:INTEGRATION_TIME 100", None), OK, ("COUNTERS:DETECTION_FREQ?", "1234.5")]
    with scripted(steps, **NAMES) as t:
        detector, sleeps = make(t)
        assert detector.count_rate_hz(0.1) == 1234.5
    assert sleeps == [pytest.approx(0.2)]


@pytest.mark.parametrize(
    ("method", "value", "limit"),
    [
        ("set_bias_v", 75.5, "max_bias_v"),
        ("set_bias_v", -80.0, "max_bias_v"),
        ("set_temperature_set_point_c", -70.0, "min_temperature_c"),
        ("set_temperature_set_point_c", 45.0, "max_temperature_c"),
    ],
)
def test_limits_refuse_before_anything_is_sent(method, value, limit):
    with scripted([], **NAMES) as t:  # no steps: any command fails the script
        with pytest.raises(ValueError, match=limit) as info:
            getattr(make(t)[0], method)(value)
        assert str(value) in str(info.value)


def test_configured_limit_allows_a_higher_bias():
    with scripted([("BIAS:VOLTAGE 180000000", None), OK], **NAMES) as t:
        make(t, limits=Limits(max_bias_v=200.0))[0].set_bias_v(180.0)


@pytest.mark.parametrize(
    ("method", "value", "match"),
    [
        ("set_dead_time_s", 1.5e-6, "whole number"),
        ("set_dead_time_s", 5e-3, "DEADTIME:TIME must be in 1..1000, got 5000"),
        ("set_integration_time_s", 0.0005, "whole number"),
        ("set_threshold_v", float("nan"), "finite"),
    ],
)
def test_values_the_instrument_cannot_take_are_refused_before_sending(method, value, match):
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=match):
        getattr(make(t)[0], method)(value)


def test_error_queue_entry_raises_instrument_error_with_code():
    steps = [
        ("THRESHOLD:VOLTAGE 900000", None),
        ("SYST:ERR?", '-222,"Data out of range"'),
        ("SYST:ERR?", '0,"No error"'),
    ]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError) as info:
        make(t)[0].set_threshold_v(0.9)
    assert info.value.code == -222
    assert "Data out of range" in info.value.message
    assert NAMES["resource"] in str(info.value)


def test_malformed_reply_checks_the_queue_then_names_command_and_reply():
    steps = [("BIAS:VOLTAGE?", "oops"), OK]
    with scripted(steps, **NAMES) as t, pytest.raises(DeviceError) as info:
        make(t)[0].bias_v()
    assert "'BIAS:VOLTAGE?'" in str(info.value)
    assert "oops" in str(info.value)


def test_timeout_names_instrument_resource_and_command():
    steps = [("COUNTERS:INTEGRATION_TIME 10", None), OK,
             ("COUNTERS:DETECTION_FREQ?", SCRIPTED_TIMEOUT)]
    with scripted(steps, **NAMES) as t, pytest.raises(TransportTimeout) as info:
        make(t)[0].count_rate_hz(0.01)
    text = str(info.value)
    assert "detector 'apd'" in text
    assert NAMES["resource"] in text
    assert "COUNTERS:DETECTION_FREQ?" in text


def test_disconnect_names_instrument_resource_and_command():
    steps = [("BIAS:VOLTAGE 10000000", SCRIPTED_DISCONNECT)]
    with scripted(steps, **NAMES) as t, pytest.raises(TransportError) as info:
        make(t)[0].set_bias_v(10.0)
    assert f"detector 'apd' at {NAMES['resource']}" in str(info.value)
    assert "'BIAS:VOLTAGE 10000000'" in str(info.value)


def test_build_applies_settings_in_a_safe_order():
    steps = [
        ("REG:TEMP_SET_POINT -50000", None), OK,
        ("REG:RUN 1", None), OK,
        ("THRESHOLD:VOLTAGE 50000", None), OK,
        ("BIAS:VOLTAGE 52000000", None), OK,
    ]
    settings = {"bias_v": 52.0, "threshold_v": 0.05, "regulation": True,
                "temperature_set_point_c": -50.0, "max_bias_v": 60}
    with scripted(steps, **NAMES) as t:
        detector = build_instrument(ID120, t, settings)
    assert detector.limits.max_bias_v == 60.0


def test_build_refuses_an_initial_bias_above_the_configured_limit_and_closes():
    with scripted([], **NAMES) as t:
        with pytest.raises(ValueError, match="max_bias_v"):
            build_instrument(ID120, t, {"bias_v": 65.0, "max_bias_v": 60.0})
        assert t.closed


class PairingTransport:
    """Answers every command; fails if a set command is not directly followed by its check."""

    instrument = "detector 'apd'"
    resource = "test://pairing"

    def __init__(self) -> None:
        self.expect_check = False
        self.violations = 0

    def write(self, command: str) -> None:
        if self.expect_check:
            self.violations += 1
        self.expect_check = True
        time.sleep(0)  # let another thread in, if nothing stops it

    def query(self, command: str) -> str:
        if command == "SYST:ERR?":
            if not self.expect_check:
                self.violations += 1
            self.expect_check = False
            return '0,"No error"'
        return "1000000"

    def close(self) -> None:
        pass


def test_threads_sharing_a_driver_do_not_split_a_set_from_its_check():
    transport = PairingTransport()
    detector = ID120(transport)  # type: ignore[arg-type]

    def work() -> None:
        for _ in range(300):
            detector.set_threshold_v(0.01)
            detector.bias_v()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert transport.violations == 0
