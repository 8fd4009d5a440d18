"""The HydraHarp driver on its C mock fed by the simulated bench: events, v1/v2 records, FIFO."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.bindings import mock_library_path
from qkdnode.bindings.hhlib import HydraHarpLib
from qkdnode.drivers.errors import VendorLibraryError
from qkdnode.drivers.instruments.picoquant.hydraharp import HydraHarp, build
from qkdnode.drivers.picoquant.records import RT_HYDRAHARP2_T2, RT_HYDRAHARP_T2
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import TimeTagger
from qkdnode.drivers.sim import BenchParams, SimulatedLink, TaggerParams
from qkdnode.drivers.sim.clib import MockLibrary, bench_source

SLICE_PS = 10**9
BENCH = "hydraharp-test-bench"


def _link(seed: int, **tagger) -> SimulatedLink:
    link = SimulatedLink(BenchParams(tagger=TaggerParams(**tagger)), seed)
    rng = np.random.default_rng(seed + 1)
    n = 1024
    link.load_frame(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
                    rng.integers(0, 3, n, dtype=np.uint8))
    return link


@pytest.fixture
def mock():
    m = MockLibrary(mock_library_path("hhlib"))
    m.reset()
    yield m
    m.reset()


def _tagger(mock, link, channels=(1, 2, 3, 4)) -> HydraHarp:
    mock.attach(link, SLICE_PS)
    return HydraHarp(HydraHarpLib(mock.path), channels, keepalive=mock)


@pytest.mark.parametrize(("version", "record_type"), [(2, RT_HYDRAHARP2_T2),
                                                      (1, RT_HYDRAHARP_T2)])
def test_reads_deliver_the_benchs_events_with_overflows_across_reads(mock, version,
                                                                     record_type):
    # 1 ms per read is ~30 wraps of the 25-bit time field: every read carries overflow records
    # and the decoder's offset must survive from one read to the next
    mock.set_record_version(version)
    tagger = _tagger(mock, _link(5, sync_every_slots=100_000))
    assert isinstance(tagger, TimeTagger)
    assert tagger.record_type == record_type
    tagger.start()
    reads = [tagger.read() for _ in range(4)]
    tagger.close()
    reference = _link(5, sync_every_slots=100_000)
    for read in reads:
        batch = reference.run(duration_ps=SLICE_PS)
        np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps)
        np.testing.assert_array_equal(read.channels, batch.channels.astype(np.int32))
        assert read.complete
    assert 0 in reads[0].channels  # sync events arrive as channel 0


def test_fifo_overrun_is_reported_once_per_measurement(mock):
    tagger = _tagger(mock, _link(6))
    mock.set_fifo_capacity(500)
    tagger.start()
    first, second = tagger.read(), tagger.read()
    assert first.overflows == 1
    assert second.overflows == 0  # the same overrun: the flag stays set until a restart
    batch = _link(6).run(duration_ps=SLICE_PS)
    np.testing.assert_array_equal(first.timestamps_ps, batch.timestamps_ps[:500])
    assert mock.lost_events() >= len(batch) - 500
    tagger.stop()
    tagger.start()
    assert tagger.read().overflows == 1  # 1 ms of bench time overruns again
    tagger.close()


def test_thresholds_delays_and_the_fixed_dead_time(mock):
    with _tagger(mock, _link(7)) as tagger:
        tagger.set_threshold_v(1, -0.05)
        tagger.set_delay_ps(2, -5000)
        with pytest.raises(ValueError, match="CFD level must be"):
            tagger.set_threshold_v(1, 0.05)
        with pytest.raises(ValueError, match="dead time is fixed"):
            tagger.set_dead_time_ps(1, 10_000)
        with pytest.raises(ValueError, match=r"channel must be one of 1\.\.8"):
            tagger.set_delay_ps(9, 0)
        tagger.start()
        with pytest.raises(VendorLibraryError, match="HH_ERROR_INSTANCE_RUNNING") as info:
            tagger.start()
        assert info.value.code == -16


def test_only_the_streamed_inputs_record(mock):
    with _tagger(mock, _link(8), channels=(2, 3)) as tagger:
        tagger.start()
        read = tagger.read()
    assert read.timestamps_ps.size > 0
    assert set(read.channels.tolist()) == {2, 3}


def test_registry_opens_the_sim_resource_on_the_stand_alone_bench():
    tagger = open_instrument("tagger", "time_tagger", "picoquant.hydraharp",
                             f"sim://{BENCH}/tagger", 1.0,
                             {"threshold_v": -0.1, "delay_ps": {"1": 0}, "seed": 3})
    try:
        tagger.start()
        read = tagger.read()
    finally:
        tagger.close()
    batch = bench_source(BENCH, 3).run(duration_ps=SLICE_PS)
    np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps)


def test_bad_device_index_raises_the_vendor_message(mock):
    with pytest.raises(VendorLibraryError, match="HH_ERROR_DEVICE_OPEN_FAIL"):
        build(f"lib://{mock.path}?device=3", {})
    with pytest.raises(ValueError, match="dead time is fixed"):
        build(f"sim://{BENCH}/tagger", {"dead_time_ps": 100})
    build(f"sim://{BENCH}/tagger", {}).close()  # the failed build released the device
