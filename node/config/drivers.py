"""Checks a configuration's instruments against the drivers this installation has.

Parsing (:mod:`qkdnode.node.config.loader`) checks the file's form; this checks what only the
driver registry knows: that a driver implements the role it is configured for, that its
settings table holds only keys the driver understands, and that a driver that reaches an
instrument has a resource URL. A driver name the registry does not know is a warning, not an
error, so a lab file can name an instrument whose driver a later qkdnode version brings.
"""

from __future__ import annotations

from qkdnode.drivers.registry import DRIVERS, driver_names
from qkdnode.node.errors import ConfigError

from .loader import KeyPath, format_key, locate
from .schema import NodeConfig

__all__ = ["check_instrument_drivers"]


def check_instrument_drivers(config: NodeConfig, file: str | None = None,
                             text: str | None = None) -> list[str]:
    """Checks every instrument's driver, role and settings.

    Args:
        config: the parsed configuration.
        file: the file it came from, for messages.
        text: the file's text, to find the line of a problem.

    Returns:
        Warnings (instruments whose driver this installation does not have).

    Raises:
        ConfigError: a driver that does not implement the configured role, an unknown setting,
            or a missing resource URL.
    """

    def fail(path: KeyPath, reason: str) -> ConfigError:
        line = locate(text, path) if text is not None else None
        return ConfigError(file, format_key(path), line, reason)

    warnings = []
    for i, instrument in enumerate(config.instruments):
        info = DRIVERS.get(instrument.driver)
        if info is None:
            warnings.append(
                f"instrument {instrument.name!r}: driver {instrument.driver!r} is not available "
                f"in this installation (available: {', '.join(driver_names())})")
            continue
        if instrument.role not in info.roles:
            raise fail(("instruments", i, "role"),
                       f"driver {instrument.driver!r} does not implement role "
                       f"{instrument.role!r} (it implements: {', '.join(info.roles)})")
        known = info.known_settings()
        for key in instrument.settings:
            if key not in known:
                raise fail(("instruments", i, "settings", key),
                           f"unknown setting for driver {instrument.driver!r} "
                           f"(known: {', '.join(known) or 'none'})")
        if info.transport is not None and instrument.resource is None:
            raise fail(("instruments", i),
                       f"driver {instrument.driver!r} reaches an instrument: give its resource")
    return warnings
