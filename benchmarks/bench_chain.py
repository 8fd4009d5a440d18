"""The whole chain on one block: sifted bits to final key (dsp.distill.distill_local).

Prints one JSON document: for each block size, the sifted-input throughput of the whole chain
at QBER about 2 % (target: >= 5 Mbit/s on the 2-core machine), the time of each stage, the
final key length and its ratio to what the Lim et al. model predicts for the same counts with
f_EC = 1.16. The block's counts are the expected counts of a 25 km Fig. 1 link whose
afterpulse probability is lowered to 3 % so the X-basis error rate is about 2 %.

    python benchmarks/bench_chain.py [--bits 1000000 4000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from qkdnode.dsp.distill import distill_local
from qkdnode.dsp.estimation import DecoyCounts, LinkModel, optimize_decoy
from qkdnode.dsp.privacy import toeplitz_hash
from qkdnode.dsp.reconcile import reconcile_local


def _block(n_bits: int, seed: int):
    link = LinkModel(25.0, afterpulse_probability=0.03)
    best = optimize_decoy(link, n_bits)
    expected = link.expected_counts_per_pulse(best.params).scaled(
        link.pulses_for(best.params, n_bits))
    counts = DecoyCounts(*(tuple(float(round(x)) for x in t)
                           for t in (expected.n_x, expected.n_z, expected.m_z)))
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n_bits, dtype=np.uint8)
    bob = alice ^ (rng.random(n_bits) < best.key.qber_x).astype(np.uint8)
    mu = (best.mu1, best.mu2, link.mu3)
    p = (best.p_mu1, best.p_mu2, 1.0 - best.p_mu1 - best.p_mu2)
    return alice, bob, counts, mu, p, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    # Warm the numba caches so compilation is not timed.
    warm = _block(20_000, 0)
    distill_local(*warm[:5], kappa=1e-15, rng=np.random.default_rng(0))

    results = []
    for n_bits in args.bits:
        alice, bob, counts, mu, p, best = _block(n_bits, 1)
        times, stage = [], {}
        for r in range(args.repeat):
            print(f"chain: {n_bits} bits, run {r + 1}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = distill_local(alice, bob, counts, mu, p, kappa=1e-15,
                                   rng=np.random.default_rng(r))
            times.append(time.perf_counter() - start)
        # Stage split, measured on their own with the same inputs.
        start = time.perf_counter()
        report = reconcile_local(alice, bob, counts.qber_z, rng=np.random.default_rng(9))
        stage["reconciliation_s"] = time.perf_counter() - start
        kept = np.ascontiguousarray(alice[report.kept])
        seed = np.random.default_rng(9).integers(0, 2, kept.size + result.length - 1,
                                                 dtype=np.uint8)
        start = time.perf_counter()
        toeplitz_hash(kept, seed, max(result.length, 1))
        stage["privacy_amplification_s"] = time.perf_counter() - start
        best_time = min(times)
        results.append({
            "sifted_bits": n_bits,
            "qber": result.qber,
            "final_key_bits": result.length,
            "model_key_bits_f_1_16": best.key.ell,
            "key_ratio_to_model": result.length / best.key.ell if best.key.ell else None,
            "kept_bits": result.kept_bits,
            "frames": result.reconciliation.frames_attempted,
            "frames_discarded": result.reconciliation.frames_discarded,
            "leakage_bits": result.leakage_bits,
            "eps_cor": result.eps_cor,
            "wall_s": times,
            "throughput_mbit_s": n_bits / best_time / 1e6,
            "target_mbit_s": 5.0,
            "stages": stage,
            "keys_identical": bool(np.array_equal(result.key_alice, result.key_bob)),
        })
    print(json.dumps({
        "benchmark": "dsp.distill chain",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
