"""``qkdnode control``: stop or start a QKD module through its running key manager (Kq-2).

Sends ``POST /modules/NAME/stop`` or ``/start`` to the management port of the node the
configuration file describes, with the management token the key manager wrote at its start
(:mod:`qkdnode.node.km.management`): so it works for the user the node runs as (who can read
the token file) and for no one else. A stop holds the module stopped, also across restarts of
the key manager, until a start.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from qkdnode.node.config import load_config

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``control``."""
    parser = subparsers.add_parser(
        "control", help="stop or start a QKD module through its running key manager",
        description="Asks the running key manager of the node FILE describes to stop (and "
                    "hold stopped, also across its restarts) or to start one of its QKD "
                    "modules over Kq-2. Needs read access to the key manager's management "
                    "token file (key_manager.management_token_file).")
    parser.add_argument("action", choices=("stop", "start"))
    parser.add_argument("module", metavar="NAME",
                        help="the module's name as `qkdnode status` shows it, e.g. A/ab")
    parser.add_argument("--config", required=True, metavar="FILE", help="node configuration")
    parser.set_defaults(handler=_control)


def _control(args: argparse.Namespace) -> int:
    from qkdnode.node.km.management import management_request

    config = load_config(args.config)
    path = f"/modules/{urllib.parse.quote(args.module, safe='')}/{args.action}"
    status, answer = management_request(config.key_manager, "POST", path)
    message = answer.get("message") if isinstance(answer, dict) else None
    if status == 202:
        print(f"module {args.module}: {message}")
    else:
        print(f"module {args.module}: {args.action} requested")
    return 0
