"""The simulated instruments report the bench's physics (seeded statistical tests)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from numpy.typing import NDArray

from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.sim import (
    Bench,
    BenchParams,
    DetectorParams,
    FibreParams,
    TagBatch,
    create_bench,
    remove_bench,
)
from qkdnode.drivers.sim.bench import PHOTON_ENERGY_J, get_bench
from qkdnode.drivers.transport import write_block

Frame = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]
_NAMES = itertools.count()


def random_frame(seed: int, length: int = 10_000) -> Frame:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, length, dtype=np.uint8), rng.integers(0, 2, length, dtype=np.uint8),
            rng.choice(3, length, p=(0.7, 0.2, 0.1)).astype(np.uint8))


@pytest.fixture
def make_bench() -> Iterator[Callable[..., Bench]]:
    made: list[str] = []

    def make(params: BenchParams | None = None, seed: int = 11) -> Bench:
        bench = create_bench(f"stats{next(_NAMES)}", params, seed)
        made.append(bench.name)
        return bench

    yield make
    for name in made:
        remove_bench(name)


def sim(bench: Bench, instrument: str) -> str:
    return f"sim://{bench.name}/{instrument}"


def test_detector_rate_follows_the_settings_and_matches_the_simulated_stream(make_bench) -> None:
    bench = make_bench(BenchParams(fibre=FibreParams(length_km=20.0)))
    bench.load_frame(*random_frame(1))
    with open_instrument("spd", "detector", "idq.id120", sim(bench, "spd-x1"), 5.0,
                         {"dead_time_s": 1e-6, "bias_v": 43.5}) as det:
        det._sleep = lambda seconds: None  # the simulated counter needs no waiting
        reported = det.count_rate_hz(0.5)
        # The settings reached the link: half the efficiency, 1 us dead time on X1 only.
        x1 = bench.link.params.detectors[1]
        assert x1.efficiency == pytest.approx(0.05)
        assert x1.dead_time_ps == 1_000_000
        assert bench.link.params.detectors[0].dead_time_ps == 50_000
        # The event simulation of the same link, counted on X1's tagger channel.
        duration_ps = 2 * 10**10
        batch = bench.run(duration_ps=duration_ps)
        channel = bench.link.params.tagger.channels[1]
        simulated = np.count_nonzero(batch.channels == channel) / (duration_ps * 1e-12)
    # Independently of the bench: photon clicks of X1 at 20 km, half efficiency.
    src, fib = bench.configured.source, bench.configured.fibre
    frame = bench.link.frame
    mu = np.array([src.mu1, src.mu2, src.mu3])[frame[2]]
    e = 0.005 * (1 - 1e-4 / (1 + 1e-4)) + 1e-4 / (1 + 1e-4) * (1 - 0.005)
    route = np.where(frame[0] == 0, 0.5 * np.where(frame[1] == 1, 1 - e, e), 0.25)
    p_click = -np.expm1(-mu * fib.transmittance * 0.05 * route)
    r = src.slot_rate_hz * p_click.mean() + 300.0  # dark counts halve with the excess bias
    expected = r / (1 - 0.04 + r * 1e-6)
    # 0.5 s window: the counter's Poisson noise is 0.3 %; the dead-time and afterpulse
    # model is good to ~1 % at this load.
    assert reported == pytest.approx(expected, rel=0.02)
    assert simulated == pytest.approx(expected, rel=0.02)


def test_power_meter_follows_the_voa(make_bench) -> None:
    bench = make_bench()
    frame = random_frame(2)
    bench.load_frame(*frame)
    src = bench.configured.source
    photons = np.array([src.mu1, src.mu2, src.mu3])[frame[2]].mean()
    configured_w = photons * src.slot_rate_hz * PHOTON_ENERGY_J
    with open_instrument("pm", "power_meter", "thorlabs.pm100", sim(bench, "pm"), 2.0,
                         {"averaging": 1000}) as pm, \
         open_instrument("voa", "attenuator", "scpi.voa", sim(bench, "voa"), 2.0) as voa:
        readings = []
        for db in (0.0, 3.0, 6.0, 10.0, 13.0):
            voa.set_attenuation_db(db)
            readings.append(pm.measure_power_w())
        # The calibrated drive levels send exactly mu_k at the null: the reading is the
        # configured power, down by the attenuation (noise 10 fW / sqrt(1000)).
        for db, reading in zip((0.0, 3.0, 6.0, 10.0, 13.0), readings, strict=True):
            assert reading == pytest.approx(configured_w * 10 ** (-db / 10), rel=1e-3, abs=1e-15)


def tag_qber(batch: TagBatch, bench: Bench, intended: Frame) -> float:
    """X-basis QBER of the tags against the frame the transmitter meant to send.

    Each tag is put in the nearest slot knowing the clock (what Qsync recovers); tags of
    slots where Alice and the detector's basis agree are sifted.
    """
    params = bench.link.params
    lookup = {ch: j for j, ch in enumerate(params.tagger.channels)}
    det = np.array([lookup.get(int(c), -1) for c in batch.channels])
    keep = det >= 0
    det, t = det[keep], batch.timestamps_ps[keep]
    delay = params.fibre.delay_ps + params.detectors[0].latency_ps
    slot = np.rint((t - delay) / params.source.slot_period_ps).astype(np.int64)
    pos = slot % intended[0].shape[0]
    basis, bit = intended[0][pos], intended[1][pos]
    sifted = (basis == det // 2) & (basis == 0)
    return float(np.count_nonzero(bit[sifted] != det[sifted] % 2) / np.count_nonzero(sifted))


def test_a_corrupted_awg_upload_raises_the_qber(make_bench) -> None:
    params = BenchParams(fibre=FibreParams(length_km=10.0))
    intended = random_frame(3, length=8192)
    qbers = []
    for corrupt in (False, True):
        bench = make_bench(params, seed=4)
        with open_instrument("awg", "transmitter", "keysight.33500", sim(bench, "awg"), 2.0,
                             {"slot_rate_hz": 1e9, "max_sample_rate_hz": 1e9}) as awg:
            if not corrupt:
                awg.load_frame(*intended)
            else:
                # The same upload with 10 % of the phase channel's bytes hit by noise on the
                # line: the AWG takes the block as it arrives and plays it.
                intensity_codes, phase_codes = awg.encode(*intended)
                raw = bytearray(phase_codes.astype("<i2").tobytes())
                rng = np.random.default_rng(5)
                hit = rng.choice(len(raw), len(raw) // 10, replace=False)
                for i in hit:
                    raw[i] ^= int(rng.integers(1, 256))
                t = awg.transport
                for command in ("FORM:BORD SWAP", "SOUR1:DATA:VOL:CLE", "SOUR2:DATA:VOL:CLE"):
                    t.write(command)
                write_block(t, "SOUR1:DATA:ARB:DAC QKD_INT,",
                            intensity_codes.astype("<i2").tobytes())
                write_block(t, "SOUR2:DATA:ARB:DAC QKD_PHASE,", bytes(raw))
                for command in ("SOUR1:FUNC ARB", "SOUR1:FUNC:ARB QKD_INT", "SOUR2:FUNC ARB",
                                "SOUR2:FUNC:ARB QKD_PHASE", "FUNC:ARB:SYNC"):
                    t.write(command)
                assert t.query("SYST:ERR?") == '0,"No error"'
        qbers.append(tag_qber(bench.run(duration_ps=10**10), bench, intended))
    clean, corrupted = qbers
    # Clean: misalignment 0.5 % plus afterpulses (4 % of clicks, random bits: ~1.5 %);
    # corrupted: most hit samples (~20 % of the slots) land in another state, and a quarter
    # to a half of those flip a sifted bit.
    assert clean < 0.03
    assert corrupted > clean + 0.03


def test_a_mis_set_bias_raises_the_qber_and_the_lock_restores_it(make_bench) -> None:
    bench = make_bench(BenchParams(fibre=FibreParams(length_km=10.0)))
    intended = random_frame(6, length=4096)
    bench.load_frame(*intended)
    with open_instrument("mbc", "bias_controller", "thorlabs.mbx", sim(bench, "bias"), 2.0,
                         {"manual_bias_v": 1.8, "lock_mode": "manual"}) as mbx:
        off = tag_qber(bench.run(duration_ps=5 * 10**9), bench, intended)
        # The modulator's contrast at 0.8 V from the null leaves sin^2(pi 0.8 / 8) ~ 9.5 %
        # of the light in the wrong state, on top of the ~2 % of the locked bias.
        assert off > 0.08
        mbx.set_lock_mode(mbx.lock_mode().NULL)
        locked = tag_qber(bench.run(duration_ps=5 * 10**9), bench, intended)
        assert locked < 0.03


def test_same_seed_same_readings(make_bench) -> None:
    readings = []
    for _ in range(2):
        bench = make_bench(seed=21)
        bench.load_frame(*random_frame(7))
        with open_instrument("s15", "detector", "s15.spd", sim(bench, "s15"), 2.0,
                             {"integration_time_s": 0.01}) as spd, \
             open_instrument("pm", "power_meter", "thorlabs.pm100", sim(bench, "pm"), 2.0) as pm:
            readings.append((spd.count_rate_hz(0.01), pm.measure_power_w(),
                             len(bench.run(duration_ps=10**8))))
    assert readings[0] == readings[1]


def test_detector_parameters_outside_the_bench_checks_are_never_applied(make_bench) -> None:
    bench = make_bench(BenchParams(detectors=(DetectorParams(efficiency=0.6),) * 4))
    with open_instrument("spd", "detector", "idq.id120", sim(bench, "spd-z0"), 2.0,
                         {"bias_v": 68.5}) as det:
        # Three times the excess bias would be an efficiency of 1.8: capped at 1.
        assert det.bias_v() == 68.5
        assert bench.link.params.detectors[2].efficiency == 1.0
        assert math.isclose(bench.link.params.detectors[0].efficiency, 0.6)
    assert get_bench(bench.name) is bench


def test_tags_need_a_frame_played_first(make_bench) -> None:
    bench = make_bench()
    with pytest.raises(RuntimeError, match="no frame loaded yet"):
        bench.run(duration_ps=10**6)
