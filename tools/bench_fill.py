#!/usr/bin/env python3
"""Benchmark: whole-process time and peak memory of streamed ``fill-net`` fills.

Two nets: VGG-16 (138 M parameters, 528 MiB) and a synthetic net of 3 GB of weights
(three InnerProducts of 16384 x 16384).  For ``--filler xavier`` and ``--filler msra``,
with ``--rng fast`` and ``--rng caffe``, each writing a .caffemodel, next to the floor: a
process that only imports numpy, draws the same number of float32 samples in chunks of
the same size (``Generator.random`` / ``standard_normal``) and writes them to a file.
Then, once per net, the ONNX export (``--onnx``, external data for the 3 GB net; the
onnx checker runs, onnxruntime does not: ``--no-check``) of a fast xavier fill.

    python tools/bench_fill.py [--repeat 3] [--only vgg|big] [--no-onnx]

Each run is a fresh process, the configurations taking turns (interleaved, so drifts in
machine load hit every case alike); the table gives the best and the median of the runs
for wall time and for CPU time (user + sys), their ratio to the floor's best/median, and
the largest peak RSS.  Targets (issue 10): fast within 1.3x of the floor, caffe within
1.6x; peak under 150 MiB for VGG-16, under 300 MiB for the 3 GB net.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared/corpus/davidgengenbach__vgg-caffe/model__VGG_ILSVRC_16_layers_deploy.prototxt"

BIG_NET = """name: "big3g"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 16384 } } }
""" + "".join(
    f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{b}" top: "fc{i}" '
    f'inner_product_param {{ num_output: 16384 bias_term: false weight_filler {{ type: "xavier" }} }} }}\n'
    for i, b in ((1, "x"), (2, "fc1"), (3, "fc2")))

_RUNNER = r"""
import resource, subprocess, sys, time, json
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_kib": ru.ru_maxrss,
                  "status": p.returncode}))
"""

# the floor: the same number of samples, drawn in chunks of the streaming fill's size
_FLOOR = r"""
import sys, numpy as np
n, kind, out, chunk = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
g = np.random.default_rng(1)
buf = np.empty(chunk, np.float32)
with open(out, "wb") as fh:
    for pos in range(0, n, chunk):
        b = buf[:min(chunk, n - pos)]
        if kind == "uniform":
            g.random(dtype=np.float32, out=b)
        else:
            g.standard_normal(dtype=np.float32, out=b)
        fh.write(b)
"""


def measure(cmd, outputs=()):
    """One fresh-process run: wall time, CPU time and peak RSS.  Earlier outputs are
    removed and dirty pages flushed first (outside the timing), so no run pays for
    another's files."""
    for path in outputs:
        for p in (path, path + ".data"):
            if os.path.exists(p):
                os.unlink(p)
    os.sync()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = json.loads(subprocess.run([sys.executable, "-c", _RUNNER, *cmd], capture_output=True, text=True,
                                  check=True, env=env).stdout)
    if r["status"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return r


def _cases(label, model, n, tmp, chunk, onnx):
    out = f"{tmp}/out.caffemodel"
    cases = []  # (name, command, floor name, repeated)
    for filler, kind in (("xavier", "uniform"), ("msra", "normal")):
        floor = f"{label}: numpy floor ({kind})"
        cases.append((floor, [sys.executable, "-c", _FLOOR, str(n), kind, f"{tmp}/floor.bin", str(chunk)], floor, True))
        for rng in ("fast", "caffe"):
            cases.append((f"{label}: fill-net --filler {filler} --rng {rng}",
                          [sys.executable, "-m", "fillers.cli", model, "--filler", filler, "--rng", rng,
                           "--seed", "1", "-q", "-o", out], floor, True))
    if onnx:
        cases.append((f"{label}: fill-net xavier fast + --onnx (no ORT)",
                      [sys.executable, "-m", "fillers.cli", model, "--filler", "xavier", "--seed", "1", "-q",
                       "-o", out, "--onnx", f"{tmp}/out.onnx", "--no-check"], f"{label}: numpy floor (uniform)", False))
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="the first net (default: VGG-16)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["vgg", "big"], help="only one of the two nets")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export runs")
    ap.add_argument("--dir", help="where to write (default: a temporary folder)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from fillers.net import load
    from fillers.stream import CHUNK

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        big = os.path.join(tmp, "big3g.prototxt")
        pathlib.Path(big).write_text(BIG_NET)
        nets = [("VGG-16", args.model), ("3 GB net", big)]
        if args.only:
            nets = [nets[0 if args.only == "vgg" else 1]]
        cases, sizes = [], {}
        for label, model in nets:
            n = load(model).n_params
            sizes[label] = n * 4 / 2**20
            print(f"{label}: {os.path.basename(model)}, {n:,} parameters, {sizes[label]:.0f} MiB as float32")
            cases += _cases(label, model, n, tmp, CHUNK, not args.no_onnx)
        print(f"{args.repeat} interleaved runs each (the ONNX runs once), whole process\n")
        runs = {name: [] for name, *_ in cases}
        outs = [f"{tmp}/floor.bin", f"{tmp}/out.caffemodel", f"{tmp}/out.onnx"]
        for k in range(args.repeat):
            for name, cmd, _floor, repeated in cases:
                if repeated or k == 0:
                    runs[name].append(measure(cmd, outs))
        for p in outs:
            if os.path.exists(p):
                os.unlink(p)

    def figures(rs):
        return {"wall": (min(r["wall"] for r in rs), statistics.median(r["wall"] for r in rs)),
                "cpu": (min(r["cpu"] for r in rs), statistics.median(r["cpu"] for r in rs)),
                "rss": max(r["rss_kib"] for r in rs) / 1024}

    fig = {name: figures(rs) for name, rs in runs.items()}
    head = (f"{'run':<52} {'wall best/med s':>16} {'x floor':>11} {'cpu best/med s':>15} {'x floor':>11} "
            f"{'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    for name, _cmd, floor, _ in cases:
        f, fl = fig[name], fig[floor]
        print(f"{name:<52} {f['wall'][0]:7.2f}/{f['wall'][1]:<8.2f} "
              f"{f['wall'][0] / fl['wall'][0]:5.2f}/{f['wall'][1] / fl['wall'][1]:<5.2f} "
              f"{f['cpu'][0]:7.2f}/{f['cpu'][1]:<7.2f} "
              f"{f['cpu'][0] / fl['cpu'][0]:5.2f}/{f['cpu'][1] / fl['cpu'][1]:<5.2f} {f['rss']:9.0f}")
    print("\nx floor: best/best and median/median against the floor drawing the same distribution "
          "(uniform for xavier, normal for msra); peak: the largest of the runs.  This VM's wall times vary "
          "from run to run; CPU times much less.")


if __name__ == "__main__":
    main()
