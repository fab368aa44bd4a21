#!/usr/bin/env python3
"""Run every corpus file through the whole pipeline and print a table.

For each file of ``../shared/corpus/MANIFEST.tsv``: build the net (TEST phase; shapes for
database/HDF5/Python tops from a small table), fill it (``--filler xavier``, fast RNG,
``--batchnorm identity``), export it to ONNX and check it under onnxruntime (and against
OpenCV where OpenCV reads the net).  Fork-layer files are expected to stop with a clear
error naming the layer; a net with a Python layer builds and fills but has nothing to
lower to ONNX.

    python tools/corpus_run.py [--no-onnx] [--only SUBSTRING] [--jobs N]

The runs go through :mod:`fillers.zoo` (what ``fill-net A B ... --jobs N`` does), with a
table of runtime shapes and stages per file for the corpus's training nets.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

from fillers.zoo import ZooOptions, run_zoo  # noqa: E402

RUNTIME_SHAPES = {
    "data": (2, 3, 227, 227), "pair_data": (2, 2, 28, 28), "sim": (2,), "label": (2,),
    "cont_sentence": (20, 2), "input_sentence": (20, 2), "target_sentence": (20, 2),
    "sem": (2, 1, 64, 64), "geo": (2, 1, 64, 64), "loss": (1,),
}
STAGES = {
    "examples__mnist__mnist_autoencoder": ["test-on-test"],
    "examples__coco_caption__lrcn": ["test-on-val", "factored"],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-onnx", action="store_true", help="only build and fill")
    ap.add_argument("--only", help="only files whose name contains this")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="models at a time (processes)")
    args = ap.parse_args(argv)
    rows = list(csv.DictReader(open(SHARED / "corpus" / "MANIFEST.tsv"), delimiter="\t"))
    rows = [r for r in rows if not args.only or args.only in r["file"]]
    fork = {r["file"]: r["standard_only"] == "no" for r in rows}
    options = ZooOptions(input_shapes=RUNTIME_SHAPES, stages_for=STAGES, filler="xavier", seed=1,
                         batchnorm="identity", onnx=None if args.no_onnx else "{name}.onnx")
    counts = {"ok": 0, "clear error": 0, "no lowering": 0, "FAILED": 0}

    def status_of(res):
        if res.ok:
            return "ok"
        if res.result == "error" and res.error_type == "ExportError":
            return "no lowering"  # e.g. a Python layer: user code, nothing to lower
        if res.result == "error" and fork[res.path.split("corpus/", 1)[-1]]:
            return "clear error"
        return "FAILED"

    def report(res, done, total):
        status = status_of(res)
        counts[status] += 1
        if res.ok:
            detail = f"{res.layers} layers, {res.params:,} params"
            if not args.no_onnx:
                worst = res.worst_rel_err or 0.0
                detail += f"; onnx ok vs {res.reference or 'shapes/finiteness only'}, worst rel err {worst:.2g}"
        else:
            detail = res.message[:110]
        print(f"{status:<11} {res.seconds:6.2f}s  {res.path.split('corpus/', 1)[-1][:70]:<70}  {detail}", flush=True)

    models = [(str(SHARED / "corpus" / r["file"]), r["file"].replace("/", "__").rsplit(".", 1)[0]) for r in rows]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_zoo(models, options, jobs=args.jobs, out_dir=tmp, on_result=report)
    print(f"\n{counts['ok']} ok, {counts['no lowering']} built and filled but not exportable, "
          f"{counts['clear error']} fork files with a clear error, {counts['FAILED']} failed "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
