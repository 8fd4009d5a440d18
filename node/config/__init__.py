"""Node configuration: parsed once at the entry point into frozen dataclasses.

>>> from qkdnode.node.config import load_config
>>> config = load_config("examples/lab.toml")          # doctest: +SKIP
>>> config.links[0].distillation.qber_abort            # doctest: +SKIP
0.11
"""

from __future__ import annotations

from pathlib import Path

from qkdnode.node.errors import ConfigError

from .loader import load_toml
from .schema import (
    ROLES,
    DecoyConfig,
    DistillationConfig,
    InstrumentConfig,
    KeyManagerConfig,
    LinkConfig,
    NodeConfig,
    NodeIdentity,
    PeerConfig,
    TlsConfig,
)

__all__ = [
    "ROLES",
    "ConfigError",
    "DecoyConfig",
    "DistillationConfig",
    "InstrumentConfig",
    "KeyManagerConfig",
    "LinkConfig",
    "NodeConfig",
    "NodeIdentity",
    "PeerConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]


def load_config(path: str | Path) -> NodeConfig:
    """Reads and validates a node configuration file.

    Raises:
        ConfigError: naming the file, the key and where possible the line of the first problem
            (including a file that cannot be read or is not UTF-8).
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, None, None, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(name, None, None, "is a directory, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, None, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(name, None, None, f"cannot be read: {exc.strerror}") from None
    return load_toml(NodeConfig, text, name, Path(path).resolve().parent)


def parse_config(text: str, file: str | None = None,
                 base_dir: Path | None = None) -> NodeConfig:
    """Validates a node configuration given as TOML text (see :func:`load_config`)."""
    return load_toml(NodeConfig, text, file, base_dir)
