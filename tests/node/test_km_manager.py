"""The key manager's supply logic: two nodes wired in memory (what Kx carries between them)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from qkdnode.node.errors import (
    KeyManagerError,
    KeyNotFound,
    KeyPoolDepleted,
    NotAuthorized,
    PeerUnavailable,
    UnknownSae,
)
from qkdnode.node.km import KeyManager, KeyState, LinkKey, SqliteKeyStore, SupplyLimits

SAES = {"alice-app": "A", "alice-app2": "A", "bob-app": "B", "bob-app2": "B", "carol-app": "C"}


class DirectPeer:
    """A PeerLink that calls the peer manager directly; can be told to fail or hang."""

    def __init__(self, me, peer):
        self.me, self.peer = me, peer
        self.mode = "ok"
        self.sent = []

    async def notify_supply(self, plans):
        self.sent.append(list(plans))
        if self.mode == "hang":
            await asyncio.sleep(3600)
        await self.peer.on_supply_notification(self.me, plans)
        if self.mode == "lose-answer":
            raise PeerUnavailable("the answer was lost")


@pytest.fixture
def nodes(tmp_path):
    stores = [SqliteKeyStore(tmp_path / "a.sqlite"), SqliteKeyStore(tmp_path / "b.sqlite")]
    clock = [1_800_000_000.0]
    a = KeyManager(stores[0], "A", "kme-a", SAES, peer_kme_ids={"B": "kme-b"},
                   clock=lambda: clock[0], peer_timeout_s=0.2)
    b = KeyManager(stores[1], "B", "kme-b", SAES, clock=lambda: clock[0])
    a.peers["B"] = DirectPeer("A", b)
    b.peers["A"] = DirectPeer("B", a)
    keys = [LinkKey(uuid.uuid4(), bytes([i]) * 32, link="A-B", index=i) for i in range(1, 9)]

    async def fill():
        await a.add_link_keys("B", keys)
        await b.add_link_keys("A", keys)
        await a.activate("B", [k.key_id for k in keys])
        await b.activate("A", [k.key_id for k in keys])

    asyncio.run(fill())
    yield a, b
    for s in stores:
        s.close()


def test_enc_then_dec_gives_both_saes_the_same_keys_once(nodes):
    a, b = nodes

    async def run():
        got = await a.enc_keys("alice-app", ["bob-app"], 3, 512)
        ids = [k.key_id for k in got]
        back = await b.dec_keys("bob-app", "alice-app", ids)
        assert [k.material for k in back] == [k.material for k in got]
        assert all(len(k.material) == 64 for k in got)
        with pytest.raises(KeyNotFound):
            await b.dec_keys("bob-app", "alice-app", ids[:1])

    asyncio.run(run())
    status = a.status("alice-app", "bob-app")
    assert (status.source_kme_id, status.target_kme_id) == ("kme-a", "kme-b")
    assert status.stored_key_count == (8 * 32 - 3 * 64) * 8 // 256


def test_additional_slaves_each_collect_once(nodes):
    a, b = nodes

    async def run():
        (key,) = await a.enc_keys("alice-app", ["bob-app", "bob-app2"], 1, 256)
        assert (await b.dec_keys("bob-app2", "alice-app", [key.key_id]))[0] == key
        assert (await b.dec_keys("bob-app", "alice-app", [key.key_id]))[0] == key
        with pytest.raises(KeyNotFound):
            await b.dec_keys("bob-app", "alice-app", [key.key_id])

    asyncio.run(run())


def test_wrong_callers_are_refused(nodes):
    a, b = nodes

    async def run():
        (key,) = await a.enc_keys("alice-app", ["bob-app"], 1, 256)
        with pytest.raises(NotAuthorized):   # not a slave of this key
            await b.dec_keys("bob-app2", "alice-app", [key.key_id])
        with pytest.raises(NotAuthorized):   # wrong master named
            await b.dec_keys("bob-app", "alice-app2", [key.key_id])
        with pytest.raises(NotAuthorized):   # master attached elsewhere
            await b.enc_keys("alice-app", ["bob-app"], 1, 256)
        with pytest.raises(UnknownSae):
            await a.enc_keys("alice-app", ["mallory"], 1, 256)
        with pytest.raises(ValueError, match="multiple of 8"):
            await a.enc_keys("alice-app", ["bob-app"], 1, 100)
        with pytest.raises(ValueError, match="same KME"):
            await a.enc_keys("alice-app", ["bob-app", "carol-app"], 1, 256)
        with pytest.raises(ValueError, match="shared between two KMEs"):
            await a.enc_keys("alice-app", ["alice-app2"], 1, 256)
        with pytest.raises(ValueError, match="number"):
            await a.enc_keys("alice-app", ["bob-app"], 0, 256)
        lonely = KeyManager(a.store, "A", "kme-a", {**SAES, "dave": "D"})
        with pytest.raises(KeyPoolDepleted, match="no Kx link"):
            await lonely.enc_keys("alice-app", ["dave"], 1, 256)
        # the slave still gets its key after all that
        assert await b.dec_keys("bob-app", "alice-app", [key.key_id])

    asyncio.run(run())


def test_depleted_pool_is_a_temporary_error(nodes):
    a, _ = nodes

    async def run():
        with pytest.raises(KeyPoolDepleted, match="2048 bits of available key"):
            await a.enc_keys("alice-app", ["bob-app"], 9, 256)

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["hang", "lose-answer"])
def test_a_failed_peer_confirmation_hands_out_nothing_and_reuses_nothing(nodes, mode):
    a, _ = nodes
    a.peers["B"].mode = mode
    before = a.store.levels()["B"].available_bytes

    async def run():
        with pytest.raises(PeerUnavailable):
            await a.enc_keys("alice-app", ["bob-app"], 2, 256)
        plans = a.peers["B"].sent[-1]
        for plan in plans:   # destroyed here, not back in the pool
            with pytest.raises(KeyNotFound):
                await a.dec_keys("alice-app", "alice-app", [plan.key_id])
        a.peers["B"].mode = "ok"
        got = await a.enc_keys("alice-app", ["bob-app"], 1, 256)
        used = {s.key_id for p in plans for s in p.sources}
        fresh = {s.key_id for p in a.peers["B"].sent[-1] for s in p.sources}
        assert not used & fresh
        return got

    asyncio.run(run())
    assert a.store.levels()["B"].available_bytes == before - 3 * 32


class LostCommit:
    """A's store, whose next take_supply fails after the plans went to the peer (as if the
    commit never reached the disk: a crash, an I/O error)."""

    def __init__(self, store):
        self.store = store
        self.fail_next = True

    def __getattr__(self, name):
        return getattr(self.store, name)

    def take_supply(self, *args, on_planned=None, **kwargs):
        if not self.fail_next:
            return self.store.take_supply(*args, on_planned=on_planned, **kwargs)
        self.fail_next = False

        def planned_then_lost(plans):
            on_planned(plans)
            raise OSError("disk I/O error")   # the savepoint rolls A's side back

        return self.store.take_supply(*args, on_planned=planned_then_lost, **kwargs)


def test_the_peer_commits_while_the_master_commits_and_a_lost_commit_heals(nodes):
    a, b = nodes
    a.store = LostCommit(a.store)
    sent = a.peers["B"].sent

    async def run():
        # the plans reach B, B commits them, A's own commit is lost: nothing is handed out
        with pytest.raises(OSError, match="disk I/O"):
            await a.enc_keys("alice-app", ["bob-app"], 2, 256)
        lost = sent[-1]
        assert b.store.supply_state(lost[0].key_id)[0].value == "active"   # reserved at B
        # A still counts those bytes as free and plans them again: B refuses (they were
        # used), and that refused request's bytes are now used at A too
        with pytest.raises(KeyManagerError, match="already used"):
            await a.enc_keys("alice-app", ["bob-app"], 2, 256)
        # so the next request gets fresh bytes, the same at both ends
        got = await a.enc_keys("alice-app", ["bob-app"], 2, 256)
        used = {(s.key_id, s.offset) for p in lost for s in p.sources}
        assert not used & {(s.key_id, s.offset) for p in sent[-1] for s in p.sources}
        back = await b.dec_keys("bob-app", "alice-app", [k.key_id for k in got])
        assert [k.material for k in back] == [k.material for k in got]

    asyncio.run(run())


def test_supply_from_a_node_for_a_master_it_does_not_serve_is_refused(nodes):
    a, b = nodes

    async def run():
        plans = await asyncio.to_thread(a.store.make_supply, "B", "carol-app", ["bob-app"], 1,
                                        32, ["carol-app"], 0.0)
        with pytest.raises(NotAuthorized, match="not attached to it"):
            await b.on_supply_notification("A", plans)

    asyncio.run(run())


def test_limits_are_checked():
    with pytest.raises(ValueError, match="multiple of 8"):
        SupplyLimits(key_size_bits=100)
    with pytest.raises(ValueError, match="min_key_size_bits <= key_size_bits"):
        SupplyLimits(key_size_bits=16, min_key_size_bits=64)
    assert issubclass(UnknownSae, KeyManagerError)


def test_link_keys_the_peer_never_confirms_are_destroyed_after_the_confirmation_time(tmp_path):
    store = SqliteKeyStore(tmp_path / "a.sqlite")
    clock = [1_800_000_000.0]
    a = KeyManager(store, "A", "kme-a", SAES, clock=lambda: clock[0], link_key_confirm_s=600.0)
    confirmed = LinkKey(uuid.uuid4(), bytes(32), link="A-B", index=0)
    orphan = LinkKey(uuid.uuid4(), bytes(32), link="A-B", index=1)

    async def run():
        await a.add_link_keys("B", [confirmed, orphan])
        await a.activate("B", [confirmed.key_id])
        clock[0] += 599.0
        assert store.expire(clock[0]) == 0
        clock[0] += 2.0
        assert store.expire(clock[0]) == 1

    try:
        asyncio.run(run())
        states = store.link_key_states("B", [confirmed.key_id, orphan.key_id])
        assert states[confirmed.key_id] is KeyState.ACTIVE
        assert states[orphan.key_id] is KeyState.DESTROYED
    finally:
        store.close()
