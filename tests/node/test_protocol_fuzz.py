"""Fuzzing the Kq-1 and Kx frame parsers: any bytes give events or a RemoteProtocolError,
never another exception, and the parser never buffers past the frame limit."""

from __future__ import annotations

import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.node.errors import RemoteProtocolError
from qkdnode.node.protocol import kq1, kx

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)
FIELDS = ["seq", "keys", "id", "key", "req", "origin", "destination", "ids", "plans", "plan",
          "relay", "route", "ct", "ok", "links", "node", "module", "link", "pool", "status",
          "new", "code", "reason", "master", "slaves", "sources"]
payloads = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)


def frames(magic):
    return st.builds(lambda kind, body: struct.pack(">2sBBI", magic, 1, kind, len(body)) + body,
                     st.integers(0, 12), payloads.map(lambda p: json.dumps(p).encode()))


def drain(conn, data):
    try:
        conn.receive_data(data)
        for _ in range(100):
            if conn.next_event() is kq1.NEED_DATA or conn.closed:
                break
    except RemoteProtocolError:
        assert conn.closed


@settings(max_examples=120, deadline=None)
@given(chunks=st.lists(frames(b"K1") | st.binary(max_size=40), max_size=6))
def test_kq1_parser_survives_anything(chunks):
    for role in (kq1.Role.KM, kq1.Role.MODULE):
        conn = kq1.Kq1Connection(role)
        hello = kq1.Kq1Connection(kq1.Role.MODULE).send(kq1.ModuleAnnounced("m", "l", "p"))
        if role is kq1.Role.KM:
            drain(conn, hello)
        for chunk in chunks:
            if conn.closed:
                break
            drain(conn, chunk)


@settings(max_examples=120, deadline=None)
@given(chunks=st.lists(frames(b"KX") | st.binary(max_size=40), max_size=6))
def test_kx_parser_survives_anything(chunks):
    conn = kx.KxConnection("A")
    conn.hello()
    conn.receive_data(kx.KxConnection("B").hello())
    conn.next_event()
    for chunk in chunks:
        if conn.closed:
            break
        try:
            conn.receive_data(chunk)
            while conn.next_event() is not kx.NEED_DATA:
                pass
        except RemoteProtocolError:
            assert conn.closed
