"""What a procedure returns (:class:`Outcome`) and the files a run writes.

``result.json`` holds the value, its standard uncertainty and unit, the estimator in words,
per-channel values, the settings used, the instruments' identities, ``"simulated"`` and the
run's status (``complete``, ``interrupted`` or ``failed``: partial data are written too);
``tags.csv`` the raw time tags; the PNG plots come from :mod:`.plots`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Outcome", "Row", "Settings", "channel_values", "mean_of_channels", "write_json",
           "write_rows_csv", "write_tags_csv"]

Settings = Mapping[str, Any]
# One row of readings.csv.
Row = tuple[float | int | str, ...]


def mean_of_channels(per: Mapping[int, tuple[float, float]]) -> tuple[float, float]:
    """Mean of per-channel (value, standard uncertainty), with its standard uncertainty."""
    if not per:
        raise ValueError("no channel gave a value")
    values = [v for v, _ in per.values()]
    us = [u for _, u in per.values()]
    n = len(values)
    return float(sum(values) / n), float(math.sqrt(sum(u * u for u in us)) / n)


def channel_values(per: Mapping[int, tuple[float, float]],
                   counts: Mapping[int, int] | None = None,
                   count_name: str = "n_gaps") -> dict[str, dict[str, float]]:
    """Per-channel values as JSON: ``{"1": {"value": v, "uncertainty": u, count_name: n}}``,
    where ``counts`` are what each channel's value was fitted on: gaps between clicks
    (``n_gaps``, the default) or clicks in a timing peak (``n_clicks``)."""
    out: dict[str, dict[str, float]] = {}
    for ch, (v, u) in sorted(per.items()):
        entry: dict[str, float] = {"value": float(v), "uncertainty": float(u)}
        if counts is not None and ch in counts:
            entry[count_name] = int(counts[ch])
        out[str(ch)] = entry
    return out


@dataclass
class Outcome:
    """A procedure's result before it is written.

    Attributes:
        quantity: what was measured, in words.
        value, uncertainty, unit: the result and its standard uncertainty.
        estimator: the estimator and its uncertainty, in words.
        channels: per-channel values (:func:`channel_values`).
        also: further quantities the procedure reports beside the value.
        fits: the per-channel fits the plots draw (procedure specific).
        span_s: the acquisition's length, s.
        instrument_settings: what the instruments reported during the run.
        light: how the light level was set (None: blocked).
        mark: what the plot marks (procedure specific).
    """

    quantity: str
    value: float
    uncertainty: float
    unit: str
    estimator: str
    channels: dict[str, dict[str, float]]
    also: dict[str, Any] = field(default_factory=dict)
    fits: Mapping[int, Any] = field(default_factory=dict)
    span_s: float = 0.0
    instrument_settings: dict[str, Any] = field(default_factory=dict)
    light: dict[str, float] | None = None
    mark: str = ""

    def as_json(self) -> dict[str, Any]:
        """The JSON fields of the result (value, uncertainty, ...)."""
        rel = (self.uncertainty / abs(self.value)) if self.value else math.inf
        return {
            "quantity": self.quantity, "value": self.value, "uncertainty": self.uncertainty,
            "relative_uncertainty": rel, "unit": self.unit, "estimator": self.estimator,
            "channels": self.channels, "also": self.also,
            "acquisition_span_s": self.span_s, "light_level": self.light,
            "instrument_readings": self.instrument_settings,
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Writes ``data`` as JSON (non-finite numbers as null), atomically."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(dict(data)), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_tags_csv(path: Path, timestamps_ps: NDArray[np.int64], channels: NDArray[np.int32]
                   ) -> None:
    """Writes the raw tags, one ``timestamp_ps,channel`` row each, in read order."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("timestamp_ps", "channel"))
        for start in range(0, timestamps_ps.shape[0], 65536):
            writer.writerows(zip(timestamps_ps[start:start + 65536].tolist(),
                                 channels[start:start + 65536].tolist(), strict=True))


def write_rows_csv(path: Path, header: tuple[str, ...], rows: list[Row]) -> None:
    """Writes instrument readings, one row each, under ``header``, atomically (a reader, or
    an interruption, sees the previous complete file or this one)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
        f.flush()
    os.replace(tmp, path)
