"""Key relay latency across three hops: node A to node D through trusted nodes B and C.

Four key managers (SQLite stores with synchronous=FULL, Kx over TCP with mutual TLS on
127.0.0.1), each in its own process (``qkdnode.node.km`` objects, started by this script), with
pre-shared link keys on A-B, B-C and C-D. The origin A relays ``--relays`` keys of 256 bits to D
one after another (``KxAgent.relay_key``: a one-time-pad hop on each link, the destination's
durable commit, the answers back); each relay's wall time is recorded. Prints JSON with p50, p90,
p99 and max latency and the load average. Target of issue 5: p99 <= 50 ms.

There is no open implementation of ITU-T Q.4163 key relay to run beside it here (the public ETSI
014 reference KMEs do not relay); the JSON says so.

Usage: python benchmarks/bench_relay.py [--relays 300] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

NODES = ["A", "B", "C", "D"]
LINKS = [("A", "B"), ("B", "C"), ("C", "D")]


async def _node(name: str, tmp: Path, bound: Any, peers_in: Any,
                keys: dict[tuple[str, str], list], relays: int, warmup: int, out: Any,
                ready: Any, go: Any) -> None:
    from qkdnode.node.io.kx import KxService
    from qkdnode.node.km import KeyManager, LinkKey, SqliteKeyStore
    from qkdnode.node.km.etsi014_tls import make_client_ssl_context, make_server_ssl_context
    from qkdnode.node.km.network import KxAgent

    store = SqliteKeyStore(tmp / f"{name}.sqlite", max_key_count=10**6)
    adjacent = [b if a == name else a for a, b in LINKS if name in (a, b)]
    for peer in adjacent:
        link = (name, peer) if (name, peer) in keys else (peer, name)
        store.add_link_keys(peer, [LinkKey(uuid.UUID(k), bytes.fromhex(m))
                                   for k, m in keys[link]], time.time(), active=True)
    manager = KeyManager(store, name, name, {})
    pki = tmp / "pki"
    server = make_server_ssl_context(pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key")
    client = make_client_ssl_context(pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key")
    # Listens on port 0 and tells the parent the port; dials the peers once it knows theirs
    # (no port picked, released and bound later: another process could take it meanwhile).
    kx = KxService(name, "127.0.0.1", 0, {}, server, client)
    agent = KxAgent(manager, kx, adjacent)
    kx.bind(agent)
    await kx.start()
    bound.put((name, kx.port))
    ports = await asyncio.get_running_loop().run_in_executor(None, peers_in.get)
    for peer in adjacent:
        kx.add_peer(peer, "127.0.0.1", ports[peer])
    for peer in adjacent:
        await kx.connected(peer, timeout_s=30)
    ready.set()
    if name != "A":
        await asyncio.sleep(3600)  # serves until the parent terminates it
    # A: wait until the link states of B, C, D have arrived, then relay
    for _ in range(400):
        kx.flood(agent.advertisement(), exclude=None)
        if all(agent.links.links.get(n) for n in ("B", "C", "D")):
            break
        await asyncio.sleep(0.05)
    times = []
    for i in range(warmup + relays):
        t0 = time.perf_counter()
        await agent.relay_key("D", 32)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    out.put({"times": times, "cpu_a": time.process_time()})
    go.set()
    await kx.stop()
    store.close()


def _run_node(*args: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_node(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relays", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    from qkdnode.node.km.pki import make_pki

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_pki(tmp / "pki", NODES)
        n_chunks = args.relays + args.warmup + 10
        keys = {link: [(str(uuid.uuid4()), os.urandom(32).hex()) for _ in range(n_chunks)]
                for link in LINKS}
        ctx = mp.get_context("spawn")
        out, go, bound = ctx.Queue(), ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in NODES]
        peers_in = [ctx.Queue() for _ in NODES]
        procs = [ctx.Process(target=_run_node, args=(n, tmp, bound, q, keys, args.relays,
                                                     args.warmup, out, r, go), daemon=True)
                 for n, r, q in zip(NODES, readies, peers_in, strict=True)]
        for p in procs:
            p.start()
        ports = dict(bound.get(timeout=120) for _ in NODES)
        for q in peers_in:
            q.put(ports)
        result = out.get(timeout=600)
        for p in procs:
            p.terminate()
            p.join(10)
    ms = sorted(t * 1000 for t in result["times"])

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    print(json.dumps({
        "benchmark": "relay of a 256-bit key across 3 hops (A-B-C-D), mutual TLS, durable stores",
        "relays": len(ms), "p50_ms": round(pct(0.50), 2), "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2), "max_ms": round(ms[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 2), "target_p99_ms": 50,
        "peers": "none: no open Q.4163 relay implementation is available to run here",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg_1_5_15": os.getloadavg()},
    }, indent=2))


if __name__ == "__main__":
    main()
