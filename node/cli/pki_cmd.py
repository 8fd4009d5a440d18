"""``qkdnode pki``: a certificate authority and certificates for a lab or demo network."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``pki``."""
    parser = subparsers.add_parser(
        "pki", help="create a lab CA with node and application (SAE) certificates",
        description="Creates DIR/ca.pem and, for each --node and --sae NAME, DIR/NAME.pem and "
                    "DIR/NAME.key (CN = NAME; keys mode 0600). Existing files are never "
                    "overwritten. For labs and demos; a production network has its own PKI.")
    parser.add_argument("dir", metavar="DIR", help="output directory")
    parser.add_argument("--node", action="append", default=[], metavar="NAME",
                        help="a node name (repeatable)")
    parser.add_argument("--sae", action="append", default=[], metavar="ID",
                        help="an application's SAE ID (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.km.pki import make_pki

    if not args.node and not args.sae:
        raise SystemExit("qkdnode pki: name at least one --node or --sae")
    try:
        ca, issued = make_pki(args.dir, args.node, args.sae, days=args.days)
    except (FileExistsError, ValueError) as exc:
        print(f"qkdnode pki: {exc}", file=sys.stderr)
        return 2
    print(f"CA: {ca.cert}")
    for name, files in issued.items():
        print(f"{name}: {files.cert}, {files.key}")
    return 0
