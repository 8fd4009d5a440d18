"""The simulated link's statistics match its model (seeded, so the bounds are not flaky)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.typing import NDArray

from qkdnode.drivers.sim import (
    BenchParams,
    DetectorParams,
    FibreParams,
    Origin,
    SimulatedLink,
    SourceParams,
    TagBatch,
    TaggerParams,
)

Frame = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]


def random_frame(seed: int, length: int = 10_000, p_class: tuple[float, ...] = (0.7, 0.2, 0.1)
                 ) -> Frame:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, length, dtype=np.uint8), rng.integers(0, 2, length, dtype=np.uint8),
            rng.choice(3, length, p=p_class).astype(np.uint8))


def bench(*, detector: dict[str, object] | None = None, **parts: object) -> BenchParams:
    det = DetectorParams(**(detector or {}))  # type: ignore[arg-type]
    return BenchParams(detectors=(det,) * 4, **parts)  # type: ignore[arg-type]


def make_link(params: BenchParams, seed: int = 1, frame: Frame | None = None) -> SimulatedLink:
    link = SimulatedLink(params, seed=seed)
    link.load_frame(*(frame if frame is not None else random_frame(seed + 100)))
    return link


def detector_of(batch: TagBatch, params: BenchParams) -> NDArray[np.int64]:
    lookup = {ch: j for j, ch in enumerate(params.tagger.channels)}
    return np.array([lookup.get(int(c), -1) for c in batch.channels], dtype=np.int64)


def slots_of(batch: TagBatch, det: NDArray[np.int64], params: BenchParams) -> NDArray[np.int64]:
    """Nearest slot of each tag, knowing the clock (what Qsync recovers)."""
    tg = params.tagger
    delay = np.array([params.fibre.delay_ps + d.latency_ps for d in params.detectors])[det]
    t_alice = (batch.timestamps_ps - tg.offset_ps) / (1 + tg.drift_ppm * 1e-6) - delay
    return np.rint(t_alice / params.source.slot_period_ps).astype(np.int64)


def qber(batch: TagBatch, params: BenchParams, frame: Frame, basis: int = 0
         ) -> tuple[float, int]:
    det = detector_of(batch, params)
    keep = det >= 0
    det = det[keep]
    slots = slots_of(TagBatch(batch.timestamps_ps[keep], batch.channels[keep], 0, 0), det,
                     params)
    pos = slots % frame[0].size
    sifted = (det // 2 == basis) & (frame[0][pos] == basis)
    errors = sifted & (det % 2 != frame[1][pos])
    n = int(sifted.sum())
    return float(errors.sum()) / n, n


def test_counts_match_the_model_without_dead_time() -> None:
    """Photon clicks = sum of per-slot probabilities; darks = R t; afterpulse cascades."""
    p_ap, dark = 0.04, 50_000.0
    params = bench(detector={"dead_time_ps": 0, "afterpulse_probability": p_ap,
                             "dark_count_rate_hz": dark})
    link = make_link(params, seed=11)
    n_slots = 200_000_000
    expected_photons = link.click_probabilities().sum(axis=1) * n_slots / link.frame[0].size
    batch, truth = link.run_with_truth(n_slots)
    assert not batch.overflow
    t_s = n_slots * 1e-9
    for j in range(4):
        on_j = truth.detectors == j
        photons = np.sum(on_j & (truth.origins == Origin.PHOTON))
        darks = np.sum(on_j & (truth.origins == Origin.DARK))
        aps = np.sum(on_j & (truth.origins == Origin.AFTERPULSE))
        # The last few microseconds are held for the next batch: a negligible shortfall.
        assert abs(photons - expected_photons[j]) < 5 * math.sqrt(expected_photons[j])
        assert abs(darks - dark * t_s) < 5 * math.sqrt(dark * t_s)
        prim = photons + darks
        # Each click afterpulses with p_ap: a geometric cascade, mean p/(1-p), var p/(1-p)^2.
        mean_ap = prim * p_ap / (1 - p_ap)
        assert abs(aps - mean_ap) < 5 * math.sqrt(prim * p_ap) / (1 - p_ap)
    assert np.array_equal(np.unique(truth.slots[truth.origins == Origin.DARK]), [-1])


def test_dead_time_is_non_paralysable_and_respected() -> None:
    """Constant click probability p per slot, dead time D slots: a renewal every D - 1 + 1/p."""
    params = bench(source=SourceParams(mu1=0.8, mu2=0.1, mu3=0.01),
                   fibre=FibreParams(length_km=0.0),
                   tagger=TaggerParams(jitter_rms_ps=0.0),
                   detector={"dead_time_ps": 50_000, "afterpulse_probability": 0.0,
                             "dark_count_rate_hz": 0.0, "jitter_fwhm_ps": 0.0,
                             "efficiency": 0.5})
    frame = (np.zeros(16, np.uint8), np.zeros(16, np.uint8), np.zeros(16, np.uint8))
    link = make_link(params, seed=3, frame=frame)
    p = float(link.click_probabilities()[0, 0])
    n_slots = 20_000_000
    batch = link.run(n_slots)
    det = detector_of(batch, params)
    for j in range(4):
        t = batch.timestamps_ps[det == j]
        assert np.diff(t).min() >= 50_000
    t0 = batch.timestamps_ps[det == 0]
    # Renewal: after a click at slot s, slot s + 50 is the first that can click.
    mean_interval = 49 + 1 / p
    expected = n_slots / mean_interval
    sigma = math.sqrt(expected * (1 - p) / p**2) / mean_interval
    assert abs(t0.size - expected) < 5 * sigma
    assert np.mean(np.diff(t0) == 50_000) == pytest.approx(p, rel=0.05)


def test_afterpulse_excess_after_the_dead_time_matches_p_ap() -> None:
    """Gaps between clicks: an exponential baseline plus p_ap in the first few tau_ap."""
    dead, tau = 50_000, 200_000.0
    for p_ap in (0.0, 0.04):
        params = bench(fibre=FibreParams(length_km=100.0),
                       detector={"dead_time_ps": dead, "afterpulse_probability": p_ap,
                                 "afterpulse_tau_ps": tau})
        link = make_link(params, seed=21)
        batch = link.run(2_000_000_000)
        det = detector_of(batch, params)
        gaps = np.concatenate([np.diff(batch.timestamps_ps[det == j]) for j in range(4)])
        n = gaps.size
        window = 10 * tau
        tail = gaps[gaps > dead + window] - (dead + window)
        rate = 1 / tail.mean()
        baseline = tail.size * math.exp(rate * window)
        excess = 1 - baseline / n
        sigma = math.sqrt(tail.size) * math.exp(rate * window) / n
        # An afterpulse is pre-empted when a photon clicks first: p_ap / (1 + r tau).
        assert abs(excess - p_ap / (1 + rate * tau)) < 5 * sigma + 0.002


def test_qber_is_misalignment_without_noise() -> None:
    params = bench(fibre=FibreParams(length_km=10.0, misalignment=0.02),
                   detector={"afterpulse_probability": 0.0, "dark_count_rate_hz": 0.0,
                             "dead_time_ps": 1000})
    frame = random_frame(5)
    link = make_link(params, seed=5, frame=frame)
    e = link.wrong_detector_probability()
    assert e == pytest.approx(0.02, abs=2e-4)
    batch = link.run(50_000_000)
    for basis in (0, 1):
        q, n = qber(batch, params, frame, basis)
        assert abs(q - e) < 5 * math.sqrt(e * (1 - e) / n)


def test_qber_includes_dark_counts_and_afterpulses() -> None:
    """Lim et al.'s parameters at 50 km: e_mis plus random clicks, half of them errors."""
    params = BenchParams()
    frame = random_frame(7)
    link = make_link(params, seed=7, frame=frame)
    probs = link.click_probabilities()
    e = link.wrong_detector_probability()
    n_slots = 300_000_000
    batch = link.run(n_slots)
    det = detector_of(batch, params)
    q_meas, n = qber(batch, params, frame, 0)
    # Random clicks per slot and detector: darks plus afterpulses (which land in random slots).
    p_ap = params.detectors[0].afterpulse_probability
    clicks = np.bincount(det, minlength=4)[:2] / n_slots
    rho = params.detectors[0].dark_count_rate_hz * 1e-9 + p_ap * clicks
    x = frame[0] == 0
    right = np.where(frame[1][x] == 0, probs[0, x], probs[1, x]).mean()
    wrong = np.where(frame[1][x] == 0, probs[1, x], probs[0, x]).mean()
    expected = (wrong + rho.mean()) / (right + wrong + 2 * rho.mean())
    assert e < expected < q_meas + 0.01
    assert abs(q_meas - expected) < 5 * math.sqrt(expected / n) + 0.03 * expected


