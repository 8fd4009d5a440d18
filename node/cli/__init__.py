"""The ``qkdnode`` command: one entry point, one sub-command module per capability.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function ``(args) -> int``. The entry point parses the arguments, sets up
logging once, runs the handler and turns the errors a user can cause into a message and an
exit status: 2 for bad usage or configuration, 1 for an instrument or runtime failure,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qkdnode import __version__
from qkdnode.node.errors import (
    ConfigError,
    DeviceError,
    DistillationError,
    KeyManagerError,
    ProtocolError,
)
from qkdnode.node.logs import LOG_FORMATS, setup_logging

from . import (
    bench_cmd,
    config_cmd,
    control_cmd,
    demo_cmd,
    distill_cmd,
    keyrate_cmd,
    module_cmd,
    pki_cmd,
    run_cmd,
    sim_cmd,
)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own status for bad usage; a bad configuration is bad usage too
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# Sub-command modules, in the order --help lists them. A module is added here only when its
# command works end to end.
COMMANDS = (demo_cmd, config_cmd, keyrate_cmd, run_cmd, control_cmd, module_cmd, distill_cmd,
            pki_cmd, sim_cmd, bench_cmd)

log = logging.getLogger("qkdnode")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``qkdnode`` command with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="qkdnode",
        description="qkdnode: drive a QKD node's instruments, distil keys, manage keys.",
    )
    parser.add_argument("--version", action="version", version=f"qkdnode {__version__}")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="least severe log level shown (default: INFO)")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                        help="text for people, json for one JSON object per line "
                             "(default: text)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``qkdnode`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"qkdnode: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DeviceError, DistillationError, KeyManagerError, ProtocolError) as exc:
        log.debug("command failed", exc_info=True)
        print(f"qkdnode: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("qkdnode: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
