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

Every timing carries wall seconds and the process's CPU seconds (all threads), and the document
records the load average before and after: the machine is shared, so wall time alone says little.

Usage::

    python benchmarks/bench_reconcile.py [--frames 100] [--decode-frames 32] [--quick]
    python benchmarks/bench_reconcile.py --only-longest --long-frames 12 --blocks 3
        # QBER 2 % on n384000_r085 only, as 3 blocks of 12 frames sharing a ReconcileHistory
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

from qkdnode.dsp.ldpc.codes import DEFAULT_N, syndrome
from qkdnode.dsp.ldpc.decoder import (
    DEFAULT_ALGORITHM,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_SCALE,
    LLR_LIMIT,
    decode_syndrome,
    decode_syndromes,
)
from qkdnode.dsp.reconcile import (
    ReconcileHistory,
    binary_entropy,
    choose_code,
    plan_frame,
    reconcile_local,
)

# 0.5 % and 1 %: the QBER of the simulated link (bench_link: 0.65-0.8 %) and of good links.
QBERS = (0.005, 0.01, 0.02, 0.05, 0.08)
# QBERs also run on the long family (192 000-bit frames, rates 0.85 and 0.90 only).
LONG_N = 192000
LONG_QBERS = (0.01, 0.02)
# QBERs also run on the longest family (384 000-bit frames, rate 0.85 only; reconcile_local takes
# it at 1.75-2 % when the bits fill three of its frames).
LONGEST_N = 384000
LONGEST_QBERS = (0.02,)
DECODE_QBER = 0.02
# Efficiency of the full syndrome in the decoding benchmark: where blind frames succeed.
DECODE_EFFICIENCY = 1.12


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bsc(rng: np.random.Generator, size: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    alice = rng.integers(0, 2, size, dtype=np.uint8)
    bob = alice ^ (rng.random(size) < qber).astype(np.uint8)
    return alice, bob


def bench_reconciliation(
    qber: float | None, true_qber: float, frames: int, n: int, seed: int, blocks: int = 1
) -> dict[str, Any]:
    """One row; with ``blocks > 1`` the row is that many blocks of ``frames`` frames each
    (fresh bits) sharing one ReconcileHistory, as a link's blocks do: the row gives the first
    block and the blocks after it (steady state) apart, and every block."""
    if blocks > 1:
        history = ReconcileHistory()
        runs = [bench_reconciliation_block(qber, true_qber, frames, n, seed + 1000 * k, history)
                for k in range(blocks)]
        steady = runs[1:]
        kept_f = [r["efficiency_f"] for r in steady]
        return {
            "qber": true_qber, "frame_length": runs[0]["frame_length"], "blocks": blocks,
            "first_block": runs[0],
            "steady_state": {
                "frames": sum(r["frames"] for r in steady),
                "frames_discarded": sum(r["frames_discarded"] for r in steady),
                "mean_efficiency_f": float(np.mean(kept_f)),
                "max_efficiency_f": float(np.max(kept_f)),
                "mean_rounds": float(np.mean([r["mean_rounds"] for r in steady])),
                "cpu_seconds_per_block": float(np.mean([r["cpu_seconds"] for r in steady])),
                "kept_bits_equal_alice": all(r["kept_bits_equal_alice"] for r in steady),
            },
            "block_runs": runs,
        }
    return bench_reconciliation_block(qber, true_qber, frames, n, seed, None)


def bench_reconciliation_block(
    qber: float | None, true_qber: float, frames: int, n: int, seed: int,
    history: ReconcileHistory | None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    code = choose_code(true_qber if qber is None else qber, n)
    payload = plan_frame(code, code.n, true_qber if qber is None else qber).payload_length
    alice, bob = bsc(rng, frames * payload, true_qber)
    start = time.perf_counter()
    cpu = time.process_time()
    report = reconcile_local(alice, bob, qber, rng=rng, n=n, history=history)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
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
        "cpu_seconds": cpu,
        "throughput_mbit_s": alice.size / elapsed / 1e6,
        "throughput_mbit_per_cpu_s": alice.size / cpu / 1e6,
    }


def bench_decoding(frames: int, peer_frames: int, n: int, seed: int) -> dict[str, Any]:
    """Bare decoding at QBER 2 % at the operating point of reconciliation.

    The code reconciliation picks at 2 %, shortened (evenly spread known zeros) so that its full
    syndrome is ``DECODE_EFFICIENCY`` times Slepian-Wolf: what a blind frame decodes at success.
    """
    rng = np.random.default_rng(seed)
    code = choose_code(DECODE_QBER, n)
    h = binary_entropy(DECODE_QBER)
    payload = int(code.m / (DECODE_EFFICIENCY * h))
    known = (np.arange(code.n - payload) * code.n) // (code.n - payload)
    is_payload = np.ones(code.n, dtype=bool)
    is_payload[known] = False
    alice = rng.integers(0, 2, (frames, code.n), dtype=np.uint8) * is_payload
    errors = (rng.random((frames, code.n)) < DECODE_QBER) & is_payload
    bob = (alice ^ errors).astype(np.uint8)
    alice = alice.astype(np.uint8)
    synd = np.stack([syndrome(code, a) for a in alice])
    magnitude = np.log((1 - DECODE_QBER) / DECODE_QBER)
    llrs = np.where(bob == 0, magnitude, -magnitude).astype(np.float32)
    llrs[:, known] = LLR_LIMIT
    result: dict[str, Any] = {
        "qber": DECODE_QBER,
        "code": code.name,
        "frame_length": code.n,
        "payload_bits_per_frame": payload,
        "efficiency_of_full_syndrome": code.m / (payload * h),
        "frames": frames,
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "throughput_counts": "payload (sifted key) bits per second of wall time",
        "ours": {},
    }
    # The default check update (what reconciliation runs) first, then the two classic ones.
    for algorithm in dict.fromkeys((DEFAULT_ALGORITHM, "sum-product", "min-sum")):
        decode_syndromes(code, synd[:2], llrs[:2], algorithm=algorithm)  # compile / load cache
        start = time.perf_counter()
        cpu = time.process_time()
        batch = decode_syndromes(code, synd, llrs, algorithm=algorithm)
        batch_seconds = time.perf_counter() - start
        batch_cpu = time.process_time() - cpu
        start = time.perf_counter()
        cpu = time.process_time()
        single = [decode_syndrome(code, synd[k], llrs[k], algorithm=algorithm) for k in range(2)]
        single_seconds = (time.perf_counter() - start) / 2
        single_cpu = (time.process_time() - cpu) / 2
        ok = (batch.bits == alice).all(axis=1)
        result["ours"][algorithm] = {
            "batch_all_cores": {
                "threads": os.cpu_count(),
                "seconds": batch_seconds,
                "cpu_seconds": batch_cpu,
                "throughput_mbit_s": frames * payload / batch_seconds / 1e6,
                "throughput_mbit_per_cpu_s": frames * payload / batch_cpu / 1e6,
                "ns_cpu_per_edge_iteration": batch_cpu
                / max(int(batch.iterations.sum()), 1) / code.n_edges * 1e9,
                "fer": float(1 - ok.mean()),
                "mean_iterations": float(batch.iterations.mean()),
            },
            "one_frame_one_core": {
                "seconds_per_frame": single_seconds,
                "cpu_seconds_per_frame": single_cpu,
                "throughput_mbit_s": payload / single_seconds / 1e6,
                "throughput_mbit_per_cpu_s": payload / single_cpu / 1e6,
                "iterations": [r.iterations for r in single],
            },
        }
        log(f"ours {algorithm}: {result['ours'][algorithm]}")
    if peer_frames == 0:
        return result
    result["peer_ldpc"] = bench_peer(code, synd[:peer_frames], bob, alice, is_payload, payload)
    pairs = (
        (DEFAULT_ALGORITHM, "product_sum_serial"),
        ("sum-product", "product_sum_serial"),
        ("min-sum", "min_sum_serial"),
        ("sum-product", "min_sum_serial"),
    )
    for ours, theirs in pairs:
        peer = result["peer_ldpc"].get(theirs)
        if isinstance(peer, dict):
            mine = result["ours"][ours]["batch_all_cores"]
            result[f"speedup_{ours}_vs_peer_{theirs}"] = {
                "wall": mine["throughput_mbit_s"] / peer["throughput_mbit_s"],
                "cpu": mine["throughput_mbit_per_cpu_s"] / peer["throughput_mbit_per_cpu_s"],
            }
    return result


def bench_peer(
    code: Any,
    synd: np.ndarray,
    bob: np.ndarray,
    alice: np.ndarray,
    is_payload: np.ndarray,
    payload: int,
) -> dict[str, Any]:
    try:
        import ldpc
        from ldpc import BpDecoder
    except ImportError as error:  # not a dependency: installed by the benchmark instructions
        return {"available": False, "reason": f"cannot import ldpc: {error}"}
    out: dict[str, Any] = {"available": True, "version": getattr(ldpc, "__version__", "?")}
    frames = synd.shape[0]
    # ldpc decodes an error pattern from its syndrome: s_e = s_alice ^ H bob; bob ^ e = alice.
    error_syndromes = [synd[k] ^ syndrome(code, bob[k]) for k in range(frames)]
    # Known (shortened) positions: an error probability of ~0, as our LLR_LIMIT.
    channel = np.where(is_payload, DECODE_QBER, 1e-12)
    for method, label in (("product_sum", "product_sum_serial"), ("minimum_sum", "min_sum_serial")):
        decoder = BpDecoder(
            code.H.astype(np.uint8),
            error_channel=channel,
            max_iter=DEFAULT_MAX_ITERATIONS,
            bp_method=method,
            ms_scaling_factor=DEFAULT_SCALE if method == "minimum_sum" else 1.0,
            schedule="serial",
        )
        start = time.perf_counter()
        cpu = time.process_time()
        ok = 0
        iterations = 0
        for k in range(frames):
            error = decoder.decode(error_syndromes[k])
            ok += int(np.array_equal(bob[k] ^ error.astype(np.uint8), alice[k]))
            iterations += int(decoder.iter)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        out[label] = {
            "threads": 1,
            "frames": frames,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "throughput_mbit_s": frames * payload / seconds / 1e6,
            "throughput_mbit_per_cpu_s": frames * payload / cpu / 1e6,
            "fer": 1 - ok / frames,
            "mean_iterations": iterations / frames,
        }
        log(f"peer ldpc {label}: {out[label]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per QBER")
    parser.add_argument("--decode-frames", type=int, default=32)
    parser.add_argument("--peer-frames", type=int, default=4, help="frames for the slow peer")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="frame length of the family")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="few frames (smoke run)")
    parser.add_argument("--no-long", action="store_true",
                        help=f"skip the n={LONG_N} and n={LONGEST_N} rows")
    parser.add_argument("--long-frames", type=int, default=None,
                        help=f"frames per n={LONG_N} or n={LONGEST_N} row (default: a third, "
                        "resp. a sixth, of --frames, >= 2)")
    parser.add_argument("--blocks", type=int, default=1,
                        help="blocks per reconciliation row sharing one ReconcileHistory "
                        "(> 1: first block and steady state apart)")
    parser.add_argument("--only-longest", action="store_true",
                        help=f"only the n={LONGEST_N} reconciliation rows (no decoding part)")
    args = parser.parse_args()
    if args.blocks < 1:
        parser.error("--blocks must be >= 1")
    frames = 4 if args.quick else args.frames
    decode_frames = 4 if args.quick else args.decode_frames
    peer_frames = 2 if args.quick else args.peer_frames

    document: dict[str, Any] = {
        "benchmark": "reconcile",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "numpy": np.__version__,
        "load_average_before": os.getloadavg(),
    }
    if args.only_longest:
        rows = []
        for index, qber in enumerate(LONGEST_QBERS):
            log(f"reconciliation at QBER {qber}, n = {LONGEST_N} ...")
            long_frames = args.long_frames or max(2, frames // 6)
            rows.append(bench_reconciliation(qber, qber, long_frames, LONGEST_N,
                                             args.seed + 70 + index, args.blocks))
            log(json.dumps(rows[-1]))
        document["reconciliation"] = rows
        document["load_average_after"] = os.getloadavg()
        json.dump(document, sys.stdout, indent=2)
        print()
        return
    log("decoding throughput ...")
    document["decoding"] = bench_decoding(decode_frames, peer_frames, args.n, args.seed)
    if not args.no_long:
        log(f"decoding throughput, n = {LONG_N} (ours only) ...")
        document["decoding_long"] = bench_decoding(decode_frames, 0, LONG_N, args.seed)
    rows = []
    for index, qber in enumerate(QBERS):
        log(f"reconciliation at QBER {qber} ...")
        rows.append(
            bench_reconciliation(qber, qber, frames, args.n, args.seed + index, args.blocks)
        )
        log(json.dumps(rows[-1]))
    if not args.no_long:
        for index, qber in enumerate(LONG_QBERS):
            log(f"reconciliation at QBER {qber}, n = {LONG_N} ...")
            # By default about the same number of bits as the rows above.
            long_frames = args.long_frames or max(2, frames // 3)
            rows.append(
                bench_reconciliation(qber, qber, long_frames, LONG_N, args.seed + 50 + index,
                                     args.blocks)
            )
            log(json.dumps(rows[-1]))
        for index, qber in enumerate(LONGEST_QBERS):
            log(f"reconciliation at QBER {qber}, n = {LONGEST_N} ...")
            long_frames = args.long_frames or max(2, frames // 6)
            rows.append(
                bench_reconciliation(qber, qber, long_frames, LONGEST_N, args.seed + 70 + index,
                                     args.blocks)
            )
            log(json.dumps(rows[-1]))
    log("reconciliation at QBER 0.03 without a prior estimate ...")
    rows.append(bench_reconciliation(None, 0.03, frames, args.n, args.seed + 99))
    log(json.dumps(rows[-1]))
    document["reconciliation"] = rows
    document["load_average_after"] = os.getloadavg()
    json.dump(document, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
