"""Reading prototxt files the way Caffe does: V1 upgrade, solvers, CRLF, quotes,
include/exclude rules, fork fields."""

import pytest

from conftest import CORPUS
from fillers import caffe_pb2
from fillers.errors import NetError, ParseError
from fillers.net import load

NET = """name: "t"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "drop_train" type: "Dropout" bottom: "conv" top: "conv" include { phase: TRAIN } }
layer { name: "staged" type: "ReLU" bottom: "conv" top: "conv" include { stage: "deploy" } }
layer { name: "unstaged" type: "TanH" bottom: "conv" top: "conv" exclude { stage: "deploy" } }
layer { name: "leveled" type: "Sigmoid" bottom: "conv" top: "conv" include { min_level: 2 } }
"""


def write(tmp_path, text, name="net.prototxt", newline="\n"):
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode())
    return p


def names(net):
    return [l.name for l in net.layers]


def test_phase_stage_level_rules(tmp_path):
    p = write(tmp_path, NET)
    assert names(load(p)) == ["in", "conv", "unstaged"]
    assert names(load(p, phase="TRAIN")) == ["in", "conv", "drop_train", "unstaged"]
    assert names(load(p, stages=["deploy"])) == ["in", "conv", "staged"]
    assert names(load(p, level=2)) == ["in", "conv", "unstaged", "leveled"]


def test_include_and_exclude_together_is_an_error(tmp_path):
    p = write(tmp_path, NET.replace('include { phase: TRAIN }', 'include { phase: TRAIN } exclude { phase: TEST }'))
    with pytest.raises(NetError, match="layer 'drop_train'.*either include or exclude"):
        load(p)


def test_crlf_and_single_quotes(tmp_path):
    p = write(tmp_path, NET.replace('"', "'"), newline="\r\n")
    net = load(p)
    assert net.blobs["conv"] == (2, 4, 6, 6)


@pytest.mark.shared
def test_v1_file_equals_its_v2_twin():
    v1 = load(CORPUS / "BVLC__caffe/models__bvlc_reference_caffenet__deploy__v1_at_11a4c16.prototxt")
    v2 = load(CORPUS / "BVLC__caffe/models__bvlc_reference_caffenet__deploy.prototxt")
    assert [(l.type, [p.shape for p in l.params]) for l in v1.layers[1:]] == \
           [(l.type, [p.shape for p in l.params]) for l in v2.layers[1:]]
    assert v1.layers[0].name == "input" and v1.layers[0].type == "Input"


@pytest.mark.shared
def test_v1_blobs_lr_and_weight_decay_become_param_specs():
    net = load(CORPUS / "BVLC__caffe/examples__mnist__lenet_train_test__v1_at_11a4c16.prototxt",
               input_shapes={"data": (64, 1, 28, 28)})
    conv = net.layer("conv1").lp
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]
    assert not any(p.HasField("decay_mult") for p in conv.param)  # no weight_decay given
    assert conv.convolution_param.weight_filler.type == "xavier"


@pytest.mark.shared
def test_solver_file_with_net_param():
    path = CORPUS / "ducha-aiki__LSUVinit/examples__lsuv__mnist__fitnet_mnist_lsuv_rms_SVM.prototxt"
    net = load(path, input_shapes={"data": (2, 1, 28, 28)})
    assert net.n_params > 0 and net.layers[0].type == "Data"


def test_ceil_mode_fork_field_becomes_round_mode(tmp_path):
    text = """layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "p_floor" type: "Pooling" bottom: "x" top: "a" pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }
layer { name: "p_ceil" type: "Pooling" bottom: "x" top: "b" pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: true } }
layer { name: "odd" type: "ReLU" bottom: "b" top: "b" fork_block { x: 1 y { z: "}" } } }
"""
    net = load(write(tmp_path, text))
    assert net.blobs["a"] == (1, 1, 2, 2)  # floor((6-3)/2)+1
    assert net.blobs["b"] == (1, 1, 3, 3)  # ceil((6-3)/2)+1
    assert len(net.warnings) == 3
    assert "pooling_param.ceil_mode: false read as BVLC's round_mode: FLOOR" in net.warnings[0]
    assert ":4:" in net.warnings[2] and "'fork_block'" in net.warnings[2]


