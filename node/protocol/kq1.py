"""Kq-1 and Kq-2 between a QKD module and its key manager, sans-IO.

Kq-1 carries keys from the module to the key manager; Kq-2 carries control the other way (start,
stop, status). Both run over one local stream (a Unix socket), framed by
:mod:`.framing` with magic ``b"K1"``. The module speaks first (:class:`ModuleAnnounced`); the
key manager answers :class:`KmWelcomed`. Then:

* module -> KM: :class:`KeysPushed` (sequence number, pool, keys), :class:`StatusReported`;
* KM -> module: :class:`KeysStored` (the push is durable: the module may forget those keys),
  :class:`KeysRefused` (nothing of the push was stored; the module keeps the keys and retries
  later), :class:`StartRequested`, :class:`StopRequested`, :class:`StatusRequested`.

Outcomes of bad input (each tested): a frame of a foreign protocol or version, an oversized
frame, a payload that is not a JSON object, a missing or mistyped field, an unknown kind, a
frame out of order (anything before the announcement, a second announcement), a push whose
sequence number does not increase (a replay), an answer to a push never sent: each raises
:class:`~qkdnode.node.errors.RemoteProtocolError` and the connection is dead (``closed``); the
module reconnects and pushes again what was not acknowledged, which the key store recognises by
key ID. Sending something the state does not allow raises
:class:`~qkdnode.node.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from ..km.records import LinkKey
from .framing import NEED_DATA, Frame, FrameReader, NeedData, b64, encode_frame, unb64
from .framing import field as get

__all__ = [
    "MAX_KEYS_PER_PUSH",
    "MAX_KEY_BYTES",
    "MAX_PAYLOAD",
    "NEED_DATA",
    "KeysPushed",
    "KeysRefused",
    "KeysStored",
    "KmWelcomed",
    "Kq1Connection",
    "ModuleAnnounced",
    "Role",
    "StartRequested",
    "StatusReported",
    "StatusRequested",
    "StopRequested",
]

MAGIC = b"K1"
VERSION = 1
# A push of 4096 keys of 256 bits is ~200 kB of JSON; 8 MiB leaves room for long keys while
# bounding what one frame can make a key manager buffer.
MAX_PAYLOAD = 8 << 20
MAX_KEYS_PER_PUSH = 4096
# One QKD-key is at most 64 KiB (ETSI 014 keys are a few hundred bits; relay keys the same).
MAX_KEY_BYTES = 1 << 16


class Role(enum.Enum):
    """Which end of Kq-1 a connection object plays."""

    MODULE = "module"
    KM = "km"


@dataclass(frozen=True, slots=True)
class ModuleAnnounced:
    """The module's first frame: who it is and which pool its keys belong to."""

    module: str
    link: str
    pool: str


@dataclass(frozen=True, slots=True)
class KmWelcomed:
    """The key manager's answer to the announcement."""

    node: str


@dataclass(frozen=True, slots=True)
class KeysPushed:
    """Keys from the module (``repr`` shows their IDs, never their bytes)."""

    seq: int
    keys: tuple[LinkKey, ...]


@dataclass(frozen=True, slots=True)
class KeysStored:
    """The push ``seq`` is durable in the key store (``new``: keys not seen before)."""

    seq: int
    new: int


@dataclass(frozen=True, slots=True)
class KeysRefused:
    """Nothing of push ``seq`` was stored; ``code`` is the key manager's error code."""

    seq: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartRequested:
    """Kq-2: the key manager asks the module to run."""


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Kq-2: the key manager asks the module to stop."""


@dataclass(frozen=True, slots=True)
class StatusRequested:
    """Kq-2: the key manager asks for a status report (answered with the same ``seq``)."""

    seq: int


@dataclass(frozen=True, slots=True)
class StatusReported:
    """Kq-2: the module's status (numbers and words only: sync state, QBER, rates...)."""

    seq: int
    status: dict[str, Any] = field(default_factory=dict)




Event = (ModuleAnnounced | KmWelcomed | KeysPushed | KeysStored | KeysRefused | StartRequested
         | StopRequested | StatusRequested | StatusReported)

_KINDS: dict[type, int] = {ModuleAnnounced: 1, KmWelcomed: 2, KeysPushed: 3, KeysStored: 4,
                           KeysRefused: 5, StartRequested: 6, StopRequested: 7,
                           StatusRequested: 8, StatusReported: 9}
