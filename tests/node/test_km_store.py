"""The key store: exactly-once supply, all-or-nothing changes, durable commits, no key bytes
left in the files after destruction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qkdnode.node.errors import (
    KeyConflict,
    KeyManagerError,
    KeyNotFound,
    KeyPoolDepleted,
    KeyStoreFull,
    NotAuthorized,
)
from qkdnode.node.km import KeyState, LinkKey, SqliteKeyStore, SupplyState
from qkdnode.node.km.records import SourceSlice, SupplyPlan

NOW = 1_800_000_000.0


def link_keys(n, size=32, block=0, seed=0):
    rng = __import__("random").Random(seed)
    return [LinkKey(uuid.UUID(int=rng.getrandbits(128)), rng.randbytes(size), link="L",
                    block=block, index=i, qber=0.02, created_at=NOW) for i in range(n)]


@pytest.fixture
def pair(tmp_path):
    """Two nodes' stores holding the same link keys (pool = the other node)."""
    a = SqliteKeyStore(tmp_path / "a.sqlite")
    b = SqliteKeyStore(tmp_path / "b.sqlite")
    keys = link_keys(8)
    a.add_link_keys("B", keys, NOW)
    b.add_link_keys("A", keys, NOW)
    a.activate("B", [k.key_id for k in keys], NOW)
    b.activate("A", [k.key_id for k in keys], NOW)
    yield a, b, keys
    a.close()
    b.close()


def test_master_and_slave_get_the_same_key_once(pair):
    a, b, keys = pair
    plans = a.make_supply("B", "sae1", ["sae2"], count=3, size_bytes=16,
                          local_recipients=["sae1"], now=NOW)
    b.reserve("A", plans, local_recipients=["sae2"], now=NOW)
    ids = [p.key_id for p in plans]
    got_a = a.deliver(ids, "sae1", NOW)
    got_b = b.deliver(ids, "sae2", NOW)
    assert [k.material for k in got_a] == [k.material for k in got_b]
    # the first key is the first 16 bytes of the oldest link key, the third the next key's start
    assert got_a[0].material == keys[0].material[:16]
    assert got_a[2].material == keys[1].material[:16]
    with pytest.raises(KeyNotFound, match="already delivered"):
        a.deliver(ids[:1], "sae1", NOW)
    assert a.supply_state(ids[0]) == (KeyState.DESTROYED, SupplyState.DELIVERED)
    assert b.supply_recipients(ids[0]) == ("sae1", ("sae2",))


def test_key_material_stays_out_of_reprs_and_messages(pair):
    a, _, keys = pair
    assert keys[0].material.hex() not in repr(keys[0])
    plans = a.make_supply("B", "m", ["s"], 1, 32, ["m"], NOW)
    (key,) = a.deliver([plans[0].key_id], "m", NOW)
    assert key.material.hex() not in repr(key)
    with pytest.raises(KeyManagerError) as info:
        a.deliver([plans[0].key_id], "m", NOW)
    assert key.material.hex() not in str(info.value)


def test_sizes_other_than_the_chunk_size_combine_and_split(pair):
    a, b, keys = pair
    plans = a.make_supply("B", "m", ["s"], count=2, size_bytes=48, local_recipients=["m"],
                          now=NOW)
    b.reserve("A", plans, ["s"], NOW)
    k1, k2 = a.deliver([p.key_id for p in plans], "m", NOW)
    assert k1.material == keys[0].material + keys[1].material[:16]
    assert k2.material == keys[1].material[16:] + keys[2].material
    # link keys used up are destroyed; the level counts what is left
    assert a.link_key_state(keys[0].key_id) is KeyState.DESTROYED
    assert a.levels()["B"].available_bytes == 8 * 32 - 96
    assert a.levels()["B"].reserved_keys == 0
    assert b.levels()["A"].reserved_keys == 2


def test_local_master_and_slave_each_get_it_once_then_it_is_destroyed(pair):
    a, _, _ = pair
    (plan,) = a.make_supply("B", "m", ["s1", "s2"], 1, 32, ["m", "s1", "s2"], NOW)
    a.deliver([plan.key_id], "m", NOW)
    assert a.supply_state(plan.key_id) == (KeyState.ACTIVE, SupplyState.DELIVERING)
    a.deliver([plan.key_id], "s2", NOW)
    with pytest.raises(NotAuthorized):
        a.deliver([plan.key_id], "intruder", NOW)
    a.deliver([plan.key_id], "s1", NOW)
    assert a.supply_state(plan.key_id)[0] is KeyState.DESTROYED
    with pytest.raises(KeyNotFound):
        a.deliver([plan.key_id], "s1", NOW)


