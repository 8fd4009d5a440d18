"""Kx between key managers, sans-IO: key supply, pool synchronisation, relay, link states.

Runs over TCP with mutual TLS between node certificates (the TLS layer authenticates every
byte; :mod:`qkdnode.node.io.kx` moves them), framed by :mod:`.framing` with magic ``b"KX"``.
Each end first sends :class:`Hello` (its node name). Then requests, each with an ID unique per
sender, and one answer per request:

* :class:`PoolOffered` -> :class:`PoolAnswered`: "these link keys arrived here from our link";
  the peer activates those it holds too and names them; both ends then activate the same set.
* :class:`SupplyNotified` -> :class:`Answered`: the key supply notification of ITU-T Q.4163
  (the master's plans, see :mod:`qkdnode.node.km.records`); answered after the peer committed.
* :class:`RelayForwarded` -> :class:`Answered`: one hop of a one-time-pad key relay: the
  end-to-end key XOR the link-key bytes named by ``plan``.
* :class:`RelayCompleted` -> :class:`Answered`: the relay completion notification, back to the
  origin (of one relay or, with ``more``, of several).
* :class:`LinkStateAdvertised` (no answer): a node's link key levels, flooded for routing.

Requests carry ``origin`` and ``destination`` nodes: a node that is not the destination forwards
the request (a key manager's decision, not this module's) and answers when the next hop did.
Every request is idempotent at the receiver (same ID, same effect), so a request whose answer
does not arrive by its deadline is simply sent again (:meth:`KxConnection.handle_timer`), up to
:data:`MAX_ATTEMPTS` times, then :class:`RequestTimedOut` is reported. A peer restart in the
middle of an exchange is therefore harmless: the new connection resends.

Bad input: foreign magic or version, oversized frame, non-object payload, missing or mistyped
field, unknown kind, anything before :class:`Hello`: :class:`RemoteProtocolError`, connection
dead. An answer to a request never sent is the same; an answer to a request already answered (a
late duplicate) is dropped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from ..km.records import SourceSlice, SupplyPlan
from .framing import NEED_DATA, FrameReader, NeedData, b64, encode_frame, unb64
from .framing import field as get

__all__ = [
    "MAX_ATTEMPTS",
    "NEED_DATA",
    "Answered",
    "Hello",
    "KxConnection",
    "LinkStateAdvertised",
    "PoolAnswered",
    "PoolOffered",
    "RelayCompleted",
    "RelayForwarded",
    "RequestTimedOut",
    "SupplyNotified",
]

MAGIC = b"KX"
VERSION = 1
# 16 MiB bounds a pool offer of ~300 000 key IDs, the most one synchronisation carries.
MAX_PAYLOAD = 16 << 20
MAX_IDS_PER_OFFER = 200_000
# A request is sent again after RETRY_S without an answer, at most MAX_ATTEMPTS times in all.
RETRY_S = 1.0
MAX_ATTEMPTS = 5
# Remember this many answered request IDs, to drop late duplicate answers quietly.
ANSWERED_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of each end: who it is."""

    node: str


@dataclass(frozen=True, slots=True)
class PoolOffered:
    """Link keys that arrived at ``origin`` from its QKD link with the peer."""

    req: int
    origin: str
    key_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True, slots=True)
class PoolAnswered:
    """Which of the offered keys the peer holds (and has activated)."""

    req: int
    held: tuple[uuid.UUID, ...]


@dataclass(frozen=True, slots=True)
class SupplyNotified:
    """Key supply notification: the master KM's plans for supply keys."""

    req: int
    origin: str
    destination: str
    plans: tuple[SupplyPlan, ...]


@dataclass(frozen=True, slots=True)
class RelayForwarded:
    """One hop of a relay: ``ciphertext`` = end-to-end key XOR the link-key bytes of ``plan``."""

    req: int
    relay_id: uuid.UUID
    origin: str
    destination: str
    route: tuple[str, ...]
    plan: SupplyPlan
    ciphertext: bytes

    def __repr__(self) -> str:  # the ciphertext is one-time-pad protected, but stays out too
        return (f"RelayForwarded(req={self.req}, relay_id={self.relay_id}, origin={self.origin!r}"
                f", destination={self.destination!r}, route={self.route!r})")


