"""Written .caffemodel files load in OpenCV's Caffe importer (an independent reader) and
run; --weights copies trained blobs by layer name with Caffe's checks."""

import numpy as np
import pytest

from conftest import golden_index, golden_param, golden_source
from fillers import caffe_pb2
from fillers.caffemodel import read_caffemodel, write_caffemodel
from fillers.cli import main
from fillers.errors import NetError
from fillers.net import load

cv2 = pytest.importorskip("cv2")

# Golden nets that OpenCV 4.x's Caffe importer supports (it has no LSTM/Embed layers).
OPENCV_NETS = [n for n, e in sorted(golden_index()["nets"].items())
               if e["loaded"] and not {"LSTM", "RNN", "Embed"} & set(e.get("layer_types") or [])
               and (e.get("n_params") or 0) <= 30_000_000]


@pytest.mark.shared
def test_opencv_list_is_not_empty():
    assert len(OPENCV_NETS) >= 12


@pytest.mark.shared
@pytest.mark.parametrize("net_id", [golden_param(n) for n in OPENCV_NETS])
def test_opencv_loads_and_runs_our_caffemodel(net_id, tmp_path):
    net = load(golden_source(net_id))
    filled = net.fill(filler="xavier", seed=3, batchnorm="identity")
    model = tmp_path / "w.caffemodel"
    filled.save(model)
    cv = cv2.dnn.readNetFromCaffe(str(golden_source(net_id)), str(model))
    layer_names = set(cv.getLayerNames())
    # every learnable blob arrived with our values
    checked = 0
    for layer in net.layers:
        if layer.type in ("Convolution", "InnerProduct") and layer.name in layer_names:
            got = cv.getParam(layer.name, 0)
            want = filled.blobs[layer.name][0]
            assert np.array_equal(got.reshape(-1), want.reshape(-1)), layer.name
            checked += 1
    assert checked > 0
    rng = np.random.default_rng(0)
    for name in net.inputs:
        cv.setInput(rng.uniform(-1, 1, net.blobs[name]).astype(np.float32), name)
    outs = cv.forward(net.outputs)
    for name, out in zip(net.outputs, outs):
        assert tuple(out.shape) == tuple(net.blobs[name]) or out.size == int(np.prod(net.blobs[name]))
        assert np.isfinite(out).all()


@pytest.mark.shared
def test_caffemodel_parses_with_protobuf_and_keeps_layer_params(tmp_path):
    net = load(golden_source("BVLC__caffe__examples__mnist__lenet"))
    filled = net.fill(seed=0)
    path = tmp_path / "lenet.caffemodel"
    size = filled.save(path)
    assert size == path.stat().st_size
    msg = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert [l.name for l in msg.layer] == [l.name for l in net.layers]
    conv = msg.layer[1]
    assert conv.convolution_param.num_output == 20 and list(conv.blobs[0].shape.dim) == [20, 1, 5, 5]
    assert np.array_equal(np.array(conv.blobs[0].data, np.float32).reshape(20, 1, 5, 5), filled.blobs["conv1"][0])


@pytest.mark.shared
def test_weights_round_trip(tmp_path):
    src = golden_source("forresti__SqueezeNet__SqueezeNet_v1.1__deploy")
    first = tmp_path / "a.caffemodel"
    assert main([str(src), "--filler", "msra", "--seed", "5", "-o", str(first), "-q"]) == 0
    second = tmp_path / "b.caffemodel"
    assert main([str(src), "--weights", str(first), "--seed", "6", "-o", str(second), "-q"]) == 0
    a, b = read_caffemodel(first), read_caffemodel(second)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        for x, y in zip(a[k], b[k]):
            assert np.array_equal(x, y), k


@pytest.mark.shared
def test_weights_fill_only_the_rest(tmp_path):
    net = load(golden_source("BVLC__caffe__examples__mnist__lenet"))
    trained = {"conv1": [np.full((20, 1, 5, 5), 0.5, np.float32), np.full((20,), -1, np.float32)]}
    filled = net.fill(filler="xavier", seed=1, weights=trained)
    assert (filled.blobs["conv1"][0] == 0.5).all() and (filled.blobs["conv1"][1] == -1).all()
    assert filled.blobs["conv2"][0].std() > 0
    sources = {(r.layer, r.index): r.source for r in filled.records}
    assert sources[("conv1", 0)] == "weights" and sources[("conv2", 0)] == "filled"


@pytest.mark.shared
def test_weights_shape_mismatch_is_caffes_error():
    net = load(golden_source("BVLC__caffe__examples__mnist__lenet"))
    with pytest.raises(NetError, match=r"layer 'conv1' \(Convolution\): cannot copy blob 0 .* \[20, 1, 3, 3\]"):
        net.fill(weights={"conv1": [np.zeros((20, 1, 3, 3), np.float32), np.zeros(20, np.float32)]})
    with pytest.raises(NetError, match="has 1 blob"):
        net.fill(weights={"conv1": [np.zeros((20, 1, 5, 5), np.float32)]})


def test_reads_v1_caffemodel_with_legacy_dims(tmp_path):
    v1 = caffe_pb2.NetParameter(name="old")
    layer = v1.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    b = layer.blobs.add(num=2, channels=1, height=3, width=3)
    b.data.extend(np.arange(18, dtype=np.float32))
    bias = layer.blobs.add(num=1, channels=1, height=1, width=2)
    bias.data.extend([7.0, 8.0])
    path = tmp_path / "old.caffemodel"
    path.write_bytes(v1.SerializeToString())
    blobs = read_caffemodel(path)
    assert blobs["conv1"][0].shape == (2, 1, 3, 3) and blobs["conv1"][0][1, 0, 2, 2] == 17
    assert blobs["conv1"][1].shape == (1, 1, 1, 2)
    # Caffe accepts a legacy (1, 1, 1, 2) bias for a (2,) blob
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }\n'
            'layer { name: "conv1" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 } }\n')
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    filled = load(p).fill(weights=str(path))
    assert filled.blobs["conv1"][1].tolist() == [7.0, 8.0]


@pytest.mark.shared
def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    net = load(golden_source("BVLC__caffe__examples__mnist__lenet"))
    filled = net.fill(seed=0)
    out = tmp_path / "x.caffemodel"
    bad = dict(filled.blobs)
    bad["conv2"] = [object()]  # not an array: the write fails midway
    with pytest.raises(Exception):
        write_caffemodel(out, net, bad)
    assert list(tmp_path.iterdir()) == []
