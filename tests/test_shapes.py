"""Shape rules on cases the golden nets do not cover, checked against Caffe's formulas by
hand."""

import pytest

from fillers.errors import NetError
from fillers.net import load


def build(tmp_path, body, inputs="shape { dim: 2 dim: 3 dim: 8 dim: 10 }"):
    p = tmp_path / "n.prototxt"
    p.write_text(f'layer {{ name: "in" type: "Input" top: "x" input_param {{ {inputs} }} }}\n' + body)
    return load(p)


def layer(name, type_, bottoms, tops, params=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def test_nd_convolution_and_grouped_deconvolution(tmp_path):
    net = build(tmp_path,
                layer("c3", "Convolution", ["x"], ["y"], "convolution_param { num_output: 4 kernel_size: 3 kernel_size: 1 kernel_size: 2 "
                      "stride: 1 stride: 1 stride: 2 pad: 1 dilation: 2 }")
                + layer("d", "Deconvolution", ["x"], ["z"], "convolution_param { num_output: 6 group: 3 kernel_size: 4 stride: 2 pad: 1 }"),
                inputs="shape { dim: 1 dim: 3 dim: 5 dim: 6 dim: 7 }")
    c3 = net.layer("c3")
    assert c3.params[0].shape == (4, 3, 3, 1, 2)
    # (5 + 2 - (2*2+1))/1 + 1 = 3 ; (6 + 2 - 1)/1 + 1 = 8 ; (7 + 2 - 3)/2 + 1 = 4
    assert net.blobs["y"] == (1, 4, 3, 8, 4)
    d = net.layer("d")
    assert d.params[0].shape == (3, 2, 4, 4, 4) and d.params[1].shape == (6,)
    # 2*(5-1) + 4 - 2 = 10 ; 2*5+2 = 12 ; 14
    assert net.blobs["z"] == (1, 6, 10, 12, 14)


@pytest.mark.parametrize("h,k,s,p,mode,out", [
    (7, 3, 2, 1, "CEIL", 4), (6, 3, 2, 0, "CEIL", 3), (6, 3, 2, 1, "CEIL", 4), (5, 2, 2, 1, "CEIL", 3),
    (6, 3, 2, 0, "FLOOR", 2), (7, 3, 2, 1, "FLOOR", 4), (4, 3, 3, 2, "CEIL", 2),
])
def test_pooling_ceil_and_clip(tmp_path, h, k, s, p, mode, out):
    net = build(tmp_path, layer("p", "Pooling", ["x"], ["y"],
                                f"pooling_param {{ pool: AVE kernel_size: {k} stride: {s} pad: {p} round_mode: {mode} }}"),
                inputs=f"shape {{ dim: 1 dim: 1 dim: {h} dim: {h} }}")
    assert net.blobs["y"] == (1, 1, out, out)


def test_global_pooling_spp_and_pooling_mask(tmp_path):
    net = build(tmp_path, layer("g", "Pooling", ["x"], ["g"], "pooling_param { pool: MAX global_pooling: true }")
                + layer("spp", "SPP", ["x"], ["s"], "spp_param { pyramid_height: 3 }")
                + layer("spp1", "SPP", ["x"], ["s1"], "spp_param { pyramid_height: 1 }")
                + layer("m", "Pooling", ["x"], ["m", "mask"], "pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3 }"))
    assert net.blobs["g"] == (2, 3, 1, 1)
    assert net.blobs["s"] == (2, 3 * (1 + 4 + 16))
    assert net.blobs["s1"] == (2, 3, 1, 1)
    assert net.blobs["m"] == net.blobs["mask"] == (2, 3, 4, 4)


def test_slice_concat_crop_reshape_flatten(tmp_path):
    net = build(tmp_path,
                layer("sl", "Slice", ["x"], ["a", "b", "c"], "slice_param { axis: 3 slice_point: 2 slice_point: 7 }")
                + layer("eq", "Slice", ["x"], ["e1", "e2"], "slice_param { axis: -1 }")
                + layer("cat", "Concat", ["a", "c", "b"], ["cat"], "concat_param { axis: -1 }")
                + layer("cr", "Crop", ["x", "a"], ["cr"], "crop_param { axis: 3 offset: 5 }")
                + layer("rs", "Reshape", ["x"], ["rs"], "reshape_param { shape { dim: 0 dim: -1 dim: 4 } axis: 1 num_axes: 2 }")
                + layer("fl", "Flatten", ["x"], ["fl"], "flatten_param { axis: 1 end_axis: 2 }"))
    assert [net.blobs[k] for k in "abc"] == [(2, 3, 8, 2), (2, 3, 8, 5), (2, 3, 8, 3)]
    assert net.blobs["e1"] == (2, 3, 8, 5)
    assert net.blobs["cat"] == (2, 3, 8, 10)
    assert net.blobs["cr"] == (2, 3, 8, 2)
    assert net.blobs["rs"] == (2, 3, 2, 4, 10)  # 3*8 = 3 * ? * 4
    assert net.blobs["fl"] == (2, 24, 10)
    with pytest.raises(NetError, match="layer 'cr2' \\(Crop\\): axis 3: offset 9 \\+ size 2"):
        build(tmp_path, layer("sl", "Slice", ["x"], ["a", "b"], "slice_param { axis: 3 slice_point: 2 }")
              + layer("cr2", "Crop", ["x", "a"], ["cr"], "crop_param { axis: 3 offset: 9 }"))


def test_argmax_reduction_tile_softmax(tmp_path):
    net = build(tmp_path, layer("am", "ArgMax", ["x"], ["am"], "argmax_param { top_k: 2 out_max_val: true }")
                + layer("ax", "ArgMax", ["x"], ["ax"], "argmax_param { top_k: 3 axis: 2 }")
                + layer("red", "Reduction", ["x"], ["red"], "reduction_param { axis: 2 }")
                + layer("t", "Tile", ["x"], ["t"], "tile_param { axis: -1 tiles: 3 }"))
    assert net.blobs["am"] == (2, 2, 2, 1)
    assert net.blobs["ax"] == (2, 3, 3, 10)
    assert net.blobs["red"] == (2, 3)
    assert net.blobs["t"] == (2, 3, 8, 30)


def test_scale_bias_prelu_params(tmp_path):
    net = build(tmp_path, layer("s", "Scale", ["x"], ["s"], "scale_param { axis: 1 num_axes: 2 bias_term: true }")
                + layer("s0", "Scale", ["x"], ["s0"], "scale_param { axis: 0 num_axes: -1 }")
                + layer("r", "Reduction", ["x"], ["r"], "reduction_param { axis: 2 }")
                + layer("s2", "Scale", ["x", "r"], ["s2"], "scale_param { axis: 0 bias_term: true }")
                + layer("p", "PReLU", ["x"], ["p"], "prelu_param { channel_shared: true }")
                + layer("b", "Bias", ["x"], ["b"], "bias_param { axis: 2 num_axes: 0 }"))
    assert [p.shape for p in net.layer("s").params] == [(3, 8), (3, 8)]
    assert [p.shape for p in net.layer("s0").params] == [(2, 3, 8, 10)]
    assert [p.shape for p in net.layer("s2").params] == [(2, 3)]  # no scale blob, bias over bottom 1's axes
    assert [p.shape for p in net.layer("p").params] == [()]
    assert [p.shape for p in net.layer("b").params] == [()]


def test_recurrent_params(tmp_path):
    body = (layer("lstm", "LSTM", ["x", "cont"], ["h"], "recurrent_param { num_output: 7 }")
            + layer("rnn", "RNN", ["x", "cont", "st"], ["o"], "recurrent_param { num_output: 5 }"))
    p = tmp_path / "r.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "x" top: "cont" top: "st" input_param { '
                 'shape { dim: 4 dim: 2 dim: 3 dim: 2 } shape { dim: 4 dim: 2 } shape { dim: 2 dim: 9 } } }\n' + body)
    net = load(p)
    assert [q.shape for q in net.layer("lstm").params] == [(28, 6), (28,), (28, 7)]
    assert [q.shape for q in net.layer("rnn").params] == [(5, 6), (5,), (5, 9), (5, 5), (5, 5), (5,)]
    assert net.blobs["h"] == (4, 2, 7) and net.blobs["o"] == (4, 2, 5)
    lstm = net.layer("lstm")
    draws = lstm.spec.draws(lstm.params, lstm.bottom_shapes)
    assert [i for i, _ in draws] == [0, 1, 2, None, None, None]  # W_hc drawn once per time step


def test_lstm_unit_checks_caffes_shapes(tmp_path):
    def net_with(x_dims):
        p = tmp_path / "u.prototxt"
        p.write_text('layer { name: "in" type: "Input" top: "c" top: "x" top: "k" input_param { '
                     f'shape {{ dim: 1 dim: 2 dim: 3 }} shape {{ {" ".join(f"dim: {d}" for d in x_dims)} }} '
                     'shape { dim: 1 dim: 2 } } }\n'
                     'layer { name: "u" type: "LSTMUnit" bottom: "c" bottom: "x" bottom: "k" top: "c1" top: "h1" }\n')
        return load(p)

    assert net_with((1, 2, 12)).blobs["h1"] == (1, 2, 3)
    with pytest.raises(NetError, match="layer 'u' \\(LSTMUnit\\): x must hold 4 x 3 gate values"):
        net_with((1, 2, 11))
    with pytest.raises(NetError, match="every bottom must be 1 x N"):
        net_with((1, 3, 12))
