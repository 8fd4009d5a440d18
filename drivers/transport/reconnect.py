"""Reconnecting with exponential back-off when an instrument's link fails.

Policy (what :class:`ReconnectingTransport` does when a command fails with
:class:`~qkdnode.drivers.errors.TransportError`, the link itself failing):

* The broken transport is closed. Then up to ``max_attempts`` times: wait (``initial_delay_s``,
  multiplied by ``factor`` after each attempt, at most ``max_delay_s``), reopen, and resend the
  command if it is safe to repeat. If every attempt fails, a ``TransportError`` says so, naming
  the attempts and the time spent; the next command starts over.
* Safe to repeat: queries (reading a setting or a measurement twice does no harm), except those
  listed in ``unsafe_queries`` (e.g. ``SYST:ERR?``, which pops the error queue), and writes only
  if their header is listed in ``safe_writes`` (setting an absolute value, ``MZM:HOLD:VOLTAGE``,
  is; ``*TRG`` or a relative step is not). Headers compare case-insensitively.
* A command that is not safe to repeat is not resent: its error is raised at once (it may or
  may not have reached the instrument), and the link is reopened before the next command.
* A bare ``read``/``read_bytes`` is never repeated: its reply was lost with the link.
* A :class:`~qkdnode.drivers.errors.TransportTimeout` (a silent instrument on a working link) is
  passed through unchanged, unless ``reconnect_on_timeout`` is set (some USB-serial adapters
  only ever time out when unplugged); then it is handled like a broken link.
* The first open (in the constructor) is not retried: a missing instrument at start-up is a
  configuration problem to report, not to wait out.
* Commands from several threads are serialised; a thread arriving during a reconnect waits for
  it. ``close`` stops a reconnect in progress after its current wait.

Each attempt is logged at WARNING on ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from .._closing import ClosesOnExit
from ..errors import TransportError, TransportTimeout
from .base import Transport, describe_command, error_prefix

__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_INITIAL_DELAY_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY_S",
    "ReconnectPolicy",
    "ReconnectingTransport",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# A USB instrument re-enumerates, or a USB-serial adapter is re-plugged, in about half a second;
# trying sooner mostly fails again.
DEFAULT_INITIAL_DELAY_S = 0.5
# Classic doubling: reaches the cap in a few attempts without hammering a rebooting instrument.
DEFAULT_BACKOFF_FACTOR = 2.0
# Instruments take tens of seconds to boot after a power cycle; waiting longer than this between
# attempts only delays noticing that one is back.
DEFAULT_MAX_DELAY_S = 30.0
# 0.5 + 1 + 2 + 4 + 8 + 16 + 30 + 30 s = about 90 s: rides out an instrument reboot, yet an
# unplugged instrument raises an error (and an alarm upstream) within a couple of minutes.
DEFAULT_MAX_ATTEMPTS = 8


def _headers(names: Iterable[str]) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError("give command headers as a collection of strings, not one string")
    return frozenset(name.strip().upper() for name in names)


def _header(command: str) -> str:
    parts = command.split(maxsplit=1)
    return parts[0].upper() if parts else ""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """When and how often to reconnect, and which commands may be resent.

    Attributes:
        initial_delay_s: wait before the first reopen.
        factor: each further wait is the previous one times this.
        max_delay_s: no wait is longer than this.
        max_attempts: reopen attempts per failure before giving up.
        reconnect_on_timeout: treat a reply timeout as a broken link.
        safe_writes: headers of writes that may be resent (e.g. ``{"MZM:HOLD:VOLTAGE"}``).
        unsafe_queries: headers of queries that must not be resent (e.g. ``{"SYST:ERR?"}``).
    """

    initial_delay_s: float = DEFAULT_INITIAL_DELAY_S
    factor: float = DEFAULT_BACKOFF_FACTOR
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    reconnect_on_timeout: bool = False
    safe_writes: frozenset[str] = frozenset()
    unsafe_queries: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.initial_delay_s >= 0:
            raise ValueError(f"initial_delay_s must be >= 0, got {self.initial_delay_s}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not self.max_delay_s >= self.initial_delay_s:
            raise ValueError("max_delay_s must be at least initial_delay_s")
        if isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, got {self.max_attempts}")
        object.__setattr__(self, "safe_writes", _headers(self.safe_writes))
        object.__setattr__(self, "unsafe_queries", _headers(self.unsafe_queries))

    def delays(self) -> list[float]:
        """The waits before each attempt, in seconds."""
        return [
            min(self.initial_delay_s * self.factor**i, self.max_delay_s)
            for i in range(self.max_attempts)
        ]

    def write_is_safe(self, command: str) -> bool:
        """Whether a write may be resent after a reconnect."""
        return _header(command) in self.safe_writes

    def query_is_safe(self, command: str) -> bool:
        """Whether a query may be resent after a reconnect."""
        return _header(command) not in self.unsafe_queries


class ReconnectingTransport(ClosesOnExit):
    """A transport that reopens its link with back-off when it fails (policy: module docstring).

    Args:
        opener: opens a fresh transport (called now, and again for each reconnect attempt).
        policy: the back-off and resend rules.
        sleep: waits the given seconds (injectable so tests run instantly).
    """

    def __init__(
        self,
        opener: Callable[[], Transport],
        *,
        policy: ReconnectPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._opener = opener
        self._policy = policy if policy is not None else ReconnectPolicy()
        self._sleep = sleep
        first = opener()
        self._inner: Transport | None = first
        self._resource = first.resource
        self._instrument = first.instrument
        self._reconnects = 0
        self._closed = False
        self._lock = threading.RLock()

    @property
    def resource(self) -> str:
        """The resource URL of the wrapped transport."""
        return self._resource

    @property
    def instrument(self) -> str:
        """A name for messages."""
        return self._instrument

    @property
    def policy(self) -> ReconnectPolicy:
        """The reconnect policy."""
        return self._policy

    @property
    def reconnects(self) -> int:
        """How many times the link was reopened successfully (for status reports)."""
        return self._reconnects

    @property
    def connected(self) -> bool:
        """False while the link is down (after a failure, until the next command reopens it)."""
        return self._inner is not None


    def __repr__(self) -> str:
        return f"<ReconnectingTransport {self._instrument} at {self._resource}>"

    def write(self, command: str) -> None:
        """Sends one command; resent after a reconnect only if listed in ``safe_writes``."""
        self._run(command, lambda link: link.write(command), self._policy.write_is_safe(command))

    def query(self, command: str) -> str:
        """Sends one command and reads its reply; resent after a reconnect unless unsafe."""
        return self._run(
            command, lambda link: link.query(command), self._policy.query_is_safe(command)
        )

    def read(self) -> str:
        """Reads one reply (never repeated: a reply is lost with its link)."""
        return self._run(None, lambda link: link.read(), False)

    def write_bytes(self, data: bytes) -> None:
        """Sends raw bytes (never resent: a binary write may be one part of an upload)."""
        self._run(bytes(data), lambda link: link.write_bytes(data), False)

    def read_bytes(self, n: int) -> bytes:
        """Reads exactly ``n`` raw bytes (never repeated)."""
        return self._run(None, lambda link: link.read_bytes(n), False)

    def close(self) -> None:
        """Closes the wrapped transport; no further reconnects."""
        self._closed = True
        with self._lock:
            self._drop()

    def _message(self, text: str) -> str:
        return f"{error_prefix(self._instrument, self._resource)}: {text}"

    def _is_link_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, TransportError):
            return True
        return self._policy.reconnect_on_timeout and isinstance(exc, TransportTimeout)

    def _drop(self) -> None:
        inner, self._inner = self._inner, None
        if inner is None:
            return
        try:
            inner.close()
        except (TransportError, TransportTimeout) as exc:
            # The link is already broken; closing it is only tidying up.
            logger.debug("%s", self._message(f"error while closing the broken link: {exc}"))

    def _run(
        self, command: str | bytes | None, op: Callable[[Transport], _T], resend: bool
    ) -> _T:
        with self._lock:
            return self._run_locked(command, op, resend)

    def _run_locked(
        self, command: str | bytes | None, op: Callable[[Transport], _T], resend: bool
    ) -> _T:
        if self._closed:
            what = f"{describe_command(command)} not sent" if command is not None else "no read"
            raise TransportError(self._message(f"{what}: closed"))
        if self._inner is None:
            # The link broke on an earlier command; this one was not sent yet, so reopen first.
            return self._reconnect(command, None, op, resend)
        try:
            return op(self._inner)
        except (TransportError, TransportTimeout) as exc:
            if not self._is_link_failure(exc):
                raise
            self._drop()
            if not resend:
                raise self._not_resent(exc, command) from exc
            return self._reconnect(command, exc, op, resend)

    @staticmethod
    def _not_resent(
        exc: TransportError | TransportTimeout, command: str | bytes | None
    ) -> TransportError | TransportTimeout:
        what = "not resent" if command is not None else "not repeated"
        return type(exc)(
            f"{exc}; {what}: not safe to repeat (the link is reopened on the next command)"
        )

    def _reconnect(
        self,
        command: str | bytes | None,
        cause: TransportError | TransportTimeout | None,
        op: Callable[[Transport], _T],
        resend: bool,
    ) -> _T:
        """Reopens with back-off, then runs ``op`` on the new link and returns its result."""
        delays = self._policy.delays()
        last = cause
        waited = 0.0
        for attempt, delay in enumerate(delays, start=1):
            reason = last if last is not None else "down since an earlier failure"
            logger.warning(
                "%s",
                self._message(
                    f"link lost ({reason}); reconnect attempt {attempt} of {len(delays)} "
                    f"in {delay:.3g} s"
                ),
            )
            self._sleep(delay)
            waited += delay
            if self._closed:
                raise TransportError(
                    self._message(f"closed while reconnecting for {describe_command(command)}")
                ) from last
            try:
                link = self._opener()
            except (TransportError, TransportTimeout) as exc:
                last = exc
                continue
            self._inner = link
            self._reconnects += 1
            logger.warning("%s", self._message(f"reconnected on attempt {attempt}"))
            try:
                return op(link)
            except (TransportError, TransportTimeout) as exc:
                if not self._is_link_failure(exc):
                    raise
                self._drop()
                if not resend:
                    raise self._not_resent(exc, command) from exc
                last = exc
        raise TransportError(
            self._message(
                f"link lost at {describe_command(command)}; gave up after {len(delays)} "
                f"reconnect attempts over {waited:.3g} s; last error: {last}"
            )
        ) from last
