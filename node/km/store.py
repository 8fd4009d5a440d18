"""The key store (KMA): durable, exactly-once, and destroyed keys gone from the files.

:class:`KeyStore` is the interface the key manager uses; :class:`SqliteKeyStore` implements it on
an embedded SQLite file, configured so that

* an acknowledged write survives a crash or power loss: WAL journal with ``synchronous=FULL``
  (the commit is on disk when the call returns, so a Kq-1 acknowledgement sent after it is true);
* every change is atomic: a request either happens completely or not at all, so after a
  ``kill -9`` no key is half-delivered, delivered twice, or reused; concurrent requests share a
  commit (group commit: each in its own savepoint, one fsync for all), and none returns before
  the commit that holds it;
* destroyed key bytes cannot be read back from the database files: ``secure_delete=ON`` zeroes
  deleted content in the main file, and after a transaction that destroyed key material the
  WAL is checkpointed with ``TRUNCATE``, which empties the WAL file that still held the pages
  written when the key arrived (at once, or within ``wipe_delay_s`` when a busy store shares
  one truncation among many transactions). Destroyed keys keep a tombstone (ID, pool, state,
  time: no bytes), so an ID can never come back.

Link keys are consumed by supply plans in byte ranges (see :mod:`.records`); consumed bytes are
overwritten with zeros in the stored copy at once, and the link key is destroyed when its last
byte is used. Times are passed in (UNIX seconds), never read inside.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import (
    KeyConflict,
    KeyManagerError,
    KeyNotFound,
    KeyPoolDepleted,
    KeyStoreFull,
    NotAuthorized,
)
from .records import (
    KeyState,
    LinkKey,
    PoolLevel,
    SourceSlice,
    SupplyKey,
    SupplyPlan,
    SupplyState,
)

__all__ = ["DEFAULT_RESERVATION_LIFETIME_S", "KeyStore", "SqliteKeyStore", "time_ordered_key_id"]

# Tables added without a version change (CREATE IF NOT EXISTS; older code ignores them):
# module_holds, relay_completions.
SCHEMA_VERSION = 2
# A reserved supply key that no recipient collected within an hour is destroyed (never returned
# to the pool: its peer may already hold it). ETSI 014 leaves the lifetime to the KME; an hour
# covers a slave application that restarts before asking for its keys.
DEFAULT_RESERVATION_LIFETIME_S = 3600.0
# The master and slave named in the plans of one-time pads (never an SAE: SAE IDs from
# certificates cannot start with '@').
RELAY_PAD = "@pad"
# IDs looked up per query (SQLite's default limit on host parameters is 32766).
ID_LOOKUP_BATCH = 500
# Destroyed key bytes never stay in the WAL longer than this, whatever the configuration.
MAX_WIPE_DELAY_S = 5.0
# SQLite waits this long for a lock held by another connection before failing.
BUSY_TIMEOUT_MS = 10_000
# With a wipe delay, the store's wiper thread starts copying the WAL into the database this
# long (at most half the delay) before the truncation is due, without blocking writers, so
# that the truncation itself, which does block them, has little left to copy.
WIPE_LEAD_S = 0.05
# Copying passes before the truncation: each copies what was committed during the previous one,
# so the truncation (which holds writers) rarely has frames left to copy and fsync.
PASSIVE_PASSES = 3

T = TypeVar("T")

log = logging.getLogger(__name__)

_LIVE = (KeyState.PRE_ACTIVATION.value, KeyState.ACTIVE.value)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS link_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL UNIQUE,
    pool TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    consumed TEXT NOT NULL DEFAULT '[]',
    used_bytes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    link TEXT NOT NULL,
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    qber REAL,
    created_at REAL NOT NULL,
    expires_at REAL,
    changed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS link_keys_pool_state ON link_keys (pool, state, seq);
CREATE TABLE IF NOT EXISTS supply_keys (
    key_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    master TEXT NOT NULL,
    slaves TEXT NOT NULL,
    plan TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    changed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS supply_keys_pool_state ON supply_keys (pool, state);
CREATE TABLE IF NOT EXISTS recipients (
    key_id TEXT NOT NULL,
    sae TEXT NOT NULL,
    delivered_at REAL,
    PRIMARY KEY (key_id, sae)
);
CREATE TABLE IF NOT EXISTS material (
    key_id TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS module_holds (
    module TEXT PRIMARY KEY,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_completions (
    relay_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    since REAL NOT NULL
);
"""


class KeyStore(Protocol):
    """What the key manager needs from a key store (SQLite today, a server database later)."""

    def add_link_keys(self, pool: str, keys: Sequence[LinkKey], now: float, *,
                      active: bool = False, confirm_within_s: float | None = None) -> int: ...

    def activate(self, pool: str, key_ids: Iterable[uuid.UUID], now: float) -> int: ...

    def make_supply(self, pool: str, master: str, slaves: Sequence[str], count: int,
                    size_bytes: int, local_recipients: Iterable[str], now: float
                    ) -> list[SupplyPlan]: ...

    def take_supply(self, pool: str, master: str, slaves: Sequence[str], count: int,
                    size_bytes: int, now: float, *,
                    on_planned: Callable[[list[SupplyPlan]], None] | None = None
                    ) -> tuple[list[SupplyPlan], list[SupplyKey]]: ...

    def reserve(self, pool: str, plans: Sequence[SupplyPlan], local_recipients: Iterable[str],
                now: float) -> None: ...

    def deliver(self, key_ids: Sequence[uuid.UUID], sae: str, now: float, *,
                master: str | None = None) -> list[SupplyKey]: ...

    def take_pad(self, pool: str, size_bytes: int, now: float) -> tuple[SupplyPlan, bytes]: ...

    def take_pad_as(self, pool: str, plan: SupplyPlan, now: float) -> bytes: ...

    def relay_begin(self, pool: str, key: LinkKey, to: str, now: float, *,
                    confirm_within_s: float) -> tuple[SupplyPlan, bytes]: ...

    def relay_forward(self, pool: str, plan: SupplyPlan, to: str, now: float
                      ) -> tuple[bytes, tuple[SupplyPlan, bytes] | KeyPoolDepleted]: ...

    def relay_end(self, pool: str, plan: SupplyPlan, origin: str,
                  make_key: Callable[[bytes], LinkKey], now: float
                  ) -> KeyManagerError | None: ...

    def supply_recipients(self, key_id: uuid.UUID) -> tuple[str, tuple[str, ...]]: ...

    def destroy(self, key_ids: Iterable[uuid.UUID], now: float, *,
                compromised: bool = False) -> int: ...

    def expire(self, now: float) -> int: ...

    def levels(self) -> dict[str, PoolLevel]: ...

    def link_key_ids(self, pool: str, state: KeyState) -> list[uuid.UUID]: ...

    def link_key_states(self, pool: str, key_ids: Sequence[uuid.UUID]
                        ) -> dict[uuid.UUID, KeyState]: ...

    def hold_module(self, module: str, held: bool, now: float) -> None: ...

    def held_modules(self) -> list[str]: ...

    def pending_completions(self) -> list[tuple[uuid.UUID, str]]: ...

    def completions_settled(self, relay_ids: Iterable[uuid.UUID]) -> None: ...

    def relays_abandoned(self, pool: str, relay_ids: Sequence[uuid.UUID]
                         ) -> list[uuid.UUID]: ...

    def close(self) -> None: ...


