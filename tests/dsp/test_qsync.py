"""Qsync against the simulated bench's truth: slots, clock steps, drift changes, loss of sync."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from qkdnode.drivers.sim import BenchParams, SimulatedLink
from qkdnode.drivers.sim.link import Origin
from qkdnode.drivers.sim.params import DetectorParams, SourceParams, TaggerParams
from qkdnode.dsp import qsync
from qkdnode.dsp.errors import AcquisitionFailed

# The requirement: at least this fraction of photon detections get their true slot.
REQUIRED = 0.999
# Jitter FWHM as a fraction of the slot, the worst case.
JITTER_FRACTION = 0.10
# Intensity class probabilities of the test frames (signal, decoy, weak decoy).
CLASS_P = (0.5, 0.3, 0.2)
# Slots per bench read: ~1000 detections at 50 km (rates scale with slots, not time).
BATCH_SLOTS = 350_000


def frame_bits(rate_hz: float) -> int:
    """Frame length (log2): longer than the +-1 ms search window and its margins."""
    return math.ceil(math.log2(2.05e-3 * rate_hz))


@dataclass
class Bench:
    link: SimulatedLink
    mu_of_slot: NDArray[np.float64]
    period_ps: float

    def tracker(self, **kw: object) -> qsync.SlotTracker:
        p = self.link.params
        return qsync.SlotTracker(period_ps=self.period_ps, pattern=self.mu_of_slot,
                                 delay_ps=p.fibre.delay_ps,
                                 detector_channels=p.tagger.channels, **kw)  # type: ignore[arg-type]


def make_bench(rate_hz: float, offset_ps: int, ppm: float, seed: int = 1, *,
               sync_every: int = 0, length_km: float = 50.0) -> Bench:
    period = 1e12 / rate_hz
    tagger_rms = 8.0
    sigma = JITTER_FRACTION * period / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    det = DetectorParams(jitter_fwhm_ps=2.3548 * math.sqrt(sigma**2 - tagger_rms**2))
    params = BenchParams(
        source=SourceParams(slot_rate_hz=rate_hz), detectors=(det,) * 4,
        fibre=replace(BenchParams().fibre, length_km=length_km),
        tagger=TaggerParams(offset_ps=offset_ps, drift_ppm=ppm, jitter_rms_ps=tagger_rms,
                            sync_every_slots=sync_every))
    rng = np.random.default_rng(seed)
    size = 1 << frame_bits(rate_hz)
    intensity = rng.choice(3, size, p=CLASS_P).astype(np.uint8)
    link = SimulatedLink(params, seed)
    link.load_frame(rng.integers(0, 2, size, dtype=np.uint8),
                    rng.integers(0, 2, size, dtype=np.uint8), intensity)
    src = params.source
    mu = np.array([src.mu1, src.mu2, src.mu3])[intensity]
    return Bench(link, mu, period)


@dataclass
class Run:
    slots: NDArray[np.int64]        # assigned, per output tag
    true_slots: NDArray[np.int64]
    origins: NDArray[np.uint8]
    n_in: int
    status: qsync.TrackerStatus

    def photon_accuracy(self) -> float:
        ph = self.origins == Origin.PHOTON
        return float(np.mean(self.slots[ph] == self.true_slots[ph]))

    def photon_misses(self) -> int:
        ph = self.origins == Origin.PHOTON
        return int(np.count_nonzero(self.slots[ph] != self.true_slots[ph]))


def run_tracker(bench: Bench, tracker: qsync.SlotTracker, n_batches: int, batch_slots: int,
                change: dict[int, TaggerParams] | None = None) -> Run:
    """Feeds ``n_batches`` bench reads through ``tracker``; ``change[i]`` is applied to the
    bench's tagger before read ``i``. Returns the assignments aligned with the truth."""
    outs, truths = [], []
    for i in range(n_batches):
        if change and i in change:
            bench.link.set_params(replace(bench.link.params, tagger=change[i]))
        batch, truth = bench.link.run_with_truth(batch_slots)
        truths.append(truth)
        outs.append(tracker.process(batch.timestamps_ps, batch.channels))
    outs.append(tracker.flush())
    index = np.concatenate([o.index for o in outs])
    slots = np.concatenate([o.slots for o in outs])
    true_slots = np.concatenate([t.slots for t in truths])
    origins = np.concatenate([t.origins for t in truths])
    det = origins != Origin.SYNC
    # Every detection comes out exactly once, in order.
    assert np.array_equal(index, np.flatnonzero(det))
    return Run(slots, true_slots[index], origins[index], int(det.sum()), tracker.status)


