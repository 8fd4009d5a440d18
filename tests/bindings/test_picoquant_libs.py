"""The HHLib and MHLib bindings against their C mocks: return codes, T2 records, FIFO overrun."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.bindings import hhlib, mhlib, mock_library_path
from qkdnode.bindings.hhlib import HydraHarpLib
from qkdnode.bindings.mhlib import MultiHarpLib
from qkdnode.bindings.tdcbase import TdcBase
from qkdnode.drivers.errors import DeviceError, TransportError, VendorLibraryError
from qkdnode.drivers.picoquant.records import (
    RT_HYDRAHARP2_T2,
    RT_HYDRAHARP_T2,
    RT_MULTIHARP_T2,
    WRAP_V1,
    T2State,
    decode_t2,
)
from qkdnode.drivers.sim.clib import MockLibrary

LIBS = [("hh_mock", HydraHarpLib, hhlib, "HH_"), ("mh_mock", MultiHarpLib, mhlib, "MH_")]


def _drain(lib, record_type, resolution_ps):
    state, times, chans, reads = T2State(), [], [], 0
    while True:
        records = lib.read_fifo()
        reads += 1
        if records.size == 0:
            break
        events, state = decode_t2(records, record_type, resolution_ps, state)
        times.extend(events.timestamps_ps.tolist())
        chans.extend(events.channels.tolist())
    return times, chans, reads


@pytest.mark.parametrize(("fixture", "cls", "module", "prefix"), LIBS)
def test_bad_device_index_raises_the_library_message(request, fixture, cls, module, prefix):
    path, _ = request.getfixturevalue(fixture)
    with pytest.raises(VendorLibraryError) as info:
        cls(path, device_index=1)
    assert info.value.code == -1
    assert str(info.value) == (
        f"vendor library error -1: {prefix}ERROR_DEVICE_OPEN_FAIL ({prefix}OpenDevice)")
    with pytest.raises(ValueError, match=r"device index must be in 0\.\.7"):
        cls(path, device_index=8)


@pytest.mark.parametrize(("fixture", "cls", "module", "prefix"), LIBS)
def test_second_open_is_busy_and_closed_handles_refuse(request, fixture, cls, module, prefix):
    path, _ = request.getfixturevalue(fixture)
    lib = cls(path)
    with pytest.raises(VendorLibraryError, match=f"{prefix}ERROR_DEVICE_BUSY") as info:
        cls(path)
    assert info.value.code == -2
    lib.close()
    with pytest.raises(DeviceError, match="closed"):
        lib.resolution_ps()


@pytest.mark.parametrize(("fixture", "cls", "module", "prefix"), LIBS)
@pytest.mark.parametrize(
    ("code", "name"),
    [(-10, "DEVICE_NOT_OPEN"), (-16, "INSTANCE_RUNNING"), (-17, "INVALID_ARGUMENT"),
     (-18, "INVALID_MODE"), (-22, "NOT_INITIALIZED"), (-37, "USB_BULKRD_FAIL"),
     (-99, "UNKNOWN")],
)
def test_check_uses_get_error_string(request, fixture, cls, module, prefix, code, name):
    path, _ = request.getfixturevalue(fixture)
    lib = module.ffi.dlopen(str(path))
    with pytest.raises(VendorLibraryError, match=f"{prefix}ERROR_{name} \\(X\\)") as info:
        module._check(lib, code, "X")
    assert info.value.code == code
    module._check(lib, 0, "X")


@pytest.mark.parametrize(("fixture", "cls", "module", "prefix"), LIBS)
def test_invalid_arguments_and_double_start(request, fixture, cls, module, prefix):
    path, _ = request.getfixturevalue(fixture)
    with cls(path) as lib:
        for call, args in [("set_input_offset_ps", (0, 100_000)), ("set_input_offset_ps", (8, 0)),
                           ("set_sync_divider", (0,)), ("start", (0,))]:
            with pytest.raises(VendorLibraryError, match=f"{prefix}ERROR_INVALID_ARGUMENT"):
                getattr(lib, call)(*args)
        lib.start(1000)
        with pytest.raises(VendorLibraryError, match=f"{prefix}ERROR_INSTANCE_RUNNING"):
            lib.start(1000)
        assert not lib.acquisition_done()
        lib.stop()
        assert lib.acquisition_done()


def test_hydraharp_cfd_and_multiharp_edge_and_dead_time_ranges(hh_mock, mh_mock):
    with HydraHarpLib(hh_mock[0]) as hh:
        hh.set_input_cfd(0, 100, 10)
        with pytest.raises(VendorLibraryError, match="HH_ERROR_INVALID_ARGUMENT"):
            hh.set_input_cfd(0, 1001, 10)
        with pytest.raises(VendorLibraryError, match="HH_ERROR_INVALID_ARGUMENT"):
            hh.set_sync_cfd(100, 41)
        assert hh.model == "HydraHarp 400"
        assert hh.resolution_ps() == 1.0
        assert hh.num_input_channels() == 8
    with MultiHarpLib(mh_mock[0]) as mh:
        mh.set_input_edge(0, -1200, False)
        mh.set_input_dead_time_ps(0, 0)
        mh.set_input_dead_time_ps(0, 800)
        for call, args in [("set_input_edge", (0, 1201, True)),
                           ("set_input_dead_time_ps", (0, 799)),
                           ("set_input_dead_time_ps", (0, 160_001)),
                           ("set_sync_edge", (-1300, False))]:
            with pytest.raises(VendorLibraryError, match="MH_ERROR_INVALID_ARGUMENT"):
                getattr(mh, call)(*args)
        assert mh.resolution_ps() == 80.0
        assert mh.record_type() == RT_MULTIHARP_T2


def test_missing_library_names_the_path(tmp_path):
    with pytest.raises(TransportError, match=r"HydraHarp HHLib library .*libhh400\.so"):
        HydraHarpLib(tmp_path / "libhh400.so")


@pytest.mark.parametrize("version", [1, 2])
def test_record_version_follows_the_library_version(hh_mock, version):
    path, mock = hh_mock
    mock.set_record_version(version)
    with HydraHarpLib(path) as hh:
        assert hh.library_version() == ("1.2" if version == 1 else "3.0")
        assert hh.record_type() == (RT_HYDRAHARP_T2 if version == 1 else RT_HYDRAHARP2_T2)


def test_v1_overflows_split_across_reads(hh_mock):
    # an event 200000 v1 wraps in needs 200000 overflow records: two FIFO blocks of 131072
    path, mock = hh_mock
    mock.set_record_version(1)
    with HydraHarpLib(path) as hh:
        hh.start(1000)
        t = np.array([5, 200_000 * WRAP_V1 + 17], dtype=np.int64)
        mock.push(t, np.array([1, 3], dtype=np.int32))
        times, chans, reads = _drain(hh, RT_HYDRAHARP_T2, 1)
        assert times == t.tolist()
        assert chans == [1, 3]
        assert reads == 3  # two blocks and the empty one


def test_sync_events_are_special_records(hh_mock):
    path, mock = hh_mock
    with HydraHarpLib(path) as hh:
        hh.start(1000)
        mock.push(np.array([10, 20], dtype=np.int64), np.array([0, 2], dtype=np.int32))
        records = hh.read_fifo()
        assert records.tolist() == [0x80000000 | 10, (1 << 25) | 20]


@pytest.mark.parametrize("fixture", ["hh_mock", "mh_mock"])
def test_fifo_full_sets_the_flag_and_counts_the_lost(request, fixture):
    path, mock = request.getfixturevalue(fixture)
    cls = HydraHarpLib if fixture == "hh_mock" else MultiHarpLib
    with cls(path) as lib:
        mock.set_fifo_capacity(10)
        mock.set_resolution_ps(1)
        lib.start(1000)
        assert not lib.fifo_full()
        assert mock.push(np.arange(25, dtype=np.int64), np.ones(25, dtype=np.int32)) == 25
        assert lib.fifo_full()
        assert mock.lost_events() == 15
        times, _, _ = _drain(lib, lib.record_type(), 1)
        assert times == list(range(10))  # a FIFO keeps the first, drops the newest
        assert lib.fifo_full()  # until the next measurement
        lib.stop()
        lib.start(1000)
        assert not lib.fifo_full()


def test_negative_times_cannot_be_t2_records(hh_mock):
    path, mock = hh_mock
    with HydraHarpLib(path) as hh:
        hh.start(1000)
        with pytest.raises(ValueError, match="negative"):
            mock.push(np.array([-5], dtype=np.int64), np.array([1], dtype=np.int32))


_events = st.lists(
    st.tuples(st.integers(0, 1 << 40), st.integers(0, 8)), min_size=0, max_size=60
).map(sorted)


@settings(deadline=None, max_examples=25)
@given(events=_events, version=st.sampled_from([1, 2]), resolution=st.sampled_from([1, 80]))
def test_mock_t2_encoding_decodes_to_the_pushed_events(events, version, resolution):
    # property: the mock's C encoder then the numba decoder give the pushed times, floored
    path = mock_library_path("hhlib")
    mock = MockLibrary(path)
    mock.reset()
    mock.set_record_version(version)
    mock.set_resolution_ps(resolution)
    try:
        with HydraHarpLib(path) as hh:
            hh.start(1000)
            t = np.array([e[0] for e in events], dtype=np.int64)
            c = np.array([e[1] for e in events], dtype=np.int32)
            mock.push(t, c)
            times, chans, _ = _drain(hh, hh.record_type(), resolution)
    finally:
        mock.reset()
    assert times == [(x // resolution) * resolution for x in t.tolist()]
    assert chans == c.tolist()


class _BrokenBench:
    def run(self, n_slots=None, *, duration_ps=None):
        raise RuntimeError("bench exploded")


def test_a_failing_bench_is_a_transfer_error_with_its_cause_kept(hh_mock, tdc_mock):
    path, mock = hh_mock
    mock.attach(_BrokenBench())
    with HydraHarpLib(path) as hh:
        hh.start(1000)
        with pytest.raises(VendorLibraryError, match="HH_ERROR_USB_BULKRD_FAIL") as info:
            hh.read_fifo()
        assert info.value.code == -37
    assert str(mock.last_error) == "bench exploded"
    tdc_path, tdc = tdc_mock
    tdc.attach(_BrokenBench())
    with TdcBase(tdc_path) as qutag:
        qutag.set_buffer_size(10)
        qutag.enable_channels(0b10)
        assert qutag.last_timestamps()[0].size == 0
        assert qutag.data_lost()  # the quTAG signals it as lost data
