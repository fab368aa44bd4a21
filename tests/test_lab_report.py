"""The signal lab's command line: ``fill-net --report`` (table and JSON) against Caffe's
signal goldens, ``--compare``, ``--plot``, ``--inputs``/``--output-diffs`` key forms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import GOLDEN
from fillers.cli import main
from fillers.lab.compare import parse_fillers

TOL = 1e-4
SIGNAL = GOLDEN / "signal"
LAB_NETS = sorted(p.stem for p in (GOLDEN / "nets").glob("lab_*.prototxt")) if (GOLDEN / "nets").exists() else []
WORST = {"err": 0.0, "where": ""}


def _stat_errors(ours, ref):
    """The issue's tolerances: std and mean |x| relative; mean, min, max relative to
    max(|value|, std of the blob)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    std = abs(ref[1])
    scale = np.array([max(abs(ref[0]), std), abs(ref[1]), max(abs(ref[2]), std), max(abs(ref[3]), std), abs(ref[4])])
    err = np.abs(ours - ref)
    return np.where(scale > 0, err / np.where(scale > 0, scale, 1), np.where(err > 0, np.inf, 0.0))


def _report_json(capsys, args) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not (SIGNAL / "index.json").exists(), reason="no signal goldens")
@pytest.mark.parametrize("net_id", LAB_NETS)
def test_report_json_reproduces_caffes_signal(net_id, capsys):
    index = json.loads((SIGNAL / "index.json").read_text())["nets"]
    entry = index[net_id]
    args = [str(GOLDEN / "nets" / f"{net_id}.prototxt"), "--rng", "caffe", "--seed", "1701", "--report", "json",
            "--inputs", str(GOLDEN / "forward" / f"{net_id}.npz"), "--output-diffs", str(SIGNAL / f"{net_id}.npz"),
            "--phase", entry.get("phase", "TEST")]
    rep = _report_json(capsys, args)
    golden = np.load(SIGNAL / f"{net_id}.npz")
    errs, missing = {}, []
    for key in golden.files:
        kind, rest = key.split("/", 1)
        if kind == "stats":
            ours = rep["blobs"].get(rest, {}).get("data")
        elif kind == "dstats":
            ours = rep["blobs"].get(rest, {}).get("diff")
        elif kind == "pdstats":
            ours = rep["params"].get(rest, {}).get("diff")
        else:
            continue
        if ours is None:
            missing.append(key)
            continue
        errs[key] = float(_stat_errors(ours, golden[key]).max())
    assert not missing, missing[:8]
    assert len(errs) > 10
    worst = max(errs, key=errs.get)
    if errs[worst] > WORST["err"]:
        WORST.update(err=errs[worst], where=f"{net_id} {worst}")
    over = {k: v for k, v in errs.items() if not v <= TOL}
    assert not over, f"{len(over)} of {len(errs)}: " + "; ".join(f"{k}: {v:.3g}" for k, v in list(over.items())[:8])
    # every parameter blob's data statistics are there too (Caffe's fills, bit-exact)
    fills = np.load(GOLDEN / "fills" / f"{net_id}.npz") if (GOLDEN / "fills" / f"{net_id}.npz").exists() else None
    if fills is not None:
        for key in fills.files:
            if key in rep["params"]:
                a = fills[key].astype(np.float64)
                assert rep["params"][key]["data"][1] == pytest.approx(a.std(), rel=1e-6, abs=1e-12)


@pytest.fixture(scope="module", autouse=True)
def worst_error_line(request):
    """After the module: the worst relative error of the report against signal/."""
    yield
    rep = request.config.pluginmanager.getplugin("terminalreporter")
    if rep is not None and WORST["where"]:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            rep.write_line(f"\n--report json vs signal/: worst relative error {WORST['err']:.3g} ({WORST['where']})")


