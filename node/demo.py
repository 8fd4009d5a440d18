"""`qkdnode demo`: a QKD network on this machine, on the simulated bench.

Three nodes in a line, A - B - C. Each node runs its key manager (:class:`~.km.daemon.NodeDaemon`:
key store, Kq-1, Kx with mutual TLS, ETSI GS QKD 014, management port); each link (A-B, B-C)
runs its two QKD modules (:mod:`.module.launch`: Qsync, Qdist over loopback TCP, keys over Kq-1;
hosted with the key managers by :mod:`.module.host`, as ``qkdnode run`` hosts them) on a
simulated bench of its own (5 km of fibre, the Lim et al. 2014 detectors). Keys between A
and C have no QKD link: the key managers relay them through B by one-time pad.

Everything goes into a work directory: a CA with node and SAE certificates (``pki/``), the
configuration files (one per node for its key manager, one per link end for its module), the
key stores, the audit logs, and ``demo.json`` (written once every node's API is up) telling
scripts where each node's ETSI 014 API is and which SAE certificate to use. While it runs, the
demo prints the links' and pools' progress, and acts as an application once: it asks A for keys
shared with B's and with C's application and checks that B and C hand out the same keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import load_config
from .km.daemon import NodeDaemon
from .km.etsi014_client import Etsi014Client
from .km.etsi014_tls import make_client_ssl_context
from .km.pki import make_pki

__all__ = ["DEMO_NODES", "Demo", "run_demo"]

log = logging.getLogger(__name__)

DEMO_NODES = ("A", "B", "C")
LINKS = (("A", "B"), ("B", "C"))
# Each link's block: 2^26 slots at 1 GHz (67 ms of the link), about 85 000 sifted X bits at
# 5 km: enough for a positive finite-key length in every block (2^24 slots often is not).
BLOCK_SLOTS = 1 << 26
# The links' settings: 5 km of fibre and the decoy settings `qkdnode keyrate` optimises for it.
LINK_KM = 5.0
DECOY = {"mu1": 0.485, "mu2": 0.13, "p_mu1": 0.0577, "p_mu2": 0.5285, "q_x": 0.5}
# Bytes of the pre-shared authentication secret of each link.
SECRET_BYTES = 2048


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _km_section(node: str, ports: dict[str, int], saes: dict[str, str]) -> str:
    sae_lines = "\n".join(f'"{sae}" = "{where}"' for sae, where in saes.items())
    return f"""[key_manager]
store_path = "keys-{node}.sqlite"
kq1_socket = "kq1-{node}.sock"
kx_listen = "127.0.0.1:{ports['kx']}"
etsi014_listen = "127.0.0.1:{ports['etsi']}"
management_listen = "127.0.0.1:{ports['mgmt']}"
[key_manager.saes]
{sae_lines}
[key_manager.tls]
ca = "pki/ca.pem"
cert = "pki/{node}.pem"
key = "pki/{node}.key"
"""


def _peers(node: str, ports: dict[str, dict[str, int]]) -> str:
    adjacent = [b if a == node else a for a, b in LINKS if node in (a, b)]
    return "".join(f'[[peers]]\nname = "{p}"\nkx_address = "127.0.0.1:{ports[p]["kx"]}"\n'
                   for p in adjacent)


def _link_end(node: str, peer: str, link: str, role: str, qdist_port: int) -> str:
    qdist = "qdist_listen" if role == "transmitter" else "qdist_connect"
    decoy = "\n".join(f"{k} = {v}" for k, v in DECOY.items())
    return f"""[bench]
name = "{link}"
seed = {sum(map(ord, link))}
[bench.fibre]
length_km = {LINK_KM}
[bench.source]
mu1 = {DECOY['mu1']}
mu2 = {DECOY['mu2']}