def drift_change(tagger: TaggerParams, alice_time_ps: int, new_ppm: float) -> TaggerParams:
    """The tagger's clock changes rate at ``alice_time_ps`` without a jump."""
    offset = tagger.offset_ps + alice_time_ps * (tagger.drift_ppm - new_ppm) * 1e-6
    return replace(tagger, drift_ppm=new_ppm, offset_ps=round(offset))


# -- the grid corners --------------------------------------------------------------

CORNERS = [(rate, off, ppm) for rate in (1e8, 1e9) for off in (-(10**9), 10**9)
           for ppm in (-10.0, 10.0)]


@pytest.mark.parametrize(("rate", "offset", "ppm"), CORNERS)
def test_corners_assign_true_slots(rate: float, offset: int, ppm: float) -> None:
    bench = make_bench(rate, offset, ppm, seed=int(rate / 1e8) + (offset > 0) + 2 * (ppm > 0))
    # ~8000 detections: the acquisition window and a dozen tracking blocks.
    run = run_tracker(bench, bench.tracker(), 8, BATCH_SLOTS)
    assert run.photon_accuracy() >= REQUIRED
    st_ = run.status
    assert st_.locked
    assert st_.losses == 0
    assert st_.acquisitions == 1
    assert abs(st_.ppm - ppm) < 0.5
    assert st_.assigned + st_.rejected == run.n_in
    # The residual spread is the jitter (sigma = FWHM / 2.355), the core clip taking ~1 %.
    sigma = JITTER_FRACTION * bench.period_ps / 2.3548
    assert 0.8 * sigma < st_.residual_rms_ps < 1.2 * sigma


# -- clock steps and drift changes ---------------------------------------------------------

# Tags a located loss may misassign: those between the change and the located change point
# (a CUSUM over ~2 blocks places it within a few tens of tags).
MAX_MISSES_PER_CHANGE = 64


@pytest.mark.parametrize(("rate", "step_ps"), [
    (1e9, 123_456_789),      # 0.79 of a slot over whole ones: residuals wrap
    (1e9, -7_000),           # whole slots only: only the pattern shows it
    (1e8, -350_004_321),     # backwards: the next read starts before the last one ended
])
def test_clock_step_is_recovered(rate: float, step_ps: int) -> None:
    bench = make_bench(rate, 300_000_000, 4.0, seed=5)
    tagger = bench.link.params.tagger
    n_slots = BATCH_SLOTS
    run = run_tracker(bench, bench.tracker(), 12, n_slots,
                      change={6: replace(tagger, offset_ps=tagger.offset_ps + step_ps)})
    st_ = run.status
    assert st_.losses >= 1
    assert st_.acquisitions == st_.losses + 1
    assert st_.locked
    assert run.photon_misses() <= MAX_MISSES_PER_CHANGE
    assert st_.assigned + st_.rejected + st_.unassigned == run.n_in


@pytest.mark.parametrize("rate", [1e8, 1e9])
def test_drift_change_is_followed(rate: float) -> None:
    """From +10 to -10 ppm at once, the clock's time continuous."""
    bench = make_bench(rate, -400_000_000, 10.0, seed=6)
    n_slots = BATCH_SLOTS
    tagger = bench.link.params.tagger
    at = 6 * n_slots * bench.period_ps
    run = run_tracker(bench, bench.tracker(), 14, n_slots,
                      change={6: drift_change(tagger, round(at), -10.0)})
    st_ = run.status
    assert st_.locked
    assert run.photon_misses() <= MAX_MISSES_PER_CHANGE
    assert abs(st_.ppm + 10.0) < 0.5