def test_corrupted_frame_raises_the_qber() -> None:
    """The AWG plays a pattern with 10 % of the bits flipped; Alice's record is the original."""
    params = bench(fibre=FibreParams(length_km=10.0))
    frame = random_frame(9)
    flips = np.random.default_rng(9).random(frame[1].size) < 0.1
    corrupted = (frame[0], frame[1] ^ flips.astype(np.uint8), frame[2])
    q_good, _ = qber(make_link(params, 9, frame).run(30_000_000), params, frame)
    q_bad, n = qber(make_link(params, 9, corrupted).run(30_000_000), params, frame)
    flipped = flips[frame[0] == 0].mean()
    expected = q_good + flipped * (1 - 2 * q_good)
    assert q_good < 0.03  # e_mis 0.005 plus about p_ap / 2 of afterpulses
    assert abs(q_bad - expected) < 5 * math.sqrt(expected / n)


def test_mis_set_bias_raises_the_qber_as_modelled() -> None:
    params = bench(fibre=FibreParams(length_km=10.0),
                   detector={"afterpulse_probability": 0.0, "dark_count_rate_hz": 0.0})
    frame = random_frame(4)
    link = make_link(params, seed=4, frame=frame)
    e_nominal = link.wrong_detector_probability()
    link.set_bias_voltage(params.source.bias_null_v + 0.15 * params.source.v_pi)
    assert link.bias_voltage == pytest.approx(1.6)
    e = link.wrong_detector_probability()
    assert e > e_nominal + 0.04
    mu = link.mean_photon_numbers()
    assert mu[0] < params.source.mu1
    assert mu[2] > 10 * params.source.mu3
    q, n = qber(link.run(20_000_000), params, frame)
    assert abs(q - e) < 5 * math.sqrt(e / n) + 0.002


