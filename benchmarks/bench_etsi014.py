"""ETSI GS QKD 014 key delivery: enc_keys + dec_keys pairs over mutual TLS, durable storage on.

Prints one JSON document to stdout (progress goes to stderr). The target (issue 5): at least
1,000 delivered 256-bit keys per second through enc_keys + dec_keys pairs, p99 latency of one
request at most 20 ms, mutual TLS and durable storage on.

Set-up: a child process runs two key managers, A and B, each on its own SQLite key store on disk
(WAL, synchronous=FULL: every supply is fsynced before it is answered), wired in memory (what Kx
carries), each behind its own ETSI 014 HTTPS server with mutual TLS (throw-away EC P-256 CA and
certificates). This process is the load: ``--concurrency`` master/slave pairs, each looping
``POST enc_keys`` (master ``alice-app`` at A, ``number`` keys of 256 bits) then ``POST dec_keys``
(slave ``bob-app`` at B, the same IDs), over kept-alive connections, and checking that both
sides got the same bytes. Every request's latency is recorded; a scenario runs for
``--duration`` seconds after a short warm-up.

Peers: no other ETSI 014 KME could be run here side by side. None is packaged on PyPI; the two
public reference KMEs are source repositories, not installable on this machine. So the
scenarios compare our server with itself: keys per request and concurrency.

Headline: ETSI 014 leaves the number of keys per request to the application (up to the KME's
max_key_per_request, 128 here), and the target counts delivered keys, so the headline scenario
is one application pair asking for 32 keys per request (:data:`HEADLINE`): every request waits
for fsyncs whatever its size (enc_keys: the master KME's commit and the slave KME's, which
overlap; dec_keys: the slave KME's), so 1,000 keys/s with one key per request would need
~3,000 fsyncs per second on this disk, while 32 keys per request need ~100. The other scenarios
show the trade: smaller requests (fewer keys/s), more pairs (queueing: longer tails).

The machine is shared: CPU time (server and load-generator processes, and the server's CPU per
delivered key in each scenario) and the load average are reported next to wall-clock figures.

Usage: python benchmarks/bench_etsi014.py [--duration 10] [--scenarios 32x1,1x4,8x4,64x1,32x4]
       (scenario = keys per request x concurrent pairs; the first is the headline)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

WIPE_DELAY_S = 0.2
# keys per request x concurrent application pairs (see the module docstring)
HEADLINE = "32x1"
KEY_BITS = 256
LINK_KEY_BYTES = 4096          # one distilled chunk: 32 kbit
API = "/api/v1/keys"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rusage(who: int) -> dict[str, float]:
    r = resource.getrusage(who)
    return {"user_s": round(r.ru_utime, 3), "sys_s": round(r.ru_stime, 3),
            "max_rss_mib": round(r.ru_maxrss / 1024, 1)}


# --- certificates ---------------------------------------------------------------------------

def make_pki(d: Path) -> dict[str, Any]:
    """A throw-away CA, a KME certificate for 127.0.0.1 and SAE certificates (CN = SAE ID)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(cn: str, key: Any, ca_key: Any, *, ca: bool, san: bool = False) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name("bench CA"))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: Any) -> list[str]:
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return [str(d / f"{stem}.crt"), str(d / f"{stem}.key")]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    write("ca", issue("bench CA", ca_key, ca_key, ca=True), ca_key)
    out: dict[str, Any] = {"ca": str(d / "ca.crt")}
    for who, san in (("kme", True), ("alice-app", False), ("bob-app", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[who] = write(who, issue(who, key, ca_key, ca=False, san=san), key)
    return out


# --- the server process ---------------------------------------------------------------------

class DirectPeer:
    def __init__(self, me: str, peer: Any) -> None:
        self.me, self.peer = me, peer

    async def notify_supply(self, plans: Any) -> None:
        await self.peer.on_supply_notification(self.me, plans)


class MemorySupply:
    """Storage off: keys drawn from os.urandom, held in a dict shared by the two KMEs, popped
    when delivered. Only to separate the cost of HTTP + TLS from the cost of the store."""

    def __init__(self, kme_id: str, shared: dict[uuid.UUID, tuple[bytes, set[str]]]) -> None:
        self.kme_id = kme_id
        self.shared = shared

    def status(self, master_sae: str, slave_sae: str) -> Any:
        from qkdnode.node.km.manager import SupplyStatus

        return SupplyStatus(self.kme_id, "peer", master_sae, slave_sae, KEY_BITS, 10**6, 10**6,
                            128, 8192, 8, 8)

    async def enc_keys(self, master_sae: str, slave_saes: Any, number: int,
                       size_bits: int) -> list[Any]:
        from qkdnode.node.km.records import SupplyKey

        out = [SupplyKey(uuid.uuid4(), os.urandom(size_bits // 8)) for _ in range(number)]
        for k in out:
            self.shared[k.key_id] = (k.material, set(slave_saes))
        return out

    async def dec_keys(self, slave_sae: str, master_sae: str, key_ids: Any) -> list[Any]:
        from qkdnode.node.errors import KeyNotFound
        from qkdnode.node.km.records import SupplyKey

        if any(k not in self.shared or slave_sae not in self.shared[k][1] for k in key_ids):
            raise KeyNotFound("a key is not known here")
        return [SupplyKey(k, self.shared.pop(k)[0]) for k in key_ids]


async def serve(workdir: Path, link_keys: int, storage: str, key_bytes: int,
                wipe_delay_s: float) -> None:
    from qkdnode.node.km import KeyManager, LinkKey, SqliteKeyStore, SupplyLimits
    from qkdnode.node.km.etsi014 import Etsi014Server
    from qkdnode.node.km.etsi014_tls import make_server_ssl_context

    pki = json.loads((workdir / "pki.json").read_text())
    saes = {"alice-app": "A", "bob-app": "B"}
    limits = SupplyLimits(key_size_bits=KEY_BITS, max_key_per_request=128)
    stores = []
    a: Any
    b: Any
    if storage == "memory":
        shared: dict[uuid.UUID, tuple[bytes, set[str]]] = {}
        a, b = MemorySupply("kme-a", shared), MemorySupply("kme-b", shared)
    else:
        # wipe_delay_s as `qkdnode run` uses it by default (key_manager.wipe_delay_s); the
        # store's own wiper thread truncates the WAL when the delay is up
        stores = [SqliteKeyStore(workdir / f"{n}-{os.getpid()}.sqlite",
                                 max_key_count=10 * link_keys, wipe_delay_s=wipe_delay_s)
                  for n in "ab"]
        a = KeyManager(stores[0], "A", "kme-a", saes, limits=limits)
        b = KeyManager(stores[1], "B", "kme-b", saes, limits=limits)
        a.peers["B"] = DirectPeer("A", b)
        b.peers["A"] = DirectPeer("B", a)
        keys = [LinkKey(uuid.uuid4(), os.urandom(key_bytes), link="A-B", index=i)
                for i in range(link_keys)]
        for at in range(0, len(keys), 1000):
            await a.add_link_keys("B", keys[at:at + 1000], active=True)
            await b.add_link_keys("A", keys[at:at + 1000], active=True)
    ctx = make_server_ssl_context(pki["ca"], *pki["kme"])
    servers = [Etsi014Server(a, ctx), Etsi014Server(b, ctx)]
    for s in servers:
        await s.start()
    print(json.dumps({"A": servers[0].port, "B": servers[1].port}), flush=True)
    # Runs until the parent closes stdin, then reports this process's CPU time.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in servers:
        await s.stop()
    for st in stores:
        st.close()
    print(json.dumps(rusage(resource.RUSAGE_SELF)), flush=True)


# --- the load -------------------------------------------------------------------------------

async def pair_loop(session_a: Any, session_b: Any, urls: dict[str, str], number: int,
                    stop_at: float, measure_from: float, lat: dict[str, list[float]],
                    counts: dict[str, int]) -> None:
    enc_body = {"number": number, "size": KEY_BITS}
    while True:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            return
        async with session_a.post(urls["A"] + "/bob-app/enc_keys", json=enc_body) as r:
            body = await r.json()
            if r.status != 200:
                counts["errors"] += 1
                counts[f"enc_{r.status}"] = counts.get(f"enc_{r.status}", 0) + 1
                await asyncio.sleep(0.01)
                continue
        t1 = time.perf_counter()
        master = {k["key_ID"]: k["key"] for k in body["keys"]}
        ids = {"key_IDs": [{"key_ID": k} for k in master]}
        async with session_b.post(urls["B"] + "/alice-app/dec_keys", json=ids) as r:
            body = await r.json()
            ok = r.status == 200
        t2 = time.perf_counter()
        if not ok or {k["key_ID"]: k["key"] for k in body["keys"]} != master:
            counts["errors"] += 1
            continue
        if t0 >= measure_from:
            lat["enc_keys"].append(t1 - t0)
            lat["dec_keys"].append(t2 - t1)
            counts["keys"] += len(master)
            counts["bytes"] += sum(len(base64.b64decode(v)) for v in master.values())


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1e3, 2)


async def run_scenario(pki: dict[str, Any], ports: dict[str, int], number: int,
                       concurrency: int, duration: float, warmup: float,
                       server_pid: int) -> dict[str, Any]:
    import aiohttp

    from qkdnode.node.km.etsi014_tls import make_client_ssl_context

    urls = {n: f"https://127.0.0.1:{p}{API}" for n, p in ports.items()}
    ctx_a = make_client_ssl_context(pki["ca"], *pki["alice-app"])
    ctx_b = make_client_ssl_context(pki["ca"], *pki["bob-app"])
    lat: dict[str, list[float]] = {"enc_keys": [], "dec_keys": []}
    counts = {"keys": 0, "bytes": 0, "errors": 0}
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx_a)) as sa, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx_b)) as sb:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def cpu_at_start() -> tuple[float | None, float]:
            await asyncio.sleep(warmup)
            return process_cpu_s(server_pid), time.process_time()

        sampler = asyncio.create_task(cpu_at_start())
        await asyncio.gather(*(pair_loop(sa, sb, urls, number, stop_at, measure_from, lat,
                                         counts) for _ in range(concurrency)))
        # Requests started before stop_at finish after it: count the real window.
        window = time.perf_counter() - measure_from
        server_cpu0, load_cpu0 = await sampler
        server_cpu1, load_cpu1 = process_cpu_s(server_pid), time.process_time()
    keys = max(counts["keys"], 1)
    per_key = {"server_us": None if server_cpu0 is None or server_cpu1 is None
               else round((server_cpu1 - server_cpu0) / keys * 1e6, 1),
               "load_generator_us": round((load_cpu1 - load_cpu0) / keys * 1e6, 1)}
    both = lat["enc_keys"] + lat["dec_keys"]
    return {
        "keys_per_request": number, "concurrent_pairs": concurrency,
        "delivered_keys_per_s": round(counts["keys"] / window, 1),
        "delivered_key_bits": KEY_BITS,
        "pairs_completed": len(lat["enc_keys"]), "errors": counts["errors"],
        "latency_ms": {
            name: {"p50": pct(xs, 0.5), "p90": pct(xs, 0.9), "p99": pct(xs, 0.99),
                   "max": pct(xs, 1.0)} for name, xs in (*lat.items(), ("all", both))},
        "target_met": counts["keys"] / window >= 1000 and pct(both, 0.99) <= 20.0,
        "window_s": round(window, 2),
        "load_generator_cpu_s": round(time.process_time() - cpu0, 2),
        "cpu_per_delivered_key": per_key,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **{k: v for k, v in counts.items() if k.startswith("enc_")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--scenarios", default=f"{HEADLINE},1x4,8x4,64x1,32x4",
                    help="comma list of KEYSxPAIRS (keys per request x concurrent pairs); the "
                         "first is reported as the headline")
    ap.add_argument("--link-keys", type=int, default=0,
                    help=f"link keys of {LINK_KEY_BYTES} bytes to load (0: enough for the run)")
    ap.add_argument("--storage", default="sqlite,memory",
                    help="comma list: sqlite (durable, the target's setting) and/or memory "
                         "(storage off: the cost of HTTP and TLS alone)")
    ap.add_argument("--link-key-bytes", type=int, default=LINK_KEY_BYTES,
                    help="bytes per stored link key: 4096 as a vendor box's chunks, 32 as "
                         "qkdnode's own modules push them (default: %(default)s)")
    ap.add_argument("--wipe-delay", type=float, default=WIPE_DELAY_S,
                    help="key_manager.wipe_delay_s: how long destroyed key bytes may stay in "
                         "the WAL (default %(default)s, as `qkdnode run`)")
    ap.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve), args.link_keys, args.storage, args.link_key_bytes,
                          args.wipe_delay))
        return
    scenarios = [tuple(int(v) for v in s.split("x")) for s in args.scenarios.split(",")]
    # Budget 6,000 keys/s per scenario, never reached on 2 cores: the pool must not run dry.
    need = int(6000 * (args.duration + args.warmup + 2) * KEY_BITS / 8 * len(scenarios))
    link_keys = args.link_keys or need // args.link_key_bytes + 1
    with tempfile.TemporaryDirectory(prefix="bench_etsi014_") as tmp:
        work = Path(tmp)
        pki = make_pki(work)
        (work / "pki.json").write_text(json.dumps(pki))
        results = []
        server_cpu = {}
        for storage in args.storage.split(","):
            log(f"storage {storage}: loading {link_keys} link keys of {args.link_key_bytes} bytes "
                "into both stores ..." if storage == "sqlite" else f"storage {storage} ...")
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(work), "--link-keys", str(link_keys),
                 "--storage", storage, "--link-key-bytes", str(args.link_key_bytes),
                 "--wipe-delay", str(args.wipe_delay)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True)
            assert child.stdin is not None
            assert child.stdout is not None
            ports = json.loads(child.stdout.readline())
            for number, conc in scenarios:
                log(f"  {number} keys/request, {conc} concurrent pairs ...")
                res = asyncio.run(run_scenario(pki, ports, number, conc, args.duration,
                                               args.warmup, child.pid))
                log(f"    {res['delivered_keys_per_s']} keys/s, p99 "
                    f"{res['latency_ms']['all']['p99']} ms")
                results.append({"storage": storage, **res})
            child.stdin.close()
            server_cpu[storage] = json.loads(child.stdout.readline())
            child.wait(30)
    print(json.dumps({
        "benchmark": "etsi014_enc_dec_pairs",
        "target": {"delivered_keys_per_s": 1000, "key_bits": KEY_BITS, "p99_ms": 20.0},
        "setup": {"tls": "mutual, TLS 1.3, EC P-256 certificates",
                  "storage": {"sqlite": "SQLite per node, WAL, synchronous=FULL, "
                                        "secure_delete=ON (the target's setting)",
                              "memory": "storage off: dict in memory (HTTP + TLS cost only)"},
                  "link_keys_loaded": link_keys, "link_key_bytes": args.link_key_bytes,
                  "wipe_delay_s": args.wipe_delay,
                  "kx": "in memory, both KMEs in one server process"},
        "peers": [], "peers_note": "no other ETSI 014 KME can be installed and run here",
        "headline": results[0] if results else None,
        "scenarios": results,
        "server_process_by_storage": server_cpu,
        "load_generator_process": rusage(resource.RUSAGE_SELF),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
    }, indent=2))


if __name__ == "__main__":
    main()
