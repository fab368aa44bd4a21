"""The SegNet, PSPNet/DeepLab and mobile-net/SENet fork families (fillers/layers/forks/
segnet.py, pspnet.py, mobile.py): each lowering under onnxruntime against a numpy
transcription of the fork's C++ source and against OpenCV's forward where OpenCV reads the
layer, on awkward parameters.  Where OpenCV and the fork disagree the fork is followed and
the test says so.  The goldens made by the forks' own Caffe and the corpus files are in
tests/test_forks_seg_shared.py."""

import numpy as np
import pytest

from fillers.caffemodel import write_caffemodel
from fillers.errors import FillersError, MissingInputShapeError
from fillers.layers import base
from fillers.layers.forks.pspnet import interp_reference
from fillers.layers.forks.segnet import bn_reference, unpool_reference
from fillers.net import load
from fillers.onnx_export import export, export_and_check, ort_session

cv2 = pytest.importorskip("cv2")
f32 = np.float32


# ---- helpers ---------------------------------------------------------------------------------

def build(tmp_path, text, **kw):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return load(path, **kw)


def random_blobs(net, seed=0):
    rng = np.random.default_rng(seed)
    return {l.name: [rng.uniform(-1, 1, p.shape).astype(f32) for p in l.params] for l in net.layers if l.params}


def run_onnx(net, blobs, feeds, all_blobs=False):
    sess = ort_session(export(net, blobs, all_blobs=all_blobs))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items()
                                             if k in {i.name for i in sess.get_inputs()}})))


def run_opencv(tmp_path, text, net, blobs, feeds, layers):
    """OpenCV's forward of the prototxt ``text`` as written (fork fields included) with
    ``blobs``; ``layers``: the layer names whose first top to return."""
    proto = tmp_path / "cv.prototxt"
    proto.write_text(text)
    model = tmp_path / "cv.caffemodel"
    write_caffemodel(model, net, blobs)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for k, v in feeds.items():
        cv.setInput(v, k)
    return dict(zip(layers, (np.asarray(r) for r in cv.forward(list(layers)))))


