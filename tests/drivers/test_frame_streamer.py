"""scpi.frame_streamer: packing, and the driver against its simulated device on the bench.

The bench's ground truth shows which frame played over which slots: a frame of all Z0 at the
signal intensity lights the Z0 detector, one at the vacuum-like intensity lights nothing.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.drivers.errors import InstrumentError
from qkdnode.drivers.instruments.scpi.frame_streamer import pack_frame, unpack_frame
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import FrameStreamer
from qkdnode.drivers.sim import Bench, BenchParams, remove_bench
from qkdnode.drivers.sim.bench import register_bench
from qkdnode.drivers.sim.link import Origin
from qkdnode.drivers.sim.service import BenchService, connect_bench

L = 1 << 16  # slots per frame: ~10^2 photon clicks per signal frame at the default link


def const_frame(basis: int, bit: int, intensity: int, n: int = L) -> tuple[np.ndarray, ...]:
    return (np.full(n, basis, np.uint8), np.full(n, bit, np.uint8),
            np.full(n, intensity, np.uint8))


@pytest.fixture
def bench() -> Bench:
    b = Bench("fs-bench", BenchParams(), seed=5)
    b.boundary_wait_s = 0.05
    register_bench(b, replace=True)
    yield b
    remove_bench("fs-bench")


@pytest.fixture
def tx(bench: Bench):
    with open_instrument("tx", "frame_streamer", "scpi.frame_streamer", "sim://fs-bench/tx",
                         5.0, {"frame_slots": L, "slot_rate_hz": 1e9}) as driver:
        yield driver


def photon_detectors(truth, block: int) -> np.ndarray:
    photons = (truth.origins == Origin.PHOTON) & (truth.slots // L == block)
    return truth.detectors[photons]


def test_packing_is_two_slots_a_byte_low_nibble_first() -> None:
    # slot 0: X, bit 1, class 0 -> 0x1; slot 1: Z, bit 0, class 2 -> 0xA; slot 2: Z1 class 1 -> 7
    data = pack_frame(np.array([0, 1, 1, 0], np.uint8), np.array([1, 0, 1, 0], np.uint8),
                      np.array([0, 2, 1, 0], np.uint8))
    assert data == bytes([0xA1, 0x07])
    assert len(pack_frame(*const_frame(0, 0, 0, 1 << 24))) == 1 << 23  # 8 MiB, not 48 MB


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 2)),
                min_size=1, max_size=64))
def test_unpack_inverts_pack(slots: list[tuple[int, int, int]]) -> None:
    if len(slots) % 2:
        slots = [*slots, (0, 0, 0)]
    basis, bit, intensity = (np.array(c, np.uint8) for c in zip(*slots, strict=True))
    out = unpack_frame(pack_frame(basis, bit, intensity))
    for got, sent in zip(out, (basis, bit, intensity), strict=True):
        np.testing.assert_array_equal(got, sent)


def test_frames_play_back_to_back_at_their_blocks(bench: Bench, tx) -> None:
    assert isinstance(tx, FrameStreamer)
    assert tx.frame_slots() == L
    assert tx.next_block() == 0
    assert tx.frames_queued() == 0
    assert tx.frames_free() == 2  # the simulated device queues two frames ahead
    frames = [const_frame(1, 0, 0), const_frame(1, 0, 2), const_frame(0, 1, 0)]  # Z0, vac, X1
    for block, frame in enumerate(frames[:2]):
        tx.queue_frame(block, *frame)
    assert tx.frames_queued() == 2
    assert tx.frames_free() == 0
    assert tx.next_block() == 2
    tx.start()
    _, first = bench.run_with_truth(L // 2)  # block 0 begins: its buffer is free again
    assert tx.frames_free() == 1
    tx.queue_frame(2, *frames[2])
    _, rest = bench.run_with_truth(3 * L - L // 2)
    truth = type(first)(*(np.concatenate((getattr(first, f), getattr(rest, f))) for f in (
        "slots", "origins", "detectors", "lost_slots", "lost_origins")), 0, 3 * L)
    assert first.n_slots + rest.n_slots == 3 * L
    assert tx.frames_queued() == 0
    assert tx.underruns() == ()
    z0 = photon_detectors(truth, 0)
    x1 = photon_detectors(truth, 2)
    assert z0.size > 30
    assert x1.size > 30
    # Z0 sent: the Z detectors see Z0 (index 2) but for misalignment; X1: X1 (index 1).
    assert np.mean(z0[z0 >= 2] == 2) > 0.9
    assert np.mean(x1[x1 < 2] == 1) > 0.9
    assert photon_detectors(truth, 1).size < 5  # mu3 = 2e-4 photons a slot
    with pytest.raises(InstrumentError) as info:
        tx.queue_frame(2, *frames[0])  # begun: refused
    assert info.value.code == -221


def test_the_bench_waits_at_a_boundary_for_the_missing_frame(bench: Bench, tx) -> None:
    tx.queue_frame(0, *const_frame(0, 0, 0))
    tx.start()
    _, first = bench.run_with_truth(2 * L)  # stops at block 1's first slot, after a short wait
    assert first.n_slots == L
    assert bench.link.slot == L
    got: list = []
    reader = threading.Thread(target=lambda: got.append(bench.run_with_truth(L)))
    bench.boundary_wait_s = 30.0
    reader.start()
    tx.queue_frame(1, *const_frame(1, 1, 0))  # the waiting read goes on as soon as it comes
    reader.join(60.0)
    assert got
    assert got[0][1].n_slots == L
    assert tx.underruns() == ()


def test_an_underrun_plays_vacuum_and_is_reported(bench: Bench, tx) -> None:
    bench.underrun_after_s = 0.01
    tx.queue_frame(0, *const_frame(0, 0, 0))
    tx.start()
    _, truth = bench.run_with_truth(3 * L)
    assert truth.n_slots == 3 * L
    assert tx.underruns() == (1, 2)
    assert tx.underruns() == ()
    assert photon_detectors(truth, 0).size > 30
    assert photon_detectors(truth, 1).size == 0
    assert photon_detectors(truth, 2).size == 0
    assert tx.next_block() == 3
    with pytest.raises(InstrumentError):
        tx.queue_frame(1, *const_frame(0, 0, 0))
    tx.queue_frame(3, *const_frame(0, 0, 0))  # the light comes back with a frame
    _, truth = bench.run_with_truth(L)
    assert photon_detectors(truth, 3).size > 30


def test_bad_input_is_refused_without_showing_choices(bench: Bench, tx) -> None:
    basis, bit, intensity = const_frame(0, 1, 0)
    with pytest.raises(ValueError, match="frame length"):
        tx.queue_frame(0, basis[:-2], bit[:-2], intensity[:-2])
    bad = intensity.copy()
    bad[7] = 3
    with pytest.raises(ValueError, match=r"intensity values must be in 0\.\.2") as info:
        tx.queue_frame(0, basis, bit, bad)
    assert "3" not in str(info.value).replace("0..2", "")
    with pytest.raises(ValueError, match="block"):
        tx.queue_frame(-1, basis, bit, intensity)
    with pytest.raises(ValueError, match="one length"):
        tx.queue_frame(0, basis, bit[:-2], intensity)
    with pytest.raises(ValueError, match="even"):
        tx.set_frame_slots(L + 1)
    for block in range(tx.frames_free()):
        tx.queue_frame(block, basis, bit, intensity)
    with pytest.raises(InstrumentError) as info:
        tx.queue_frame(99, basis, bit, intensity)
    assert info.value.code == -225
    tx.start()
    with pytest.raises(InstrumentError) as info:
        tx.set_frame_slots(2 * L)  # not while playing
    assert info.value.code == -221
    with pytest.raises(InstrumentError):
        tx.set_slot_rate_hz(2e9)  # the bench's slot clock is 1 GHz


def test_through_the_bench_service(bench: Bench) -> None:
    hosted = Bench("fs-hosted", BenchParams(), seed=2)
    with BenchService(hosted, "127.0.0.1:0") as service:
        client = connect_bench("fs-remote", service.address, replace=True)
        try:
            with open_instrument("tx", "frame_streamer", "scpi.frame_streamer",
                                 "sim://fs-remote/tx", 5.0, {"frame_slots": L}) as tx:
                tx.queue_frame(0, *const_frame(1, 1, 0))
                tx.start()
                batch = client.run(2 * L)  # the second block has no frame: stops at L
                assert hosted.link.slot == L
                assert len(batch) > 30
        finally:
            remove_bench("fs-remote")


def test_the_marker_fires_at_a_runs_first_block_on_the_cabled_channel(bench: Bench,
                                                                      tx) -> None:
    tg = bench.link.params.tagger
    assert tx.marker() is None  # off after *RST
    tx.set_marker("start")
    assert tx.marker() == "start"
    tx.queue_frame(0, *const_frame(1, 0, 0))
    tx.queue_frame(1, *const_frame(1, 0, 0))
    tx.start()
    batch, truth = bench.run_with_truth(2 * L)
    marker = batch.channels == tg.marker_channel
    assert int(marker.sum()) == 1  # START: the run's first block only
    (at,) = np.flatnonzero(marker)
    assert truth.origins[at] == Origin.MARKER
    assert truth.slots[at] == 0
    # On Bob's clock: the first slot's time plus the cable, no jitter, in time order.
    assert batch.timestamps_ps[at] == bench.link.tagger_time_ps(0, tg.marker_delay_ps)
    assert np.all(np.diff(batch.timestamps_ps) >= 0)
    # A new run (after OFF) starts at a later block, set while the output is off, and fires
    # the marker at its first slot again; BLOCK mode fires at every block.
    tx.stop()
    with pytest.raises(InstrumentError) as begun:
        tx.set_first_block(1)  # block 1 began: never played twice
    assert begun.value.code == -221
    tx.set_first_block(5)
    assert tx.first_block() == 5
    assert tx.next_block() == 5
    tx.set_marker("block")
    for block in (5, 6):
        tx.queue_frame(block, *const_frame(1, 0, 0))
    slot = bench.link.slot
    tx.start()
    with pytest.raises(InstrumentError) as running:
        tx.set_first_block(9)
    assert running.value.code == -221
    batch, truth = bench.run_with_truth(2 * L + (-slot % L))
    marks = truth.slots[truth.origins == Origin.MARKER]
    first = -(-slot // L) * L  # the run begins at the next frame boundary of the link
    assert marks.tolist() == [first, first + L]
    assert tx.first_block() == 5
    tx.set_marker(None)
    assert tx.marker() is None
    with pytest.raises(ValueError, match="marker mode"):
        tx.set_marker("sometimes")
