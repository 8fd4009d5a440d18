"""``qkdnode run`` and ``qkdnode status``: start a node's key manager; ask a running one.

``run`` starts the key management daemon the configuration describes (key store, Kq-1 socket
for the node's QKD modules, Kx to the peers, ETSI GS QKD 014 for applications, the management
port) and runs until Ctrl-C or SIGTERM, which stop it cleanly (the key store is closed and its
WAL checkpointed). ``status`` reads the management port's ``/status`` of a running node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from qkdnode.node.config import load_config
from qkdnode.node.errors import KeyManagerError

__all__ = ["register"]

# The management port answers locally within milliseconds; 5 s covers a node under load.
STATUS_TIMEOUT_S = 5.0


def register(subparsers: Any) -> None:
    """Adds ``run`` and ``status``."""
    run = subparsers.add_parser(
        "run", help="run a node's key manager (Kq-1, Kx, ETSI 014, management port)",
        description="Starts the key management daemon of the node FILE describes and runs it "
                    "until Ctrl-C or SIGTERM.")
    run.add_argument("--config", required=True, metavar="FILE", help="node configuration")
    run.set_defaults(handler=_run)
    status = subparsers.add_parser(
        "status", help="show the status of a running node",
        description="Reads /status from the management port of the node FILE describes.")
    status.add_argument("--config", required=True, metavar="FILE", help="node configuration")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_status)


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.km.daemon import NodeDaemon

    config = load_config(args.config)

    async def main() -> None:
        daemon = NodeDaemon(config, args.config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await daemon.start()
        print(f"qkdnode: node {daemon.node} running: Kx port {daemon.kx.port}, ETSI 014 port "
              f"{daemon.etsi.port}, management port {daemon.management_port}, Kq-1 socket "
              f"{daemon.kq1.path}", flush=True)
        try:
            await stop.wait()
        finally:
            await daemon.stop()
        print(f"qkdnode: node {daemon.node} stopped", flush=True)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise KeyManagerError(f"cannot start node: {exc}") from exc
    return 0


def _status(args: argparse.Namespace) -> int:
    from qkdnode.node.km.daemon import split_host_port

    config = load_config(args.config)
    host, port = split_host_port(config.key_manager.management_listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as answer:
            status = json.load(answer)
    except (urllib.error.URLError, OSError) as exc:
        raise KeyManagerError(f"node {config.node.name!r} does not answer at {url}: "
                              f"{exc}") from exc
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
        return 0
    print(f"node {status['node']}  up {status['uptime_s']:.0f} s")
    print("peers: " + (", ".join(f"{p} {'up' if up else 'DOWN'}"
                                 for p, up in status["peers"].items()) or "none"))
    print(f"{'pool':<16}{'available bits':>16}{'keys':>8}{'pre-activation':>16}{'reserved':>10}")
    for pool, lv in status["pools"].items():
        print(f"{pool:<16}{lv['available_bits']:>16}{lv['available_keys']:>8}"
              f"{lv['pre_activation_keys']:>16}{lv['reserved_keys']:>10}")
    for name, report in status["modules"].items():
        fields = ", ".join(f"{k}={v}" for k, v in report.items())
        print(f"module {name}: {fields}")
    for pair, info in status.get("sae_pairs", {}).items():
        print(f"SAE pair {pair}: {info['available_keys']} keys (pool {info['pool']})")
    counters = ", ".join(f"{k}={v}" for k, v in sorted(status["counters"].items()))
    print(f"counters: {counters or 'none yet'}")
    rates = ", ".join(f"{k}={v}/s" for k, v in sorted(status.get("rates_per_s", {}).items()))
    if rates:
        print(f"rates (last minute): {rates}")
    for alarm in status.get("alarms", []):
        print(f"ALARM {alarm['kind']}: {alarm['text']}")
    return 0