def test_deliver_checks_the_master_named_by_the_slave_before_anything_else(pair):
    a, b, _ = pair
    plans = a.make_supply("B", "m", ["s"], 2, 32, ["m"], NOW)
    b.reserve("A", plans, ["s"], NOW)
    ids = [p.key_id for p in plans]
    with pytest.raises(NotAuthorized, match="not requested by 'other'"):
        b.deliver([uuid.uuid4(), *ids], "s", NOW, master="other")
    assert b.supply_state(ids[0]) == (KeyState.ACTIVE, SupplyState.RESERVED)
    with pytest.raises(KeyNotFound):   # an unknown ID, the right master: not found
        b.deliver([uuid.uuid4(), *ids], "s", NOW, master="m")
    got = b.deliver(ids, "s", NOW, master="m")
    assert [k.key_id for k in got] == ids


def test_supply_key_ids_are_version_7_uuids_that_grow_with_time(pair):
    a, _, _ = pair
    first = a.make_supply("B", "m", ["s"], 3, 8, ["m"], NOW)
    later = a.make_supply("B", "m", ["s"], 3, 8, ["m"], NOW + 0.002)
    ids = [p.key_id for p in first + later]
    assert all(k.version == 7 and k.variant == uuid.RFC_4122 for k in ids)
    assert len(set(ids)) == len(ids)
    assert all(k.int >> 80 == int(NOW * 1000) for k in ids[:3])
    assert max(str(k) for k in ids[:3]) < min(str(k) for k in ids[3:])


def test_a_request_is_all_or_nothing(pair):
    a, _, _ = pair
    plans = a.make_supply("B", "m", ["s"], 2, 32, ["m"], NOW)
    with pytest.raises(KeyNotFound):
        a.deliver([plans[0].key_id, uuid.uuid4()], "m", NOW)
    # the first key was not delivered by the failed request
    assert len(a.deliver([plans[0].key_id], "m", NOW)) == 1
    with pytest.raises(KeyNotFound, match="twice"):
        a.deliver([plans[1].key_id, plans[1].key_id], "m", NOW)


def test_depleted_pool_changes_nothing(pair):
    a, _, _ = pair
    before = a.levels()["B"]
    with pytest.raises(KeyPoolDepleted, match="2048 bits of available key; the request needs"):
        a.make_supply("B", "m", ["s"], 9, 32, ["m"], NOW)
    assert a.levels()["B"] == before
    with pytest.raises(KeyPoolDepleted):
        a.make_supply("nobody", "m", ["s"], 1, 32, ["m"], NOW)


