"""thorlabs.mbx: acknowledged set commands, mode numbering, VOA, limits, Err: replies, faults."""

from __future__ import annotations

import pytest

from qkdnode.drivers.errors import DeviceError, InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.thorlabs.mbx import MBX, MBX_ERROR_CODE, MODE_CODES
from qkdnode.drivers.roles import Attenuator, BiasController, Limits, LockMode
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "bias controller 'mbx'", "resource": "serial:///dev/ttyUSB0?baudrate=115200"}


def test_roles_and_terminations():
    with scripted([], **NAMES) as t:
        mbx = MBX(t)
        assert isinstance(mbx, BiasController)
        assert isinstance(mbx, Attenuator)
    assert (MBX.WRITE_TERMINATION, MBX.READ_TERMINATION) == ("\r", "\n")


def test_mode_numbering_is_the_documented_one():
    assert MODE_CODES == {
        LockMode.PEAK: 1,
        LockMode.NULL: 2,
        LockMode.QUADRATURE_POSITIVE: 3,
        LockMode.QUADRATURE_NEGATIVE: 4,
        LockMode.MANUAL: 7,
    }


@pytest.mark.parametrize(("mode", "code"), list(MODE_CODES.items()))
def test_set_and_read_lock_mode(mode, code):
    with scripted([(f"MZM:MODE: {code}", "1"), ("MZM:MODE?", str(code))], **NAMES) as t:
        mbx = MBX(t)
        mbx.set_lock_mode(mode)
        assert mbx.lock_mode() is mode


def test_ratio_mode_has_no_lock_mode_but_a_code():
    steps = [("MZM:HOLD:RATIO: 35", "1"), ("MZM:MODE: 6", "1"), ("MZM:MODE?", "6"),
             ("MZM:MODE?", "6")]
    with scripted(steps, **NAMES) as t:
        mbx = MBX(t)
        mbx.hold_ratio(positive_slope=False, ratio=0.35)
        with pytest.raises(ValueError, match="ratio mode 6"):
            mbx.lock_mode()
        assert mbx.mode_code() == 6


def test_manual_bias_in_millivolts_and_readbacks():
    steps = [
        ("MZM:HOLD:VOLTAGE: -2345", "1"),
        ("MZM:HOLD:VOLTAGE?", "-2345"),
        ("MZM:VOLTAGE?", "-2.341"),
        ("MZM:TAP:MW?", "0.125"),
    ]
    with scripted(steps, **NAMES) as t:
        mbx = MBX(t)
        mbx.set_manual_bias_v(-2.345)
        assert mbx.manual_bias_v() == pytest.approx(-2.345)
        assert mbx.bias_v() == pytest.approx(-2.341)
        assert mbx.tap_power_w() == pytest.approx(125e-6)


def test_voa_as_attenuator():
    steps = [
        ("VOA:ATTEN: 7.50", "1"),
        ("VOA:ATTEN?", "7.5"),
        ("VOA:POWER: 1", "1"),
        ("VOA:POWER?", "1"),
        ("VOA:POWER: 0", "1"),
    ]
    with scripted(steps, **NAMES) as t:
        mbx = MBX(t)
        mbx.set_attenuation_db(7.5)
        assert mbx.attenuation_db() == 7.5
        mbx.set_enabled(True)
        assert mbx.enabled() is True
        mbx.set_enabled(False)


def test_identify():
    with scripted([("*IDN?", "THORLABS MBX-LN-10 S/N 123 V1.9.5")], **NAMES) as t:
        assert MBX(t).identify() == "THORLABS MBX-LN-10 S/N 123 V1.9.5"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.set_manual_bias_v(10.5), "max_modulator_bias_v"),
        (lambda m: m.set_manual_bias_v(-11), "max_modulator_bias_v"),
        (lambda m: m.set_attenuation_db(0.5), "VOA:ATTEN: must be in 1..20"),
        (lambda m: m.set_attenuation_db(25.0), "VOA:ATTEN: must be in 1..20"),
        (lambda m: m.hold_ratio(True, 1.5), "MZM:HOLD:RATIO: must be in 0..100"),
    ],
)
def test_out_of_range_values_are_refused_before_sending(call, match):
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=match):
        call(MBX(t))


def test_attenuation_floor_and_refusal_to_switch_the_voa_off():
    limits = Limits(min_attenuation_db=6.0)
    with scripted([], **NAMES) as t:
        mbx = MBX(t, limits=limits)
        with pytest.raises(ValueError, match="min_attenuation_db"):
            mbx.set_attenuation_db(3.0)
        with pytest.raises(ValueError, match=r"min_attenuation_db = 6\.0"):
            mbx.set_enabled(False)


def test_err_reply_raises_instrument_error():
    steps = [("MZM:MODE: 7", "Err: Execution error")]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError) as info:
        MBX(t).set_lock_mode(LockMode.MANUAL)
    assert info.value.code == MBX_ERROR_CODE
    assert "Execution error" in info.value.message
    assert "MZM:MODE: 7" in info.value.message


def test_err_reply_to_a_query_raises_instrument_error():
    steps = [("MZM:TAP:MW?", "Err: Feature not present")]
    with scripted(steps, **NAMES) as t, pytest.raises(InstrumentError, match="not present"):
        MBX(t).tap_power_w()


def test_missing_acknowledgement_is_an_error():
    with scripted([("VOA:POWER: 1", "0")], **NAMES) as t, pytest.raises(DeviceError) as info:
        MBX(t).set_enabled(True)
    assert "acknowledgement" in str(info.value)


def test_timeout_and_disconnect_name_instrument_resource_and_command():
    with scripted([("MZM:VOLTAGE?", SCRIPTED_TIMEOUT)], **NAMES) as t, pytest.raises(
        TransportTimeout
    ) as info:
        MBX(t).bias_v()
    assert f"bias controller 'mbx' at {NAMES['resource']}: no reply to 'MZM:VOLTAGE?'" in str(
        info.value
    )
    with scripted([("MZM:MODE: 1", SCRIPTED_DISCONNECT)], **NAMES) as t, pytest.raises(
        TransportError, match="'MZM:MODE: 1'"
    ):
        MBX(t).set_lock_mode(LockMode.PEAK)


def test_build_applies_bias_before_mode():
    steps = [("MZM:HOLD:VOLTAGE: 1500", "1"), ("MZM:MODE: 7", "1"), ("VOA:ATTEN: 3.00", "1")]
    settings = {"lock_mode": "manual", "manual_bias_v": 1.5, "attenuation_db": 3}
    with scripted(steps, **NAMES) as t:
        build_instrument(MBX, t, settings)


def test_build_names_a_bad_lock_mode():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=r"'lock_mode'.*peak"):
        build_instrument(MBX, t, {"lock_mode": "sideways"})
