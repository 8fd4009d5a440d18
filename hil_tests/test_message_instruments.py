"""The message-based roles on the lab's instruments (the simulated bench without --hil-config).

On real instruments these tests change settings only to values read back from the instrument
itself (or restore them), and switch no light source on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdnode.drivers.roles import LockMode

pytestmark = pytest.mark.hil

# Short counter windows keep the tests quick; a detector's dark counts alone give hundreds.
WINDOW_S = 0.05


@pytest.mark.roles("detector")
def test_detector_reads_back_its_settings_and_counts(open_lab_instrument):
    detector = open_lab_instrument("detector")
    assert detector.identify()
    bias = detector.bias_v()
    detector.set_bias_v(bias)  # a no-op on the instrument, through the checked path
    assert detector.bias_v() == pytest.approx(bias, abs=1e-3)
    threshold = detector.threshold_v()
    detector.set_threshold_v(threshold)
    assert detector.threshold_v() == pytest.approx(threshold, abs=1e-3)
    assert math.isfinite(detector.temperature_c())
    assert detector.dead_time_s() > 0
    rate = detector.count_rate_hz(WINDOW_S)
    assert math.isfinite(rate)
    assert rate >= 0


@pytest.mark.roles("power_meter")
def test_power_meter_reads(open_lab_instrument):
    meter = open_lab_instrument("power_meter")
    assert meter.identify()
    wavelength = meter.wavelength_nm()
    meter.set_wavelength_nm(wavelength)
    assert meter.wavelength_nm() == pytest.approx(wavelength)
    averaging = meter.averaging()
    meter.set_averaging(averaging)
    assert meter.averaging() == averaging
    assert math.isfinite(meter.measure_power_w())


@pytest.mark.roles("attenuator", "power_meter")
def test_attenuation_shows_at_the_power_meter(open_lab_instrument, hil_lab):
    attenuator = open_lab_instrument("attenuator")
    meter = open_lab_instrument("power_meter")
    meter.set_averaging(max(meter.averaging(), 100))
    before_db = attenuator.attenuation_db()
    try:
        reference = meter.measure_power_w()
        attenuator.set_attenuation_db(before_db + 3.0)
        assert attenuator.attenuation_db() == pytest.approx(before_db + 3.0)
        attenuated = meter.measure_power_w()
    finally:
        attenuator.set_attenuation_db(before_db)
    if hil_lab.simulated:
        # On the bench the meter sits after the attenuator; in a lab it may not.
        assert attenuated == pytest.approx(reference / 10**0.3, rel=0.05, abs=1e-14)


@pytest.mark.roles("bias_controller")
def test_bias_controller_locks_and_reads(open_lab_instrument, hil_lab):
    controller = open_lab_instrument("bias_controller")
    assert controller.identify()
    mode = controller.lock_mode()
    try:
        controller.set_lock_mode(LockMode.NULL)
        assert controller.lock_mode() is LockMode.NULL
        null_tap = controller.tap_power_w()
        controller.set_lock_mode(LockMode.PEAK)
        peak_tap = controller.tap_power_w()
        assert math.isfinite(controller.bias_v())
    finally:
        controller.set_lock_mode(mode)
    if hil_lab.simulated:
        # The configured 40 dB extinction ratio between peak and null.
        assert peak_tap / null_tap == pytest.approx(1e4, rel=0.01)


@pytest.mark.roles("transmitter")
def test_transmitter_loads_a_frame(open_lab_instrument):
    transmitter = open_lab_instrument("transmitter")
    rng = np.random.default_rng(2026)
    n = 4096
    transmitter.load_frame(rng.integers(0, 2, n, dtype=np.uint8),
                           rng.integers(0, 2, n, dtype=np.uint8),
                           rng.choice(3, n, p=(0.7, 0.2, 0.1)).astype(np.uint8))
    assert transmitter.frame_slots() == n
    assert transmitter.slot_rate_hz() > 0
    transmitter.stop()
