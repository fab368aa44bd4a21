"""LSUV (Mishkin & Matas 2015): --filler lsuv, fillers.lab.lsuv, net.fill(filler="lsuv")."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import GOLDEN, SHARED
from fillers.caffemodel import read_caffemodel
from fillers.cli import main
from fillers.init import FILLERS
from fillers.lab import Engine, lsuv, stats
from fillers.lab.report import default_inputs, weighted
from fillers.net import load

LAB = sorted((GOLDEN / "nets").glob("lab_*.prototxt")) if (GOLDEN / "nets").exists() else []
RESNET50 = SHARED / "corpus" / "KaimingHe__deep-residual-networks" / "prototxt__ResNet-50-deploy.prototxt"


def own_variances(net, params, feeds, phase=None) -> dict:
    """Each weight layer's own output variance (before in-place successors), from a fresh forward."""
    out = {}

    def obs(li, bottoms, tops):
        if weighted(net.layers[li]):
            out[net.layers[li].name] = float(stats(tops[0])[1]) ** 2

    Engine(net, params, phase=phase).forward(feeds, keep=False, observer=obs)
    return out


@pytest.mark.parametrize("path", LAB, ids=[p.stem for p in LAB])
def test_lab_nets_unit_variance_after_lsuv(path):
    net = load(str(path))
    filled = net.fill(filler="lsuv", seed=3)
    feeds = default_inputs(net, 3)
    var = own_variances(net, filled.params, feeds)
    assert var
    recurrent = {l.name for l in net.layers if l.type in ("RNN", "LSTM")}
    for name, v in var.items():
        if name in recurrent and not abs(v - 1) < 0.1:
            # a bounded output (tanh, o * tanh(c)) may not reach 1: then a warning says so
            assert any(f"layer '{name}'" in w and "not within 0.1" in w for w in filled.warnings)
            continue
        assert abs(v - 1) < 0.1, (name, v)
    assert filled.lsuv.scales and all(r.filler.startswith("lsuv(orthogonal") for r in filled.records
                                      if r.layer in filled.lsuv.scales and r.index == 0)


def test_measures_the_layers_own_top_through_batchnorm_scale_and_in_place(tmp_path):
    """conv -> BatchNorm (fresh: x316) -> Scale -> ReLU, all in place: LSUV brings the
    convolution's own output to unit variance, not the blob after BatchNorm."""
    p = tmp_path / "bn.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 10 dim: 10 } } }\n'
                 'layer { name: "a" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 16 '
                 'kernel_size: 3 pad: 1 bias_term: false } }\n'
                 'layer { name: "n" type: "BatchNorm" bottom: "x" top: "x" }\n'
                 'layer { name: "s" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n'
                 'layer { name: "b" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 8 '
                 'kernel_size: 1 bias_filler { type: "constant" value: 0.5 } } }\n'
                 'layer { name: "r2" type: "ReLU" bottom: "y" top: "y" }\n')
    net = load(str(p))
    filled = net.fill(filler="lsuv", seed=1, lsuv_tol=0.01)
    feeds = default_inputs(net, 1)
    var = own_variances(net, filled.params, feeds)
    assert abs(var["a"] - 1) < 0.01 and abs(var["b"] - 1) < 0.01
    out = Engine(net, filled.params).forward(feeds)
    assert float(np.var(out["x"])) > 1000  # the blob after the in-place BatchNorm (x316) and ReLU
    assert filled.lsuv.iterations["b"] >= 1  # the bias: more than one rescale may be needed
    # BatchNorm and Scale are run, never rescaled
    assert (filled.params["s"][0] == 1).all() and set(filled.lsuv.scales) == {"a", "b"}


def test_python_api_and_zero_variance_is_skipped(tmp_path):
    p = tmp_path / "z.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 4 dim: 6 } } }\n'
                 'layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "h" inner_product_param { num_output: 5 } }\n'
                 'layer { name: "fc2" type: "InnerProduct" bottom: "h" top: "o" inner_product_param { num_output: 3 } }\n')
    net = load(str(p))
    params = net.fill(filler="orthogonal", seed=0).params
    w2 = params["fc2"][0].copy()
    feeds = {"data": np.zeros((4, 6), np.float32)}  # nothing varies
    res = lsuv(net, params, feeds, tol=0.1, max_iter=10)
    assert set(res.skipped) == {"fc1", "fc2"} and not res.scales
    assert any("fc1" in w and "variance is zero" in w for w in res.warnings)
    assert np.array_equal(params["fc2"][0], w2)
    feeds = {"data": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}
    res = lsuv(net, params, feeds, tol=0.05, max_iter=10)
    assert set(res.scales) == {"fc1", "fc2"} and all(abs(v - 1) < 0.05 for v in res.variances.values())
    assert abs(own_variances(net, params, feeds)["fc2"] - 1) < 0.05  # params were rescaled in place


def test_cli_writes_the_values_and_leaves_the_prototxt(tmp_path, capsys):
    src = GOLDEN / "nets" / "lab_plain22_relu_gauss.prototxt"
    if not src.exists():
        pytest.skip("no lab nets")
    p = tmp_path / "n.prototxt"
    p.write_text(src.read_text())
    before = p.read_bytes()
    out = tmp_path / "n.caffemodel"
    assert main([str(p), "--filler", "lsuv", "--lsuv-base", "msra", "--lsuv-tol", "0.05", "--seed", "4", "-o",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "lsuv(msra(FAN_IN), x" in text
    assert p.read_bytes() == before
    w = read_caffemodel(out)
    net = load(str(p))
    var = own_variances(net, w, default_inputs(net, 4))
    assert all(abs(v - 1) < 0.05 for v in var.values())
    # the report of the same fill shows it (stdout not a terminal: no progress bar)
    assert main([str(p), "--filler", "lsuv", "--seed", "4", "--report"]) == 0
    cap = capsys.readouterr()
    assert "lsuv" not in cap.err and "conv22" in cap.out


def test_lsuv_is_a_procedure_not_a_blob_filler(capsys):
    assert "lsuv" not in FILLERS
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert any(l.startswith("  lsuv ") for l in out.splitlines()) and "--lsuv-max-iter" in out
    with pytest.raises(Exception, match="lsuv_tol|unknown fill option"):
        load_text().fill(filler="xavier", lsuv_tol=0.1)


def load_text():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as fh:
        fh.write('layer { name: "in" type: "Input" top: "d" input_param { shape { dim: 2 dim: 3 } } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "d" top: "o" inner_product_param { num_output: 2 } }\n')
    return load(fh.name)


def test_lsuv_options_are_flags(tmp_path, capsys):
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "d" input_param { shape { dim: 2 dim: 3 } } }\n'
                   'layer { name: "fc" type: "InnerProduct" bottom: "d" top: "o" inner_product_param { num_output: 2 } }\n')
    assert main([str(net), "--filler", "lsuv:tol=0.2", "--no-caffemodel"]) == 2
    assert "--lsuv-tol" in capsys.readouterr().err
    assert main([str(net), "--filler", "lsuv", "--lsuv-base", "lsuv", "--no-caffemodel"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not RESNET50.exists(), reason="no corpus")
def test_resnet50_unit_variance_after_lsuv():
    text = RESNET50.read_text().replace("input_dim: 1\n", "input_dim: 2\n", 1)
    net = load(str(RESNET50), text=text)
    filled = net.fill(filler="lsuv", seed=1)
    var = own_variances(net, filled.params, default_inputs(net, 1))
    assert len(var) == 54
    assert all(abs(v - 1) < 0.1 for v in var.values()), {k: v for k, v in var.items() if not abs(v - 1) < 0.1}
