"""The numpy reference engine (fillers.lab) against real Caffe's forward and backward pass.

``golden/backward/<id>.npz``: recipe weights and inputs (``golden/recipe.py``), the diff
``diff/<output>`` fed at each output, Caffe's blob diff statistics, parameter diff
statistics, and full input and parameter diffs.  ``golden/signal/<id>.npz``: the same with
Caffe's own fills for seed 1701 (= ``load(path).fill(seed=1701, rng="caffe")``), plus the
forward statistics.  Tolerances (issue 9): std and mean |x| within 1e-4 relative; mean, min
and max within 1e-4 x max(|value|, std of that blob); full arrays within
1e-4 x max(1e-30, max |Caffe array|).
"""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from conftest import GOLDEN, golden_source
from fillers.errors import ParseError
from fillers.lab import Engine, LayerContext, stats
from fillers.net import load

TOL = 1e-4
#: nets whose forward + backward take more than a few seconds here (marked slow, still run)
SLOW_PARAMS = 5_000_000

if not (GOLDEN / "index.json").exists():
    pytest.skip(f"no goldens at {GOLDEN}", allow_module_level=True)


def _recipe():
    spec = importlib.util.spec_from_file_location("golden_recipe_lab", GOLDEN / "recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RECIPE = _recipe()
INDEX = json.loads((GOLDEN / "index.json").read_text())
WORST: dict = {}  # folder -> (relative error, net, key)


def recipe_blobs(net) -> dict:
    blobs = {}
    for layer in net.layers:
        arrs = []
        for j, (pb, owner) in enumerate(zip(layer.params, layer.owners)):
            if owner is None:
                arrs.append(RECIPE.param_blob(layer.name, layer.type, j, pb.shape))
            else:
                arrs.append(blobs[net.layers[owner[0]].name][owner[1]])
        if arrs:
            blobs[layer.name] = arrs
    return blobs


def _ids(folder):
    idx = json.loads((GOLDEN / folder / "index.json").read_text())
    out = []
    for net_id, entry in sorted(idx["nets"].items()):
        if not entry.get("ok", True):
            continue
        marks = [pytest.mark.slow] if INDEX["nets"].get(net_id, {}).get("n_params", 0) > SLOW_PARAMS else []
        out.append(pytest.param(net_id, entry, marks=marks, id=net_id))
    return out


def _load(net_id):
    try:
        return load(str(golden_source(net_id)))
    except ParseError as exc:
        if "V0" in str(exc) or "v0" in str(exc).lower():
            pytest.skip(f"the V0 format is not read yet: {exc}")
        raise


def _feeds(net_id, net):
    fwd = GOLDEN / "forward" / f"{net_id}.npz"
    feeds = {}
    if fwd.exists():
        z = np.load(fwd)
        for k in z.files:
            if k.startswith("input/") or k.startswith("dummy/"):
                feeds[k.split("/", 1)[1]] = z[k]
    return feeds


def _stat_errors(ours, ref):
    """Per statistic, |ours - ref| over its scale; the tolerance is 1e-4 on each."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    std = abs(ref[1])
    scale = np.array([max(abs(ref[0]), std), abs(ref[1]), max(abs(ref[2]), std), max(abs(ref[3]), std),
                      abs(ref[4])])
    err = np.abs(ours - ref)
    rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1), np.where(err > 0, np.inf, 0.0))
    return rel


def _compare(folder, net_id, eng, golden):
    ours = eng.golden_stats()
    failures, worst, n = [], (0.0, ""), 0
    for key in golden.files:
        kind = key.split("/", 1)[0]
        if kind in ("stats", "dstats", "pdstats"):
            if key not in ours:
                failures.append(f"{key}: not produced by the engine")
                continue
            rel = _stat_errors(ours[key], golden[key])
            m = float(rel.max())
        elif kind in ("input_diff", "pdiff"):
            rest = key.split("/", 1)[1]
            if kind == "input_diff":
                a = eng.blob_diffs[rest]
            else:
                lname, j = rest.rsplit("/", 1)
                a = eng.param_diffs[lname][int(j)]
            ref = golden[key]
            if a.shape != ref.shape:
                failures.append(f"{key}: shape {a.shape} vs Caffe's {ref.shape}")
                continue
            m = float(np.max(np.abs(a.astype(np.float64) - ref))) / max(1e-30, float(np.max(np.abs(ref)))) \
                if ref.size else 0.0
        else:
            continue
        n += 1
        if not m <= TOL:
            failures.append(f"{key}: relative error {m:.3g}")
        if m > worst[0]:
            worst = (m, key)
    prev = WORST.get(folder, (0.0, "", ""))
    if worst[0] >= prev[0]:
        WORST[folder] = (worst[0], net_id, worst[1])
    return failures, n, worst


@pytest.fixture(scope="module", autouse=True)
def worst_table(request):
    yield
    if not WORST:
        return
    rep = request.config.pluginmanager.getplugin("terminalreporter")
    lines = ["", "numpy engine vs Caffe: worst relative error per golden folder"]
    for folder, (err, net_id, key) in sorted(WORST.items()):
        lines.append(f"  {folder:9} {err:10.3g}  {net_id}  {key}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if rep is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            rep.write_line("\n".join(lines))


def _run(folder, net_id, entry, params_of):
    net = _load(net_id)
    golden = np.load(GOLDEN / folder / f"{net_id}.npz")
    params = params_of(net)
    eng = Engine(net, params, phase=entry.get("phase", "TEST"), rng=1701,
                 force_backward=entry.get("force_backward", True), keep_splits=True)
    eng.forward(_feeds(net_id, net))
    diffs = {k.split("/", 1)[1]: golden[k] for k in golden.files if k.startswith("diff/")}
    eng.backward(diffs)
    failures, n, worst = _compare(folder, net_id, eng, golden)
    if folder == "backward":  # the forward golden's statistics too
        fwd = GOLDEN / "forward" / f"{net_id}.npz"
        if fwd.exists():
            f2, n2, _ = _compare("forward", net_id, eng, np.load(fwd))
            failures += f2
            n += n2
    assert n > 0
    assert not failures, f"{len(failures)} of {n} values differ from Caffe's: " + "; ".join(failures[:8])


@pytest.mark.parametrize("net_id,entry", _ids("backward"))
def test_golden_backward(net_id, entry):
    _run("backward", net_id, entry, recipe_blobs)


@pytest.mark.parametrize("net_id,entry", _ids("signal"))
def test_golden_signal(net_id, entry):
    _run("signal", net_id, entry, lambda net: net.fill(seed=1701, rng="caffe").blobs)
