"""The ONNX export against real Caffe: every forward golden in shared/golden/forward.

Each golden was produced by BVLC Caffe with the weights of ``golden/recipe.py``; the test
rebuilds the same weights, exports the net, runs it in onnxruntime on the golden's inputs
and compares every output (in full where stored, else its statistics), and, with
``all_blobs``, the statistics of every intermediate blob.  A table of the worst errors is
printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import golden_param, load_recipe, recipe_params
from fillers.errors import ExportError
from fillers.net import load
from fillers.onnx import export, export_and_check, export_with_info, ort_session

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
SLOW_PARAMS = 5_000_000

if not (GOLDEN / "index.json").exists():
    pytest.skip(f"no goldens at {GOLDEN} (set CAFFE_FILLERS_SHARED)", allow_module_level=True)

pytestmark = pytest.mark.shared
INDEX = json.loads((GOLDEN / "index.json").read_text())
ROWS: list = []


RECIPE = load_recipe(GOLDEN)


def net_path(net_id: str) -> Path:
    src = INDEX["nets"][net_id]["source"]
    return GOLDEN / src if src.startswith("nets/") else SHARED / "corpus" / src


def recipe_blobs(net) -> dict:
    return recipe_params(RECIPE, net)


def _ids():
    out = []
    for f in sorted((GOLDEN / "forward").glob("*.npz")):
        net_id = f.stem
        entry = INDEX["nets"].get(net_id, {})
        marks = [pytest.mark.slow] if entry.get("n_params", 0) > SLOW_PARAMS else []
        out.append(golden_param(net_id, marks=marks))
    return out


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_model(model, path):
    """The streamed file parses to the returned model (field order may differ)."""
    import onnx

    return onnx.load(str(path)) == model


def _stats(y):
    y = np.asarray(y, dtype=np.float64)
    return np.array([y.mean(), y.std(), y.min(), y.max(), np.abs(y).mean()])


def _stat_err(y, ref):
    """Largest difference of [mean, std, min, max, mean |y|], relative to the blob's range."""
    scale = max(1.0, abs(ref[2]), abs(ref[3]))
    return float(np.max(np.abs(_stats(y) - ref))) / scale


@pytest.fixture(scope="module", autouse=True)
def error_table(request):
    yield
    if not ROWS:
        return
    rep = request.config.pluginmanager.getplugin("terminalreporter")
    lines = ["", "ONNX export vs Caffe goldens: worst errors (output: max abs err / tolerance; blobs: stats error)"]
    w = max(len(r[0]) for r in ROWS)
    lines.append(f"{'net':{w}}  {'output':14}  {'max abs err':>11}  {'tolerance':>9}  {'blobs':>5}  {'worst stat err':>14}")
    for net_id, out, err, tol, nblobs, stat in ROWS:
        lines.append(f"{net_id:{w}}  {out:14}  {err:11.3g}  {tol:9.3g}  {nblobs:5d}  {stat:14.3g}")
    text = "\n".join(lines)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if rep is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            rep.write_line(text)
    else:  # pragma: no cover
        print(text)


@pytest.mark.parametrize("net_id", _ids())
def test_golden_forward(net_id, tmp_path):
    golden = np.load(GOLDEN / "forward" / f"{net_id}.npz")
    net = load(str(net_path(net_id)))
    blobs = recipe_blobs(net)
    path = tmp_path / "net.onnx"
    model, info = export_with_info(net, blobs, path)
    assert path.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    assert model.SerializeToString() == path.read_bytes() or _same_model(model, path)
    sess = ort_session(str(path))
    feeds = {i.name: golden[f"input/{i.name}"] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    assert sorted(names) == sorted(net.outputs)
    outs = dict(zip(names, sess.run(names, feeds)))
    worst_out, worst_err, worst_tol = "", 0.0, 0.0
    for name, y in outs.items():
        assert y.shape == tuple(net.blobs[name]), name
        assert np.all(np.isfinite(y)), name
        if f"output/{name}" in golden.files:
            ref = golden[f"output/{name}"]
            assert y.shape == ref.shape
            err = float(np.max(np.abs(y.astype(np.float64) - ref)))
            tol = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
            assert err <= tol, f"{name}: max abs error {err:.3g} > {tol:.3g}"
            if err / tol >= (worst_err / worst_tol if worst_tol else 0):
                worst_out, worst_err, worst_tol = name, err, tol
        else:
            ref = golden[f"stats/{name}"]
            err = _stat_err(y, ref)
            assert err <= 1e-4, f"{name}: statistics differ by {err:.3g}"

    # every intermediate blob: its final version against Caffe's statistics
    model, info = export_with_info(net, blobs, all_blobs=True)
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, feeds)))
    n, worst_stat = 0, 0.0
    for key in golden.files:
        blob = key[len("stats/"):]
        if key.startswith("stats/") and blob in outs:
            err = _stat_err(outs[blob], golden[key])
            assert err <= 1e-4, f"blob {blob}: statistics differ by {err:.3g}"
            n, worst_stat = n + 1, max(worst_stat, err)
    assert n >= 1
    ROWS.append((net_id, worst_out, worst_err, worst_tol, n, worst_stat))


# ---- export_and_check and the files it writes -------------------------------------------

SMALL = "BVLC__caffe__examples__cifar10__cifar10_full"


