"""Kq-1 over a real Unix socket: durable acknowledgement, reconnects, refusals, Kq-2 control."""

from __future__ import annotations

import asyncio
import stat
import uuid

import pytest

from qkdnode.node.errors import KeyManagerError
from qkdnode.node.io.kq1 import Kq1Client, Kq1Refused, Kq1Server
from qkdnode.node.km import KeyManager, KeyState, LinkKey, SqliteKeyStore
from qkdnode.node.protocol.kq1 import StartRequested, StopRequested


def make_keys(n, start=0):
    return [LinkKey(uuid.uuid4(), bytes([i % 256]) * 32, link="A-B", block=1, index=start + i)
            for i in range(n)]


@pytest.fixture
def km(tmp_path):
    store = SqliteKeyStore(tmp_path / "keys.sqlite", max_key_count=50)
    yield KeyManager(store, "A", "kme-a", {}), tmp_path / "kq1.sock"
    store.close()


def test_pushed_keys_are_stored_before_the_ack_and_survive_a_km_restart(km):
    manager, path = km

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = Kq1Client(path, "mod-1", "A-B", "B")
        first = make_keys(10)
        assert await client.push(first) == 10
        # stored durably before the acknowledgement came back
        assert set(manager.store.link_key_ids("B", KeyState.PRE_ACTIVATION)) >= \
            {k.key_id for k in first}
        await server.stop()
        second = make_keys(5, 10)
        push = asyncio.create_task(client.push(second, timeout_s=10))
        await asyncio.sleep(0.3)           # the key manager is down for a while
        assert not push.done()
        server = Kq1Server(manager, path)
        await server.start()
        assert await push == 5
        assert await client.push(first) == 0   # a re-push is recognised, not stored twice
        await client.close()
        await server.stop()

    asyncio.run(run())
    assert len(manager.store.link_key_ids("B", KeyState.PRE_ACTIVATION)) == 15


def test_a_full_store_refuses_the_push_and_the_module_keeps_its_keys(km):
    manager, path = km

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        client = Kq1Client(path, "mod-1", "A-B", "B")
        await client.push(make_keys(45))
        with pytest.raises(Kq1Refused, match="store_full") as info:
            await client.push(make_keys(10, 45))
        assert info.value.code == "store_full"
        await client.close()
        await server.stop()

    asyncio.run(run())
    assert len(manager.store.link_key_ids("B", KeyState.PRE_ACTIVATION)) == 45


def test_kq2_start_stop_and_status(km):
    manager, path = km
    seen = []

    async def control(event):
        seen.append(type(event))

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        client = Kq1Client(path, "mod-1", "A-B", "B", on_control=control,
                           status=lambda: {"sync": "locked", "qber": 0.02})
        await client.connect()
        for _ in range(50):
            if "mod-1" in server.sessions:
                break
            await asyncio.sleep(0.01)
        await server.start_module("mod-1")
        assert await server.module_status("mod-1") == {"sync": "locked", "qber": 0.02}
        await server.stop_module("mod-1")
        await asyncio.sleep(0.05)
        assert server.last_status["mod-1"]["sync"] == "locked"
        await client.close()
        await server.stop()

    asyncio.run(run())
    # A module that connects is asked to start (it may have been stopped with its key manager)
    assert seen == [StartRequested, StartRequested, StopRequested]


