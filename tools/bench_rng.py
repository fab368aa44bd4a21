"""Time CaffeRNG against numpy's own Generator for VGG-16's parameter count.

Usage: PYTHONPATH=. python tools/bench_rng.py [--n N] [--repeat R] [--only NAME ...]

Every run is a fresh child process, so its peak memory (ru_maxrss) is its own; the cases
take turns (R rounds) so that each meets the same machine conditions as the numpy call it
is compared with.  The table shows the best and median wall time, ns per sample (best),
the ratio of bests to numpy's matching float32 call, the peak resident memory, and how
far that peak exceeds the output array (beyond the interpreter and numpy themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VGG16_PARAMS = 138_357_544

CASES = {
    "numpy.random": ("numpy", "uniform"),
    "MT19937 words only": ("words", "uniform"),     # the floor under CaffeRNG: its engine
    "CaffeRNG.uniform": ("caffe", "uniform"),
    "FastRNG.uniform": ("fast", "uniform"),
    "numpy.standard_normal": ("numpy", "gaussian"),
    "CaffeRNG.gaussian": ("caffe", "gaussian"),
    "FastRNG.gaussian": ("fast", "gaussian"),
}


def run_case(name, n, repeat):
    """Run one case in this process; returns a dict of timings and memory."""
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from fillers.rng import CaffeRNG, FastRNG

    kind, dist = CASES[name]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for r in range(repeat):
        if kind == "words":
            g = np.random.Generator(np.random.MT19937(1701 + r))
            t = time.perf_counter()
            out = g.integers(0, 1 << 32, size=n, dtype=np.uint32).view(np.float32)
        elif kind == "numpy":
            g = np.random.Generator(np.random.PCG64(1701 + r))
            t = time.perf_counter()
            out = g.random(n, dtype=np.float32) if dist == "uniform" else g.standard_normal(n, dtype=np.float32)
        else:
            s = CaffeRNG(1701 + r) if kind == "caffe" else FastRNG(1701 + r)
            t = time.perf_counter()
            out = s.uniform(n, -0.05, 0.05) if dist == "uniform" else s.gaussian(n, 0.0, 0.01)
        times.append(time.perf_counter() - t)
        assert out.dtype == np.float32 and out.size == n
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"name": name, "best": min(times), "times": times,
            "peak_mb": peak / 1024.0, "base_mb": base_rss / 1024.0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=VGG16_PARAMS, help="samples per call (default: VGG-16's %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args.n, args.repeat)))
        return 0
    names = args.only or list(CASES)
    results = {}
    # round robin, one fresh process per run: the machine's speed drifts, and each
    # case should see the same conditions as the numpy call it is compared with
    for r in range(args.repeat):
        for name in names:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                                   "--n", str(args.n), "--repeat", "1"],
                                  capture_output=True, text=True, check=True)
            one = json.loads(proc.stdout.strip().splitlines()[-1])
            acc = results.setdefault(name, {"times": [], "peak_mb": 0.0, "over_mb": 0.0})
            acc["times"] += one["times"]
            acc["peak_mb"] = max(acc["peak_mb"], one["peak_mb"])
            acc["over_mb"] = max(acc["over_mb"], one["peak_mb"] - one["base_mb"])
    for acc in results.values():
        acc["best"] = min(acc["times"])
        acc["median"] = sorted(acc["times"])[len(acc["times"]) // 2]
    out_mb = args.n * 4 / 2 ** 20
    print(f"{args.n:,} float32 samples (output {out_mb:,.0f} MiB), best of {args.repeat}, "
          f"{os.cpu_count()} CPU(s)")
    print(f"{'case':24s} {'best s':>7s} {'median s':>9s} {'ns/sample':>10s} {'vs numpy':>9s} "
          f"{'peak MiB':>9s} {'over output':>12s}")
    for name in names:
        r = results[name]
        ref = "numpy.random" if CASES[name][1] == "uniform" else "numpy.standard_normal"
        ratio = r["best"] / results[ref]["best"] if ref in results else float("nan")
        print(f"{name:24s} {r['best']:7.2f} {r['median']:9.2f} {r['best'] / args.n * 1e9:10.2f} "
              f"{ratio:9.2f} {r['peak_mb']:9.0f} {r['over_mb'] - out_mb:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
