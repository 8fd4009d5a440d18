"""The key store's relay steps: one transaction per node and relay, all or nothing where nothing
was consumed at the other end, and the incoming hop's bytes consumed whenever the previous
hop consumed them."""

from __future__ import annotations

import uuid

import pytest

from qkdnode.node.errors import KeyConflict, KeyNotFound, KeyPoolDepleted
from qkdnode.node.km import KeyState, LinkKey, SqliteKeyStore

NOW = 1_800_000_000.0


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def shared(stores, a, b, n, seed):
    """``n`` active 32-byte link keys shared by nodes ``a`` and ``b``."""
    rng = __import__("random").Random(seed)
    keys = [LinkKey(uuid.UUID(int=rng.getrandbits(128)), rng.randbytes(32), link=f"{a}-{b}")
            for _ in range(n)]
    stores[a].add_link_keys(b, keys, NOW, active=True)
    stores[b].add_link_keys(a, keys, NOW, active=True)


@pytest.fixture
def line(tmp_path):
    """Stores of A-B-C-D with two link keys on each link."""
    stores = {n: SqliteKeyStore(tmp_path / f"{n}.sqlite") for n in "ABCD"}
    for seed, (a, b) in enumerate([("A", "B"), ("B", "C"), ("C", "D")]):
        shared(stores, a, b, 2, seed)
    yield stores
    for s in stores.values():
        s.close()


def available(store, pool):
    return store.levels()[pool].available_bytes


def test_a_relay_across_three_hops_gives_the_destination_the_key(line):
    a, b, c, d = (line[n] for n in "ABCD")
    relay_id = uuid.uuid4()
    key = bytes(range(40))  # spans two link keys on every hop
    plan, pad = a.relay_begin("D", LinkKey(relay_id, key, link="relay:A-B-C-D"), "B", NOW,
                              confirm_within_s=60)
    assert a.link_key_state(relay_id) is KeyState.PRE_ACTIVATION
    assert len(plan.sources) == 2
    assert plan.size_bytes == len(key) == len(pad)
    first_hop = plan
    wire = xor(key, pad)
    for node, prev, nxt in ((b, "A", "C"), (c, "B", "D")):
        pad_in, out = node.relay_forward(prev, plan, nxt, NOW)
        assert pad_in == pad   # the same bytes at both ends of the hop
        assert not isinstance(out, Exception)
        plan, pad = out
        wire = xor(xor(wire, pad_in), pad)
    refused = d.relay_end("C", plan, "A", lambda p: LinkKey(relay_id, xor(wire, p)), NOW)
    assert refused is None
    assert d.link_key_state(relay_id) is KeyState.ACTIVE
    assert d.levels()["A"].available_bytes == len(key)
    # every hop's 40 bytes are used at both of its ends, and only once
    for s, pools in ((a, "B"), (b, "AC"), (c, "BD"), (d, "C")):
        for pool in pools:
            assert available(s, pool) == 64 - 40
    with pytest.raises(KeyConflict):   # a replayed hop never uses its bytes again
        b.relay_forward("A", first_hop, "C", NOW)
    assert available(b, "C") == 64 - 40


def test_the_origin_stores_nothing_when_the_first_hop_lacks_key(line):
    relay_id = uuid.uuid4()
    with pytest.raises(KeyPoolDepleted):
        line["A"].relay_begin("D", LinkKey(relay_id, bytes(65)), "B", NOW, confirm_within_s=60)
    with pytest.raises(KeyNotFound):
        line["A"].link_key_state(relay_id)
    assert available(line["A"], "B") == 64


def test_an_intermediate_consumes_the_incoming_pad_even_when_the_next_hop_lacks_key(line):
    a, b = line["A"], line["B"]
    plan, _ = a.relay_begin("D", LinkKey(uuid.uuid4(), bytes(32)), "B", NOW,
                            confirm_within_s=60)
    line["B"].take_pad("C", 40, NOW)   # B-C keeps 24 bytes: too few for the next hop
    _, out = b.relay_forward("A", plan, "C", NOW)
    assert isinstance(out, KeyPoolDepleted)
    assert available(b, "A") == available(a, "B") == 32   # the ends of A-B agree
    assert available(b, "C") == 24                         # the next hop took nothing
    with pytest.raises(KeyConflict):                       # and the bytes are never reused
        b.relay_forward("A", plan, "C", NOW)


def test_used_incoming_bytes_change_nothing(line):
    a, b = line["A"], line["B"]
    plan, _ = a.relay_begin("D", LinkKey(uuid.uuid4(), bytes(16)), "B", NOW,
                            confirm_within_s=60)
    b.take_pad_as("A", plan, NOW)
    with pytest.raises(KeyConflict):
        b.relay_forward("A", plan, "C", NOW)
    assert available(b, "C") == 64


def test_the_destination_consumes_the_pad_even_when_it_cannot_keep_the_key(line):
    c, d = line["C"], line["D"]
    taken = uuid.uuid4()
    d.add_link_keys("A", [LinkKey(taken, bytes(16))], NOW, active=True)
    plan, _ = c.take_pad("D", 16, NOW)
    refused = d.relay_end("C", plan, "A", lambda p: LinkKey(taken, p), NOW)
    assert isinstance(refused, KeyConflict)   # that ID holds other bytes
    assert available(d, "C") == available(c, "D") == 48
    assert d.levels()["A"].available_bytes == 16
