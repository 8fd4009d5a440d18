"""The embedded key manager (KM): key store, Kq-1 intake, Kx to peers, ETSI GS QKD 014 supply."""

from __future__ import annotations

from .records import KeyState, LinkKey, PoolLevel, SourceSlice, SupplyKey, SupplyPlan, SupplyState
from .store import KeyStore, SqliteKeyStore

__all__ = [
    "KeyState",
    "KeyStore",
    "LinkKey",
    "PoolLevel",
    "SourceSlice",
    "SqliteKeyStore",
    "SupplyKey",
    "SupplyPlan",
    "SupplyState",
]
