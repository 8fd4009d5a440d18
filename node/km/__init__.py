"""The embedded key manager (KM): key store, Kq-1 intake, Kx to peers, ETSI GS QKD 014 supply."""

from __future__ import annotations

from .manager import KeyManager, PeerLink, SupplyLimits, SupplyStatus
from .records import KeyState, LinkKey, PoolLevel, SourceSlice, SupplyKey, SupplyPlan, SupplyState
from .store import KeyStore, SqliteKeyStore

__all__ = [
    "KeyManager",
    "KeyState",
    "KeyStore",
    "LinkKey",
    "PeerLink",
    "PoolLevel",
    "SourceSlice",
    "SqliteKeyStore",
    "SupplyKey",
    "SupplyLimits",
    "SupplyPlan",
    "SupplyState",
    "SupplyStatus",
]
