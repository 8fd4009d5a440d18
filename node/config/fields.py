"""Declaring configuration fields: a doc string and a check, next to the field itself.

A section of the node configuration is one frozen dataclass whose fields are declared with
:func:`setting`. The loader (:mod:`qkdnode.node.config.loader`) reads the types from the
annotations and the documentation and checks from the field metadata, so adding a section is
one dataclass; cross-field rules go in an optional ``validate()`` method that yields
``(key, reason)`` pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, field
from typing import Any

# A check returns None when the value is good, else the reason in words ("must be > 0").
Check = Callable[[Any], str | None]

__all__ = [
    "Check",
    "between",
    "host_port",
    "matches",
    "multiple_of",
    "non_empty",
    "one_of",
    "positive",
    "probability",
    "resource_url",
    "setting",
]


def setting(
    doc: str,
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    check: Check | None = None,
    unit: str | None = None,
) -> Any:
    """Declares one configuration key.

    Args:
        doc: what the key means, for people reading ``qkdnode config schema`` and the template.
        default: the value when the key is absent; without a default the key is required.
        default_factory: like ``dataclasses.field``'s, for mutable defaults.
        check: a validation function returning ``None`` or the reason the value is wrong.
        unit: the unit of a number (``"s"``, ``"Hz"``, ``"bits"``), shown in the schema.
    """
    metadata = {"doc": doc, "check": check, "unit": unit}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """Accepts numbers in [low, high]; ``low_open``/``high_open`` exclude an end."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"

    def check(value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            return f"must be in {left}{low:g}, {high:g}{right}, got {value!r}"
        return None

    return check


def positive(value: float) -> str | None:
    """Accepts finite numbers > 0."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None if value > 0 else f"must be > 0, got {value!r}"


def probability(value: float) -> str | None:
    """Accepts numbers in the open interval (0, 1)."""
    return between(0.0, 1.0, low_open=True, high_open=True)(value)


def one_of(*choices: Any) -> Check:
    """Accepts exactly the given values."""

    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return "must be one of " + ", ".join(repr(c) for c in choices) + f", got {value!r}"

    return check


def matches(pattern: str, what: str) -> Check:
    """Accepts strings matching a regular expression; ``what`` describes it in the error."""
    compiled = re.compile(pattern)

    def check(value: str) -> str | None:
        return None if compiled.fullmatch(value) else f"must be {what}, got {value!r}"

    return check


def non_empty(value: str | Iterable[Any]) -> str | None:
    """Accepts non-empty strings and sequences."""
    return None if len(value) else "must not be empty"  # type: ignore[arg-type]


def multiple_of(step: int) -> Check:
    """Accepts positive integers divisible by ``step``."""

    def check(value: int) -> str | None:
        if value <= 0 or value % step:
            return f"must be a positive multiple of {step}, got {value!r}"
        return None

    return check


def host_port(value: str) -> str | None:
    """Accepts ``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) with a port in 0..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must be HOST:PORT with a port in 0..65535, got {value!r}"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"an IPv6 host must be in brackets ([::1]:PORT), got {value!r}"
    return None


def resource_url(value: str) -> str | None:
    """Accepts an instrument resource URL (see :mod:`qkdnode.drivers.resource`)."""
    from qkdnode.drivers.resource import parse_resource_url

    try:
        parse_resource_url(value)
    except ValueError as exc:
        return str(exc)
    return None
