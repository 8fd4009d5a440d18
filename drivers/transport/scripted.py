"""Scripted exchanges: replaying an exact conversation with an instrument, for unit tests.

A script is a list of steps ``(sent, reply)``, in the style of PyMeasure's
``expected_protocol``:

* ``("MEAS:POW?", "1.2E-3")``: the driver sends ``MEAS:POW?`` and reads ``1.2E-3`` (by ``query``,
  or by ``write`` then ``read``).
* ``("SENS:CORR:WAV 1550", None)``: a write with no reply.
* ``(None, "ready")``: a reply read with nothing sent (unsolicited, or a second line).
* ``(b"DATA:ARB q,#13abc\\n", None)``: raw bytes sent; a ``bytes`` reply is read with
  ``read_bytes``, in as many pieces as the driver likes.
* ``("COUNTERS:DETECTION_FREQ?", SCRIPTED_TIMEOUT)``: the command is sent, reading its reply
  raises :class:`~qkdnode.drivers.errors.TransportTimeout`.
* ``("MZM:VOLTAGE?", SCRIPTED_DISCONNECT)``: sending the command raises
  :class:`~qkdnode.drivers.errors.TransportError` (``(None, SCRIPTED_DISCONNECT)``: the read does).

Any deviation fails loudly with an ``AssertionError`` naming the step index and the expected
and actual command; :meth:`ScriptedTransport.assert_done` checks that every step was used.

Scripts are stored as JSON lines (see :func:`save_steps`), so an exchange recorded in the lab by
:class:`~qkdnode.drivers.transport.recording.RecordingTransport` replays in CI.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .base import TransportBase, describe_command

__all__ = [
    "EXCHANGE_FORMAT",
    "EXCHANGE_FORMAT_VERSION",
    "SCRIPTED_DISCONNECT",
    "SCRIPTED_TIMEOUT",
    "Digest",
    "Fault",
    "Reply",
    "ScriptedTransport",
    "Sent",
    "Step",
    "load_steps",
    "save_steps",
    "scripted",
]


class Fault(enum.Enum):
    """A scripted failure in place of a reply."""

    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"


SCRIPTED_TIMEOUT = Fault.TIMEOUT
"""Reply sentinel: reading the reply raises TransportTimeout."""
SCRIPTED_DISCONNECT = Fault.DISCONNECT
"""Reply sentinel: sending the command (or, with nothing sent, the read) raises TransportError."""

@dataclass(frozen=True, slots=True)
class Digest:
    """Bytes that were sent, known by their SHA-256 and length only.

    A recording of a transmitter's frame upload holds key material (the per-slot choices);
    :class:`~.recording.RecordingTransport` records binary writes as a digest, and a replay
    checks that the driver sends bytes with that digest, without the file holding them.
    """

    sha256: str
    length: int

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of ``data``."""
        return cls(hashlib.sha256(data).hexdigest(), len(data))

    def matches(self, data: object) -> bool:
        """True if ``data`` is bytes with this digest."""
        return isinstance(data, bytes) and len(data) == self.length \
            and hmac.compare_digest(hashlib.sha256(data).hexdigest(), self.sha256)

    def __repr__(self) -> str:
        return f"<{self.length} bytes, sha256 {self.sha256[:16]}...>"


Sent = str | bytes | Digest | None
Reply = str | bytes | Fault | None
Step = tuple[Sent, Reply]

# Identifies our JSON-lines files in their first line, so a wrong file fails clearly.
EXCHANGE_FORMAT = "qkdnode-transport-exchange"
# Bumped on any incompatible change of the line layout.
EXCHANGE_FORMAT_VERSION = 1

# Placeholder names for a replayed exchange that does not say where it came from.
_DEFAULT_INSTRUMENT = "scripted instrument"
_DEFAULT_RESOURCE = "scripted://"
# A scripted timeout happens at once; this is only the figure named in its message.
_DEFAULT_TIMEOUT_S = 1.0


def _check_step(index: int, step: object) -> Step:
    if not isinstance(step, tuple | list) or len(step) != 2:
        raise TypeError(f"script step {index} must be a (sent, reply) pair, got {step!r}")
    sent, reply = step
    if sent is not None and not isinstance(sent, str | bytes | Digest):
        raise TypeError(
            f"script step {index}: sent must be str, bytes, a Digest or None, got {sent!r}")
    if reply is not None and not isinstance(reply, str | bytes | Fault):
        raise TypeError(
            f"script step {index}: reply must be str, bytes, None or a Fault, got {reply!r}"
        )
    if sent is None and reply is None:
        raise ValueError(f"script step {index}: (None, None) does nothing")
    return (sent, reply)


