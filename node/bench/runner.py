"""Runs a procedure on a lab: settings, safe state on the way out, and the files it writes.

:func:`run_procedure` is what ``qkdnode bench`` and the tests call. Whatever happens (normal
end, an error, Ctrl-C) the lab is put in its safe state and ``result.json`` and (for a
procedure that uses the time tagger) ``tags.csv`` are written with what was acquired; the
exception then propagates. Rows of readings or scan
points reach ``readings.csv`` as each completes, with a partial ``result.json``
(``"complete": false``, the points done) beside them, so a run cut short keeps them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import detector, efficiency, mismatch, modulator, qber, source, timing
from .acquire import Recorder
from .lab import Lab
from .plots import plot_gaps
from .result import Outcome, Settings, write_json, write_rows_csv, write_tags_csv

__all__ = ["PROCEDURES", "Procedure", "resolve_settings", "run_procedure"]


@dataclass(frozen=True)
class Procedure:
    """A bench procedure: its function, the roles it needs, its default settings."""

    name: str
    run: Callable[[Lab, Recorder, Settings], Outcome]
    roles: tuple[str, ...]
    defaults: Mapping[str, Any]
    doc: str


# The detector procedures' default acquisitions: enough gaps per channel that the mean over four
# channels meets the relative uncertainty (dark counts and afterpulsing 5 %, dead time
# 2 %) at the default link, bounded in duration for detectors with few counts.
_DETECTOR_ROLES = ("time_tagger", "transmitter", "attenuator", "detector")
# RMS timing uncertainty of one tag: the default link's 100 ps FWHM detector jitter (42 ps
# RMS) and a tagger's ~10 ps, rounded up.
DEFAULT_TIMING_RMS_PS = 50.0

# RMS jitter of one tagger input: quTAG- and Time-Tagger-class instruments specify under
# 10 ps; the simulated tagger's is 8 ps. Set the lab's datasheet value.
DEFAULT_TAGGER_JITTER_RMS_PS = 8.0

PROCEDURES: dict[str, Procedure] = {
    p.name: p for p in (
        Procedure("dark-counts", detector.dark_counts, _DETECTOR_ROLES, {
            "target_counts": 4000, "duration_s": 60.0, "window_s": 1e-9,
            "timing_rms_ps": DEFAULT_TIMING_RMS_PS, "sync_channel": 0, "channels": None},
            "dark count rate (Hz) and probability per window, light blocked"),
        Procedure("afterpulsing", detector.afterpulsing, _DETECTOR_ROLES, {
            "target_counts": 20000, "duration_s": 60.0, "count_rate_hz": 20000.0,
            "timing_rms_ps": DEFAULT_TIMING_RMS_PS, "sync_channel": 0, "channels": None},
            "afterpulse probability from the inter-arrival histogram's excess"),
        Procedure("dead-time", detector.dead_time, _DETECTOR_ROLES, {
            "target_counts": 20000, "duration_s": 10.0, "count_rate_hz": 200000.0,
            "timing_rms_ps": DEFAULT_TIMING_RMS_PS, "sync_channel": 0, "channels": None},
            "dead time from the inter-arrival histogram's cutoff"),
        Procedure("jitter", timing.jitter, _DETECTOR_ROLES, {
            "target_counts": 20000, "duration_s": 10.0, "count_rate_hz": 50000.0,
            "sync_channel": 0, "channels": None,
            "tagger_jitter_rms_ps": DEFAULT_TAGGER_JITTER_RMS_PS, "sync_jitter_rms_ps": 0.0},
            "timing jitter FWHM against the sync, tagger and sync jitter removed"),
        Procedure("delay-alignment", timing.delay_alignment, _DETECTOR_ROLES, {
            "target_counts": 20000, "duration_s": 10.0, "count_rate_hz": 50000.0,
            "sync_channel": 0, "channels": None, "reference_channel": None, "apply": False},
            "per-channel delays that align the detectors' timing peaks"),
        Procedure("detector-efficiency", efficiency.detector_efficiency,
                  (*_DETECTOR_ROLES, "power_meter"), {
                      "target_counts": 20000, "duration_s": 30.0, "count_rate_hz": 50000.0,
                      "dark_counts": 400, "dark_duration_s": 2.0, "readings": 20,
                      "averaging": 1000, "wavelength_nm": 1550.0, "loss_to_detector_db": 0.0,
                      "split_fraction": 0.25, "power_meter_calibration_rel": 0.0,
                      "timing_rms_ps": DEFAULT_TIMING_RMS_PS, "sync_channel": 0,
                      "channels": None},
                  "detection efficiency from calibrated attenuated pulses"),
        Procedure("efficiency-mismatch", mismatch.efficiency_mismatch, _DETECTOR_ROLES, {
            "target_counts": 40000, "duration_s": 30.0, "count_rate_hz": 50000.0,
            "dark_counts": 400, "dark_duration_s": 2.0, "split_fractions": None,
            "timing_rms_ps": DEFAULT_TIMING_RMS_PS, "sync_channel": 0, "channels": None},
            "relative efficiencies of the receiver's detectors"),
        Procedure("extinction-ratio", modulator.extinction_ratio, ("bias_controller",), {
            "points": 201, "max_bias_v": 10.0, "settle_s": 0.0},
            "intensity modulator extinction ratio from the bias controller's scan"),
        Procedure("qber-scan", qber.qber_scan,
                  ("time_tagger", "transmitter", "attenuator", "bias_controller"), {
                      "max_bias_v": 10.0, "coarse_points": 21, "coarse_counts": 1000,
                      "fine_points": 15, "fine_half_width_v": 1.5, "fine_counts": 4000,
                      "count_rate_hz": 100000.0, "duration_s": 2.0, "frame_slots": 1000,
                      "sync_channel": 0, "channels": None, "channel_states": None},
            "modulator bias set point of least QBER (X and Z bases) from a bias scan"),
        Procedure("mean-photon-number", source.mean_photon_number,
                  ("transmitter", "power_meter", "attenuator"), {
                      "readings": 20, "averaging": 1000, "wavelength_nm": 1550.0,
                      "attenuation_db": 0.0, "loss_to_channel_db": 0.0,
                      "power_meter_calibration_rel": 0.0},
                  "mean photon number per intensity class from calibrated power"),
    )
}


def resolve_settings(procedure: Procedure, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The procedure's defaults with ``overrides`` applied.

    Raises:
        ValueError: an override the procedure does not have (naming the ones it has).
    """
    unknown = sorted(set(overrides) - set(procedure.defaults))
    if unknown:
        raise ValueError(f"{procedure.name}: unknown setting(s) {', '.join(unknown)} "
                         f"(settings: {', '.join(sorted(procedure.defaults))})")
    return {**procedure.defaults, **overrides}


