"""Time-tag acquisition for the bench procedures, with progress and kept partial data.

:class:`Recorder` collects what the tagger delivers; the runner owns it, so the tags read
before an interruption (Ctrl-C, an instrument error) are still there to be written. Rows of
readings or scan points go through :meth:`Recorder.add_row` (or :meth:`Recorder.set_rows`
when a procedure recomputes them all): with ``rows_path`` set they are on disk as soon as they
complete, and ``on_progress`` (the runner's partial ``result.json``) runs after each; a
progress line on stderr counts them (of ``progress["points_planned"]`` when the procedure set
it), so a scan of many short points shows progress as a long acquisition does.
:func:`acquire` reads until every detector channel has ``target_counts`` tags or the tags
span ``max_duration_s``, printing progress to stderr.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from .result import Row, write_rows_csv

__all__ = ["Recorder", "acquire", "measure_rates"]

# Progress lines are redrawn at most this often (a terminal needs no more).
PROGRESS_INTERVAL_S = 0.5
# A tagger read that returns nothing this many times in a row while the acquisition still
# waits for counts means the time axis cannot advance (no light, no dark counts, tagger
# stopped): the acquisition stops instead of spinning forever.
MAX_EMPTY_READS = 2000


@dataclass
class Recorder:
    """The tags read so far (in read order), and what was lost."""

    parts_t: list[NDArray[np.int64]] = field(default_factory=list)
    parts_c: list[NDArray[np.int32]] = field(default_factory=list)
    lost_events: int = 0
    overflows: int = 0
    reads: int = 0
    label: str = ""
    # Readings of procedures that record something other than tags (power meter readings):
    # a header and rows, written as ``readings.csv``.
    header: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    # Where the rows are written as they complete (None: only at the end, by the runner).
    rows_path: Path | None = None
    # What the procedure has done so far, for a partial result (e.g. points done, planned).
    progress: dict[str, Any] = field(default_factory=dict)
    # Called after each completed row (the runner writes its partial result.json).
    on_progress: Callable[[], None] | None = None
    # Whether completed rows are counted on a progress line on stderr.
    show_progress: bool = True
    # Set by the runner's Ctrl-C handler: the procedure stops at its next safe point (after a
    # tagger read or a completed row, never inside an instrument exchange).
    stop_requested: bool = False
    # Set by the same handler at a second Ctrl-C, which raises KeyboardInterrupt wherever the
    # procedure is; a vendor library's callback may swallow it and report an error instead,
    # which the runner then takes as the interruption it was.
    stop_now: bool = False
    _rows_shown_at: float = field(default=-math.inf, repr=False)
    _rows_line_open: bool = field(default=False, repr=False)

    def add_row(self, row: Row) -> None:
        """Adds one completed row of readings and puts it on disk (see module docstring)."""
        self.rows.append(row)
        self._flush_rows()

    def set_rows(self, rows: Iterable[Row]) -> None:
        """Replaces every row (a procedure that recomputes them all as points complete)."""
        self.rows[:] = list(rows)
        self._flush_rows()

    def _flush_rows(self) -> None:
        if self.rows_path is not None and self.header:
            write_rows_csv(self.rows_path, self.header, self.rows)
        if self.on_progress is not None:
            self.on_progress()
        self.check_stop()
        now = time.monotonic()
        if self.show_progress and now - self._rows_shown_at >= PROGRESS_INTERVAL_S:
            self._rows_shown_at = now
            _progress(sys.stderr, self._rows_text())
            self._rows_line_open = True

    def _rows_text(self) -> str:
        planned = self.progress.get("points_planned")
        scan = self.progress.get("scan")
        done = len(self.rows)
        return (f"{self.label}: {done}" + (f" of {planned}" if planned else "")
                + (" point" if done == 1 and not planned else " points") + " done"
                + (f" ({scan} scan)" if scan else ""))

    def check_stop(self) -> None:
        """A safe point: raises KeyboardInterrupt if Ctrl-C was pressed since the start."""
        if self.stop_requested:
            raise KeyboardInterrupt("Ctrl-C")

    def end_progress(self) -> None:
        """Ends the rows' progress line (with the final count) if one is showing."""
        if self._rows_line_open:
            self._rows_line_open = False
            _progress(sys.stderr, self._rows_text(), final=True)

    def add(self, read: Any) -> None:
        """Adds one :class:`~qkdnode.drivers.roles.TagRead`."""
        self.parts_t.append(np.asarray(read.timestamps_ps, dtype=np.int64))
        self.parts_c.append(np.asarray(read.channels, dtype=np.int32))
        self.lost_events += int(read.lost_events)
        self.overflows += int(read.overflows)
        self.reads += 1

    def tags(self) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """All tags: (timestamps_ps, channels)."""
        if not self.parts_t:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate(self.parts_t), np.concatenate(self.parts_c)

    def clear(self) -> None:
        """Forgets the tags (a new acquisition of the same procedure)."""
        self.parts_t.clear()
        self.parts_c.clear()
        self.lost_events = self.overflows = self.reads = 0
        self.rows.clear()


