"""``qkdnode demo``: a three-node QKD network (A - B - C) on this machine's simulated bench."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from .args import positive_float

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a demo network A - B - C on the simulated bench",
        description="Starts three nodes in a line (key managers, QKD modules on simulated "
                    "links A-B and B-C; A-C keys are relayed through B), writes their "
                    "certificates, configuration and WORKDIR/demo.json, shows progress, and "
                    "runs until Ctrl-C or --duration.")
    parser.add_argument("--workdir", metavar="DIR",
                        help="a new or empty directory for the demo's files (default: a fresh "
                             "temporary directory)")
    parser.add_argument("--duration", type=positive_float, metavar="S",
                        help="stop after S seconds (default: run until interrupted)")
    parser.add_argument("--status-interval", type=positive_float, default=10.0, metavar="S",
                        help="seconds between progress reports (default: 10)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.demo import run_demo

    workdir = Path(args.workdir) if args.workdir else Path(
        tempfile.mkdtemp(prefix="qkdnode-demo-"))
    try:
        return asyncio.run(run_demo(workdir, args.duration, args.status_interval,
                                    lambda text: print(text, flush=True)))
    except FileExistsError as exc:
        print(f"qkdnode demo: {exc}", file=sys.stderr)
        return 2