class ScriptedTransport(TransportBase):
    """Replays a scripted exchange exactly (format: module docstring).

    Args:
        steps: the ``(sent, reply)`` pairs, in order.
        instrument: a name for messages.
        resource: a URL for messages.
        timeout_s: the timeout named in scripted timeout messages.
    """

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        instrument: str = _DEFAULT_INSTRUMENT,
        resource: str = _DEFAULT_RESOURCE,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(instrument=instrument, resource=resource, timeout_s=timeout_s)
        self._steps: tuple[Step, ...] = tuple(_check_step(i, s) for i, s in enumerate(steps))
        self._index = 0
        # The reply of the step being read, and that step's index.
        self._pending: str | bytes | Fault | None = None
        self._pending_index = -1

    @classmethod
    def load(cls, path: str | os.PathLike[str], **names: Any) -> ScriptedTransport:
        """Builds a transport replaying a file written by :func:`save_steps`.

        Args:
            path: the JSON-lines file.
            names: ``instrument``/``resource``/``timeout_s`` overriding the file's.
        """
        header, steps = load_steps(path)
        options: dict[str, Any] = {"instrument": header["instrument"]}
        options["resource"] = header["resource"]
        if isinstance(header.get("timeout_s"), int | float):
            options["timeout_s"] = header["timeout_s"]
        options.update(names)
        return cls(steps, **options)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The script."""
        return self._steps

    @property
    def position(self) -> int:
        """The index of the next step to be used."""
        return self._index

    def assert_done(self) -> None:
        """Checks that every step was used and every scripted reply read.

        Raises:
            AssertionError: naming the first unused step.
        """
        if self._pending is not None:
            raise AssertionError(
                f"{self.instrument}: step {self._pending_index}: the reply "
                f"{self._pending!r} was never read"
            )
        if self._index < len(self._steps):
            left = len(self._steps) - self._index
            raise AssertionError(
                f"{self.instrument}: {left} scripted step(s) not used, the first is step "
                f"{self._index}: {self._steps[self._index]!r}"
            )

    def _fail(self, text: str) -> AssertionError:
        return AssertionError(f"{self.instrument}: {text}")

    def _take(self, action: str, sent: str | bytes) -> tuple[int, Reply]:
        """Uses the next step, which must send exactly ``sent``."""
        if self._pending is not None:
            raise self._fail(
                f"step {self._pending_index}: the reply {self._pending!r} was not read before "
                f"{action} {sent!r}"
            )
        index = self._index
        if index >= len(self._steps):
            raise self._fail(f"step {index}: script ended, but got {action} {sent!r}")
        expected, reply = self._steps[index]
        same = expected.matches(sent) if isinstance(expected, Digest) else expected == sent
        if not same:
            # Redacted bytes stay redacted in the message too.
            shown = Digest.of(sent) if isinstance(expected, Digest) and \
                isinstance(sent, bytes) else sent
            raise self._fail(
                f"step {index}: expected {_expected(expected)}, got {action} {shown!r}"
                + _difference(expected, sent)
            )
        self._index += 1
        self._last_command = sent
        if reply is Fault.DISCONNECT:
            raise self._error(f"link lost sending {describe_command(sent)} (scripted)")
        return index, reply

    def _hold(self, index: int, reply: Reply) -> None:
        self._pending = reply
        self._pending_index = index

    def _pending_reply(self, action: str) -> str | bytes:
        """Takes the reply to read: the pending one, or a ``(None, reply)`` step's."""
        if self._pending is None:
            index = self._index
            if index >= len(self._steps):
                raise self._fail(f"step {index}: script ended, but got {action}")
            expected, reply = self._steps[index]
            if expected is not None:
                raise self._fail(
                    f"step {index}: expected {_expected(expected)}, got {action} with no reply "
                    "pending"
                )
            self._index += 1
            self._hold(index, reply)
        reply, index = self._pending, self._pending_index
        if reply is Fault.TIMEOUT:
            self._pending = None
            raise self._timeout(self._last_command, "scripted")
        if reply is Fault.DISCONNECT:
            self._pending = None
            raise self._error(
                f"link lost reading the reply to {describe_command(self._last_command)} "
                "(scripted)"
            )
        assert reply is not None
        return reply

    def write(self, command: str) -> None:
        """Sends one command: must be the next step's."""
        self._check_open(command)
        index, reply = self._take("write", command)
        if reply is not None:
            self._hold(index, reply)

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes: must be the next step's."""
        self._check_open(data)
        index, reply = self._take("write_bytes", bytes(data))
        if reply is not None:
            self._hold(index, reply)

    def query(self, command: str) -> str:
        """Sends one command and reads its reply: the next step must have a text reply."""
        self._check_open(command)
        index, reply = self._take("query", command)
        if reply is None:
            raise self._fail(f"step {index}: {command!r} is scripted as a write with no reply")
        self._hold(index, reply)
        return self.read()

    def read(self) -> str:
        """Reads one reply: the pending scripted text reply."""
        self._check_open(None)
        reply = self._pending_reply("read()")
        if not isinstance(reply, str):
            raise self._fail(
                f"step {self._pending_index}: the scripted reply is binary "
                f"({len(reply)} bytes), read with read_bytes(), not read()"
            )
        self._pending = None
        return reply

    def read_bytes(self, n: int) -> bytes:
        """Reads ``n`` bytes of the pending scripted binary reply."""
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        self._check_open(None)
        reply = self._pending_reply(f"read_bytes({n})")
        if not isinstance(reply, bytes):
            raise self._fail(
                f"step {self._pending_index}: the scripted reply {reply!r} is text, "
                "read with read(), not read_bytes()"
            )
        if n > len(reply):
            raise self._fail(
                f"step {self._pending_index}: read_bytes({n}), but only {len(reply)} scripted "
                "bytes are left"
            )
        rest = reply[n:]
        self._pending = rest if rest else None
        return reply[:n]


