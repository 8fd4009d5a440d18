"""A QKD module's key output: final block keys cut into QKD-keys and pushed over Kq-1.

Both modules of a link cut the same final key the same way and name each piece the same way:
the ID of piece ``i`` of block ``b`` on link ``L`` in Qdist session ``S`` is
``uuid5(QKD_KEY_NAMESPACE, "L/S/b/i")`` (``"L/b/i"`` without a session), so the two key managers
receive the same IDs and can match their pools without exchanging anything about the keys. The
module names the session after its pre-shared secret (:func:`session_name`): block numbers start
at 0 again when both ends restart with a fresh secret, and the IDs still never repeat (a key
manager takes a known ID as a retransmission, so a repeated one would be dropped or refused).
Pieces are ``chunk_bytes`` long; the block's last bits that do not fill a whole piece are
dropped (never padded), and the count dropped is reported.

:class:`KeyOutbox` keeps every piece until the key manager has acknowledged its durable commit
(:class:`~qkdnode.node.io.kq1.Kq1Client` reconnects and pushes again), so a key-manager restart
loses nothing; it holds at most ``max_pending`` pieces, and :meth:`KeyOutbox.put` waits when
that many are unacknowledged (back-pressure on distillation, never unbounded memory).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..km.records import LinkKey

__all__ = ["QKD_KEY_NAMESPACE", "KeyOutbox", "cut_block", "qkd_key_id", "session_name"]

log = logging.getLogger(__name__)

# The namespace of QKD-key IDs (a fixed random UUID: IDs are names, not secrets).
QKD_KEY_NAMESPACE = uuid.UUID("6f1c2a7e-93b4-4c55-9d0e-5a8b3e1f2c47")
# 256-bit pieces: the ETSI 014 default key size, so most requests take whole pieces.
DEFAULT_CHUNK_BYTES = 32
# Unacknowledged pieces a module holds before it stops taking keys: 2^16 x 32 bytes = 2 MiB.
DEFAULT_MAX_PENDING = 1 << 16
# One Kq-1 push carries at most this many pieces (the protocol allows 4096).
PUSH_BATCH = 1024


def session_name(secret: bytes) -> str:
    """The name of the Qdist session that starts from ``secret`` (the link's pre-shared secret):
    16 hex digits of a domain-separated SHA-256, the same at both ends; it reveals nothing
    usable about the secret."""
    return hashlib.sha256(b"qkdnode qdist session\0" + bytes(secret)).hexdigest()[:16]


def qkd_key_id(link: str, block: int, index: int, session: str = "") -> uuid.UUID:
    """The ID both ends give piece ``index`` of block ``block`` on ``link`` in ``session``."""
    name = f"{link}/{session}/{block}/{index}" if session else f"{link}/{block}/{index}"
    return uuid.uuid5(QKD_KEY_NAMESPACE, name)


def cut_block(link: str, block: int, key_bits: NDArray[np.uint8], chunk_bytes: int,
              qber: float | None = None, created_at: float | None = None, *,
              session: str = "") -> tuple[list[LinkKey], int]:
    """Cuts a block's final key (one bit per element) into QKD-keys.

    Returns:
        The pieces and the number of trailing bits dropped.

    Raises:
        ValueError: bits that are not 0/1, or a chunk size below 1.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    bits = np.asarray(key_bits)
    if bits.ndim != 1 or (bits.size and bits.max(initial=0) > 1):
        raise ValueError("key_bits must be a 1-D array of 0/1 values")
    chunk_bits = 8 * chunk_bytes
    whole = bits.size // chunk_bits
    packed = np.packbits(bits[:whole * chunk_bits].astype(np.uint8)).tobytes()
    when = time.time() if created_at is None else created_at
    keys = [LinkKey(qkd_key_id(link, block, i, session),
                    packed[i * chunk_bytes:(i + 1) * chunk_bytes], link=link, block=block,
                    index=i, qber=qber, created_at=when)
            for i in range(whole)]
    return keys, bits.size - whole * chunk_bits


class _Pusher(Protocol):
    async def push(self, keys: Sequence[LinkKey], timeout_s: float = ...) -> int: ...


@dataclass
class OutboxStats:
    """What the outbox did (for the module's status)."""

    blocks: int = 0
    pieces_acknowledged: int = 0
    pieces_new_at_km: int = 0
    bits_dropped: int = 0


class KeyOutbox:
    """Pieces waiting for the key manager's acknowledgement.

    Args:
        client: the Kq-1 client (anything with ``push(keys)``).
        link: the link name (part of every key ID).
        session: the Qdist session's name (part of every key ID; :func:`session_name`).
        chunk_bytes: bytes per QKD-key.
        max_pending: unacknowledged pieces held before :meth:`put` waits.
    """

    def __init__(self, client: _Pusher, link: str, *, session: str = "",
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.client = client
        self.link = link
        self.session = session
        self.chunk_bytes = chunk_bytes
        self.max_pending = max_pending
        self.stats = OutboxStats()
        self._queue: deque[LinkKey] = deque()
        self._changed = asyncio.Condition()

    @property
    def pending(self) -> int:
        """Pieces not yet acknowledged."""
        return len(self._queue)

    async def put(self, block: int, key_bits: NDArray[np.uint8], qber: float | None = None,
                  created_at: float | None = None) -> int:
        """Queues a block's final key; waits while the outbox is full. Returns the pieces."""
        keys, dropped = cut_block(self.link, block, key_bits, self.chunk_bytes, qber, created_at,
                                  session=self.session)
        async with self._changed:
            await self._changed.wait_for(
                lambda: len(self._queue) + len(keys) <= self.max_pending or not self._queue)
            self._queue.extend(keys)
            self.stats.blocks += 1
            self.stats.bits_dropped += dropped
            self._changed.notify_all()
        return len(keys)

    async def run(self) -> None:
        """Pushes pieces in order, forever; each is removed only once acknowledged."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._queue))
                batch = [self._queue[i] for i in range(min(PUSH_BATCH, len(self._queue)))]
            try:
                new = await self.client.push(batch)
            except (ConnectionError, TimeoutError, OSError) as exc:
                log.warning("Kq-1: %d pieces not yet acknowledged (%s); retrying", len(batch),
                            exc)
                await asyncio.sleep(1.0)
                continue
            async with self._changed:
                for _ in batch:
                    self._queue.popleft()
                self.stats.pieces_acknowledged += len(batch)
                self.stats.pieces_new_at_km += new
                self._changed.notify_all()

    async def drain(self) -> None:
        """Waits until every piece queued so far is acknowledged."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._queue)