_BY_KIND = {v: k for k, v in _KINDS.items()}
# Which end may send each event.
_SENDER: dict[type, Role] = {ModuleAnnounced: Role.MODULE, KmWelcomed: Role.KM,
                             KeysPushed: Role.MODULE, KeysStored: Role.KM,
                             KeysRefused: Role.KM, StartRequested: Role.KM,
                             StopRequested: Role.KM, StatusRequested: Role.KM,
                             StatusReported: Role.MODULE}


def _status_value(value: Any) -> bool:
    if isinstance(value, bool | int | str) or value is None:
        return True
    return isinstance(value, float) and math.isfinite(value)


def _to_payload(event: Event) -> dict[str, Any]:
    if isinstance(event, KeysPushed):
        return {"seq": event.seq, "keys": [
            {"id": str(k.key_id), "key": b64(k.material), "link": k.link, "block": k.block,
             "index": k.index, "qber": k.qber, "created_at": k.created_at}
            for k in event.keys]}
    if isinstance(event, StatusReported):
        return {"seq": event.seq, "status": dict(event.status)}
    if isinstance(event, StartRequested | StopRequested):
        return {}
    return {name: getattr(event, name) for name in event.__slots__}


def _key_from(entry: Any, what: str) -> LinkKey:
    if not isinstance(entry, dict):
        raise RemoteProtocolError(f"{what}: a key entry is not an object")
    try:
        key_id = uuid.UUID(get(entry, "id", str, what))
    except ValueError:
        raise RemoteProtocolError(f"{what}: a key ID is not a UUID") from None
    material = unb64(get(entry, "key", str, what), what)
    if not 0 < len(material) <= MAX_KEY_BYTES:
        raise RemoteProtocolError(f"{what}: key {key_id} has {len(material)} bytes "
                                  f"(1..{MAX_KEY_BYTES} allowed)")
    qber = get(entry, "qber", (int, float, type(None)), what, None)
    created = get(entry, "created_at", (int, float), what, 0.0)
    if (qber is not None and not 0 <= qber <= 0.5) or not math.isfinite(created):
        raise RemoteProtocolError(f"{what}: key {key_id} has an invalid qber or created_at")
    return LinkKey(key_id, material, link=get(entry, "link", str, what, ""),
                   block=get(entry, "block", int, what, 0),
                   index=get(entry, "index", int, what, 0),
                   qber=None if qber is None else float(qber), created_at=float(created))


def _from_frame(frame: Frame) -> Event:
    cls = _BY_KIND.get(frame.kind)
    if cls is None:
        raise RemoteProtocolError(f"Kq-1: unknown frame kind {frame.kind}")
    p = frame.payload
    what = f"Kq-1 {cls.__name__}"
    if cls is KeysPushed:
        entries = get(p, "keys", list, what)
        if not 0 < len(entries) <= MAX_KEYS_PER_PUSH:
            raise RemoteProtocolError(f"{what}: {len(entries)} keys in one push "
                                      f"(1..{MAX_KEYS_PER_PUSH} allowed)")
        return KeysPushed(get(p, "seq", int, what), tuple(_key_from(e, what) for e in entries))
    if cls is StatusReported:
        status = get(p, "status", dict, what)
        if not all(isinstance(k, str) and _status_value(v) for k, v in status.items()):
            raise RemoteProtocolError(f"{what}: status values must be numbers, text or null")
        return StatusReported(get(p, "seq", int, what), status)
    if cls is StartRequested:
        return StartRequested()
    if cls is StopRequested:
        return StopRequested()
    if cls is ModuleAnnounced:
        return ModuleAnnounced(get(p, "module", str, what), get(p, "link", str, what),
                               get(p, "pool", str, what))
    if cls is KmWelcomed:
        return KmWelcomed(get(p, "node", str, what))
    if cls is KeysStored:
        return KeysStored(get(p, "seq", int, what), get(p, "new", int, what))
    if cls is KeysRefused:
        return KeysRefused(get(p, "seq", int, what), get(p, "code", str, what),
                           get(p, "reason", str, what))
    return StatusRequested(get(p, "seq", int, what))


