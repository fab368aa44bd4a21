#!/usr/bin/env python3
"""Benchmark: whole-process time and peak memory of ``fill-net`` on VGG-16.

For ``--filler xavier`` and ``--filler msra``, with ``--rng fast`` and ``--rng caffe``,
next to the floor: a process that only imports numpy, draws the same number of float32
samples blob by blob (``Generator.random`` / ``standard_normal``) and writes them to a file.

    python tools/bench_fill.py [--model PATH] [--repeat 3]

Each configuration runs in a fresh process, the configurations taking turns; the figures
are the best of ``--repeat`` runs of wall time and of CPU time (user + sys), and the peak
RSS.  Targets (issue 3): fast within 1.3x of
the floor, caffe within 2x, peak memory under 1.5x the weights' size.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared/corpus/davidgengenbach__vgg-caffe/model__VGG_ILSVRC_16_layers_deploy.prototxt"

_RUNNER = r"""
import resource, subprocess, sys, time, json
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_kib": ru.ru_maxrss,
                  "status": p.returncode}))
"""

_FLOOR = r"""
import sys, numpy as np
shapes, kind, out = eval(sys.argv[1]), sys.argv[2], sys.argv[3]
g = np.random.default_rng(1)
with open(out, "wb") as fh:
    for s in shapes:
        a = g.random(s, dtype=np.float32) if kind == "uniform" else g.standard_normal(s, dtype=np.float32)
        a.tofile(fh)
"""


def measure(cmd, outputs=()):
    """One fresh-process run: wall time and peak RSS.  Earlier outputs are removed and
    dirty pages flushed first (outside the timing), so no run pays for another's files."""
    for path in outputs:
        if os.path.exists(path):
            os.unlink(path)
    os.sync()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = json.loads(subprocess.run([sys.executable, "-c", _RUNNER, *cmd], capture_output=True, text=True,
                                  check=True, env=env).stdout)
    if r["status"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from fillers.net import load

    net = load(args.model)
    weight_shapes = [tuple(p.shape) for l in net.layers for p in l.params
                     if l.type in ("Convolution", "InnerProduct") and p.role == "weight"]
    n = net.n_params
    size_mib = n * 4 / 2**20
    print(f"{os.path.basename(args.model)}: {n:,} parameters, {size_mib:.0f} MiB as float32; "
          f"best of {args.repeat} runs, whole process\n")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []  # (name, command, floor name)
        for filler, kind in (("xavier", "uniform"), ("msra", "normal")):
            floor = f"numpy floor ({kind})"
            cases.append((floor, [sys.executable, "-c", _FLOOR, repr(weight_shapes), kind, f"{tmp}/floor.bin"], floor))
            for rng in ("fast", "caffe"):
                cases.append((f"fill-net --filler {filler} --rng {rng}",
                              [sys.executable, "-m", "fillers.cli", args.model, "--filler", filler, "--rng", rng,
                               "--seed", "1", "-q", "-o", f"{tmp}/out.caffemodel"], floor))
        runs = {name: [] for name, _, _ in cases}
        for _ in range(args.repeat):  # interleaved, so drifts in machine load hit every case alike
            for name, cmd, _floor in cases:
                runs[name].append(measure(cmd, [f"{tmp}/floor.bin", f"{tmp}/out.caffemodel"]))
        best = {name: {"wall": min(r["wall"] for r in rs), "cpu": min(r["cpu"] for r in rs),
                       "rss_kib": max(r["rss_kib"] for r in rs)} for name, rs in runs.items()}
        rows = [(name, best[name], best[floor]) for name, _, floor in cases]
    print(f"{'run':<40} {'wall s':>7} {'x floor':>8} {'cpu s':>7} {'x floor':>8} {'peak MiB':>9} {'x weights':>10}")
    for name, r, fl in rows:
        peak = r["rss_kib"] / 1024
        print(f"{name:<40} {r['wall']:7.2f} {r['wall'] / fl['wall']:8.2f} {r['cpu']:7.2f} {r['cpu'] / fl['cpu']:8.2f}"
              f" {peak:9.0f} {peak / size_mib:10.2f}")
    print("\nwall and cpu (user + sys) are each the best of the runs; this VM's wall times vary by up to 2x "
          "from run to run, cpu times much less.")


if __name__ == "__main__":
    main()
