"""``qkdnode sim serve``: host a configuration's simulated bench for other processes.

When Alice's and Bob's node processes share one simulated link, one process hosts the bench
(``[bench] service`` names where) and both nodes' ``sim://`` instruments connect to it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``sim`` and ``sim serve``."""
    parser = subparsers.add_parser(
        "sim", help="the simulated optical bench",
        description="The simulated optical bench that stands in for the instruments in CI and "
                    "demos.")
    commands = parser.add_subparsers(title="sim commands", metavar="ACTION", required=True)
    serve = commands.add_parser(
        "serve", help="host the [bench] of a configuration for other processes",
        description="Hosts the simulated bench FILE's [bench] section describes until Ctrl-C "
                    "or SIGTERM, at --listen or [bench] service.")
    serve.add_argument("--config", required=True, metavar="FILE", help="node configuration")
    serve.add_argument("--listen", metavar="ADDRESS",
                       help="HOST:PORT or unix:PATH (default: [bench] service)")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from qkdnode.node.config import load_config
    from qkdnode.node.config.bench import serve_bench

    try:
        service = serve_bench(load_config(args.config), args.listen)
    except ValueError as exc:
        print(f"qkdnode sim serve: {exc}", file=sys.stderr)
        return 2
    print(f"bench {service.bench.name!r} served at {service.address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        service.close()
    return 0
