"""s15.spd: exact exchanges, read-back verification, limits, fixed dead time, faults."""

from __future__ import annotations

import pytest

from qkdnode.drivers.errors import InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.s15.spd import READBACK_MISMATCH, SPD
from qkdnode.drivers.roles import Detector
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "detector 'spd'", "resource": "serial:///dev/ttyACM0", "timeout_s": 3.0}


def test_is_a_detector_with_its_terminations():
    with scripted([], **NAMES) as t:
        assert isinstance(SPD(t), Detector)
    assert (SPD.WRITE_TERMINATION, SPD.READ_TERMINATION) == ("\r\n", "\n")


def test_identify_strips_the_carriage_return():
    with scripted([("*IDN?", "SPD v2.0 S-Fifteen\r")], **NAMES) as t:
        assert SPD(t).identify() == "SPD v2.0 S-Fifteen"


@pytest.mark.parametrize(
    ("method", "value", "command", "query", "reply"),
    [
        ("set_bias_v", 51.25, "hvolt 51.250", "hvolt?", "51.251\r"),
        ("set_threshold_v", 0.2, "threshvolt 0.200", "threshvolt?", "0.2"),
        ("set_integration_time_s", 1.0, "time 1000", "time?", "1000"),
        ("set_temperature_set_point_c", -20.0, "settemp -20.00", "settemp?", "-20.00"),
        ("set_regulation", True, "loop 1", "loop?", "1"),
        ("set_regulation", False, "loop 0", "loop?", "0"),
    ],
)
def test_set_commands_are_verified_by_reading_back(method, value, command, query, reply):
    with scripted([(command, None), (query, reply)], **NAMES) as t:
        getattr(SPD(t), method)(value)


def test_read_back_mismatch_raises_instrument_error():
    steps = [("hvolt 51.250", None), ("hvolt?", "0.000")]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError) as info:
        SPD(t).set_bias_v(51.25)
    assert info.value.code == READBACK_MISMATCH
    assert "hvolt set to 51.25" in str(info.value)
    assert "reads back 0.0" in str(info.value)


@pytest.mark.parametrize(
    ("method", "command", "reply", "expected"),
    [
        ("bias_v", "hvolt?", "51.25", 51.25),
        ("threshold_v", "threshvolt?", "0.2", 0.2),
        ("integration_time_s", "time?", "500", 0.5),
        ("temperature_c", "temp?", "-19.87", -19.87),
        ("temperature_set_point_c", "settemp?", "-20", -20.0),
        ("regulation", "loop?", "0", False),
    ],
)
def test_queries(method, command, reply, expected):
    with scripted([(command, reply)], **NAMES) as t:
        assert getattr(SPD(t), method)() == pytest.approx(expected)


def test_count_rate_counts_one_window():
    steps = [("time 500", None), ("time?", "500"), ("counts?", "12345")]
    with scripted(steps, **NAMES) as t:
        assert SPD(t).count_rate_hz(0.5) == pytest.approx(24690.0)


def test_window_longer_than_the_reply_timeout_is_refused_before_sending():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="timeout"):
        SPD(t).count_rate_hz(5.0)


@pytest.mark.parametrize(
    ("method", "value", "limit"),
    [
        ("set_bias_v", 90.0, "max_bias_v"),
        ("set_temperature_set_point_c", -65.0, "min_temperature_c"),
    ],
)
def test_limits_refuse_before_anything_is_sent(method, value, limit):
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=limit):
        getattr(SPD(t), method)(value)


def test_sub_millivolt_bias_is_refused_rather_than_rounded():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="whole number"):
        SPD(t).set_bias_v(50.0004)


def test_dead_time_is_fixed_and_configured():
    with scripted([], **NAMES) as t:
        spd = SPD(t, dead_time_s=1e-6)
        assert spd.dead_time_s() == 1e-6
        spd.set_dead_time_s(1e-6)  # the fixed value: nothing to send
        with pytest.raises(ValueError, match="fixed at 1e-06 s"):
            spd.set_dead_time_s(2e-6)
        with pytest.raises(ValueError, match="dead_time_s"):
            SPD(t).dead_time_s()


def test_timeout_and_disconnect_name_the_command():
    with scripted([("temp?", SCRIPTED_TIMEOUT)], **NAMES) as t, pytest.raises(
        TransportTimeout, match="detector 'spd' at serial:///dev/ttyACM0: no reply to 'temp\\?'"
    ):
        SPD(t).temperature_c()
    with scripted([("loop 1", SCRIPTED_DISCONNECT)], **NAMES) as t, pytest.raises(
        TransportError, match="'loop 1'"
    ):
        SPD(t).set_regulation(True)


def test_build_takes_the_dead_time_and_applies_the_rest():
    steps = [("settemp -25.00", None), ("settemp?", "-25.00"), ("hvolt 48.000", None),
             ("hvolt?", "48.0")]
    with scripted(steps, **NAMES) as t:
        spd = build_instrument(SPD, t, {"dead_time_s": 5e-7, "bias_v": 48,
                                        "temperature_set_point_c": -25})
    assert spd.dead_time_s() == 5e-7


def test_build_refuses_a_bad_dead_time():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="'dead_time_s'"):
        build_instrument(SPD, t, {"dead_time_s": -1})
