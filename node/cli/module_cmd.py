"""``qkdnode module``: run QKD modules (one end of a link each) and show their status.

Each ``--config FILE`` is one node's configuration; its ``[[links]]`` (or those named by
``--link``) are run: the transmitter listens at ``qdist_listen``, the receiver connects to
``qdist_connect``, keys go over Kq-1 to the node's key manager, one audit line per block. Each
end drives its instruments (a frame streamer, a time tagger: :mod:`qkdnode.node.module.
instruments`): real ones, a simulated bench in this process (give both nodes' files), or a bench
hosted by ``qkdnode sim serve`` (one end per process). The two ends share slot 0 through the
frame streamer's start marker (:data:`WIRING`). The status (sync state,
sifted rate, QBER, secret key rate, block outcomes) is printed every ``--status-interval``
seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .args import positive_float

__all__ = ["WIRING", "register"]

# What ``qkdnode module --help`` tells a lab about wiring and start order.
WIRING = """\
lab wiring and start order:
  Cable the frame streamer's marker output to a free input of the receiver's time tagger and
  name it in the receiver's [[links]] as marker_channel (the tagger's 'channels' setting must
  stream it). The marker pulses at the first slot of the first block after the streamer's
  output goes on; the receiver times every slot from it (the tagger's own clock shares no
  origin with the transmitter's), so slot_delay_ps is the optical path minus the marker cable
  (Qsync searches +-1 ms around it). Start the two ends in any order: the receiver arms its
  tagger and says so over the authenticated Qdist channel, and only then does the transmitter
  switch its output on. If the receiver arms anew (a restarted acquisition), the transmitter
  ends its run and starts one at later block numbers (key IDs never repeat). No marker within
  marker_timeout_s (default 30 s) of the start stops the receiver with an error naming the
  channel. Lost slot timing (no Qsync lock for lock_timeout_s, default 60 s, or three blocks
  in a row at QBER >= 0.25: a marker that was not the run's) makes the receiver arm anew, and
  the transmitter starts a new run. On the simulated bench the same happens: its taggers
  count from their own origin and [bench.tagger] marker_channel / marker_delay_ps are the
  cable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def register(subparsers: Any) -> None:
    """Adds ``module``."""
    parser = subparsers.add_parser(
        "module", help="run QKD modules: slot timing, distillation, keys to the key manager",
        description="Runs the QKD modules of the configured links (real instruments; both "
                    "ends of a link on a simulated bench in this process: give both nodes' "
                    "files; one end per process with a [bench] service) and prints their "
                    "status.",
        epilog=WIRING, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, action="append", metavar="FILE",
                        help="node configuration (repeat for the other end on a "
                             "simulated bench in this process)")
    parser.add_argument("--link", action="append", metavar="NAME",
                        help="run only this link (repeatable; default: every link)")
    parser.add_argument("--blocks", type=_positive_int, metavar="N",
                        help="stop after N blocks per end (default: run until interrupted)")
    parser.add_argument("--status-interval", type=positive_float, default=5.0, metavar="S",
                        help="seconds between status lines (default: 5)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                        help="at the end, seconds to wait for the key manager to acknowledge "
                             "the last keys (default: 10)")
    parser.add_argument("--json", action="store_true",
                        help="status as one JSON object per line")
    parser.add_argument("--record", metavar="DIR", type=Path,
                        help="record the run's raw data into DIR for 'qkdnode distill DIR' "
                             "(one link, both ends; the files hold raw key material: "
                             "Alice's choices and Bob's squashing bits; written mode 0600)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.config import load_config
    from qkdnode.node.module.host import sim_benches

    configs = [(Path(f).resolve(), load_config(f)) for f in args.config]
    with sim_benches([config for _, config in configs]):
        return _run_modules(args, configs)


def _run_modules(args: argparse.Namespace, configs: list[tuple[Path, Any]]) -> int:
    from qkdnode.node.module.launch import LinkEnd, build_ends, run_ends, status_lines

    ends = build_ends(configs, set(args.link) if args.link else None,
                      record=args.record, claim=True)
    if not ends:
        print("qkdnode module: no link to run")
        return 2

    def show(current: list[LinkEnd]) -> None:
        if args.json:
            now = time.monotonic()
            for end in current:
                print(json.dumps({"node": end.config.node.name, "link": end.link.name,
                                  **end.module.status.summary(now)}), flush=True)
        else:
            for line in status_lines(current):
                print(line, flush=True)

    asyncio.run(run_ends(ends, args.blocks, show, args.status_interval, args.drain_timeout))
    return 0
