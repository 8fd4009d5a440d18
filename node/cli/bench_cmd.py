"""``qkdnode bench PROCEDURE``: run a characterization procedure on the lab's instruments.

With ``--config FILE`` the procedure opens the instruments the node configuration names; without
it, it builds a simulated lab (every role on the simulated bench) whose physics
``--sim-param NAME=VALUE`` overrides. It writes ``result.json``, ``tags.csv`` (procedures
that use the time tagger) and PNG plots into ``--out DIR``, prints a summary table
(``--json``: the result JSON instead) and shows progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]

# Exit statuses (as the qkdnode entry point uses them).
_EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Adds ``bench``."""
    from qkdnode.node.bench.lab import SIM_PARAMS
    from qkdnode.node.bench.runner import PROCEDURES

    parser = subparsers.add_parser(
        "bench", help="characterize the bench's components (dark counts, dead time, ...)",
        description="Runs a characterization procedure on the configured instruments, or on "
                    "the simulated bench without --config. Procedures: "
                    + "; ".join(f"{p.name}: {p.doc}" for p in PROCEDURES.values()) + ".")
    parser.add_argument("procedure", metavar="PROCEDURE", choices=sorted(PROCEDURES),
                        help=f"one of: {', '.join(PROCEDURES)}")
    parser.add_argument("--config", metavar="FILE",
                        help="node configuration naming the instruments (default: the "
                             "simulated bench)")
    parser.add_argument("--sim-param", metavar="NAME=VALUE", action="append", default=[],
                        help="override a physical parameter of the simulated bench "
                             f"(repeatable; names: {', '.join(sorted(SIM_PARAMS))})")
    parser.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        dest="settings", help="override a procedure setting (repeatable)")
    parser.add_argument("--out", metavar="DIR", default="bench-out",
                        help="directory for result.json, tags.csv and plots "
                             "(default: bench-out)")
    parser.add_argument("--duration", metavar="S", type=float,
                        help="longest acquisition, s (default: the procedure's)")
    parser.add_argument("--json", action="store_true", help="print the result JSON")
    parser.set_defaults(handler=_run)


def _settings(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[name.strip()] = text
    return out


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.bench import open_lab, parse_sim_params, simulated_lab_config
    from qkdnode.node.bench.runner import PROCEDURES, resolve_settings, run_procedure, summary_table
    from qkdnode.node.config import load_config

    procedure = PROCEDURES[args.procedure]
    try:
        overrides = _settings(args.settings)
        if args.duration is not None:
            if not args.duration > 0:
                raise ValueError(f"--duration must be > 0, got {args.duration}")
            if "duration_s" not in procedure.defaults:
                raise ValueError(f"--duration: {procedure.name} has no acquisition time")
            overrides["duration_s"] = args.duration
        resolve_settings(procedure, overrides)
        if args.config is not None:
            if args.sim_param:
                raise ValueError("--sim-param applies to the simulated bench only; with "
                                 "--config, set the [bench] section of the file instead")
            config = load_config(args.config)
        else:
            config = simulated_lab_config(parse_sim_params(args.sim_param))
        lab = open_lab(config, procedure.roles)
    except ValueError as exc:
        print(f"qkdnode bench: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    try:
        record = run_procedure(args.procedure, lab, args.out, overrides)
    finally:
        lab.close()
    if args.json:
        print(json.dumps(json.loads((_out(args) / "result.json").read_text()), indent=2))
    else:
        print(summary_table(record))
        files = ["result.json", *(["tags.csv"] if "tags" in record else []),
                 *(["readings.csv"] if "readings" in record else []), *record["plots"]]
        print(f"files in {_out(args)}: {', '.join(files)}")
    return 0


def _out(args: argparse.Namespace) -> Any:
    from pathlib import Path

    return Path(args.out)
