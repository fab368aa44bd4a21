"""fill-net in production: interrupted and concurrent writes, zoo runs, progress on a
terminal only, the trained-weights report, unknown fillers replaced by --filler."""

import json
import os
import pty
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from fillers.caffemodel import read_caffemodel
from fillers.cli import main

NET = """layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "y" inner_product_param { num_output: 5 } }
"""

#: 12 M parameters: over the progress bar's threshold, a fill of a fraction of a second
BIG = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4000 } } }\n'
       'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
       'inner_product_param { num_output: 3000 weight_filler { type: "xavier" } } }\n')


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(extra)
    return env


def _cli(*args):
    return [sys.executable, "-m", "fillers.cli", *map(str, args)]


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture
def net(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return p


# ---- interrupted and concurrent writes ----------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("outputs", [["-o", "out.caffemodel", "--npz", "out.npz"],
                                     ["--no-caffemodel", "--onnx", "out.onnx", "--no-check"]])
def test_interrupted_write_leaves_nothing(tmp_path, net, sig, outputs):
    """The writer pauses once its temporary file exists (a test hook); a signal then must
    leave neither the temporary files nor an output."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(_cli(net, "--seed", "1", "-q", *outputs), cwd=out, stderr=subprocess.PIPE, text=True,
                            env=_env(CAFFE_FILLERS_TEST_PAUSE="60"))
    try:
        line = proc.stderr.readline()
        assert line.startswith("paused writing"), line
        assert _leftovers(out)  # the temporary file is there
        proc.send_signal(sig)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 128 + sig, err
    assert "interrupted; nothing was written" in err
    assert list(out.iterdir()) == [], list(out.iterdir())


def test_two_writers_leave_one_complete_file(tmp_path, net):
    out = tmp_path / "same.caffemodel"
    procs = [subprocess.Popen(_cli(net, "--seed", seed, "-q", "-o", out), stderr=subprocess.PIPE, text=True,
                              env=_env(CAFFE_FILLERS_TEST_PAUSE="0.5")) for seed in (1, 2)]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read()
    expected = []
    for seed in (1, 2):
        ref = tmp_path / f"ref{seed}.caffemodel"
        assert main([str(net), "--seed", str(seed), "-q", "-o", str(ref)]) == 0
        expected.append(ref.read_bytes())
    assert out.read_bytes() in expected
    read_caffemodel(out)  # a complete, valid file
    assert _leftovers(tmp_path) == []


# ---- zoo runs -----------------------------------------------------------------------------

@pytest.fixture
def zoo(tmp_path):
    d = tmp_path / "zoo"
    (d / "sub").mkdir(parents=True)
    (d / "a.prototxt").write_text(NET)
    (d / "sub" / "b.prototxt").write_text(NET.replace("num_output: 5", "num_output: 7"))
    (d / "broken.prototxt").write_text(NET.replace('bottom: "c"', 'bottom: "nowhere"'))
    (d / "notes.txt").write_text("not a net")
    return d


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_zoo_run_reports_every_model_and_fails_on_one(tmp_path, zoo, capsys, jobs):
    out = tmp_path / "out"
    rc = main([str(zoo), "--out-dir", str(out), "--filler", "xavier", "--seed", "1", "--jobs", jobs])
    captured = capsys.readouterr()
    assert rc == 1
    lines = captured.out.splitlines()
    assert lines[0].split() == ["model", "layers", "parameters", "time", "result"]
    rows = {l.split()[0]: l for l in lines[2:5]}
    assert set(rows) == {"a", "broken", "sub__b"}
    assert "ok" in rows["a"] and "ok" in rows["sub__b"] and " 3 " in rows["a"]
    assert "error: layer 'fc' (InnerProduct): bottom 0 'nowhere' is unknown" in rows["broken"]
    assert "3 model(s): 2 ok, 1 error" in captured.out
    assert captured.err == ""  # stderr is no terminal: no progress lines
    assert sorted(p.name for p in out.iterdir()) == ["a.caffemodel", "sub__b.caffemodel"]
    assert read_caffemodel(out / "sub__b.caffemodel")["fc"][0].shape == (7, 144)


def test_zoo_json_and_outputs(tmp_path, zoo, capsys):
    out = tmp_path / "out"
    models = [str(zoo / "a.prototxt"), str(zoo / "sub" / "b.prototxt")]
    rc = main([*models, "--out-dir", str(out), "--seed", "1", "--json", "-j", "2", "--npz", "{name}.npz",
               "--onnx", "{name}.onnx", "--no-caffemodel"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] == 2 and data["failed"] == 0
    assert [m["model"] for m in data["models"]] == ["a", "sub__b"]
    assert all(m["result"] == "ok" and m["params"] > 0 for m in data["models"])
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "a.onnx", "sub__b.npz", "sub__b.onnx"]


def test_zoo_output_names_need_a_placeholder(zoo, capsys):
    assert main([str(zoo), "--onnx", "x.onnx"]) == 2
    assert "{name}" in capsys.readouterr().err


def test_zoo_progress_lines_on_a_terminal(tmp_path, zoo):
    text, rc = _run_with_pty_stderr(_cli(zoo, "--out-dir", tmp_path / "out", "--seed", "1"))
    assert rc == 1
    assert "[1/3]" in text and "[3/3]" in text and "broken" in text


# ---- progress -----------------------------------------------------------------------------

def _run_with_pty_stderr(cmd, cwd=None):
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, cwd=cwd, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace"), proc.wait(60)


def test_progress_on_a_terminal_only(tmp_path):
    p = tmp_path / "big.prototxt"
    p.write_text(BIG)
    text, rc = _run_with_pty_stderr(_cli(p, "--seed", "1", "-o", tmp_path / "b.caffemodel", "--onnx",
                                         tmp_path / "b.onnx", "--no-check"))
    assert rc == 0
    assert "filling [" in text and "100.0%" in text and "ONNX export [" in text
    text, rc = _run_with_pty_stderr(_cli(p, "--seed", "1", "-q", "-o", tmp_path / "b.caffemodel"))
    assert rc == 0 and text == ""
    piped = subprocess.run(_cli(p, "--seed", "1", "-o", tmp_path / "b.caffemodel"), capture_output=True, text=True,
                           env=_env())
    assert piped.returncode == 0 and piped.stderr == ""


# ---- trained weights, unknown fillers -----------------------------------------------------

def test_weights_report(tmp_path, net, capsys):
    other = tmp_path / "other.prototxt"
    other.write_text(NET.replace('name: "fc"', 'name: "fc_new"').replace(
        'top: "y" inner', 'top: "y" inner').replace("num_output: 5", "num_output: 5") +
        'layer { name: "extra" type: "InnerProduct" bottom: "y" top: "z" inner_product_param { num_output: 2 } }\n')
    trained = tmp_path / "t.caffemodel"
    assert main([str(other), "--seed", "1", "-q", "-o", str(trained)]) == 0
    assert main([str(net), "--weights", str(trained), "-o", str(tmp_path / "w.caffemodel")]) == 0
    out = capsys.readouterr().out
    assert (f"weights: copied 2 layers from {trained}; filled 1 layer the file lacks: fc; "
            "ignored 2 layers of the file not in the net: fc_new, extra") in out
    w = read_caffemodel(tmp_path / "w.caffemodel")
    assert np.array_equal(w["conv"][0], read_caffemodel(trained)["conv"][0])


def test_unknown_filler_replaced_by_filler_warns(tmp_path, capsys):
    p = tmp_path / "unk.prototxt"
    p.write_text(NET.replace("kernel_size: 3", 'kernel_size: 3 weight_filler { type: "lsuv_magic" }'))
    assert main([str(p), "-q", "-o", str(tmp_path / "u.caffemodel")]) == 1
    err = capsys.readouterr().err
    assert "layer 'conv' (Convolution)" in err and "Unknown filler type 'lsuv_magic'" in err
    assert main([str(p), "-q", "-o", str(tmp_path / "u.caffemodel"), "--filler", "xavier"]) == 0
    err = capsys.readouterr().err
    assert "warning: layer 'conv' (Convolution): its weights filler type 'lsuv_magic' is unknown; " \
           "replaced by --filler xavier" in err


# ---- a net input that is a net output -----------------------------------------------------

def test_unused_input_top_is_an_onnx_output(tmp_path):
    """Caffe's outputs are the blobs no layer consumes, an Input top too (an unused
    label): the export declares it as graph input and output at once, which onnx's
    checker, onnxruntime and the OpenCV comparison accept."""
    from fillers import load
    from fillers.onnx import export_and_check

    text = ('layer { name: "in" type: "Input" top: "data" top: "label" '
            'input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }\n')
    net = load("n.prototxt", text=text)
    assert net.outputs == ["conv", "label"]
    report = export_and_check(net.fill(seed=1), tmp_path / "n.onnx")
    assert report.ok and report.warnings == []
    assert list(report.info.outputs) == ["conv", "label"] and list(report.info.inputs) == ["data", "label"]
    label = next(o for o in report.outputs if o.name == "label")
    assert label.max_abs_err == 0.0  # onnxruntime passes the fed values through, as OpenCV's reference


def test_zoo_with_a_plugin(tmp_path):
    """--plugin is loaded once; every model (and every job's process) knows the type."""
    plugin = tmp_path / "plug.py"
    plugin.write_text("from fillers.layers import LayerType, register\n\n"
                      "@register('ZooTestUpsample')\nclass Up(LayerType):\n"
                      "    def outputs(self, bottoms):\n        n, c, h, w = bottoms[0]\n"
                      "        return [(n, c, 2 * h, 2 * w)]\n")
    models = tmp_path / "models"
    models.mkdir()
    for i in range(3):
        first, rest = NET.split("\n", 1)
        (models / f"m{i}.prototxt").write_text(
            first + '\nlayer { name: "up" type: "ZooTestUpsample" bottom: "x" top: "u" }\n'
            + rest.replace('bottom: "x" top: "c"', 'bottom: "u" top: "c"'))
    for jobs in ("1", "2"):
        r = subprocess.run(_cli(models, "--plugin", plugin, "-j", jobs, "--out-dir", tmp_path / f"o{jobs}", "--json"),
                           capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["ok"] == 3