def uniform(shape, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(f32)


def inp(name, shape):
    return f'input: "{name}" input_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'


def assert_close(y, ref, tol=1e-5):
    assert y.shape == ref.shape
    err = float(np.max(np.abs(y.astype(np.float64) - ref))) if y.size else 0.0
    assert err <= tol * max(1.0, float(np.max(np.abs(ref)))), err


@pytest.fixture
def registry():
    saved = dict(base._REGISTRY)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


# ---- ShuffleChannel ---------------------------------------------------------------------------

def shuffle_reference(x, group):
    """farmingyard's Resize_cpu: output channel j * group + i = input channel i * (C/group) + j."""
    n, c = x.shape[:2]
    out = np.empty_like(x)
    cols = c // group
    for i in range(group):
        for j in range(cols):
            out[:, j * group + i] = x[:, i * cols + j]
    return out


@pytest.mark.parametrize("group,shape", [(3, (2, 12, 5, 3)), (2, (1, 6, 1, 7)), (1, (1, 4, 3, 3)), (4, (2, 4, 2, 2))])
def test_shuffle_channel(tmp_path, group, shape):
    text = inp("x", shape) + (f'layer {{ name: "s" type: "ShuffleChannel" bottom: "x" top: "s" '
                              f'shuffle_channel_param {{ group: {group} }} }}\n')
    net = build(tmp_path, text)
    assert net.blobs["s"] == shape and not net.warnings
    x = uniform(shape)
    y = run_onnx(net, {}, {"x": x})["s"]
    assert np.array_equal(y, shuffle_reference(x, group))
    assert np.array_equal(y, run_opencv(tmp_path, text, net, {}, {"x": x}, ["s"])["s"])  # OpenCV agrees


def test_shuffle_channel_group_must_divide(tmp_path):
    with pytest.raises(FillersError, match=r"layer 's' \(ShuffleChannel\): 10 channels cannot be shuffled in 3"):
        build(tmp_path, inp("x", (1, 10, 2, 2)) + 'layer { name: "s" type: "ShuffleChannel" bottom: "x" top: "s" '
                                                  'shuffle_channel_param { group: 3 } }\n')


# ---- ReLU6 ------------------------------------------------------------------------------------

def relu6_reference(x, slope):
    return np.minimum(np.maximum(x, f32(0)) + f32(slope) * np.minimum(x, f32(0)), f32(6))


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu6(tmp_path, slope):
    param = f" relu6_param {{ negative_slope: {slope} }}" if slope else ""
    text = inp("x", (2, 3, 5, 7)) + f'layer {{ name: "r" type: "ReLU6" bottom: "x" top: "r"{param} }}\n'
    net = build(tmp_path, text)
    x = uniform((2, 3, 5, 7)) * 10
    y = run_onnx(net, {}, {"x": x})["r"]
    assert_close(y, relu6_reference(x, slope), 1e-7)
    cv = run_opencv(tmp_path, text, net, {}, {"x": x}, ["r"])["r"]
    if slope == 0:
        assert np.array_equal(y, cv)
    else:  # OpenCV ignores negative_slope: it clips negative values to 0
        assert net.layer("r").spec.opencv_caveat()
        assert np.min(cv) == 0 and np.min(y) < 0


# ---- Axpy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("a_shape", [(1, 3, 1, 1), (2, 3)])
def test_axpy_follows_senet_not_opencv(tmp_path, a_shape):
    xs = (a_shape[0], 3, 5, 4)
    text = (inp("a", a_shape) + inp("x", xs) + inp("y", xs)
            + 'layer { name: "f" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n')
    net = build(tmp_path, text)
    assert net.blobs["f"] == xs
    feeds = {"a": uniform(a_shape, 1), "x": uniform(xs, 2), "y": uniform(xs, 3)}
    y = run_onnx(net, {}, feeds)["f"]
    a = feeds["a"].reshape(a_shape[0], 3, 1, 1)
    assert_close(y, a * feeds["x"] + feeds["y"], 1e-7)  # SENet's axpy_layer.cpp: a * X + Y
    assert "OpenCV computes Axpy" in net.layer("f").spec.opencv_caveat()
    if len(a_shape) == 4:  # (OpenCV's Scale fails on a batch of 2 gains and on 2-d gains)
        # OpenCV's importer wires Axpy as Scale(bottom 2, a) + bottom 1: a * Y + X
        cv = run_opencv(tmp_path, text, net, {}, feeds, ["f"])["f"]
        assert_close(cv, a * feeds["y"] + feeds["x"], 1e-6)
        assert np.max(np.abs(cv - y)) > 0.1


def test_axpy_shape_checks(tmp_path):
    with pytest.raises(FillersError, match=r"\(Axpy\): X \[1, 2, 3, 3\] and Y \[1, 2, 3, 4\] must have the same"):
        build(tmp_path, inp("a", (1, 2, 1, 1)) + inp("x", (1, 2, 3, 3)) + inp("y", (1, 2, 3, 4))
              + 'layer { name: "f" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n')
    with pytest.raises(FillersError, match=r"must be N x C x 1 x 1"):
        build(tmp_path, inp("a", (1, 2, 2, 1)) + inp("x", (1, 2, 3, 3)) + inp("y", (1, 2, 3, 3))
              + 'layer { name: "f" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n')


# ---- depthwise convolutions -------------------------------------------------------------------

def dw_reference(x, w, b, kernel, stride, pad, dilation):
    """farmingyard's ConvolutionDepthwiseLayer::Forward_cpu, vectorized over N and C."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, c, oh, ow), dtype=f32)
    for i in range(oh):
        for j in range(ow):
            acc = np.zeros((n, c), dtype=f32)
            for a in range(kh):
                for bb in range(kw):
                    hi = -pad[0] + i * stride[0] + a * dilation[0]
                    wi = -pad[1] + j * stride[1] + bb * dilation[1]
                    if 0 <= hi < h and 0 <= wi < wd:
                        acc += w[:, 0, a, bb][None, :] * x[:, :, hi, wi]
            y[:, :, i, j] = acc
    if b is not None:
        y += b.reshape(1, c, 1, 1)
    return y


DW_CASES = [
    ("num_output: 5 kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1), True),
    ("num_output: 5 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 2 pad_w: 0 dilation: 2 bias_term: false",
     (3, 2), (1, 3), (2, 0), (2, 2), False),
]


@pytest.mark.parametrize("conv,kernel,stride,pad,dilation,bias", DW_CASES)
def test_convolution_depthwise(tmp_path, conv, kernel, stride, pad, dilation, bias):
    text = inp("x", (2, 5, 9, 7)) + (f'layer {{ name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw" '
                                     f'convolution_param {{ {conv} }} }}\n')
    net = build(tmp_path, text)
    layer = net.layer("dw")
    assert [p.shape for p in layer.params] == [(5, 1, *kernel)] + ([(5,)] if bias else [])
    assert [p.role for p in layer.params] == ["weight", "bias"][:len(layer.params)]
    blobs = random_blobs(net)
    x = uniform((2, 5, 9, 7))
    y = run_onnx(net, blobs, {"x": x})["dw"]
    ref = dw_reference(x, blobs["dw"][0], blobs["dw"][1] if bias else None, kernel, stride, pad, dilation)
    assert_close(y, ref)
    assert_close(y, run_opencv(tmp_path, text, net, blobs, {"x": x}, ["dw"])["dw"])  # OpenCV: a Convolution


def test_convolution_depthwise_ignores_num_output_and_group(tmp_path):
    """The fork's top always has C_in channels; the file's layer is not modified."""
    net = build(tmp_path, inp("x", (1, 6, 5, 5)) + 'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" '
                'top: "dw" convolution_param { num_output: 12 group: 2 kernel_size: 3 } }\n')
    assert net.blobs["dw"] == (1, 6, 3, 3)
    assert [p.shape for p in net.layer("dw").params] == [(6, 1, 3, 3), (6,)]
    assert net.layer("dw").lp.convolution_param.num_output == 12
    assert "num_output 12" in net.layer("dw").spec.opencv_caveat()


def test_depthwise_convolution_is_convolution(tmp_path):
    """yonghenglh6's DepthwiseConvolution is a BaseConvolutionLayer: Convolution's set-up
    and CPU forward with the prototxt's group.  OpenCV does not know the type name, so it
    is compared with OpenCV's Convolution of the same parameters."""
    body = 'convolution_param { num_output: 4 group: 4 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } }'
    text = inp("x", (1, 4, 7, 6)) + f'layer {{ name: "dw" type: "DepthwiseConvolution" bottom: "x" top: "dw" {body} }}\n'
    net = build(tmp_path, text)
    assert [p.shape for p in net.layer("dw").params] == [(4, 1, 3, 3), (4,)]
    blobs = random_blobs(net)
    x = uniform((1, 4, 7, 6))
    y = run_onnx(net, blobs, {"x": x})["dw"]
    assert_close(y, dw_reference(x, blobs["dw"][0], blobs["dw"][1], (3, 3), (2, 2), (1, 1), (1, 1)))
    with pytest.raises(cv2.error, match="DepthwiseConvolution"):
        run_opencv(tmp_path, text, net, blobs, {"x": x}, ["dw"])
    cv = run_opencv(tmp_path, text.replace('"DepthwiseConvolution"', '"Convolution"'), net, blobs, {"x": x}, ["dw"])
    assert_close(y, cv["dw"])


def test_depthwise_fills_like_grouped_convolution(tmp_path):
    """Same blob shapes, so the same fan-in/fan-out and the same seeded fill as a
    Convolution with group = C."""
    conv = 'convolution_param { num_output: 8 group: 8 kernel_size: 3 weight_filler { type: "xavier" } }'
    a = build(tmp_path, inp("x", (1, 8, 6, 6)) + f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "c" {conv} }}')
    b = build(tmp_path, inp("x", (1, 8, 6, 6)) + 'layer { name: "c" type: "ConvolutionDepthwise" bottom: "x" top: "c" '
              'convolution_param { kernel_size: 3 weight_filler { type: "xavier" } } }')
    fa, fb = a.fill(seed=3, rng="caffe"), b.fill(seed=3, rng="caffe")
    assert all(np.array_equal(x, y) for x, y in zip(fa.blobs["c"], fb.blobs["c"]))