@dataclass(frozen=True, slots=True)
class RelayCompleted:
    """Relay completion notification, from the destination back to the origin.

    ``more`` names further relays between the same two nodes that ended the same way: a
    destination collects the completions of a short while into one notification.
    """

    req: int
    relay_id: uuid.UUID
    origin: str
    destination: str
    ok: bool
    reason: str = ""
    more: tuple[uuid.UUID, ...] = ()

    @property
    def relay_ids(self) -> tuple[uuid.UUID, ...]:
        """Every relay the notification is about."""
        return (self.relay_id, *self.more)


@dataclass(frozen=True, slots=True)
class LinkStateAdvertised:
    """A node's links and their key levels (bytes available), flooded to every node."""

    origin: str
    seq: int
    links: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Answered:
    """The answer to request ``req``: done, or refused with the key manager's error code."""

    req: int
    ok: bool
    code: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """Local event: request ``req`` got no answer after :data:`MAX_ATTEMPTS` sends."""

    req: int




Request = PoolOffered | SupplyNotified | RelayForwarded | RelayCompleted
Event = (Hello | PoolOffered | PoolAnswered | SupplyNotified | RelayForwarded | RelayCompleted
         | LinkStateAdvertised | Answered)

_KINDS: dict[type, int] = {Hello: 1, PoolOffered: 2, PoolAnswered: 3, SupplyNotified: 4,
                           RelayForwarded: 5, RelayCompleted: 6, LinkStateAdvertised: 7,
                           Answered: 8}
_BY_KIND = {v: k for k, v in _KINDS.items()}


def _plan_out(plan: SupplyPlan) -> dict[str, Any]:
    return {"id": str(plan.key_id), "master": plan.master, "slaves": list(plan.slaves),
            "sources": [[str(s.key_id), s.offset, s.length] for s in plan.sources]}


def _uuid(text: Any, what: str) -> uuid.UUID:
    if not isinstance(text, str):
        raise RemoteProtocolError(f"{what}: a key ID is not text")
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RemoteProtocolError(f"{what}: {text[:40]!r} is not a UUID") from None


def _plan_in(data: Any, what: str) -> SupplyPlan:
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{what}: a plan is not an object")
    slaves = get(data, "slaves", list, what)
    sources = get(data, "sources", list, what)
    if not all(isinstance(s, str) for s in slaves) or not sources:
        raise RemoteProtocolError(f"{what}: a plan's slaves or sources are malformed")
    out = []
    for src in sources:
        if (not isinstance(src, list) or len(src) != 3 or isinstance(src[1], bool)
                or isinstance(src[2], bool) or not isinstance(src[1], int)
                or not isinstance(src[2], int) or src[1] < 0 or src[2] < 1):
            raise RemoteProtocolError(f"{what}: a plan source is malformed")
        out.append(SourceSlice(_uuid(src[0], what), src[1], src[2]))
    return SupplyPlan(_uuid(get(data, "id", str, what), what), get(data, "master", str, what),
                      tuple(slaves), tuple(out))


def _to_payload(event: Event) -> dict[str, Any]:
    if isinstance(event, PoolOffered):
        return {"req": event.req, "origin": event.origin,
                "ids": [str(k) for k in event.key_ids]}
    if isinstance(event, PoolAnswered):
        return {"req": event.req, "ids": [str(k) for k in event.held]}
    if isinstance(event, SupplyNotified):
        return {"req": event.req, "origin": event.origin, "destination": event.destination,
                "plans": [_plan_out(p) for p in event.plans]}
    if isinstance(event, RelayForwarded):
        return {"req": event.req, "relay": str(event.relay_id), "origin": event.origin,
                "destination": event.destination, "route": list(event.route),
                "plan": _plan_out(event.plan), "ct": b64(event.ciphertext)}
    if isinstance(event, RelayCompleted):
        out = {"req": event.req, "relay": str(event.relay_id), "origin": event.origin,
               "destination": event.destination, "ok": event.ok, "reason": event.reason}
        if event.more:
            out["more"] = [str(k) for k in event.more]
        return out
    if isinstance(event, LinkStateAdvertised):
        return {"origin": event.origin, "seq": event.seq,
                "links": [[peer, level] for peer, level in event.links]}
    if isinstance(event, Answered):
        return {"req": event.req, "ok": event.ok, "code": event.code, "reason": event.reason}
    return {"node": event.node}


