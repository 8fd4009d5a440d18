"""Parameters of the simulated bench: documented, validated; the closed-form optics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qkdnode.drivers.sim import (
    BenchParams,
    DetectorParams,
    FibreParams,
    ReceiverParams,
    SourceParams,
    TaggerParams,
    optics,
)

CLASSES = (SourceParams, FibreParams, ReceiverParams, DetectorParams, TaggerParams, BenchParams)


@pytest.mark.parametrize("cls", CLASSES)
def test_every_field_is_documented(cls: type) -> None:
    for f in dataclasses.fields(cls):
        assert set(f.metadata) == {"doc", "unit", "check"}, f.name
        assert len(f.metadata["doc"]) > 10, f.name
    obj = cls()
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, name, getattr(obj, name))
    assert not hasattr(obj, "__dict__")


def test_defaults_are_lim_fig1() -> None:
    p = BenchParams()
    assert p.source.slot_rate_hz == 1e9
    assert p.detectors[0].dark_count_rate_hz * 1e-9 == pytest.approx(6e-7)
    assert p.detectors[0].afterpulse_probability == 0.04
    assert p.detectors[0].efficiency == 0.1
    assert p.fibre.misalignment == 0.005
    assert p.fibre.loss_db_per_km == 0.2
    assert p.fibre.transmittance == pytest.approx(0.1)  # 50 km
    assert p.fibre.delay_ps == pytest.approx(50e3 * 1.4682 / 299_792_458 * 1e12)
    assert p.detectors[0].jitter_sigma_ps == pytest.approx(100 / 2.3548, rel=1e-4)


@pytest.mark.parametrize(("cls", "kwargs", "name"), [
    (SourceParams, {"slot_rate_hz": 0.0}, "slot_rate_hz"),
    (SourceParams, {"mu3": -1e-3}, "mu3"),
    (SourceParams, {"mu2": 0.6}, "mu2"),
    (SourceParams, {"v_pi": math.nan}, "v_pi"),
    (FibreParams, {"misalignment": 0.5}, "misalignment"),
    (FibreParams, {"length_km": -1.0}, "length_km"),
    (ReceiverParams, {"q_x": 1.0}, "q_x"),
    (DetectorParams, {"efficiency": 1.5}, "efficiency"),
    (DetectorParams, {"dead_time_ps": 1.5}, "dead_time_ps"),
    (DetectorParams, {"afterpulse_probability": 1.0}, "afterpulse_probability"),
    (TaggerParams, {"resolution_ps": 0}, "resolution_ps"),
    (TaggerParams, {"channels": (1, 2, 3)}, "channels"),
    (TaggerParams, {"channels": (1, 2, 3, 3)}, "channels"),
    (TaggerParams, {"sync_every_slots": 10, "sync_channel": 1}, "sync_channel"),
    (TaggerParams, {"buffer_events": 0}, "buffer_events"),
    (BenchParams, {"detectors": (DetectorParams(),)}, "detectors"),
])
def test_bad_values_name_the_field(cls: type, kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name}"):
        cls(**kwargs)


def test_checks_are_callables_returning_reasons() -> None:
    f = {f.name: f for f in dataclasses.fields(DetectorParams)}
    check = f["efficiency"].metadata["check"]
    assert check(0.5) is None
    assert "must be" in check(0.0)


def test_modulator_at_nominal_bias_sends_the_configured_intensities() -> None:
    src = SourceParams(mu1=0.6, mu2=0.2, mu3=0.0, extinction_ratio_db=30.0)
    mu = optics.mean_photon_numbers(src, src.bias_null_v, src.bias_null_v)
    # The vacuum decoy is the modulator's leak, mu1 * 10^(-ER/10).
    np.testing.assert_allclose(mu, [0.6, 0.2, 0.6e-3], rtol=1e-12)
    assert optics.encoding_error(src, 1.0, 1.0) == pytest.approx(1e-3 / (1 + 1e-3))


def test_mis_set_bias_lowers_contrast_and_shifts_intensities() -> None:
    src = SourceParams(v_pi=4.0, bias_null_v=1.0)
    off = 0.1 * src.v_pi
    mu = optics.mean_photon_numbers(src, 1.0 + off, 1.0)
    assert mu[0] < src.mu1
    assert mu[2] > 5 * src.mu3
    s2 = math.sin(math.pi * 0.1 / 2) ** 2
    t_min = 10 ** (-src.extinction_ratio_db / 10)
    leak_off, leak_on = t_min + (1 - t_min) * s2, t_min + (1 - t_min) * (1 - s2)
    assert optics.encoding_error(src, 1.0 + off, 1.0) == pytest.approx(
        leak_off / (leak_off + leak_on), rel=1e-12)
    assert optics.encoding_error(src, 1.0 + off, 1.0) > 100 * optics.encoding_error(src, 1.0, 1.0)
    # Symmetric around the null.
    assert optics.encoding_error(src, 1.0 - off, 1.0) == pytest.approx(
        optics.encoding_error(src, 1.0 + off, 1.0))


def test_click_probability_table_follows_the_routing() -> None:
    p = BenchParams(receiver=ReceiverParams(q_x=0.7),
                    detectors=tuple(DetectorParams(efficiency=e) for e in (0.1, 0.2, 0.1, 0.05)))
    table = optics.click_probability_table(p, 1.0, 1.0)
    e = optics.wrong_detector_probability(p, 1.0, 1.0)
    eta = p.fibre.transmittance
    mu1 = p.source.mu1
    # Alice X, bit 0, signal: X0 right, X1 wrong, Z0/Z1 half each of the Z share.
    t = optics.slot_type(0, 0, 0)
    assert table[0, t] == pytest.approx(-math.expm1(-mu1 * eta * 0.1 * 0.7 * (1 - e)))
    assert table[1, t] == pytest.approx(-math.expm1(-mu1 * eta * 0.2 * 0.7 * e))
    assert table[2, t] == pytest.approx(-math.expm1(-mu1 * eta * 0.1 * 0.3 * 0.5))
    assert table[3, t] == pytest.approx(-math.expm1(-mu1 * eta * 0.05 * 0.3 * 0.5))
    # Alice Z, bit 1, decoy 2.
    t = optics.slot_type(1, 1, 2)
    mu3 = optics.mean_photon_numbers(p.source, 1.0, 1.0)[2]
    assert table[3, t] == pytest.approx(-math.expm1(-mu3 * eta * 0.05 * 0.3 * (1 - e)))