def _value_text(out: Outcome) -> str:
    return _quantity_text(out.value, out.uncertainty, out.unit)


def _quantity_text(value: float, uncertainty: float, unit: str) -> str:
    if unit == "ps" and abs(value) >= 1e4:
        return f"{value / 1e3:.4g} ± {uncertainty / 1e3:.2g} ns"
    unit = "" if unit == "1" else f" {unit}"
    return f"{value:.5g} ± {uncertainty:.2g}{unit}"


# What each procedure's per-channel value is, for the plot panels' titles.
_CHANNEL_QUANTITY = {
    "dark-counts": "dark count rate", "afterpulsing": "afterpulse probability",
    "dead-time": "dead time", "jitter": "FWHM (tagger removed)",
    "delay-alignment": "delay to add", "detector-efficiency": "efficiency",
    "efficiency-mismatch": "efficiency relative to the mean",
}


def _channel_text(name: str, out: Outcome) -> dict[int, str]:
    """Each channel's extracted value as the plots print it."""
    what = _CHANNEL_QUANTITY.get(name, "value")
    return {int(ch): f"{what} {_quantity_text(e['value'], e['uncertainty'], out.unit)}"
            for ch, e in out.channels.items()}


def run_procedure(name: str, lab: Lab, out_dir: Path | str,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs procedure ``name`` on ``lab`` and writes its files into ``out_dir``.

    Returns:
        The contents of ``result.json``.

    Raises:
        ValueError: an unknown procedure or setting.
        Whatever the procedure raised (after the safe state and the partial files).
    """
    if name not in PROCEDURES:
        raise ValueError(f"unknown procedure {name!r} (procedures: {', '.join(PROCEDURES)})")
    procedure = PROCEDURES[name]
    settings = resolve_settings(procedure, overrides or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(label=name)
    started = dt.datetime.now(dt.UTC)
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    record: dict[str, Any] = {
        "procedure": name, "status": "failed", "simulated": lab.simulated,
        "settings": settings, "instruments": dict(lab.identities),
        "started_utc": started.isoformat(timespec="seconds"),
    }

    def partial() -> None:
        # A run cut short (Ctrl-C, an instrument error, a killed process) leaves a result
        # that says so, with what was done.
        write_json(out / "result.json", {
            **record, "status": "running", "complete": False,
            "points_done": len(recorder.rows), "progress": dict(recorder.progress),
            "readings": {"count": len(recorder.rows), "file": "readings.csv"}})

    recorder.rows_path = out / "readings.csv"
    recorder.on_progress = partial
    with _ctrl_c_at_safe_points(recorder):
        _run_and_write(procedure, lab, recorder, settings, out, record, t0, c0)
    return record


def _run_and_write(procedure: Procedure, lab: Lab, recorder: Recorder, settings: Settings,
                   out: Path, record: dict[str, Any], t0: float, c0: Any) -> None:
    """Runs the procedure, then (whatever happened) the safe state and the files (into
    ``record`` and ``out``)."""
    name = procedure.name
    outcome: Outcome | None = None
    try:
        outcome = procedure.run(lab, recorder, settings)
        recorder.check_stop()  # Ctrl-C after the last safe point still stops the run
        record["status"] = "complete"
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        raise
    except BaseException as exc:
        if recorder.stop_now:
            # The second Ctrl-C came back as this error (swallowed by a vendor library's
            # callback, which then reported lost data): an interruption, not a failure.
            record["status"] = "interrupted"
            raise KeyboardInterrupt from exc
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recorder.end_progress()
        failed = lab.safe_state()
        if failed:
            record["safe_state_failures"] = failed
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record.update({
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - t0,
            "cpu_s": (usage.ru_utime + usage.ru_stime) - (c0.ru_utime + c0.ru_stime),
            "load_average": list(os.getloadavg()),
        })
        t, c = recorder.tags()
        if "time_tagger" in procedure.roles:
            # Procedures without a time tagger (power-meter readings only) write no tags.csv.
            record["tags"] = {"count": int(t.shape[0]), "reads": recorder.reads,
                              "lost_events": recorder.lost_events,
                              "overflows": recorder.overflows, "file": "tags.csv"}
            write_tags_csv(out / "tags.csv", t, c)
        if recorder.header:
            write_rows_csv(out / "readings.csv", recorder.header, recorder.rows)
            record["readings"] = {"count": len(recorder.rows), "file": "readings.csv"}
        record["complete"] = outcome is not None
        if outcome is None:
            record["points_done"] = len(recorder.rows)
            record["progress"] = dict(recorder.progress)
        if outcome is not None:
            record.update(outcome.as_json())
            if outcome.mark == "scan":
                plot = modulator.plot_scan(out / f"{name}.png", outcome,
                                           value_text=_value_text(outcome),
                                           simulated=lab.simulated)
            elif outcome.mark == "qber":
                plot = qber.plot_qber(out / f"{name}.png", outcome,
                                      value_text=_value_text(outcome), simulated=lab.simulated)
            elif outcome.mark == "classes":
                plot = source.plot_classes(out / f"{name}.png", outcome,
                                           value_text=_value_text(outcome),
                                           simulated=lab.simulated)
            elif outcome.mark == "peak":
                plot = timing.plot_peaks(out / f"{name}.png", dict(outcome.fits), t, c,
                                         int(settings["sync_channel"]),
                                         value_text=_value_text(outcome),
                                         simulated=lab.simulated,
                                         title=("detector jitter FWHM (tagger removed)"
                                                if name == "jitter" else outcome.quantity),
                                         channel_text=_channel_text(name, outcome),
                                         reference=outcome.also.get("reference_channel"))
            else:
                plot = plot_gaps(out / f"{name}.png", t, c, outcome.fits,
                                 title=outcome.quantity, mark=outcome.mark,
                                 value_text=_value_text(outcome), simulated=lab.simulated,
                                 channel_text=_channel_text(name, outcome))
            record["plots"] = [plot.name]
        write_json(out / "result.json", record)


@contextlib.contextmanager
def _ctrl_c_at_safe_points(recorder: Recorder) -> Iterator[None]:
    """While a procedure runs, the first Ctrl-C asks it to stop at its next safe point (a
    KeyboardInterrupt raised from a tagger read or an instrument exchange could leave a reply
    unread, or be swallowed by a vendor library's callback and come back as lost data); a
    second Ctrl-C raises at once. Only where Ctrl-C has Python's default handler, in the main
    thread (elsewhere it is left as it is)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        del signum, frame
        if recorder.stop_requested:
            recorder.stop_now = True
            raise KeyboardInterrupt
        recorder.stop_requested = True
        sys.stderr.write(f"\n{recorder.label}: Ctrl-C, stopping at the next safe point "
                         "(Ctrl-C again to stop at once)\n")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def summary_table(record: Mapping[str, Any]) -> str:
    """A plain-text summary of a result: the value, then per channel."""
    unit = record.get("unit", "")
    lines = [f"{record['procedure']}: {record.get('quantity', '')}"
             + ("  (SIMULATED bench)" if record.get("simulated") else ""),
             f"{'channel':>8} {'value':>14} {'uncertainty':>12} {'rel. %':>7}  {'N':>7}"]
    for ch, entry in record.get("channels", {}).items():
        v, u = entry["value"], entry["uncertainty"]
        rel = 100 * u / abs(v) if v else math.inf
        n = entry.get("n_gaps", entry.get("n_clicks", ""))
        lines.append(f"{ch:>8} {v:14.6g} {u:12.3g} {rel:7.2f}  {n:>7}")
    if "value" in record:
        v, u = record["value"], record["uncertainty"]
        rel = 100 * u / abs(v) if v else math.inf
        lines.append(f"{'result':>8} {v:14.6g} {u:12.3g} {rel:7.2f}  unit: {unit}")
    lines.append(f"status {record['status']}; wall {record['wall_s']:.1f} s, CPU "
                 f"{record['cpu_s']:.1f} s, load {record['load_average'][0]:.2f}")
    return "\n".join(lines)
