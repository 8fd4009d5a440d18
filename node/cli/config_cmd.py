"""``qkdnode config``: check, show and document node configuration files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qkdnode.node.config import load_config
from qkdnode.node.config.describe import schema_lines, to_plain

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``config`` and its sub-commands."""
    parser = subparsers.add_parser(
        "config", help="check, show or document a node configuration file",
        description="Node configuration files: one TOML file describes a node.")
    commands = parser.add_subparsers(title="config commands", metavar="ACTION", required=True)

    check = commands.add_parser(
        "check", help="validate a configuration file (exit status 2 when it is invalid)",
        description="Validates FILE; prints a summary, or the first problem with its file, key "
                    "and line, and exits with status 2.")
    check.add_argument("file", metavar="FILE", help="node configuration (TOML)")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    check.set_defaults(handler=_check)

    show = commands.add_parser(
        "show", help="print a configuration as JSON, with every default filled in",
        description="Validates FILE and prints it as JSON with defaults filled in and relative "
                    "paths resolved.")
    show.add_argument("file", metavar="FILE", help="node configuration (TOML)")
    show.set_defaults(handler=_show)

    schema = commands.add_parser(
        "schema", help="list every configuration key with its type, default and meaning")
    schema.set_defaults(handler=_schema)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    # The driver registry imports every driver (numba kernels included): only when needed.
    from qkdnode.node.config.drivers import check_instrument_drivers

    warnings = check_instrument_drivers(config, args.file,
                                        Path(args.file).read_text(encoding="utf-8"))
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        links = ", ".join(f"{link.name} ({link.role} to {link.peer})" for link in config.links)
        print(f"{args.file}: valid configuration of node {config.node.name!r}")
        print(f"  instruments: {len(config.instruments)}"
              + "".join(f"\n    {i.name}: {i.role}, {i.driver}"
                        + (f" at {i.resource}" if i.resource else "")
                        for i in config.instruments))
        print(f"  links: {len(config.links)}" + (f" ({links})" if links else ""))
        print(f"  peers: {len(config.peers)}"
              + (f" ({', '.join(p.name for p in config.peers)})" if config.peers else ""))
        print(f"  key store: {config.key_manager.store_path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(to_plain(load_config(args.file)), indent=2))
    return 0


def _schema(args: argparse.Namespace) -> int:
    print("Node configuration keys (TOML). Relative paths are relative to the file.")
    for line in schema_lines():
        print(line)
    return 0