# ---- Interp -----------------------------------------------------------------------------------

INTERP_CASES = [  # (input H x W, interp_param, OpenCV reads it the fork's way)
    ((7, 5), "zoom_factor: 3", True),
    ((9, 13), "shrink_factor: 2", False),
    ((10, 11), "shrink_factor: 3 zoom_factor: 2", False),
    ((6, 9), "height: 17 width: 4", True),
    ((6, 9), "height: 1 width: 1", True),
    ((6, 9), "height: 6 width: 9", True),
    ((9, 8), "zoom_factor: 2 pad_beg: -1 pad_end: -2", False),
    ((11, 12), "shrink_factor: 2 zoom_factor: 3 pad_end: -1", False),
]


@pytest.mark.parametrize("hw,param,opencv_same", INTERP_CASES, ids=[c[1] for c in INTERP_CASES])
def test_interp(tmp_path, hw, param, opencv_same):
    shape = (2, 3, *hw)
    text = inp("x", shape) + f'layer {{ name: "i" type: "Interp" bottom: "x" top: "i" interp_param {{ {param} }} }}\n'
    net = build(tmp_path, text)
    spec = net.layer("i").spec
    x = uniform(shape)
    ref = interp_reference(x, spec.fork("interp_param"))
    assert net.blobs["i"] == ref.shape
    y = run_onnx(net, {}, {"x": x})["i"]
    assert_close(y, ref, 1e-6)
    try:
        cv = run_opencv(tmp_path, text, net, {}, {"x": x}, ["i"])["i"]
    except cv2.error:  # shrink alone: OpenCV computes an empty output and refuses it
        cv = None
    if opencv_same:
        assert spec.opencv_caveat() is None
        assert_close(y, cv, 1e-5)
    else:  # OpenCV ignores shrink_factor and pad_beg/pad_end: another output size
        assert spec.opencv_caveat().startswith("OpenCV's Interp ignores ")
        assert cv is None or cv.shape != y.shape