def test_malformed_file_reports_line_and_column(tmp_path):
    p = write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  bottom: \n}\n')
    with pytest.raises(ParseError) as info:
        load(p)
    assert info.value.line == 5 and info.value.column == 1
    assert str(info.value).startswith(f"{p}:5:1: ")


def test_input_dim_fields_become_an_input_layer(tmp_path):
    p = write(tmp_path, 'input: "a"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 3\ninput_dim: 4\n'
                        'input: "b"\ninput_dim: 5\ninput_dim: 6\ninput_dim: 7\ninput_dim: 8\n')
    net = load(p)
    assert net.layers[0].name == "input" and net.inputs == ["a", "b"]
    assert net.blobs == {"a": (1, 2, 3, 4), "b": (5, 6, 7, 8)}
    bad = write(tmp_path, 'input: "a"\ninput_dim: 1\ninput_dim: 2\n', "bad.prototxt")
    with pytest.raises(ParseError, match="need 4 input_dim values"):
        load(bad)


def test_shared_params_resolve_to_first_owner(tmp_path):
    text = """layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "f1" type: "InnerProduct" bottom: "a" top: "x" param { name: "w" } param { name: "bb" }
  inner_product_param { num_output: 3 } }
layer { name: "f2" type: "InnerProduct" bottom: "b" top: "y" param { name: "w" } param { name: "bb" }
  inner_product_param { num_output: 3 } }
layer { name: "f3" type: "InnerProduct" bottom: "b" top: "z" param { name: "w" }
  inner_product_param { num_output: 4 } }
"""
    with pytest.raises(NetError, match="layer 'f3'.*cannot share param 'w' owned by layer 'f1'"):
        load(write(tmp_path, text))
    net = load(write(tmp_path, text.rsplit('layer { name: "f3"', 1)[0], "ok.prototxt"))
    assert net.layer("f2").owners == [(1, 0), (1, 1)]
    assert net.n_params == 3 * 5 + 3


def test_dummy_data_legacy_dims_and_memory_data(tmp_path):
    text = """layer { name: "d" type: "DummyData" top: "a" top: "b"
  dummy_data_param { num: 2 channels: 3 height: 4 width: 5 } }
layer { name: "m" type: "MemoryData" top: "x" top: "y"
  memory_data_param { batch_size: 7 channels: 1 height: 2 width: 3 } }
"""
    net = load(write(tmp_path, text))
    assert net.blobs == {"a": (2, 3, 4, 5), "b": (2, 3, 4, 5), "x": (7, 1, 2, 3), "y": (7,)}


def test_loss_without_tops_gets_an_automatic_top(tmp_path):
    text = """layer { name: "in" type: "Input" top: "p" top: "l" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "p" bottom: "l" }
"""
    net = load(write(tmp_path, text))
    assert net.layers[1].tops == [] and net.outputs == []


def test_schema_default_filler_is_constant():
    fp = caffe_pb2.FillerParameter()
    assert (fp.type, fp.value, fp.std, fp.sparse) == ("constant", 0.0, 1.0, -1)


def test_many_fork_fields_are_all_read_in_one_pass(tmp_path):
    lines = ['layer { name: "in" type: "Input" top: "x0" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }']
    for i in range(60):
        lines.append(f'layer {{ name: "p{i}" type: "Pooling" bottom: "x{i}" top: "x{i + 1}" '
                     f'pooling_param {{ pool: MAX kernel_size: 1 ceil_mode: false }} my_fork_param {{ k: "}}" }} }}')
    net = load(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(net.layers) == 61 and net.blobs["x60"] == (1, 1, 6, 6)
    assert len(net.warnings) == 120
    assert [int(w.split(":")[1]) for w in net.warnings] == sorted(i for i in range(2, 62) for _ in range(2))
    assert all(net.layer(f"p{i}").spec.fork_fields == {"PoolingParameter.ceil_mode": "false",
                                                       "my_fork_param": '{ k: "}" }'} for i in range(60))