NET = """name: "tiny"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(NET)
    return p


def test_report_table_rows_and_summary(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(tiny), "--seed", "3", "--report", "--batchnorm", "identity"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("depth"))
    names = [l.split()[1] for l in lines[head + 2:] if l.strip() and l.split()[0].isdigit()]
    assert names == ["conv1", "bn1", "sc1", "relu1", "conv2", "relu2", "fc"]  # net order, params + nonlinearities
    conv2 = next(l for l in lines if l.split()[1:2] == ["conv2"]).split()
    assert conv2[0] == "2" and conv2[2] == "Convolution"
    # n_in * Var(W) of gaussian(0.01) with fan_in 72: 0.0072
    assert float(conv2[9]) == pytest.approx(72 * 1e-4, rel=0.3)
    assert "fwd v" in out  # gaussian(0.01) twice: the signal falls below 1e-3 of the input's
    assert "forward gain input -> output" in lines[-2] and "backward gain output -> input" in lines[-2]
    assert not (tmp_path / "tiny.caffemodel").exists()  # a report writes no weights unless asked


def test_report_json_keys_and_the_layers_own_output(tiny, capsys):
    rep = _report_json(capsys, [str(tiny), "--seed", "3", "--report", "json", "--batchnorm", "identity"])
    assert set(rep["blobs"]) >= {"data", "conv1", "conv2", "fc", "prob"}
    assert set(rep["params"]) == {"conv1/0", "conv1/1", "bn1/0", "bn1/1", "bn1/2", "sc1/0", "sc1/1", "conv2/0",
                                  "conv2/1", "fc/0", "fc/1"}
    assert all(len(v["data"]) == 5 and len(v["diff"]) == 5 for v in rep["blobs"].values())
    rows = {r["layer"]: r for r in rep["layers"]}
    # conv1's row is the convolution's own output (std ~0.01 scale), not relu1's result in the same blob
    assert rows["conv1"]["std"] < 0.2 and rows["relu1"]["std"] != rows["conv1"]["std"]
    assert rep["blobs"]["conv1"]["data"][1] == pytest.approx(rows["relu1"]["std"])  # the blob holds the last writer's
    assert rep["summary"]["forward_gain"] is not None and rep["summary"]["backward_gain"] is not None


def test_inputs_and_diffs_keys_bare_or_prefixed(tiny, capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    d = rng.standard_normal((4, 5)).astype(np.float32)
    np.savez(tmp_path / "bare.npz", data=x)
    np.savez(tmp_path / "pref.npz", **{"input/data": x, "stats/data": np.zeros(5)})
    np.savez(tmp_path / "dbare.npz", prob=d)
    np.savez(tmp_path / "dpref.npz", **{"diff/prob": d})
    a = _report_json(capsys, [str(tiny), "--seed", "1", "--report", "json", "--inputs", str(tmp_path / "bare.npz"),
                              "--output-diffs", str(tmp_path / "dbare.npz")])
    b = _report_json(capsys, [str(tiny), "--seed", "1", "--report", "json", "--inputs", str(tmp_path / "pref.npz"),
                              "--output-diffs", str(tmp_path / "dpref.npz")])
    assert a["blobs"] == b["blobs"]
    assert a["blobs"]["data"]["data"][1] == pytest.approx(float(x.std()), rel=1e-5)
    assert a["blobs"]["prob"]["diff"][1] == pytest.approx(float(d.std()), rel=1e-5)
    np.savez(tmp_path / "bad.npz", nonsense=x)
    assert main([str(tiny), "--report", "--inputs", str(tmp_path / "bad.npz")]) == 1
    assert "'nonsense' names no input" in capsys.readouterr().err


def test_train_phase_uses_the_loss_layers(tmp_path, capsys):
    p = tmp_path / "train.prototxt"
    p.write_text('layer { name: "d" type: "Input" top: "data" top: "label" input_param { shape { dim: 8 dim: 6 } '
                 'shape { dim: 8 } } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                 'inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n')
    rep = _report_json(capsys, [str(p), "--phase", "TRAIN", "--seed", "2", "--report", "json"])
    assert rep["blobs"]["loss"]["diff"][0] == 1.0  # loss_weight 1 starts the backward pass
    assert rep["params"]["fc/0"]["diff"][1] > 0
    labels = rep["blobs"]["label"]["data"]
    assert labels[2] >= 0 and labels[3] <= 2  # class indices, not Gaussian noise


def test_recurrent_time_steps(capsys):
    net = GOLDEN / "nets" / "lab_rnn_t40.prototxt"
    if not net.exists():
        pytest.skip("no lab nets")
    rep = _report_json(capsys, [str(net), "--seed", "1701", "--rng", "caffe", "--report", "json"])
    norms = rep["time_steps"]["rnn"]
    assert len(norms) == 40 and norms[-1] > 100 * norms[0]  # the gradient fades going back in time
    assert main([str(net), "--seed", "1", "--report"]) == 0
    assert "rnn: gradient norm w.r.t. each time step" in capsys.readouterr().out


def test_compare_list_forms():
    assert parse_fillers("xavier,msra,gaussian:std=0.01") == ["xavier", "msra", "gaussian:std=0.01"]
    assert parse_fillers("gaussian:std=0.01,mean=1,xavier:variance_norm=AVERAGE") == [
        "gaussian:std=0.01,mean=1", "xavier:variance_norm=AVERAGE"]
    assert parse_fillers("gaussian:std=0.01,mean=1;msra") == ["gaussian:std=0.01,mean=1", "msra"]
    assert parse_fillers(["xavier", "msra"]) == ["xavier", "msra"]


def test_compare_side_by_side_same_inputs(tiny, capsys):
    assert main([str(tiny), "--seed", "5", "--compare", "xavier,msra,gaussian:std=0.01", "--batchnorm", "identity"]) == 0
    out = capsys.readouterr().out
    head = next(l for l in out.splitlines() if l.startswith("depth"))
    assert "xavier std" in head and "msra grad" in head and "gaussian:std=0.01 std" in head
    rep = _report_json(capsys, [str(tiny), "--seed", "5", "--compare", "xavier;msra", "--report", "json",
                                "--batchnorm", "identity"])
    a, b = rep["fillers"]
    assert a["filler"] == "xavier" and b["filler"] == "msra"
    assert a["blobs"]["data"]["data"] == b["blobs"]["data"]["data"]  # the same inputs
    assert a["blobs"]["prob"]["diff"] == b["blobs"]["prob"]["diff"]  # the same diffs
    assert a["params"]["conv1/0"]["data"] != b["params"]["conv1/0"]["data"]


def test_compare_bad_filler_is_one_line(tiny, capsys):
    assert main([str(tiny), "--compare", "xavier,nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown filler 'nonsense'" in err[0]


def test_plot_png(tiny, tmp_path, capsys):
    plt = pytest.importorskip("matplotlib.pyplot")
    out = tmp_path / "signal.png"
    assert main([str(tiny), "--seed", "1", "--compare", "xavier,msra", "--plot", str(out), "-q"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = plt.imread(str(out))
    assert img.shape[:2] == (420, 1100)  # 11 x 4.2 inches at 100 dpi
    rgb = img[..., :3]
    assert rgb.std() > 0.05 and (rgb < 0.5).mean() > 0.002  # lines, text, not blank


def test_plot_recurrent_has_a_time_panel(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    net = GOLDEN / "nets" / "lab_lstm_t40.prototxt"
    if not net.exists():
        pytest.skip("no lab nets")
    out = tmp_path / "lstm.png"
    assert main([str(net), "--seed", "1", "--plot", str(out), "-q"]) == 0
    img = plt.imread(str(out))
    assert img.shape[:2] == (420, 1430)


def test_plot_without_matplotlib_names_the_extra(tiny, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert main([str(tiny), "--seed", "1", "--plot", str(tmp_path / "x.png"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fill-net: error: --plot needs matplotlib: pip install 'caffe-fillers[lab]'"]


EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fillers" / "examples"


def test_example_nets_tell_the_story(capsys):
    """The shipped examples: gaussian 0.01 vanishes, xavier decays under ReLU, msra and
    BatchNorm keep the signal; the recurrent pair shows the gradient fading back in time."""
    gains = {}
    for name in ("plain20_relu_xavier", "plain20_relu_msra", "plain20_relu_gauss", "plain20_tanh_xavier",
                 "plain20_sigmoid_xavier", "plain20_bn_relu_gauss"):
        rep = _report_json(capsys, [str(EXAMPLES / f"{name}.prototxt"), "--seed", "1", "--report", "json"])
        conv20 = next(r for r in rep["layers"] if r["layer"] == "conv20")
        gains[name] = conv20["std"]
    assert gains["plain20_relu_gauss"] < 1e-15 < gains["plain20_relu_xavier"] < 1e-2 < gains["plain20_relu_msra"]
    assert gains["plain20_bn_relu_gauss"] > 1e-2
    for name in ("rnn_t50", "lstm_t50"):
        rep = _report_json(capsys, [str(EXAMPLES / f"{name}.prototxt"), "--seed", "1", "--report", "json"])
        (norms,) = rep["time_steps"].values()
        assert len(norms) == 50 and norms[0] < 1e-3 * norms[-1]


def test_readme_plot_is_committed_and_small():
    png = EXAMPLES.parents[1] / "docs" / "signal_plain20_relu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert "docs/signal_plain20_relu.png" in (EXAMPLES.parents[1] / "README.md").read_text()


def test_report_of_trained_weights(tiny, tmp_path, capsys):
    w = tmp_path / "w.caffemodel"
    assert main([str(tiny), "--filler", "msra", "--seed", "9", "-q", "-o", str(w), "--batchnorm", "identity"]) == 0
    from fillers.caffemodel import read_caffemodel

    conv2 = read_caffemodel(w)["conv2"][0].astype(np.float64)
    rep = _report_json(capsys, [str(tiny), "--weights", str(w), "--report", "json", "--seed", "1"])
    assert rep["params"]["conv2/0"]["data"][1] == pytest.approx(conv2.std(), rel=1e-6)
    row = next(r for r in rep["layers"] if r["layer"] == "conv2")
    assert row["n_in_var"] == pytest.approx(72 * conv2.var(), rel=1e-5)
