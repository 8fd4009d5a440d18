"""The saved state of a Qdist session end (what a restarted end takes up), and its encoding.

JSON (``{"body": {...}, "sha256": ...}``: the checksum covers the canonical body, so a torn or
edited file is refused); byte strings in hex. It holds key material (the hash keys, the pads
held and those a completed block set aside): the caller keeps it secret, and no error message
quotes a value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .wire import PadStream

__all__ = ["STATE_FORMAT", "STATE_VERSION", "ForeignState", "SessionState", "decode_state",
           "encode_state", "session_id"]

STATE_FORMAT = "qkdnode qdist session state"
STATE_VERSION = 1

# A replenishment set aside until its settle point: (block, Alice -> Bob material,
# Bob -> Alice material, the block's end positions out and in).
Pending = tuple[int, bytes, bytes, int, int]


class ForeignState(ValueError):
    """A state saved for another pre-shared secret (a session that has ended)."""


def session_id(secret: bytes | bytearray) -> str:
    """Names the session of ``secret`` in its saved states (a domain-separated SHA-256), so
    a state is never taken up with another secret."""
    return hashlib.sha256(b"qkdnode qdist state\0" + bytes(secret)).hexdigest()


@dataclass(frozen=True, slots=True, repr=False)
class SessionState:
    """One end's session as saved.

    Attributes:
        role: ``"alice"`` or ``"bob"``.
        session: :func:`session_id` of the pre-shared secret.
        send_next: the first pad index never reserved (a restarted end sends from here).
        recv_next: the next sequence number expected from the peer.
        completed: the last block completed (-1: none).
        block_floor: above every block begun.
        covered: pad positions (out, in) paid back by settled blocks.
        pending: the replenishment of the last completed block, until it settles.
        epoch: the role's arm epoch.
        out, into: the pad streams (sending, receiving).
        history: Alice's reconciliation history
            (:meth:`qkdnode.dsp.reconcile.ReconcileHistory.to_dict`: where frames of each code
            decoded, and their error rates), so that a restarted Alice starts frames where
            they decode instead of at the default start efficiency; None for Bob, and in
            states saved before it was kept (they restore with a fresh history).
    """

    role: str
    session: str
    send_next: int
    recv_next: int
    completed: int
    block_floor: int
    covered: tuple[int, int]
    pending: Pending | None
    epoch: int
    out: PadStream
    into: PadStream
    history: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"SessionState(role={self.role!r}, send_next={self.send_next}, "
                f"recv_next={self.recv_next}, completed={self.completed})")


def encode_state(state: SessionState) -> bytes:
    """The bytes of ``state`` (see the module docstring)."""
    pending = None
    if state.pending is not None:
        block, ab, ba, end_out, end_in = state.pending
        pending = {"block": block, "ab": ab.hex(), "ba": ba.hex(), "end_out": end_out,
                   "end_in": end_in}
    body = {"format": STATE_FORMAT, "version": STATE_VERSION, "role": state.role,
            "session": state.session, "send_next": state.send_next,
            "recv_next": state.recv_next, "completed": state.completed,
            "block_floor": state.block_floor, "covered": list(state.covered),
            "pending": pending, "epoch": state.epoch, "out": state.out.export(),
            "in": state.into.export(), "history": state.history}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return json.dumps({"body": body, "sha256": digest}, sort_keys=True).encode()


def _int(body: dict[str, Any], name: str, low: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"field {name!r} is missing or not an int >= {low}")
    return value


def decode_state(data: bytes, role: str, session: str) -> SessionState:
    """The state in ``data``, checked to be ``role``'s of ``session``.

    Raises:
        ValueError: truncated or not JSON, a checksum that does not match, another format,
            role or session, or a field missing or malformed (named, its value never quoted).
    """
    try:
        outer = json.loads(data)
        body = outer["body"]
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        ok = digest == outer["sha256"] and isinstance(body, dict)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError("not a Qdist session state (truncated or not JSON)") from None
    if not ok:
        raise ValueError("the checksum does not match: the state is corrupt")
    if body.get("format") != STATE_FORMAT or body.get("version") != STATE_VERSION:
        raise ValueError(f"not a Qdist session state of version {STATE_VERSION}")
    if body.get("role") != role:
        raise ValueError(f"a state of the {body.get('role')!r} end, not the {role}'s")
    if body.get("session") != session:
        raise ForeignState("a state of another pre-shared secret (another session)")
    covered = body.get("covered")
    if not isinstance(covered, list) or len(covered) != 2:
        raise ValueError("field 'covered' is missing or malformed")
    covered_at = {"out": covered[0], "in": covered[1]}
    raw = body.get("pending")
    pending: Pending | None = None
    if raw is not None:
        if not isinstance(raw, dict):
            raise ValueError("field 'pending' is malformed")
        try:
            ab, ba = bytes.fromhex(raw["ab"]), bytes.fromhex(raw["ba"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("field 'pending' is missing its material") from None
        pending = (_int(raw, "block", 0), ab, ba, _int(raw, "end_out", 0),
                   _int(raw, "end_in", 0))
    history = body.get("history")
    if history is not None and not isinstance(history, dict):
        raise ValueError("field 'history' is malformed")
    streams = []
    for name in ("out", "in"):
        if not isinstance(body.get(name), dict):
            raise ValueError(f"field {name!r} is missing or malformed")
        streams.append(PadStream.load(body[name]))
    return SessionState(
        role=role, session=session, send_next=_int(body, "send_next", 0),
        recv_next=_int(body, "recv_next", 0), completed=_int(body, "completed", -1),
        block_floor=_int(body, "block_floor", 0),
        covered=(_int(covered_at, "out", 0), _int(covered_at, "in", 0)), pending=pending,
        epoch=_int(body, "epoch", 0), out=streams[0], into=streams[1], history=history)