def test_drift_change_of_the_bench_is_recovered() -> None:
    """The bench's own drift change (its clock jumps by time x change, here ~2.5 us)."""
    rate = 1e9
    bench = make_bench(rate, 0, -10.0, seed=7)
    n_slots = BATCH_SLOTS
    tagger = bench.link.params.tagger
    run = run_tracker(bench, bench.tracker(), 12, n_slots,
                      change={6: replace(tagger, drift_ppm=10.0)})
    st_ = run.status
    assert st_.locked
    assert st_.losses >= 1
    assert run.photon_misses() <= MAX_MISSES_PER_CHANGE
    assert abs(st_.ppm - 10.0) < 0.5


def test_loss_of_light_is_detected_and_reacquired() -> None:
    """The fibre is cut for a while (dark counts only), then restored."""
    bench = make_bench(1e9, 0, 3.0, seed=8)
    params = bench.link.params
    cut = replace(params, fibre=replace(params.fibre, insertion_loss_db=60.0))
    tracker = bench.tracker()
    outs, truths, states = [], [], []
    for i in range(16):
        if i in (5, 11):
            bench.link.set_params(cut if i == 5 else params)
        # Dark counts come at ~2.4 kHz: a long read while cut holds a few acquisition windows.
        n = BATCH_SLOTS if not 5 <= i < 11 else 400 * BATCH_SLOTS
        batch, truth = bench.link.run_with_truth(n)
        truths.append(truth)
        outs.append(tracker.process(batch.timestamps_ps, batch.channels))
        states.append(tracker.status)
    outs.append(tracker.flush())
    assert states[4].locked
    assert not states[10].locked          # lost while dark
    assert states[10].losses >= 1
    assert states[15].locked              # re-acquired with the light back
    assert states[15].acquisitions >= 2
    slots = np.concatenate([o.slots for o in outs])
    index = np.concatenate([o.index for o in outs])
    true_slots = np.concatenate([t.slots for t in truths])[index]
    origins = np.concatenate([t.origins for t in truths])[index]
    ph = origins == Origin.PHOTON
    assert np.mean(slots[ph] == true_slots[ph]) >= REQUIRED
    # Dark counts while unlocked are not given slots.
    assert tracker.status.unassigned > 0


def test_sync_channel_gives_the_period() -> None:
    bench = make_bench(1e9, -(10**9), -10.0, seed=9, sync_every=1024)
    p = bench.link.params
    tracker = bench.tracker(sync_channel=p.tagger.sync_channel, sync_every_slots=1024)
    run = run_tracker(bench, tracker, 8, BATCH_SLOTS)
    assert run.photon_accuracy() >= REQUIRED
    assert abs(run.status.ppm + 10.0) < 0.5
    # The sync tags themselves are not detections: none comes out.
    assert np.all(run.origins != Origin.SYNC)


# -- acquire on its own --------------------------------------------------------------------


def first_tags(bench: Bench, n_slots: int) -> tuple[NDArray[np.int64], NDArray[np.int16],
                                                    NDArray[np.int64]]:
    batch, truth = bench.link.run_with_truth(n_slots)
    return batch.timestamps_ps, batch.channels, truth.slots


def test_acquire_recovers_period_and_slot_zero() -> None:
    bench = make_bench(1e8, 700_000_000, -6.0, seed=10)
    t, ch, true_slots = first_tags(bench, 3 * BATCH_SLOTS)
    p = bench.link.params
    acq = qsync.acquire(t, ch, period_ps=bench.period_ps, pattern=bench.mu_of_slot,
                        delay_ps=p.fibre.delay_ps, detector_channels=p.tagger.channels)
    true_period = bench.period_ps * (1 - 6e-6)
    assert abs(acq.clock.period_ps / true_period - 1) < 1e-7
    true_delay = p.fibre.delay_ps * (1 - 6e-6) + 700_000_000
    assert abs(acq.clock.delay_ps - true_delay) < 0.05 * bench.period_ps
    assert acq.correlation_z > qsync.MIN_CORRELATION_Z
    sigma = JITTER_FRACTION * bench.period_ps / 2.3548
    assert 0.8 * sigma < acq.sigma_ps < 1.25 * sigma
    slots, _ = qsync.assign(t, acq.clock, 5 * acq.sigma_ps)
    ph = true_slots >= 0
    assert np.mean(slots[ph] == true_slots[ph]) >= REQUIRED


