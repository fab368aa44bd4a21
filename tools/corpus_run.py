#!/usr/bin/env python3
"""Run every corpus file through the whole pipeline and print a table.

For each file of ``../shared/corpus/MANIFEST.tsv``: build the net (TEST phase; shapes for
database/HDF5/Python tops from a small table), fill it (``--filler xavier``, fast RNG,
``--batchnorm identity``), export it to ONNX and check it under onnxruntime (and against
OpenCV where OpenCV reads the net).  Fork-layer files are expected to stop with a clear
error naming the layer; a net with a Python layer builds and fills but has nothing to
lower to ONNX.

    python tools/corpus_run.py [--no-onnx] [--only SUBSTRING]
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

from fillers.errors import ExportError, FillersError, MissingInputShapeError  # noqa: E402
from fillers.net import load  # noqa: E402

RUNTIME_SHAPES = {
    "data": (2, 3, 227, 227), "pair_data": (2, 2, 28, 28), "sim": (2,), "label": (2,),
    "cont_sentence": (20, 2), "input_sentence": (20, 2), "target_sentence": (20, 2),
    "sem": (2, 1, 64, 64), "geo": (2, 1, 64, 64), "loss": (1,),
}
STAGES = {
    "examples__mnist__mnist_autoencoder": ["test-on-test"],
    "examples__coco_caption__lrcn": ["test-on-val", "factored"],
}


def build(path):
    stages = next((v for k, v in STAGES.items() if k in str(path)), None)
    shapes = {}
    while True:
        try:
            return load(path, input_shapes=shapes, stages=stages)
        except MissingInputShapeError as exc:
            top = str(exc).split("top '")[1].split("'")[0]
            if top in shapes or top not in RUNTIME_SHAPES:
                raise
            shapes[top] = RUNTIME_SHAPES[top]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-onnx", action="store_true", help="only build and fill")
    ap.add_argument("--only", help="only files whose name contains this")
    args = ap.parse_args(argv)
    rows = list(csv.DictReader(open(SHARED / "corpus" / "MANIFEST.tsv"), delimiter="\t"))
    counts = {"ok": 0, "clear error": 0, "no lowering": 0, "FAILED": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if args.only and args.only not in row["file"]:
                continue
            path = SHARED / "corpus" / row["file"]
            t0 = time.perf_counter()
            try:
                net = build(path)
                filled = net.fill(filler="xavier", seed=1, batchnorm="identity")
                detail = f"{len(net.layers)} layers, {net.n_params:,} params"
                status = "ok"
                if not args.no_onnx:
                    from fillers.onnx import export_and_check

                    model = os.path.join(tmp, "m.caffemodel")
                    filled.save(model)
                    report = export_and_check(filled, os.path.join(tmp, "m.onnx"), caffemodel=model)
                    worst = max((o.max_rel_err or 0.0 for o in report.outputs), default=0.0)
                    ref = report.reference or "shapes/finiteness only"
                    detail += f"; onnx {'ok' if report.ok else 'FAILED'} vs {ref}, worst rel err {worst:.2g}"
                    status = "ok" if report.ok else "FAILED"
            except ExportError as exc:  # e.g. a Python layer: user code, nothing to lower
                status = "no lowering"
                detail = str(exc)[:110]
            except FillersError as exc:
                fork = row["standard_only"] == "no"
                status = "clear error" if fork else "FAILED"
                detail = str(exc)[:110]
            counts[status] += 1
            print(f"{status:<11} {time.perf_counter() - t0:6.2f}s  {row['file'][:70]:<70}  {detail}", flush=True)
    print(f"\n{counts['ok']} ok, {counts['no lowering']} built and filled but not exportable, "
          f"{counts['clear error']} fork files with a clear error, {counts['FAILED']} failed")
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
