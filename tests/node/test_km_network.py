"""Kx logic over an in-memory network: pool sync, routed supply, OTP relay with failover."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid

import pytest

from qkdnode.node.errors import PeerUnavailable
from qkdnode.node.km import KeyManager, KeyState, LinkKey, SqliteKeyStore, network
from qkdnode.node.km.network import RELAY_MEMORY_S, KxAgent
from qkdnode.node.km.routing import LinkStateDb, NoRoute
from qkdnode.node.protocol.kx import PoolOffered, RelayCompleted, RelayForwarded, SupplyNotified

SAES = {"app-a": "A", "app-b": "B", "app-c": "C", "app-d": "D"}


class Net:
    """Delivers requests between agents; a node can be cut off."""

    def __init__(self):
        self.agents = {}
        self.down = set()
        self.ids = itertools.count(1)
        self.log = []
        self.lose_answers = set()

    def for_node(self, node):
        net = self

        class View:
            async def request(self, peer, event):
                if peer in net.down or node in net.down:
                    raise PeerUnavailable(f"{peer} unreachable")
                event = dataclasses.replace(event, req=next(net.ids))
                net.log.append((node, peer, type(event).__name__))
                agent = net.agents[peer]
                if isinstance(event, PoolOffered):
                    return await agent.on_pool_offer(node, event)
                if isinstance(event, SupplyNotified):
                    return await agent.on_supply(node, event)
                if isinstance(event, RelayCompleted):
                    return await agent.on_relay_completed(node, event)
                assert isinstance(event, RelayForwarded)
                answer = await agent.on_relay(node, event)
                if (node, peer) in net.lose_answers:
                    net.lose_answers.discard((node, peer))
                    raise PeerUnavailable(f"the answer from {peer} was lost")
                return answer

        return View()


def build(tmp_path, edges, chunks=16):
    net = Net()
    adjacency = {}
    for a, b in edges:
        adjacency.setdefault(a, []).append(b)
        adjacency.setdefault(b, []).append(a)
    stores, managers = {}, {}
    for node in adjacency:
        stores[node] = SqliteKeyStore(tmp_path / f"{node}.sqlite")
        managers[node] = KeyManager(stores[node], node, f"kme-{node}", SAES)
        net.agents[node] = KxAgent(managers[node], net.for_node(node), adjacency[node])
    for a, b in edges:  # the QKD link's keys arrive at both ends (pre-activation)
        keys = [LinkKey(uuid.uuid4(), bytes([i % 251 + 1]) * 32, link=f"{a}-{b}")
                for i in range(chunks)]
        stores[a].add_link_keys(b, keys, 0.0)
        stores[b].add_link_keys(a, keys, 0.0)
    return net, stores, managers


def flood(net):
    for agent in net.agents.values():
        lsa = agent.advertisement()
        for other in net.agents.values():
            other.on_link_state(lsa)


def test_pool_sync_activates_what_both_ends_hold(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B")], chunks=4)
    extra = LinkKey(uuid.uuid4(), b"x" * 32)
    stores["A"].add_link_keys("B", [extra], 0.0)   # B never got this one

    async def run():
        return await net.agents["A"].sync_pool("B")

    assert asyncio.run(run()) == 4
    assert len(stores["A"].link_key_ids("B", KeyState.ACTIVE)) == 4
    assert len(stores["B"].link_key_ids("A", KeyState.ACTIVE)) == 4
    assert stores["A"].link_key_ids("B", KeyState.PRE_ACTIVATION) == [extra.key_id]
    for s in stores.values():
        s.close()


def test_relay_gives_both_ends_the_same_key_and_intermediates_keep_nothing(tmp_path):
    net, stores, managers = build(tmp_path, [("A", "B"), ("B", "C")])

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        relay_id = await net.agents["A"].relay_key("C", 32)
        assert net.agents["B"].has_relay(relay_id)
        # the relayed pool now serves applications end to end, notifications routed via B
        keys = await managers["A"].enc_keys("app-a", ["app-c"], 1, 256)
        # a request beyond the relayed key relays what is missing first
        more = await managers["A"].enc_keys("app-a", ["app-c"], 2, 128)
        more_back = await managers["C"].dec_keys("app-c", "app-a", [k.key_id for k in more])
        assert [k.material for k in more] == [k.material for k in more_back]
        back = await managers["C"].dec_keys("app-c", "app-a", [keys[0].key_id])
        return relay_id, keys[0], back[0]

    relay_id, master, slave = asyncio.run(run())
    assert master.material == slave.material
    assert stores["A"].link_key_state(relay_id) is KeyState.DESTROYED   # used up by the supply
    assert stores["C"].link_key_state(relay_id) is KeyState.DESTROYED
    with pytest.raises(Exception, match="not known"):
        stores["B"].link_key_state(relay_id)   # never stored on the intermediate node
    for s in stores.values():
        s.close()
    raw = (tmp_path / "B.sqlite").read_bytes()
    assert master.material not in raw


def test_a_failed_hop_leads_to_another_route(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "D"), ("A", "C"), ("C", "D")])

    async def run():
        for a, b in [("A", "B"), ("B", "D"), ("A", "C"), ("C", "D")]:
            await net.agents[a].sync_pool(b)
        flood(net)
        net.down.add("B")     # B fails after advertising itself
        net.down.add("C")
        with pytest.raises(PeerUnavailable, match="relay to 'D' failed"):
            await net.agents["A"].relay_key("D", 32)
        net.down.discard("C")
        relay_id = await net.agents["A"].relay_key("D", 32)
        return relay_id

    relay_id = asyncio.run(run())
    assert stores["A"].link_key_state(relay_id) is KeyState.ACTIVE
    assert stores["D"].link_key_state(relay_id) is KeyState.ACTIVE
    assert ("C", "D", "RelayForwarded") in net.log
    # failed attempts destroyed their keys; none of them is active anywhere
    active_a = stores["A"].link_key_ids("D", KeyState.ACTIVE)
    assert active_a == [relay_id]
    for s in stores.values():
        s.close()


def test_routes_prefer_links_with_more_key_and_respect_exclusions():
    db = LinkStateDb()
    db.set_local("A", {"B": 1000, "C": 100})
    db.update("B", 1, [("A", 1000), ("D", 1000)])
    db.update("C", 1, [("A", 100), ("D", 100)])
    db.update("D", 1, [("B", 1000), ("C", 100)])
    assert db.route("A", "D", 64) == ["A", "B", "D"]
    assert db.route("A", "D", 64, exclude=[("B", "A")]) == ["A", "C", "D"]
    with pytest.raises(NoRoute):
        db.route("A", "D", 500, exclude=[("A", "B")])
    assert not db.update("B", 1, [])   # not newer: dropped


def test_a_lost_answer_is_healed_by_the_completion_notification(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "C")])

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        net.lose_answers.add(("A", "B"))      # C stores the key; its answer never reaches A
        with pytest.raises(PeerUnavailable):
            await net.agents["A"].relay_key("C", 32)
        relay_ids = stores["C"].link_key_ids("A", KeyState.ACTIVE)
        assert len(relay_ids) == 1
        for _ in range(1000):                 # the completion notification arrives
            if stores["A"].link_key_ids("C", KeyState.ACTIVE):
                break
            await asyncio.sleep(0.02)
        assert stores["A"].link_key_ids("C", KeyState.ACTIVE) == relay_ids

    asyncio.run(run())
    for s in stores.values():
        s.close()


def test_completions_are_collected_into_one_notification_per_origin(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "COMPLETION_BATCH_S", 3600.0)   # sent by the flush only
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "C")])
    heard = []
    agent_a = net.agents["A"]
    on_completed = agent_a.on_relay_completed

    async def spy(from_node, event):
        heard.append(event)
        return await on_completed(from_node, event)

    agent_a.on_relay_completed = spy

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        ids = [await agent_a.relay_key("C", 32) for _ in range(3)]
        assert heard == []
        await net.agents["C"].flush_completions()
        return ids

    ids = asyncio.run(run())
    assert len(heard) == 1
    assert list(heard[0].relay_ids) == ids
    assert heard[0].origin == "C"
    assert sorted(stores["A"].link_key_ids("C", KeyState.ACTIVE)) == sorted(ids)
    for s in stores.values():
        s.close()


def test_a_completion_activates_what_is_live_and_names_the_rest(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B")])
    live, gone, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stores["A"].add_link_keys("C", [LinkKey(live, bytes(32)), LinkKey(gone, bytes(32))], 0.0,
                              confirm_within_s=60)
    stores["A"].destroy([gone], 0.0)
    answer = asyncio.run(net.agents["A"].on_relay_completed(
        "B", RelayCompleted(7, live, "C", "A", True, more=(gone, unknown))))
    assert not answer.ok
    assert answer.req == 7
    assert answer.code == network.RELAY_ABANDONED
    assert "2 of 3" in answer.reason
    assert stores["A"].link_key_state(live) is KeyState.ACTIVE
    assert stores["A"].link_key_state(gone) is KeyState.DESTROYED
    for s in stores.values():
        s.close()


def test_a_hop_off_its_route_is_refused_and_consumes_nothing(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "C")])
    for a, b in (("A", "B"), ("B", "C")):
        stores[a].activate(b, stores[a].link_key_ids(b, KeyState.PRE_ACTIVATION), 0.0)
        stores[b].activate(a, stores[b].link_key_ids(a, KeyState.PRE_ACTIVATION), 0.0)
    plan, _ = stores["A"].take_pad("B", 32, 0.0)
    before = stores["B"].levels()

    def hop(route, destination, from_node="A"):
        event = RelayForwarded(5, uuid.uuid4(), "A", destination, route, plan, bytes(32))
        return asyncio.run(net.agents["B"].on_relay(from_node, event))

    for answer in (hop(("A", "B"), "D"),             # the route ends before its destination
                   hop(("A", "C", "B"), "B"),        # B's predecessor is C, not A
                   hop(("A", "C"), "C"),             # B is not on it
                   hop(("A", "B", "C"), "C", "C")):  # it came from the wrong node
        assert not answer.ok
        assert answer.code == "not_on_route"
    assert stores["B"].levels() == before
    for s in stores.values():
        s.close()


def test_a_completion_owed_across_a_restart_is_sent_and_settles_both_ends(tmp_path):
    # C stores the relayed key and crashes before its answer or its completion notification
    # leaves: the notification is owed in C's store, sent again after the restart; A, which
    # still waits for the confirmation, activates its copy.
    net, stores, managers = build(tmp_path, [("A", "B"), ("B", "C")])

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        net.lose_answers.add(("A", "B"))
        net.agents["C"]._completed = lambda origin, relay_id: None   # C dies before sending
        with pytest.raises(PeerUnavailable):
            await net.agents["A"].relay_key("C", 32)
        (relay_id,) = stores["C"].link_key_ids("A", KeyState.ACTIVE)
        assert stores["C"].pending_completions() == [(relay_id, "A")]
        assert stores["A"].link_key_state(relay_id) is KeyState.PRE_ACTIVATION
        # C restarts: a new store on the same file, a new agent
        stores["C"].close()
        stores["C"] = SqliteKeyStore(tmp_path / "C.sqlite")
        managers["C"] = KeyManager(stores["C"], "C", "kme-C", SAES)
        net.agents["C"] = KxAgent(managers["C"], net.for_node("C"), ["B"])
        flood(net)                      # the link states reach the restarted node again
        assert await net.agents["C"].resume_completions() == 1
        await net.agents["C"].flush_completions()
        return relay_id

    relay_id = asyncio.run(run())
    assert stores["A"].link_key_state(relay_id) is KeyState.ACTIVE
    assert stores["C"].link_key_state(relay_id) is KeyState.ACTIVE
    assert stores["C"].pending_completions() == []
    for s in stores.values():
        s.close()


def test_a_relay_the_origin_gave_up_is_destroyed_at_the_destination_too(tmp_path):
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "C")])

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        net.lose_answers.add(("A", "B"))
        net.agents["C"]._completed = lambda origin, relay_id: None   # not told in time
        with pytest.raises(PeerUnavailable):
            await net.agents["A"].relay_key("C", 32)
        (relay_id,) = stores["C"].link_key_ids("A", KeyState.ACTIVE)
        stores["A"].expire(1e12)        # A gives up waiting for the confirmation
        assert stores["A"].link_key_state(relay_id) is KeyState.DESTROYED
        del net.agents["C"]._completed  # C back to normal: sends what it owes
        await net.agents["C"].resume_completions()
        await net.agents["C"].flush_completions()
        return relay_id

    relay_id = asyncio.run(run())
    assert stores["C"].link_key_state(relay_id) is KeyState.DESTROYED
    assert stores["C"].pending_completions() == []
    for s in stores.values():
        s.close()


def test_a_key_used_at_the_origin_before_its_completion_stays_at_the_destination(tmp_path):
    # The normal case with a slow notification: A supplied from the key and it is gone there,
    # used; C keeps its copy (its slave still collects the key).
    net, stores, _ = build(tmp_path, [("A", "B"), ("B", "C")])
    live = uuid.uuid4()
    stores["A"].add_link_keys("C", [LinkKey(live, bytes(32))], 0.0, active=True)
    stores["A"].take_pad("C", 32, 0.0)     # every byte used
    stores["A"].destroy([live], 0.0)
    answer = asyncio.run(net.agents["A"].on_relay_completed(
        "B", RelayCompleted(3, live, "C", "A", True)))
    assert answer.ok
    for s in stores.values():
        s.close()


def test_finished_relays_are_forgotten_after_the_retransmission_window(tmp_path):
    net, stores, managers = build(tmp_path, [("A", "B"), ("B", "C")])

    async def run():
        await net.agents["A"].sync_pool("B")
        await net.agents["B"].sync_pool("C")
        flood(net)
        first = await net.agents["A"].relay_key("C", 32)
        assert net.agents["B"].has_relay(first)
        real = managers["B"].clock
        managers["B"].clock = lambda: real() + RELAY_MEMORY_S + 1.0
        second = await net.agents["A"].relay_key("C", 32)
        return first, second

    first, second = asyncio.run(run())
    assert not net.agents["B"].has_relay(first)   # forgotten: B's memory does not grow
    assert net.agents["B"].has_relay(second)
    for s in stores.values():
        s.close()
