"""kill -9 of a key manager in the middle of enc_keys, dec_keys or a relay: after a restart no
key is delivered twice, the ends agree on every key both handed out, and every key the master
was given is delivered to the slave unless the slave's own request was cut off by the kill.

No port is chosen by the harness and then released (another process could take it before the
node binds it): every node listens on port 0 and its start-up line names the bound ports. A
peer's Kx address must stay the same across the victim's restart, so each node's peers dial a
relay the harness listens on for the whole trial (:class:`KxRelay`, bytes only: TLS runs end to
end between the nodes), which forwards to wherever the node listens now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from qkdnode.node.io.kq1 import Kq1Client
from qkdnode.node.km import LinkKey
from qkdnode.node.km.etsi014_tls import make_client_ssl_context
from qkdnode.node.km.pki import make_pki

SAES = {"app-a": "A", "app-b": "B", "app-c": "C"}
LINKS = {"A": ["B"], "B": ["A", "C"], "C": ["B"]}
CHUNKS = 48
# A trial's requests stop after its duration, or this long if the restarted network has not yet
# delivered a key to the slave by then.
MAX_TRIAL_S = 40.0
# The line `qkdnode run` prints once every interface listens.
RUNNING = re.compile(r"running: Kx port (\d+), ETSI 014 port (\d+), management port (\d+)")


class KxRelay:
    """TCP relays on 127.0.0.1 port 0, one per node, alive for a whole trial: a node's peers dial
    its relay, which forwards to the node's current Kx port (none while it is down: the
    connection is closed at once and the peer dials again, as it would a dead node)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.targets: dict[str, int | None] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.conns: set[asyncio.StreamWriter] = set()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def open(self, node):
        """Listens for ``node``'s peers; returns the port to give them as its Kx address."""
        self.targets[node] = None

        async def listen():
            server = await asyncio.start_server(lambda r, w: self._relay(node, r, w),
                                                "127.0.0.1", 0)
            self.servers.append(server)
            return server.sockets[0].getsockname()[1]

        return self._call(listen())

    def point(self, node, port):
        """Forwards new connections to ``port`` (None: the node is down; cut what is open)."""
        self.targets[node] = port
        if port is None:
            self.loop.call_soon_threadsafe(self._cut_all)

    def _cut_all(self):
        for w in list(self.conns):
            w.close()

    async def _pump(self, reader, writer):
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _relay(self, node, reader, writer):
        port = self.targets.get(node)
        up_writer = None
        try:
            if port is not None:
                with contextlib.suppress(OSError):
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            if up_writer is None:
                return
            self.conns.update((writer, up_writer))
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self.conns.discard(w)
                    w.close()

    def close(self):
        async def shut():
            self._cut_all()
            for server in self.servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Net:
    def __init__(self, tmp):
        self.tmp = tmp
        make_pki(tmp / "pki", list(LINKS), list(SAES))
        self.relay = KxRelay()
        kx_address = {n: self.relay.open(n) for n in LINKS}
        self.ports = {}
        self.procs = {}
        self.log = open(tmp / "nodes.log", "a")  # noqa: SIM115 - closed in stop_all
        for node, peers in LINKS.items():
            saes = "\n".join(f'"{s}" = "{n}"' for s, n in SAES.items())
            peer_text = "".join(f'[[peers]]\nname = "{q}"\nkx_address = "127.0.0.1:'
                                f'{kx_address[q]}"\n' for q in peers)
            (tmp / f"{node}.toml").write_text(f"""
[node]
name = "{node}"
[key_manager]
store_path = "{node}.sqlite"
kq1_socket = "{node}.sock"
kx_listen = "127.0.0.1:0"
etsi014_listen = "127.0.0.1:0"
management_listen = "127.0.0.1:0"
[key_manager.saes]
{saes}
[key_manager.tls]
ca = "pki/ca.pem"
cert = "pki/{node}.pem"
key = "pki/{node}.key"
{peer_text}""")

    def spawn(self, node):
        return subprocess.Popen([sys.executable, "-m", "qkdnode", "--log-level", "WARNING",
                                 "run", "--config", str(self.tmp / f"{node}.toml")],
                                stdout=subprocess.PIPE, stderr=self.log, text=True)

    def started(self, node, proc):
        """Reads ``node``'s start-up line: the ports it bound."""
        line = proc.stdout.readline()
        bound = RUNNING.search(line)
        if bound is None:
            self.log.flush()
            tail = (self.tmp / "nodes.log").read_text()[-2000:]
            raise AssertionError(f"node {node} did not start: {line!r}; its log ends:\n{tail}")
        kx, etsi, mgmt = map(int, bound.groups())
        self.ports[node] = {"kx": kx, "etsi": etsi, "mgmt": mgmt}
        self.relay.point(node, kx)
        self.procs[node] = proc

    def start(self, *nodes):
        """Starts ``nodes`` side by side (their imports overlap) and waits until each listens."""
        procs = {node: self.spawn(node) for node in nodes}
        for node, proc in procs.items():
            self.procs[node] = proc   # stopped by stop_all even if another fails to start
        for node, proc in procs.items():
            self.started(node, proc)

    def kill(self, node):
        self.relay.point(node, None)
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait()

    def stop_all(self):
        self.log.close()
        self.relay.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def status(self, node):
        url = f"http://127.0.0.1:{self.ports[node]['mgmt']}/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)

    def wait_ready(self, node, pools, limit_s=60):
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                st = self.status(node)
                if all(st["peers"].get(p) and st["pools"].get(p, {}).get("available_keys")
                       for p in pools):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"node {node} not ready for pools {pools}")

    def fill(self):
        async def push():
            for a, b in (("A", "B"), ("B", "C")):
                keys = [LinkKey(uuid.uuid4(), os.urandom(32), link=f"{a}-{b}", index=i)
                        for i in range(CHUNKS)]
                for me, other in ((a, b), (b, a)):
                    client = Kq1Client(self.tmp / f"{me}.sock", f"mod-{me}-{other}", f"{a}-{b}",
                                       other)
                    await client.push(keys)
                    await client.close()
        asyncio.run(push())

    def ctx(self, sae):
        pki = self.tmp / "pki"
        return make_client_ssl_context(pki / "ca.pem", pki / f"{sae}.pem", pki / f"{sae}.key")

    def call(self, node, sae, path, body):
        url = f"https://localhost:{self.ports[node]['etsi']}/api/v1/keys/{path}"
        req = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx(sae), timeout=20) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def trial(tmp, seed, victim, slave="app-b", duration_s=10.0):
    """One run: requests flow for ``duration_s`` while ``victim`` is killed at a random moment
    and restarted."""
    rng = random.Random(seed)
    net = Net(tmp)
    try:
        net.start(*LINKS)
        net.fill()
        net.wait_ready("A", ["B"])
        net.wait_ready("C", ["B"])
        slave_node = SAES[slave]
        master_got, slave_got, cut_off = {}, {}, set()
        killer = threading.Timer(rng.uniform(0.05, 1.0), net.kill, [victim])
        killer.start()
        started = time.monotonic()
        restarted = False
        delivered_after_restart = 0

        def go_on():
            # at least duration_s; longer (up to MAX_TRIAL_S) until the restarted network
            # delivered a key to the slave, so a slow restart on a loaded machine still tests
            # the recovery
            elapsed = time.monotonic() - started
            return elapsed < duration_s or (delivered_after_restart == 0
                                            and elapsed < MAX_TRIAL_S)

        while go_on():
            if not restarted and net.procs[victim].poll() is not None:
                net.start(victim)
                restarted = True
            try:
                status, body = net.call("A", "app-a", f"{slave}/enc_keys",
                                        {"number": 1, "size": 256})
            except (OSError, urllib.error.URLError):
                continue          # A was killed during the request: nothing acknowledged
            if status != 200:
                continue          # 503 while a peer is down: nothing handed out
            for k in body["keys"]:
                assert k["key_ID"] not in master_got, "a key ID was delivered twice to master"
                master_got[k["key_ID"]] = k["key"]
            for k in body["keys"]:
                for _ in range(200):
                    try:
                        status, got = net.call(slave_node, slave, "app-a/dec_keys",
                                               {"key_IDs": [{"key_ID": k["key_ID"]}]})
                    except (OSError, urllib.error.URLError):
                        cut_off.add(k["key_ID"])   # the slave's request died with its KM
                        time.sleep(0.1)
                        continue
                    if status == 200:
                        (key,) = got["keys"]
                        assert key["key_ID"] not in slave_got, "delivered twice to the slave"
                        slave_got[key["key_ID"]] = key["key"]
                        delivered_after_restart += restarted
                        break
                    if k["key_ID"] in cut_off:
                        break        # it was delivered in the request that died: 400 now
                    time.sleep(0.1)  # the slave's KM is restarting
        killer.cancel()
        for key_id, key in master_got.items():
            if key_id in slave_got:
                assert base64.b64decode(slave_got[key_id]) == base64.b64decode(key)
            else:
                assert key_id in cut_off, "a key the master was given never reached the slave"
        assert set(slave_got) <= set(master_got)
        return len(master_got), len(slave_got), len(cut_off)
    finally:
        net.stop_all()


@pytest.mark.parametrize(("seed", "victim", "slave"), [(1, "A", "app-b"), (2, "B", "app-b"),
                                                       (3, "B", "app-c")])
def test_kill_9_during_supply_and_relay(tmp_path, seed, victim, slave):
    # 6 s of requests: the kill lands in the first second, the restart takes 1-3 s
    master, slave_n, _ = trial(tmp_path, seed, victim, slave, duration_s=6.0)
    assert master > 0
    assert slave_n > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(50))
def test_kill_9_during_supply_and_relay_many(tmp_path, seed):
    victim, slave = [("A", "app-b"), ("B", "app-b"), ("B", "app-c"), ("C", "app-c"),
                     ("A", "app-c")][seed % 5]
    trial(tmp_path, 100 + seed, victim, slave)