def test_pre_activation_keys_are_not_supplied(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite") as s:
        keys = link_keys(2)
        s.add_link_keys("B", keys, NOW)
        assert s.levels()["B"].pre_activation_keys == 2
        with pytest.raises(KeyPoolDepleted):
            s.make_supply("B", "m", ["s"], 1, 32, ["m"], NOW)
        assert s.activate("B", [keys[0].key_id], NOW) == 1
        assert s.activate("B", [keys[0].key_id], NOW) == 0  # idempotent
        assert s.link_key_ids("B", KeyState.ACTIVE) == [keys[0].key_id]
        assert s.link_key_ids("B", KeyState.PRE_ACTIVATION) == [keys[1].key_id]
        with pytest.raises(KeyNotFound):
            s.activate("other-pool", [keys[1].key_id], NOW)


def test_capacity_refuses_the_whole_push(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite", max_key_count=5) as s:
        s.add_link_keys("B", link_keys(3, seed=1), NOW)
        with pytest.raises(KeyStoreFull, match="holds 3 keys; 3 more would exceed"):
            s.add_link_keys("B", link_keys(3, seed=2), NOW)
        assert s.levels()["B"].pre_activation_keys == 3
        assert s.add_link_keys("C", link_keys(5, seed=3), NOW) == 5  # per pool


def test_retransmissions_are_acknowledged_and_conflicts_refused(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite") as s:
        keys = link_keys(3)
        assert s.add_link_keys("B", keys, NOW) == 3
        assert s.add_link_keys("B", keys, NOW) == 0
        forged = LinkKey(keys[0].key_id, bytes(32))
        with pytest.raises(KeyConflict, match="different content"):
            s.add_link_keys("B", [forged, *link_keys(1, seed=9)], NOW)
        assert len(s.link_key_ids("B", KeyState.PRE_ACTIVATION)) == 3
        with pytest.raises(KeyConflict, match="twice"):
            s.add_link_keys("B", [keys[0], keys[0]], NOW)
        # a destroyed key's ID never comes back
        s.destroy([keys[1].key_id], NOW)
        assert s.add_link_keys("B", [keys[1]], NOW) == 0
        assert s.link_key_state(keys[1].key_id) is KeyState.DESTROYED


def test_reserve_is_idempotent_and_refuses_reuse(pair):
    a, b, _ = pair
    plans = a.make_supply("B", "m", ["s"], 2, 16, ["m"], NOW)
    b.reserve("A", plans, ["s"], NOW)
    b.reserve("A", plans, ["s"], NOW)  # a retransmitted notification changes nothing
    assert b.levels()["A"].reserved_keys == 2
    reused = type(plans[0])(uuid.uuid4(), "m", ("s",), plans[0].sources)
    with pytest.raises(KeyConflict, match="already used"):
        b.reserve("A", [reused], ["s"], NOW)
    overlap = type(plans[0])(uuid.uuid4(), "m", ("s",), (type(plans[0].sources[0])(
        plans[0].sources[0].key_id, 8, 16),))
    with pytest.raises(KeyConflict, match="already used"):
        b.reserve("A", [overlap], ["s"], NOW)
    changed = type(plans[0])(plans[0].key_id, "m", ("other",), plans[0].sources)
    with pytest.raises(KeyConflict, match="different plan"):
        b.reserve("A", [changed], ["s"], NOW)


def test_destroy_compromise_and_expiry(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite", key_lifetime_s=100,
                        reservation_lifetime_s=10) as s:
        keys = link_keys(4)
        s.add_link_keys("B", keys, NOW, active=True)
        (plan,) = s.make_supply("B", "m", ["s"], 1, 8, ["m"], NOW)
        assert s.expire(NOW + 5) == 0
        assert s.expire(NOW + 11) == 1  # the uncollected reservation
        with pytest.raises(KeyNotFound):
            s.deliver([plan.key_id], "m", NOW + 12)
        assert s.destroy([keys[1].key_id], NOW, compromised=True) == 1
        assert s.link_key_state(keys[1].key_id) is KeyState.COMPROMISED
        assert s.destroy([keys[1].key_id, uuid.uuid4()], NOW) == 0
        assert s.expire(NOW + 101) == 3
        assert s.levels()["B"].available_keys == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_key_count"):
        SqliteKeyStore(tmp_path / "k.sqlite", max_key_count=0)
    with pytest.raises(ValueError, match="material"):
        LinkKey(uuid.uuid4(), b"")
    with pytest.raises(TypeError, match="uuid"):
        LinkKey("not-a-uuid", b"x")  # type: ignore[arg-type]
    s = SqliteKeyStore(tmp_path / "k.sqlite")
    with pytest.raises(ValueError, match=">= 1"):
        s.make_supply("B", "m", ["s"], 0, 32, ["m"], NOW)
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.levels()


def _files(path):
    names = (path.name, path.name + "-wal", path.name + "-shm")
    return [path.with_name(n) for n in names if path.with_name(n).exists()]


def _found(path, material):
    return any(material in p.read_bytes() for p in _files(path))


def test_destroyed_key_bytes_are_not_in_the_database_files(tmp_path):
    path = tmp_path / "k.sqlite"
    s = SqliteKeyStore(path)
    keys = link_keys(6, size=32, seed=5)
    s.add_link_keys("B", keys, NOW, active=True)
    # the test can see live key bytes in the files (so their absence later means something)
    assert all(_found(path, k.material) for k in keys)
    plans = s.make_supply("B", "m", ["s"], 2, 48, ["m"], NOW)   # uses keys 0, 1, 2
    s.deliver([p.key_id for p in plans], "m", NOW)
    s.destroy([keys[3].key_id], NOW)
    (half,) = s.make_supply("B", "m", ["s"], 1, 16, ["m"], NOW)  # first half of key 4
    s.deliver([half.key_id], "m", NOW)
    for k in keys[:4]:
        assert not _found(path, k.material), "a destroyed link key's bytes are still on disk"
    assert not _found(path, keys[4].material[:16])
    assert _found(path, keys[4].material[16:])  # the unused half is still there
    assert _found(path, keys[5].material)
    s.close()
    assert not path.with_name(path.name + "-wal").exists() or \
        path.with_name(path.name + "-wal").stat().st_size == 0


_CHILD = textwrap.dedent("""
    import sys, uuid, random
    from qkdnode.node.km import SqliteKeyStore, LinkKey
    s = SqliteKeyStore(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    mode = sys.argv[3]
    if mode == "add":
        for i in range(100000):
            key = LinkKey(uuid.UUID(int=rng.getrandbits(128)), rng.randbytes(32), index=i)
            s.add_link_keys("B", [key], 0.0, active=True)
            print(key.key_id, flush=True)
    else:
        while True:
            plans = s.make_supply("B", "m", ["s"], 1, 32, ["m"], 0.0)
            (key,) = s.deliver([plans[0].key_id], "m", 0.0)
            print(key.key_id, key.material.hex(), flush=True)
""")


def _run_and_kill(args, lines_wanted):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE,
                            text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.split())
        if len(lines) >= lines_wanted:
            break
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledged before the kill landed
    lines += [ln.split() for ln in rest.splitlines() if ln.strip()]
    proc.wait()
    return lines


@pytest.mark.parametrize("trial", range(2))
def test_kill_9_loses_no_acknowledged_key_and_delivers_none_twice(tmp_path, trial):
    path = tmp_path / "k.sqlite"
    acked = _run_and_kill([str(path), str(trial), "add"], 40 + 17 * trial)
    with SqliteKeyStore(path) as s:
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        active = {str(k) for k in s.link_key_ids("B", KeyState.ACTIVE)}
        assert {a[0] for a in acked} <= active
        n_active = len(active)
    delivered = _run_and_kill([str(path), "0", "deliver"], min(20, n_active - 5))
    with SqliteKeyStore(path) as s:
        for key_id, _ in delivered:
            assert s.supply_state(uuid.UUID(key_id))[0] is KeyState.DESTROYED
            with pytest.raises(KeyNotFound):
                s.deliver([uuid.UUID(key_id)], "m", 0.0)
        # no link-key byte was handed out twice: each delivered key is distinct
        assert len({m for _, m in delivered}) == len(delivered)


class StoreMachine(RuleBasedStateMachine):
    """Random interleavings of pushes, activations, supplies, deliveries and destruction on two
    stores: the slave always computes the master's bytes, no link-key byte is used twice, and the
    levels match a model."""

    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.TemporaryDirectory()
        self.a = SqliteKeyStore(f"{self.dir.name}/a.sqlite")
        self.b = SqliteKeyStore(f"{self.dir.name}/b.sqlite")
        self.bytes_left = {}      # link key id -> unused bytes (model)
        self.pending = []         # supply key ids not yet delivered to the master
        self.seen = []            # every supplied byte string with its (link key, offset)
        self.counter = 0

    @rule(n=st.integers(1, 3), size=st.sampled_from([8, 24, 32]))
    def push(self, n, size):
        keys = link_keys(n, size=size, seed=self.counter)
        self.counter += 1
        self.a.add_link_keys("B", keys, NOW)
        self.b.add_link_keys("A", keys, NOW)
        ids = [k.key_id for k in keys]
        self.a.activate("B", ids, NOW)
        self.b.activate("A", ids, NOW)
        for k in keys:
            self.bytes_left[k.key_id] = size

    @rule(count=st.integers(1, 3), size=st.sampled_from([1, 8, 16, 40]))
    def supply(self, count, size):
        if sum(self.bytes_left.values()) < count * size:
            with pytest.raises(KeyPoolDepleted):
                self.a.make_supply("B", "m", ["s"], count, size, ["m"], NOW)
            return
        plans = self.a.make_supply("B", "m", ["s"], count, size, ["m"], NOW)
        self.b.reserve("A", plans, ["s"], NOW)
        for plan in plans:
            for src in plan.sources:
                self.bytes_left[src.key_id] -= src.length
                assert self.bytes_left[src.key_id] >= 0
            self.pending.append(plan.key_id)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def deliver(self, data):
        key_id = data.draw(st.sampled_from(self.pending))
        self.pending.remove(key_id)
        (ka,) = self.a.deliver([key_id], "m", NOW)
        (kb,) = self.b.deliver([key_id], "s", NOW)
        assert ka.material == kb.material

    @precondition(lambda self: self.bytes_left)
    @rule(data=st.data())
    def destroy_link_key(self, data):
        key_id = data.draw(st.sampled_from(sorted(self.bytes_left)))
        self.a.destroy([key_id], NOW)
        self.b.destroy([key_id], NOW)
        del self.bytes_left[key_id]

    @invariant()
    def levels_match_the_model(self):
        for store, pool in ((self.a, "B"), (self.b, "A")):
            level = store.levels().get(pool)
            avail = sum(self.bytes_left.values())
            if level is None:
                assert avail == 0
                continue
            assert level.available_bytes == avail
            assert level.reserved_keys == len(self.pending)
        for key_id, left in self.bytes_left.items():
            if left == 0:
                assert self.a.link_key_state(key_id) is KeyState.DESTROYED

    def teardown(self):
        self.a.close()
        self.b.close()
        self.dir.cleanup()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


def test_concurrent_requests_share_commits_and_stay_exact(tmp_path):
    import threading

    with SqliteKeyStore(tmp_path / "k.sqlite") as s:
        keys = link_keys(64, size=32, seed=11)
        s.add_link_keys("B", keys, NOW, active=True)
        got, errors = [], []

        def worker(n):
            for i in range(8):
                try:
                    if i % 4 == 3:
                        s.deliver([uuid.uuid4()], "m", NOW)   # fails alone, in a shared batch
                    (plan,) = s.make_supply("B", "m", ["s"], 1, 24, ["m"], NOW)
                    got.extend(s.deliver([plan.key_id], "m", NOW))
                except KeyNotFound as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 8 * 2
        assert len(got) == 8 * 6
        pool = b"".join(k.material for k in keys)
        used = [pool.index(k.material) for k in got]
        assert len(set(used)) == len(used)          # no bytes handed out twice
        assert s.levels()["B"].available_bytes == 64 * 32 - 48 * 24


def test_a_wipe_delay_truncates_later_but_flush_and_close_always_do(tmp_path):
    path = tmp_path / "k.sqlite"
    s = SqliteKeyStore(path, wipe_delay_s=5.0)
    keys = link_keys(4, size=32, seed=21)
    s.add_link_keys("B", keys, NOW, active=True)
    s.destroy([keys[0].key_id], NOW)
    assert _found(path, keys[0].material)        # still in the WAL within the delay
    s.flush()
    assert not _found(path, keys[0].material)
    s.destroy([keys[1].key_id], NOW)
    s.close()
    assert not _found(path, keys[1].material)
    with pytest.raises(ValueError, match="wipe_delay_s"):
        SqliteKeyStore(path, wipe_delay_s=60)


def test_the_wiper_truncates_when_the_delay_is_up_without_a_flush(tmp_path):
    path = tmp_path / "k.sqlite"
    s = SqliteKeyStore(path, wipe_delay_s=0.3)
    keys = link_keys(4, size=32, seed=22)
    s.add_link_keys("B", keys, NOW, active=True)
    s.destroy([keys[0].key_id], NOW)
    assert _found(path, keys[0].material)        # the transaction did not wait for the wipe
    deadline = time.monotonic() + 10
    while _found(path, keys[0].material):
        assert time.monotonic() < deadline, "the WAL was never truncated"
        time.sleep(0.05)
    assert s.levels()["B"].available_keys == 3   # the store goes on after the wipe
    s.destroy([keys[1].key_id], NOW)
    s.close()
    assert not _found(path, keys[1].material)


def test_unconfirmed_keys_expire_and_confirmed_ones_stay(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite") as s:
        keys = link_keys(2, seed=31)
        s.add_link_keys("C", keys, NOW, confirm_within_s=10)
        s.activate("C", [keys[0].key_id], NOW + 5)
        assert s.expire(NOW + 11) == 1
        assert s.link_key_state(keys[0].key_id) is KeyState.ACTIVE
        assert s.link_key_state(keys[1].key_id) is KeyState.DESTROYED


def test_a_plan_with_a_gap_leaves_the_gap_bytes_intact(pair):
    """Slices [0, 8) and [16, 24) of a 32-byte link key are used; bytes 8..16 stay free and real."""
    _, b, keys = pair
    first = keys[0]
    gapped = SupplyPlan(uuid.uuid4(), "m", ("s",),
                        (SourceSlice(first.key_id, 0, 8), SourceSlice(first.key_id, 16, 8)))
    b.reserve("A", [gapped], ["s"], NOW)
    plans, got = b.take_supply("A", "s", ["m"], 1, 8, NOW)
    assert plans[0].sources == (SourceSlice(first.key_id, 8, 8),)
    assert got[0].material == first.material[8:16]
    assert got[0].material != bytes(8)
