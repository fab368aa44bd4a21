"""Caffe's V0 format (``layers { layer { ... } bottom top }``) is upgraded as Caffe's
upgrade_proto.cpp does: padding layers folded into the next conv/pool, V0 fields moved into
their ``*_param``, then V1 -> V2."""

import numpy as np
import pytest

from fillers import caffe_pb2
from fillers.cli import main
from fillers.errors import ParseError
from fillers.net import load
from fillers.prototxt import read_net
from fillers.upgrade_v0 import upgrade_v0

# An R-CNN / SPP-net style V0 net: two padding layers (one before a conv, one before a
# pool), V0 types conv, relu, pool (MAX and AVE), lrn, concat, innerproduct, dropout,
# flatten, softmax, and a data-style field (scale) that goes to transform_param.
V0_NET = """
name: "v0net"
input: "data"
input_dim: 2
input_dim: 3
input_dim: 31
input_dim: 31
layers {
  layer { name: "pad1" type: "padding" pad: 2 }
  bottom: "data" top: "pad1"
}
layers {
  layer {
    name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 2 group: 1
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 }
    blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 k: 2 } bottom: "pool1" top: "norm1" }
layers {
  layer { name: "conv2a" type: "conv" num_output: 8 kernelsize: 3 pad: 1 group: 2 biasterm: false }
  bottom: "norm1" top: "conv2a"
}
layers { layer { name: "conv2b" type: "conv" num_output: 4 kernelsize: 1 } bottom: "norm1" top: "conv2b" }
layers { layer { name: "cat" type: "concat" concat_dim: 1 } bottom: "conv2a" bottom: "conv2b" top: "cat" }
layers { layer { name: "pool2" type: "pool" pool: MAX kernelsize: 2 stride: 2 } bottom: "cat" top: "pool2" }
layers { layer { name: "flat" type: "flatten" } bottom: "pool2" top: "flat" }
layers {
  layer { name: "fc" type: "innerproduct" num_output: 10 weight_filler { type: "xavier" } }
  bottom: "flat" top: "fc"
}
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


@pytest.fixture
def v0_file(tmp_path):
    p = tmp_path / "v0.prototxt"
    p.write_text(V0_NET)
    return p


def test_v0_upgraded_net_is_caffes(v0_file):
    result = read_net(v0_file)
    assert result.format == "V0"
    layers = result.net.layer
    # the padding layers are gone; the input upgrade adds a leading Input layer
    assert [l.name for l in layers] == ["input", "conv1", "relu1", "pool1", "norm1", "conv2a", "conv2b",
                                        "cat", "pool2", "flat", "fc", "drop", "prob"]
    assert [l.type for l in layers] == ["Input", "Convolution", "ReLU", "Pooling", "LRN", "Convolution",
                                        "Convolution", "Concat", "Pooling", "Flatten", "InnerProduct",
                                        "Dropout", "Softmax"]
    by = {l.name: l for l in layers}
    # rewired: the conv reads the padding layer's bottom, with its pad
    assert list(by["conv1"].bottom) == ["data"] and list(by["conv1"].top) == ["conv1"]
    assert list(by["conv1"].convolution_param.pad) == [2]
    assert list(by["conv1"].convolution_param.kernel_size) == [5]
    assert list(by["conv1"].convolution_param.stride) == [2]
    assert by["conv1"].convolution_param.num_output == 16
    assert by["conv1"].convolution_param.weight_filler.std == pytest.approx(0.01)
    assert by["conv1"].convolution_param.bias_filler.value == 1
    assert [(p.lr_mult, p.decay_mult) for p in by["conv1"].param] == [(1, 1), (2, 0)]
    assert list(by["pool1"].bottom) == ["conv1"] and by["pool1"].pooling_param.pad == 1
    assert by["pool1"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert by["pool1"].pooling_param.kernel_size == 3 and by["pool1"].pooling_param.stride == 2
    assert by["pool2"].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert not by["pool2"].pooling_param.HasField("pad")
    assert (by["norm1"].lrn_param.local_size, by["norm1"].lrn_param.k) == (3, 2)
    assert by["conv2a"].convolution_param.group == 2 and not by["conv2a"].convolution_param.bias_term
    assert list(by["conv2a"].convolution_param.pad) == [1]
    assert by["cat"].concat_param.concat_dim == 1 and list(by["cat"].bottom) == ["conv2a", "conv2b"]
    assert by["drop"].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert by["fc"].inner_product_param.weight_filler.type == "xavier"


def test_v0_shapes_are_caffes(v0_file):
    net = load(v0_file)
    shapes = {l.name: [list(s) for s in l.top_shapes] for l in net.layers}
    # conv1: (31 + 2*2 - 5) / 2 + 1 = 16; pool1 (pad 1, ceil): ceil((16 + 2 - 3) / 2) + 1 = 9
    assert shapes["conv1"] == [[2, 16, 16, 16]]
    assert shapes["pool1"] == [[2, 16, 9, 9]]
    assert shapes["conv2a"] == [[2, 8, 9, 9]] and shapes["conv2b"] == [[2, 4, 9, 9]]
    assert shapes["cat"] == [[2, 12, 9, 9]]
    assert shapes["pool2"] == [[2, 12, 5, 5]]  # ceil((9 - 2) / 2) + 1
    assert shapes["flat"] == [[2, 300]] and shapes["fc"] == [[2, 10]]
    params = {l.name: [list(p.shape) for p in l.params] for l in net.layers if l.params}
    assert params == {"conv1": [[16, 3, 5, 5], [16]], "conv2a": [[8, 8, 3, 3]], "conv2b": [[4, 16, 1, 1], [4]],
                      "fc": [[10, 300], [10]]}
    assert net.inputs == ["data"] and net.outputs == ["prob"]


def test_v0_fills_and_dry_runs(v0_file, tmp_path, capsys):
    assert main([str(v0_file), "--dry-run"]) == 0
    out = tmp_path / "v0.caffemodel"
    assert main([str(v0_file), "--seed", "1", "-o", str(out), "-q"]) == 0
    msg = caffe_pb2.NetParameter.FromString(out.read_bytes())
    assert [l.name for l in msg.layer][:2] == ["input", "conv1"]
    conv1 = np.array(msg.layer[1].blobs[1].data)
    assert (conv1 == 1).all()  # bias_filler constant 1 from the V0 layer


def _v0(text):
    net = caffe_pb2.NetParameter()
    from google.protobuf import text_format

    text_format.Parse(text, net)
    return net


def test_unknown_parameter_is_dropped_with_caffes_message():
    net = _v0('input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 '
              'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "y" }')
    warnings = []
    v1, kept = upgrade_v0(net, "n.prototxt", warnings)
    assert kept == [0]
    assert v1.layers[0].type == caffe_pb2.V1LayerParameter.RELU
    assert len(warnings) == 1 and "num_output" in warnings[0] and "relu" in warnings[0]


def test_data_fields_go_to_transform_param():
    net = _v0('layers { layer { name: "d" type: "data" source: "db" batchsize: 8 scale: 0.5 cropsize: 7 '
              'mirror: true meanfile: "m.binaryproto" } top: "data" top: "label" }')
    v1, _ = upgrade_v0(net, "n.prototxt")
    layer = v1.layers[0]
    assert layer.type == caffe_pb2.V1LayerParameter.DATA
    assert (layer.data_param.source, layer.data_param.batch_size) == ("db", 8)
    t = layer.transform_param
    assert (t.scale, t.crop_size, t.mirror, t.mean_file) == (0.5, 7, True, "m.binaryproto")


@pytest.mark.parametrize("text, message", [
    ('layers { layer { name: "a" type: "wobble" } bottom: "x" top: "y" }', "V0 type 'wobble'"),
    ('layers { layer { name: "a" type: "relu" } bottom: "nope" top: "y" }', "reads the blob 'nope'"),
    ('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }'
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }', "folds padding only into a conv or pool"),
    ('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }'
     'layers { layer { name: "c" type: "conv" num_output: 1 kernelsize: 1 } bottom: "p" bottom: "x" top: "c" }',
     "more than one bottom"),
    ('layers { layer { name: "a" type: "relu" } bottom: "x" top: "y" }'
     'layers { name: "b" type: RELU bottom: "y" top: "z" }', "mixes V0 layers"),
])
def test_what_caffe_aborts_on_is_one_error(tmp_path, capsys, text, message):
    p = tmp_path / "bad.prototxt"
    p.write_text('input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n' + text)
    with pytest.raises(ParseError, match=message):
        read_net(p)
    assert main([str(p), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fill-net: error: ") and message.split("'")[0] in err[0]


def test_padding_layer_with_its_own_pad_replaces_the_convs():
    # Caffe's set_pad: the padding layer's pad wins over the conv's own
    net = _v0('input: "x" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8 '
              'layers { layer { name: "p" type: "padding" pad: 3 } bottom: "x" top: "p" }'
              'layers { layer { name: "c" type: "conv" num_output: 1 kernelsize: 3 pad: 1 } bottom: "p" top: "c" }')
    v1, kept = upgrade_v0(net, "n")
    assert kept == [1] and list(v1.layers[0].convolution_param.pad) == [3]
    assert list(v1.layers[0].bottom) == ["x"]
