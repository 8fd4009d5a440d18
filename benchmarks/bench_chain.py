"""The whole chain on one block: sifted bits to final key (dsp.distill.distill_local).

Prints one JSON document: for each block size, the sifted-input throughput of the whole chain
at QBER about 2 % (target: >= 5 Mbit/s on the 2-core machine), the final key length and its
ratio to what the Lim et al. model predicts for the same counts with f_EC = 1.16, and the time
of every stage, wall and CPU (process time, all threads): the machine is shared, so CPU time is
the steadier figure; the load average is printed beside them.

Stages, each measured on its own with the block's inputs:
  sifting          dsp.sifting.sift on the detections that give the block's sifted X bits
                   (before the chain proper, which starts at sifted bits; reported for scale)
  reconciliation   reconcile_local, split by a CPU-time profile into the LDPC decoder's
                   numba kernels (ldpc/kernels*.py), the rest of decode_syndromes (its Python
                   and numpy wrapper) and everything else (frame planning, syndromes, messages,
                   verification tags)
  verification     the share of reconciliation spent in dsp.verification
  estimation       finite_key_length with the leakage reconciliation caused
  privacy          toeplitz_hash_pair: both ends' kept bits in one FFT product

The block's counts are the expected counts of a 25 km Fig. 1 link whose afterpulse probability
is lowered to 3 % so the X-basis error rate is about 2 %.

    python benchmarks/bench_chain.py [--bits 1000000 4000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qkdnode.dsp.distill import distill_local
from qkdnode.dsp.estimation import DecoyCounts, LinkModel, finite_key_length, optimize_decoy
from qkdnode.dsp.privacy_pair import toeplitz_hash_pair
from qkdnode.dsp.reconcile import reconcile_local
from qkdnode.dsp.sifting import AliceChoices, pattern_of, sift


def _block(n_bits: int, seed: int) -> tuple[Any, ...]:
    link = LinkModel(25.0, afterpulse_probability=0.03)
    best = optimize_decoy(link, n_bits)
    expected = link.expected_counts_per_pulse(best.params).scaled(
        link.pulses_for(best.params, n_bits)
    )
    counts = DecoyCounts(
        *(tuple(float(round(x)) for x in t) for t in (expected.n_x, expected.n_z, expected.m_z))
    )
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n_bits, dtype=np.uint8)
    bob = alice ^ (rng.random(n_bits) < best.key.qber_x).astype(np.uint8)
    mu = (best.mu1, best.mu2, link.mu3)
    p = (best.p_mu1, best.p_mu2, 1.0 - best.p_mu1 - best.p_mu2)
    return alice, bob, counts, mu, p, best


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _sifting_inputs(n_bits: int, q_x: float, seed: int) -> tuple[Any, ...]:
    """Detections whose sifting yields about ``n_bits`` X bits (q_x^2 of them sift to X)."""
    rng = np.random.default_rng(seed)
    n_det = int(n_bits / q_x**2)
    n_slots = 10 * n_det  # sparse detections, as on a real link (Alice indexed, not scanned)
    x_or_z = (rng.random(n_slots) >= q_x).astype(np.uint8)  # 0 = X
    choices = AliceChoices(
        0, x_or_z, rng.integers(0, 2, n_slots, dtype=np.uint8),
        rng.integers(0, 3, n_slots, dtype=np.uint8),
    )
    slots = np.sort(rng.choice(n_slots, n_det, replace=False)).astype(np.int64)
    basis = (rng.random(n_det) >= q_x).astype(np.uint8)
    patterns = pattern_of(basis, rng.integers(0, 2, n_det, dtype=np.uint8))
    return choices, slots, patterns, rng.integers(0, 4, n_det, dtype=np.uint8)


def _stages(alice: Any, bob: Any, counts: Any, mu: Any, p: Any, best: Any, length: int) -> dict:
    stage: dict[str, Any] = {}
    choices, slots, patterns, rand = _sifting_inputs(alice.size, best.q_x, 5)
    sifted, wall, cpu = _timed(lambda: sift(choices, slots, patterns, random_bits=rand))
    stage["sifting"] = {"wall_s": wall, "cpu_s": cpu, "detections": int(slots.size),
                        "sifted_x_bits": int(sifted.x_alice.size)}

    profile = cProfile.Profile(time.process_time)
    c0, t0 = time.process_time(), time.perf_counter()
    profile.enable()
    report = reconcile_local(alice, bob, counts.qber_z, rng=np.random.default_rng(9))
    profile.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    decoder = sum(v[3] for k, v in stats.items() if k[2] == "decode_syndromes")
    # The decoder's numba kernels: ldpc/kernels.py and its siblings (kernels_qc.py, ...).
    kernels = sum(
        v[2] for k, v in stats.items()
        if os.path.basename(os.path.dirname(k[0])) == "ldpc"
        and os.path.basename(k[0]).startswith("kernels")
    )
    verification = sum(
        v[2] for k, v in stats.items() if k[0].endswith(os.path.join("dsp", "verification.py"))
    )
    stage["reconciliation"] = {"wall_s": wall, "cpu_s": cpu, "decoder_cpu_s": decoder,
                               "decoder_kernel_cpu_s": kernels,
                               "decoder_wrapper_cpu_s": decoder - kernels,
                               "other_cpu_s": cpu - decoder,
                               "verification_cpu_s": verification}

    kept_bits = int(report.kept.sum())
    alice_kept = np.ascontiguousarray(alice[report.kept])
    bob_kept = np.ascontiguousarray(report.corrected[report.kept])
    qber = float(np.count_nonzero(bob[report.kept] != alice_kept) / max(kept_bits, 1))
    leak = float(report.disclosed_bits + alice.size - kept_bits)
    _, wall, cpu = _timed(lambda: finite_key_length(
        counts, mu, p, eps_cor=1e-15, kappa=1e-15, ec_leak=leak, qber=qber))
    stage["estimation"] = {"wall_s": wall, "cpu_s": cpu}

    m = max(min(length, kept_bits), 1)
    seed = np.random.default_rng(9).integers(0, 2, kept_bits + m - 1, dtype=np.uint8)

    _, wall, cpu = _timed(lambda: toeplitz_hash_pair(alice_kept, bob_kept, seed, m))
    stage["privacy_amplification"] = {"wall_s": wall, "cpu_s": cpu, "n": kept_bits, "m": m}
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    # Warm the numba caches so compilation is not timed (also the four-step FFT's kernels).
    warm = _block(300_000, 0)
    distill_local(*warm[:5], kappa=1e-15, rng=np.random.default_rng(0))

    load_start = os.getloadavg()
    results = []
    for n_bits in args.bits:
        alice, bob, counts, mu, p, best = _block(n_bits, 1)
        walls, cpus = [], []
        for r in range(args.repeat):
            print(f"chain: {n_bits} bits, run {r + 1}", file=sys.stderr, flush=True)
            c0, t0 = time.process_time(), time.perf_counter()
            result = distill_local(alice, bob, counts, mu, p, kappa=1e-15,
                                   rng=np.random.default_rng(r))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            walls.append(wall)
            cpus.append(cpu)
        print(f"chain: {n_bits} bits, stages", file=sys.stderr, flush=True)
        stage = _stages(alice, bob, counts, mu, p, best, result.length)
        outside_decoder = sum(
            s["cpu_s"] for k, s in stage.items() if k not in ("reconciliation", "sifting")
        ) + stage["reconciliation"]["other_cpu_s"]
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
            "wall_s": walls,
            "cpu_s": cpus,
            "throughput_mbit_s": n_bits / min(walls) / 1e6,
            "throughput_mbit_per_cpu_s": n_bits / min(cpus) / 1e6,
            "target_mbit_s": 5.0,
            "stages": stage,
            "chain_cpu_outside_decoder_s": outside_decoder,
            "chain_cpu_outside_decoder_per_mbit_s": outside_decoder / (n_bits / 1e6),
            "keys_identical": bool(np.array_equal(result.key_alice, result.key_bob)),
        })
    print(json.dumps({
        "benchmark": "dsp.distill chain",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(),
                    "load_avg_start": [round(v, 2) for v in load_start],
                    "load_avg_end": [round(v, 2) for v in os.getloadavg()]},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
