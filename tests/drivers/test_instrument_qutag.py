"""The quTAG driver on its C mock fed by the simulated bench: same events as the bench, loss."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.bindings import mock_library_path
from qkdnode.bindings.tdcbase import TdcBase
from qkdnode.drivers.errors import TransportError, VendorLibraryError
from qkdnode.drivers.instruments.qutools.qutag import QuTag, build
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import TimeTagger
from qkdnode.drivers.sim import BenchParams, SimulatedLink, TaggerParams
from qkdnode.drivers.sim.bench import Bench, create_bench, remove_bench
from qkdnode.drivers.sim.clib import MockLibrary, bench_source

SLICE_PS = 10**9  # 1 ms of bench time per read: a few thousand tags at the default link
BENCH = "qutag-test-bench"  # no bench of this name is registered: a stand-alone link


def _link(seed: int, **tagger) -> SimulatedLink:
    link = SimulatedLink(BenchParams(tagger=TaggerParams(**tagger)), seed)
    rng = np.random.default_rng(seed + 1)
    n = 1024
    link.load_frame(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
                    rng.integers(0, 3, n, dtype=np.uint8))
    return link


@pytest.fixture
def mock():
    m = MockLibrary(mock_library_path("tdcbase"))
    m.reset()
    yield m
    m.reset()


def _tagger(mock, link, **kwargs) -> QuTag:
    mock.attach(link, SLICE_PS)
    return QuTag(TdcBase(mock.path), keepalive=mock, **kwargs)


def test_reads_deliver_the_benchs_events(mock):
    tagger = _tagger(mock, _link(5))
    assert isinstance(tagger, TimeTagger)
    tagger.start()
    reads = [tagger.read() for _ in range(4)]
    tagger.close()
    reference = _link(5)
    for read in reads:
        batch = reference.run(duration_ps=SLICE_PS)
        assert len(batch) > 1000
        np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps)
        np.testing.assert_array_equal(read.channels, batch.channels.astype(np.int32))
        assert read.complete


def test_a_full_ring_is_reported_as_an_overflow(mock):
    tagger = _tagger(mock, _link(6), buffer_events=50)
    tagger.start()
    read = tagger.read()
    tagger.close()
    batch = _link(6).run(duration_ps=SLICE_PS)
    assert read.overflows == 1
    assert not read.complete
    np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps[-50:])
    assert mock.lost_events() == len(batch) - 50


def test_loss_in_the_benchs_tagger_reaches_the_driver(mock):
    tagger = _tagger(mock, _link(7, buffer_events=100))
    tagger.start()
    read = tagger.read()
    tagger.close()
    batch = _link(7, buffer_events=100).run(duration_ps=SLICE_PS)
    assert batch.lost_events > 0
    assert read.overflows == 1
    assert read.timestamps_ps.size == 100
    assert mock.lost_events() == batch.lost_events


def test_settings_reach_the_library(mock):
    tagger = _tagger(mock, _link(8), channels=(1, 2))
    tagger.set_threshold_v(1, -0.25)
    assert tagger.threshold_v(1) == -0.25
    tagger.set_dead_time_ps(2, 20_000)
    assert tagger.dead_time_ps(2) == 20_000
    tagger.set_delay_ps(2, 1000)
    tagger.start()
    read = tagger.read()
    tagger.close()
    assert set(read.channels.tolist()) <= {1, 2}  # inputs 3 and 4 are not enabled
    gaps = np.diff(read.timestamps_ps[read.channels == 2])
    assert gaps.size
    assert gaps.min() >= 20_000


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [("set_threshold_v", (1, 3.5), "threshold must be in"),
     ("set_threshold_v", (7, 0.5), "channel must be one of"),
     ("set_delay_ps", (1, 200_000), "delay must be an integer"),
     ("set_dead_time_ps", (1, -1), "dead time must be")],
)
def test_bad_values_are_refused_before_the_library(mock, call, args, message):
    with _tagger(mock, _link(9)) as tagger, pytest.raises(ValueError, match=message):
        getattr(tagger, call)(*args)


def test_sim_resource_through_the_registry_uses_the_stand_alone_bench():
    tagger = open_instrument("tagger", "time_tagger", "qutools.qutag", f"sim://{BENCH}/tagger",
                             1.0, {"channels": [1, 2, 3, 4], "threshold_v": -0.25, "seed": 11})
    try:
        tagger.start()
        reads = [tagger.read() for _ in range(2)]
    finally:
        tagger.close()
    reference = bench_source(BENCH, 11)
    for read in reads:
        batch = reference.run(duration_ps=SLICE_PS)
        np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps)


def test_lib_resource_errors_name_the_problem(tmp_path):
    with pytest.raises(TransportError, match=str(tmp_path)):
        build(f"lib://{tmp_path}/libtdcbase.so?device=0", {})
    with pytest.raises(ValueError, match="simulated bench only"):
        build(f"lib://{tmp_path}/libtdcbase.so", {"seed": 3})
    with pytest.raises(ValueError, match="by index"):
        build(f"lib://{tmp_path}/libtdcbase.so?serial=123", {})
    with pytest.raises(ValueError, match="lib:///path or sim://"):
        build("visa://GPIB0::1::INSTR", {})


def test_lib_resource_with_an_absent_device_raises_the_vendor_message(mock):
    with pytest.raises(VendorLibraryError, match="No connection was established"):
        build(f"lib://{mock.path}?device=4", {})


def test_bad_settings_close_what_was_opened(mock):
    with pytest.raises(ValueError, match="channel 9 is not an input"):
        build(f"sim://{BENCH}/tagger", {"channels": [1, 9]})
    with pytest.raises(ValueError, match="threshold must be in"):
        build(f"sim://{BENCH}/tagger", {"threshold_v": 5.0})
    # everything was released: a new tagger opens
    build(f"sim://{BENCH}/tagger", {}).close()


def test_sim_resource_uses_a_registered_bench_and_waits_for_its_frame():
    name = "qutag-registered-bench"
    bench = create_bench(name, BenchParams(), seed=21, replace=True)
    try:
        tagger = open_instrument("tagger", "time_tagger", "qutools.qutag",
                                 f"sim://{name}/tagger", 1.0, {})
        try:
            tagger.start()
            assert tagger.read().timestamps_ps.size == 0  # no transmitter frame yet
            frame = _link(21).frame
            bench.load_frame(*frame)
            read = tagger.read()
            # A tagger on a named bench counts from its own origin, seconds before the bench's
            # slot 0 (like a real one: only a start marker relates it to the transmitter).
            origin = tagger._keepalive.origin_ps
        finally:
            tagger.close()
    finally:
        remove_bench(name)
    reference = Bench("reference", BenchParams(), seed=21)
    reference.load_frame(*frame)
    batch = reference.run(duration_ps=SLICE_PS)
    assert read.timestamps_ps.size > 1000
    assert 10**12 <= origin <= 10**13
    np.testing.assert_array_equal(read.timestamps_ps - origin, batch.timestamps_ps)