class Kq1Connection:
    """One end of a Kq-1/Kq-2 connection: bytes in, events out; events in, bytes out.

    Args:
        role: which end this is.
    """

    def __init__(self, role: Role) -> None:
        self.role = role
        self.peer_role = Role.KM if role is Role.MODULE else Role.MODULE
        self._reader = FrameReader(MAGIC, VERSION, MAX_PAYLOAD, "Kq-1")
        self._module_announced = False
        self._km_welcomed = False
        self._last_push_sent = 0
        self._last_push_received = 0
        self._unanswered_pushes: set[int] = set()
        self._unanswered_status: set[int] = set()
        self.closed = False
        self.announcement: ModuleAnnounced | None = None

    @property
    def unacknowledged(self) -> frozenset[int]:
        """Sequence numbers of pushes sent (module) or received (KM) and not yet answered."""
        return frozenset(self._unanswered_pushes)

    def _check_order(self, event: Event, sender: Role) -> None:
        err = LocalProtocolError if sender is self.role else RemoteProtocolError
        name = type(event).__name__
        if _SENDER[type(event)] is not sender:
            raise err(f"Kq-1: the {sender.value} cannot send {name}")
        if isinstance(event, ModuleAnnounced):
            if self._module_announced:
                raise err("Kq-1: ModuleAnnounced sent twice")
        elif isinstance(event, KmWelcomed):
            if not self._module_announced:
                raise err("Kq-1: KmWelcomed before the module announced itself")
            if self._km_welcomed:
                raise err("Kq-1: KmWelcomed sent twice")
        elif sender is Role.MODULE and not self._module_announced:
            raise err(f"Kq-1: {name} before ModuleAnnounced")
        elif sender is Role.KM and not self._km_welcomed:
            raise err(f"Kq-1: {name} before KmWelcomed")

    def send(self, event: Event) -> bytes:
        """The bytes that carry ``event`` to the peer.

        Raises:
            LocalProtocolError: the event is not ours to send now (or the connection is dead).
        """
        if self.closed:
            raise LocalProtocolError("Kq-1: the connection is closed")
        self._check_order(event, self.role)
        if isinstance(event, ModuleAnnounced):
            self._module_announced = True
        elif isinstance(event, KmWelcomed):
            self._km_welcomed = True
        elif isinstance(event, KeysPushed):
            if event.seq <= self._last_push_sent:
                raise LocalProtocolError(f"Kq-1: push sequence numbers must increase "
                                         f"({event.seq} after {self._last_push_sent})")
            if not 0 < len(event.keys) <= MAX_KEYS_PER_PUSH:
                raise LocalProtocolError(f"Kq-1: 1..{MAX_KEYS_PER_PUSH} keys per push, got "
                                         f"{len(event.keys)}")
            self._last_push_sent = event.seq
            self._unanswered_pushes.add(event.seq)
        elif isinstance(event, KeysStored | KeysRefused):
            if event.seq not in self._unanswered_pushes:
                raise LocalProtocolError(f"Kq-1: push {event.seq} is not awaiting an answer")
            self._unanswered_pushes.discard(event.seq)
        elif isinstance(event, StatusRequested):
            self._unanswered_status.add(event.seq)
        elif isinstance(event, StatusReported) and event.seq:
            self._unanswered_status.discard(event.seq)
        try:
            return encode_frame(MAGIC, VERSION, _KINDS[type(event)], _to_payload(event),
                                MAX_PAYLOAD)
        except ValueError as exc:
            raise LocalProtocolError(f"Kq-1: {exc}") from None

    def receive_data(self, data: bytes) -> None:
        """Feeds bytes received from the peer."""
        if self.closed:
            raise LocalProtocolError("Kq-1: the connection is closed")
        self._reader.feed(data)

    def next_event(self) -> Event | NeedData:
        """The next event from the peer, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is closed.
        """
        if self.closed:
            raise LocalProtocolError("Kq-1: the connection is closed")
        try:
            frame = self._reader.next_frame()
            if frame is None:
                return NEED_DATA
            event = _from_frame(frame)
            self._receive(event)
        except RemoteProtocolError:
            self.closed = True
            raise
        return event

    def _receive(self, event: Event) -> None:
        self._check_order(event, self.peer_role)
        if isinstance(event, ModuleAnnounced):
            self.announcement = event
            self._module_announced = True
        elif isinstance(event, KmWelcomed):
            self._km_welcomed = True
        elif isinstance(event, KeysPushed):
            if event.seq <= self._last_push_received:
                raise RemoteProtocolError(f"Kq-1: push {event.seq} after push "
                                          f"{self._last_push_received} (replayed or reordered)")
            self._last_push_received = event.seq
            self._unanswered_pushes.add(event.seq)
        elif isinstance(event, KeysStored | KeysRefused):
            if event.seq not in self._unanswered_pushes:
                raise RemoteProtocolError(f"Kq-1: answer to push {event.seq}, which is not "
                                          "awaiting one")
            self._unanswered_pushes.discard(event.seq)
        elif isinstance(event, StatusRequested):
            self._unanswered_status.add(event.seq)
        elif isinstance(event, StatusReported) and event.seq:
            if event.seq not in self._unanswered_status:
                raise RemoteProtocolError(f"Kq-1: status report {event.seq} answers no request")
            self._unanswered_status.discard(event.seq)