def test_kq2_held_module_stays_stopped_across_reconnects_and_keep_connected_comes_back(km):
    """keep_connected() reconnects after a dropped connection and after the key manager
    restarts. A module stopped with hold=True is not asked to start when it reconnects to the
    same key manager; the hold lives in memory only, so a restarted key manager asks it to start
    (README, Kq-2). While a key manager shuts down, a module that connects is asked to stop."""
    manager, path = km
    seen: list[type] = []

    async def control(event):
        seen.append(type(event))

    async def wait_for(predicate):
        for _ in range(1000):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached in 10 s")

    async def reconnected(server, before):
        await wait_for(lambda: "mod-3" in server.sessions
                       and server.sessions["mod-3"] is not before)

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        client = Kq1Client(path, "mod-3", "A-B", "B", on_control=control)
        keeping = asyncio.create_task(client.keep_connected())
        await wait_for(lambda: "mod-3" in server.sessions and seen == [StartRequested])
        await server.stop_module("mod-3")             # held
        await wait_for(lambda: seen[-1] is StopRequested)
        assert server.held == {"mod-3"}
        session = server.sessions["mod-3"]
        session.writer.close()                          # the connection drops ...
        await reconnected(server, session)              # ... and the module reconnects
        await asyncio.sleep(0.05)
        assert seen == [StartRequested, StopRequested]  # still stopped
        await server.stop()                             # the key manager restarts: the hold
        server2 = Kq1Server(manager, path)              # is gone with it
        await server2.start()
        await wait_for(lambda: "mod-3" in server2.sessions and seen[-1] is StartRequested)
        assert seen == [StartRequested, StopRequested, StartRequested]
        # The key manager shuts down (as NodeDaemon.stop_modules): not held, but a module
        # that reconnects meanwhile is asked to stop, not to start.
        server2.stopping = True
        await server2.stop_module("mod-3", hold=False)
        assert server2.held == set()
        session = server2.sessions["mod-3"]
        session.writer.close()
        await reconnected(server2, session)
        await wait_for(lambda: len(seen) == 5)
        assert seen[3:] == [StopRequested, StopRequested]
        await server2.stop()
        server3 = Kq1Server(manager, path)
        await server3.start()
        await wait_for(lambda: "mod-3" in server3.sessions and seen[-1] is StartRequested)
        assert seen == [StartRequested, StopRequested, StartRequested, StopRequested,
                        StopRequested, StartRequested]
        keeping.cancel()
        await client.close()
        await server3.stop()

    asyncio.run(run())


def test_kq2_requests_for_a_module_not_connected(km):
    """A stop for a module that is not connected fails and holds nothing (a misspelt name does
    not pile up); a start for a held module that is not connected releases it."""
    manager, path = km

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        with pytest.raises(KeyManagerError, match="'nobody' is not connected"):
            await server.stop_module("nobody")
        assert server.held == set()
        with pytest.raises(KeyManagerError, match="not connected"):
            await server.start_module("nobody")
        server.held.add("gone")  # stopped while it was connected, then it went away
        assert await server.start_module("gone") is False
        assert server.held == set()
        await server.stop()

    asyncio.run(run())


def test_keep_connected_backs_off_from_a_key_manager_that_drops_every_connection(tmp_path):
    """A key manager that accepts and closes at once: keep_connected() waits before every
    reconnect, doubling the wait (0.1 + 0.2 + 0.4 + 0.8 s: at most 5 connections in 1.2 s),
    not a tight loop."""
    path = tmp_path / "drop.sock"
    accepted = 0

    async def drop(reader, writer):
        nonlocal accepted
        accepted += 1
        writer.close()

    async def run():
        server = await asyncio.start_unix_server(drop, path=str(path))
        client = Kq1Client(path, "mod-4", "A-B", "B")
        keeping = asyncio.create_task(client.keep_connected())
        await asyncio.sleep(1.2)
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await client.close()
        server.close()

    asyncio.run(run())
    assert 2 <= accepted <= 5, accepted


def test_a_module_that_breaks_the_protocol_is_dropped_and_others_go_on(km):
    manager, path = km

    async def run():
        server = Kq1Server(manager, path)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        assert await reader.read() == b""     # disconnected
        client = Kq1Client(path, "mod-2", "A-B", "B")
        assert await client.push(make_keys(2)) == 2
        await client.close()
        await server.stop()

    asyncio.run(run())


def test_no_key_manager_gives_a_clear_error(tmp_path):
    async def run():
        client = Kq1Client(tmp_path / "none.sock", "mod", "A-B", "B")
        with pytest.raises(ConnectionError, match="cannot reach the key manager"):
            await client.connect(timeout_s=0.3)

    asyncio.run(run())