def test_export_and_check_filled_net(tmp_path):
    net = load(str(net_path(SMALL)))
    filled = types.SimpleNamespace(net=net, blobs=recipe_blobs(net))  # what the CLI passes
    report = export_and_check(filled, str(tmp_path / "c.onnx"), opset=None, check=True, all_blobs=False,
                              caffemodel=None)
    assert report.ok and report.checked
    assert report.reference and report.reference.startswith("OpenCV")
    (row,) = report.outputs
    assert row.name == "prob" and row.shape == (1, 10) and row.max_abs_err < 1e-5
    text = report.text()
    assert "prob" in text and "OpenCV" in text and "result: ok" in text
    # the same through FilledNet.to_onnx's call form: export(filled, path)
    model = export(filled, str(tmp_path / "d.onnx"))
    assert model.graph.output[0].name == "prob"


def test_export_and_check_fresh_batchnorm_hint(tmp_path):
    text = ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
            + "".join(f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "data" top: "data" }}\n'
                      f'layer {{ name: "pw{i}" type: "Power" bottom: "data" top: "data" power_param {{ power: 3 }} }}\n'
                      for i in range(4)))
    (tmp_path / "bn.prototxt").write_text(text)
    net = load(str(tmp_path / "bn.prototxt"))
    blobs = {f"bn{i}": [np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(1, np.float32)] for i in range(4)}
    report = export_and_check((net, blobs), str(tmp_path / "bn.onnx"), compare_opencv=False)
    # issue 9: inf/NaN where the numpy engine (Caffe's arithmetic) has them is faithful, with the hint
    assert report.ok and report.overflow and report.engine
    assert any("--batchnorm identity" in w and "4 BatchNorm" in w and "faithful" in w for w in report.warnings)
    (row,) = report.outputs
    assert not row.finite and row.overflow and "overflows" in report.text()
    # without the engine (today's check, shapes and finiteness) it fails as before
    report = export_and_check((net, blobs), str(tmp_path / "bn.onnx"), compare_opencv=False, compare_engine=False)
    assert not report.ok
    assert any("--batchnorm identity" in w and "4 BatchNorm" in w for w in report.warnings)


def test_export_check_compares_with_the_engine_and_falls_back(tmp_path, monkeypatch):
    net = load(str(net_path(SMALL)))
    blobs = recipe_blobs(net)
    report = export_and_check((net, blobs), str(tmp_path / "c.onnx"), compare_opencv=False)
    assert report.ok and report.engine and report.reference is None
    (row,) = report.outputs
    assert row.engine_rel_err is not None and row.engine_rel_err < 1e-5
    assert "max abs err vs engine" in report.text()
    # a wrong export is caught by the engine alone (no OpenCV): corrupt the weights the engine sees
    from fillers.onnx import check

    real = check._engine_reference

    def skewed(report, net, params, info, feeds):
        got = real(report, net, params, info, feeds)
        return {k: v * 1.01 + 0.01 for k, v in got.items()}

    monkeypatch.setattr(check, "_engine_reference", skewed)
    bad = export_and_check((net, blobs), str(tmp_path / "c.onnx"), compare_opencv=False)
    assert not bad.ok and any("differs from the numpy engine" in w for w in bad.warnings)
    monkeypatch.undo()
    # a layer type without a numpy forward pass: today's check, with a note
    from fillers.layers.base import LayerType

    spec_type = type(net.layers[1].spec)
    monkeypatch.setattr(spec_type, "forward", LayerType.forward)
    report = export_and_check((net, blobs), str(tmp_path / "c.onnx"), compare_opencv=False)
    assert report.ok and not report.engine
    assert any("not compared with the numpy engine" in w and "no forward pass in numpy" in w for w in report.warnings)
    assert "shapes and finiteness only" in report.text()


def test_no_check_and_missing_weights(tmp_path):
    net = load(str(net_path(SMALL)))
    report = export_and_check((net, recipe_blobs(net)), str(tmp_path / "x.onnx"), check=False)
    assert report.ok and not report.checked and "not run" in report.text()
    with pytest.raises(ExportError, match="missing"):
        export(net, {}, str(tmp_path / "y.onnx"))
    assert not (tmp_path / "y.onnx").exists()


def test_external_data(tmp_path, monkeypatch):
    import onnx

    from fillers.onnx import writer as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1000)  # pretend the weights pass 2 GB
    net = load(str(net_path(SMALL)))
    blobs = recipe_blobs(net)
    path = tmp_path / "big.onnx"
    report = export_and_check((net, blobs), str(path))
    assert report.ok, report.text()
    assert (tmp_path / "big.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert any("external data" in w for w in report.warnings)
    assert os.path.getsize(path) < 100_000
    onnx.checker.check_model(str(path), full_check=True)
    loaded = onnx.load(str(path))  # reads the external data back
    assert sum(len(t.raw_data) for t in loaded.graph.initializer) == report.info.init_bytes
    # export() returns the full model even when the file has external data
    model = export(net, blobs, str(tmp_path / "big2.onnx"))
    assert sum(len(t.raw_data) for t in model.graph.initializer) == report.info.init_bytes
    with pytest.raises(ExportError, match="give a path"):
        export(net, blobs)


def test_opset_above_13(tmp_path):
    net = load(str(net_path("fillers_zoo")))
    blobs = recipe_blobs(net)
    golden = np.load(GOLDEN / "forward" / "fillers_zoo.npz")
    for opset in (17, 18, 21):
        model = export(net, blobs, opset=opset)
        assert model.opset_import[0].version == opset
        sess = ort_session(model)
        outs = sess.run(None, {i.name: golden[f"input/{i.name}"] for i in sess.get_inputs()})
        for o, y in zip(sess.get_outputs(), outs):
            ref = golden[f"output/{o.name}"]
            assert np.max(np.abs(y - ref)) <= 1e-4 * max(1, np.max(np.abs(ref)))
