"""``qkdnode run`` and ``qkdnode status``: start a node; ask a running one.

``run`` starts the key management daemon each configuration file describes (key store, Kq-1
socket for the node's QKD modules, Kx to the peers, ETSI GS QKD 014 for applications, the
management port) and the QKD modules of its ``[[links]]``, and runs until Ctrl-C or SIGTERM.
A link end whose instruments are on a simulated bench in this process needs the other end's
file in the same ``run`` (one key manager per node; a node may appear in several files), else
it is refused (:func:`qkdnode.node.module.host.check_link_ends`); with a ``[bench] service``
each node runs its own ``run``. A stop is
orderly: the key managers stop their modules over Kq-2, the blocks in flight end and their keys
are acknowledged, then the key managers stop (the key store is closed and its WAL
checkpointed). ``status`` reads the management port's ``/status`` of a running node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from qkdnode.node.config import load_config
from qkdnode.node.errors import KeyManagerError

from .args import positive_float

__all__ = ["register"]

# The management port answers locally within milliseconds; 5 s covers a node under load.
STATUS_TIMEOUT_S = 5.0


def register(subparsers: Any) -> None:
    """Adds ``run`` and ``status``."""
    run = subparsers.add_parser(
        "run", help="run a node: key manager (Kq-1/Kq-2, Kx, ETSI 014, management port) and "
                    "the QKD modules of its links",
        description="Starts the key management daemon of each node the files describe and the "
                    "QKD modules of their [[links]], and runs them until Ctrl-C or SIGTERM. On "
                    "the simulated bench both ends of a link run in one process: give both "
                    "nodes' files.")
    run.add_argument("--config", required=True, action="append", metavar="FILE",
                     help="node configuration (repeat for the other end of a link on the "
                          "simulated bench, or for more nodes)")
    run.add_argument("--status-interval", type=positive_float, default=60.0, metavar="S",
                     help="seconds between the modules' status lines (default: 60)")
    run.set_defaults(handler=_run)
    status = subparsers.add_parser(
        "status", help="show the status of a running node",
        description="Reads /status from the management port of the node FILE describes.")
    status.add_argument("--config", required=True, metavar="FILE", help="node configuration")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_status)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qkdnode.node.module.host import check_link_ends, node_daemons

    configs = [(Path(f).resolve(), load_config(f)) for f in args.config]
    check_link_ends(configs)
    daemons = node_daemons(configs)

    async def main() -> None:
        stop = asyncio.Event()
        hurry = asyncio.Event()  # a second Ctrl-C: do not wait for the blocks in flight

        def on_signal() -> None:
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        started = []
        try:
            for daemon in daemons.values():
                await daemon.start()
                started.append(daemon)
                print(f"qkdnode: node {daemon.node} running: Kx port {daemon.kx.port}, ETSI 014 "
                      f"port {daemon.etsi.port}, management port {daemon.management_port}, "
                      f"Kq-1 socket {daemon.kq1.path}", flush=True)
            if any(config.links for _, config in configs):
                await _run_modules(configs, daemons, stop, hurry, args.status_interval)
            else:
                await stop.wait()
        finally:
            for daemon in started:
                await daemon.stop()
        for daemon in started:
            print(f"qkdnode: node {daemon.node} stopped", flush=True)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise KeyManagerError(f"cannot start node: {exc}") from exc
    return 0


async def _run_modules(configs: list[tuple[Any, Any]], daemons: dict[str, Any],
                       stop: asyncio.Event, hurry: asyncio.Event, interval_s: float) -> None:
    from qkdnode.node.module.host import run_hosted, sim_benches
    from qkdnode.node.module.launch import open_ends, status_lines

    def show(ends: list[Any]) -> None:
        for line in status_lines(ends):
            print("qkdnode: " + line, flush=True)

    with_links = [(path, config) for path, config in configs if config.links]
    with sim_benches([config for _, config in with_links]):
        ends = await open_ends(with_links, None, claim=True)
        print("qkdnode: QKD modules running: " + ", ".join(
            f"{end.config.node.name}/{end.link.name} ({end.link.role})" for end in ends),
            flush=True)
        await run_hosted(daemons, ends, stop, show, interval_s, hurry=hurry,
                         say=lambda text: print("qkdnode: " + text, flush=True))


def _module_line(report: dict[str, Any]) -> str:
    """A module's entry of /status for people: its Kq-2 report, else what its keys said."""
    state = ("connected" if report.get("connected") else "not connected") + \
        (", held stopped" if report.get("held_stopped") else "")
    if "role" not in report:  # no Kq-2 report yet
        qber = report.get("key_qber")
        return state + ("" if qber is None else f", QBER of its last key {100 * qber:.2f} %")
    qber = report.get("qber")
    line = (f"{state}, {report['role']} {'running' if report.get('running') else 'STOPPED'}, "
            f"sync {report.get('sync')}, QBER {'-' if qber is None else f'{100 * qber:.2f} %'}, "
            f"sifted {report.get('sifted_rate_bps') or 0:.0f} bit/s, secret "
            f"{report.get('secret_key_rate_bps') or 0:.0f} bit/s, blocks "
            f"{report.get('blocks_completed', 0)} ok / {report.get('blocks_aborted', 0)} aborted")
    if report.get("last_abort"):
        line += f" (last: {report['last_abort']})"
    return line + f", keys waiting {report.get('keys_waiting', 0)}"


def _status(args: argparse.Namespace) -> int:
    from qkdnode.node.km.management import management_request

    config = load_config(args.config)
    # With the token when its file is readable (needed with management_auth = "all").
    _, status = management_request(config.key_manager, "GET", "/status",
                                   timeout_s=STATUS_TIMEOUT_S)
    if not isinstance(status, dict):
        raise KeyManagerError(f"node {config.node.name!r}: /status did not answer JSON")
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
        print(f"module {name}: {_module_line(report)}")
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
