"""Turns a parsed TOML document into the frozen configuration dataclasses.

The builder walks a dataclass's fields, converts each TOML value to the annotated type and runs
the field's check (see :mod:`qkdnode.node.config.fields`); after a section is built its
``validate()`` method, if any, checks the rules that span fields. The first problem found
raises :class:`~qkdnode.node.errors.ConfigError` with the dotted key path and, found from the
file's text, its line.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from qkdnode.node.errors import ConfigError

T = TypeVar("T")
KeyPath = tuple[str | int, ...]

__all__ = ["KeyPath", "build", "format_key", "load_toml", "locate"]


class _Problem(Exception):
    """An error at a key path, before the file and line are known."""

    def __init__(self, path: KeyPath, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def format_key(path: KeyPath) -> str:
    """``("links", 0, "decoy", "mu1")`` -> ``links[0].decoy.mu1``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(inner[0])
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str or tp is Path:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if dataclasses.is_dataclass(item):
            return "an array of tables"
        return "an array of " + _type_name(item).removeprefix("a ").removeprefix("an ") + "s"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _convert(value: Any, tp: Any, path: KeyPath, base_dir: Path | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        # Only ``X | None`` unions occur; TOML has no null, so the value is an X.
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, base_dir)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Problem(path, f"must be a table, got {_toml_type(value)}")
        return build(tp, value, path, base_dir)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list):
            raise _Problem(path, f"must be an array, got {_toml_type(value)}")
        item_tp = args[0]
        return tuple(_convert(v, item_tp, (*path, i), base_dir) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Problem(path, f"must be a table, got {_toml_type(value)}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args or type(value) is not type(args[0]):
            raise _Problem(path, f"must be {_type_name(tp)}, got {value!r}")
        return value
    if tp is float:
        # An integer is a fine float (``rate = 1000``); a boolean is not.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Problem(path, f"must be a number, got {_toml_type(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(path, f"must be an integer, got {_toml_type(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _Problem(path, f"must be true or false, got {_toml_type(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _Problem(path, f"must be a string, got {_toml_type(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise _Problem(path, f"must be a non-empty path string, got {_toml_type(value)}")
        p = Path(value).expanduser()
        # Relative paths are relative to the configuration file, not to the working directory,
        # so a node starts the same whatever directory it is started from.
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return p
    raise TypeError(f"configuration field type {tp!r} is not supported")  # schema bug


def build(cls: type[T], table: Mapping[str, Any], path: KeyPath = (),
          base_dir: Path | None = None) -> T:
    """Builds dataclass ``cls`` from a TOML table; raises ``_Problem`` on the first error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.init}
    removed: Mapping[str, str] = getattr(cls, "REMOVED_KEYS", {})
    for key in table:
        if key in removed:
            raise _Problem((*path, key), removed[key])
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise _Problem((*path, key), f"unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = (*path, name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Problem(key_path, f"missing required key ({_type_name(hints[name])})")
            continue
        value = _convert(table[name], hints[name], key_path, base_dir)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            reason = check(value)
            if reason:
                raise _Problem(key_path, reason)
        values[name] = value
    try:
        obj = cls(**values)
    except ValueError as exc:
        # A section whose constructor checks rules across its fields (for example the simulated
        # bench's parameter classes) reports them here: at the field its message names
        # ("SourceParams.mu2: need ..."), else at the section's key.
        message = str(exc)
        head, sep, reason = message.partition(": ")
        owner, dot, name = head.partition(".")
        if sep and dot and owner == cls.__name__ and name in fields:
            raise _Problem((*path, name), reason) from None
        raise _Problem(path or ("(top level)",), message) from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for key, reason in validate():
            raise _Problem((*path, *key) if isinstance(key, tuple) else (*path, key), reason)
    return obj


def load_toml(cls: type[T], text: str, file: str | None = None,
              base_dir: Path | None = None) -> T:
    """Parses TOML text into ``cls``.

    Raises:
        ConfigError: with the file, the key and, where found, the line of the first problem.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        reason = message[: match.start()].strip() if match else message
        raise ConfigError(file, None, line, f"TOML syntax error: {reason}") from None
    try:
        return build(cls, document, (), base_dir)
    except _Problem as problem:
        raise ConfigError(file, format_key(problem.path), locate(text, problem.path),
                          problem.reason) from None


# --- finding the line of a key in the TOML text ------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_ASSIGN = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _lines(text: str) -> Iterator[tuple[int, KeyPath]]:
    """Yields (line number, full key path) for every table header and key assignment."""
    table: KeyPath = ()
    counts: dict[KeyPath, int] = {}
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header:
            names = _split_dotted(header.group(2))
            # Resolve earlier components against arrays of tables already seen.
            resolved: list[str | int] = []
            for name in names[:-1]:
                resolved.append(name)
                seen = counts.get(tuple(resolved))
                if seen is not None:
                    resolved.append(seen - 1)
            resolved.append(names[-1])
            if header.group(1) == "[[":
                key = tuple(resolved)
                counts[key] = counts.get(key, 0) + 1
                resolved.append(counts[key] - 1)
            table = tuple(resolved)
            yield number, table
            continue
        assign = _ASSIGN.match(line)
        if assign:
            yield number, (*table, *_split_dotted(assign.group(1)))
            rest = line[assign.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote


def locate(text: str, path: KeyPath) -> int | None:
    """The line of ``path`` in ``text``, or of its nearest enclosing table; None if not found."""
    found = {key: number for number, key in _lines(text)}
    probe = tuple(path)
    while probe:
        if probe in found:
            return found[probe]
        if (*probe, 0) in found:  # an array of tables: its first header
            return found[(*probe, 0)]
        probe = probe[:-1]
    return None
