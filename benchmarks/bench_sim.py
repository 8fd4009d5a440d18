"""The simulated bench's event rate: qkdnode.drivers.sim.SimulatedLink on one core.

Prints one JSON document to stdout. For each setting it builds a link, loads a random frame
(10^4 positions, classes 0/1/2 with probabilities 0.7/0.2/0.1), runs one call to compile and
warm up, then times ``--calls`` calls of ``run_with_truth(n_slots)`` and reports the delivered
tags per wall-clock second (best call and total) and per CPU second of this process (which
discounts time the core spent on other jobs), the simulated slots per second and the tag mix.

Settings:
  dense   1 km, mu1 = 0.8, detector efficiency 0.25, dead time 10 ns: a saturating link where
          events are dense (tens of millions of clicks per simulated second).
  50km    the defaults (Lim et al. Fig. 1 detectors, 50 km of 0.2 dB/km fibre).

Usage: python benchmarks/bench_sim.py [--calls 5] [--slots-dense 5e7] [--slots-50km 2e9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from qkdnode.drivers.sim import (
    BenchParams,
    DetectorParams,
    FibreParams,
    SimulatedLink,
    SourceParams,
)

FRAME_LENGTH = 10_000


def settings() -> dict[str, BenchParams]:
    dense_det = DetectorParams(efficiency=0.25, dead_time_ps=10_000, afterpulse_tau_ps=50_000.0)
    return {
        "dense": BenchParams(source=SourceParams(mu1=0.8, mu2=0.2, mu3=0.01),
                             fibre=FibreParams(length_km=1.0), detectors=(dense_det,) * 4),
        "50km": BenchParams(),
    }


def measure(name: str, params: BenchParams, n_slots: int, calls: int) -> dict[str, Any]:
    rng = np.random.default_rng(2026)
    link = SimulatedLink(params, seed=1)
    link.load_frame(rng.integers(0, 2, FRAME_LENGTH, dtype=np.uint8),
                    rng.integers(0, 2, FRAME_LENGTH, dtype=np.uint8),
                    rng.choice(3, FRAME_LENGTH, p=[0.7, 0.2, 0.1]).astype(np.uint8))
    link.run(min(n_slots, 10_000_000))  # compile (numba cache) and warm up
    times, cpu_times, events = [], [], []
    origins = np.zeros(4, dtype=np.int64)
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.process_time()
        batch, truth = link.run_with_truth(n_slots)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        events.append(len(batch))
        origins += np.bincount(truth.origins, minlength=4)
        print(f"{name}: {len(batch)} tags in {times[-1]:.3f} s", file=sys.stderr)
    best = int(np.argmin(np.array(times) / np.array(events)))
    total_events, total_time = sum(events), sum(times)
    return {
        "slot_rate_hz": params.source.slot_rate_hz,
        "length_km": params.fibre.length_km,
        "slots_per_call": n_slots,
        "calls": calls,
        "tags_per_call_mean": total_events / calls,
        "tags_per_simulated_second": total_events / (calls * n_slots / params.source.slot_rate_hz),
        "origin_fractions": {k: float(v / origins.sum()) for k, v in zip(
            ("photon", "dark", "afterpulse", "sync"), origins, strict=True)},
        "events_per_s_best_call": events[best] / times[best],
        "events_per_s_total": total_events / total_time,
        "events_per_cpu_s_total": total_events / sum(cpu_times),
        "simulated_slots_per_s": calls * n_slots / total_time,
        "seconds_per_call": times,
        "cpu_seconds_per_call": cpu_times,
    }


def calibration() -> dict[str, float]:
    """CPU seconds of two fixed tasks, to scale the figures to another (or an idle) machine."""
    rng = np.random.default_rng(0)
    c0 = time.process_time()
    u = rng.random(10_000_000)
    c1 = time.process_time()
    np.log(u)
    c2 = time.process_time()
    return {"numpy_random_1e7_cpu_s": c1 - c0, "numpy_log_1e7_cpu_s": c2 - c1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--slots-dense", type=float, default=5e7)
    parser.add_argument("--slots-50km", type=float, default=2e9)
    args = parser.parse_args()
    slots = {"dense": int(args.slots_dense), "50km": int(args.slots_50km)}
    results = {name: measure(name, p, slots[name], args.calls) for name, p in settings().items()}
    print(json.dumps({
        "benchmark": "drivers.sim.SimulatedLink.run_with_truth",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "calibration": calibration(),
        "settings": results,
    }, indent=2))


if __name__ == "__main__":
    main()
