"""The whole chain on one link: sifted bits to final key (dsp.distill.distill_local).

Prints one JSON document: for each block size, a link of ``--blocks`` consecutive blocks (fresh
bits each, QBER about 2 %) that share one :class:`~qkdnode.dsp.reconcile.ReconcileHistory`:

* ``first_block``: the link's first block (no history: pilot frames find the code's
  thresholds);
* ``steady_state``: the blocks after it (each starts its frames where earlier blocks' frames
  decoded), their mean and every block.

For each block: the sifted-input throughput of the whole chain (target: >= 5 Mbit/s on the
2-core machine), wall and CPU time (process time, all threads; the machine is shared, so CPU
time is the steadier figure; the load average is printed beside them), the time of every stage
measured inside that very run, the reconciliation efficiency f (disclosed bits / (kept bits x
h(their QBER))), rounds and decoder iterations per frame, and the final key length with its
ratio to what the Lim et al. model predicts for the same counts with f_EC = 1.16.

Stages (timed by wrapping the functions distill_local calls):
  reconciliation   reconcile_local; within it, decoder = the parallel decoder calls
                   (decode_syndromes: numba kernels and their wrapper), the rest is frame
                   planning, syndromes, messages and verification
  estimation       finite_key_length with the leakage reconciliation caused
  privacy          toeplitz_hash_pair: both ends' kept bits (equal after verification, so
                   hashed once on two threads, as one node hashes its own)
  sifting          dsp.sifting.sift on the detections that give a block's sifted X bits, once
                   per size (before the chain proper, which starts at sifted bits; for scale)

The block's counts are the expected counts of a 25 km Fig. 1 link whose afterpulse probability
is lowered to 3 % so the X-basis error rate is about 2 %. ``--start-quantile`` is
reconcile_local's speed/efficiency knob (default: the library's, efficiency first).

    python benchmarks/bench_chain.py [--bits 1000000 4000000] [--blocks 4] [--start-quantile Q]
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

import qkdnode.dsp.distill as distill_module
import qkdnode.dsp.reconcile.local as reconcile_module
from qkdnode.dsp.distill import distill_local
from qkdnode.dsp.estimation import DecoyCounts, LinkModel, binary_entropy, optimize_decoy
from qkdnode.dsp.reconcile import START_QUANTILE, ReconcileHistory
from qkdnode.dsp.sifting import AliceChoices, pattern_of, sift


@functools.lru_cache(maxsize=4)
def _link(n_bits: int) -> tuple[Any, ...]:
    """The link's counts and decoy parameters for blocks of ``n_bits`` (its expected counts)."""
    link = LinkModel(25.0, afterpulse_probability=0.03)
    best = optimize_decoy(link, n_bits)
    expected = link.expected_counts_per_pulse(best.params).scaled(
        link.pulses_for(best.params, n_bits)
    )
    counts = DecoyCounts(
        *(tuple(float(round(x)) for x in t) for t in (expected.n_x, expected.n_z, expected.m_z))
    )
    mu = (best.mu1, best.mu2, link.mu3)
    p = (best.p_mu1, best.p_mu2, 1.0 - best.p_mu1 - best.p_mu2)
    return counts, mu, p, best


def _block(n_bits: int, seed: int) -> tuple[Any, ...]:
    """One block: fresh bits (seeded) with the link's QBER, and the link's counts."""
    counts, mu, p, best = _link(n_bits)
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n_bits, dtype=np.uint8)
    bob = alice ^ (rng.random(n_bits) < best.key.qber_x).astype(np.uint8)
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


def _sifting(n_bits: int) -> dict[str, Any]:
    """Sifting of the detections behind a block of ``n_bits`` sifted X bits, timed."""
    choices, slots, patterns, rand = _sifting_inputs(n_bits, _link(n_bits)[3].q_x, 5)
    sifted, wall, cpu = _timed(lambda: sift(choices, slots, patterns, random_bits=rand))
    return {"wall_s": wall, "cpu_s": cpu, "detections": int(slots.size),
            "sifted_x_bits": int(sifted.x_alice.size)}


