"""The simulated bench's event rate: qkdnode.drivers.sim.SimulatedLink on one core.

Prints one JSON document to stdout. For each setting it builds a link, loads a random frame
(10^4 positions, classes 0/1/2 with probabilities 0.7/0.2/0.1), runs one small call to compile
and one of the timed size (a link keeps its work arrays across calls: the timed calls are the
steady state of a stream), then times ``--calls`` calls of ``run_with_truth(n_slots)`` and
reports the delivered tags per wall-clock second (best call and total) and per CPU second of
this process (which discounts time the core spent on other jobs), the simulated slots per
second and the tag mix.

With ``--peer REV`` the same calls also run on the simulator as it was at git revision REV
(its ``drivers/sim`` exported to a temporary package), alternating call by call with the
current one, so that both see the same machine load: a before/after comparison in one run.

Settings:
  dense   1 km, mu1 = 0.8, detector efficiency 0.25, dead time 10 ns: a saturating link where
          events are dense (tens of millions of clicks per simulated second).
  50km    the defaults (Lim et al. Fig. 1 detectors, 50 km of 0.2 dB/km fibre).

Usage: python benchmarks/bench_sim.py [--calls 5] [--slots-dense 5e7] [--slots-50km 2e9]
                                      [--peer REV]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from qkdnode.drivers import sim as current_sim

FRAME_LENGTH = 10_000
REPO = Path(__file__).resolve().parents[1]


def settings(sim: ModuleType) -> dict[str, Any]:
    """The two settings, built from ``sim``'s own parameter classes."""
    dense_det = sim.DetectorParams(efficiency=0.25, dead_time_ps=10_000,
                                   afterpulse_tau_ps=50_000.0)
    return {
        "dense": sim.BenchParams(source=sim.SourceParams(mu1=0.8, mu2=0.2, mu3=0.01),
                                 fibre=sim.FibreParams(length_km=1.0),
                                 detectors=(dense_det,) * 4),
        "50km": sim.BenchParams(),
    }


# The engine's modules (the instruments around it in drivers/sim are not needed to time it).
ENGINE_MODULES = ("kernels", "link", "optics", "params", "prng")


def export_peer(rev: str, into: Path) -> ModuleType:
    """The engine of ``drivers/sim`` at git revision ``rev``, as a package under ``into``."""
    name = "sim_peer"
    pkg = into / name
    pkg.mkdir()
    for module in ENGINE_MODULES:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:drivers/sim/{module}.py"],
                              check=True, capture_output=True, text=True).stdout
        (pkg / f"{module}.py").write_text(text)
    (pkg / "__init__.py").write_text(
        "from .link import SimulatedLink\n"
        "from .params import BenchParams, DetectorParams, FibreParams, SourceParams\n")
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def make_link(sim: ModuleType, params: Any, n_slots: int) -> Any:
    rng = np.random.default_rng(2026)
    link = sim.SimulatedLink(params, seed=1)
    link.load_frame(rng.integers(0, 2, FRAME_LENGTH, dtype=np.uint8),
                    rng.integers(0, 2, FRAME_LENGTH, dtype=np.uint8),
                    rng.choice(3, FRAME_LENGTH, p=[0.7, 0.2, 0.1]).astype(np.uint8))
    # Compile (or load from numba's cache), then one call of the timed size: a link keeps its
    # work arrays across calls, and the timed calls are the steady state of a stream.
    link.run(min(n_slots, 10_000_000))
    link.run(n_slots)
    return link


def summary(params: Any, n_slots: int, events: list[int], times: list[float],
            cpu_times: list[float], origins: np.ndarray) -> dict[str, Any]:
    calls = len(events)
    best = int(np.argmin(np.array(times) / np.array(events)))
    best_cpu = int(np.argmin(np.array(cpu_times) / np.array(events)))
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
        "events_per_cpu_s_best_call": events[best_cpu] / cpu_times[best_cpu],
        "events_per_cpu_s_total": total_events / sum(cpu_times),
        "simulated_slots_per_s": calls * n_slots / total_time,
        "seconds_per_call": times,
        "cpu_seconds_per_call": cpu_times,
    }


def measure(name: str, n_slots: int, calls: int, peer: ModuleType | None) -> dict[str, Any]:
    sims = {"current": current_sim} | ({"peer": peer} if peer is not None else {})
    params = {k: settings(m)[name] for k, m in sims.items()}
    links = {k: make_link(m, params[k], n_slots) for k, m in sims.items()}
    record: dict[str, dict[str, Any]] = {
        k: {"times": [], "cpu": [], "events": [], "origins": np.zeros(4, dtype=np.int64)}
        for k in sims}
    for _ in range(calls):
        for k, link in links.items():  # alternating: both see the same load
            t0, c0 = time.perf_counter(), time.process_time()
            batch, truth = link.run_with_truth(n_slots)
            r = record[k]
            r["times"].append(time.perf_counter() - t0)
            r["cpu"].append(time.process_time() - c0)
            r["events"].append(len(batch))
            r["origins"] += np.bincount(truth.origins, minlength=4)
            print(f"{name} {k}: {len(batch)} tags in {r['times'][-1]:.3f} s "
                  f"({r['cpu'][-1]:.3f} s CPU)", file=sys.stderr)
    out = {k: summary(params[k], n_slots, r["events"], r["times"], r["cpu"], r["origins"])
           for k, r in record.items()}
    return out["current"] if peer is None else out


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
    parser.add_argument("--peer", metavar="REV",
                        help="also time drivers/sim as of this git revision, call by call")
    args = parser.parse_args()
    slots = {"dense": int(args.slots_dense), "50km": int(args.slots_50km)}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        peer = export_peer(args.peer, Path(tmp)) if args.peer else None
        results = {name: measure(name, slots[name], args.calls, peer) for name in slots}
    print(json.dumps({
        "benchmark": "drivers.sim.SimulatedLink.run_with_truth",
        "peer_revision": args.peer,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "calibration": calibration(),
        "settings": results,
    }, indent=2))


if __name__ == "__main__":
    main()