def test_interp_reads_its_message_strictly(tmp_path):
    with pytest.raises(FillersError, match=r"\(Interp\): cannot read the fork field interp_param as InterpParameter"):
        build(tmp_path, inp("x", (1, 1, 4, 4)) + 'layer { name: "i" type: "Interp" bottom: "x" top: "i" '
                                                 'interp_param { zoom: 2 } }\n')
    with pytest.raises(FillersError, match="pad_beg and pad_end must be <= 0"):
        build(tmp_path, inp("x", (1, 1, 4, 4)) + 'layer { name: "i" type: "Interp" bottom: "x" top: "i" '
                                                 'interp_param { zoom_factor: 2 pad_beg: 1 } }\n')


# ---- Upsample ---------------------------------------------------------------------------------

def test_upsample_unpools_a_max_pooling_to_odd_sizes(tmp_path):
    """Overlapping 3x3/2 MAX pooling (ceil: 11x9 -> 5x4) and Upsample back to 11x9 with
    upsample_h/upsample_w; a convolution between makes the data differ from the maxima."""
    text = (inp("x", (2, 3, 11, 9))
            + 'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n'
            + 'layer { name: "c" type: "Convolution" bottom: "p" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }\n'
            + 'layer { name: "u" type: "Upsample" bottom: "c" bottom: "m" top: "u" upsample_param { upsample_h: 11 upsample_w: 9 } }\n')
    net = build(tmp_path, text)
    assert net.blobs["p"] == (2, 3, 5, 4) and net.blobs["u"] == (2, 3, 11, 9)
    blobs = random_blobs(net)
    out = run_onnx(net, blobs, {"x": uniform((2, 3, 11, 9))}, all_blobs=True)
    assert len(np.unique(out["m"][0, 0])) < out["m"][0, 0].size  # windows overlap: shared mask indices
    assert np.array_equal(out["u"], unpool_reference(out["c"], out["m"], (11, 9)))


