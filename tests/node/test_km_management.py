"""The management port: control requests need the bearer token the daemon writes (mode 0600)
at each start; /status and /metrics stay readable unless configured otherwise; `qkdnode
control` reads the token. A module held stopped through it stays stopped across key manager
restarts (the hold is in the key store) until a start releases it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import stat
import time

import aiohttp
import pytest

from qkdnode.node.cli import main
from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError, KeyManagerError
from qkdnode.node.io.kq1 import Kq1Client
from qkdnode.node.km import SqliteKeyStore
from qkdnode.node.km.daemon import NodeDaemon
from qkdnode.node.km.management import management_request, read_token, token_path
from qkdnode.node.km.pki import make_pki
from qkdnode.node.protocol.kq1 import StartRequested, StopRequested


def node_file(tmp_path, extra=""):
    make_pki(tmp_path / "pki", ["A"])
    path = tmp_path / "A.toml"
    path.write_text(f"""
[node]
name = "A"
[key_manager]
store_path = "A.sqlite"
kq1_socket = "A.sock"
kx_listen = "127.0.0.1:0"
etsi014_listen = "127.0.0.1:0"
management_listen = "127.0.0.1:0"
{extra}
[key_manager.tls]
ca = "pki/ca.pem"
cert = "pki/A.pem"
key = "pki/A.key"
""")
    return path


async def answer(http, method, url, token=None):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, headers=headers) as r:
        return r.status, await r.json(content_type=None) if r.content_type.endswith(
            "json") else await r.text()


def test_control_needs_the_token_and_reading_does_not(tmp_path):
    config = load_config(node_file(tmp_path))
    assert token_path(config.key_manager) == tmp_path / "A.token"

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        try:
            file = tmp_path / "A.token"
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            token = read_token(file)
            assert len(token) >= 43   # 32 bytes, URL-safe base64
            mgmt = f"http://127.0.0.1:{daemon.management_port}"
            async with aiohttp.ClientSession() as http:
                for given in (None, "not-the-token", ""):
                    code, body = await answer(http, "POST", f"{mgmt}/modules/A%2Fab/stop",
                                              given)
                    assert code == 401
                    assert str(file) in body["message"]
                    assert token not in body["message"]
                assert "A/ab" not in daemon.kq1.held   # refused: nothing happened
                code, body = await answer(http, "POST", f"{mgmt}/modules/A%2Fab/stop", token)
                assert code == 404                 # authenticated; no such module connected
                assert (await answer(http, "GET", f"{mgmt}/status"))[0] == 200
                assert (await answer(http, "GET", f"{mgmt}/metrics"))[0] == 200
        finally:
            await daemon.stop()
        assert not (tmp_path / "A.token").exists()   # removed at the stop
        return token

    first = asyncio.run(run())
    second = asyncio.run(run())
    assert first != second   # a new token at each start


def test_the_token_never_takes_the_store_or_socket_file(tmp_path):
    path = node_file(tmp_path, 'management_token_file = "A.sqlite"')
    store_named_token = dataclasses.replace(load_config(path).key_manager,
                                            management_token_file=None,
                                            store_path=tmp_path / "keys.token")
    assert token_path(store_named_token) == tmp_path / "keys.token.token"
    with pytest.raises(ConfigError, match=r"management_token_file.*file of its own"):
        NodeDaemon(load_config(path), str(path))


def test_all_requests_need_the_token_when_configured(tmp_path, capsys):
    path = node_file(tmp_path, 'management_auth = "all"\n'
                               'management_token_file = "secret/mgmt.token"')
    config = load_config(path)
    (tmp_path / "secret").mkdir()

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        try:
            token = read_token(tmp_path / "secret" / "mgmt.token")
            mgmt = f"http://127.0.0.1:{daemon.management_port}"
            async with aiohttp.ClientSession() as http:
                assert (await answer(http, "GET", f"{mgmt}/status"))[0] == 401
                assert (await answer(http, "GET", f"{mgmt}/metrics"))[0] == 401
                assert (await answer(http, "GET", f"{mgmt}/status", token))[0] == 200
            # the client helper reads the token from the configured file
            code, status = await asyncio.to_thread(
                management_request, config_at(daemon), "GET", "/status")
            assert code == 200
            assert status["node"] == "A"
            # so does `qkdnode status`
            bound = tmp_path / "bound.toml"
            bound.write_text(path.read_text().replace(
                'management_listen = "127.0.0.1:0"',
                f'management_listen = "127.0.0.1:{daemon.management_port}"'))
            assert await asyncio.to_thread(main, ["status", "--config", str(bound)]) == 0
            assert "node A  up" in capsys.readouterr().out
        finally:
            await daemon.stop()

    asyncio.run(run())


def config_at(daemon):
    """The daemon's key manager configuration with the port it actually bound."""
    km = daemon.config.key_manager
    return dataclasses.replace(km, management_listen=f"127.0.0.1:{daemon.management_port}")


