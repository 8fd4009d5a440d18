"""``qkdnode distill RECORDING_DIR``: re-run Qsync and both Qdist ends from a recorded module run.

The recording is what ``qkdnode module --record DIR`` wrote (see
:mod:`qkdnode.node.module.recording`). The replay (:mod:`qkdnode.node.module.replay`) prints one
line per block (detections, QBER, each end's outcome and key length, whether the two ends'
keys agree and whether each end's audit record equals the recorded one) and never a key bit.
Exit status: 0 when every block matches the recorded run, 1 when one does not, 2 when the
recording cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``distill``."""
    parser = subparsers.add_parser(
        "distill", help="re-distil a recorded module run offline and compare with the run",
        description="Re-runs Qsync and both ends' Qdist dialogue from a recording made with "
                    "'qkdnode module --record DIR'; prints a per-block table (no key bits).")
    parser.add_argument("recording", metavar="RECORDING_DIR", help="the recording directory")
    parser.add_argument("--secret", metavar="FILE",
                        help="the pre-shared Qdist secret of both ends (default: the files the "
                             "manifest names)")
    parser.add_argument("--json", action="store_true", help="one JSON object per block")
    parser.set_defaults(handler=_run)


def _secrets(manifest: dict[str, Any], override: str | None) -> dict[str, bytes]:
    from qkdnode.node.module.recording import RecordingError

    files = manifest.get("secret_files") or {}
    out = {}
    for role in ("alice", "bob"):
        name = override or files.get(role)
        if not name:
            raise RecordingError(f"the manifest names no Qdist secret file for {role}: give "
                                 "--secret FILE")
        try:
            out[role] = Path(name).read_bytes()
        except OSError as exc:
            raise RecordingError(f"{name}: cannot read the Qdist secret of {role}: "
                                 f"{exc.strerror}") from None
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def _run(args: argparse.Namespace) -> int:
    from qkdnode.node.module.recording import Recording, RecordingError
    from qkdnode.node.module.replay import replay

    try:
        rec = Recording.open(Path(args.recording))
        result = replay(rec, _secrets(rec.manifest, args.secret))
    except RecordingError as exc:
        print(f"qkdnode distill: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in result.blocks:
            print(json.dumps({"link": result.link, "block": row.block_id,
                              "detections": row.detections, "qber": row.qber,
                              "outcome": row.outcome, "reason": row.reason,
                              "final_length": row.final_length, "keys_agree": row.keys_agree,
                              "audit_matches": {r: row.matches(r) for r in ("alice", "bob")}},
                             allow_nan=True))
    else:
        print(f"link {result.link}: {result.reads} tag reads, {result.detections} detections "
              f"numbered by Qsync ({result.late_detections} late)")
        head = ("block", "detections", "QBER", "alice", "bob", "key bits", "keys agree",
                "audit alice", "audit bob")
        rows = [head]
        for row in result.blocks:
            qber = "-" if row.qber is None else f"{100 * row.qber:.2f} %"
            lengths = "/".join(str(row.final_length.get(r, "-")) for r in ("alice", "bob"))
            rows.append((str(row.block_id), str(row.detections), qber,
                         row.outcome.get("alice", "-"), row.outcome.get("bob", "-"), lengths,
                         _fmt(row.keys_agree), _fmt(row.matches("alice")),
                         _fmt(row.matches("bob"))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        for row in result.blocks:
            for role, reason in row.reason.items():
                if reason:
                    print(f"block {row.block_id} {role}: {reason}")
        print("Qdist bytes as recorded: " + ", ".join(
            f"{r} {_fmt(ok)}" for r, ok in result.bytes_match.items()))
    if result.cut_at is not None:
        print(f"the recorded run {result.cut_reason} in block {result.cut_at}: the blocks "
              "before it were replayed and compared, not the later ones", file=sys.stderr)
    ok = result.ok and all(result.bytes_match.values())
    print("replay matches the recorded run" if ok else "replay DIFFERS from the recorded run",
          file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
