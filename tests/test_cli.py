"""The command line: one-line errors with the right exit status, JSON only on stdout."""

import json
import subprocess
import sys

import pytest

from conftest import CORPUS, REPO
from fillers.cli import main

GOOD = """layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
"""


def run(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "fillers.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def one_error_line(proc):
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fill-net: error: ")
    return lines[0][len("fill-net: error: "):]


def write(tmp_path, text, name="net.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_malformed_file_gives_file_line_col(tmp_path):
    p = write(tmp_path, 'layer {\n  name: "a"\n  type: "ReLU" bottom: "x"\n  top: \n}\n')
    proc = run([p, "--dry-run"])
    assert proc.returncode == 1
    assert one_error_line(proc) == f"{p}:5:1: '}}': Expected string but found: '}}'"


@pytest.mark.parametrize("text,needle", [
    (GOOD + 'layer { name: "bad" type: "Frobnicate" bottom: "conv" top: "f" }\n',
     "layer 'bad' (Frobnicate): 'Frobnicate' is not a standard BVLC Caffe layer type"),
    (GOOD + 'layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }\n',
     "layer 'r' (ReLU): bottom 0 'nothing' is unknown: no earlier layer produces it"),
    (GOOD + 'layer { name: "big" type: "Convolution" bottom: "conv" top: "b" '
            'convolution_param { num_output: 2 kernel_size: 9 pad: 1 } }\n',
     "layer 'big' (Convolution): the kernel extent 9 is larger than the padded input 6 + 2*1"),
    (GOOD + 'layer { name: "cat" type: "Concat" bottom: "data" bottom: "conv" top: "c" }\n',
     "layer 'cat' (Concat): bottom 1 has shape [1, 4, 6, 6], which differs from bottom 0's [1, 3, 8, 8] on axis 2"),
    (GOOD + 'layer { name: "e" type: "Eltwise" bottom: "conv" top: "e" }\n',
     "layer 'e' (Eltwise): takes at least 2 bottom(s), not 1"),
    (GOOD + 'layer { name: "p" type: "Pooling" bottom: "conv" top: "p" pooling_param { kernel_size: 2 pad: 2 } }\n',
     "layer 'p' (Pooling): pad 2 must be smaller than the kernel 2"),
    (GOOD + 'layer { name: "rs" type: "Reshape" bottom: "conv" top: "rs" reshape_param { shape { dim: 7 dim: -1 } } }\n',
     "layer 'rs' (Reshape): cannot infer dim 1: 144 elements are not a multiple of 7"),
    (GOOD + 'layer { name: "conv2" type: "ReLU" bottom: "data" top: "conv" }\n',
     "layer 'conv2' (ReLU): top 'conv' is also produced by layer 'conv'"),
])
def test_bad_nets_name_the_layer(tmp_path, text, needle):
    proc = run([write(tmp_path, text), "--dry-run"])
    assert proc.returncode == 1
    assert needle in one_error_line(proc)
    assert proc.stdout == ""


@pytest.mark.shared
def test_missing_database_shape_shows_the_flag():
    proc = run([CORPUS / "BVLC__caffe/models__bvlc_alexnet__train_val.prototxt", "--dry-run"])
    assert proc.returncode == 1
    msg = one_error_line(proc)
    assert msg.startswith("layer 'data' (Data): ") and "--input data=N,C,H,W" in msg
    ok = run([CORPUS / "BVLC__caffe/models__bvlc_alexnet__train_val.prototxt", "--json",
              "--input", "data=10,3,227,227"])
    assert ok.returncode == 0
    d = json.loads(ok.stdout)
    assert d["blobs"]["label"] == [10] and d["blobs"]["fc8"] == [10, 1000]


@pytest.mark.parametrize("args,needle", [
    (["--input", "data=1,x,3"], "--input 'data=1,x,3' is not of the form NAME=N,C,H,W"),
    (["--input", "nothere=1,2"], "--input names nothere, which no data layer of this net produces"),
    (["--std", "0.1"], "--std needs --filler"),
    (["--filler", "nonsense"], "argument --filler: invalid choice"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_usage_errors_exit_2(tmp_path, args, needle):
    proc = run([write(tmp_path, GOOD), *args])
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_is_one_line():
    proc = run(["/nonexistent/x.prototxt", "--dry-run"])
    assert proc.returncode == 1
    assert one_error_line(proc) == "/nonexistent/x.prototxt: cannot read the file: No such file or directory"


def test_json_only_on_stdout_warnings_on_stderr(tmp_path):
    text = GOOD + 'layer { name: "p" type: "Pooling" bottom: "conv" top: "p" pooling_param { kernel_size: 3 ceil_mode: false } }\n'
    proc = run([write(tmp_path, text), "--json"])
    assert proc.returncode == 0
    d = json.loads(proc.stdout)
    assert [l["name"] for l in d["layers"]] == ["in", "conv", "p"]
    assert d["blobs"]["p"] == [1, 4, 4, 4] and d["layers"][1]["params"] == [[4, 3, 3, 3], [4]]
    assert "ceil_mode" in proc.stderr and proc.stderr.startswith("fill-net: warning: ")


def test_dry_run_table_has_totals(tmp_path, capsys):
    assert main([str(write(tmp_path, GOOD)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "conv   Convolution  1x4x6x6  4x3x3x3, 4    112" in out
    assert "2 layers, 112 parameters" in out


def test_help_explains_fillers():
    proc = run(["--help"])
    assert proc.returncode == 0
    assert "xavier             U(-sqrt(3/n), sqrt(3/n))" in proc.stdout and "--rng {fast,caffe}" in proc.stdout


def test_binary_and_empty_inputs_are_explained(tmp_path):
    binary = tmp_path / "w.caffemodel"
    binary.write_bytes(b"\n\x05lenet\xa2\x06\x00\x00\x00")
    proc = run([binary, "--dry-run"])
    assert proc.returncode == 1
    assert one_error_line(proc) == f"{binary}: this is a binary file (a .caffemodel?), not a text prototxt; " \
                                   "give the net definition, and the weights with --weights"
    empty = write(tmp_path, 'name: "e"\n', "empty.prototxt")
    proc = run([empty, "--dry-run"])
    assert proc.returncode == 1 and one_error_line(proc) == f"{empty}: the net has no layers"
    train_only = write(tmp_path, GOOD.replace("} }\n", "} include { phase: TRAIN } }\n"), "t.prototxt")
    proc = run([train_only, "--dry-run"])
    assert "no layers left for phase TEST" in one_error_line(proc)
    assert run([train_only, "--dry-run", "--phase", "TRAIN"]).returncode == 0