def test_jitter_width_and_clock_transform() -> None:
    """Tag minus true arrival on Bob's clock: Gaussian jitter, tagger jitter, bin in quadrature."""
    res, fwhm, rms, drift, offset = 16, 120.0, 9.0, 3.5, -7_654_321_987
    params = bench(fibre=FibreParams(length_km=5.0),
                   tagger=TaggerParams(resolution_ps=res, jitter_rms_ps=rms, drift_ppm=drift,
                                       offset_ps=offset),
                   detector={"jitter_fwhm_ps": fwhm, "latency_ps": 1234.0})
    link = make_link(params, seed=8)
    residuals = []
    for _ in range(3):
        batch, truth = link.run_with_truth(20_000_000)
        ph = truth.origins == Origin.PHOTON
        t_true = (truth.slots[ph] * 1000.0 + params.fibre.delay_ps + 1234.0)
        bob = t_true * (1 + drift * 1e-6) + offset
        residuals.append(batch.timestamps_ps[ph] - bob)
        assert np.all(batch.timestamps_ps % res == 0)
    r = np.concatenate(residuals)
    sigma = math.sqrt((fwhm / (2 * math.sqrt(2 * math.log(2)))) ** 2 + rms**2 + res**2 / 12)
    assert r.std() == pytest.approx(sigma, rel=0.02)
    # Flooring to a bin edge shifts by half a bin on average; offset and drift are exact.
    assert abs(r.mean() + res / 2) < 5 * sigma / math.sqrt(r.size)


def test_same_seed_same_stream_and_batches_are_ordered() -> None:
    params = bench(tagger=TaggerParams(sync_every_slots=1000, sync_channel=7))
    a, b = make_link(params, seed=2), make_link(params, seed=2)
    c = make_link(params, seed=3)
    prev_complete = -(2**62)
    last = []
    for _ in range(3):
        ba, bb, bc = a.run(5_000_000), b.run(5_000_000), c.run(5_000_000)
        np.testing.assert_array_equal(ba.timestamps_ps, bb.timestamps_ps)
        np.testing.assert_array_equal(ba.channels, bb.channels)
        assert not np.array_equal(ba.timestamps_ps[:100], bc.timestamps_ps[:100])
        assert np.all(np.diff(ba.timestamps_ps) >= 0)
        assert ba.timestamps_ps.size == 0 or ba.timestamps_ps[0] >= prev_complete
        assert np.all(ba.timestamps_ps < ba.complete_until_ps)
        prev_complete = ba.complete_until_ps
        last.append(ba)
    sync = np.concatenate([x.timestamps_ps[x.channels == 7] for x in last])
    # Sync tag k of slot 1000 k (at k us: no delay, offset or drift), none missing or repeated
    # across calls; each call delivers those up to its cut (fibre delay later for photons).
    np.testing.assert_array_equal(np.rint(sync / 1e6), np.arange(sync.size))
    assert sync.size == pytest.approx((15_000_000e3 + params.fibre.delay_ps) / 1e6, abs=2)


