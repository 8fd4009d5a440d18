"""Each message driver, opened through open_instrument on a sim:// URL, against the bench."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import pyvisa
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.drivers.errors import InstrumentError, TransportTimeout
from qkdnode.drivers.instruments.idq.id120 import ID120
from qkdnode.drivers.instruments.keysight.awg33500 import AWG33500
from qkdnode.drivers.instruments.s15.spd import SPD
from qkdnode.drivers.instruments.thorlabs.mbx import MBX
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import LockMode
from qkdnode.drivers.sim import Bench, BenchParams, SourceParams, create_bench, remove_bench
from qkdnode.drivers.sim.bench import detector_indices
from qkdnode.drivers.sim.devices.base import scpi_header
from qkdnode.drivers.sim.devices.mbx import LASER_POWER_MW, TAP_FRACTION
from qkdnode.drivers.sim.visa_backend import BACKEND, install, resource_name
from qkdnode.drivers.transport.blocks import encode_block

_NAMES = itertools.count()


@pytest.fixture
def bench() -> Iterator[Bench]:
    name = f"devices{next(_NAMES)}"
    made = create_bench(name, BenchParams(), seed=5)
    yield made
    remove_bench(name)


def url(bench: Bench, instrument: str) -> str:
    return f"sim://{bench.name}/{instrument}"


def test_id120_role_methods_and_physics(bench: Bench) -> None:
    with open_instrument("spd", "detector", "idq.id120", url(bench, "spd-x0"), 2.0,
                         {"bias_v": 48.5, "dead_time_s": 2e-6, "threshold_v": 0.15,
                          "temperature_set_point_c": -50.0, "regulation": True}) as det:
        assert isinstance(det, ID120)
        assert "ID120" in det.identify()
        assert det.bias_v() == 48.5
        assert det.threshold_v() == pytest.approx(0.15)
        assert det.dead_time_s() == pytest.approx(2e-6)
        assert det.temperature_set_point_c() == -50.0
        assert det.regulation() is True
        assert det.temperature_c() == -50.0
        # The dead time and the nominal efficiency reach the link's detector X0 only.
        assert bench.link.params.detectors[0].dead_time_ps == 2_000_000
        assert bench.link.params.detectors[1].dead_time_ps == 50_000
        assert bench.link.params.detectors[0].efficiency == pytest.approx(0.10)
        det.set_bias_v(43.5)  # half the excess bias above breakdown
        assert bench.link.params.detectors[0].efficiency == pytest.approx(0.05)
        det.set_regulation(False)
        assert det.temperature_c() == 25.0
        det.set_bias_v(30.0)  # below breakdown: nothing counts
        assert det.count_rate_hz(0.001) == 0.0


def test_id120_error_queue_reports_refused_values_and_unknown_headers(bench: Bench) -> None:
    with open_instrument("apd", "detector", "idq.id120", url(bench, "apd"), 2.0) as det:
        det.transport.write("BIAS:VOLTAGE 900000000")  # beyond the instrument's range
        with pytest.raises(InstrumentError, match="Data out of range") as info:
            det._check()
        assert info.value.code == -222
        det.transport.write("BIAS:VOLTAGE forty")
        with pytest.raises(InstrumentError) as info:
            det._check()
        assert info.value.code == -104
        det.transport.write("BIAS:VOLTS 1")
        with pytest.raises(InstrumentError, match="Undefined header") as info:
            det._check()
        assert info.value.code == -113
        assert det.transport.query("SYST:ERR?") == '0,"No error"'
        assert det.bias_v() == 48.5  # nothing refused was applied


def test_a_query_the_instrument_refuses_times_out_and_the_next_one_works(bench: Bench) -> None:
    with open_instrument("apd", "detector", "idq.id120", url(bench, "apd"), 0.5) as det:
        with pytest.raises(TransportTimeout, match="NOSUCH"):
            det.transport.query("NOSUCH?")
        assert det.transport.query("SYST:ERR?").startswith("-113,")
        assert det.bias_v() == 48.5


def test_s15_spd_role_methods_and_read_back_of_ignored_values(bench: Bench) -> None:
    with open_instrument("s15", "detector", "s15.spd", url(bench, "s15"), 2.0,
                         {"dead_time_s": 5e-8, "bias_v": 29.5, "threshold_v": 0.2,
                          "integration_time_s": 0.01, "temperature_set_point_c": -20.0,
                          "regulation": True}) as spd:
        assert isinstance(spd, SPD)
        assert "SPD" in spd.identify()
        assert spd.bias_v() == 29.5
        assert spd.threshold_v() == pytest.approx(0.2)
        assert spd.integration_time_s() == 0.01
        assert spd.temperature_c() == -20.0
        assert spd.regulation()
        assert spd.dead_time_s() == 5e-8
        for j in range(4):  # an unsuffixed name drives all four detectors
            assert bench.link.params.detectors[j].efficiency == pytest.approx(0.09)
        rate = spd.count_rate_hz(0.01)
        expected = sum(bench.count_rate_hz(j) for j in range(4))
        assert abs(rate * 0.01 - expected * 0.01) < 6 * np.sqrt(expected * 0.01) + 1
        spd.transport.write("hvolt 500")  # out of range: ignored, as the instrument does
        assert spd.bias_v() == 29.5
        with pytest.raises(TransportTimeout):
            spd.transport.query("bogus?")  # no error queue: no reply at all


def test_mbx_lock_modes_follow_the_transfer_curve(bench: Bench) -> None:
    src = bench.configured.source
    with open_instrument("mbc", "bias_controller", "thorlabs.mbx", url(bench, "bias"), 2.0,
                         {"lock_mode": "null"}) as mbx:
        assert isinstance(mbx, MBX)
        assert "MBX" in mbx.identify()
        assert mbx.lock_mode() is LockMode.NULL
        assert mbx.bias_v() == pytest.approx(src.bias_null_v, abs=1e-3)
        t_min = 10 ** (-src.extinction_ratio_db / 10)
        # The tap reads with 0.2 % rms noise (+ 10 fW): 1 % is 5 standard deviations.
        assert mbx.tap_power_w() == pytest.approx(LASER_POWER_MW * TAP_FRACTION * t_min * 1e-3,
                                                  rel=1e-2)
        mbx.set_lock_mode(LockMode.PEAK)
        assert mbx.bias_v() == pytest.approx(src.bias_null_v + src.v_pi, abs=1e-3)
        assert mbx.tap_power_w() == pytest.approx(LASER_POWER_MW * TAP_FRACTION * 1e-3, rel=1e-2)
        mbx.set_lock_mode(LockMode.QUADRATURE_NEGATIVE)
        # null - V_pi / 2 = -1 V, inside the +/-10 V output.
        assert mbx.bias_v() == pytest.approx(src.bias_null_v - src.v_pi / 2, abs=1e-3)
        mbx.hold_ratio(positive_slope=True, ratio=0.25)
        peak = LASER_POWER_MW * TAP_FRACTION * 1e-3
        assert mbx.tap_power_w() == pytest.approx(0.25 * peak, rel=1e-2)
        assert mbx.bias_v() > src.bias_null_v
        mbx.set_manual_bias_v(-2.5)
        mbx.set_lock_mode(LockMode.MANUAL)
        assert mbx.manual_bias_v() == -2.5
        assert mbx.bias_v() == -2.5
        assert bench.link.bias_voltage == -2.5


def test_mbx_refusals_are_instrument_errors(bench: Bench) -> None:
    with open_instrument("mbc", "bias_controller", "thorlabs.mbx", url(bench, "bias"), 2.0) as mbx:
        assert mbx.transport.query("MZM:MODE: 9") == "Err: Parameter error"
        assert mbx.transport.query("MZM:FOO: 1") == "Err: Unknown command"
        with pytest.raises(InstrumentError, match="Parameter error"):
            mbx._set("VOA:ATTEN: 30.0")
        assert mbx.attenuation_db() == 1.0


def test_a_lock_tracks_the_drifting_null(bench: Bench) -> None:
    drifting = create_bench(f"{bench.name}-drift", BenchParams(
        source=SourceParams(bias_drift_v_per_s=100.0)), seed=1)
    try:
        drifting.load_frame(np.zeros(8, np.uint8), np.zeros(8, np.uint8), np.zeros(8, np.uint8))
        with open_instrument("mbc", "bias_controller", "thorlabs.mbx",
                             url(drifting, "bias"), 2.0, {"lock_mode": "null"}) as mbx:
            drifting.run(duration_ps=10**9)  # 1 ms: the null moves by 0.1 V
            assert drifting.link.bias_null_voltage() == pytest.approx(1.1)
            assert mbx.bias_v() == pytest.approx(1.1, abs=1e-3)
    finally:
        remove_bench(drifting.name)


def test_attenuators_and_power_meter(bench: Bench) -> None:
    frame = tuple(np.random.default_rng(2).integers(0, 2, 1000, dtype=np.uint8) for _ in range(3))
    bench.load_frame(*frame)
    with open_instrument("pm", "power_meter", "thorlabs.pm100", url(bench, "pm"), 2.0,
                         {"wavelength_nm": 1550.0, "averaging": 100}) as pm, \
         open_instrument("voa", "attenuator", "scpi.voa", url(bench, "voa"), 2.0) as voa, \
         open_instrument("mbc", "attenuator", "thorlabs.mbx", url(bench, "bias"), 2.0) as mbx:
        assert "PM100" in pm.identify()
        assert "S155C" in pm.sensor_identify()
        assert pm.wavelength_nm() == 1550.0
        assert pm.averaging() == 100
        full = pm.measure_power_w()
        assert full == pytest.approx(bench.optical_power_w(), abs=1e-14)
        voa.set_attenuation_db(10.0)
        assert voa.attenuation_db() == 10.0
        assert pm.measure_power_w() == pytest.approx(full / 10, rel=0.01)
        mbx.set_attenuation_db(4.0)
        mbx.set_enabled(True)  # the MBX VOA adds 3 dB over its power-on 1 dB
        assert mbx.enabled()
        assert pm.measure_power_w() == pytest.approx(full / 10 / 10**0.3, rel=0.02)
        voa.set_enabled(False)
        assert not voa.enabled()
        assert abs(pm.measure_power_w()) < 1e-14  # the shutter blocks: only the sensor noise
        pm.set_wavelength_nm(1310.0)
        voa.set_enabled(True)
        mbx.set_enabled(False)
        voa.set_attenuation_db(0.0)
        # Corrected for the wrong wavelength, the reading is off by 1550 / 1310.
        assert pm.measure_power_w() == pytest.approx(full * 1550 / 1310, rel=0.01)
        with pytest.raises(InstrumentError, match="Data out of range"):
            pm.set_wavelength_nm(500.0)  # outside the sensor's range


def test_awg_uploads_the_frame_the_link_plays(bench: Bench) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    basis, bit = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8)
    intensity = rng.choice(3, n, p=(0.7, 0.2, 0.1)).astype(np.uint8)
    with open_instrument("awg", "transmitter", "keysight.33500", url(bench, "awg"), 2.0,
                         {"slot_rate_hz": 5e8, "samples_per_slot": 2,
                          "max_sample_rate_hz": 1e9}) as awg:
        assert isinstance(awg, AWG33500)
        assert awg.slot_rate_hz() == 5e8
        # The bench's slot clock is 1 GHz: at 1 GSa/s every sample is a slot, so the link
        # plays each of the driver's slots twice, as the hardware would.
        awg.load_frame(basis, bit, intensity)
        for loaded, sent in zip(bench.link.frame, (basis, bit, intensity), strict=True):
            np.testing.assert_array_equal(loaded, np.repeat(sent, 2))
        awg.set_slot_rate_hz(1e8)  # 200 MSa/s: no whole number of samples per slot
        with pytest.raises(InstrumentError, match="Settings conflict"):
            awg.load_frame(basis, bit, intensity)
    with open_instrument("awg", "transmitter", "keysight.33500", url(bench, "awg"), 2.0,
                         {"slot_rate_hz": 1e9, "max_sample_rate_hz": 1e9}) as awg:
        awg.load_frame(basis, bit, intensity)
        assert awg.frame_slots() == n
        for loaded, sent in zip(bench.link.frame, (basis, bit, intensity), strict=True):
            np.testing.assert_array_equal(loaded, sent)
        awg.start()
        assert awg.transport.query("OUTP1?") == "1"
        awg.trigger()
        awg.stop()
        assert awg.transport.query("OUTP2?") == "0"


def test_serial_instruments_open_through_pyserial_urls(bench: Bench) -> None:
    from qkdnode.drivers.sim import serial_handler

    serial_handler.install()
    port = serial.serial_for_url(f"sim://{bench.name}/bias?driver=thorlabs.mbx", timeout=0.1)
    port.write(b"MZM:MODE?\r")
    assert port.read_until(b"\n") == b"7\n"
    port.close()
    again = serial.serial_for_url(f"sim://{bench.name}/bias")  # known now: no driver needed
    again.write(b"*IDN?\r\n")
    assert b"MBX" in again.readline()
    with pytest.raises(serial.SerialException, match="no instrument 'other'"):
        serial.serial_for_url(f"sim://{bench.name}/other")


def test_visa_instruments_open_through_the_pyvisa_backend(bench: Bench) -> None:
    bench.declare("pm", "thorlabs.pm100")
    install()
    manager = pyvisa.ResourceManager(f"test@{BACKEND}")
    try:
        meter = manager.open_resource(resource_name(bench.name, "pm"), read_termination="\n",
                                      write_termination="\n")
        assert "PM100" in meter.query("*IDN?")
        meter.write("SENS:CORR:WAV 1310")
        assert float(meter.query("SENSE:CORRECTION:WAVELENGTH?")) == 1310.0
        with pytest.raises(pyvisa.errors.VisaIOError):
            manager.open_resource(resource_name(bench.name, "nothing"))
    finally:
        manager.close()


def test_bench_and_driver_mistakes_are_named(bench: Bench) -> None:
    with pytest.raises(ValueError, match="no simulated bench named 'nowhere'"):
        open_instrument("pm", "power_meter", "thorlabs.pm100", "sim://nowhere/pm", 1.0)
    open_instrument("pm", "power_meter", "thorlabs.pm100", url(bench, "pm"), 1.0).close()
    with pytest.raises(ValueError, match=r"is a thorlabs\.pm100, not a scpi\.voa"):
        open_instrument("pm", "attenuator", "scpi.voa", url(bench, "pm"), 1.0)
    with pytest.raises(ValueError, match="no simulated instrument for driver"):
        bench.declare("x", "acme.thing")


def test_detector_names_pick_detectors() -> None:
    assert detector_indices("spd-x0") == (0,)
    assert detector_indices("det_Z1") == (3,)
    assert detector_indices("Z0") == (2,)
    assert detector_indices("spd") == (0, 1, 2, 3)
    assert detector_indices("boxz1") == (0, 1, 2, 3)


def test_scpi_header_notation() -> None:
    pattern = scpi_header("SOURce#:FUNCtion:ARBitrary:SRATe?")
    match = pattern.fullmatch("sour2:func:arbitrary:srat?")
    assert match is not None
    assert match.groups() == ("2",)
    assert scpi_header("SYSTem:ERRor[:NEXT]?").fullmatch("SYSTEM:ERROR:NEXT?")
    assert not scpi_header("SYSTem:ERRor[:NEXT]?").fullmatch("SYSTE:ERR?")


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(min_size=16, max_size=200).filter(lambda b: len(b) % 2 == 0),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_input_is_parsed_the_same_however_it_is_split(payload: bytes, cuts: list[int]) -> None:
    # Blocks may hold terminators and blanks anywhere; the emulator's input parser must find
    # the same messages whether the host's bytes arrive at once or in pieces.
    stream = (b"FORM:BORD SWAP\nSOUR1:DATA:ARB:DAC WAVE," + encode_block(payload)
              + b"\nSOUR1:DATA:ATTR:POIN? WAVE\nSYST:ERR?\n*IDN?\n")
    replies = []
    for pieces in ([stream], [stream[a:b] for a, b in itertools.pairwise(
            [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)])]):
        bench = Bench("split")
        device = bench.device("awg", "keysight.33500")
        replies.append(b"".join(device.feed(piece) for piece in pieces))
    assert replies[0] == replies[1]
    assert replies[0].split(b"\n")[:2] == [str(len(payload) // 2).encode(), b'0,"No error"']


def test_injected_faults_reach_the_driver_as_the_lab_would_show_them(bench: Bench) -> None:
    from qkdnode.drivers.errors import DeviceError, TransportError

    with open_instrument("pm", "power_meter", "thorlabs.pm100", url(bench, "pm"), 0.5) as pm, \
         open_instrument("mbc", "bias_controller", "thorlabs.mbx", url(bench, "bias"),
                         0.5) as mbx:
        meter, controller = bench.device("pm"), bench.device("bias")
        meter.inject_fault("timeout")
        with pytest.raises(TransportTimeout, match="MEAS:POW"):
            pm.measure_power_w()
        meter.inject_fault("garbage")
        with pytest.raises(DeviceError, match=r"not valid ascii|unexpected reply"):
            pm.measure_power_w()
        assert pm.measure_power_w() >= -1e-13  # and the meter answers again
        controller.inject_fault("disconnect")
        with pytest.raises(TransportError, match="dropped off the bus"):
            mbx.bias_v()
        controller.inject_fault("garbage")
        with pytest.raises(DeviceError):
            mbx.bias_v()
        assert mbx.bias_v() == pytest.approx(1.0)
        with pytest.raises(ValueError, match="unknown fault"):
            meter.inject_fault("fire")