def test_qkdnode_control_sends_the_token_and_reports_refusals(tmp_path, capsys):
    path = node_file(tmp_path)
    config = load_config(path)

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        try:
            text = path.read_text().replace("management_listen = \"127.0.0.1:0\"",
                                            f"management_listen = \"127.0.0.1:"
                                            f"{daemon.management_port}\"")
            bound = tmp_path / "bound.toml"
            bound.write_text(text)
            # authenticated (else 401): a module that is not connected is 404, named
            status = await asyncio.to_thread(main, ["control", "stop", "A/ab", "--config",
                                                    str(bound)])
            assert status == 1
            assert "not connected" in capsys.readouterr().err
            status = await asyncio.to_thread(main, ["control", "start", "A/ab", "--config",
                                                    str(bound)])
            assert status == 1
            assert "404 module 'A/ab' is not connected" in capsys.readouterr().err
            (tmp_path / "A.token").write_text("forged\n")
            with pytest.raises(KeyManagerError, match=r"401 .* wrong management token"):
                await asyncio.to_thread(management_request, config_at(daemon), "POST",
                                        "/modules/A%2Fab/stop")
            (tmp_path / "A.token").unlink()
            with pytest.raises(KeyManagerError, match="no management token at"):
                await asyncio.to_thread(management_request, config_at(daemon), "POST",
                                        "/modules/A%2Fab/stop")
        finally:
            await daemon.stop()

    asyncio.run(run())


# Generous: a loaded 2-core machine; the module reconnects with back-off from 0.1 s.
WAIT_S = 30.0


async def wait_for(predicate):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_the_store_keeps_holds_across_reopening(tmp_path):
    with SqliteKeyStore(tmp_path / "k.sqlite") as store:
        store.hold_module("A/ab", True, 1.0)
        store.hold_module("A/ab", True, 2.0)     # idempotent
        store.hold_module("A/bc", True, 1.0)
        store.hold_module("A/bc", False, 3.0)
        store.hold_module("nobody", False, 3.0)  # releasing what is not held changes nothing
    with SqliteKeyStore(tmp_path / "k.sqlite") as store:
        assert store.held_modules() == ["A/ab"]


def test_a_held_module_stays_stopped_across_restarts_until_started(tmp_path, monkeypatch):
    from qkdnode.node.km import daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "MODULE_STATUS_EVERY_S", 0.1)
    config = load_config(node_file(tmp_path))
    seen: list[type] = []

    async def control(event):
        seen.append(type(event))

    async def post(daemon, action):
        token = read_token(daemon.token_file)
        url = f"http://127.0.0.1:{daemon.management_port}/modules/A%2Fab/{action}"
        async with aiohttp.ClientSession() as http, http.post(
                url, headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status

    async def restart(daemon):
        """Stops ``daemon``, starts a new one on the same files, and waits until the module
        has reconnected and answered a status request (so anything the key manager sends a
        connecting module, which comes first on the connection, has arrived)."""
        await daemon.stop()
        await wait_for(lambda: "A/ab" not in daemon.kq1.sessions)
        new = NodeDaemon(config)
        await new.start()
        await wait_for(lambda: "A/ab" in new.kq1.last_status)
        return new

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        client = Kq1Client(tmp_path / "A.sock", "A/ab", "A-B", "B", on_control=control,
                           status=lambda: {"running": seen[-1:] == [StartRequested]})
        keeping = asyncio.create_task(client.keep_connected())
        try:
            await wait_for(lambda: seen == [StartRequested])
            assert await post(daemon, "stop") == 200
            await wait_for(lambda: seen[-1:] == [StopRequested])

            daemon = await restart(daemon)
            assert seen == [StartRequested, StopRequested, StopRequested]  # not started
            module = daemon.status()["modules"]["A/ab"]
            assert module["held_stopped"] is True
            assert module["connected"] is True

            daemon = await restart(daemon)   # still held after a second restart
            assert StartRequested not in seen[1:]
            assert await post(daemon, "start") == 200
            await wait_for(lambda: seen[-1:] == [StartRequested])

            count = len(seen)
            daemon = await restart(daemon)   # released: started when it reconnects
            await wait_for(lambda: seen[-1:] == [StartRequested] and len(seen) > count)
            assert daemon.status()["modules"]["A/ab"]["held_stopped"] is False
        finally:
            await daemon.stop()
            keeping.cancel()
            await client.close()

    asyncio.run(run())


def test_a_held_module_not_connected_after_a_restart_shows_and_can_be_released(tmp_path):
    config = load_config(node_file(tmp_path))
    with SqliteKeyStore(config.key_manager.store_path) as store:
        store.hold_module("A/ab", True, 1.0)

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        try:
            module = daemon.status()["modules"]["A/ab"]
            assert module == {"connected": False, "held_stopped": True}
            token = read_token(daemon.token_file)
            url = f"http://127.0.0.1:{daemon.management_port}/modules/A%2Fab/start"
            async with aiohttp.ClientSession() as http, http.post(
                    url, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 202
            assert daemon.store.held_modules() == []
        finally:
            await daemon.stop()

    asyncio.run(run())


def test_a_second_daemon_on_the_same_ports_leaves_the_live_token_alone(tmp_path):
    config = load_config(node_file(tmp_path))

    async def run():
        daemon = NodeDaemon(config)
        await daemon.start()
        try:
            token = read_token(tmp_path / "A.token")
            port = daemon.management_port
            km = dataclasses.replace(config.key_manager,
                                     management_listen=f"127.0.0.1:{port}",
                                     kq1_socket=tmp_path / "other.sock",
                                     store_path=tmp_path / "other.sqlite",
                                     management_token_file=tmp_path / "A.token")
            second = NodeDaemon(dataclasses.replace(config, key_manager=km))
            with pytest.raises(OSError, match=r"address already in use|Errno 98"):
                await second.start()   # the management port is taken
            with contextlib.suppress(Exception):
                await second.stop()
            assert read_token(tmp_path / "A.token") == token
            async with aiohttp.ClientSession() as http:
                code, _ = await answer(http, "POST",
                                       f"http://127.0.0.1:{port}/modules/A%2Fab/stop", token)
            assert code == 404   # still authenticated with the live daemon's token
        finally:
            await daemon.stop()

    asyncio.run(run())