def _ids(values: Any, what: str) -> tuple[uuid.UUID, ...]:
    if not isinstance(values, list) or len(values) > MAX_IDS_PER_OFFER:
        raise RemoteProtocolError(f"{what}: 'ids' must be a list of at most "
                                  f"{MAX_IDS_PER_OFFER} key IDs")
    return tuple(_uuid(v, what) for v in values)


def _from_payload(kind: int, p: dict[str, Any]) -> Event:
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise RemoteProtocolError(f"Kx: unknown frame kind {kind}")
    what = f"Kx {cls.__name__}"
    if cls is Hello:
        return Hello(get(p, "node", str, what))
    if cls is PoolOffered:
        return PoolOffered(get(p, "req", int, what), get(p, "origin", str, what),
                           _ids(get(p, "ids", list, what), what))
    if cls is PoolAnswered:
        return PoolAnswered(get(p, "req", int, what), _ids(get(p, "ids", list, what), what))
    if cls is SupplyNotified:
        plans = get(p, "plans", list, what)
        return SupplyNotified(get(p, "req", int, what), get(p, "origin", str, what),
                              get(p, "destination", str, what),
                              tuple(_plan_in(x, what) for x in plans))
    if cls is RelayForwarded:
        route = get(p, "route", list, what)
        if not all(isinstance(n, str) for n in route) or len(route) < 2:
            raise RemoteProtocolError(f"{what}: 'route' must list at least two nodes")
        plan = _plan_in(get(p, "plan", dict, what), what)
        ct = unb64(get(p, "ct", str, what), what)
        if len(ct) != plan.size_bytes:
            raise RemoteProtocolError(f"{what}: ciphertext and plan lengths differ")
        return RelayForwarded(get(p, "req", int, what),
                              _uuid(get(p, "relay", str, what), what),
                              get(p, "origin", str, what), get(p, "destination", str, what),
                              tuple(route), plan, ct)
    if cls is RelayCompleted:
        return RelayCompleted(get(p, "req", int, what), _uuid(get(p, "relay", str, what), what),
                              get(p, "origin", str, what), get(p, "destination", str, what),
                              get(p, "ok", bool, what), get(p, "reason", str, what, ""),
                              _ids(get(p, "more", list, what, []), what))
    if cls is LinkStateAdvertised:
        links = get(p, "links", list, what)
        pairs = []
        for item in links:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], int)
                    or item[1] < 0):
                raise RemoteProtocolError(f"{what}: a link entry is malformed")
            pairs.append((item[0], item[1]))
        return LinkStateAdvertised(get(p, "origin", str, what), get(p, "seq", int, what),
                                   tuple(pairs))
    return Answered(get(p, "req", int, what), get(p, "ok", bool, what),
                    get(p, "code", str, what, ""), get(p, "reason", str, what, ""))


@dataclass
class _Outstanding:
    frame: bytes
    deadline: float
    attempts: int