def test_overflow_drops_and_counts_exactly_the_excess() -> None:
    big = bench(fibre=FibreParams(length_km=10.0))
    small = dataclasses.replace(big, tagger=TaggerParams(buffer_events=5_000))
    full, full_truth = make_link(big, seed=6).run_with_truth(5_000_000)
    cut, cut_truth = make_link(small, seed=6).run_with_truth(5_000_000)
    assert len(full) > 5_000
    assert cut.overflow
    assert not full.overflow
    assert len(cut) == 5_000
    assert cut.lost_events == len(full) - 5_000
    np.testing.assert_array_equal(cut.timestamps_ps, full.timestamps_ps[:5_000])
    np.testing.assert_array_equal(cut_truth.lost_origins, full_truth.origins[5_000:])


def test_frame_pattern_repeats_modulo_its_length() -> None:
    """A vacuum class at chosen frame positions: photon clicks avoid exactly those slots."""
    params = bench(source=SourceParams(mu3=0.0, extinction_ratio_db=60.0),
                   fibre=FibreParams(length_km=0.0))
    length = 7
    intensity = np.array([0, 2, 0, 2, 2, 1, 0], dtype=np.uint8)
    link = make_link(params, seed=12, frame=(np.zeros(length, np.uint8),
                                             np.ones(length, np.uint8), intensity))
    _, truth = link.run_with_truth(2_000_000)
    ph = truth.slots[truth.origins == Origin.PHOTON]
    counts = np.bincount(ph % length, minlength=length)
    assert counts[[1, 3, 4]].sum() < 5
    assert counts[0] > 10 * counts[5] / 5


