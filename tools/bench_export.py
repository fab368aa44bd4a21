"""Wall time of exporting big Caffe nets to ONNX, next to onnxruntime's session creation.

Each measurement runs in a fresh Python process, timed from the outside, so it includes
the interpreter start, the imports, reading the prototxt, making the weights, lowering,
onnx's full checker and the atomic write: what ``fill-net ... --onnx`` costs.  The weights
are constants (BatchNorm: mean 0, variance 1, factor 1), made with numpy in the child and
reported separately: the filler module is not needed.

Nets: VGG-16 and ResNet-101 from the corpus, and ResNet-152, which the corpus lacks: this
tool writes it by extending ResNet-101's pattern (units per stage 3/4/23/3 -> 3/8/36/3,
Kaiming He's layer names).

    python tools/bench_export.py                 # vgg16 resnet152, 3 runs each
    python tools/bench_export.py --nets resnet101 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
NETS = {
    "vgg16": CORPUS / "davidgengenbach__vgg-caffe" / "model__VGG_ILSVRC_16_layers_deploy.prototxt",
    "resnet101": CORPUS / "KaimingHe__deep-residual-networks" / "prototxt__ResNet-101-deploy.prototxt",
    "resnet50": CORPUS / "KaimingHe__deep-residual-networks" / "prototxt__ResNet-50-deploy.prototxt",
}


def resnet152_from_101(text: str) -> str:
    """ResNet-152's deploy prototxt from ResNet-101's: stage 3 gets units b4..b7 after b3,
    stage 4 units b23..b35 after b22, each a copy of the stage's last unit."""
    blocks = re.split(r"\n(?=layer \{)", text)

    def unit_layers(tag):  # every layer of unit e.g. "3b3": its convs, bns, scales, relus, eltwise
        pat = re.compile(rf'name: "(res|bn|scale){tag}(_|")')
        return [i for i, b in enumerate(blocks) if pat.search(b)]

    def extend(stage, last, upto):
        idx = unit_layers(f"{stage}b{last}")
        template = "\n" + "\n".join(blocks[i] for i in idx)
        prev = f'"res{stage}b{last - 1}"' if last > 1 else f'"res{stage}a"'
        template = template.replace(prev, '"@PREV@"')
        new = []
        for k in range(last + 1, upto + 1):
            t = template.replace(f"{stage}b{last}", f"{stage}b{k}").replace("@PREV@", f"res{stage}b{k - 1}")
            new.append(t.lstrip("\n"))
        after = idx[-1] + 1
        # the next stage reads the new last unit
        for i in range(after, len(blocks)):
            blocks[i] = blocks[i].replace(f'bottom: "res{stage}b{last}"', f'bottom: "res{stage}b{upto}"')
        blocks[after:after] = new

    extend(4, 22, 35)
    extend(3, 3, 7)
    out = "\n".join(blocks)
    return out.replace('name: "ResNet-101"', 'name: "ResNet-152"', 1)


CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from fillers.net import load
from fillers.onnx import export_with_info
t1 = time.perf_counter()
net = load(sys.argv[1])
t2 = time.perf_counter()
blobs = {}
for layer in net.layers:
    arrs = []
    for j, pb in enumerate(layer.params):
        if layer.type == "BatchNorm":
            arrs.append(np.full(pb.shape, 0.0 if j == 0 else 1.0, dtype=np.float32))
        else:
            arrs.append(np.full(pb.shape, 0.01, dtype=np.float32))
    if arrs:
        blobs[layer.name] = arrs
t3 = time.perf_counter()
model, info = export_with_info(net, blobs, sys.argv[2], opset=int(sys.argv[3]), return_model=False)
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "weights": t3 - t2, "export": t4 - t3,
                  "params": net.n_params, "layers": len(net.layers), "nodes": info.n_nodes,
                  "external": info.external_data}))
"""

SESSION = r"""
import json, sys, time
t0 = time.perf_counter()
import onnxruntime as ort
t1 = time.perf_counter()
opts = ort.SessionOptions()
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "session": t2 - t1}))
"""


def run_child(code: str, *args) -> tuple:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"child failed:\n{res.stderr}")
    return wall, json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["vgg16", "resnet152"],
                    choices=["vgg16", "resnet152", "resnet101", "resnet50"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--workdir", default=None, help="where to write the models (default: a temporary folder)")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, models in {work}")
    header = (f"{'net':10} {'params':>11} {'nodes':>6} {'MB':>6} {'wall s':>7} {'(imports':>8} {'load':>6} "
              f"{'weights':>7} {'export)':>7} {'ort session s':>13}")
    print(header)
    for name in args.nets:
        if name == "resnet152":
            proto = work / "ResNet-152-deploy.prototxt"
            proto.write_text(resnet152_from_101(NETS["resnet101"].read_text()))
        else:
            proto = NETS[name]
        out = work / f"{name}.onnx"
        walls, parts, sessions = [], [], []
        for _ in range(args.repeat):
            for old in (out, Path(str(out) + ".data")):  # a new file each time: replacing one costs its unlink
                if old.exists():
                    old.unlink()
            wall, info = run_child(CHILD, proto, out, args.opset)
            walls.append(wall)
            parts.append(info)
            _, sess = run_child(SESSION, out)
            sessions.append(sess["session"])
        med = statistics.median(walls)
        p = parts[walls.index(med)] if med in walls else parts[0]
        mb = out.stat().st_size / 2**20
        print(f"{name:10} {p['params']:11,d} {p['nodes']:6d} {mb:6.0f} {med:7.2f} {p['imports']:8.2f} {p['load']:6.2f} "
              f"{p['weights']:7.2f} {p['export']:7.2f} {statistics.median(sessions):13.2f}")
    print(f"(medians of {args.repeat} runs; wall = the whole child process, timed from outside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