class KxConnection:
    """One end of a Kx connection.

    Args:
        node: this node's name (sent in :class:`Hello`).
        retry_s: seconds before a request without answer is sent again.
        max_attempts: sends of one request before :class:`RequestTimedOut`.
    """

    def __init__(self, node: str, *, retry_s: float = RETRY_S,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.node = node
        self.peer: str | None = None
        self.retry_s = retry_s
        self.max_attempts = max_attempts
        self.closed = False
        self._reader = FrameReader(MAGIC, VERSION, MAX_PAYLOAD, "Kx")
        self._hello_sent = False
        self._next_req = 1
        self._outstanding: dict[int, _Outstanding] = {}
        self._answered: dict[int, None] = {}
        self._timeouts: list[RequestTimedOut] = []

    def _encode(self, event: Event) -> bytes:
        try:
            return encode_frame(MAGIC, VERSION, _KINDS[type(event)], _to_payload(event),
                                MAX_PAYLOAD)
        except ValueError as exc:
            raise LocalProtocolError(f"Kx: {exc}") from None

    def hello(self) -> bytes:
        """The first bytes to send."""
        if self._hello_sent:
            raise LocalProtocolError("Kx: Hello sent twice")
        self._hello_sent = True
        return self._encode(Hello(self.node))

    def next_request_id(self) -> int:
        """A fresh request ID for a request this end is about to send."""
        req = self._next_req
        self._next_req += 1
        return req

    def send_request(self, event: Request | LinkStateAdvertised, now: float) -> bytes:
        """Bytes of a request (tracked for retries; advertisements are not)."""
        if self.closed or not self._hello_sent:
            raise LocalProtocolError("Kx: send Hello first (or the connection is closed)")
        data = self._encode(event)
        if not isinstance(event, LinkStateAdvertised):
            if event.req in self._outstanding or event.req >= self._next_req:
                raise LocalProtocolError(f"Kx: request ID {event.req} was not issued by "
                                         "next_request_id() or is in use")
            self._outstanding[event.req] = _Outstanding(data, now + self.retry_s, 1)
        return data

    def send_answer(self, event: Answered | PoolAnswered) -> bytes:
        """Bytes of an answer to one of the peer's requests."""
        if self.closed or not self._hello_sent:
            raise LocalProtocolError("Kx: send Hello first (or the connection is closed)")
        return self._encode(event)

    @property
    def outstanding(self) -> frozenset[int]:
        """Request IDs sent and not yet answered."""
        return frozenset(self._outstanding)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (None: nothing pending)."""
        if not self._outstanding:
            return None
        return min(o.deadline for o in self._outstanding.values())

    def handle_timer(self, now: float) -> bytes:
        """Resends overdue requests; gives up on those sent ``max_attempts`` times (reported
        as :class:`RequestTimedOut` by :meth:`next_event`). Returns the bytes to send."""
        out = bytearray()
        for req, o in list(self._outstanding.items()):
            if o.deadline > now:
                continue
            if o.attempts >= self.max_attempts:
                del self._outstanding[req]
                self._timeouts.append(RequestTimedOut(req))
                continue
            o.attempts += 1
            o.deadline = now + self.retry_s * o.attempts
            out += o.frame
        return bytes(out)

    def pop_timeouts(self) -> list[RequestTimedOut]:
        """The requests given up by :meth:`handle_timer` (also reported by :meth:`next_event`),
        for a caller that does not want to wait for incoming bytes to learn of them."""
        out, self._timeouts = self._timeouts, []
        return out

    def receive_data(self, data: bytes) -> None:
        """Feeds bytes from the peer."""
        if self.closed:
            raise LocalProtocolError("Kx: the connection is closed")
        self._reader.feed(data)

    def next_event(self) -> Event | RequestTimedOut | NeedData:
        """The next event, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is closed.
        """
        if self._timeouts:
            return self._timeouts.pop(0)
        if self.closed:
            raise LocalProtocolError("Kx: the connection is closed")
        try:
            while True:
                frame = self._reader.next_frame()
                if frame is None:
                    return NEED_DATA
                event = _from_payload(frame.kind, frame.payload)
                if isinstance(event, Hello):
                    if self.peer is not None:
                        raise RemoteProtocolError("Kx: Hello sent twice")
                    self.peer = event.node
                    return event
                if self.peer is None:
                    raise RemoteProtocolError(f"Kx: {type(event).__name__} before Hello")
                if isinstance(event, Answered | PoolAnswered):
                    if event.req in self._answered:
                        continue  # a late duplicate of an answer already taken
                    if self._outstanding.pop(event.req, None) is None:
                        raise RemoteProtocolError(f"Kx: answer to request {event.req}, which "
                                                  "was never sent")
                    self._answered[event.req] = None
                    if len(self._answered) > ANSWERED_MEMORY:
                        del self._answered[next(iter(self._answered))]
                return event
        except RemoteProtocolError:
            self.closed = True
            raise
