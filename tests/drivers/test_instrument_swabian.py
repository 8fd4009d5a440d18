"""The Swabian Time Tagger driver against a stand-in for the vendor SDK module ``TimeTagger``.

The SDK is not on PyPI, so the stand-in is injected into ``sys.modules``: it is the transport
boundary (the driver's only contact with the device). Its stream serves the simulated bench's
tags, plus the SDK's loss entries (MissedEvents, OverflowBegin/End) where a test asks for them.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from qkdnode.drivers.errors import TransportError
from qkdnode.drivers.instruments.swabian import timetagger as swabian
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import TimeTagger
from qkdnode.drivers.sim import BenchParams, SimulatedLink

SLICE_PS = 10**9


def _link(seed: int) -> SimulatedLink:
    link = SimulatedLink(BenchParams(), seed)
    rng = np.random.default_rng(seed + 1)
    n = 1024
    link.load_frame(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
                    rng.integers(0, 3, n, dtype=np.uint8))
    return link


class _Buffer:
    """What TimeTagStream.getData() returns (camelCase: the SDK's names)."""

    def __init__(self, t, ch, types_, missed, overflowed):
        self._data = (t, ch, types_, missed)
        self._overflowed = overflowed

    def getTimestamps(self):
        return self._data[0]

    def getChannels(self):
        return self._data[1]

    def getEventTypes(self):
        return self._data[2]

    def getMissedEvents(self):
        return self._data[3]

    def hasOverflows(self):
        return self._overflowed


class _Tagger:
    def __init__(self, serial, link):
        self.serial = serial
        self.link = link
        self.calls = []
        self.dead = {}
        self.freed = False

    def setTriggerLevel(self, ch, v):
        self.calls.append(("setTriggerLevel", ch, v))

    def setInputDelay(self, ch, d):
        self.calls.append(("setInputDelay", ch, d))

    def setDeadtime(self, ch, d):
        self.dead[ch] = d // 2000 * 2000  # the device rounds to its 2 ns clock
        return self.dead[ch]

    def getDeadtime(self, ch):
        return self.dead.get(ch, 0)


class _Stream:
    def __init__(self, tagger, n_max_events, channels):
        self.tagger, self.n_max, self.channels = tagger, n_max_events, channels
        self.running = True
        self.extra = None  # (types, missed) entries appended to the next buffer

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def clear(self):
        pass

    def getData(self):
        batch = self.tagger.link.run(duration_ps=SLICE_PS)
        keep = np.isin(batch.channels, self.channels)
        t = batch.timestamps_ps[keep][: self.n_max]
        ch = batch.channels[keep][: self.n_max].astype(np.int32)
        types_ = np.zeros(t.shape[0], np.uint8)
        missed = np.zeros(t.shape[0], np.uint16)
        overflowed = False
        if self.extra is not None:
            extra_types, extra_missed = self.extra
            self.extra = None
            t = np.concatenate([t, np.full(len(extra_types), t[-1], np.int64)])
            ch = np.concatenate([ch, np.ones(len(extra_types), np.int32)])
            types_ = np.concatenate([types_, np.array(extra_types, np.uint8)])
            missed = np.concatenate([missed, np.array(extra_missed, np.uint16)])
            overflowed = 2 in extra_types
        return _Buffer(t, ch, types_, missed, overflowed)


@pytest.fixture
def sdk(monkeypatch):
    module = types.ModuleType("TimeTagger")
    module.created = []

    def create(serial=""):
        tagger = _Tagger(serial, _link(4))
        module.created.append(tagger)
        return tagger

    def free(tagger):
        tagger.freed = True

    streams = []

    def stream(tagger, n, channels):
        s = _Stream(tagger, n, channels)
        streams.append(s)
        return s

    module.createTimeTagger = create
    module.freeTimeTagger = free
    module.TimeTagStream = stream
    module.streams = streams
    monkeypatch.setitem(sys.modules, "TimeTagger", module)
    return module


def test_absent_sdk_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "TimeTagger", None)  # makes the import fail
    with pytest.raises(TransportError, match="not installed: it ships with Swabian"):
        swabian.build("lib://TimeTagger", {})


def test_build_applies_settings_and_streams_the_benchs_tags(sdk):
    tagger = swabian.build("lib://TimeTagger?serial=1234ABC",
                           {"channels": [1, 2, -3], "threshold_v": 0.5,
                            "dead_time_ps": {"1": 5000}, "delay_ps": {"2": -100}})
    assert isinstance(tagger, TimeTagger)
    device = sdk.created[0]
    assert device.serial == "1234ABC"
    assert ("setTriggerLevel", -3, 0.5) in device.calls
    assert ("setInputDelay", 2, -100) in device.calls
    assert tagger.dead_time_ps(1) == 4000  # what the device made of 5000 ps
    tagger.start()
    read = tagger.read()
    batch = _link(4).run(duration_ps=SLICE_PS)
    keep = np.isin(batch.channels, [1, 2, -3])
    np.testing.assert_array_equal(read.timestamps_ps, batch.timestamps_ps[keep])
    assert read.complete
    tagger.close()
    assert device.freed


def test_missed_events_and_overflows_are_reported(sdk):
    with swabian.build("lib://TimeTagger", {}) as tagger:
        tagger.start()
        sdk.streams[0].extra = ([4, 4, 2, 3], [12, 30, 0, 0])
        read = tagger.read()
        assert read.lost_events == 42
        assert read.overflows == 1
        assert set(read.channels.tolist()) <= {1, 2, 3, 4}  # loss entries are not tags
        sdk.streams[0].extra = ([1], [0])
        assert tagger.read().overflows == 1  # an error entry
        assert tagger.read().complete


def test_a_full_stream_buffer_is_an_overflow(sdk):
    with swabian.build("lib://TimeTagger", {"buffer_events": 10}) as tagger:
        tagger.start()
        read = tagger.read()
    assert read.timestamps_ps.size == 10
    assert read.overflows == 1


@pytest.mark.parametrize(
    ("resource", "message"),
    [("sim://bench/tagger", "no simulated counterpart"),
     ("lib:///opt/swabian/lib.so", "through its Python SDK"),
     ("lib://TimeTagger?device=1", "by serial=")],
)
def test_resources_it_cannot_use(sdk, resource, message):
    with pytest.raises(ValueError, match=message):
        swabian.build(resource, {})


def test_bad_channel_frees_the_device(sdk):
    with pytest.raises(ValueError, match="channel 40 is not an input"):
        swabian.build("lib://TimeTagger", {"channels": [40]})
    assert sdk.created[0].freed


def test_registry_opens_it(sdk):
    tagger = open_instrument("tagger", "time_tagger", "swabian.timetagger", "lib://TimeTagger",
                             1.0, {"channels": [1, 2]})
    tagger.close()
    assert sdk.created[0].freed