def _merged_runs(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open byte spans merged where they overlap or touch, in order."""
    runs: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], stop))
        else:
            runs.append((start, stop))
    return runs


def _ranges_add(ranges: list[list[int]], start: int, end: int) -> list[list[int]] | None:
    """Adds [start, end) to sorted disjoint ``ranges``; None if it overlaps one of them."""
    for a, b in ranges:
        if start < b and a < end:
            return None
    merged: list[list[int]] = []
    for a, b in sorted([*ranges, [start, end]]):
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return merged


def _free_runs(size: int, ranges: list[list[int]]) -> Iterator[tuple[int, int]]:
    """The unconsumed [start, end) runs of a key of ``size`` bytes, in order."""
    pos = 0
    for a, b in ranges:
        if a > pos:
            yield pos, a
        pos = max(pos, b)
    if pos < size:
        yield pos, size


def _used(ranges: list[list[int]] | None) -> int:
    """Bytes covered by consumed ranges."""
    assert ranges is not None
    return sum(b - a for a, b in ranges)


def time_ordered_key_id(now: float) -> uuid.UUID:
    """A new supply key ID: a version 7 UUID (RFC 9562: 48-bit UNIX milliseconds, then 74
    random bits from the operating system's CSPRNG).

    Both stores index supply keys by ID; IDs that grow with time land on the last page of each
    index instead of a random one, so a request dirties (and commits, and checkpoints) a few
    pages instead of one per key per index. The creation time a version 7 ID shows is in the
    key's records anyway; nothing about the key's bytes is in it.
    """
    ms = int(now * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) \
        | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


class _Texts(dict[uuid.UUID, str]):
    """Memo of key IDs as text for one operation: the link keys behind a request's plans are a
    few IDs used by many slices (``str(UUID)`` costs as much as a row's other work)."""

    def __missing__(self, key_id: uuid.UUID) -> str:
        text = self[key_id] = str(key_id)
        return text


def _plan_json(plan: SupplyPlan, texts: _Texts | None = None) -> str:
    """The stored form of a plan's sources: exactly ``json.dumps([[id, offset, length], ...])``
    (stores written before compare it with retransmitted plans), without the encoder."""
    texts = _Texts() if texts is None else texts
    return "[" + ", ".join(f'["{texts[src.key_id]}", {src.offset}, {src.length}]'
                           for src in plan.sources) + "]"


class _Pending:
    """One operation waiting for the group commit."""

    __slots__ = ("done", "error", "op", "result")

    def __init__(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        self.op = op
        self.result: Any = None
        self.error: Exception | None = None
        self.done = False


class SqliteKeyStore:
    """The key store on one SQLite file (see the module docstring for the guarantees).

    Args:
        path: the database file (created with its tables if missing).
        max_key_count: capacity per pool: live link keys (pre-activation or active) it may hold;
            a push beyond it is refused whole with :class:`KeyStoreFull`.
        key_lifetime_s: link keys older than this are destroyed by :meth:`expire` (None: never).
        reservation_lifetime_s: supply keys not collected by every recipient within this time
            are destroyed by :meth:`expire`.
        wipe_delay_s: how long destroyed key bytes may stay in the WAL file before it is
            truncated (0: by the transaction that destroyed them, before it returns; more lets
            busy stores truncate once for many transactions: the store's wiper thread then
            truncates when the delay is up, off the path of any request; :meth:`flush` does
            it at once).

    Safe to share between threads (one connection behind a lock; with a wipe delay, a second
    connection only checkpoints).
    """

    def __init__(self, path: str | Path, *, max_key_count: int = 100_000,
                 key_lifetime_s: float | None = None,
                 reservation_lifetime_s: float = DEFAULT_RESERVATION_LIFETIME_S,
                 wipe_delay_s: float = 0.0) -> None:
        if isinstance(max_key_count, bool) or not isinstance(max_key_count, int) \
                or max_key_count < 1:
            raise ValueError(f"max_key_count must be a positive integer, got {max_key_count!r}")
        if key_lifetime_s is not None and not key_lifetime_s > 0:
            raise ValueError(f"key_lifetime_s must be > 0 or None, got {key_lifetime_s!r}")
        if not reservation_lifetime_s > 0:
            raise ValueError(
                f"reservation_lifetime_s must be > 0, got {reservation_lifetime_s!r}")
        self.path = Path(path)
        self.max_key_count = max_key_count
        self.key_lifetime_s = key_lifetime_s
        self.reservation_lifetime_s = float(reservation_lifetime_s)
        if not 0 <= wipe_delay_s <= MAX_WIPE_DELAY_S:
            raise ValueError(f"wipe_delay_s must be in 0..{MAX_WIPE_DELAY_S}, got "
                             f"{wipe_delay_s!r}")
        self.wipe_delay_s = float(wipe_delay_s)
        self._wipe_due: float | None = None
        self._lock = threading.RLock()
        # The wiper thread (started by the first destruction, with a wipe delay) waits on this.
        self._wipe_cv = threading.Condition()
        self._wiper: threading.Thread | None = None
        self._closing = False
        self._ckpt_lock = threading.Lock()
        self._ckpt_conn: sqlite3.Connection | None = None
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._destroyed_in_tx = False
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"key store {self.path} is closed")
        return self._conn

    def _setup(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OSError(f"key store {self.path}: SQLite refused WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT version FROM schema_info").fetchone()
        if row is None:
            db.execute("INSERT INTO schema_info (version) VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise OSError(f"key store {self.path}: schema version {row[0]}, this qkdnode "
                          f"reads version {SCHEMA_VERSION}")

    # --- plumbing ---------------------------------------------------------------------------

    def _execute(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``op`` in a write transaction and returns once it is durable.

        Group commit: operations that arrive while a commit is being written wait, and the next
        of them to get the connection runs all waiting operations in one transaction (each in
        its own savepoint, so one that fails is rolled back alone and raises in its caller),
        then commits once. A caller returns only after the commit that holds its operation, and
        after the WAL was truncated if that transaction destroyed key bytes.
        """
        slot = _Pending(op)
        with self._queue_lock:
            self._queue.append(slot)
        with self._lock:
            if not slot.done:
                self._run_batch()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[no-any-return]

    def _run_batch(self) -> None:
        with self._queue_lock:
            batch, self._queue = self._queue, []
        db = self._db
        self._destroyed_in_tx = False
        try:
            db.execute("BEGIN IMMEDIATE")
            for slot in batch:
                db.execute("SAVEPOINT op")
                try:
                    slot.result = slot.op(db)
                except Exception as exc:  # the caller gets it; the others go on
                    db.execute("ROLLBACK TO op")
                    slot.error = exc
                db.execute("RELEASE op")
            db.execute("COMMIT")
            if self.wipe_delay_s == 0:
                if self._destroyed_in_tx or self._wipe_due is not None:
                    self._wipe(db)
            elif self._destroyed_in_tx and self._wipe_due is None:
                self._wipe_due = time.monotonic() + self.wipe_delay_s
                self._wake_wiper()
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for slot in batch:
                if slot.error is None:
                    slot.error = exc if isinstance(exc, Exception) else \
                        RuntimeError(f"key store {self.path}: transaction interrupted")
            raise
        finally:
            for slot in batch:
                slot.done = True

    def _wipe(self, db: sqlite3.Connection) -> None:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            # Only this store's own connections use the file: another process holds it open
            # (a backup, a shell). The bytes may still be in the WAL: try again soon.
            log.warning("key store %s: the WAL could not be truncated (the file is open "
                        "elsewhere); destroyed key bytes may stay in it until it can", self.path)
            self._wipe_due = self._wipe_due or time.monotonic()
            return
        self._wipe_due = None

    def _wake_wiper(self) -> None:
        """Starts the wiper thread if needed and tells it a truncation is due (under _lock)."""
        with self._wipe_cv:
            if self._wiper is None and not self._closing:
                self._wiper = threading.Thread(target=self._wipe_loop, daemon=True,
                                               name=f"key store wiper {self.path.name}")
                self._wiper.start()
            self._wipe_cv.notify()

    def _wipe_loop(self) -> None:
        lead = min(self.wipe_delay_s / 2, WIPE_LEAD_S)
        while True:
            with self._wipe_cv:
                while True:
                    if self._closing:
                        return
                    due = self._wipe_due
                    if due is not None and time.monotonic() >= due - lead:
                        break
                    self._wipe_cv.wait(None if due is None else due - lead - time.monotonic())
            try:
                self.flush()
            except Exception as exc:  # tried again below, and by close()
                log.error("key store %s: WAL truncation failed: %s", self.path, exc)
            if self._wipe_due is not None:  # not done: try again after a delay, not in a spin
                with self._wipe_cv:
                    self._wipe_cv.wait(self.wipe_delay_s)

    def flush(self) -> None:
        """Truncates the WAL now if destroyed key bytes may still be in it (a no-op when
        nothing waits).

        The WAL is first copied into the database on a second connection, which does not
        block writers; only the truncation, with what was committed meanwhile, holds them.
        """
        if self._wipe_due is None:
            return
        with self._ckpt_lock:
            if self._closing:   # close() checkpoints and truncates itself; no new connection
                return
            if self._ckpt_conn is None:
                self._ckpt_conn = sqlite3.connect(str(self.path), isolation_level=None,
                                                  check_same_thread=False)
                self._ckpt_conn.execute("PRAGMA synchronous=FULL")
            for _ in range(PASSIVE_PASSES):
                _, frames, copied = self._ckpt_conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames == copied:   # caught up: the truncation has nothing left to copy
                    break
        with self._lock:
            if self._wipe_due is not None and self._conn is not None:
                self._wipe(self._db)

    def _forget_material(self, db: sqlite3.Connection, key_id: str) -> None:
        db.execute("DELETE FROM material WHERE key_id = ?", (key_id,))
        self._destroyed_in_tx = True

    def close(self) -> None:
        """Checkpoints the WAL and closes the file."""
        with self._wipe_cv:
            self._closing = True
            self._wipe_cv.notify()
            wiper, self._wiper = self._wiper, None
        if wiper is not None and wiper is not threading.current_thread():
            wiper.join()
        with self._ckpt_lock:
            if self._ckpt_conn is not None:
                self._ckpt_conn.close()
                self._ckpt_conn = None
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> SqliteKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- intake -----------------------------------------------------------------------------

    def add_link_keys(self, pool: str, keys: Sequence[LinkKey], now: float, *,
                      active: bool = False, confirm_within_s: float | None = None) -> int:
        """Stores link keys shared with ``pool``, all or none; durable when this returns.

        A key whose ID the store already knows (in any state, destroyed included) is a
        retransmission and is not stored again; if it is live and its bytes differ, the whole
        push is refused with :class:`KeyConflict`.

        Args:
            pool: the peer node the keys are shared with.
            keys: the keys.
            now: UNIX seconds.
            active: store them active at once (keys a relay established end to end, which both
                ends already hold); otherwise pre-activation until :meth:`activate`.
            confirm_within_s: pre-activation keys not activated within this time are destroyed
                by :meth:`expire` (a relay's key that its destination never confirmed).

        Returns:
            How many keys were new.

        Raises:
            KeyStoreFull: the pool would hold more than ``max_key_count`` live keys.
            KeyConflict: a known ID came with other bytes, or an ID repeats within ``keys``.
        """
        ids = [str(k.key_id) for k in keys]
        if len(set(ids)) != len(ids):
            raise KeyConflict(f"pool {pool!r}: a key ID appears twice in one push")
        state = (KeyState.ACTIVE if active else KeyState.PRE_ACTIVATION).value
        expires = self._link_key_expiry(now, active, confirm_within_s)

        return self._execute(
            lambda db: self._insert_link_keys(db, pool, keys, state, expires, now))

    def _link_key_expiry(self, now: float, active: bool, confirm_within_s: float | None
                         ) -> float | None:
        expires = None if self.key_lifetime_s is None else now + self.key_lifetime_s
        if confirm_within_s is not None and not active:
            expires = now + confirm_within_s if expires is None else \
                min(expires, now + confirm_within_s)
        return expires

    def _insert_link_keys(self, db: sqlite3.Connection, pool: str, keys: Sequence[LinkKey],
                          state: str, expires: float | None, now: float) -> int:
        """add_link_keys inside a transaction (see there)."""
        new: list[LinkKey] = []
        for key in keys:
            row = db.execute(
                "SELECT l.pool, l.size_bytes, l.consumed, m.bytes FROM link_keys l "
                "LEFT JOIN material m ON m.key_id = l.key_id WHERE l.key_id = ?",
                (str(key.key_id),)).fetchone()
            if row is None:
                new.append(key)
                continue
            known_pool, size, consumed, stored = row
            same = known_pool == pool and size == len(key.material)
            if same and stored is not None and consumed == "[]":
                same = hmac.compare_digest(bytes(stored), bytes(key.material))
            if not same:
                raise KeyConflict(f"pool {pool!r}: key {key.key_id} is already stored with "
                                  "different content; push refused")
        live = db.execute("SELECT COUNT(*) FROM link_keys WHERE pool = ? AND state IN (?, ?)",
                          (pool, *_LIVE)).fetchone()[0]
        if live + len(new) > self.max_key_count:
            raise KeyStoreFull(f"pool {pool!r} holds {live} keys; {len(new)} more would "
                               f"exceed max_key_count = {self.max_key_count}")
        for key in new:
            db.execute(
                "INSERT INTO link_keys (key_id, pool, size_bytes, state, link, block, idx, "
                "qber, created_at, expires_at, changed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (str(key.key_id), pool, len(key.material), state, key.link, key.block,
                 key.index, key.qber, key.created_at or now, expires, now))
            db.execute("INSERT INTO material (key_id, bytes) VALUES (?, ?)",
                       (str(key.key_id), bytes(key.material)))
        return len(new)

    def activate(self, pool: str, key_ids: Iterable[uuid.UUID], now: float) -> int:
        """Makes pre-activation link keys of ``pool`` active (the peer confirmed it holds them).

        Keys already active are left alone (activation is idempotent).

        Returns:
            How many keys changed state.

        Raises:
            KeyNotFound: an ID is not a live link key of ``pool``; nothing changes.
        """
        ids = [str(k) for k in key_ids]
        # An activated key lives by the store's lifetime, not by a confirmation deadline.
        lifetime = None if self.key_lifetime_s is None else now + self.key_lifetime_s

        def _op(db: sqlite3.Connection) -> int:
            changed = 0
            for key_id in ids:
                row = db.execute("SELECT state FROM link_keys WHERE key_id = ? AND pool = ?",
                                 (key_id, pool)).fetchone()
                if row is None or row[0] not in _LIVE:
                    raise KeyNotFound(f"pool {pool!r}: no live link key {key_id}")
                if row[0] == KeyState.PRE_ACTIVATION.value:
                    db.execute("UPDATE link_keys SET state = ?, changed_at = ?, expires_at = ? "
                               "WHERE key_id = ?", (KeyState.ACTIVE.value, now, lifetime,
                                                    key_id))
                    changed += 1
            return changed

        return self._execute(_op)

    # --- supply -----------------------------------------------------------------------------

    def make_supply(self, pool: str, master: str, slaves: Sequence[str], count: int,
                    size_bytes: int, local_recipients: Iterable[str], now: float
                    ) -> list[SupplyPlan]:
        """Cuts ``count`` supply keys of ``size_bytes`` from ``pool``'s active keys and reserves
        them (the master's side of a request); oldest link keys first.

        Returns:
            The plans, to be sent to the peer so that it reserves the same keys
            (:meth:`reserve`).

        Raises:
            KeyPoolDepleted: the pool has fewer available bytes than asked; nothing changes.
        """
        if count < 1 or size_bytes < 1:
            raise ValueError(f"count and size_bytes must be >= 1, got {count}, {size_bytes}")

        def _op(db: sqlite3.Connection) -> list[SupplyPlan]:
            plans = self._plan(db, pool, master, slaves, count, size_bytes, now)
            self._apply_plans(db, pool, plans, local_recipients, now)
            return plans

        return self._execute(_op)

    def _plan(self, db: sqlite3.Connection, pool: str, master: str, slaves: Sequence[str],
              count: int, size_bytes: int, now: float) -> list[SupplyPlan]:
        """Chooses the bytes of ``count`` keys from ``pool``'s active keys, oldest first."""
        need = count * size_bytes
        # Oldest keys first, read only as far as the request needs.
        cursor = db.execute(
            "SELECT key_id, size_bytes, consumed FROM link_keys WHERE pool = ? AND state = ? "
            "ORDER BY seq", (pool, KeyState.ACTIVE.value))
        runs: list[tuple[uuid.UUID, int, int]] = []
        have = 0
        for key_id, size, consumed in cursor:
            for a, b in _free_runs(size, json.loads(consumed)):
                runs.append((uuid.UUID(key_id), a, b))
                have += b - a
            if have >= need:
                break
        cursor.close()
        if have < need:
            raise KeyPoolDepleted(f"pool {pool!r} has {have * 8} bits of available key; "
                                  f"the request needs {need * 8}")
        plans = []
        it = iter(runs)
        cur: tuple[uuid.UUID, int, int] | None = None
        for _ in range(count):
            sources: list[SourceSlice] = []
            left = size_bytes
            while left:
                if cur is None or cur[1] == cur[2]:
                    cur = next(it)
                take = min(left, cur[2] - cur[1])
                sources.append(SourceSlice(cur[0], cur[1], take))
                cur = (cur[0], cur[1] + take, cur[2])
                left -= take
            plans.append(SupplyPlan(time_ordered_key_id(now), master, tuple(slaves),
                                    tuple(sources)))
        return plans

    def take_supply(self, pool: str, master: str, slaves: Sequence[str], count: int,
                    size_bytes: int, now: float, *,
                    on_planned: Callable[[list[SupplyPlan]], None] | None = None
                    ) -> tuple[list[SupplyPlan], list[SupplyKey]]:
        """The master's side of a request when its slaves are on another node: cuts the keys and
        hands them to the master in one transaction (one durable commit, not two).

        The keys are destroyed here as they are returned (only a tombstone and the delivery
        record stay); the caller gives them to the master only after this returned and the
        peer confirmed the plans, and drops them otherwise, so a key never reaches a master
        whose slave cannot get it, and no byte is ever used twice.

        Args:
            on_planned: called with the plans (from the store's thread) as soon as the bytes
                are chosen, before the commit, so the caller can send them to the peer while
                the commit is written. No other request can choose those bytes meanwhile (the
                transaction holds them); if the commit then fails, this raises and the keys
                are never handed out, as when the peer fails (see :mod:`.manager`).

        Raises:
            KeyPoolDepleted: the pool has fewer available bytes than asked; nothing changes.
        """
        if count < 1 or size_bytes < 1:
            raise ValueError(f"count and size_bytes must be >= 1, got {count}, {size_bytes}")

        def _op(db: sqlite3.Connection) -> tuple[list[SupplyPlan], list[SupplyKey]]:
            plans = self._plan(db, pool, master, slaves, count, size_bytes, now)
            if on_planned is not None:
                on_planned(plans)
            texts = _Texts()
            materials = self._consume(db, pool, plans, now, texts)
            ids = [str(p.key_id) for p in plans]
            slaves_text = json.dumps(list(slaves))   # every plan of a request has the same
            db.executemany(
                "INSERT INTO supply_keys (key_id, pool, master, slaves, plan, size_bytes, "
                "state, created_at, expires_at, changed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(kid, pool, p.master, slaves_text, _plan_json(p, texts), p.size_bytes,
                  KeyState.DESTROYED.value, now, None, now)
                 for kid, p in zip(ids, plans, strict=True)])
            db.executemany("INSERT INTO recipients (key_id, sae, delivered_at) VALUES (?, ?, ?)",
                           [(kid, master, now) for kid in ids])
            return plans, [SupplyKey(p.key_id, m) for p, m in zip(plans, materials,
                                                                  strict=True)]

        return self._execute(_op)

    def reserve(self, pool: str, plans: Sequence[SupplyPlan], local_recipients: Iterable[str],
                now: float) -> None:
        """Applies supply plans made by the peer (the slave's side), all or none.

        A plan already applied (same ID, same SAEs, same sources) is a retransmission and
        changes nothing.

        Raises:
            KeyConflict: a plan reuses link-key bytes already used, or an ID is known with a
                different plan.
            KeyNotFound: a source link key is not an active key of ``pool`` here.
        """
        recipients = tuple(local_recipients)

        def _op(db: sqlite3.Connection) -> None:
            ids = [str(plan.key_id) for plan in plans]
            known: dict[str, tuple[str, str, str, str]] = {}
            for at in range(0, len(ids), ID_LOOKUP_BATCH):
                part = ids[at:at + ID_LOOKUP_BATCH]
                marks = ",".join("?" * len(part))
                for key_id, *row in db.execute(
                        "SELECT key_id, pool, master, slaves, plan FROM supply_keys WHERE "
                        f"key_id IN ({marks})", part):
                    known[key_id] = tuple(row)
            fresh = []
            for key_id, plan in zip(ids, plans, strict=True):
                row = known.get(key_id)
                if row is None:
                    fresh.append(plan)
                elif row != (pool, plan.master, json.dumps(list(plan.slaves)),
                             _plan_json(plan)):
                    raise KeyConflict(f"supply key {plan.key_id} is known with a different "
                                      "plan")
            if fresh:
                self._apply_plans(db, pool, fresh, recipients, now)

        return self._execute(_op)

    def _consume(self, db: sqlite3.Connection, pool: str, plans: Sequence[SupplyPlan],
                 now: float, texts: _Texts | None = None) -> list[bytes]:
        """Cuts the plans' link-key bytes (zeroing them in the stored copies); returns each
        plan's bytes. Each link key is read and written once, however many slices it gives."""
        texts = _Texts() if texts is None else texts
        by_key: dict[str, list[tuple[int, int, SourceSlice]]] = {}
        for p_i, plan in enumerate(plans):
            for s_i, src in enumerate(plan.sources):
                by_key.setdefault(texts[src.key_id], []).append((p_i, s_i, src))
        pieces: list[list[bytes]] = [[b""] * len(plan.sources) for plan in plans]
        keys = list(by_key)
        rows: dict[str, tuple[int, str, int]] = {}
        for at in range(0, len(keys), ID_LOOKUP_BATCH):
            part = keys[at:at + ID_LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            # Looked up by key ID only (with pool and state in the WHERE, SQLite may scan the
            # pool's index instead), then filtered here. The bytes are read and zeroed in place
            # through the row's blob (only the pages that hold the used bytes change; rewriting
            # the column would copy the whole key, and secure_delete would zero the old copy).
            for key_id, key_pool, state, size, consumed, rowid in db.execute(
                    "SELECT l.key_id, l.pool, l.state, l.size_bytes, l.consumed, m.rowid FROM "
                    "link_keys l JOIN material m ON m.key_id = l.key_id WHERE l.key_id IN "
                    f"({marks})", part):
                if key_pool == pool and state == KeyState.ACTIVE.value:
                    rows[key_id] = (size, consumed, rowid)
        used_up: list[str] = []
        for key_id, slices in by_key.items():
            first = plans[slices[0][0]].key_id
            row = rows.get(key_id)
            if row is None:
                known = db.execute("SELECT state FROM link_keys WHERE key_id = ? AND pool = ?",
                                   (key_id, pool)).fetchone()
                if known is not None and known[0] != KeyState.PRE_ACTIVATION.value:
                    raise KeyConflict(f"supply key {first}: link key {key_id} is "
                                      f"{known[0]}; its bytes were already used or withdrawn")
                raise KeyNotFound(f"supply key {first}: link key {key_id} is not an "
                                  f"active key of pool {pool!r}")
            size, consumed, rowid = row
            ranges: list[list[int]] | None = json.loads(consumed)
            for p_i, _, src in slices:
                end = src.offset + src.length
                if src.offset < 0 or src.length < 1 or end > size:
                    raise KeyConflict(f"supply key {plans[p_i].key_id}: bytes {src.offset}.."
                                      f"{end} are outside link key {key_id} ({size} bytes)")
                assert ranges is not None
                ranges = _ranges_add(ranges, src.offset, end)
                if ranges is None:
                    raise KeyConflict(f"supply key {plans[p_i].key_id}: bytes {src.offset}.."
                                      f"{end} of link key {key_id} were already used")
            # One read of the span the slices cover; zeros written over the slices only (merged
            # where they touch): a gap between them may be bytes this end still counts as free.
            lo = min(src.offset for _, _, src in slices)
            hi = max(src.offset + src.length for _, _, src in slices)
            done = ranges == [[0, size]]
            with db.blobopen("material", "bytes", rowid, readonly=done) as blob:
                blob.seek(lo)
                span = blob.read(hi - lo)
                if not done:
                    for start, stop in _merged_runs(
                            (src.offset, src.offset + src.length) for _, _, src in slices):
                        blob.seek(start)
                        blob.write(bytes(stop - start))  # used bytes are zeroed at once
            for p_i, s_i, src in slices:
                pieces[p_i][s_i] = span[src.offset - lo:src.offset - lo + src.length]
            self._destroyed_in_tx = True
            if done:
                used_up.append(key_id)   # the row is deleted below (secure_delete zeroes it)
            else:
                db.execute("UPDATE link_keys SET consumed = ?, used_bytes = ?, changed_at = ? "
                           "WHERE key_id = ?", (json.dumps(ranges), _used(ranges), now, key_id))
        for at in range(0, len(used_up), ID_LOOKUP_BATCH):
            part = used_up[at:at + ID_LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            db.execute(f"DELETE FROM material WHERE key_id IN ({marks})", part)
            db.execute("UPDATE link_keys SET consumed = '[[0,' || size_bytes || ']]', "
                       f"used_bytes = size_bytes, state = ?, changed_at = ? WHERE key_id IN "
                       f"({marks})", (KeyState.DESTROYED.value, now, *part))
        return [b"".join(p) for p in pieces]

    def _apply_plans(self, db: sqlite3.Connection, pool: str, plans: Sequence[SupplyPlan],
                     local_recipients: Iterable[str], now: float) -> None:
        recipients = sorted(set(local_recipients))
        if not recipients:
            raise ValueError("a supply key needs a local recipient")
        texts = _Texts()
        materials = self._consume(db, pool, plans, now, texts)
        expires = now + self.reservation_lifetime_s
        ids = [str(plan.key_id) for plan in plans]
        slaves_text: dict[tuple[str, ...], str] = {}
        for plan in plans:
            if plan.slaves not in slaves_text:
                slaves_text[plan.slaves] = json.dumps(list(plan.slaves))
        db.executemany(
            "INSERT INTO supply_keys (key_id, pool, master, slaves, plan, size_bytes, state, "
            "created_at, expires_at, changed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(kid, pool, plan.master, slaves_text[plan.slaves], _plan_json(plan, texts),
              plan.size_bytes, KeyState.ACTIVE.value, now, expires, now)
             for kid, plan in zip(ids, plans, strict=True)])
        db.executemany("INSERT INTO material (key_id, bytes) VALUES (?, ?)",
                       list(zip(ids, materials, strict=True)))
        db.executemany("INSERT INTO recipients (key_id, sae) VALUES (?, ?)",
                       [(kid, sae) for kid in ids for sae in recipients])

    def take_pad(self, pool: str, size_bytes: int, now: float) -> tuple[SupplyPlan, bytes]:
        """Consumes ``size_bytes`` of ``pool``'s key for a one-time pad (a relay hop), at once.

        Returns:
            The plan (for the peer, :meth:`take_pad_as`) and the pad bytes.

        Raises:
            KeyPoolDepleted: not enough key; nothing changes.
        """
        if size_bytes < 1:
            raise ValueError(f"size_bytes must be >= 1, got {size_bytes}")

        def _op(db: sqlite3.Connection) -> tuple[SupplyPlan, bytes]:
            (plan,) = self._plan(db, pool, RELAY_PAD, [RELAY_PAD], 1, size_bytes, now)
            return plan, self._consume(db, pool, [plan], now)[0]

        return self._execute(_op)

    def take_pad_as(self, pool: str, plan: SupplyPlan, now: float) -> bytes:
        """Consumes the bytes the peer's :meth:`take_pad` chose, at once.

        Raises:
            KeyConflict: the bytes were used already; KeyNotFound: a key is unknown here.
        """
        def _op(db: sqlite3.Connection) -> bytes:
            return self._consume(db, pool, [plan], now)[0]

        return self._execute(_op)

    # --- relay: one durable commit per node and relay ---------------------------------------

    def relay_begin(self, pool: str, key: LinkKey, to: str, now: float, *,
                    confirm_within_s: float) -> tuple[SupplyPlan, bytes]:
        """The origin of a relay: stores the relayed key as a pre-activation key of ``pool``
        (its destination) and takes the first hop's pad from ``to``'s key, in one transaction.

        Args:
            pool: the destination node.
            key: the relayed key.
            to: the first hop.
            now: UNIX seconds.
            confirm_within_s: the key is destroyed by :meth:`expire` unless activated within
                this time (the destination never confirmed it).

        Returns:
            The pad's plan (for the next hop's :meth:`relay_forward` or :meth:`relay_end`) and
            its bytes.

        Raises:
            KeyPoolDepleted, KeyStoreFull, KeyConflict: nothing changes.
        """
        size = len(key.material)
        expires = self._link_key_expiry(now, False, confirm_within_s)

        def _op(db: sqlite3.Connection) -> tuple[SupplyPlan, bytes]:
            self._insert_link_keys(db, pool, [key], KeyState.PRE_ACTIVATION.value, expires,
                                   now)
            (plan,) = self._plan(db, to, RELAY_PAD, [RELAY_PAD], 1, size, now)
            return plan, self._consume(db, to, [plan], now)[0]

        return self._execute(_op)

    def relay_forward(self, pool: str, plan: SupplyPlan, to: str, now: float
                      ) -> tuple[bytes, tuple[SupplyPlan, bytes] | KeyPoolDepleted]:
        """An intermediate node of a relay: consumes the incoming hop's pad (the bytes of
        ``pool``'s key that ``plan`` names) and takes the next hop's pad of the same size from
        ``to``'s key, in one transaction.

        Returns:
            The incoming pad, and the next hop's plan and pad, or the
            :class:`KeyPoolDepleted` that kept them from being taken. The incoming bytes are
            consumed in either case, as the previous hop consumed them: the two ends of a link
            agree on which bytes are used.

        Raises:
            KeyConflict: the incoming bytes were used already; KeyNotFound: a key ``plan`` names
                is unknown here. Nothing changes.
        """
        def _op(db: sqlite3.Connection
                ) -> tuple[bytes, tuple[SupplyPlan, bytes] | KeyPoolDepleted]:
            pad_in = self._consume(db, pool, [plan], now)[0]
            db.execute("SAVEPOINT next_hop")
            try:
                (out,) = self._plan(db, to, RELAY_PAD, [RELAY_PAD], 1, plan.size_bytes, now)
                pad_out = self._consume(db, to, [out], now)[0]
            except KeyPoolDepleted as exc:
                db.execute("ROLLBACK TO next_hop")
                db.execute("RELEASE next_hop")
                return pad_in, exc
            db.execute("RELEASE next_hop")
            return pad_in, (out, pad_out)

        return self._execute(_op)

    def relay_end(self, pool: str, plan: SupplyPlan, origin: str,
                  make_key: Callable[[bytes], LinkKey], now: float) -> KeyManagerError | None:
        """The destination of a relay: consumes the incoming hop's pad and stores the key
        ``make_key(pad)`` returns as an active key of ``origin``'s pool, in one transaction.

        Returns:
            None, or the :class:`KeyStoreFull` or :class:`KeyConflict` that kept the key from
            being stored; the incoming bytes are consumed in either case (see
            :meth:`relay_forward`).

        Raises:
            KeyConflict: the incoming bytes were used already; KeyNotFound: a key ``plan`` names
                is unknown here. Nothing changes.
        """
        expires = self._link_key_expiry(now, True, None)

        def _op(db: sqlite3.Connection) -> KeyManagerError | None:
            pad = self._consume(db, pool, [plan], now)[0]
            db.execute("SAVEPOINT keep")
            key = make_key(pad)
            try:
                self._insert_link_keys(db, origin, [key], KeyState.ACTIVE.value, expires, now)
            except (KeyStoreFull, KeyConflict) as exc:
                db.execute("ROLLBACK TO keep")
                db.execute("RELEASE keep")
                return exc
            db.execute("RELEASE keep")
            # The completion notification owed to the origin, until it answers (it survives a
            # restart: pending_completions).
            db.execute("INSERT OR IGNORE INTO relay_completions (relay_id, origin, since) "
                       "VALUES (?, ?, ?)", (str(key.key_id), origin, now))
            return None

        return self._execute(_op)

    def deliver(self, key_ids: Sequence[uuid.UUID], sae: str, now: float, *,
                master: str | None = None) -> list[SupplyKey]:
        """Hands supply keys to one of their recipients, once; all or none.

        A key is destroyed as soon as its last local recipient has it.

        Args:
            key_ids: the keys.
            sae: the recipient asking.
            now: UNIX seconds.
            master: if given, the master SAE the caller says obtained the keys (ETSI 014's
                dec_keys names it); a known key made for another master refuses the request.

        Raises:
            KeyNotFound: an ID is unknown, destroyed, expired, or already delivered to ``sae``.
            NotAuthorized: a known key was made for another ``master`` (checked first), or
                ``sae`` is not a recipient of a key.
        """
        ids = [str(k) for k in key_ids]
        if len(set(ids)) != len(ids):
            raise KeyNotFound("a key ID is asked for twice in one request")

        def _op(db: sqlite3.Connection) -> list[SupplyKey]:
            # A handful of statements per request, not per key (requests are at most a few
            # hundred keys: far below SQLite's limit on host parameters).
            marks = ",".join("?" * len(ids))
            rows = {k: (st, exp, m) for k, st, exp, m in db.execute(
                "SELECT key_id, state, expires_at, master FROM supply_keys WHERE key_id IN "
                f"({marks})", ids)}
            if master is not None:
                for key_id in ids:
                    if key_id in rows and rows[key_id][2] != master:
                        raise NotAuthorized(f"key {key_id} was not requested by {master!r}")
            recipients = dict(db.execute(
                f"SELECT key_id, delivered_at FROM recipients WHERE sae = ? AND key_id IN "
                f"({marks})", (sae, *ids)).fetchall())
            for key_id in ids:
                if key_id not in rows:
                    raise KeyNotFound(f"key {key_id} is not known here")
                if key_id not in recipients:
                    raise NotAuthorized(f"{sae!r} is not a recipient of key {key_id}")
                state, expires_at, _ = rows[key_id]
                if recipients[key_id] is not None:
                    raise KeyNotFound(f"key {key_id} was already delivered to {sae!r}")
                if state != KeyState.ACTIVE.value:
                    raise KeyNotFound(f"key {key_id} is {state}")
                if expires_at is not None and expires_at <= now:
                    raise KeyNotFound(f"key {key_id} expired")
            materials = dict(db.execute(
                f"SELECT key_id, bytes FROM material WHERE key_id IN ({marks})", ids).fetchall())
            out = [SupplyKey(uuid.UUID(k), bytes(materials[k])) for k in ids]
            db.execute(f"UPDATE recipients SET delivered_at = ? WHERE sae = ? AND key_id IN "
                       f"({marks})", (now, sae, *ids))
            waiting = {k for (k,) in db.execute(
                f"SELECT DISTINCT key_id FROM recipients WHERE delivered_at IS NULL AND key_id "
                f"IN ({marks})", ids)}
            done = [k for k in ids if k not in waiting]
            if done:
                done_marks = ",".join("?" * len(done))
                db.execute(f"DELETE FROM material WHERE key_id IN ({done_marks})", done)
                self._destroyed_in_tx = True
                db.execute(f"UPDATE supply_keys SET state = ?, changed_at = ? WHERE key_id IN "
                           f"({done_marks})", (KeyState.DESTROYED.value, now, *done))
            return out

        return self._execute(_op)

    def supply_state(self, key_id: uuid.UUID) -> tuple[KeyState, SupplyState | None]:
        """The state of a supply key and, while active, its supply sub-state.

        Raises:
            KeyNotFound: the ID is not a supply key of this store.
        """
        with self._lock:
            row = self._db.execute("SELECT state FROM supply_keys WHERE key_id = ?",
                                   (str(key_id),)).fetchone()
            if row is None:
                raise KeyNotFound(f"key {key_id} is not known here")
            state = KeyState(row[0])
            total, done = self._db.execute(
                "SELECT COUNT(*), COUNT(delivered_at) FROM recipients WHERE key_id = ?",
                (str(key_id),)).fetchone()
        if state is KeyState.DESTROYED and total and done == total:
            return state, SupplyState.DELIVERED
        if state is not KeyState.ACTIVE:
            return state, None
        return state, SupplyState.RESERVED if done == 0 else SupplyState.DELIVERING

    def supply_recipients(self, key_id: uuid.UUID) -> tuple[str, tuple[str, ...]]:
        """The master and slave SAE IDs a supply key was made for.

        Raises:
            KeyNotFound: the ID is not a supply key of this store.
        """
        with self._lock:
            row = self._db.execute("SELECT master, slaves FROM supply_keys WHERE key_id = ?",
                                   (str(key_id),)).fetchone()
        if row is None:
            raise KeyNotFound(f"key {key_id} is not known here")
        return row[0], tuple(json.loads(row[1]))

    # --- end of life ------------------------------------------------------------------------

    def destroy(self, key_ids: Iterable[uuid.UUID], now: float, *,
                compromised: bool = False) -> int:
        """Destroys link or supply keys (their bytes are gone when this returns).

        Args:
            key_ids: the keys; unknown or already destroyed IDs are skipped.
            now: UNIX seconds.
            compromised: record them as compromised instead of destroyed (the bytes are
                destroyed either way).

        Returns:
            How many keys were destroyed by this call.
        """
        state = (KeyState.COMPROMISED if compromised else KeyState.DESTROYED).value

        def _op(db: sqlite3.Connection) -> int:
            done = 0
            for key_id in map(str, key_ids):
                for table in ("link_keys", "supply_keys"):
                    cur = db.execute(
                        f"UPDATE {table} SET state = ?, changed_at = ? WHERE key_id = ? "
                        "AND state NOT IN (?, ?)",
                        (state, now, key_id, KeyState.DESTROYED.value,
                         KeyState.COMPROMISED.value))
                    if cur.rowcount:
                        self._forget_material(db, key_id)
                        done += 1
            return done

        return self._execute(_op)

    def expire(self, now: float) -> int:
        """Destroys link keys past their lifetime and supply keys past their reservation.

        Returns:
            How many keys were destroyed.
        """
        def _op(db: sqlite3.Connection) -> int:
            expired = [r[0] for r in db.execute(
                "SELECT key_id FROM link_keys WHERE state IN (?, ?) AND expires_at IS NOT NULL "
                "AND expires_at <= ?", (*_LIVE, now))]
            expired += [r[0] for r in db.execute(
                "SELECT key_id FROM supply_keys WHERE state = ? AND expires_at <= ?",
                (KeyState.ACTIVE.value, now))]
            for key_id in expired:
                for table in ("link_keys", "supply_keys"):
                    db.execute(f"UPDATE {table} SET state = ?, changed_at = ? "
                               "WHERE key_id = ?", (KeyState.DESTROYED.value, now, key_id))
                self._forget_material(db, key_id)
            return len(expired)

        return self._execute(_op)

    # --- QKD modules held stopped -----------------------------------------------------------

    def hold_module(self, module: str, held: bool, now: float) -> None:
        """Records, durably, that the key manager holds QKD module ``module`` stopped (Kq-2) or
        no longer does, so that a restarted key manager keeps it stopped."""
        def _op(db: sqlite3.Connection) -> None:
            if held:
                db.execute("INSERT OR IGNORE INTO module_holds (module, since) VALUES (?, ?)",
                           (module, now))
            else:
                db.execute("DELETE FROM module_holds WHERE module = ?", (module,))

        self._execute(_op)

    def held_modules(self) -> list[str]:
        """The QKD modules held stopped, by name."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT module FROM module_holds ORDER BY module")]

    # --- relay completions owed ------------------------------------------------------------

    def pending_completions(self) -> list[tuple[uuid.UUID, str]]:
        """(relay ID, origin) of the relays that ended here whose origin has not answered
        their completion notification yet."""
        with self._lock:
            return [(uuid.UUID(r[0]), r[1]) for r in self._db.execute(
                "SELECT relay_id, origin FROM relay_completions ORDER BY since")]

    def relays_abandoned(self, pool: str, relay_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Of the relayed keys ``relay_ids`` of ``pool`` (this node their origin), those it gave
        up: unknown here, or destroyed without a byte used (unconfirmed in time, or destroyed
        by hand); a key destroyed after use is not among them (its peer keeps its copy)."""
        out = []
        with self._lock:
            for at in range(0, len(relay_ids), ID_LOOKUP_BATCH):
                ids = [str(k) for k in relay_ids[at:at + ID_LOOKUP_BATCH]]
                rows = {r[0]: (r[1], r[2]) for r in self._db.execute(
                    f"SELECT key_id, state, used_bytes FROM link_keys WHERE pool = ? AND "
                    f"key_id IN ({','.join('?' * len(ids))})", (pool, *ids))}
                for k in ids:
                    row = rows.get(k)
                    if row is None or (row[0] == KeyState.DESTROYED.value and row[1] == 0):
                        out.append(uuid.UUID(k))
        return out

    def completions_settled(self, relay_ids: Iterable[uuid.UUID]) -> None:
        """The origin answered the completion notifications of ``relay_ids``."""
        ids = [str(k) for k in relay_ids]

        def _op(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM relay_completions WHERE relay_id = ?",
                           [(k,) for k in ids])

        if ids:
            self._execute(_op)

    # --- reading ----------------------------------------------------------------------------

    def levels(self) -> dict[str, PoolLevel]:
        """The key levels of every pool the store has seen (aggregates: cheap however many
        keys the store holds)."""
        with self._lock:
            db = self._db
            pools = {r[0] for r in db.execute("SELECT DISTINCT pool FROM link_keys")}
            pools |= {r[0] for r in db.execute("SELECT DISTINCT pool FROM supply_keys")}
            live: dict[tuple[str, str], tuple[int, int]] = {
                (pool, state): (count, avail) for pool, state, count, avail in db.execute(
                    "SELECT pool, state, COUNT(*), TOTAL(size_bytes - used_bytes) FROM link_keys "
                    "WHERE state IN (?, ?) GROUP BY pool, state", _LIVE)}
            reserved = dict(db.execute(
                "SELECT pool, COUNT(*) FROM supply_keys WHERE state = ? GROUP BY pool",
                (KeyState.ACTIVE.value,)).fetchall())
        out = {}
        for pool in sorted(pools):
            pre = live.get((pool, KeyState.PRE_ACTIVATION.value), (0, 0))[0]
            active, avail = live.get((pool, KeyState.ACTIVE.value), (0, 0))
            out[pool] = PoolLevel(pool, pre, active, int(avail), reserved.get(pool, 0))
        return out

    def link_key_ids(self, pool: str, state: KeyState) -> list[uuid.UUID]:
        """The IDs of ``pool``'s link keys in ``state``, oldest first (for pool synchronisation)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id FROM link_keys WHERE pool = ? AND state = ? ORDER BY seq",
                (pool, state.value)).fetchall()
        return [uuid.UUID(r[0]) for r in rows]

    def link_key_states(self, pool: str, key_ids: Sequence[uuid.UUID]
                        ) -> dict[uuid.UUID, KeyState]:
        """The states of those of ``key_ids`` that ``pool`` knows (looked up by ID, so cheap
        however large the pool)."""
        out: dict[uuid.UUID, KeyState] = {}
        with self._lock:
            for at in range(0, len(key_ids), ID_LOOKUP_BATCH):
                part = [str(k) for k in key_ids[at:at + ID_LOOKUP_BATCH]]
                marks = ",".join("?" * len(part))
                for key_id, key_pool, state in self._db.execute(
                        f"SELECT key_id, pool, state FROM link_keys WHERE key_id IN ({marks})",
                        part):
                    if key_pool == pool:
                        out[uuid.UUID(key_id)] = KeyState(state)
        return out

    def link_key_state(self, key_id: uuid.UUID) -> KeyState:
        """The state of one link key.

        Raises:
            KeyNotFound: the store never had it.
        """
        with self._lock:
            row = self._db.execute("SELECT state FROM link_keys WHERE key_id = ?",
                                   (str(key_id),)).fetchone()
        if row is None:
            raise KeyNotFound(f"link key {key_id} is not known here")
        return KeyState(row[0])
