"""The numpy engine (fillers.lab) on ResNet-50 at batch 8: its forward against onnxruntime's
forward of the same export, its backward against its own forward, LSUV against its own
forward, and peak memory.

LSUV (``fillers.lab.lsuv`` on an orthogonal fill, prototxt BatchNorm statistics as Caffe
leaves them) is timed on a fresh copy of the fill each run; the figure in forward passes
divides by the engine's inference forward (target < 15).  The orthogonal base fill itself
(QR of every weight blob) is timed apart, and so is ``net.fill(filler="lsuv")`` end to end.

All ratios come from the same run.  Weights: He-normal convolutions and InnerProduct,
BatchNorm mean 0 / variance 1 / factor 1, Scale 1 / bias 0 (so the signal stays finite);
input U(-1, 1).  Each timing is the fastest of ``--repeat`` runs after one warm-up.
numpy's BLAS and onnxruntime use the same number of threads (``--threads``, default 1).

    python tools/bench_engine.py                # ResNet-50, batch 8, 3 runs
    python tools/bench_engine.py --batch 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _threads_from_argv(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


# BLAS threads must be fixed before numpy loads
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = _threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus" / "KaimingHe__deep-residual-networks"
CANDIDATES = [CORPUS / "prototxt" / "ResNet-50-deploy.prototxt", CORPUS / "prototxt__ResNet-50-deploy.prototxt"]


def weights(net, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for layer in net.layers:
        arrs = []
        for j, pb in enumerate(layer.params):
            if layer.type == "BatchNorm":
                arrs.append(np.full(pb.shape, [0.0, 1.0, 1.0][j], dtype=np.float32))
            elif layer.type == "Scale":
                arrs.append(np.full(pb.shape, 1.0 if j == 0 else 0.0, dtype=np.float32))
            elif len(pb.shape) >= 2:
                fan_in = pb.count // pb.shape[0]
                arrs.append((rng.standard_normal(pb.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
            else:
                arrs.append(np.zeros(pb.shape, dtype=np.float32))
        if arrs:
            out[layer.name] = arrs
    return out


def timed(fn, repeat):
    """The fastest of ``repeat`` runs after a warm-up (the least disturbed by other load)."""
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for numpy's BLAS and for onnxruntime (default 1: steady figures on a shared machine)")
    ap.add_argument("--net", default=None, help="prototxt (default: the corpus's ResNet-50 deploy)")
    args = ap.parse_args(argv)

    from fillers.lab import Engine
    from fillers.net import load
    from fillers.onnx import export

    path = Path(args.net) if args.net else next((p for p in CANDIDATES if p.exists()), CANDIDATES[0])
    text = path.read_text()
    text = text.replace("input_dim: 1\n", f"input_dim: {args.batch}\n", 1)
    net = load(str(path), text=text)
    params = weights(net)
    shape = net.blobs[net.inputs[0]]
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    feeds = {net.inputs[0]: x}
    print(f"{net.name}: input {list(shape)}, {net.n_params:,} parameters, {len(net.layers)} layers; "
          f"{os.cpu_count()} cores, {args.threads} thread(s), numpy {np.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "net.onnx"
        export(net, params, str(onnx_path))
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        out_names = [o.name for o in sess.get_outputs()]
        t_ort = timed(lambda: sess.run(out_names, feeds), args.repeat)
        ort_out = dict(zip(out_names, sess.run(out_names, feeds)))
    del sess

    eng = Engine(net, params, phase="TEST", force_backward=True)
    t_fwd = timed(lambda: eng.forward(feeds, keep=False), args.repeat)
    outs = eng.forward(feeds, keep=False)
    err = max(float(np.max(np.abs(outs[n] - ort_out[n]))) for n in out_names)
    scale = max(float(np.max(np.abs(ort_out[n]))) for n in out_names)
    t_fwd_keep = timed(lambda: eng.forward(feeds, keep=True), args.repeat)
    diffs = {n: np.random.default_rng(2).uniform(-1, 1, outs[n].shape).astype(np.float32) for n in net.outputs}

    def fwd_bwd():
        eng.forward(feeds, keep=True)
        eng.backward(diffs)

    t_both = timed(fwd_bwd, args.repeat)
    t_bwd = t_both - t_fwd_keep

    tracemalloc.start()
    eng.forward(feeds, keep=False)
    peak_fwd = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    eng.forward(feeds, keep=True)
    eng.backward(diffs)
    peak_both = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # LSUV: the rescaling passes on a fresh orthogonal fill (each run on its own copy)
    from fillers.lab import lsuv

    t0 = time.perf_counter()
    base = net.fill(filler="orthogonal", seed=1).params
    t_base = time.perf_counter() - t0
    copies = [{k: [a.copy() for a in v] for k, v in base.items()} for _ in range(args.repeat)]
    lsuv(net, {k: [a.copy() for a in v] for k, v in base.items()}, feeds)  # warm-up
    t_lsuv, runs, worst = float("inf"), 0, 0.0
    for c in copies:
        t0 = time.perf_counter()
        res = lsuv(net, c, feeds)
        t_lsuv = min(t_lsuv, time.perf_counter() - t0)
        runs = res.layer_runs
        worst = max(abs(v - 1) for v in res.variances.values())
    del copies
    fresh = {k: [a.copy() for a in v] for k, v in base.items()}
    tracemalloc.start()
    lsuv(net, fresh, feeds)
    peak_lsuv = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    net.fill(filler="lsuv", seed=1, inputs=feeds)
    t_fill_lsuv = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"onnxruntime forward           {t_ort * 1e3:9.1f} ms")
    print(f"engine forward (inference)    {t_fwd * 1e3:9.1f} ms   {t_fwd / t_ort:5.2f}x onnxruntime "
          f"(target <= 3x); outputs max |engine - onnxruntime| {err:.3g} (max |output| {scale:.3g})")
    print(f"engine forward (keep blobs)   {t_fwd_keep * 1e3:9.1f} ms")
    print(f"engine backward               {t_bwd * 1e3:9.1f} ms   {t_bwd / t_fwd_keep:5.2f}x its forward "
          f"(target <= 3x)")
    print(f"LSUV (rescaling)              {t_lsuv * 1e3:9.1f} ms   {t_lsuv / t_fwd:5.2f} forward passes "
          f"(target < 15); {runs} layer runs for {len(net.layers)} layers; worst |Var - 1| {worst:.3g}")
    print(f"orthogonal base fill          {t_base * 1e3:9.1f} ms   ({t_base / t_fwd:.2f} forward passes); "
          f"net.fill(filler='lsuv') end to end {t_fill_lsuv * 1e3:.1f} ms ({t_fill_lsuv / t_fwd:.2f} forward passes)")
    print(f"peak traced numpy memory: forward (inference) {peak_fwd / 2**20:.0f} MiB, forward + backward "
          f"{peak_both / 2**20:.0f} MiB, LSUV (the weights not counted) {peak_lsuv / 2**20:.0f} MiB; "
          f"process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
