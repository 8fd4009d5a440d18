"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse

__all__ = ["positive_float"]


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type): the error names what was given."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
    return value