def test_run_arguments_and_frame_validation() -> None:
    link = SimulatedLink(BenchParams(), seed=0)
    with pytest.raises(RuntimeError):
        link.run(10)
    with pytest.raises(ValueError, match="intensity"):
        link.load_frame(np.zeros(4, np.uint8), np.zeros(4, np.uint8), np.full(4, 3, np.uint8))
    with pytest.raises(ValueError, match="same length"):
        link.load_frame(np.zeros(4, np.uint8), np.zeros(3, np.uint8), np.zeros(4, np.uint8))
    link.load_frame(np.zeros(4, np.uint8), np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(TypeError):
        link.run()
    with pytest.raises(TypeError):
        link.run(10, duration_ps=10)
    link.run(duration_ps=1_000_500)
    assert link.slot == 1000
    assert link.time_ps == 1_000_000


def test_small_batches_carry_dead_time_and_afterpulses_across_calls() -> None:
    """Many short calls give the statistics of one long call: nothing lost at the seams."""
    params = bench(fibre=FibreParams(length_km=0.0),
                   tagger=TaggerParams(jitter_rms_ps=0.0),
                   detector={"dead_time_ps": 50_000, "afterpulse_probability": 0.2,
                             "afterpulse_tau_ps": 100_000.0, "dark_count_rate_hz": 1e5})
    n_calls, per_call = 500, 20_000  # 20 us per call against 50 ns dead time, 100 ns tau_ap
    long_run = make_link(params, seed=31).run(n_calls * per_call)
    link = make_link(params, seed=32)
    batches = [link.run(per_call) for _ in range(n_calls)]
    times = np.concatenate([b.timestamps_ps for b in batches])
    channels = np.concatenate([b.channels for b in batches])
    assert np.all(np.diff(times) >= 0)
    split = TagBatch(times, channels, 0, 0)
    for whole in (long_run, split):
        det = detector_of(whole, params)
        for j in range(4):
            assert np.diff(whole.timestamps_ps[det == j]).min() >= 50_000
    n_long, n_split = len(long_run), len(split)
    # The seeds differ; the tail held at the end of the last call is the same in both.
    assert abs(n_split - n_long) < 5 * math.sqrt(2 * n_long)
    # Afterpulses straddling the seams survive: the share of gaps within dead + 3 tau_ap.
    def short_gap_share(batch: TagBatch) -> float:
        det = detector_of(batch, params)
        gaps = np.concatenate([np.diff(batch.timestamps_ps[det == j]) for j in range(4)])
        return float(np.mean(gaps < 50_000 + 300_000))
    share_long, share_split = short_gap_share(long_run), short_gap_share(split)
    assert abs(share_split - share_long) < 5 * math.sqrt(share_long / n_long * 2)


def test_efficiency_mismatch_shows_in_the_counts() -> None:
    dets = tuple(DetectorParams(efficiency=e, afterpulse_probability=0.0, dark_count_rate_hz=0.0,
                               dead_time_ps=1000)
                 for e in (0.10, 0.05, 0.10, 0.02))
    params = BenchParams(detectors=dets, fibre=FibreParams(length_km=20.0))
    link = make_link(params, seed=13)
    per_detector = link.click_probabilities().mean(axis=1)
    counts = np.bincount(detector_of(link.run(20_000_000), params), minlength=4)
    assert counts[1] / counts[0] == pytest.approx(0.5, rel=0.05)
    assert counts[3] / counts[2] == pytest.approx(0.2, rel=0.1)
    np.testing.assert_allclose(counts / counts.sum(), per_detector / per_detector.sum(),
                               rtol=0.05)


@pytest.mark.slow
def test_gain_and_qber_per_intensity_match_lim_model_at_100_km() -> None:
    """Lim et al.'s per-pulse model, written for this passive receiver, per intensity class.

    For Alice's X slots of class k: X-pair detection D_k = 1 - (1 - 2 p_dc) e^(-eta mu_k q_x),
    afterpulses (a cascade: p_ap of all clicks, afterpulses included) land in random slots,
    dead time removes the fraction r tau of the clicks; errors
    E_k = p_dc + e (1 - e^(-eta mu_k q_x)) plus half the afterpulses.
    """
    params = BenchParams(fibre=FibreParams(length_km=100.0))
    frame = random_frame(41)
    link = make_link(params, seed=41, frame=frame)
    mu = link.mean_photon_numbers()
    e = link.wrong_detector_probability()
    d = params.detectors[0]
    p_dc = d.dark_count_rate_hz * 1e-9
    p_ap = d.afterpulse_probability
    eta = params.fibre.transmittance * d.efficiency
    q_x = params.receiver.q_x
    n_slots = 100_000_000_000
    batches = [link.run(10_000_000_000) for _ in range(n_slots // 10_000_000_000)]
    batch = TagBatch(np.concatenate([b.timestamps_ps for b in batches]),
                     np.concatenate([b.channels for b in batches]), 0, 0)
    det = detector_of(batch, params)
    slots = slots_of(batch, det, params)
    pos = slots % frame[0].size
    rate_per_detector = len(batch) / 4 / (n_slots * 1e-9)
    dead_loss = rate_per_detector * d.dead_time_ps * 1e-12
    for k in range(3):
        slots_k = n_slots * np.mean((frame[0] == 0) & (frame[2] == k))
        sifted = (det // 2 == 0) & (frame[0][pos] == 0) & (frame[2][pos] == k)
        errors = sifted & (det % 2 != frame[1][pos])
        photon = 1 - math.exp(-eta * mu[k] * q_x)
        d_k = 1 - (1 - 2 * p_dc) * math.exp(-eta * mu[k] * q_x)
        # Afterpulses of the X pair land in any slot: per slot, p_ap of its click rate.
        ap_per_slot = p_ap * np.sum(det // 2 == 0) / n_slots
        gain = (d_k + ap_per_slot) * (1 - dead_loss)
        error = (p_dc + e * photon + ap_per_slot / 2) * (1 - dead_loss)
        n_k = int(sifted.sum())
        assert n_k / slots_k == pytest.approx(gain, rel=5 / math.sqrt(n_k) + 0.005)
        assert errors.sum() / slots_k == pytest.approx(
            error, rel=5 / math.sqrt(errors.sum()) + 0.01)
