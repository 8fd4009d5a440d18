"""Benchmark of the LDPC syndrome decoder alone: speed per edge, frame errors and f, and peers.

Prints one JSON document on stdout (progress on stderr). Parts:

* ``operating_points``: frames of a shipped code at QBER 2 % (default the rate-0.85 code of the
  64 000-bit family, the one the 2 % target was set on), shortened (known zeros spread evenly)
  so that the full syndrome is ``f`` times Slepian-Wolf, for a few ``f``; decoded in one batch on
  all cores by each of our variants: sum-product, sum-product-taylor (exact messages for the
  two weakest inputs of each check, a second-order expansion of phi for the others),
  sum-product-fast (the default: taylor with the weakest inputs found by value, phi clamped
  at 30, fused multiply-adds), the latter two with the stall rule, and normalised min-sum. Per
  variant: frame error rate (the decode must converge *and* equal Alice's word), mean
  iterations, wall and CPU seconds, ns of CPU per edge-iteration, and throughput of payload
  (sifted key) bits per wall and per CPU second.
* ``wrapper``: CPU per frame of a call that runs no iteration (argument checks, LLR clipping,
  message permutation, the syndrome check) next to one that runs a single iteration.
* ``blind``: :func:`qkdnode.dsp.reconcile.reconcile_local` end to end at QBER 2 % (blind rounds
  with warm starts), as shipped and with each decoder variant swapped in (the reconcile package
  has no decoder options of its own yet): f, frame errors, rounds and decoder iterations per
  frame, CPU and wall time.
* ``peer_ldpc``: the PyPI ``ldpc`` package's ``BpDecoder`` (sum-product and min-sum, serial
  schedule, one core) on the same matrix and the same frames at the middle ``f``. ``ldpc`` is
  not a dependency (``pip install ldpc``); if it cannot be imported the JSON says so.

Every timing carries wall seconds and the process's CPU seconds (all threads), and the document
records the load average before and after: the machine is shared, so wall time alone says little.

Usage::

    python benchmarks/bench_decoder.py [--frames 16] [--rate 0.85] [--n 64000] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import qkdnode.dsp.reconcile.local as reconcile_local_module
from qkdnode.dsp.estimation import binary_entropy
from qkdnode.dsp.ldpc.codes import LdpcCode, get_code, syndrome
from qkdnode.dsp.ldpc.decoder import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_SCALE,
    LLR_LIMIT,
    NARROW_QC_Z,
    decode_syndromes,
)
from qkdnode.dsp.reconcile import reconcile_local

QBER = 0.02
EFFICIENCIES = (1.08, 1.10, 1.12, 1.16)
# Stall rule of the "stall" variant: 3 iterations without a new low of unsatisfied checks (2
# already keeps f within 0.002 in blind reconciliation; 3 leaves a margin).
STALL_ITERATIONS = 3
VARIANTS: dict[str, dict[str, Any]] = {
    "sum-product": {"algorithm": "sum-product"},
    "sum-product-taylor": {"algorithm": "sum-product-taylor"},
    "sum-product-taylor-stall": {
        "algorithm": "sum-product-taylor", "stall_iterations": STALL_ITERATIONS
    },
    "sum-product-fast": {"algorithm": "sum-product-fast"},
    "sum-product-fast-stall": {
        "algorithm": "sum-product-fast", "stall_iterations": STALL_ITERATIONS
    },
    "min-sum": {"algorithm": "min-sum"},
}
# Decoders swapped into reconcile_local (the reconcile package has no knob for them yet).
BLIND_VARIANTS: dict[str, dict[str, Any]] = {
    "as_shipped": {},
    "sum-product": {"algorithm": "sum-product"},
    "sum-product-taylor": {"algorithm": "sum-product-taylor"},
    "sum-product-taylor-stall": VARIANTS["sum-product-taylor-stall"],
    "sum-product-fast": VARIANTS["sum-product-fast"],
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def shortened_frames(
    code: LdpcCode, efficiency: float, frames: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Frames whose full syndrome is ``efficiency`` times Slepian-Wolf at ``QBER``."""
    h = binary_entropy(QBER)
    payload = min(code.n, int(code.m / (efficiency * h)))
    known = (np.arange(code.n - payload) * code.n) // max(code.n - payload, 1)
    is_payload = np.ones(code.n, dtype=bool)
    is_payload[known] = False
    alice = (rng.integers(0, 2, (frames, code.n), dtype=np.uint8) * is_payload).astype(np.uint8)
    errors = (rng.random((frames, code.n)) < QBER) & is_payload
    bob = (alice ^ errors).astype(np.uint8)
    magnitude = np.log((1 - QBER) / QBER)
    llrs = np.where(bob == 0, magnitude, -magnitude).astype(np.float32)
    llrs[:, known] = LLR_LIMIT
    return {
        "alice": alice,
        "bob": bob,
        "is_payload": is_payload,
        "payload": payload,
        "syndromes": np.stack([syndrome(code, a) for a in alice]),
        "llrs": llrs,
        "efficiency": code.m / (payload * h),
    }


