"""The Qdist session state of one link end on disk: ``<auth_secret_file>.<role>.state``.

The file holds key material (the session's hash keys and authentication pads), so it is
created with mode 0600 and never logged. Each save is atomic: the state goes to a temporary
file in the same directory, which is flushed to disk (fsync) and then renamed over the old
one (``os.replace``), and the directory is synced, so a crash at any point leaves either the
previous state or the new one, never a mix. What is saved and when: see
:meth:`qkdnode.node.protocol.qdist.QdistEnd.persist_to`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import ConfigError
from ..protocol.qdist import QdistEnd
from ..protocol.qdist.state import ForeignState

__all__ = ["StateFile", "state_path"]


def state_path(secret_file: Path, role: str) -> Path:
    """Where the session state of ``role`` (``"transmitter"`` or ``"receiver"``) is kept."""
    return secret_file.with_name(f"{secret_file.name}.{role}.state")


class StateFile:
    """One end's saved session: :meth:`save` is the end's ``store``.

    Args:
        path: the state file.
        key: the configuration key that names the secret (for errors).
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.saves = 0

    def exists(self) -> bool:
        """Whether a session was saved here."""
        return self.path.exists()

    def restore(self, end: QdistEnd) -> None:
        """Takes up the saved session in ``end`` (a new end).

        Raises:
            ConfigError: the file cannot be read, or is truncated, corrupt or not this end's
                (the message names the file and what to do).
        """
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(None, self.key, None,
                              f"cannot read the Qdist session state {self.path}: "
                              f"{exc.strerror}") from None
        try:
            end.restore(data)
        except ForeignState:
            used = self.path.with_suffix(".used")
            raise ConfigError(None, self.key, None,
                              f"the Qdist session state {self.path} belongs to another "
                              "pre-shared secret than the one configured now. If this secret "
                              f"is new at both ends, remove {self.path} and {used} (and the "
                              "same two files at the other end) and start again") from None
        except ValueError as exc:
            raise ConfigError(None, self.key, None,
                              f"the Qdist session state {self.path} is unusable: {exc}. The "
                              "session cannot resume: give both ends of the link a fresh "
                              "pre-shared secret (see the README, 'A lost session state')") \
                from None

    def save(self, state: bytes) -> None:
        """Replaces the file with ``state`` atomically (see the module docstring).

        Raises:
            OSError: the state could not be written (the old file is left as it was).
        """
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        # A temp file of a process killed mid-save (key material) goes first; a symlink
        # planted there is refused (O_EXCL | O_NOFOLLOW), never followed.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.saves += 1
