"""Parameter estimation: Lim et al. 2014 Fig. 1, and the sifting that feeds it, printed as JSON.

``fig1``: for each block size n_X = 1e4 ... 1e9 the optimised rate per pulse at every distance
of a grid, the largest distance with key (bisection to ``--resolution`` km), the time each
``optimize_decoy`` took, and the 1e9 : 1e7 rate ratio at 100 km, beside the paper's statements.
``sifting``: wall time of ``sift`` on 10^7 detections over 10^8 slots (best of three).

    python benchmarks/bench_estimation.py [--part fig1|sifting|all] [--step 10] > out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from qkdnode.dsp.estimation import DecoyOptimum, LinkModel, optimize_decoy
from qkdnode.dsp.sifting import X1, Z0, AliceChoices, pattern_of, sift

BLOCK_SIZES = [10.0**s for s in range(4, 10)]
PAPER = {"max_distance_km_at_1e4": 135.0, "ratio_1e9_to_1e7_at_100km": 1.75}


def _timed(distance: float, n_x: float, timings: list[float]) -> DecoyOptimum:
    start = time.perf_counter()
    optimum = optimize_decoy(LinkModel(distance), n_x)
    timings.append(time.perf_counter() - start)
    return optimum


def _max_distance(n_x: float, resolution: float, timings: list[float]) -> float:
    lo, hi = 0.0, 300.0  # key at 0 km for every block size here; none at 300 km
    while hi - lo > resolution:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _timed(mid, n_x, timings).rate_per_pulse > 0 else (lo, mid)
    return lo


def _sifting(n_detections: int = 10**7, n_slots: int = 10**8) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    choices = AliceChoices(0, *(rng.integers(0, k, n_slots, dtype=np.uint8) for k in (2, 2, 3)))
    slots = np.sort(rng.choice(n_slots, n_detections, replace=False)).astype(np.int64)
    basis = rng.integers(0, 2, n_detections, dtype=np.uint8)
    patterns = pattern_of(basis, rng.integers(0, 2, n_detections, dtype=np.uint8))
    patterns[::100] |= np.uint8(X1 | Z0)  # 1% multi-click detections
    random_bits = rng.integers(0, 4, n_detections, dtype=np.uint8)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        sift(choices, slots, patterns, random_bits=random_bits)
        times.append(time.perf_counter() - start)
    return {"detections": n_detections, "slots": n_slots, "seconds_best_of_3": min(times)}


def _fig1(step: float, max_km: float, resolution: float) -> dict[str, Any]:
    distances = [i * step for i in range(int(max_km / step) + 1)]
    timings: list[float] = []
    curves = []
    for n_x in BLOCK_SIZES:
        points = []
        for d in distances:
            o = _timed(d, n_x, timings)
            points.append(
                {
                    "distance_km": d,
                    "rate_per_pulse": o.rate_per_pulse,
                    "mu1": o.mu1,
                    "mu2": o.mu2,
                    "p_mu1": o.p_mu1,
                    "p_mu2": o.p_mu2,
                    "q_x": o.q_x,
                    "ell": o.key.ell,
                }
            )
        curves.append(
            {
                "n_x": n_x,
                "max_distance_km": _max_distance(n_x, resolution, timings),
                "points": points,
            }
        )
    r9 = _timed(100.0, 1e9, timings).rate_per_pulse
    r7 = _timed(100.0, 1e7, timings).rate_per_pulse
    return {
        "measured": {
            "max_distance_km_at_1e4": curves[0]["max_distance_km"],
            "ratio_1e9_to_1e7_at_100km": r9 / r7,
        },
        "paper": PAPER,
        "optimize_decoy_seconds": {
            "runs": len(timings),
            "mean": sum(timings) / len(timings),
            "max": max(timings),
        },
        "curves": curves,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("fig1", "sifting", "all"), default="all")
    parser.add_argument("--step", type=float, default=10.0, help="distance grid step, km")
    parser.add_argument("--max-km", type=float, default=200.0, help="last grid distance, km")
    parser.add_argument("--resolution", type=float, default=0.1, help="max-distance bisection")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "bench_estimation"}
    if args.part in ("sifting", "all"):
        report["sifting"] = _sifting()
    if args.part in ("fig1", "all"):
        report["fig1_lim2014"] = _fig1(args.step, args.max_km, args.resolution)
    json.dump(report, sys.stdout, indent=1)
    print()
    return report


if __name__ == "__main__":
    main()
