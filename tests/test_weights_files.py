"""--weights reads every real .caffemodel as Caffe does (Blob::FromProto, ShapeEquals,
CopyTrainedLayersFrom), and every bad file gives one line on stderr."""

import struct

import numpy as np
import pytest

from fillers import caffe_pb2
from fillers.caffemodel import read_caffemodel
from fillers.cli import main
from fillers.net import load
from fillers.netfill import _load_weights
from fillers.wire import key, varint

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" prelu_param { channel_shared: true } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
"""

CONV_W = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3) / 100
CONV_B = np.array([1, 2, 3, 4], np.float32)
FC_W = np.linspace(-1, 1, 5 * 144, dtype=np.float32).reshape(5, 144)
FC_B = np.array([5, 6, 7, 8, 9], np.float32)


@pytest.fixture
def net_file(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return p


def shaped(arr):
    b = caffe_pb2.BlobProto()
    b.shape.dim.extend(arr.shape)
    b.data.extend(arr.reshape(-1).tolist())
    return b


def legacy(arr, dims):
    b = caffe_pb2.BlobProto(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
    b.data.extend(arr.reshape(-1).tolist())
    return b


def v2_file(path, slope=0.3, extra_layers=(), skip=()):
    """A .caffemodel as Caffe writes it for NET (Net::ToProto: every layer, blobs with
    ``shape``; the channel-shared PReLU slope has no axes: no shape message, one value)."""
    net = caffe_pb2.NetParameter(name="small")
    net.layer.add(name="data", type="Input")
    if "conv1" not in skip:
        conv = net.layer.add(name="conv1", type="Convolution")
        conv.blobs.add().CopyFrom(shaped(CONV_W))
        conv.blobs.add().CopyFrom(shaped(CONV_B))
    if "prelu1" not in skip:
        prelu = net.layer.add(name="prelu1", type="PReLU")
        prelu.blobs.add().data.append(slope)
    if "fc" not in skip:
        fc = net.layer.add(name="fc", type="InnerProduct")
        fc.blobs.add().CopyFrom(shaped(FC_W))
        fc.blobs.add().CopyFrom(shaped(FC_B))
    for lp in extra_layers:
        net.layer.add().CopyFrom(lp)
    path.write_bytes(net.SerializeToString())
    return path


def run(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fill_with(capsys, net_file, weights, tmp_path):
    out = tmp_path / "out.caffemodel"
    status, _, err = run(capsys, net_file, "--weights", weights, "-o", out, "-q")
    assert status == 0, err
    return read_caffemodel(out), out


def test_channel_shared_prelu_blob_as_caffe_writes_it(net_file, tmp_path, capsys):
    weights = v2_file(tmp_path / "w.caffemodel")
    raw = caffe_pb2.NetParameter.FromString(weights.read_bytes())
    slope = raw.layer[2].blobs[0]
    assert not slope.HasField("shape") and not slope.HasField("num") and len(slope.data) == 1
    got, out = fill_with(capsys, net_file, weights, tmp_path)
    assert got["prelu1"][0].shape == () and got["prelu1"][0] == np.float32(0.3)
    assert np.array_equal(got["conv1"][0], CONV_W) and np.array_equal(got["fc"][1], FC_B)
    # and we write it back the way Caffe does: no shape message, one value
    back = caffe_pb2.NetParameter.FromString(out.read_bytes())
    blob = [l for l in back.layer if l.name == "prelu1"][0].blobs[0]
    assert not blob.HasField("shape") and list(blob.data) == [pytest.approx(0.3)]


def test_reader_gives_views_of_the_mapped_file(tmp_path):
    blobs = read_caffemodel(v2_file(tmp_path / "w.caffemodel"))
    w = blobs["conv1"][0]
    assert w.dtype == np.float32 and not w.flags.owndata and not w.flags.writeable
    assert blobs["conv1"].legacy == [False, False] and blobs.layer_names == ["data", "conv1", "prelu1", "fc"]


def test_v1_binary_file_with_legacy_blobs(net_file, tmp_path, capsys):
    v1 = caffe_pb2.NetParameter(name="old")
    v1.layers.add(name="mnist", type=caffe_pb2.V1LayerParameter.DATA)  # not in the net: ignored
    conv = v1.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    conv.blobs.add().CopyFrom(legacy(CONV_W, (4, 3, 3, 3)))
    conv.blobs.add().CopyFrom(legacy(CONV_B, (1, 1, 1, 4)))
    fc = v1.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    fc.blobs.add().CopyFrom(legacy(FC_W, (1, 1, 5, 144)))
    fc.blobs.add().CopyFrom(legacy(FC_B, (1, 1, 1, 5)))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(v1.SerializeToString())
    blobs = read_caffemodel(path)
    assert blobs["fc"][0].shape == (1, 1, 5, 144) and blobs["fc"].legacy == [True, True]
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert np.array_equal(got["fc"][0], FC_W) and np.array_equal(got["conv1"][1], CONV_B)
    assert got["prelu1"][0] == np.float32(0.25)  # not in the file: filled (PReLU's default 0.25)
    trained = _load_weights(str(path), load(net_file))
    assert trained.copied == ["conv1", "fc"] and trained.filled == ["prelu1"] and trained.ignored == ["mnist"]


def test_v0_binary_file(net_file, tmp_path, capsys):
    v0 = caffe_pb2.NetParameter(name="older")
    entry = v0.layers.add()
    entry.layer.name = "conv1"
    entry.layer.type = "conv"
    entry.layer.blobs.add().CopyFrom(legacy(CONV_W, (4, 3, 3, 3)))
    entry.layer.blobs.add().CopyFrom(legacy(CONV_B, (1, 1, 1, 4)))
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(v0.SerializeToString())
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert np.array_equal(got["conv1"][0], CONV_W)


def raw_field(field, wire, payload):
    if wire == 2:
        return key(field, 2) + varint(len(payload)) + payload
    return key(field, wire) + payload


def test_fork_written_file_loads(net_file, tmp_path, capsys):
    """A fork's LayerParameter holds fields under numbers BVLC uses for something else,
    with another wire type (skipped as protobuf skips unknown fields), plus fields BVLC
    does not have at all, at every level."""
    good = caffe_pb2.NetParameter.FromString(v2_file(tmp_path / "w.caffemodel").read_bytes())
    out = bytearray(raw_field(1, 2, b"forked") + raw_field(2, 0, varint(7)) + raw_field(999, 5, b"\0\0\x80?"))
    for lp in good.layer:
        body = bytearray()
        body += raw_field(1, 2, lp.name.encode()) + raw_field(2, 2, lp.type.encode())
        body += raw_field(7, 0, varint(3))  # BVLC's blobs number, as a varint: a fork's flag
        body += raw_field(1, 5, b"\x00\x00\x00\x00")  # BVLC's name number, as a fixed32
        body += raw_field(4, 1, b"\x00" * 8)  # BVLC's top number (a string), as a fixed64
        body += raw_field(300, 2, b"\xff\xfe garbage that is no message")
        body += key(301, 3) + raw_field(1, 0, varint(5)) + key(301, 4)  # a group
        for b in lp.blobs:
            blob = b.SerializeToString() + raw_field(42, 0, varint(1)) + raw_field(2, 5, b"\0\0\0\0")
            body += raw_field(7, 2, blob)
        out += raw_field(100, 2, bytes(body))
    out += raw_field(2, 0, varint(1))  # BVLC's V1 'layers' number, as a varint
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(bytes(out))
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert np.array_equal(got["conv1"][0], CONV_W) and got["prelu1"][0] == np.float32(0.3)


def test_more_layers_than_the_net_are_ignored_even_broken_ones(net_file, tmp_path, capsys):
    ghost = caffe_pb2.LayerParameter(name="ghost", type="Convolution")
    bad = ghost.blobs.add()
    bad.shape.dim.extend([10, 10])
    bad.data.extend([1.0, 2.0])  # 2 values for 100: Caffe never looks at it
    path = v2_file(tmp_path / "w.caffemodel", extra_layers=[ghost])
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert "ghost" not in got
    assert _load_weights(str(path), load(net_file)).ignored == ["ghost"]


def test_fewer_layers_the_rest_is_filled(net_file, tmp_path, capsys):
    path = v2_file(tmp_path / "w.caffemodel", skip={"fc", "prelu1"})
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert np.array_equal(got["conv1"][0], CONV_W) and got["fc"][0].shape == (5, 144)
    trained = _load_weights(str(path), load(net_file))
    assert trained.copied == ["data", "conv1"] and trained.filled == ["prelu1", "fc"] and trained.ignored == []


def test_double_data_is_converted(net_file, tmp_path, capsys):
    dbl = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    for arr in (FC_W, FC_B):
        b = dbl.blobs.add()
        b.shape.dim.extend(arr.shape)
        b.double_data.extend(arr.astype(np.float64).reshape(-1).tolist())
    path = v2_file(tmp_path / "w.caffemodel", skip={"fc"}, extra_layers=[dbl])
    got, _ = fill_with(capsys, net_file, path, tmp_path)
    assert got["fc"][0].dtype == np.float32 and np.array_equal(got["fc"][0], FC_W)


def test_legacy_bias_fits_but_a_shaped_4d_bias_does_not(net_file, tmp_path, capsys):
    # Caffe's ShapeEquals: legacy 1 1 1 4 fits (4,); a 'shape' of [1, 1, 1, 4] does not
    path = v2_file(tmp_path / "w.caffemodel", skip={"conv1"},
                   extra_layers=[caffe_pb2.LayerParameter(name="conv1", blobs=[shaped(CONV_W),
                                                                               legacy(CONV_B, (1, 1, 1, 4))])])
    fill_with(capsys, net_file, path, tmp_path)
    path = v2_file(tmp_path / "w.caffemodel", skip={"conv1"},
                   extra_layers=[caffe_pb2.LayerParameter(name="conv1", blobs=[shaped(CONV_W),
                                                                               shaped(CONV_B.reshape(1, 1, 1, 4))])])
    status, _, err = run(capsys, net_file, "--weights", path, "-o", tmp_path / "o.caffemodel")
    assert status == 1 and "layer 'conv1'" in err and "blob 1" in err and "shape mismatch" in err


def _bad_files(tmp_path, net_file):
    good = v2_file(tmp_path / "good.caffemodel").read_bytes()
    files = {}

    def put(name, data, expect):
        p = tmp_path / name
        p.write_bytes(data)
        files[name] = (p, expect)

    put("truncated.caffemodel", good[: len(good) * 2 // 3], "truncated")
    put("text.caffemodel", net_file.read_bytes(), "text prototxt")
    put("image.caffemodel", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG image")
    put("empty.caffemodel", b"", "empty")
    put("garbage.caffemodel", bytes([0xff, 0x07, 0x3f, 0x01]) * 64, "not a .caffemodel")
    size_bad = caffe_pb2.LayerParameter(name="conv1", blobs=[shaped(CONV_W), shaped(CONV_B)])
    size_bad.blobs[0].data.append(1.0)  # 109 values for 4x3x3x3
    put("size.caffemodel", v2_file(tmp_path / "s.caffemodel", skip={"conv1"}, extra_layers=[size_bad]).read_bytes(),
        "layer 'conv1' blob 0: its shape [4, 3, 3, 3] needs 108 value(s), the file holds 109")
    shape_bad = caffe_pb2.LayerParameter(name="conv1", blobs=[shaped(np.zeros((4, 3, 5, 5), np.float32)),
                                                              shaped(CONV_B)])
    put("shape.caffemodel", v2_file(tmp_path / "t.caffemodel", skip={"conv1"}, extra_layers=[shape_bad]).read_bytes(),
        "layer 'conv1' (Convolution): cannot copy blob 0 from the weights file: shape mismatch; the file's shape "
        "is [4, 3, 5, 5] (300 values), the net's is [4, 3, 3, 3] (108 values)")
    count_bad = caffe_pb2.LayerParameter(name="fc", blobs=[shaped(FC_W)])
    put("count.caffemodel", v2_file(tmp_path / "u.caffemodel", skip={"fc"}, extra_layers=[count_bad]).read_bytes(),
        "layer 'fc' (InnerProduct): incompatible number of blobs: the weights file has 1 blob(s)")
    empty_layer = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")  # Caffe: "Incompatible number of blobs"
    put("noblobs.caffemodel", v2_file(tmp_path / "v.caffemodel", skip={"fc"},
                                      extra_layers=[empty_layer]).read_bytes(), "has 0 blob(s)")
    put("json.caffemodel", b'{"layers": []}\n', "text file")
    return files


@pytest.mark.parametrize("name", ["truncated", "text", "image", "empty", "garbage", "size", "shape", "count",
                                  "noblobs", "json"])
def test_bad_weights_file_is_one_line(net_file, tmp_path, capsys, name):
    path, expect = _bad_files(tmp_path, net_file)[f"{name}.caffemodel"]
    out = tmp_path / "out.caffemodel"
    status, _, err = run(capsys, net_file, "--weights", path, "-o", out)
    lines = err.strip().splitlines()
    assert status == 1
    assert len(lines) == 1, err
    assert lines[0].startswith("fill-net: error: ") and "Traceback" not in err
    assert expect in lines[0]
    if name not in ("shape", "count", "noblobs"):
        assert str(path) in lines[0]  # names the file
    assert not out.exists()


def test_unreadable_weights_path(net_file, tmp_path, capsys):
    status, _, err = run(capsys, net_file, "--weights", tmp_path, "-o", tmp_path / "o.caffemodel")
    assert status == 1 and err.count("\n") == 1 and "cannot read the file" in err
    status, _, err = run(capsys, net_file, "--weights", tmp_path / "missing.caffemodel", "-o", tmp_path / "o.cm")
    assert status == 1 and err.count("\n") == 1 and "missing.caffemodel" in err


def test_unpacked_floats_and_split_packed_runs(tmp_path):
    """protobuf parsers accept repeated floats unpacked or in several packed runs."""
    blob = raw_field(7, 2, raw_field(1, 0, varint(3)))  # shape { dim: 3 } unpacked
    blob += raw_field(5, 5, struct.pack("<f", 1.5)) + raw_field(5, 2, struct.pack("<2f", 2.5, 3.5))
    layer = raw_field(1, 2, b"x") + raw_field(7, 2, blob)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(raw_field(100, 2, layer))
    assert read_caffemodel(path)["x"][0].tolist() == [1.5, 2.5, 3.5]