def _progress(stream: TextIO | None, text: str, final: bool = False) -> None:
    if stream is None:
        return
    stream.write("\r" + text + ("\n" if final else ""))
    stream.flush()


def acquire(tagger: Any, recorder: Recorder, channels: tuple[int, ...], *,
            target_counts: int, max_duration_s: float, min_duration_s: float = 0.0,
            progress: TextIO | bool = True) -> float:
    """Reads tags until each of ``channels`` has ``target_counts`` or ``max_duration_s`` passed.

    Time is the tags' own: the span from the first tag to the last on any channel, so a
    simulated bench (which runs faster or slower than the wall clock) and a real tagger are
    timed alike.

    ``progress``: True writes progress lines to the current ``sys.stderr``, False none.

    Returns:
        The span of the acquisition, s.

    Raises:
        RuntimeError: the tagger lost data (an acquisition with gaps would bias every
            inter-arrival statistic).
    """
    stream: TextIO | None = (
        (sys.stderr if progress else None) if isinstance(progress, bool) else progress)
    if stream is not None:
        recorder.end_progress()  # this acquisition's line starts on a line of its own
    tagger.start()
    counts = dict.fromkeys(channels, 0)
    first: int | None = None
    last = 0
    span_s = 0.0
    empty = 0
    shown = 0.0
    try:
        while True:
            read = tagger.read()
            recorder.add(read)
            recorder.check_stop()
            if not read.complete:
                raise RuntimeError(
                    f"the time tagger lost data ({read.lost_events} events, {read.overflows} "
                    "overflows): lower the light level or read more often")
            t = read.timestamps_ps
            if t.size == 0:
                empty += 1
                if empty >= MAX_EMPTY_READS:
                    break
                continue
            empty = 0
            if first is None:
                first = int(t[0])
            last = int(t[-1])
            span_s = (last - first) * 1e-12
            ch, n = np.unique(read.channels, return_counts=True)
            for c, k in zip(ch.tolist(), n.tolist(), strict=True):
                if c in counts:
                    counts[c] += k
            least = min(counts.values())
            now = time.monotonic()
            if now - shown >= PROGRESS_INTERVAL_S:
                shown = now
                _progress(stream, f"{recorder.label} acquiring: {span_s:8.3f} s of "
                                    f"{max_duration_s:g} s, fewest counts on a channel "
                                    f"{least}/{target_counts}")
            if span_s >= max_duration_s or (least >= target_counts and span_s >= min_duration_s):
                break
    finally:
        tagger.stop()
        _progress(stream, f"{recorder.label} acquired {span_s:.3f} s, "
                            f"{sum(counts.values())} tags", final=True)
    return span_s


def measure_rates(tagger: Any, channels: tuple[int, ...], duration_s: float
                  ) -> dict[int, float]:
    """Count rate of each channel over a short acquisition of ``duration_s``, Hz."""
    recorder = Recorder(label="rate")
    span = acquire(tagger, recorder, channels, target_counts=2**62, max_duration_s=duration_s,
                   progress=False)
    _, c = recorder.tags()
    span = max(span, duration_s)
    return {ch: float(np.count_nonzero(c == ch)) / span for ch in channels}
