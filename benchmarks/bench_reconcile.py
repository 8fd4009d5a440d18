"""Benchmark of LDPC reconciliation: efficiency, frame error rate and decoding throughput.

Prints one JSON document on stdout (progress on stderr). Two parts:

* ``reconciliation``: :func:`qkdnode.dsp.reconcile.reconcile_local` on a binary symmetric
  channel at each QBER, with the QBER as prior estimate (and once without any estimate). For
  each: frame length, frames, frame error rate, efficiency
  ``f = disclosed / (kept payload * h(actual QBER of the kept frames))`` with every disclosed bit
  (syndromes, blind reveals, verification tags, also those of discarded frames), and end-to-end
  throughput of sifted key.
* ``decoding``: the bare decoder at QBER 2 % on one shipped code (full syndrome, no puncturing):
  ours in batch on all cores and on one core, side by side with the PyPI ``ldpc`` package's
  min-sum ``BpDecoder`` (serial and parallel schedules) on the same matrix and the same
  syndromes. ``ldpc`` is not a dependency: ``pip install ldpc``; if it cannot be imported the JSON
  says so.

Usage::

    python benchmarks/bench_reconcile.py [--frames 100] [--decode-frames 32] [--quick]
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

from qkdnode.dsp.ldpc.codes import DEFAULT_N, get_code, syndrome
from qkdnode.dsp.ldpc.decoder import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_SCALE,
    decode_syndrome,
    decode_syndromes,
)
from qkdnode.dsp.reconcile import binary_entropy, choose_code, plan_frame, reconcile_local

QBERS = (0.01, 0.02, 0.05, 0.08)
DECODE_QBER = 0.02


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bsc(rng: np.random.Generator, size: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    alice = rng.integers(0, 2, size, dtype=np.uint8)
    bob = alice ^ (rng.random(size) < qber).astype(np.uint8)
    return alice, bob


def bench_reconciliation(
    qber: float | None, true_qber: float, frames: int, n: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    code = choose_code(true_qber if qber is None else qber, n)
    payload = plan_frame(code, code.n, true_qber if qber is None else qber).payload_length
    alice, bob = bsc(rng, frames * payload, true_qber)
    start = time.perf_counter()
    report = reconcile_local(alice, bob, qber, rng=rng, n=n)
    elapsed = time.perf_counter() - start
    kept = report.kept
    correct = bool(np.array_equal(report.corrected[kept], alice[kept]))
    actual = float((alice != bob)[kept].mean()) if kept.any() else float("nan")
    denominator = kept.sum() * binary_entropy(actual) if kept.any() else float("nan")
    rounds = [f.rounds for f in report.frames]
    return {
        "qber": true_qber,
        "qber_estimate": qber,
        "frame_length": code.n,
        "codes": sorted({f.code_name for f in report.frames}),
        "payload_per_frame": payload,
        "frames": report.frames_attempted,
        "frames_discarded": report.frames_discarded,
        "fer": report.frames_discarded / max(report.frames_attempted, 1),
        "actual_qber_kept": actual,
        "efficiency_f": report.disclosed_bits / denominator,
        "efficiency_f_kept_frames_only": report.kept_disclosed_bits / denominator,
        "mean_rounds": float(np.mean(rounds)) if rounds else 0.0,
        "max_rounds": int(max(rounds)) if rounds else 0,
        "kept_bits_equal_alice": correct,
        "seconds": elapsed,
        "throughput_mbit_s": alice.size / elapsed / 1e6,
    }


def bench_decoding(frames: int, n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    # The code reconciliation would use at 2 %, decoded with its full syndrome.
    code = get_code(0.80, n)
    alice, bob = bsc(rng, frames * code.n, DECODE_QBER)
    alice = alice.reshape(frames, code.n)
    bob = bob.reshape(frames, code.n)
    synd = np.stack([syndrome(code, a) for a in alice])
    magnitude = np.log((1 - DECODE_QBER) / DECODE_QBER)
    llrs = np.where(bob == 0, magnitude, -magnitude).astype(np.float32)
    decode_syndromes(code, synd[:2], llrs[:2])  # compile / load the cache
    decode_syndrome(code, synd[0], llrs[0])

    start = time.perf_counter()
    batch = decode_syndromes(code, synd, llrs)
    batch_seconds = time.perf_counter() - start
    start = time.perf_counter()
    singles = [decode_syndrome(code, synd[k], llrs[k]) for k in range(frames)]
    single_seconds = time.perf_counter() - start
    ours_ok = (batch.bits == alice).all(axis=1)
    single_ok = [bool((one.bits == word).all()) for one, word in zip(singles, alice, strict=True)]
    result: dict[str, Any] = {
        "qber": DECODE_QBER,
        "code": code.name,
        "frame_length": code.n,
        "rate": code.rate,
        "frames": frames,
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "ours": {
            "algorithm": f"layered normalised min-sum, scale {DEFAULT_SCALE}, float32",
            "batch_all_cores": {
                "threads": os.cpu_count(),
                "seconds": batch_seconds,
                "throughput_mbit_s": frames * code.n / batch_seconds / 1e6,
                "fer": float(1 - ours_ok.mean()),
                "mean_iterations": float(batch.iterations.mean()),
            },
            "single_core": {
                "seconds": single_seconds,
                "throughput_mbit_s": frames * code.n / single_seconds / 1e6,
                "fer": float(1 - np.mean(single_ok)),
            },
        },
    }
    result["peer_ldpc"] = bench_peer(code, synd, bob, alice)
    best_peer = max(
        (v["throughput_mbit_s"] for v in result["peer_ldpc"].values() if isinstance(v, dict)),
        default=None,
    )
    if best_peer:
        result["speedup_vs_best_peer"] = (
            result["ours"]["batch_all_cores"]["throughput_mbit_s"] / best_peer
        )
    return result


def bench_peer(code: Any, synd: np.ndarray, bob: np.ndarray, alice: np.ndarray) -> dict[str, Any]:
    try:
        import ldpc
        from ldpc import BpDecoder
    except ImportError as error:  # not a dependency: installed by the benchmark instructions
        return {"available": False, "reason": f"cannot import ldpc: {error}"}
    out: dict[str, Any] = {"available": True, "version": getattr(ldpc, "__version__", "?")}
    frames = synd.shape[0]
    # ldpc decodes an error pattern from its syndrome: s_e = s_alice ^ H bob; bob ^ e = alice.
    error_syndromes = [synd[k] ^ syndrome(code, bob[k]) for k in range(frames)]
    for schedule in ("serial", "parallel"):
        decoder = BpDecoder(
            code.H.astype(np.uint8),
            error_rate=DECODE_QBER,
            max_iter=DEFAULT_MAX_ITERATIONS,
            bp_method="minimum_sum",
            ms_scaling_factor=DEFAULT_SCALE,
            schedule=schedule,
        )
        decoder.decode(error_syndromes[0])
        start = time.perf_counter()
        ok = 0
        iterations = 0
        for k in range(frames):
            error = decoder.decode(error_syndromes[k])
            ok += int(np.array_equal(bob[k] ^ error.astype(np.uint8), alice[k]))
            iterations += int(decoder.iter)
        seconds = time.perf_counter() - start
        out[f"min_sum_{schedule}"] = {
            "threads": 1,
            "seconds": seconds,
            "throughput_mbit_s": frames * code.n / seconds / 1e6,
            "fer": 1 - ok / frames,
            "mean_iterations": iterations / frames,
        }
        log(f"peer ldpc {schedule}: {out[f'min_sum_{schedule}']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per QBER")
    parser.add_argument("--decode-frames", type=int, default=32)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="frame length of the family")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="few frames (smoke run)")
    args = parser.parse_args()
    frames = 4 if args.quick else args.frames
    decode_frames = 4 if args.quick else args.decode_frames

    document: dict[str, Any] = {
        "benchmark": "reconcile",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "numpy": np.__version__,
    }
    log("decoding throughput ...")
    document["decoding"] = bench_decoding(decode_frames, args.n, args.seed)
    log(json.dumps(document["decoding"]["ours"]))
    rows = []
    for index, qber in enumerate(QBERS):
        log(f"reconciliation at QBER {qber} ...")
        rows.append(bench_reconciliation(qber, qber, frames, args.n, args.seed + index))
        log(json.dumps(rows[-1]))
    log("reconciliation at QBER 0.03 without a prior estimate ...")
    rows.append(bench_reconciliation(None, 0.03, frames, args.n, args.seed + 99))
    log(json.dumps(rows[-1]))
    document["reconciliation"] = rows
    json.dump(document, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
