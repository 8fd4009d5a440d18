"""Exceptions of the node layer, and one place to import every qkdnode exception from.

``ProtocolError`` splits like h11's: :class:`LocalProtocolError` when we broke the protocol,
:class:`RemoteProtocolError` when the peer did. :class:`ConfigError` names the file, the key and,
where known, the line. No message ever holds key material.
"""

from __future__ import annotations

from qkdnode.drivers.errors import (
    DeviceError,
    InstrumentError,
    TransportError,
    TransportTimeout,
    VendorLibraryError,
)
from qkdnode.dsp.errors import DistillationError, ReconciliationFailed, VerificationFailed

__all__ = [
    "ConfigError",
    "DeviceError",
    "DistillationError",
    "InstrumentError",
    "KeyConflict",
    "KeyManagerError",
    "KeyNotFound",
    "KeyPoolDepleted",
    "KeyStoreFull",
    "LocalProtocolError",
    "NotAuthorized",
    "PeerUnavailable",
    "ProtocolError",
    "ReconciliationFailed",
    "RemoteProtocolError",
    "TransportError",
    "TransportTimeout",
    "UnknownSae",
    "VendorLibraryError",
    "VerificationFailed",
]


class ProtocolError(Exception):
    """A protocol (Qdist, Kq-1, Kx) was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids in its current state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (malformed, out of order, unauthenticated)."""


class KeyManagerError(Exception):
    """The key manager could not carry out a request.

    ``code`` names the kind of failure for callers that map it (the ETSI 014 server maps it onto
    an HTTP status); the message says what happened in words and never holds key material.
    """

    code = "key_manager"


class KeyNotFound(KeyManagerError):
    """A key ID is unknown, already delivered to this caller, expired or destroyed."""

    code = "key_not_found"


class KeyPoolDepleted(KeyManagerError):
    """Not enough available key in a pool for a request (a temporary condition)."""

    code = "pool_depleted"


class KeyStoreFull(KeyManagerError):
    """Accepting keys would exceed the store's capacity; the producer keeps them and retries."""

    code = "store_full"


class KeyConflict(KeyManagerError):
    """A key ID arrived again with different content or a different plan: refused, never merged."""

    code = "key_conflict"


class UnknownSae(KeyManagerError):
    """An SAE ID that no configured node serves."""

    code = "unknown_sae"


class PeerUnavailable(KeyManagerError):
    """A peer key manager did not confirm an exchange in time (a temporary fault)."""

    code = "peer_unavailable"


class NotAuthorized(KeyManagerError):
    """The caller is not one of the key's recipients."""

    code = "not_authorized"


class ConfigError(Exception):
    """A node configuration file is invalid.

    Attributes:
        file: the configuration file (as given), or ``None`` for a configuration not from a file.
        key: the dotted key path that is wrong (``links[0].distillation.qber_abort``), or ``None``
            when the file as a whole is wrong (a syntax error).
        line: the 1-based line in the file, when it could be found.
        reason: what is wrong, in words.
    """

    def __init__(
        self, file: str | None, key: str | None, line: int | None, reason: str
    ) -> None:
        super().__init__(file, key, line, reason)
        self.file = file
        self.key = key
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.reason}"
        return f"{where}: {self.reason}"