[[links]]
name = "{link}"
peer = "{peer}"
role = "{role}"
{qdist} = "127.0.0.1:{qdist_port}"
auth_secret_file = "secret-{link}.bin"
audit_log = "audit-{link}-{node}.jsonl"
block_slots = {BLOCK_SLOTS}
[links.decoy]
{decoy}
[links.distillation]
kappa = 1e-15
code_length = 16000
qber_abort = 0.09  # the 16 000-bit codes are validated up to QBER 0.0918
"""


@dataclass
class Demo:
    """The files of a demo network (see :func:`prepare`)."""

    workdir: Path
    node_files: dict[str, Path] = field(default_factory=dict)
    end_files: list[Path] = field(default_factory=list)
    saes: dict[str, str] = field(default_factory=dict)


def prepare(workdir: Path) -> Demo:
    """Writes the PKI, the secrets and every configuration file into ``workdir``.

    Raises:
        FileExistsError: ``workdir`` exists and is not empty (nothing is overwritten).
    """
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(f"{workdir} is not empty; give a new or empty --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(workdir, saes={f"sae-{n}": n for n in DEMO_NODES})
    make_pki(workdir / "pki", list(DEMO_NODES), list(demo.saes))
    flat = iter(_free_ports(3 * len(DEMO_NODES) + len(LINKS)))
    ports = {n: {"kx": next(flat), "etsi": next(flat), "mgmt": next(flat)} for n in DEMO_NODES}
    for node in DEMO_NODES:
        path = workdir / f"{node}.toml"
        path.write_text(f'[node]\nname = "{node}"\n\n'
                        + _km_section(node, ports[node], demo.saes) + _peers(node, ports))
        demo.node_files[node] = path
    for a, b in LINKS:
        link = f"{a}{b}".lower()
        (workdir / f"secret-{link}.bin").write_bytes(os.urandom(SECRET_BYTES))
        qdist_port = next(flat)
        for node, peer, role in ((a, b, "transmitter"), (b, a, "receiver")):
            path = workdir / f"{link}-{node}.toml"
            path.write_text(f'[node]\nname = "{node}"\n\n'
                            + _link_end(node, peer, link, role, qdist_port)
                            + _km_section(node, ports[node], demo.saes) + _peers(node, ports))
            demo.end_files.append(path)
    return demo


def _demo_json(demo: Demo, daemons: dict[str, NodeDaemon]) -> dict[str, Any]:
    pki = (demo.workdir / "pki").resolve()
    return {"ca": str(pki / "ca.pem"), "workdir": str(demo.workdir.resolve()), "nodes": [
        {"name": node, "kme_id": daemons[node].manager.kme_id,
         "etsi014_url": f"https://127.0.0.1:{daemons[node].etsi.port}",
         "management_url": f"http://127.0.0.1:{daemons[node].management_port}",
         "saes": [{"sae_id": f"sae-{node}", "cert": str(pki / f"sae-{node}.pem"),
                   "key": str(pki / f"sae-{node}.key")}]}
        for node in DEMO_NODES]}


async def _first_keys(demo: Demo, daemons: dict[str, NodeDaemon], start: float,
                      say: Callable[[str], None], got: dict[str, float]) -> None:
    """Acts as A's application once keys exist: a key with B's application, then one with
    C's (relayed through B); checks that B and C hand out the same keys."""
    pki = demo.workdir / "pki"

    def client(node: str) -> Etsi014Client:
        ctx = make_client_ssl_context(pki / "ca.pem", pki / f"sae-{node}.pem",
                                      pki / f"sae-{node}.key")
        return Etsi014Client(f"https://localhost:{daemons[node].etsi.port}", ctx)

    for slave in ("B", "C"):
        while True:
            try:
                async with client("A") as a, client(slave) as s:
                    (key,) = await a.enc_keys(f"sae-{slave}", 1, 256)
                    (same,) = await s.dec_keys("sae-A", [key.key_id])
                break
            except Exception as exc:  # no key yet (503), or the peer not up: try again
                log.debug("first key A-%s not yet: %s", slave, exc)
                await asyncio.sleep(2.0)
        how = "over the A-B QKD link" if slave == "B" else "relayed through B"
        verdict = "identical" if same.material == key.material else "DIFFERENT (bug!)"
        if same.material == key.material:
            got[slave] = time.monotonic() - start
        say(f"first key A-{slave} ({how}) after {time.monotonic() - start:.0f} s: key "
            f"{key.key_id}, 256 bits, {verdict} at sae-A and sae-{slave}")


async def run_demo(workdir: Path, duration_s: float | None, interval_s: float,
                   say: Callable[[str], None] = print) -> int:
    """Runs the demo network until ``duration_s`` passes (None: until cancelled)."""
    from qkdnode.node.module.host import node_daemons, run_hosted, sim_benches
    from qkdnode.node.module.launch import open_ends, status_lines

    start = time.monotonic()
    demo = prepare(workdir)
    say(f"demo network A - B - C in {workdir} (certificates, configuration, key stores, logs)")
    configs = [(p.resolve(), load_config(p)) for p in demo.end_files]
    daemons = node_daemons([(p.resolve(), load_config(p)) for p in demo.node_files.values()]
                           + configs)
    for daemon in daemons.values():
        await daemon.start()
    info = _demo_json(demo, daemons)
    (workdir / "demo.json").write_text(json.dumps(info, indent=2))
    say(f"key managers up; {workdir / 'demo.json'} written")

    def show(current: list[Any]) -> None:
        say(f"--- {time.monotonic() - start:.0f} s")
        for line in status_lines(current):
            say("  " + line)
        for node, daemon in daemons.items():
            pools = ", ".join(f"{pool}: {lv.available_bytes * 8} bits"
                              for pool, lv in daemon.store.levels().items())
            say(f"  node {node} key pools: {pools or 'empty'}")

    got: dict[str, float] = {}
    first = asyncio.create_task(_first_keys(demo, daemons, start, say, got))
    stop = asyncio.Event()

    async def stop_after() -> None:
        if duration_s is not None:
            await asyncio.sleep(duration_s)
            say(f"--- {duration_s:g} s elapsed: stopping")
            stop.set()

    timer = asyncio.create_task(stop_after())
    try:
        with sim_benches([config for _, config in configs]):
            ends = await open_ends(configs, None, claim=True)
            await run_hosted(daemons, ends, stop, show, interval_s, say=say)
    finally:
        for task in (first, timer):
            task.cancel()
        for task in (first, timer):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for daemon in daemons.values():
            await daemon.stop()
    say("demo stopped; its files stay in " + str(workdir))
    if "B" not in got:
        say("no key reached the applications within the run: see the status lines above "
            "and the audit logs in the work directory")
        return 1
    if "C" not in got:
        say("the A-B link delivered keys; no A-C key was relayed within the run (the B-C link "
            "needs its first block first): run longer to see it")
    return 0
