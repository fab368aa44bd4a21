"""fill-net's filling flow: the table, filler overrides, seeds, BatchNorm, progress."""

import os
import stat

import numpy as np
import pytest


from fillers.caffemodel import read_caffemodel
from fillers.cli import main
from fillers.net import load

NET = """name: "small"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "small.prototxt"
    p.write_text(NET)
    return p


def test_table_and_default_output(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(model), "--filler", "xavier", "--variance-norm", "FAN_OUT", "--seed", "7"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["layer", "blob", "shape", "filler", "fan_in", "fan_out", "mean", "std"]
    conv_w = next(l for l in lines if l.startswith("conv ") and " 0 " in l).split()
    assert conv_w[:6] == ["conv", "0", "8x3x3x3", "xavier(FAN_OUT)", "27", "72"]
    # xavier FAN_OUT: U(+-sqrt(3/72)) has std sqrt(1/72) = 0.118
    assert abs(float(conv_w[7]) - (1 / 72) ** 0.5) < 0.03
    conv_b = next(l for l in lines if l.startswith("conv ") and " 1 " in l).split()
    assert conv_b[3] == "constant(0.2)" and float(conv_b[6]) == pytest.approx(0.2) and conv_b[7] == "0"
    sc = [l.split() for l in lines if l.startswith("sc ")]
    assert [r[3] for r in sc] == ["constant(1)", "constant(0)"]  # Scale keeps Caffe's defaults
    assert "seed 7" in out.out
    assert "BatchNorm layer(s) (bn) hold fresh statistics" in out.err and "--batchnorm identity" in out.err
    saved = read_caffemodel(tmp_path / "small.caffemodel")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "small.caffemodel").stat().st_mode) == 0o666 & ~umask
    assert saved["conv"][0].shape == (8, 3, 3, 3) and np.all(np.abs(saved["conv"][0]) <= (3 / 72) ** 0.5)


def test_same_seed_same_weights_other_seed_other_weights(model, tmp_path):
    outs = []
    for seed in (1, 1, 2):
        p = tmp_path / f"{len(outs)}.caffemodel"
        assert main([str(model), "--filler", "msra", "--seed", str(seed), "-o", str(p), "-q"]) == 0
        outs.append(read_caffemodel(p)["fc"][0])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_bias_filler_compact_form_and_batchnorm_identity(model):
    net = load(model)
    filled = net.fill(bias_filler="gaussian:std=0.01,mean=1", seed=0, batchnorm="identity")
    b = filled.blobs["conv"][1]
    assert abs(b.mean() - 1) < 0.05 and 0 < b.std() < 0.05
    assert filled.blobs["sc"][1].tolist() == [0.0] * 8  # Scale's bias is not a layer bias
    mean, var, factor = filled.blobs["bn"]
    assert (mean == 0).all() and (var == 1).all() and factor.tolist() == [1.0]
    assert filled.warnings == []


def test_caffe_batchnorm_default_is_zero(model):
    filled = load(model).fill(seed=0)
    assert all((a == 0).all() for a in filled.blobs["bn"])


def test_progress_bar_for_big_nets(tmp_path, capsys):
    p = tmp_path / "big.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4000 } } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
                 'inner_product_param { num_output: 3000 weight_filler { type: "xavier" } } }\n')
    assert main([str(p), "--seed", "1", "-o", str(tmp_path / "b.caffemodel")]) == 0
    err = capsys.readouterr().err
    # issue 10: progress only on a terminal; stderr captured here is not one (the bar on a
    # pty is tested in tests/test_stream_cli.py)
    assert "filling" not in err


def test_unsupported_filler_combination_is_one_line(model, capsys):
    assert main([str(model), "--filler", "xavier", "--sparse", "3", "-o", "/dev/null"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fill-net: error: layer 'conv' (Convolution)") and "sparse" in err[0]


def test_fresh_batchnorm_overflow_is_explained(tmp_path, capsys):
    body = "".join(f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "x" top: "x" }}\n' for i in range(20))
    p = tmp_path / "bn.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }\n'
                 + body)
    onnx_path = tmp_path / "bn.onnx"
    # issue 9 changed this from exit 1: the numpy engine (Caffe's arithmetic) overflows at the
    # same positions, so the export is faithful; the net overflows, and the warning says why
    assert main([str(p), "--seed", "1", "-q", "-o", str(tmp_path / "bn.caffemodel"), "--onnx", str(onnx_path)]) == 0
    err = capsys.readouterr().err
    assert "20 BatchNorm layer(s) have a scale factor of 0" in err and "use --batchnorm identity" in err
    assert "the export is faithful" in err and "overflows" in err and "error" not in err
    assert main([str(p), "--seed", "1", "-q", "-o", str(tmp_path / "bn.caffemodel"), "--onnx", str(onnx_path),
                 "--batchnorm", "identity"]) == 0


def test_overrides_follow_the_declared_roles(model):
    """--filler replaces what the layer types declare weights, --bias-filler their biases;
    Scale's gain and shift (declared OTHER) keep the layer's own fillers."""
    filled = load(model).fill(filler="constant:value=3", bias_filler="constant:value=-2", seed=0)
    assert (filled.params["conv"][0] == 3).all() and (filled.params["fc"][0] == 3).all()
    assert (filled.params["conv"][1] == -2).all() and (filled.params["fc"][1] == -2).all()
    assert (filled.params["sc"][0] == 1).all() and (filled.params["sc"][1] == 0).all()
    assert filled.blobs is filled.params  # the older name


def test_filler_compact_form_and_flags_are_one_filler(model, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main([str(model), "--filler", "gaussian:std=0.25,mean=1", "--seed", "3", "-q", "--npz", str(a),
                 "--no-caffemodel"]) == 0
    assert main([str(model), "--filler", "gaussian", "--std", "0.25", "--mean", "1", "--seed", "3", "-q",
                 "--npz", str(b), "--no-caffemodel"]) == 0
    wa, wb = np.load(a)["fc/0"], np.load(b)["fc/0"]
    assert np.array_equal(wa, wb) and abs(wa.mean() - 1) < 0.05 and abs(wa.std() - 0.25) < 0.02


@pytest.mark.parametrize("flag,value,needle", [
    ("--filler", "gaussian:stdev=1", "'stdev'"),
    ("--filler", "gaussian:std=abc", "std='abc' is not a number"),
    ("--bias-filler", "nonsense", "invalid choice: 'nonsense'"),
    ("--bias-filler", "constant:0.1", "'0.1' is not of the form key=value"),
])
def test_bad_compact_fillers_are_usage_errors(model, capsys, flag, value, needle):
    with pytest.raises(SystemExit) as exit_info:
        main([str(model), flag, value, "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_help_lists_what_the_override_flags_replace(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "which blobs --filler and --bias-filler replace" in out
    lines = {l.split()[0]: l for l in out.splitlines() if "--bias-filler:" in l and l.startswith("  ")}
    assert "W_hc" in lines["LSTM"] and "b_o" in lines["RNN"] and "Scale" not in lines
    for name in ("xavier", "msra", "positive_unitball", "bilinear"):
        assert any(l.startswith(f"  {name} ") for l in out.splitlines())


def test_data_layer_inputs_are_listed(tmp_path, capsys):
    p = tmp_path / "data.prototxt"
    p.write_text('layer { name: "d" type: "Data" top: "data" top: "label" }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n')
    assert main([str(p), "--phase", "TRAIN", "--input", "data=4,3,5,5", "--dry-run"]) == 0
    assert "inputs: data, label;" in capsys.readouterr().out


def test_batch_statistics_batchnorm_is_not_warned_about(tmp_path):
    p = tmp_path / "bn.prototxt"
    p.write_text('input: "x" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
                 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: false } }\n'
                 'layer { name: "bn2" type: "BatchNorm" bottom: "y" top: "z" }\n')
    warnings = load(p).fill(seed=0).warnings
    assert len(warnings) == 1 and warnings[0].startswith("1 BatchNorm layer(s) (bn2) hold fresh statistics")
