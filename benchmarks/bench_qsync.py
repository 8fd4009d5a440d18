"""Qsync throughput: detections given a slot per second, next to its peers, in one run.

Prints one JSON document. Tags come from the simulated bench (1 GHz, jitter FWHM 10 % of the
slot, +1 ms clock offset, -10 ppm), generated once before any timing; the truth is used only to
report the fraction of photon detections that got their emission slot.

Measured, each on the same tags:
  tracker_block<B>  ``SlotTracker.process`` over the stream in reads of ``--read`` slots, blocks
                    of B detections (acquisition, tracking, loss checks, output).
  assign_only       ``qsync.assign`` with the acquired line held fixed: one vectorised pass, no
                    tracking (the floor a tracker could reach; it drifts off over long runs).
  acquire           one ``qsync.acquire`` on 2048 detections (frequency search, pattern FFT).

Wall and CPU time (``time.process_time``, which discounts time the core spent on other jobs)
are both reported with the load average: the development machine is shared.

Usage: python benchmarks/bench_qsync.py [--slots 2e8] [--read 1e7] [--length-km 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from qkdnode.drivers.sim import BenchParams, DetectorParams, SimulatedLink, SourceParams
from qkdnode.drivers.sim.link import Origin
from qkdnode.drivers.sim.params import TaggerParams
from qkdnode.dsp import qsync

RATE_HZ = 1e9
OFFSET_PS = 10**9
DRIFT_PPM = -10.0
FRAME_BITS = 21


def make_stream(n_slots: int, read: int, length_km: float) -> dict[str, Any]:
    period = 1e12 / RATE_HZ
    sigma = 0.1 * period / 2.3548
    det = DetectorParams(jitter_fwhm_ps=2.3548 * math.sqrt(sigma**2 - 8.0**2))
    params = BenchParams(source=SourceParams(slot_rate_hz=RATE_HZ), detectors=(det,) * 4,
                         fibre=replace(BenchParams().fibre, length_km=length_km),
                         tagger=TaggerParams(offset_ps=OFFSET_PS, drift_ppm=DRIFT_PPM))
    rng = np.random.default_rng(2026)
    size = 1 << FRAME_BITS
    intensity = rng.choice(3, size, p=[0.5, 0.3, 0.2]).astype(np.uint8)
    link = SimulatedLink(params, seed=3)
    link.load_frame(rng.integers(0, 2, size, dtype=np.uint8),
                    rng.integers(0, 2, size, dtype=np.uint8), intensity)
    reads, slots, origins = [], [], []
    for _ in range(max(1, n_slots // read)):
        batch, truth = link.run_with_truth(read)
        reads.append((batch.timestamps_ps, batch.channels))
        slots.append(truth.slots)
        origins.append(truth.origins)
    src = params.source
    return {"params": params, "period": period, "reads": reads,
            "pattern": np.array([src.mu1, src.mu2, src.mu3])[intensity],
            "true_slots": np.concatenate(slots), "origins": np.concatenate(origins)}


def timed(fn: Any) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def photon_accuracy(stream: dict[str, Any], index: np.ndarray, slots: np.ndarray) -> float:
    ph = stream["origins"][index] == Origin.PHOTON
    return float(np.mean(slots[ph] == stream["true_slots"][index][ph]))


def run_tracker(stream: dict[str, Any], block: int) -> dict[str, Any]:
    p = stream["params"]
    tracker = qsync.SlotTracker(period_ps=stream["period"], pattern=stream["pattern"],
                                delay_ps=p.fibre.delay_ps, detector_channels=p.tagger.channels,
                                block_tags=block)

    def go() -> list[qsync.SlotBatch]:
        outs = [tracker.process(t, ch) for t, ch in stream["reads"]]
        outs.append(tracker.flush())
        return outs

    outs, wall, cpu = timed(go)
    index = np.concatenate([o.index for o in outs])
    slots = np.concatenate([o.slots for o in outs])
    st = tracker.status
    return {"detections": int(index.size), "wall_s": wall, "cpu_s": cpu,
            "tags_per_s_wall": index.size / wall, "tags_per_s_cpu": index.size / cpu,
            "photon_slot_accuracy": photon_accuracy(stream, index, slots),
            "ppm_estimate": st.ppm, "residual_rms_ps": st.residual_rms_ps,
            "rejected": st.rejected, "losses": st.losses}


def run_assign_only(stream: dict[str, Any]) -> dict[str, Any]:
    p = stream["params"]
    t = np.concatenate([r[0] for r in stream["reads"]])
    ch = np.concatenate([r[1] for r in stream["reads"]])
    det = np.isin(ch, np.asarray(p.tagger.channels))
    acq = qsync.acquire(t[:8192], ch[:8192], period_ps=stream["period"],
                        pattern=stream["pattern"], delay_ps=p.fibre.delay_ps,
                        detector_channels=p.tagger.channels)
    (slots, _), wall, cpu = timed(
        lambda: qsync.assign(t[det], acq.clock, 5 * acq.sigma_ps))
    index = np.flatnonzero(det)
    return {"detections": int(index.size), "wall_s": wall, "cpu_s": cpu,
            "tags_per_s_wall": index.size / wall, "tags_per_s_cpu": index.size / cpu,
            "photon_slot_accuracy": photon_accuracy(stream, index, slots)}


def run_acquire(stream: dict[str, Any], repeats: int = 3) -> dict[str, Any]:
    p = stream["params"]
    t, ch = stream["reads"][0]
    det = np.isin(ch, np.asarray(p.tagger.channels))
    last = int(np.flatnonzero(det)[2047]) + 1
    walls, cpus = [], []
    for _ in range(repeats):
        _, wall, cpu = timed(lambda: qsync.acquire(
            t[:last], ch[:last], period_ps=stream["period"], pattern=stream["pattern"],
            delay_ps=p.fibre.delay_ps, detector_channels=p.tagger.channels))
        walls.append(wall)
        cpus.append(cpu)
    return {"detections": 2048, "pattern_slots": int(stream["pattern"].size),
            "best_wall_s": min(walls), "best_cpu_s": min(cpus)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=float, default=2e8, help="slots simulated (1 GHz)")
    ap.add_argument("--read", type=float, default=1e7, help="slots per bench read")
    ap.add_argument("--length-km", type=float, default=5.0, help="fibre length")
    args = ap.parse_args()
    stream = make_stream(int(args.slots), int(args.read), args.length_km)
    # Compile (numba cache) and warm up on a short prefix.
    warm = {**stream, "reads": stream["reads"][:1]}
    run_tracker(warm, qsync.DEFAULT_BLOCK_TAGS)
    result: dict[str, Any] = {
        "setting": {"rate_hz": RATE_HZ, "offset_ps": OFFSET_PS, "drift_ppm": DRIFT_PPM,
                    "jitter_fwhm_fraction": 0.1, "length_km": args.length_km,
                    "slots": int(args.slots), "read_slots": int(args.read)},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_before": os.getloadavg()},
    }
    for block in (qsync.DEFAULT_BLOCK_TAGS, 4 * qsync.DEFAULT_BLOCK_TAGS):
        result[f"tracker_block{block}"] = run_tracker(stream, block)
    result["assign_only"] = run_assign_only(stream)
    result["acquire"] = run_acquire(stream)
    result["machine"]["load_average_after"] = os.getloadavg()
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