def bench_point(code: LdpcCode, data: dict[str, Any]) -> dict[str, Any]:
    frames = data["alice"].shape[0]
    payload = data["payload"]
    out: dict[str, Any] = {
        "efficiency_of_full_syndrome": data["efficiency"],
        "payload_bits_per_frame": payload,
        "frames": frames,
    }
    for name, options in VARIANTS.items():
        result, wall, cpu = _timed(
            lambda options=options: decode_syndromes(  # type: ignore[misc]
                code, data["syndromes"], data["llrs"], DEFAULT_MAX_ITERATIONS, **options
            )
        )
        ok = (result.bits == data["alice"]).all(axis=1) & result.converged
        iterations = int(result.iterations.sum())
        out[name] = {
            "fer": float(1 - ok.mean()),
            "mean_iterations": float(result.iterations.mean()),
            "seconds": wall,
            "cpu_seconds": cpu,
            "ns_cpu_per_edge_iteration": cpu / max(iterations, 1) / code.n_edges * 1e9,
            "throughput_mbit_s": frames * payload / wall / 1e6,
            "throughput_mbit_per_cpu_s": frames * payload / cpu / 1e6,
        }
        log(f"  {name}: {out[name]}")
    return out


def bench_wrapper(code: LdpcCode, data: dict[str, Any]) -> dict[str, Any]:
    frames = data["alice"].shape[0]
    messages = np.zeros((frames, code.n_edges), dtype=np.float32)
    out = {}
    for iterations in (0, 1):
        _, wall, cpu = _timed(
            lambda iterations=iterations: decode_syndromes(  # type: ignore[misc]
                code, data["syndromes"], data["llrs"], iterations, messages=messages
            )
        )
        out[f"max_iterations_{iterations}"] = {
            "ms_cpu_per_frame": cpu / frames * 1e3,
            "ms_wall_per_frame": wall / frames * 1e3,
        }
    return out


def bench_blind(bits: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, bits, dtype=np.uint8)
    bob = alice ^ (rng.random(bits) < QBER).astype(np.uint8)
    out: dict[str, Any] = {"qber": QBER, "bits": bits}
    # Compile or load every numba kernel of the chain outside the timings.
    reconcile_local(alice[:20_000], bob[:20_000], QBER, rng=np.random.default_rng(seed))
    shipped = reconcile_local_module.decode_syndromes
    for label, options in BLIND_VARIANTS.items():
        counts = {"rounds": 0, "iterations": 0, "decoder_cpu": 0.0}

        def counting(
            *args: Any, options: dict[str, Any] = options, counts: dict[str, Any] = counts,
            **kwargs: Any,
        ) -> Any:
            decode = functools.partial(shipped, **options)
            result, _, cpu = _timed(lambda: decode(*args, **kwargs))
            counts["rounds"] += len(result.iterations)
            counts["iterations"] += int(result.iterations.sum())
            counts["decoder_cpu"] += cpu
            return result

        reconcile_local_module.decode_syndromes = counting  # type: ignore[assignment]
        try:
            report, wall, cpu = _timed(
                lambda: reconcile_local(alice, bob, QBER, rng=np.random.default_rng(seed + 1))
            )
        finally:
            reconcile_local_module.decode_syndromes = shipped
        kept = report.kept
        actual = float((alice != bob)[kept].mean()) if kept.any() else float("nan")
        frames = max(report.frames_attempted, 1)
        out[label] = {
            "codes": sorted({f.code_name for f in report.frames}),
            "frames": report.frames_attempted,
            "frames_discarded": report.frames_discarded,
            "efficiency_f": report.disclosed_bits / (kept.sum() * binary_entropy(actual)),
            "kept_bits_equal_alice": bool(np.array_equal(report.corrected[kept], alice[kept])),
            "rounds_per_frame": counts["rounds"] / frames,
            "iterations_per_frame": counts["iterations"] / frames,
            "decoder_cpu_seconds": counts["decoder_cpu"],
            "seconds": wall,
            "cpu_seconds": cpu,
            "throughput_mbit_s": bits / wall / 1e6,
            "throughput_mbit_per_cpu_s": bits / cpu / 1e6,
        }
        log(f"  blind {label}: {out[label]}")
    return out


