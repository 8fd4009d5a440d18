"""Toeplitz privacy amplification: qkdnode.dsp.privacy against peers, side by side, in one run.

Prints one JSON document to stdout (progress goes to stderr). Every measurement runs in its own
child process, so that its peak RSS is its own; all implementations get identical inputs and
their outputs are cross-checked (SHA-256 of the output bits).

Implementations:
  qkdnode            toeplitz_hash(x, seed, m)                      (seed FFT computed per call)
  qkdnode_2threads   toeplitz_hash(x, seed, m, workers=2)            (FFT passes on 2 threads)
  qkdnode_reuse      ToeplitzHasher(seed, n, m)(x)                  (seed spectra prepared once)
  scipy_plain        the straightforward product: rfft of zero-padded x and seed at the full
                     linear length, multiply, irfft, round, mod 2, slice (implemented here)
  cryptomite         cryptomite.Toeplitz(n, m).extract(...)          (pip install cryptomite;
                     benchmark only, its licence forbids commercial use)

Usage: python benchmarks/bench_privacy.py [--sizes 1e6,1e7,1e8] [--repeats 3] [--peer-max 1e7]
       [--impls qkdnode,qkdnode_2threads,scipy_plain] [--malloc-tuned] [--stages]

--stages adds, per size, where one single-threaded toeplitz_hash spends its time: the passes of
its four-step FFTs timed one by one (best CPU and wall milliseconds of --repeats, in a child
process), next to the whole call.

On a shared machine compare CPU seconds (``best_cpu_seconds``, all threads of the child) and read
the load averages recorded around every measurement: wall seconds of the two-thread run mean
little when other processes hold the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

IMPLS = ("qkdnode", "qkdnode_2threads", "qkdnode_reuse", "scipy_plain", "cryptomite")


def make_inputs(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20_261_122 + n)
    return (
        rng.integers(0, 2, n, dtype=np.uint8),
        rng.integers(0, 2, n + m - 1, dtype=np.uint8),
    )


def scipy_plain(x: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """The textbook FFT Toeplitz product (one bit per FFT point, full linear length)."""
    import scipy.fft

    n = x.size
    length = scipy.fft.next_fast_len(n + seed.size - 1, real=True)
    spec_x = scipy.fft.rfft(x.astype(np.float64), length)
    spec_s = scipy.fft.rfft(seed.astype(np.float64), length)
    conv = scipy.fft.irfft(spec_x * spec_s, length)
    return (np.rint(conv[n - 1 : n - 1 + m]).astype(np.int64) % 2).astype(np.uint8)


def run_child(impl: str, n: int, m: int, repeats: int) -> dict[str, Any]:
    x, seed = make_inputs(n, m)
    if impl == "qkdnode":
        from qkdnode.dsp.privacy import toeplitz_hash

        toeplitz_hash(x[:1000], seed[: 1000 + 499], 500)  # numba compile/cache load

        def fn() -> np.ndarray:
            return toeplitz_hash(x, seed, m)

    elif impl == "qkdnode_2threads":
        from qkdnode.dsp.privacy import toeplitz_hash

        toeplitz_hash(x[:1000], seed[: 1000 + 499], 500, workers=2)

        def fn() -> np.ndarray:
            return toeplitz_hash(x, seed, m, workers=2)

    elif impl == "qkdnode_reuse":
        from qkdnode.dsp.privacy import ToeplitzHasher

        t0 = time.perf_counter()
        hasher = ToeplitzHasher(seed, n, m)
        prepare = time.perf_counter() - t0

        def fn() -> np.ndarray:
            return hasher(x)

    elif impl == "scipy_plain":

        def fn() -> np.ndarray:
            return scipy_plain(x, seed, m)

    elif impl == "cryptomite":
        from cryptomite import Toeplitz

        ext = Toeplitz(n, m)
        # cryptomite's second input is our seed rotated: see the mapping in the README section.
        in2 = np.concatenate((seed[n - 1 : n - 1 + m], seed[: n - 1])).tolist()
        in1 = x.tolist()

        def fn() -> np.ndarray:
            return np.asarray(ext.extract(in1, in2), dtype=np.uint8)

    else:
        raise ValueError(impl)
    times = []
    cpu = []
    out = None
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert out is not None
    result: dict[str, Any] = {
        "seconds": [round(t, 4) for t in times],
        "best_seconds": round(min(times), 4),
        "mbit_per_s": round(n / min(times) / 1e6, 2),
        # CPU time of the process (all threads): less sensitive to other load on the machine.
        "best_cpu_seconds": round(min(cpu), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_sha256": hashlib.sha256(np.ascontiguousarray(out, dtype=np.uint8)).hexdigest(),
    }
    if impl == "qkdnode_reuse":
        result["prepare_seconds"] = round(prepare, 4)
    return result


def stage_profile(n: int, m: int, repeats: int) -> dict[str, Any]:
    """Best CPU / wall ms of each pass of one single-threaded hash (the code path of qkdnode)."""
    from qkdnode.dsp import fourstep, privacy

    x, seed = make_inputs(n, m)
    fft_len, m_top, shift = privacy._plan_operand(n, m, seed, int(np.count_nonzero(x)))
    if fft_len < fourstep.MIN_LENGTH:
        return {"skipped": f"{fft_len} FFT points: one 1-D numpy.fft transform, no stages"}
    plan = fourstep.FourStepFFT(fft_len)
    n1, n2 = plan.n1, plan.n2
    row_x, row_s = np.empty(fft_len), np.empty(fft_len)
    spec_x = np.empty(plan.spectrum_shape, dtype=np.complex128)
    spec_s = np.empty_like(spec_x)
    out = np.empty(m, dtype=np.uint8)
    block = fourstep.TWIDDLE_BLOCK

    def twiddle(spec: np.ndarray, inverse: bool) -> None:
        fourstep.twiddle_kernel(spec, fft_len, plan.lo_bits, plan.lo, plan.hi, inverse, 0, block)

    def fill_x() -> None:
        row_x[:n] = x
        row_x[n:] = 0.0

    def fill_seed() -> None:
        if m_top == m:
            row_s[: seed.size] = seed
            row_s[seed.size :] = 0.0
        else:
            privacy.pack_seed_kernel(seed, n + m_top - 1, m_top, float(2**shift), row_s)

    def round_parities() -> None:
        if m_top == m:
            privacy.round_parity_kernel(row_x, n - 1, out)
        else:
            privacy.round_split_kernel(row_x, n - 1, shift, out[:m_top], out[m_top:])

    # In pipeline order; each stage leaves the arrays as the next one expects them.
    stages: list[tuple[str, Any]] = [
        ("fill_x", fill_x),
        ("fill_seed" if m_top == m else "pack_seed", fill_seed),
        ("column_rfft_x", lambda: np.fft.rfft(row_x.reshape(n1, n2), axis=0, out=spec_x)),
        ("column_rfft_seed", lambda: np.fft.rfft(row_s.reshape(n1, n2), axis=0, out=spec_s)),
        ("twiddle_x", lambda: twiddle(spec_x, False)),
        ("twiddle_seed", lambda: twiddle(spec_s, False)),
        ("row_fft_x", lambda: np.fft.fft(spec_x, axis=1, out=spec_x)),
        ("row_fft_seed", lambda: np.fft.fft(spec_s, axis=1, out=spec_s)),
        ("multiply", lambda: np.multiply(spec_x, spec_s, out=spec_x)),
        ("row_ifft", lambda: np.fft.ifft(spec_x, axis=1, out=spec_x)),
        ("twiddle_inverse", lambda: twiddle(spec_x, True)),
        ("column_irfft", lambda: np.fft.irfft(spec_x, n=n1, axis=0, out=row_x.reshape(n1, n2))),
        ("round_parities", round_parities),
    ]
    best: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, run in stages:
            c0 = time.process_time()
            t0 = time.perf_counter()
            run()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            b = best.setdefault(name, [wall, cpu])
            b[0], b[1] = min(b[0], wall), min(b[1], cpu)
    staged = np.array(out)
    privacy.toeplitz_hash(x, seed, m)  # warm
    whole = [math.inf, math.inf]
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        ref = privacy.toeplitz_hash(x, seed, m)
        whole = [min(whole[0], time.perf_counter() - t0), min(whole[1], time.process_time() - c0)]
    if not np.array_equal(staged, ref):
        raise AssertionError("the staged passes do not reproduce toeplitz_hash")
    return {
        "fft_len": fft_len,
        "n1_n2": [n1, n2],
        "packed": m_top < m,
        "stages_ms": {k: {"wall": round(v[0] * 1e3, 2), "cpu": round(v[1] * 1e3, 2)}
                      for k, v in best.items()},
        "sum_of_stages_cpu_ms": round(sum(v[1] for v in best.values()) * 1e3, 1),
        "whole_call_ms": {"wall": round(whole[0] * 1e3, 1), "cpu": round(whole[1] * 1e3, 1)},
    }


# glibc hands every allocation above its mmap threshold (at most 32 MiB by default) back to the
# kernel when freed, so each large FFT buffer is paid again in page faults. --malloc-tuned raises
# the threshold for the children (all implementations alike): the tuning a node process can use.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def measure(impl: str, n: int, m: int, repeats: int, env: dict[str, str]) -> dict[str, Any]:
    if impl == "cryptomite":
        try:
            import cryptomite  # noqa: F401
        except ImportError as exc:
            return {"available": False, "reason": f"cannot import cryptomite: {exc}"}
    cmd = [sys.executable, __file__, "--child", impl, str(n), str(m), str(repeats)]
    print(f"  {impl} n={n:.0e} ...", file=sys.stderr, flush=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        return {"available": True, "failed": proc.stderr.strip().splitlines()[-3:]}
    res: dict[str, Any] = json.loads(proc.stdout)
    if "best_seconds" in res:
        print(f"    {res['best_seconds']} s wall, {res['best_cpu_seconds']} s CPU, "
              f"{res['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    load = {"load_avg_before": load_before,
            "load_avg_after": [round(v, 2) for v in os.getloadavg()]}
    return {"available": True, **res, **load}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--peer-max", type=float, default=1e7, help="largest n for scipy_plain and cryptomite"
    )
    ap.add_argument(
        "--malloc-tuned", action="store_true", help="run all children with MALLOC_TUNING"
    )
    ap.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated subset of {', '.join(IMPLS)}"
    )
    ap.add_argument(
        "--stages", action="store_true", help="also time the passes of one hash, per size"
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, n, m, repeats = args.child
        if impl == "stages":
            print(json.dumps(stage_profile(int(n), int(m), int(repeats))))
        else:
            print(json.dumps(run_child(impl, int(n), int(m), int(repeats))))
        return

    doc: dict[str, Any] = {
        "benchmark": "toeplitz_hash, m = n/2, random 0/1 input and seed",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "malloc_env": MALLOC_TUNING if args.malloc_tuned else "default",
        "results": {},
    }
    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, scipy.fft, numba, numpy; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    doc["machine"]["interpreter_rss_mib"] = round(int(baseline.stdout) / 1024, 1)
    env = dict(os.environ, **MALLOC_TUNING) if args.malloc_tuned else dict(os.environ)
    impls = [i for i in args.impls.split(",") if i]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        ap.error(f"unknown --impls {', '.join(unknown)} (known: {', '.join(IMPLS)})")
    for size in args.sizes.split(","):
        n = int(float(size))
        m = n // 2
        print(f"n = {n}", file=sys.stderr, flush=True)
        row: dict[str, Any] = {"n": n, "m": m}
        for impl in impls:
            if impl in ("scipy_plain", "cryptomite") and n > args.peer_max:
                row[impl] = {
                    "available": True,
                    "skipped": f"n > --peer-max {args.peer_max:.0e} (memory/time); "
                    "pass a larger --peer-max to run it",
                }
                continue
            repeats = args.repeats if n < 10**8 else 1
            row[impl] = measure(impl, n, m, repeats, env)
        if args.stages:
            row["stages"] = measure("stages", n, m, args.repeats, env)
        digests = {
            k: v["output_sha256"]
            for k, v in row.items()
            if isinstance(v, dict) and "output_sha256" in v
        }
        row["outputs_agree"] = len(set(digests.values())) == 1
        for mine, tag in (("qkdnode", ""), ("qkdnode_2threads", "2threads_")):
            ours = row.get(mine, {}).get("best_seconds")
            ours_cpu = row.get(mine, {}).get("best_cpu_seconds")
            for peer in ("scipy_plain", "cryptomite"):
                theirs = row.get(peer, {}).get("best_seconds")
                if ours and theirs:
                    row[f"{tag}speedup_vs_{peer}"] = round(theirs / ours, 2)
                theirs_cpu = row.get(peer, {}).get("best_cpu_seconds")
                if ours_cpu and theirs_cpu:
                    # CPU time: steadier than wall time on a shared machine.
                    row[f"{tag}cpu_speedup_vs_{peer}"] = round(theirs_cpu / ours_cpu, 2)
        doc["results"][str(n)] = row
    doc["machine"]["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
