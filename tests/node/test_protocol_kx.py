"""Kx sans-IO: round trips, retries and timeouts, and an outcome for every bad frame."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.node.errors import LocalProtocolError, RemoteProtocolError
from qkdnode.node.km import SourceSlice, SupplyPlan
from qkdnode.node.protocol.kx import (
    NEED_DATA,
    Answered,
    Hello,
    KxConnection,
    LinkStateAdvertised,
    PoolAnswered,
    PoolOffered,
    RelayCompleted,
    RelayForwarded,
    RequestTimedOut,
    SupplyNotified,
)


def connected():
    a, b = KxConnection("A"), KxConnection("B")
    b.receive_data(a.hello())
    a.receive_data(b.hello())
    assert b.next_event() == Hello("A")
    assert a.next_event() == Hello("B")
    return a, b


names = st.text(min_size=1, max_size=6)
slices = st.builds(SourceSlice, st.uuids(), st.integers(0, 1000), st.integers(1, 64))
plans = st.builds(SupplyPlan, st.uuids(), names, st.lists(names, min_size=1, max_size=3)
                  .map(tuple), st.lists(slices, min_size=1, max_size=3).map(tuple))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_requests_round_trip(data):
    a, b = connected()
    kind = data.draw(st.sampled_from(["pool", "supply", "relay", "done", "lsa"]))
    req = a.next_request_id()
    if kind == "pool":
        event = PoolOffered(req, "A", tuple(data.draw(st.lists(st.uuids(), max_size=5))))
    elif kind == "supply":
        event = SupplyNotified(req, "A", "C", tuple(data.draw(st.lists(plans, max_size=3))))
    elif kind == "relay":
        plan = data.draw(plans)
        event = RelayForwarded(req, uuid.uuid4(), "A", "C", ("A", "B", "C"), plan,
                               data.draw(st.binary(min_size=plan.size_bytes,
                                                   max_size=plan.size_bytes)))
    elif kind == "done":
        event = RelayCompleted(req, uuid.uuid4(), "A", "C", data.draw(st.booleans()), "why",
                               tuple(data.draw(st.lists(st.uuids(), max_size=3))))
    else:
        event = LinkStateAdvertised("A", 3, (("B", 4096), ("C", 0)))
    b.receive_data(a.send_request(event, now=0.0))
    assert b.next_event() == event
    assert b.next_event() is NEED_DATA


def test_answers_clear_requests_and_late_duplicates_are_dropped():
    a, b = connected()
    req = a.next_request_id()
    b.receive_data(a.send_request(PoolOffered(req, "A", (uuid.uuid4(),)), 0.0))
    offer = b.next_event()
    assert a.outstanding == {req}
    held = PoolAnswered(req, offer.key_ids)
    a.receive_data(b.send_answer(held) + b.send_answer(held))
    assert a.next_event() == held
    assert a.next_event() is NEED_DATA     # the duplicate answer is dropped
    assert a.outstanding == frozenset()
    assert a.get_timer() is None


def test_unanswered_requests_are_resent_then_time_out():
    a, b = connected()
    a.max_attempts = 3
    req = a.next_request_id()
    first = a.send_request(RelayCompleted(req, uuid.uuid4(), "A", "C", True), now=0.0)
    assert a.get_timer() == 1.0
    assert a.handle_timer(0.5) == b""
    assert a.handle_timer(1.0) == first       # the same frame: the receiver is idempotent
    assert a.handle_timer(3.0) == first
    assert a.handle_timer(100.0) == b""
    assert a.next_event() == RequestTimedOut(req)
    b.receive_data(first * 2)
    assert b.next_event() == b.next_event()   # a resend is the same request again


def frame(kind, payload, magic=b"KX", version=1, length=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return struct.pack(">2sBBI", magic, version, kind, len(body) if length is None else length) \
        + body


PLAN = {"id": str(uuid.UUID(int=5)), "master": "m", "slaves": ["s"],
        "sources": [[str(uuid.UUID(int=6)), 0, 4]]}


@pytest.mark.parametrize(("data", "message"), [
    (frame(2, {}, magic=b"K1"), "not a Kx frame"),
    (frame(2, {}, version=2), "version 2"),
    (frame(2, b"", length=(16 << 20) + 1), "exceeds the limit"),
    (frame(2, b"[]"), "not a JSON object"),
    (frame(99, {}), "unknown frame kind 99"),
    (frame(1, {"node": "B"}), "Hello sent twice"),
    (frame(2, {"req": 1, "origin": "B", "ids": ["zz"]}), "not a UUID"),
    (frame(2, {"req": 1, "origin": "B", "ids": "x"}), "wrong type"),
    (frame(4, {"req": 1, "origin": "B", "destination": "A", "plans": [{**PLAN, "sources": []}]}),
     "malformed"),
    (frame(4, {"req": 1, "origin": "B", "destination": "A",
               "plans": [{**PLAN, "sources": [[str(uuid.UUID(int=6)), -1, 4]]}]}), "malformed"),
    (frame(5, {"req": 1, "relay": str(uuid.UUID(int=7)), "origin": "B", "destination": "C",
               "route": ["B", "A", "C"], "plan": PLAN, "ct": "AAA="}), "lengths differ"),
    (frame(5, {"req": 1, "relay": str(uuid.UUID(int=7)), "origin": "B", "destination": "C",
               "route": ["B"], "plan": PLAN, "ct": "AAAAAA=="}), "at least two nodes"),
    (frame(7, {"origin": "B", "seq": 1, "links": [["A", -5]]}), "malformed"),
    (frame(8, {"req": 77, "ok": True}), "never sent"),
    (frame(6, {"req": 1, "relay": str(uuid.UUID(int=7)), "origin": "B", "destination": "A",
               "ok": "yes"}), "wrong type"),
])
def test_bad_frames_close_the_connection(data, message):
    a, _ = connected()
    a.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=message):
        a.next_event()
    assert a.closed


def test_nothing_before_hello():
    a = KxConnection("A")
    a.receive_data(frame(7, {"origin": "B", "seq": 1, "links": []}))
    with pytest.raises(RemoteProtocolError, match="before Hello"):
        a.next_event()
    with pytest.raises(LocalProtocolError, match="Hello first"):
        KxConnection("A").send_answer(Answered(1, True))
    a, _ = connected()
    with pytest.raises(LocalProtocolError, match="not issued"):
        a.send_request(PoolOffered(55, "A", ()), 0.0)


def test_relay_repr_leaves_the_ciphertext_out():
    plan = SupplyPlan(uuid.uuid4(), "m", ("s",), (SourceSlice(uuid.uuid4(), 0, 4),))
    event = RelayForwarded(1, uuid.uuid4(), "A", "C", ("A", "C"), plan, b"\x01\x02\x03\x04")
    assert "\\x01" not in repr(event)
    assert "ciphertext" not in repr(event)