@contextmanager
def scripted(steps: Iterable[Step], **names: Any) -> Iterator[ScriptedTransport]:
    """A :class:`ScriptedTransport` that must be used up when the block ends without error.

    Example::

        with scripted([("*IDN?", "Thorlabs,PM100USB,P1,1.0")]) as transport:
            assert PowerMeter(transport).identity().model == "PM100USB"
    """
    transport = ScriptedTransport(steps, **names)
    yield transport
    transport.assert_done()


def _expected(sent: Sent) -> str:
    return "a read (nothing sent)" if sent is None else f"to be sent {sent!r}"


def _difference(expected: Sent, actual: str | bytes) -> str:
    """Where two commands first differ, to spot a one-character mistake in a long command."""
    if expected is None or isinstance(expected, Digest) or type(expected) is not type(actual):
        return ""
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    return f" (first difference at character {at})"


def _encode_value(value: Reply | Digest) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Fault):
        return {"fault": value.value}
    if isinstance(value, Digest):
        return {"sha256": value.sha256, "length": value.length}
    return {"base64": base64.b64encode(value).decode("ascii")}


def _decode_value(value: object, where: str) -> Reply | Digest:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"sha256", "length"} \
            and isinstance(value["sha256"], str) and isinstance(value["length"], int):
        return Digest(value["sha256"], value["length"])
    if isinstance(value, dict) and len(value) == 1:
        if "base64" in value and isinstance(value["base64"], str):
            return base64.b64decode(value["base64"], validate=True)
        if "fault" in value:
            try:
                return Fault(value["fault"])
            except ValueError:
                pass
    raise ValueError(f"{where}: not a recorded value: {value!r}")


def save_steps(
    path: str | os.PathLike[str],
    steps: Sequence[Step],
    *,
    instrument: str,
    resource: str,
    timeout_s: float | None = None,
) -> None:
    """Writes a script as JSON lines.

    The first line is a header ``{"format": ..., "version": 1, "instrument": ...,
    "resource": ..., "timeout_s": ...}`` (``timeout_s`` only if given); then one
    ``{"sent": ..., "reply": ...}`` per step, where a value is ``null``, a string,
    ``{"base64": ...}`` for bytes or ``{"fault": "timeout"|"disconnect"}``.
    """
    checked = [_check_step(i, s) for i, s in enumerate(steps)]
    header: dict[str, object] = {
        "format": EXCHANGE_FORMAT,
        "version": EXCHANGE_FORMAT_VERSION,
        "instrument": instrument,
        "resource": resource,
    }
    if timeout_s is not None:
        header["timeout_s"] = timeout_s
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for sent, reply in checked:
            line = {"sent": _encode_value(sent), "reply": _encode_value(reply)}
            out.write(json.dumps(line) + "\n")


def load_steps(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Step]]:
    """Reads a file written by :func:`save_steps`.

    Returns:
        The header (with ``instrument`` and ``resource``) and the steps.

    Raises:
        ValueError: naming the file and line of anything malformed.
    """
    steps: list[Step] = []
    with open(path, encoding="utf-8") as lines:
        first = lines.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:1: not a {EXCHANGE_FORMAT} file") from exc
        if not isinstance(header, dict) or header.get("format") != EXCHANGE_FORMAT:
            raise ValueError(f"{path}:1: not a {EXCHANGE_FORMAT} file")
        if header.get("version") != EXCHANGE_FORMAT_VERSION:
            raise ValueError(
                f"{path}:1: version {header.get('version')!r}, this reader knows "
                f"{EXCHANGE_FORMAT_VERSION}"
            )
        for number, text in enumerate(lines, start=2):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON: {exc}") from exc
            if not isinstance(record, dict) or set(record) != {"sent", "reply"}:
                raise ValueError(f"{where}: a step has exactly the keys 'sent' and 'reply'")
            sent = _decode_value(record["sent"], where)
            if isinstance(sent, Fault):
                raise ValueError(f"{where}: a fault can only be a reply")
            try:
                steps.append(_check_step(number, (sent, _decode_value(record["reply"], where))))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from exc
    header.setdefault("instrument", _DEFAULT_INSTRUMENT)
    header.setdefault("resource", _DEFAULT_RESOURCE)
    return header, steps
