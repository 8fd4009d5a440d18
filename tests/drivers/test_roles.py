"""Roles: limits, random sources, the passive receiver, and protocol conformance."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.drivers.instruments.generic.passive_receiver import PassiveReceiver
from qkdnode.drivers.instruments.idq.id120 import ID120
from qkdnode.drivers.instruments.keysight.awg33500 import AWG33500
from qkdnode.drivers.instruments.s15.spd import SPD
from qkdnode.drivers.instruments.scpi.voa import ScpiVoa
from qkdnode.drivers.instruments.thorlabs.mbx import MBX
from qkdnode.drivers.instruments.thorlabs.pm100 import PM100
from qkdnode.drivers.roles import (
    DEFAULT_MAX_DETECTOR_BIAS_V,
    Attenuator,
    BiasController,
    Detector,
    Limits,
    OsRandomSource,
    PowerMeter,
    RandomSource,
    Receiver,
    SeededRandomSource,
    TagRead,
    TimeTagger,
    Transmitter,
)

# --- limits -------------------------------------------------------------------------------------


def test_limit_defaults_and_settings():
    assert Limits().max_bias_v == DEFAULT_MAX_DETECTOR_BIAS_V
    limits = Limits.from_settings({"max_bias_v": 210, "min_temperature_c": -50, "other": 1})
    assert limits.max_bias_v == 210.0
    assert limits.min_temperature_c == -50.0
    assert limits.max_temperature_c == Limits().max_temperature_c


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"max_bias_v": "lots"}, "max_bias_v must be a number"),
        ({"max_bias_v": float("inf")}, "max_bias_v must be finite"),
        ({"max_optical_power_w": -1.0}, "max_optical_power_w must not be negative"),
        ({"min_temperature_c": 10, "max_temperature_c": 0}, "exceeds max_temperature_c"),
        ({"min_attenuation_db": True}, "min_attenuation_db must be a number"),
    ],
)
def test_bad_limits_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        Limits.from_settings(settings)


def test_limit_checks_name_the_limit_and_the_value():
    limits = Limits(max_bias_v=60, max_modulator_bias_v=8, max_optical_power_w=1e-4,
                    min_temperature_c=-50, max_temperature_c=30, min_attenuation_db=10)
    assert limits.check_bias_v(-60) == -60.0
    with pytest.raises(ValueError, match=r"detector bias 60\.5 V exceeds the limit max_bias_v"):
        limits.check_bias_v(60.5)
    with pytest.raises(ValueError, match=r"modulator bias -8\.5 V .*max_modulator_bias_v = 8"):
        limits.check_modulator_bias_v(-8.5)
    with pytest.raises(ValueError, match=r"optical power 0\.001 W .*max_optical_power_w"):
        limits.check_optical_power_w(1e-3)
    with pytest.raises(ValueError, match=r"temperature set point 31\.0 C .*max_temperature_c"):
        limits.check_temperature_c(31)
    with pytest.raises(ValueError, match=r"attenuation 9\.9 dB .*min_attenuation_db = 10"):
        limits.check_attenuation_db(9.9)
    with pytest.raises(ValueError, match="finite"):
        limits.check_bias_v(float("nan"))


# --- random sources -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 32, 10_000])
def test_os_random_source_returns_the_requested_number_of_bytes(n):
    data = OsRandomSource().random_bytes(n)
    assert isinstance(data, bytes)
    assert len(data) == n


def test_os_random_source_is_not_constant_and_checks_its_argument():
    source = OsRandomSource()
    assert source.random_bytes(32) != source.random_bytes(32)
    with pytest.raises(ValueError, match=r"in 0\.\."):
        source.random_bytes(-1)
    with pytest.raises(TypeError, match="int"):
        source.random_bytes(3.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "resource",
    [
        "visa://USB0::0x1234::0x5678::QRNG::INSTR",
        "serial:///dev/ttyUSB3",
        "lib:///opt/qrng/libqrng.so",
        "no-scheme",
        "sim://only-a-bench",
    ],
)
def test_seeded_random_source_refuses_anything_but_the_simulated_bench(resource):
    with pytest.raises(ValueError, match="simulated bench only"):
        SeededRandomSource(resource, seed=1)


def test_seeded_random_source_is_reproducible_on_the_bench():
    a = SeededRandomSource("sim://bench/rng", seed=7)
    b = SeededRandomSource("sim://bench/rng", seed=7)
    c = SeededRandomSource("sim://bench/rng", seed=8)
    first = a.random_bytes(64)
    assert len(first) == 64
    assert first == b.random_bytes(64)
    assert first != c.random_bytes(64)
    with pytest.raises(ValueError, match="seed"):
        SeededRandomSource("sim://bench/rng", seed=-1)


# --- receiver -----------------------------------------------------------------------------------

MAP = {"channel_map": {"1": "X0", "2": "X1", "3": "z0", "4": "Z1"}}


def test_passive_receiver_from_settings_and_decode():
    receiver = PassiveReceiver.from_settings(MAP)
    assert receiver.channel_map == {1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (1, 1)}
    assert receiver.basis_bit(3) == (1, 0)
    basis, bit, known = receiver.decode(np.array([4, 1, 9, 2, 3], dtype=np.int32))
    assert basis.tolist() == [1, 0, 0, 0, 1]
    assert bit.tolist() == [1, 0, 0, 1, 0]
    assert known.tolist() == [True, True, False, True, True]
    with pytest.raises(KeyError, match="channel 9"):
        receiver.basis_bit(9)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"1": "X0", "2": "X0", "3": "Z0", "4": "Z1"}, "channels 1 and 2 both map to X0"),
        ({"1": "X0", "2": "X1", "3": "Z0"}, "no channel for Z1"),
        ({"1": "X0", "2": "X1", "3": "Z0", "4": "Y1"}, "expected X0, X1, Z0 or Z1"),
        ({"one": "X0"}, "not a channel number"),
        ({"1": "X0", "01": "X1"}, "channel 1 twice"),
        ({}, "channel_map is required"),
    ],
)
def test_passive_receiver_validation(table, match):
    with pytest.raises(ValueError, match=match):
        PassiveReceiver.from_settings({"channel_map": table})


def test_passive_receiver_refuses_unknown_settings():
    with pytest.raises(ValueError, match="unknown receiver setting 'q_x'"):
        PassiveReceiver.from_settings({**MAP, "q_x": 0.5})


# --- protocols ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "roles"),
    [
        (ID120, (Detector,)),
        (SPD, (Detector,)),
        (MBX, (BiasController, Attenuator)),
        (PM100, (PowerMeter,)),
        (ScpiVoa, (Attenuator,)),
        (AWG33500, (Transmitter,)),
        (OsRandomSource, (RandomSource,)),
        (SeededRandomSource, (RandomSource,)),
        (PassiveReceiver, (Receiver,)),
    ],
)
def test_drivers_implement_their_roles(cls, roles):
    for role in roles:
        assert issubclass(cls, role)


def test_role_checks_are_structural():
    assert not issubclass(PM100, Detector)
    assert not issubclass(ScpiVoa, BiasController)
    assert not issubclass(PassiveReceiver, TimeTagger)


def test_tag_read_reports_losses():
    empty = np.zeros(0, dtype=np.int64)
    channels = np.zeros(0, dtype=np.int32)
    assert TagRead(empty, channels).complete
    assert not TagRead(empty, channels, lost_events=3).complete
    assert not TagRead(empty, channels, overflows=1).complete
