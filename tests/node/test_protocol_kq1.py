"""Kq-1/Kq-2 sans-IO: two ends wired in memory; every kind of bad frame has its outcome."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.node.errors import LocalProtocolError, RemoteProtocolError
from qkdnode.node.km import LinkKey
from qkdnode.node.protocol import kq1
from qkdnode.node.protocol.kq1 import (
    NEED_DATA,
    KeysPushed,
    KeysRefused,
    KeysStored,
    KmWelcomed,
    Kq1Connection,
    ModuleAnnounced,
    Role,
    StartRequested,
    StatusReported,
    StatusRequested,
    StopRequested,
)


def deliver(src, dst, event):
    dst.receive_data(src.send(event))
    got = dst.next_event()
    assert dst.next_event() is NEED_DATA
    return got


def pair():
    module, km = Kq1Connection(Role.MODULE), Kq1Connection(Role.KM)
    deliver(module, km, ModuleAnnounced("mod-1", "A-B", "B"))
    deliver(km, module, KmWelcomed("A"))
    return module, km


keys_st = st.lists(st.builds(
    LinkKey, key_id=st.uuids(), material=st.binary(min_size=1, max_size=64),
    link=st.text(max_size=8), block=st.integers(0, 2**40), index=st.integers(0, 10**6),
    qber=st.none() | st.floats(0, 0.5), created_at=st.floats(0, 2e9)), min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(keys=keys_st)
def test_pushed_keys_arrive_exactly(keys):
    module, km = pair()
    got = deliver(module, km, KeysPushed(1, tuple(keys)))
    assert got == KeysPushed(1, tuple(keys))
    assert km.unacknowledged == {1}
    assert deliver(km, module, KeysStored(1, len(keys))) == KeysStored(1, len(keys))
    assert module.unacknowledged == frozenset()


def test_control_and_status_round_trip_and_the_announcement_is_kept():
    module, km = pair()
    assert km.announcement == ModuleAnnounced("mod-1", "A-B", "B")
    assert deliver(km, module, StartRequested()) == StartRequested()
    assert deliver(km, module, StatusRequested(7)) == StatusRequested(7)
    report = StatusReported(7, {"sync": "locked", "qber": 0.021, "blocks": 3, "note": None})
    assert deliver(module, km, report) == report
    assert deliver(module, km, StatusReported(0, {"sync": "lost"})).status == {"sync": "lost"}
    assert deliver(km, module, StopRequested()) == StopRequested()
    key = LinkKey(uuid.uuid4(), b"k" * 32)
    deliver(module, km, KeysPushed(5, (key,)))
    assert deliver(km, module, KeysRefused(5, "store_full", "pool full")).code == "store_full"


def test_key_bytes_never_appear_in_reprs():
    key = LinkKey(uuid.uuid4(), bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(KeysPushed(1, (key,)))
    assert "material" not in repr(KeysPushed(1, (key,)))


def frame(kind, payload, magic=b"K1", version=1, length=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return struct.pack(">2sBBI", magic, version, kind, len(body) if length is None else length) \
        + body


GOOD_KEY = {"id": str(uuid.UUID(int=1)), "key": "AAAA"}


@pytest.mark.parametrize(("data", "message"), [
    (frame(3, {"seq": 1, "keys": [GOOD_KEY]}, magic=b"HT"), "not a Kq-1 frame"),
    (frame(3, {"seq": 1, "keys": [GOOD_KEY]}, version=9), "version 9"),
    (frame(3, b"", length=kq1.MAX_PAYLOAD + 1), "exceeds the limit"),
    (frame(3, b"\xff\xfe"), "not JSON"),
    (frame(3, [1, 2]), "not a JSON object"),
    (frame(42, {}), "unknown frame kind 42"),
    (frame(3, {"keys": [GOOD_KEY]}), "'seq' is missing"),
    (frame(3, {"seq": "1", "keys": [GOOD_KEY]}), "'seq' has the wrong type"),
    (frame(3, {"seq": True, "keys": [GOOD_KEY]}), "'seq' has the wrong type"),
    (frame(3, {"seq": 1, "keys": []}), "0 keys in one push"),
    (frame(3, {"seq": 1, "keys": [{"id": "nope", "key": "AAAA"}]}), "not a UUID"),
    (frame(3, {"seq": 1, "keys": [{**GOOD_KEY, "key": "!!"}]}), "not valid base64"),
    (frame(3, {"seq": 1, "keys": [{**GOOD_KEY, "key": ""}]}), "has 0 bytes"),
    (frame(3, {"seq": 1, "keys": [{**GOOD_KEY, "qber": 0.9}]}), "invalid qber"),
    (frame(3, {"seq": 1, "keys": [7]}), "not an object"),
    (frame(9, {"seq": 0, "status": {"x": [1]}}), "status values"),
    (frame(9, {"seq": 4, "status": {}}), "answers no request"),
    (frame(1, {"module": "m", "link": "l", "pool": "p"}), "sent twice"),
    (frame(2, {"node": "A"}), "cannot send KmWelcomed"),
])
def test_bad_frames_from_the_module_close_the_connection(data, message):
    _, km = pair()
    km.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=message):
        km.next_event()
    assert km.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        km.next_event()


def test_frames_before_the_announcement_and_replays_are_refused():
    km = Kq1Connection(Role.KM)
    km.receive_data(frame(3, {"seq": 1, "keys": [GOOD_KEY]}))
    with pytest.raises(RemoteProtocolError, match="before ModuleAnnounced"):
        km.next_event()
    module, km = pair()
    push = module.send(KeysPushed(2, (LinkKey(uuid.uuid4(), b"x"),)))
    km.receive_data(push)
    km.next_event()
    km.receive_data(push)  # the same frame again
    with pytest.raises(RemoteProtocolError, match="replayed or reordered"):
        km.next_event()


def test_answers_to_unknown_pushes_are_refused_at_both_ends():
    module, km = pair()
    with pytest.raises(LocalProtocolError, match="not awaiting"):
        km.send(KeysStored(3, 1))
    module.receive_data(frame(4, {"seq": 3, "new": 1}))
    with pytest.raises(RemoteProtocolError, match="not awaiting"):
        module.next_event()


def test_local_misuse_is_a_local_error():
    module = Kq1Connection(Role.MODULE)
    with pytest.raises(LocalProtocolError, match="before ModuleAnnounced"):
        module.send(KeysPushed(1, (LinkKey(uuid.uuid4(), b"x"),)))
    with pytest.raises(LocalProtocolError, match="cannot send"):
        module.send(KmWelcomed("A"))
    module, _ = pair()
    module.send(KeysPushed(4, (LinkKey(uuid.uuid4(), b"x"),)))
    with pytest.raises(LocalProtocolError, match="must increase"):
        module.send(KeysPushed(4, (LinkKey(uuid.uuid4(), b"x"),)))
    with pytest.raises(LocalProtocolError, match="keys per push"):
        module.send(KeysPushed(5, ()))


def test_frames_split_anywhere_reassemble():
    module, km = pair()
    data = module.send(KeysPushed(1, (LinkKey(uuid.uuid4(), b"y" * 40),)))
    for i in range(len(data) - 1):
        km.receive_data(data[i:i + 1])
        assert km.next_event() is NEED_DATA
    km.receive_data(data[-1:])
    assert isinstance(km.next_event(), KeysPushed)
