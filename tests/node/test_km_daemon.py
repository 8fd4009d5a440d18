"""Two key management daemons on one machine: keys in over Kq-1, synchronised over Kx (mutual
TLS), out to applications over ETSI GS QKD 014; status, metrics, `qkdnode run` and `status`."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import uuid

import aiohttp
import pytest

from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError
from qkdnode.node.io.kq1 import Kq1Client
from qkdnode.node.km import LinkKey
from qkdnode.node.km.daemon import NodeDaemon
from qkdnode.node.km.etsi014_tls import make_client_ssl_context
from qkdnode.node.km.pki import make_pki


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def network(tmp_path):
    """Configuration files of nodes A and B (peers of each other), and their PKI."""
    make_pki(tmp_path / "pki", ["A", "B"], ["app-a", "app-b"])
    ports = free_ports(6)
    files = {}
    for i, (me, other) in enumerate((("A", "B"), ("B", "A"))):
        kx, etsi, mgmt = ports[3 * i: 3 * i + 3]
        other_kx = ports[3 * (1 - i)]
        text = f"""
[node]
name = "{me}"
[key_manager]
store_path = "{me}.sqlite"
kq1_socket = "{me}.sock"
kx_listen = "127.0.0.1:{kx}"
etsi014_listen = "127.0.0.1:{etsi}"
management_listen = "127.0.0.1:{mgmt}"
[key_manager.saes]
"app-a" = "A"
"app-b" = "B"
[key_manager.tls]
ca = "pki/ca.pem"
cert = "pki/{me}.pem"
key = "pki/{me}.key"
[[peers]]
name = "{other}"
kx_address = "127.0.0.1:{other_kx}"
"""
        files[me] = tmp_path / f"{me}.toml"
        files[me].write_text(text)
    return tmp_path, files


async def _wait(predicate, limit_s=10.0):
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_keys_flow_from_kq1_to_applications(network):
    tmp, files = network

    async def run():
        daemons = {n: NodeDaemon(load_config(f), str(f)) for n, f in files.items()}
        for d in daemons.values():
            await d.start()
        try:
            keys = [LinkKey(uuid.uuid4(), bytes([i]) * 32, link="A-B", block=1, index=i)
                    for i in range(1, 9)]
            for me, other in (("A", "B"), ("B", "A")):
                client = Kq1Client(tmp / f"{me}.sock", f"mod-{me}", "A-B", other)
                assert await client.push(keys) == 8
                await client.close()
            await _wait(lambda: all(
                d.store.levels().get(p, None) is not None
                and d.store.levels()[p].available_keys == 8
                for d, p in ((daemons["A"], "B"), (daemons["B"], "A"))))

            def ctx(sae):
                return make_client_ssl_context(tmp / "pki/ca.pem", tmp / f"pki/{sae}.pem",
                                               tmp / f"pki/{sae}.key")

            a_url = f"https://localhost:{daemons['A'].etsi.port}/api/v1/keys"
            b_url = f"https://localhost:{daemons['B'].etsi.port}/api/v1/keys"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{a_url}/app-b/enc_keys", json={"number": 2, "size": 512},
                                     ssl=ctx("app-a")) as r:
                    assert r.status == 200, await r.text()
                    enc = await r.json()
                ids = [{"key_ID": k["key_ID"]} for k in enc["keys"]]
                async with http.post(f"{b_url}/app-a/dec_keys", json={"key_IDs": ids},
                                     ssl=ctx("app-b")) as r:
                    assert r.status == 200, await r.text()
                    dec = await r.json()
                assert [base64.b64decode(k["key"]) for k in dec["keys"]] == \
                    [base64.b64decode(k["key"]) for k in enc["keys"]]
                async with http.post(f"{b_url}/app-a/dec_keys", json={"key_IDs": ids},
                                     ssl=ctx("app-b")) as r:
                    assert r.status == 400    # delivered once only
                mgmt = f"http://127.0.0.1:{daemons['A'].management_port}"
                async with http.get(f"{mgmt}/status") as r:
                    status = await r.json()
                async with http.get(f"{mgmt}/metrics") as r:
                    metrics = await r.text()
            assert status["peers"] == {"B": True}
            assert status["sae_pairs"] == {"app-a->app-b": {"pool": "B", "available_keys": 4}}
            assert [a["kind"] for a in status["alarms"]] == ["pool_low"]
            assert "delivered_to_masters" in status["rates_per_s"]
            assert 'qkdnode_alarms{kind="pool_low"} 1.0' in metrics
            assert status["pools"]["B"]["available_bits"] == 8 * 256 - 2 * 512
            assert status["counters"]["delivered_to_masters"] == 2
            assert 'qkdnode_pool_available_bits{pool="B"} 1024.0' in metrics
            for k in enc["keys"]:
                assert k["key"] not in metrics
                assert k["key"] not in json.dumps(status)
        finally:
            for d in daemons.values():
                await d.stop()

    asyncio.run(run())


def test_a_node_without_tls_is_refused_with_the_key_named(tmp_path):
    (tmp_path / "n.toml").write_text('[node]\nname = "A"\n')
    with pytest.raises(ConfigError, match=r"key_manager\.tls"):
        NodeDaemon(load_config(tmp_path / "n.toml"), "n.toml")


def test_qkdnode_run_and_status_commands(network):
    _, files = network
    proc = subprocess.Popen([sys.executable, "-m", "qkdnode", "run", "--config", str(files["A"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "node A running" in line, line + proc.stderr.read()
        out = subprocess.run([sys.executable, "-m", "qkdnode", "status", "--config",
                              str(files["A"])], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "node A" in out.stdout
        assert "B DOWN" in out.stdout      # B is not running
        assert "ALARM peer_down: no Kx connection to B" in out.stdout
        out = subprocess.run([sys.executable, "-m", "qkdnode", "status", "--config",
                              str(files["B"])], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert "does not answer" in out.stderr
    finally:
        proc.send_signal(2)
        proc.wait(timeout=30)
    assert "node A stopped" in proc.stdout.read()


def test_qkdnode_pki_creates_certificates_and_never_overwrites(tmp_path):
    from qkdnode.node.cli import main

    assert main(["pki", str(tmp_path / "p"), "--node", "A", "--sae", "app"]) == 0
    assert (tmp_path / "p" / "app.key").stat().st_mode & 0o777 == 0o600
    before = (tmp_path / "p" / "ca.pem").read_bytes()
    assert main(["pki", str(tmp_path / "p"), "--node", "B"]) == 2
    assert (tmp_path / "p" / "ca.pem").read_bytes() == before


def test_kq2_module_status_in_status_and_metrics_and_control(network, monkeypatch):
    """A module on the daemon's Kq-1 socket: the daemon asks for its status over Kq-2 and shows
    it (with the QBER of its last key, from key metadata) in /status and /metrics; POST
    /modules/NAME/stop and /start reach it; a stopping daemon stops it first."""
    from qkdnode.node.km import daemon as daemon_mod
    from qkdnode.node.protocol.kq1 import StartRequested, StopRequested

    monkeypatch.setattr(daemon_mod, "MODULE_STATUS_EVERY_S", 0.1)
    tmp, files = network
    seen: list[type] = []
    report = {"link": "A-B", "role": "alice", "running": True, "sync": "n/a", "qber": 0.021,
              "sifted_rate_bps": 1234.5, "secret_key_rate_bps": 321.0, "blocks_completed": 3,
              "blocks_aborted": 1, "last_abort": "QBER above 0.11"}

    async def control(event):
        seen.append(type(event))
        report["running"] = isinstance(event, StartRequested)

    async def run():
        daemon = NodeDaemon(load_config(files["A"]), str(files["A"]))
        await daemon.start()
        client = Kq1Client(tmp / "A.sock", "A/ab", "A-B", "B", on_control=control,
                           status=lambda: dict(report))
        keeping = asyncio.create_task(client.keep_connected())
        try:
            await client.push([LinkKey(uuid.uuid4(), b"k" * 32, link="A-B", block=0, index=0,
                                       qber=0.03)])
            await _wait(lambda: "A/ab" in daemon.kq1.last_status)
            mgmt = f"http://127.0.0.1:{daemon.management_port}"
            token = (tmp / "A.token").read_text().strip()
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {token}"}) as http:
                async with http.get(f"{mgmt}/status") as r:
                    status = await r.json()
                async with http.get(f"{mgmt}/metrics") as r:
                    metrics = await r.text()
                module = status["modules"]["A/ab"]
                assert module["connected"] is True
                assert module["key_qber"] == 0.03
                assert module["qber"] == 0.021
                assert module["blocks_completed"] == 3
                assert module["last_abort"] == "QBER above 0.11"
                assert module["status_age_s"] < 5
                assert 'qkdnode_module_qber{module="A/ab"} 0.021' in metrics
                assert 'qkdnode_module_secret_key_rate_bps{module="A/ab"} 321.0' in metrics
                assert 'qkdnode_module_blocks_total{module="A/ab",outcome="aborted"} 1.0' \
                    in metrics
                assert 'qkdnode_module_running{module="A/ab"} 1.0' in metrics
                async with http.post(f"{mgmt}/modules/A%2Fab/stop") as r:
                    assert r.status == 200, await r.text()
                await _wait(lambda: seen[-1:] == [StopRequested])
                await _wait(lambda: daemon.kq1.last_status["A/ab"]["running"] is False)
                async with http.get(f"{mgmt}/status") as r:
                    assert (await r.json())["modules"]["A/ab"]["held_stopped"] is True
                async with http.post(f"{mgmt}/modules/A%2Fab/start") as r:
                    assert r.status == 200
                await _wait(lambda: seen[-1:] == [StartRequested])
                async with http.post(f"{mgmt}/modules/nobody/stop") as r:
                    assert r.status == 404
                    assert "not connected" in (await r.json())["message"]
                assert "nobody" not in daemon.kq1.held  # a misspelt name is not held
                # The module's connection fails under the request (a reset; a module that
                # stopped reading): 503, and it is not held.
                writer = daemon.kq1.sessions["A/ab"].writer

                async def reset() -> None:
                    raise ConnectionResetError(104, "Connection reset by peer")

                async def stuck() -> None:
                    await asyncio.Event().wait()

                monkeypatch.setattr(daemon_mod, "MODULE_STATUS_TIMEOUT_S", 0.2)
                for drain in (reset, stuck):
                    monkeypatch.setattr(writer, "drain", drain)
                    async with http.post(f"{mgmt}/modules/A%2Fab/stop") as r:
                        assert r.status == 503, await r.text()
                        assert "module connection lost" in (await r.json())["message"]
                    assert "A/ab" not in daemon.kq1.held
                monkeypatch.delattr(writer, "drain")
                await _wait(lambda: seen[-2:] == [StopRequested, StopRequested])
                async with http.post(f"{mgmt}/modules/A%2Fab/start") as r:
                    assert r.status == 200
                await _wait(lambda: seen[-1:] == [StartRequested])
        finally:
            await daemon.stop()          # stops its modules first
            await _wait(lambda: seen[-1:] == [StopRequested])
            keeping.cancel()
            await client.close()
        # on connect (start), stop, start, the two stops whose drain failed (the bytes were
        # written before it), start, and the daemon's stop
        assert seen == [StartRequested, StopRequested, StartRequested, StopRequested,
                        StopRequested, StartRequested, StopRequested]

    asyncio.run(run())