def bench_peer(code: LdpcCode, data: dict[str, Any], frames: int) -> dict[str, Any]:
    try:
        import ldpc
        from ldpc import BpDecoder
    except ImportError as error:  # not a dependency: installed by the benchmark instructions
        return {"available": False, "reason": f"cannot import ldpc: {error}"}
    out: dict[str, Any] = {"available": True, "version": getattr(ldpc, "__version__", "?")}
    alice, bob, payload = data["alice"][:frames], data["bob"][:frames], data["payload"]
    # ldpc decodes an error pattern from its syndrome: s_e = s_alice ^ H bob; bob ^ e = alice.
    error_syndromes = [data["syndromes"][k] ^ syndrome(code, bob[k]) for k in range(frames)]
    channel = np.where(data["is_payload"], QBER, 1e-12)  # known bits: as our LLR_LIMIT
    for method, label in (("product_sum", "product_sum_serial"), ("minimum_sum", "min_sum_serial")):
        decoder = BpDecoder(
            code.H.astype(np.uint8), error_channel=channel, max_iter=DEFAULT_MAX_ITERATIONS,
            bp_method=method, schedule="serial",
            ms_scaling_factor=DEFAULT_SCALE if method == "minimum_sum" else 1.0,
        )
        ok = 0
        iterations = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for k in range(frames):
            error = decoder.decode(error_syndromes[k])
            ok += int(np.array_equal(bob[k] ^ error.astype(np.uint8), alice[k]))
            iterations += int(decoder.iter)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[label] = {
            "threads": 1,
            "frames": frames,
            "fer": 1 - ok / frames,
            "mean_iterations": iterations / frames,
            "seconds": wall,
            "cpu_seconds": cpu,
            "ns_cpu_per_edge_iteration": cpu / max(iterations, 1) / code.n_edges * 1e9,
            "throughput_mbit_s": frames * payload / wall / 1e6,
            "throughput_mbit_per_cpu_s": frames * payload / cpu / 1e6,
        }
        log(f"  peer ldpc {label}: {out[label]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per operating point")
    parser.add_argument("--rate", type=float, default=0.85, help="rate of the shipped code")
    parser.add_argument("--n", type=int, default=64000, help="frame length of the family")
    parser.add_argument("--blind-bits", type=int, default=2_000_000)
    parser.add_argument("--peer-frames", type=int, default=1, help="frames for the slow peer")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="few frames (smoke run)")
    args = parser.parse_args()
    frames = 2 if args.quick else args.frames
    blind_bits = 200_000 if args.quick else args.blind_bits
    peer_frames = 1 if args.quick else args.peer_frames
    efficiencies = EFFICIENCIES[1:2] if args.quick else EFFICIENCIES

    document: dict[str, Any] = {
        "benchmark": "decoder",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "numpy": np.__version__,
        "load_average_before": os.getloadavg(),
        "qber": QBER,
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "throughput_counts": "payload (sifted key) bits per second",
    }
    code = get_code(args.rate, n=args.n)
    document["code"] = {"name": code.name, "n": code.n, "m": code.m, "edges": code.n_edges}
    if code.qc is not None:  # which QC kernel the decoder picks for this lifting
        document["code"]["z"] = code.qc.z
        document["code"]["qc_kernel"] = "narrow" if code.qc.z < NARROW_QC_Z else "wide"
    rng = np.random.default_rng(args.seed)
    warm = shortened_frames(code, EFFICIENCIES[-1], 2, rng)
    for options in VARIANTS.values():  # compile or load the numba cache outside the timings
        decode_syndromes(code, warm["syndromes"], warm["llrs"], 2, **options)
    points = []
    middle: dict[str, Any] | None = None
    for efficiency in efficiencies:
        log(f"operating point f = {efficiency} ...")
        data = shortened_frames(code, efficiency, frames, rng)
        points.append(bench_point(code, data))
        if efficiency == 1.10:
            middle = data
    document["operating_points"] = points
    assert middle is not None
    document["wrapper"] = bench_wrapper(code, middle)
    log("blind reconciliation ...")
    document["blind"] = bench_blind(blind_bits, args.seed + 7)
    log("peer ldpc ...")
    document["peer_ldpc"] = bench_peer(code, middle, peer_frames)
    document["load_average_after"] = os.getloadavg()
    json.dump(document, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