def test_acquire_refuses_tags_without_timing() -> None:
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 10**10, 4000)).astype(np.int64)
    ch = rng.integers(1, 5, 4000).astype(np.int16)
    pattern = rng.random(1 << 18)
    with pytest.raises(AcquisitionFailed, match="no slot phase"):
        qsync.acquire(t, ch, period_ps=10_000.0, pattern=pattern, delay_ps=0.0,
                      detector_channels=(1, 2, 3, 4))


def test_acquire_refuses_a_pattern_that_does_not_match() -> None:
    """Right timing, wrong announced pattern: no slot number rather than a guess."""
    bench = make_bench(1e8, 0, 0.0, seed=11)
    t, ch, _ = first_tags(bench, 3 * BATCH_SLOTS)
    other = np.random.default_rng(99).permutation(bench.mu_of_slot)
    p = bench.link.params
    with pytest.raises(AcquisitionFailed, match="pattern correlation"):
        qsync.acquire(t, ch, period_ps=bench.period_ps, pattern=other,
                      delay_ps=p.fibre.delay_ps, detector_channels=p.tagger.channels)


# -- kernel and twin -----------------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), n_freq=st.integers(1, 20),
       span=st.sampled_from([10**3, 10**7, 10**11, 10**14]))
def test_rayleigh_kernel_matches_twin(seed: int, n: int, n_freq: int, span: int) -> None:
    rng = np.random.default_rng(seed)
    dt = rng.integers(-span, span, n).astype(np.int64)
    freqs = 1.0 / rng.uniform(100.0, 20_000.0, n_freq)
    a = np.empty(n_freq)
    b = np.empty(n_freq)
    qsync.rayleigh_kernel(dt, freqs, a)
    qsync.rayleigh_reference(dt, freqs, b)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * max(n, 1))


def test_rayleigh_power_of_aligned_and_random_tags() -> None:
    period = 1000.0
    aligned = (np.arange(500, dtype=np.int64) * 37) * 1000
    out = np.empty(2)
    qsync.rayleigh_kernel(aligned, np.array([1 / period, 1 / 1001.0]), out)
    assert out[0] == pytest.approx(500.0)
    assert out[1] < 50.0


# -- bad input -----------------------------------------------------------------------------

GOOD = {"period_ps": 1000.0, "pattern": np.arange(1 << 21) % 3, "delay_ps": 0.0,
        "detector_channels": (1, 2)}