class _Stages:
    """Wall and CPU time of every call of the wrapped functions (and decoder iterations)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.iterations = 0
        self.calls = 0

    def clear(self) -> None:
        self.times = {}
        self.iterations = 0
        self.calls = 0

    def wrap(self, module: Any, name: str, stage: str) -> None:
        inner = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            c0, t0 = time.process_time(), time.perf_counter()
            out = inner(*args, **kwargs)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            total = self.times.setdefault(stage, [0.0, 0.0])
            total[0] += wall
            total[1] += cpu
            if stage == "decoder":
                self.iterations += int(out.iterations.sum())
                self.calls += 1
            return out

        setattr(module, name, timed)


def _run_block(stages: _Stages, data: tuple[Any, ...], history: ReconcileHistory,
               quantile: float, seed: int) -> dict[str, Any]:
    alice, bob, counts, mu, p, best = data
    stages.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    result = distill_local(alice, bob, counts, mu, p, kappa=1e-15,
                           rng=np.random.default_rng(seed), history=history,
                           start_quantile=quantile)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    report = result.reconciliation
    kept = report.kept
    kept_bits = int(kept.sum())
    qber = float(np.count_nonzero(alice[kept] != bob[kept]) / max(kept_bits, 1))
    f = report.disclosed_bits / (kept_bits * binary_entropy(qber)) if kept_bits else None
    frames = report.frames_attempted
    times = stages.times
    rec = times.get("reconciliation", [0.0, 0.0])
    dec = times.get("decoder", [0.0, 0.0])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "throughput_mbit_s": alice.size / wall / 1e6,
        "throughput_mbit_per_cpu_s": alice.size / cpu / 1e6,
        "qber": result.qber,
        "f": f,
        "frames": frames,
        "frames_discarded": report.frames_discarded,
        "code": report.frames[0].code_name if report.frames else None,
        "rounds_per_frame": sum(o.rounds for o in report.frames) / max(frames, 1),
        "iterations_per_frame": stages.iterations / max(frames, 1),
        "decoder_calls": stages.calls,
        "final_key_bits": result.length,
        "key_ratio_to_model": result.length / best.key.ell if best.key.ell else None,
        "keys_identical": bool(np.array_equal(result.key_alice, result.key_bob)),
        "stages": {
            "reconciliation": {"wall_s": rec[0], "cpu_s": rec[1]},
            "decoder": {"wall_s": dec[0], "cpu_s": dec[1]},
            "reconciliation_outside_decoder": {"wall_s": rec[0] - dec[0],
                                               "cpu_s": rec[1] - dec[1]},
            **{name: {"wall_s": t[0], "cpu_s": t[1]} for name, t in times.items()
               if name not in ("reconciliation", "decoder")},
        },
    }


_MEANS = ("wall_s", "cpu_s", "f", "rounds_per_frame", "iterations_per_frame",
          "key_ratio_to_model")


def _steady(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    if not blocks:
        return {}
    n_bits = blocks[0]["sifted_bits"]
    out: dict[str, Any] = {
        f"mean_{k}": float(np.mean([b[k] for b in blocks if b[k] is not None])) for k in _MEANS
    }
    out["throughput_mbit_s"] = n_bits * len(blocks) / sum(b["wall_s"] for b in blocks) / 1e6
    out["throughput_mbit_per_cpu_s"] = (
        n_bits * len(blocks) / sum(b["cpu_s"] for b in blocks) / 1e6
    )
    out["frames_discarded"] = sum(b["frames_discarded"] for b in blocks)
    out["mean_stage_cpu_s"] = {
        name: float(np.mean([b["stages"][name]["cpu_s"] for b in blocks]))
        for name in blocks[0]["stages"]
    }
    out["blocks"] = blocks
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--blocks", type=int, default=4,
                        help="blocks per link: the first, then the steady state")
    parser.add_argument("--start-quantile", type=float, default=START_QUANTILE)
    args = parser.parse_args()
    if args.blocks < 2:
        parser.error("--blocks must be at least 2 (the first block and one more)")

    # Warm the numba caches so compilation is not timed (also the four-step FFT's kernels).
    warm = _block(300_000, 0)
    distill_local(*warm[:5], kappa=1e-15, rng=np.random.default_rng(0))

    stages = _Stages()
    stages.wrap(distill_module, "reconcile_local", "reconciliation")
    stages.wrap(reconcile_module, "decode_syndromes", "decoder")
    stages.wrap(distill_module, "finite_key_length", "estimation")
    stages.wrap(distill_module, "toeplitz_hash_pair", "privacy_amplification")

    load_start = os.getloadavg()
    results = []
    for n_bits in args.bits:
        history = ReconcileHistory()
        blocks = []
        for k in range(args.blocks):
            print(f"chain: {n_bits} bits, block {k + 1}", file=sys.stderr, flush=True)
            data = _block(n_bits, 1 + k)
            block = {"sifted_bits": n_bits, "block": k,
                     **_run_block(stages, data, history, args.start_quantile, k)}
            block["model_key_bits_f_1_16"] = data[5].key.ell
            blocks.append(block)
        results.append({
            "sifted_bits": n_bits,
            "start_quantile": args.start_quantile,
            "target_mbit_s": 5.0,
            "first_block": blocks[0],
            "steady_state": _steady(blocks[1:]),
            "sifting_once": _sifting(n_bits),
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