@pytest.mark.parametrize("param,hw,out", [
    ("scale: 2 pad_out_h: true", (4, 3), (7, 6)),
    ("scale: 2 pad_out_h: true pad_out_w: true", (5, 4), (9, 7)),
    ("scale_h: 3 scale_w: 2", (3, 4), (9, 8)),
    ("upsample_h: 13 upsample_w: 5", (7, 3), (13, 5)),
    ("", (3, 3), (6, 6)),
])
def test_upsample_mask_sizes_and_duplicates(tmp_path, param, hw, out):
    """Data and mask as graph inputs; the mask repeats indices with different data, where
    the fork's loop lets the later position win."""
    shape = (1, 2, *hw)
    text = (inp("d", shape) + inp("m", shape)
            + f'layer {{ name: "u" type: "Upsample" bottom: "d" bottom: "m" top: "u" upsample_param {{ {param} }} }}\n')
    net = build(tmp_path, text)
    assert net.blobs["u"] == (1, 2, *out)
    rng = np.random.default_rng(5)
    mask = rng.integers(0, out[0] * out[1], size=shape).astype(f32)
    mask[0, 0].flat[-1] = mask[0, 0].flat[0]  # a duplicate index
    d = uniform(shape)
    y = run_onnx(net, {}, {"d": d, "m": mask})["u"]
    ref = unpool_reference(d, mask, out)
    assert np.array_equal(y, ref)
    assert y[0, 0].flat[int(mask[0, 0].flat[0])] == d[0, 0].flat[-1]


def test_upsample_checks(tmp_path):
    up = 'layer {{ name: "u" type: "Upsample" bottom: "d" bottom: "m" top: "u" upsample_param {{ {} }} }}\n'
    base_text = inp("d", (1, 2, 4, 4)) + inp("m", (1, 2, 4, 4))
    with pytest.raises(FillersError, match="pad_out_h requires scale_h == 2"):
        build(tmp_path, base_text + up.format("scale: 3 pad_out_h: true"))
    with pytest.raises(FillersError, match="scale must be greater than 1"):
        build(tmp_path, base_text + up.format("scale: 1"))
    with pytest.raises(FillersError, match=r"the mask \[1, 2, 4, 3\] must have the data's shape"):
        build(tmp_path, inp("d", (1, 2, 4, 4)) + inp("m", (1, 2, 4, 3)) + up.format("scale: 2"))


def test_upsample_export_check_feeds_a_valid_mask(tmp_path):
    net = build(tmp_path, inp("d", (1, 3, 5, 4)) + inp("m", (1, 3, 5, 4))
                + 'layer { name: "u" type: "Upsample" bottom: "d" bottom: "m" top: "u" upsample_param { scale: 2 } }\n')
    report = export_and_check((net, {}))
    assert report.ok and report.checked
    assert any("OpenCV could not run" in w and "Upsample" in w for w in report.warnings)


@pytest.mark.parametrize("scale,shape", [(2, (1, 2, 3, 5)), (3, (2, 1, 4, 1)), (None, (1, 2, 3, 3))])
def test_upsample_one_bottom_is_yolo_nearest(tmp_path, scale, shape):
    param = f" upsample_param {{ scale: {scale} }}" if scale else ""
    net = build(tmp_path, inp("x", shape) + f'layer {{ name: "u" type: "Upsample" bottom: "x" top: "u"{param} }}\n')
    s = scale or 1  # the YOLOv3 ports' schema: scale defaults to 1
    assert net.blobs["u"] == (*shape[:2], shape[2] * s, shape[3] * s)
    x = uniform(shape)
    y = run_onnx(net, {}, {"x": x})["u"]
    # the ports' Forward_cpu: output[h, w] = input[h / scale, w / scale]
    hi = np.arange(shape[2] * s) // s
    wi = np.arange(shape[3] * s) // s
    assert np.array_equal(y, x[:, :, hi][:, :, :, wi])


def test_upsample_can_be_replaced_by_a_plugin(tmp_path, registry):
    from fillers.layers import LayerType, register_type

    class Mine(LayerType):
        n_bottoms = (1, 2)

        def outputs(self, bottoms):
            n, c, h, w = bottoms[0]
            return [(n, c, h * 5, w * 5)]

    with pytest.raises(ValueError, match="already registered"):
        register_type("Upsample", Mine)
    register_type("Upsample", Mine, replace=True)
    net = build(tmp_path, inp("x", (1, 1, 2, 2)) + 'layer { name: "u" type: "Upsample" bottom: "x" top: "u" }\n')
    assert net.blobs["u"] == (1, 1, 10, 10)