@pytest.mark.parametrize(("t", "ch", "kw", "exc", "match"), [
    (np.array([3, 2, 5], np.int64), np.ones(3, np.int16), {}, ValueError, "non-decreasing"),
    (np.array([1.0, 2.0]), np.ones(2, np.int16), {}, TypeError, "int64"),
    ([1, 2], np.ones(2, np.int16), {}, TypeError, "int64"),
    (np.array([1, 2], np.int64), np.ones(2, np.float32), {}, TypeError, "channels"),
    (np.array([1, 2], np.int64), np.ones(3, np.int16), {}, ValueError, "one length"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"period_ps": 0.0}, ValueError,
     "period_ps"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"period_ps": -5.0}, ValueError,
     "period_ps"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"period_ps": math.nan}, ValueError,
     "period_ps"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"pattern": np.ones(1 << 21)},
     ValueError, "constant"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"pattern": np.arange(1000) % 2},
     ValueError, "ambiguous"),
    (np.array([1, 2], np.int64), np.ones(2, np.int16), {"max_ppm": -1.0}, ValueError,
     "max_ppm"),
])
def test_acquire_rejects_bad_input(t: object, ch: object, kw: dict[str, object],
                                   exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        qsync.acquire(t, ch, **{**GOOD, **kw})  # type: ignore[arg-type]


def test_acquire_with_too_few_detections() -> None:
    t = np.arange(10, dtype=np.int64) * 1000
    with pytest.raises(AcquisitionFailed, match="detections"):
        qsync.acquire(t, np.ones(10, np.int16), **GOOD)  # type: ignore[arg-type]


def test_tracker_rejects_bad_input() -> None:
    tracker = qsync.SlotTracker(**GOOD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-decreasing"):
        tracker.process(np.array([15, 10], np.int64), np.ones(2, np.int16))
    with pytest.raises(TypeError, match="int64"):
        tracker.process(np.array([30], np.int32), np.ones(1, np.int16))
    with pytest.raises(ValueError, match="period_ps"):
        qsync.SlotTracker(**{**GOOD, "period_ps": 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sync_channel"):
        qsync.SlotTracker(**GOOD, sync_channel=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_tags"):
        qsync.SlotTracker(**GOOD, block_tags=2)  # type: ignore[arg-type]


def synthetic_stream(rng: np.random.Generator, n: int, period: float, sigma: float,
                     dark: float, step_at: int, step_ps: float) -> NDArray[np.int64]:
    """Tags of a line with Gaussian jitter, a share of uniform dark counts and a clock step."""
    slots = np.cumsum(rng.geometric(0.05, n))
    t = slots * period + rng.normal(0, sigma, n)
    t[step_at:] += step_ps
    darks = rng.random(n) < dark
    t[darks] += rng.uniform(-0.5, 0.5, int(darks.sum())) * period
    return np.sort(np.floor(t)).astype(np.int64)


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 3000),
       block=st.sampled_from([16, 64, 512]),
       period=st.floats(500.0, 20_000.0), jitter=st.floats(0.0, 0.1),
       dark=st.floats(0.0, 0.3), step=st.floats(-0.5, 0.5), final=st.booleans(),
       pattern_check=st.booleans())
def test_track_kernel_matches_twin(seed: int, n: int, block: int, period: float, jitter: float,
                                   dark: float, step: float, final: bool,
                                   pattern_check: bool) -> None:
    rng = np.random.default_rng(seed)
    t = synthetic_stream(rng, n, period, jitter * period, dark, n // 2, step * period)
    weights = rng.random(1 << 10)
    weights -= weights.mean()
    start = int(rng.integers(0, max(n // 4, 1)))
    args = (t, start, block, final, int(rng.integers(-50, 50)), 7, period * (1 + 3e-6),
            0.3 * period, 0.15 * period, weights, 0.5,
            0.01 if pattern_check else -math.inf, 0.25, 16)
    outs = []
    for fn in (qsync.track_kernel, qsync.track_reference):
        size = max(n - start, 0)
        arrays = (np.full(size, -9, np.int64), np.zeros(size, np.bool_), np.zeros(size))
        outs.append((fn(*args, *arrays), arrays))
    (k_ret, k_arr), (r_ret, r_arr) = outs
    stop, failed, last_good, ref_time, ref_slot, period_k, rms = k_ret
    assert (stop, failed, last_good, ref_slot) == (*r_ret[:3], r_ret[4])
    # Sums in another order: the line may differ in its last bits (a picosecond when the
    # rounding of the reference time falls the other way).
    assert abs(ref_time - r_ret[3]) <= 2
    assert period_k == pytest.approx(r_ret[5], rel=1e-10)
    assert (math.isnan(rms) and math.isnan(r_ret[6])) or rms == pytest.approx(r_ret[6], rel=1e-6)
    examined = stop - start + (min(block, n - stop) if failed else 0)
    for a, b in zip(k_arr, r_arr, strict=True):
        np.testing.assert_array_equal(a[:examined], b[:examined])


# -- a wider sweep (slow) ------------------------------------------------------------------

SWEEP = [(rate, off, ppm) for rate in (1e8, 3e8, 1e9)
         for off in (-(10**9), 333_333_333, 10**9) for ppm in (-10.0, 0.5, 10.0)]


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "offset", "ppm"), SWEEP)
def test_sweep_assigns_true_slots(rate: float, offset: int, ppm: float) -> None:
    """The grid inside and on the issue's bounds, a non-integer period (300 MHz), 10x longer."""
    bench = make_bench(rate, offset, ppm, seed=int(rate // 1e7) + offset % 97 + int(ppm * 10) + 100)
    run = run_tracker(bench, bench.tracker(), 40, BATCH_SLOTS)
    assert run.photon_accuracy() >= REQUIRED
    assert run.status.losses == 0
    assert abs(run.status.ppm - ppm) < 0.3


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_repeated_steps_and_drift_changes(seed: int) -> None:
    """A clock step or a drift change every few reads, sizes drawn at random."""
    rng = np.random.default_rng(seed)
    rate = (1e8, 1e9)[seed % 2]
    bench = make_bench(rate, int(rng.integers(-(10**9), 10**9)), float(rng.uniform(-10, 10)),
                       seed=seed)
    change, tagger, n_changes = {}, bench.link.params.tagger, 0
    for i in range(6, 60, 6):
        at = round(i * BATCH_SLOTS * bench.period_ps)
        if rng.random() < 0.5:
            step = int(rng.integers(-(10**6), 10**6)) * 1000 + int(rng.integers(0, 10_000))
            tagger = replace(tagger, offset_ps=tagger.offset_ps + step)
        else:
            tagger = drift_change(tagger, at, float(rng.uniform(-10, 10)))
        change[i] = tagger
        n_changes += 1
    run = run_tracker(bench, bench.tracker(), 62, BATCH_SLOTS, change=change)
    assert run.status.locked
    assert run.photon_misses() <= MAX_MISSES_PER_CHANGE * n_changes
    assert run.photon_accuracy() >= 0.995


def test_a_long_read_of_noise_is_skipped_then_the_link_locks() -> None:
    bench = make_bench(1e9, 0, -2.0, seed=12)
    tracker = bench.tracker()
    rng = np.random.default_rng(12)
    n_noise = 100_000
    noise_t = np.sort(rng.integers(0, 200_000_000, n_noise)).astype(np.int64)
    noise_ch = rng.integers(1, 5, n_noise).astype(np.int16)
    out = [tracker.process(noise_t, noise_ch)]
    st_ = tracker.status
    assert not st_.locked
    assert st_.unassigned >= n_noise - 2 * qsync.DEFAULT_ACQUIRE_TAGS
    outs, truths = [], []
    for _ in range(8):
        batch, truth = bench.link.run_with_truth(BATCH_SLOTS)
        truths.append(truth)
        outs.append(tracker.process(batch.timestamps_ps, batch.channels))
    outs.append(tracker.flush())
    assert np.all(np.concatenate([o.slots for o in out]) == -1)
    index = np.concatenate([o.index for o in outs])
    slots = np.concatenate([o.slots for o in outs])
    noise = index < n_noise
    assert np.all(slots[noise] == -1)
    origins = np.concatenate([t.origins for t in truths])[index[~noise] - n_noise]
    true_slots = np.concatenate([t.slots for t in truths])[index[~noise] - n_noise]
    ph = origins == Origin.PHOTON
    assert np.mean(slots[~noise][ph] == true_slots[ph]) >= REQUIRED
    assert tracker.status.locked


def test_sparse_link_acquires_on_a_shorter_window() -> None:
    """150 km at 1 GHz, ~30 kHz of detections: 2048 of them span more than the frequency
    search takes without a sync channel, so the tracker acquires on the tags that fit."""
    bench = make_bench(1e9, -(10**9), 10.0, seed=3, length_km=150.0)
    run = run_tracker(bench, bench.tracker(), 20, 10 * BATCH_SLOTS)
    assert run.photon_accuracy() >= REQUIRED
    assert run.status.unassigned == 0
    assert run.status.acquisitions == 1
