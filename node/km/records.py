"""What the key store holds and hands out: key records, supply plans, pool levels.

Two kinds of key live in the store:

* **link keys** (chunks): what a QKD module delivered over Kq-1, or what a relay established end
  to end, shared with one peer node (the key's *pool* is that node's name). Their IDs are derived
  by the producer from link, block and index, so both nodes name the same key the same way.
* **supply keys**: what an application (SAE) receives through ETSI GS QKD 014. A supply key is cut
  from one or more link keys of one pool by a :class:`SupplyPlan` (which bytes of which link keys,
  in order). The master's key manager makes the plan; the slave's applies the same plan to its
  copies of the same link keys, so both compute the same key without sending it.

States follow NIST SP 800-57 Part 1 (section 7): pre-activation (received, not yet confirmed by
the peer to exist at both ends), active, deactivated (past its lifetime, kept only until it is
destroyed), compromised, destroyed. An active supply key has a supply sub-state: reserved for its
SAEs, then delivered to each of its local recipients, after which it is destroyed.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

__all__ = [
    "KeyState",
    "LinkKey",
    "PoolLevel",
    "SourceSlice",
    "SupplyKey",
    "SupplyPlan",
    "SupplyState",
]


class KeyState(enum.Enum):
    """The life-cycle state of a key (NIST SP 800-57 Part 1, section 7)."""

    PRE_ACTIVATION = "pre-activation"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"


class SupplyState(enum.Enum):
    """Where an active supply key is in its delivery to applications."""

    RESERVED = "reserved"          # made for its SAEs, delivered to none yet
    DELIVERING = "delivering"      # delivered to some of its local recipients
    DELIVERED = "delivered"        # delivered to every local recipient (then destroyed)


@dataclass(frozen=True, slots=True)
class LinkKey:
    """A key a producer pushes into the store (over Kq-1, or from a relay).

    Attributes:
        key_id: its ID; the producer derives it so both nodes use the same one.
        material: the key bytes. Never logged; ``repr`` leaves it out.
        link: the QKD link (or relay route) it came from.
        block: the distillation block number.
        index: its position within the block.
        qber: the block's quantum bit error rate, for the record.
        created_at: generation time, UNIX seconds.
    """

    key_id: uuid.UUID
    material: bytes = field(repr=False)
    link: str = ""
    block: int = 0
    index: int = 0
    qber: float | None = None
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, uuid.UUID):
            raise TypeError(f"key_id must be a uuid.UUID, got {type(self.key_id).__name__}")
        if not isinstance(self.material, bytes | bytearray) or len(self.material) == 0:
            raise ValueError(f"key {self.key_id}: material must be non-empty bytes")


@dataclass(frozen=True, slots=True)
class SourceSlice:
    """``length`` bytes of link key ``key_id`` starting at byte ``offset``."""

    key_id: uuid.UUID
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class SupplyPlan:
    """How one supply key is made: its ID, its SAEs, and the link-key bytes it consists of.

    Attributes:
        key_id: the ID the applications will see.
        master: the master SAE's ID.
        slaves: the slave SAE IDs (the first is the one named in the request's URL).
        sources: the link-key slices, concatenated in order.
    """

    key_id: uuid.UUID
    master: str
    slaves: tuple[str, ...]
    sources: tuple[SourceSlice, ...]

    @property
    def size_bytes(self) -> int:
        """The key's length in bytes."""
        return sum(s.length for s in self.sources)


@dataclass(frozen=True, slots=True)
class SupplyKey:
    """A supply key as handed to an application: ID and bytes (``repr`` leaves the bytes out)."""

    key_id: uuid.UUID
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PoolLevel:
    """How much key one pool holds, by state.

    Attributes:
        pool: the peer node the keys are shared with.
        pre_activation_keys: link keys received, not yet confirmed at the peer.
        available_keys: active link keys with bytes left to supply.
        available_bytes: the bytes those keys have left.
        reserved_keys: supply keys made but not yet delivered to every local recipient.
    """

    pool: str
    pre_activation_keys: int = 0
    available_keys: int = 0
    available_bytes: int = 0
    reserved_keys: int = 0