# ---- BN ---------------------------------------------------------------------------------------

BN_FILLERS = 'scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 }'


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
def test_bn(tmp_path, mode):
    shape = (3, 4, 5, 7)
    text = inp("x", shape) + (f'layer {{ name: "bn" type: "BN" bottom: "x" top: "y" top: "mean" top: "var" '
                              f'bn_param {{ bn_mode: {mode} {BN_FILLERS} }} }}\n')
    net = build(tmp_path, text)
    assert net.blobs["y"] == shape and net.blobs["mean"] == net.blobs["var"] == (1, 4, 1, 1)
    blobs = random_blobs(net)
    x = uniform(shape) * 3 + 0.5
    out = run_onnx(net, blobs, {"x": x})
    y, mean, var = bn_reference(x, blobs["bn"][0], blobs["bn"][1], mode)
    assert_close(out["y"], y, 1e-5)
    if mode == "LEARN":
        assert_close(out["mean"], mean, 1e-6)
        assert_close(out["var"], var, 1e-5)
    else:
        assert not out["mean"].any() and not out["var"].any()


def test_bn_blobs_and_fillers(tmp_path):
    net = build(tmp_path, inp("x", (2, 3)) + f'layer {{ name: "bn" type: "BN" bottom: "x" top: "y" '
                                            f'bn_param {{ {BN_FILLERS} }} }}\n'
                + 'layer { name: "bn2" type: "BN" bottom: "y" top: "z" }\n')
    assert net.blobs["y"] == (2, 3, 1, 1)  # the legacy 4-d view of the bottom
    assert [(p.name, p.shape, p.role) for p in net.layer("bn").params] == [
        ("scale", (1, 3, 1, 1), "other"), ("shift", (1, 3, 1, 1), "other")]
    filled = net.fill(filler="xavier", bias_filler="constant:value=5", seed=0)  # leave BN's blobs alone
    assert np.all(filled.blobs["bn"][0] == 1) and np.all(filled.blobs["bn"][1] == f32(0.001))
    assert not filled.blobs["bn2"][0].any() and not filled.blobs["bn2"][1].any()  # Caffe's default: constant 0


# ---- DenseImageData ---------------------------------------------------------------------------

def test_dense_image_data_takes_its_shapes_from_input(tmp_path):
    text = ('layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
            'dense_image_data_param { source: "x.txt" batch_size: 2 shuffle: true label_divide_factor: 2 } }\n'
            'layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { bn_mode: INFERENCE } }\n')
    with pytest.raises(MissingInputShapeError, match="--input data="):
        build(tmp_path, text)
    # the label image follows the data, divided by ENet's label_divide_factor
    assert build(tmp_path, text, input_shapes={"data": (2, 3, 8, 6)}).blobs["label"] == (2, 1, 4, 3)
    net = build(tmp_path, text, input_shapes={"data": (2, 3, 8, 6), "label": (2, 1, 8, 6)})
    assert net.inputs == ["data", "label"] and net.blobs["label"] == (2, 1, 8, 6)
    assert not net.warnings
    report = export_and_check(net.fill(seed=0))
    assert report.ok and list(report.info.inputs) == ["data"]


def test_list_layers_shows_the_forks(capsys):
    from fillers.cli import main

    assert main(["--list-layers"]) == 0
    out = capsys.readouterr().out
    for t, fork in [("Upsample", "caffe-segnet"), ("BN", "caffe-segnet"), ("Interp", "PSPNet"),
                    ("ShuffleChannel", "ShuffleNet"), ("Axpy", "SENet"), ("ConvolutionDepthwise", "ShuffleNet"),
                    ("DepthwiseConvolution", "DepthwiseConvolution"), ("ReLU6", "MobileNet-YOLO"),
                    ("DenseImageData", "caffe-segnet")]:
        line = next(l for l in out.splitlines() if l.split()[:1] == [t])
        assert fork in line, line
