"""The tdcbase (quTAG V1.5.x) binding against its C mock: every return-code path and the data."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.bindings import mock_library_path
from qkdnode.bindings.tdcbase import SCOND_MISC, TdcBase, _check, ffi
from qkdnode.drivers.errors import DeviceError, TransportError, VendorLibraryError


def test_missing_library_names_the_path(tmp_path):
    missing = tmp_path / "libtdcbase.so"
    with pytest.raises(TransportError, match=r"quTAG tdcbase library .*libtdcbase\.so"):
        TdcBase(missing)


def test_unknown_mock_name_is_refused():
    with pytest.raises(ValueError, match="no C mock for library 'nope'"):
        mock_library_path("nope")


def test_bad_device_id_raises_the_library_message(tdc_mock):
    path, _ = tdc_mock
    with pytest.raises(VendorLibraryError) as info:
        TdcBase(path, device_id=3)
    assert info.value.code == 2
    assert str(info.value) == (
        "vendor library error 2: No connection was established (TDC_init)")


def test_device_id_checked_before_the_library_is_called(tdc_mock):
    path, _ = tdc_mock
    with pytest.raises(ValueError, match="device_id"):
        TdcBase(path, device_id=-2)


def test_calls_after_another_handle_deinitialised_get_not_initialized(tdc_mock):
    path, _ = tdc_mock
    first = TdcBase(path)
    TdcBase(path).close()  # TDC_deInit is library-wide
    with pytest.raises(VendorLibraryError, match="Library has not been initialized") as info:
        first.timebase_s()
    assert info.value.code == 12
    first.close()
    with pytest.raises(DeviceError, match="closed"):
        first.timebase_s()


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("configure_signal_conditioning", (1, SCOND_MISC, True, 3.5)),
        ("configure_signal_conditioning", (5, SCOND_MISC, True, 0.5)),
        ("configure_signal_conditioning", (1, 7, True, 0.5)),
        ("set_dead_time_ps", (1, -5)),
        ("set_buffer_size", (0,)),
        ("enable_channels", (1 << 5,)),
        ("set_channel_delays_ps", ([0, 0, 200_000, 0, 0],)),
    ],
)
def test_out_of_range_arguments_raise_the_library_message(tdc_mock, call, args):
    path, _ = tdc_mock
    with TdcBase(path) as tdc, pytest.raises(VendorLibraryError) as info:
        getattr(tdc, call)(*args)
    assert info.value.code == 10
    assert "Parameter in function call is out of range" in info.value.message


@pytest.mark.parametrize(
    ("code", "text"),
    [(-1, "Unspecified error"), (1, "Receive timed out"), (7, "already in use"),
     (9, "Invalid device number"), (14, "not available"), (99, "Unknown error code")],
)
def test_check_uses_tdc_perror(tdc_mock, code, text):
    path, _ = tdc_mock
    lib = ffi.dlopen(str(path))
    with pytest.raises(VendorLibraryError, match=text) as info:
        _check(lib, code, "TDC_x")
    assert info.value.code == code
    _check(lib, 0, "TDC_x")  # success raises nothing


def test_settings_read_back(tdc_mock):
    path, _ = tdc_mock
    with TdcBase(path) as tdc:
        assert tdc.timebase_s() == pytest.approx(1e-12)
        tdc.configure_signal_conditioning(2, SCOND_MISC, False, -0.25)
        assert tdc.signal_conditioning(2) == (False, -0.25)
        tdc.set_dead_time_ps(3, 40_000)
        assert tdc.dead_time_ps(3) == 40_000
        tdc.set_channel_delays_ps([0, 10, -20, 30, 0])
        assert tdc.channel_delays() == (0, 10, -20, 30, 0)  # timebase units of 1 ps
        tdc.enable_channels(0b11110)
        assert tdc.channels_enabled() == 0b11110
        tdc.set_buffer_size(1000)
        assert tdc.buffer_size() == 1000
        with pytest.raises(ValueError, match="need 5 channel delays"):
            tdc.set_channel_delays_ps([0, 0])


def test_reading_needs_a_buffer_size(tdc_mock):
    path, _ = tdc_mock
    with TdcBase(path) as tdc, pytest.raises(DeviceError, match="set_buffer_size"):
        tdc.last_timestamps()


def test_events_come_back_with_delays_dead_time_and_disabled_inputs_applied(tdc_mock):
    path, mock = tdc_mock
    with TdcBase(path) as tdc:
        tdc.set_buffer_size(100)
        tdc.enable_channels(0b01110)  # inputs 1..3
        tdc.set_dead_time_ps(2, 1000)
        tdc.set_channel_delays_ps([0, 0, 0, 500, 0])
        times = np.array([100, 200, 700, 900, 1100, 1300, 5000], dtype=np.int64)
        chans = np.array([1, 2, 2, 3, 4, 2, 1], dtype=np.int32)
        # input 4 is disabled; the second and third input-2 events fall in its dead time
        # after 200 (700 < 1200, 1100 is input 4); input 3 moves by 500 ps
        assert mock.push(times, chans) == 5
        t, c = tdc.last_timestamps(reset=False)
        assert t.tolist() == [100, 200, 1300, 1400, 5000]
        assert c.tolist() == [1, 2, 2, 3, 1]
        again, _ = tdc.last_timestamps(reset=True)
        assert again.tolist() == t.tolist()
        assert tdc.last_timestamps()[0].size == 0
        assert not tdc.data_lost()


def test_full_ring_overwrites_the_oldest_and_counts_them(tdc_mock):
    path, mock = tdc_mock
    with TdcBase(path) as tdc:
        tdc.set_buffer_size(10)
        tdc.enable_channels(0b00010)
        mock.push(np.arange(25, dtype=np.int64) * 10, np.ones(25, dtype=np.int32))
        t, _ = tdc.last_timestamps()
        assert t.tolist() == list(range(150, 250, 10))  # the last ten
        assert mock.lost_events() == 15
        assert not tdc.data_lost()  # the vendor library does not flag ring overwrites


def test_loss_reported_by_the_bench_latches_data_lost(tdc_mock):
    path, mock = tdc_mock
    with TdcBase(path) as tdc:
        tdc.set_buffer_size(10)
        tdc.enable_channels(0b00010)
        mock.push(np.array([5], dtype=np.int64), np.array([1], dtype=np.int32), lost=7)
        tdc.last_timestamps()
        assert tdc.data_lost()
        assert not tdc.data_lost()  # the latch clears on reading
        assert mock.lost_events() == 7


def test_nothing_is_recorded_while_no_input_is_enabled(tdc_mock):
    path, mock = tdc_mock
    with TdcBase(path) as tdc:
        tdc.set_buffer_size(10)
        assert mock.push(np.array([5], dtype=np.int64), np.array([1], dtype=np.int32)) == 0
        tdc.enable_channels(0b00010)
        assert tdc.last_timestamps()[0].size == 0


def test_push_refuses_channels_beyond_the_mock(tdc_mock):
    _, mock = tdc_mock
    with pytest.raises(ValueError, match=r"outside 0\.\.64"):
        mock.push(np.array([5], dtype=np.int64), np.array([65], dtype=np.int32))
