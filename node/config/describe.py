"""Describing a configuration: the schema as text, a loaded configuration as plain data."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .loader import _type_name
from .schema import NodeConfig

__all__ = ["schema_keys", "schema_lines", "to_plain"]


def _section_type(tp: Any) -> tuple[type | None, bool]:
    """(dataclass, is_array) when ``tp`` is a section or an array of sections."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _section_type(inner[0])
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp, False
    return None, False


def _walk(cls: type, prefix: str) -> Iterator[tuple[str, str, dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        section, is_array = _section_type(hints[f.name])
        if section is not None:
            yield ("array" if is_array else "table"), key, f, section
            yield from _walk(section, key + ("[]" if is_array else ""))
        else:
            yield "key", key, f, hints[f.name]


def schema_keys(cls: type = NodeConfig) -> list[str]:
    """Every key path of the schema (arrays of tables marked ``[]``)."""
    return [key for kind, key, _, _ in _walk(cls, "") if kind == "key"]


def schema_lines(cls: type = NodeConfig) -> Iterator[str]:
    """The schema as readable text: one entry per key with type, default and meaning."""
    for kind, key, f, tp in _walk(cls, ""):
        doc = f.metadata.get("doc", "")
        if kind == "array":
            yield f"\n[[{key}]]  (array of tables)  {doc}"
            continue
        if kind == "table":
            yield f"\n[{key}]  {doc}"
            continue
        if f.default is not dataclasses.MISSING:
            default = "default " + ("none" if f.default is None else repr(to_plain(f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            default = "default " + repr(to_plain(f.default_factory()))
        else:
            default = "required"
        unit = f.metadata.get("unit")
        unit_text = f" [{unit}]" if unit else ""
        yield f"  {key.rsplit('.', 1)[-1]}: {_type_name(tp)}{unit_text}, {default}. {doc}"


def to_plain(value: Any) -> Any:
    """A configuration object as JSON-compatible data (paths as strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
