"""The MultiHarp driver on its C mock fed by the simulated bench: events, dead time, FIFO."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.bindings import mock_library_path
from qkdnode.bindings.mhlib import MultiHarpLib
from qkdnode.drivers.errors import VendorLibraryError
from qkdnode.drivers.instruments.picoquant.multiharp import MultiHarp, build
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import TimeTagger
from qkdnode.drivers.sim import BenchParams, SimulatedLink, TaggerParams
from qkdnode.drivers.sim.clib import MockLibrary

SLICE_PS = 10**9
BENCH = "multiharp-test-bench"
RESOLUTION_PS = 80  # the MultiHarp 150's


def _link(seed: int, **tagger) -> SimulatedLink:
    link = SimulatedLink(BenchParams(tagger=TaggerParams(**tagger)), seed)
    rng = np.random.default_rng(seed + 1)
    n = 1024
    link.load_frame(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
                    rng.integers(0, 3, n, dtype=np.uint8))
    return link


@pytest.fixture
def mock():
    m = MockLibrary(mock_library_path("mhlib"))
    m.reset()
    yield m
    m.reset()


def _tagger(mock, link) -> MultiHarp:
    mock.attach(link, SLICE_PS)
    return MultiHarp(MultiHarpLib(mock.path), (1, 2, 3, 4), keepalive=mock)


def test_reads_deliver_the_benchs_events_at_the_device_resolution(mock):
    tagger = _tagger(mock, _link(5))
    assert isinstance(tagger, TimeTagger)
    assert tagger.resolution_ps == RESOLUTION_PS
    tagger.start()
    reads = [tagger.read() for _ in range(3)]
    tagger.close()
    reference = _link(5)
    for read in reads:
        batch = reference.run(duration_ps=SLICE_PS)
        floored = batch.timestamps_ps // RESOLUTION_PS * RESOLUTION_PS
        np.testing.assert_array_equal(read.timestamps_ps, floored)
        np.testing.assert_array_equal(read.channels, batch.channels.astype(np.int32))


def test_the_extended_dead_time_drops_what_the_input_would_miss(mock):
    dead = 160_000
    tagger = _tagger(mock, _link(6, resolution_ps=RESOLUTION_PS))
    tagger.set_dead_time_ps(1, dead)
    tagger.start()
    read = tagger.read()
    tagger.close()
    batch = _link(6, resolution_ps=RESOLUTION_PS).run(duration_ps=SLICE_PS)
    keep = np.ones(len(batch), dtype=bool)
    last = None
    for i, (t, ch) in enumerate(zip(batch.timestamps_ps.tolist(), batch.channels.tolist(),
                                    strict=True)):
        if ch != 1:
            continue
        if last is not None and t - last < dead:
            keep[i] = False
        else:
            last = t
    assert not keep.all()  # the bench's own dead time is shorter: some are dropped
    np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps[keep])


def test_trigger_and_dead_time_ranges(mock):
    with _tagger(mock, _link(7)) as tagger:
        tagger.set_threshold_v(1, -0.1)
        tagger.set_threshold_v(2, 0.3)
        tagger.set_dead_time_ps(3, 0)
        for call, args, message in [("set_threshold_v", (1, 1.5), "trigger level must be"),
                                    ("set_dead_time_ps", (1, 500), "dead time must be"),
                                    ("set_delay_ps", (1, 100_000), "input offset must be")]:
            with pytest.raises(ValueError, match=message):
                getattr(tagger, call)(*args)


def test_fifo_overrun_is_reported(mock):
    tagger = _tagger(mock, _link(8))
    mock.set_fifo_capacity(100)
    tagger.start()
    read = tagger.read()
    tagger.close()
    assert read.overflows == 1
    assert read.timestamps_ps.size == 100
    assert mock.lost_events() > 0


def test_registry_and_vendor_errors():
    tagger = open_instrument("tagger", "time_tagger", "picoquant.multiharp",
                             f"sim://{BENCH}/tagger", 1.0,
                             {"channels": [1, 2, 3, 4], "dead_time_ps": 800, "seed": 2})
    try:
        tagger.start()
        assert tagger.read().timestamps_ps.size > 0
    finally:
        tagger.close()
    with pytest.raises(VendorLibraryError, match="MH_ERROR_DEVICE_OPEN_FAIL"):
        build(f"lib://{mock_library_path('mhlib')}?device=2", {})
