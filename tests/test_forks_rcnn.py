"""The R-CNN and YOLO fork families (fillers/layers/forks/rcnn.py, yolo.py).

Each lowering is checked under onnxruntime against a numpy transcription of the fork's
C++ source (float32 arithmetic as written there) and, where OpenCV imports the layer,
against OpenCV's forward of the same prototxt; ROIPooling also against the forward of
rbgirshick/caffe-fast-rcnn itself (``../shared/golden-fast-rcnn``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import SHARED, load_recipe, recipe_params
from fillers.layers import lookup
from fillers.net import load
from fillers.onnx_export import export, ort_session

GOLDEN_FRCNN = SHARED / "golden-fast-rcnn"


# ---- numpy transcriptions of the forks' C++ ---------------------------------------------------

def c_round(v) -> int:
    """C's round() of a float32 value: halves away from zero."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def roi_pool_ref(x, rois, pooled_h, pooled_w, spatial_scale):
    """caffe-fast-rcnn roi_pooling_layer.cpp, Forward_cpu."""
    f32 = np.float32
    scale = f32(spatial_scale)
    n_rois = rois.shape[0]
    _, c, h, w = x.shape
    rois = rois.reshape(n_rois, -1)
    out = np.empty((n_rois, c, pooled_h, pooled_w), np.float32)
    for n in range(n_rois):
        r = rois[n]
        b = int(r[0])
        sw, sh, ew, eh = (c_round(f32(r[i]) * scale) for i in (1, 2, 3, 4))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = f32(rh) / f32(pooled_h), f32(rw) / f32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = int(math.floor(f32(ph) * bh))
                ws = int(math.floor(f32(pw) * bw))
                he = int(math.ceil(f32(ph + 1) * bh))
                we = int(math.ceil(f32(pw + 1) * bw))
                hs, he = min(max(hs + sh, 0), h), min(max(he + sh, 0), h)
                ws, we = min(max(ws + sw, 0), w), min(max(we + sw, 0), w)
                if he <= hs or we <= ws:
                    out[n, :, ph, pw] = 0
                else:
                    out[n, :, ph, pw] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return out


def psroi_pool_ref(x, rois, output_dim, group_size, spatial_scale):
    """caffe-rfcn psroi_pooling_layer.cu, PSROIPoolingForward (float32, one rounding per
    operation, the sum in loop order)."""
    f32 = np.float32
    scale = f32(spatial_scale)
    n_rois = rois.shape[0]
    _, c, h, w = x.shape
    g = group_size
    rois = rois.reshape(n_rois, -1)
    out = np.zeros((n_rois, output_dim, g, g), np.float32)
    for n in range(n_rois):
        r = rois[n]
        b = int(r[0])
        sw = f32(c_round(r[1])) * scale
        sh = f32(c_round(r[2])) * scale
        ew = f32(c_round(r[3]) + 1.0) * scale
        eh = f32(c_round(r[4]) + 1.0) * scale
        rw, rh = max(f32(ew - sw), f32(0.1)), max(f32(eh - sh), f32(0.1))
        bh, bw = f32(rh / f32(g)), f32(rw / f32(g))
        for ct in range(output_dim):
            for ph in range(g):
                for pw in range(g):
                    hs = int(math.floor(f32(f32(ph) * bh) + sh))
                    ws = int(math.floor(f32(f32(pw) * bw) + sw))
                    he = int(math.ceil(f32(f32(ph + 1) * bh) + sh))
                    we = int(math.ceil(f32(f32(pw + 1) * bw) + sw))
                    hs, he = min(max(hs, 0), h), min(max(he, 0), h)
                    ws, we = min(max(ws, 0), w), min(max(we, 0), w)
                    if he <= hs or we <= ws:
                        continue
                    cc = (ct * g + ph) * g + pw
                    acc = f32(0)
                    for yy in range(hs, he):
                        for xx in range(ws, we):
                            acc = f32(acc + x[b, cc, yy, xx])
                    out[n, ct, ph, pw] = acc / f32((he - hs) * (we - ws))
    return out


def reorg_ref(x, stride, reverse=False):
    """reorg_cpu of the Caffe YOLOv2 ports (math_functions.cpp), called with
    forward = reverse as ReorgLayer::Forward_cpu does."""
    n_, c_, h_, w_ = x.shape
    s = stride
    bottom = x.reshape(-1)
    top = np.empty_like(bottom)
    t_c, t_w, t_h = c_ // (s * s), w_ * s, h_ * s
    for n in range(n_):
        for c in range(c_):
            for hh in range(h_):
                for ww in range(w_):
                    bi = ww + w_ * (hh + h_ * (c + c_ * n))
                    c2, off = c % t_c, c // t_c
                    w2, h2 = ww * s + off % s, hh * s + off // s
                    ti = w2 + t_w * (h2 + t_h * (c2 + t_c * n))
                    if reverse:
                        top[ti] = bottom[bi]
                    else:
                        top[bi] = bottom[ti]
    shape = (n_, c_ // (s * s), h_ * s, w_ * s) if reverse else (n_, c_ * s * s, h_ // s, w_ // s)
    return top.reshape(shape)


def region_ref(x, classes, coords, boxes, softmax):
    """region_layer.cpp of the Caffe YOLOv2 port (flatten, logistic objectness, softmax)."""
    n_, c_, h_, w_ = x.shape
    size = coords + classes + 1
    top = x.reshape(n_, c_, h_ * w_).transpose(0, 2, 1).copy().reshape(n_, -1)  # flatten(forward)
    for b in range(n_):
        for i in range(h_ * w_ * boxes):
            idx = size * i
            top[b, idx + 4] = 1.0 / (1.0 + np.exp(-top[b, idx + 4]))
            if softmax:
                v = top[b, idx + 5: idx + 5 + classes].astype(np.float64)
                e = np.exp(v - v.max())
                top[b, idx + 5: idx + 5 + classes] = e / e.sum()
    return top.reshape(x.shape)


# ---- helpers ---------------------------------------------------------------------------------

def _net(tmp_path, text, name="t.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return load(str(path))


def _ort(net, feeds, blobs=None):
    sess = ort_session(export(net, blobs or {}))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items()
                                             if k in {i.name for i in sess.get_inputs()}})))


def _opencv(text, feeds, outputs):
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(bytearray(text.encode()))
    for k, v in feeds.items():
        net.setInput(v, k)
    res = net.forward(outputs)
    return dict(zip(outputs, res))


def _input_layer(shapes: dict) -> str:
    tops = "".join(f' top: "{k}"' for k in shapes)
    dims = "".join(" shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "in" type: "Input"{tops} input_param {{{dims} }} }}\n'


def _rois(rows):
    return np.asarray(rows, np.float32)


# ---- ROIPooling ------------------------------------------------------------------------------

ROI_CASES = [
    # (map N, C, H, W), pooled_h, pooled_w, spatial_scale, rois (image coordinates)
    ((2, 3, 7, 9), 3, 2, 0.5, [[0, 0, 0, 17, 13], [1, 3, 3, 5, 9], [1, 16, 12, 16, 12], [0, 1, 1, 1, 1],
                                [1, 0, 0, 0, 0], [0, 17, 0, 17, 13], [1, 9, 7, 15, 8]]),
    ((1, 2, 5, 11), 7, 7, 1.0, [[0, 0, 0, 10, 4], [0, 10, 4, 10, 4], [0, 2, 1, 4, 3], [0, 0, 4, 10, 4]]),
    ((1, 4, 13, 10), 2, 3, 0.0625, [[0, 0, 0, 159, 207], [0, 8, 8, 23, 24], [0, 151, 199, 159, 207],
                                     [0, 40, 100, 120, 104], [0, 7.5, 24.5, 7.5, 24.5]]),
    ((2, 1, 6, 6), 4, 5, 0.3, [[1, 0, 0, 19, 19], [0, 5, 5, 6, 6], [1, 18, 1, 19, 2], [0, 1.5, 2.5, 12.5, 4.5]]),
]


def _roi_text(shape, ph, pw, scale, n_rois):
    return (_input_layer({"data": shape, "rois": (n_rois, 5)})
            + f'layer {{ name: "rp" type: "ROIPooling" bottom: "data" bottom: "rois" top: "rp" '
              f'roi_pooling_param {{ pooled_h: {ph} pooled_w: {pw} spatial_scale: {scale} }} }}\n')


@pytest.mark.parametrize("case", range(len(ROI_CASES)))
@pytest.mark.parametrize("negative", [False, True], ids=["mixed", "all_negative"])
def test_roi_pooling_onnx_equals_fork_source_and_opencv(tmp_path, case, negative):
    shape, ph, pw, scale, rows = ROI_CASES[case]
    rois = _rois(rows)
    text = _roi_text(shape, ph, pw, scale, len(rois))
    rng = np.random.default_rng(case)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    if negative:  # older onnxruntime MaxRoiPool kernels gave +1.2e-38 here
        x = -np.abs(x) - 0.5
    net = _net(tmp_path, text)
    assert net.blobs["rp"] == (len(rois), shape[1], ph, pw)
    got = _ort(net, {"data": x, "rois": rois})["rp"]
    ref = roi_pool_ref(x, rois, ph, pw, scale)
    np.testing.assert_array_equal(got, ref)  # a max is exact
    # OpenCV agrees for ROIs inside the image (it truncates start + p * bin instead of
    # adding the start to floor(p * bin): the same for non-negative starts)
    cv = _opencv(text, {"data": x, "rois": rois}, ["rp"])["rp"]
    np.testing.assert_array_equal(cv, ref)


@pytest.mark.parametrize("case", range(len(ROI_CASES)))
def test_onnxruntime_maxroipool_agrees_here(case):
    """For the record (rcnn.py's docstring): this onnxruntime's MaxRoiPool computes the
    fork's numbers, all-negative bins included (older versions returned 1.2e-38 there);
    the export still uses the portable composition."""
    from onnx import TensorProto, helper

    shape, ph, pw, scale, rows = ROI_CASES[case]
    rois = _rois(rows)
    x = -np.abs(np.random.default_rng(case).uniform(-1, 1, shape).astype(np.float32)) - 0.5
    node = helper.make_node("MaxRoiPool", ["x", "r"], ["y"], pooled_shape=[ph, pw], spatial_scale=float(scale))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
                                        helper.make_tensor_value_info("r", TensorProto.FLOAT, [len(rois), 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    y = ort_session(model).run(None, {"x": x, "r": rois})[0]
    np.testing.assert_array_equal(y, roi_pool_ref(x, rois, ph, pw, scale))


def test_roi_pooling_shapes_and_errors(tmp_path):
    net = _net(tmp_path, _input_layer({"data": (1, 8, 5, 5), "rois": (300, 5, 1, 1)})
               + 'layer { name: "rp" type: "ROIPooling" bottom: "data" bottom: "rois" top: "rp" '
                 'roi_pooling_param { pooled_h: 6 pooled_w: 6 spatial_scale: 0.0625 } }\n')
    assert net.blobs["rp"] == (300, 8, 6, 6)
    spec = net.layer("rp").spec
    assert spec.origin.startswith("rbgirshick/caffe-fast-rcnn")
    with pytest.raises(Exception, match="pooled_h"):
        _net(tmp_path, _input_layer({"data": (1, 8, 5, 5), "rois": (3, 5)})
             + 'layer { name: "rp" type: "ROIPooling" bottom: "data" bottom: "rois" top: "rp" }\n', "bad.prototxt")


def test_roi_sample_input_gives_valid_rois(tmp_path):
    """The export check feeds the ROI bottom valid boxes inside the image the feature map
    stands for (its size / spatial_scale), with valid batch indices."""
    from fillers.onnx_export import export_with_info, make_inputs

    text = (_input_layer({"data": (2, 3, 12, 20), "rois": (40, 5)})
            + 'layer { name: "rp" type: "ROIPooling" bottom: "data" bottom: "rois" top: "rp" '
              'roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.25 } }\n')
    net = _net(tmp_path, text)
    _, info = export_with_info(net, {})
    feeds = make_inputs(info, net, seed=3)
    r = feeds["rois"]
    assert r.shape == (40, 5)
    assert set(np.unique(r[:, 0])) <= {0.0, 1.0}
    assert np.all(r[:, 1] >= 0) and np.all(r[:, 3] <= 79) and np.all(r[:, 1] <= r[:, 3])
    assert np.all(r[:, 2] >= 0) and np.all(r[:, 4] <= 47) and np.all(r[:, 2] <= r[:, 4])
    assert np.all(r == np.round(r))
    assert list(r[-1, 1:]) == [79, 47, 79, 47]  # a single pixel at the corner
    y = ort_session(export(net, {})).run(None, feeds)[0]
    np.testing.assert_array_equal(y, roi_pool_ref(feeds["data"], r, 2, 2, 0.25))


def test_export_and_check_compares_roi_pooling_with_opencv(tmp_path):
    from fillers.onnx_export import export_and_check

    text = (_input_layer({"data": (1, 3, 9, 11), "rois": (7, 5)})
            + 'layer { name: "rp" type: "ROIPooling" bottom: "data" bottom: "rois" top: "rp" '
              'roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 0.5 } }\n')
    net = _net(tmp_path, text)
    report = export_and_check((net, {}), str(tmp_path / "r.onnx"))
    assert report.ok, report.text()
    if report.reference:
        assert report.reference.startswith("OpenCV")
        assert max(row.max_abs_err for row in report.outputs) == 0.0


# ---- PSROIPooling ----------------------------------------------------------------------------

PSROI_CASES = [
    # (N, H, W), output_dim, group_size, spatial_scale, rois
    ((2, 7, 9), 2, 3, 0.5, [[0, 0, 0, 17, 13], [1, 3, 3, 5, 9], [1, 16, 12, 16, 12], [0, 1, 1, 1, 1],
                            [1, 9, 7, 15, 8], [0, 2.5, 3.5, 7.49, 9.5]]),
    ((1, 5, 11), 3, 2, 1.0, [[0, 0, 0, 10, 4], [0, 10, 4, 10, 4], [0, 2, 1, 4, 3]]),
    ((1, 13, 10), 1, 7, 0.0625, [[0, 0, 0, 159, 207], [0, 8, 8, 23, 24], [0, 151, 199, 159, 207],
                                 [0, 40, 100, 120, 104]]),
    ((2, 6, 6), 2, 4, 0.3, [[1, 0, 0, 19, 19], [0, 5, 5, 6, 6], [1, 18, 1, 19, 2]]),
]


@pytest.mark.parametrize("case", range(len(PSROI_CASES)))
def test_psroi_pooling_onnx_equals_fork_source_and_opencv(tmp_path, case):
    (n, h, w), d, g, scale, rows = PSROI_CASES[case]
    rois = _rois(rows)
    shape = (n, d * g * g, h, w)
    text = (_input_layer({"data": shape, "rois": (len(rois), 5)})
            + f'layer {{ name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" '
              f'psroi_pooling_param {{ spatial_scale: {scale} output_dim: {d} group_size: {g} }} }}\n')
    x = np.random.default_rng(10 + case).uniform(-1, 1, shape).astype(np.float32)
    net = _net(tmp_path, text)
    assert net.blobs["ps"] == (len(rois), d, g, g)
    got = _ort(net, {"data": x, "rois": rois})["ps"]
    ref = psroi_pool_ref(x, rois, d, g, scale)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    cv = _opencv(text, {"data": x, "rois": rois}, ["ps"])["ps"]
    np.testing.assert_allclose(cv, ref, rtol=0, atol=1e-6)


def test_psroi_pooling_checks_channels(tmp_path):
    with pytest.raises(Exception, match="output_dim"):
        _net(tmp_path, _input_layer({"data": (1, 10, 5, 5), "rois": (3, 5)})
             + 'layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" '
               'psroi_pooling_param { spatial_scale: 1 output_dim: 2 group_size: 3 } }\n')


# ---- Reorg and Region ------------------------------------------------------------------------

@pytest.mark.parametrize("shape,stride,reverse", [((2, 8, 6, 4), 2, False), ((1, 18, 9, 3), 3, False),
                                                  ((1, 4, 3, 5), 2, True), ((1, 64, 26, 26), 2, False)])
def test_reorg_onnx_equals_port_source(tmp_path, shape, stride, reverse):
    text = (_input_layer({"data": shape})
            + f'layer {{ name: "ro" type: "Reorg" bottom: "data" top: "ro" '
              f'reorg_param {{ stride: {stride} reverse: {str(reverse).lower()} }} }}\n')
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    net = _net(tmp_path, text)
    ref = reorg_ref(x, stride, reverse)
    assert net.blobs["ro"] == ref.shape
    got = _ort(net, {"data": x})["ro"]
    np.testing.assert_array_equal(got, ref)


def test_reorg_opencv(tmp_path):
    """OpenCV's Reorg (reorg_layer.cpp) against the ports' index order."""
    shape = (1, 8, 6, 4)
    text = (_input_layer({"data": shape})
            + 'layer { name: "ro" type: "Reorg" bottom: "data" top: "ro" reorg_param { stride: 2 } }\n')
    x = np.random.default_rng(2).uniform(-1, 1, shape).astype(np.float32)
    ref = reorg_ref(x, 2)
    cv = _opencv(text, {"data": x}, ["ro"])["ro"]
    assert cv.shape == ref.shape
    np.testing.assert_array_equal(cv, ref)


def test_reorg_shape_errors(tmp_path):
    for shape, msg in (((1, 6, 4, 4), "divisible by stride"), ((1, 8, 5, 4), "divisible by the stride")):
        with pytest.raises(Exception, match=msg):
            _net(tmp_path, _input_layer({"data": shape})
                 + 'layer { name: "ro" type: "Reorg" bottom: "data" top: "ro" reorg_param { stride: 2 } }\n',
                 "bad.prototxt")


@pytest.mark.parametrize("classes,boxes,softmax", [(3, 2, True), (20, 5, True), (2, 3, False)])
def test_region_onnx_equals_port_source(tmp_path, classes, boxes, softmax):
    shape = (2, boxes * (classes + 5), 3, 5)
    text = (_input_layer({"data": shape})
            + f'layer {{ name: "rg" type: "Region" bottom: "data" top: "rg" region_param {{ classes: {classes} '
              f'coords: 4 boxes_of_each_grid: {boxes} softmax: {str(softmax).lower()} }} }}\n')
    x = np.random.default_rng(3).uniform(-3, 3, shape).astype(np.float32)
    net = _net(tmp_path, text)
    assert net.blobs["rg"] == shape
    got = _ort(net, {"data": x})["rg"]
    np.testing.assert_allclose(got, region_ref(x, classes, 4, boxes, softmax), rtol=0, atol=1e-6)


# ---- Proposal, Yolov3DetectionOutput, SmoothL1Loss -------------------------------------------

PROPOSAL = """
layer { name: "proposal" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois"
  proposal_param { feat_stride: 16 base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 ratio: 2
                   scale: 8 scale: 16 scale: 32 pre_nms_topn: 6000 post_nms_topn: 300 nms_thresh: 0.7 } }
layer { name: "rp" type: "ROIPooling" bottom: "feat" bottom: "rois" top: "rp"
  roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.0625 } }
"""


def test_proposal_shapes_inputs_and_no_lowering(tmp_path):
    from fillers.onnx import export_with_info

    text = _input_layer({"cls": (1, 18, 5, 7), "bbox": (1, 36, 5, 7), "im_info": (1, 3), "feat": (1, 4, 5, 7)}) + PROPOSAL
    net = _net(tmp_path, text)
    assert net.blobs["rois"] == (300, 5)
    assert net.blobs["rp"] == (300, 4, 2, 2)
    spec = net.layer("proposal").spec
    info = spec.sample_input(2, (1, 3), np.random.default_rng(0))
    assert info.tolist() == [[80.0, 112.0, 1.0]]
    probs = spec.sample_input(0, (1, 18, 5, 7), np.random.default_rng(0))
    assert probs.min() >= 0 and probs.max() <= 1
    model, info = export_with_info(net.fill(seed=0))  # Proposal is left out, with what needs it
    assert set(info.left_out) == {"proposal", "rp"}
    assert "depends on the data" in info.left_out["proposal"] and info.left_out["rp"] == "needs 'rois' from layer 'proposal'"
    assert any(w.startswith("left out 2 layer(s)") and "'proposal' (Proposal)" in w for w in info.warnings)
    with pytest.raises(Exception, match="anchors"):
        _net(tmp_path, _input_layer({"cls": (1, 10, 5, 7), "bbox": (1, 36, 5, 7), "im_info": (1, 3),
                                     "feat": (1, 4, 5, 7)}) + PROPOSAL, "bad.prototxt")


def test_yolov3_detection_output_shape(tmp_path):
    text = (_input_layer({"a": (1, 3 * 85, 13, 13), "b": (1, 3 * 85, 26, 26)})
            + 'layer { name: "det" type: "Yolov3DetectionOutput" bottom: "a" bottom: "b" top: "det" '
              'yolov3_detection_output_param { num_classes: 80 num_box: 3 confidence_threshold: 0.01 '
              'nms_threshold: 0.45 biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58 '
              'biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319 '
              'mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 anchors_scale: 32 anchors_scale: 16 '
              'mask_group_num: 2 } }\n')
    net = _net(tmp_path, text)
    assert net.blobs["det"] == (1, 1, 1, 7)
    assert not lookup("Yolov3DetectionOutput").__dict__.get("training_only", False)


def test_smooth_l1_loss_is_a_training_layer(tmp_path):
    text = (_input_layer({"p": (4, 8, 3, 3), "t": (4, 8, 3, 3), "wi": (4, 8, 3, 3), "wo": (4, 8, 3, 3)})
            + 'layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" bottom: "wi" bottom: "wo" top: "l" '
              'loss_weight: 1 smooth_l1_loss_param { sigma: 3 } }\n')
    net = _net(tmp_path, text)
    assert net.blobs["l"] == ()
    assert lookup("SmoothL1Loss").training_only
    assert net.layer("l").spec.fork("smooth_l1_loss_param").sigma == 3


def test_origins_name_the_forks():
    for t, fork in (("ROIPooling", "caffe-fast-rcnn"), ("SmoothL1Loss", "caffe-fast-rcnn"),
                    ("PSROIPooling", "caffe-rfcn"), ("Proposal", "proposal"), ("Reorg", "yolov2"),
                    ("Region", "yolo_v2"), ("Yolov3DetectionOutput", "YOLOv3")):
        assert fork.lower() in lookup(t).origin.lower(), t


# ---- golden-fast-rcnn: the fork's own forward ------------------------------------------------

needs_golden = pytest.mark.skipif(not (GOLDEN_FRCNN / "index.json").exists(),
                                  reason=f"no golden at {GOLDEN_FRCNN}")


def _golden_nets():
    if not (GOLDEN_FRCNN / "index.json").exists():
        return []
    return sorted(json.loads((GOLDEN_FRCNN / "index.json").read_text())["nets"])


@pytest.mark.shared
@needs_golden
@pytest.mark.parametrize("net_id", _golden_nets())
def test_golden_fast_rcnn_shapes(net_id, capsys):
    from fillers.cli import main

    entry = json.loads((GOLDEN_FRCNN / "index.json").read_text())["nets"][net_id]
    gold = json.loads((GOLDEN_FRCNN / "shapes" / f"{net_id}.json").read_text())
    assert main([str(GOLDEN_FRCNN / entry["source"]), "--json"]) == 0
    mine = json.loads(capsys.readouterr().out)
    split_of = {t: l["bottoms"][0] for l in gold["layers"] if l["auto_split"] for t in l["tops"]}
    theirs = [l for l in gold["layers"] if not l["auto_split"]]
    # the net's `input:` fields: Caffe lists no layer for them, this tool one Input layer
    mine["layers"] = [l for l in mine["layers"]
                      if not (l["type"] == "Input" and l["tops"] == gold["inputs"]
                              and l["name"] not in {t["name"] for t in theirs})]
    assert [l["name"] for l in mine["layers"]] == [l["name"] for l in theirs]
    for a, b in zip(mine["layers"], theirs):
        assert a["type"] == b["type"] and a["params"] == b["params"] and a["tops"] == b["tops"], a["name"]
        assert a["bottoms"] == [split_of.get(x, x) for x in b["bottoms"]], a["name"]
    assert mine["blobs"] == {k: v for k, v in gold["blobs"].items() if k not in split_of}
    assert mine["n_params"] == gold["n_params"]
    assert mine["inputs"] == gold["inputs"] and mine["outputs"] == gold["outputs"]


@pytest.mark.shared
@needs_golden
@pytest.mark.parametrize("net_id", _golden_nets())
def test_golden_fast_rcnn_forward(net_id):
    """The export against caffe-fast-rcnn's forward.  The golden's inputs are stored; its
    parameter blobs are not the recipe's (the fork's fills were used: its Python interface
    cannot seed them, and e.g. roi_tiny's fc output has Caffe's zero bias), so only outputs
    computed from the inputs alone are compared in full, and the ROI rows the golden fed
    are checked against the recipe's roi_blob."""
    recipe = load_recipe(GOLDEN_FRCNN)
    entry = json.loads((GOLDEN_FRCNN / "index.json").read_text())["nets"][net_id]
    golden = np.load(GOLDEN_FRCNN / "forward" / f"{net_id}.npz")
    net = load(str(GOLDEN_FRCNN / entry["source"]))
    blobs = recipe_params(recipe, net)
    for name, kind in entry["forward"]["input_kinds"].items():
        if kind.startswith("regions of interest"):
            consumer = next(l for l in net.layers if l.type == "ROIPooling" and l.bottoms[1] == name
                            and l.bottoms[0] in net.inputs)
            image_hw = net.blobs[consumer.bottoms[0]][2:]
            np.testing.assert_array_equal(golden[f"input/{name}"],
                                          recipe.roi_blob(name, net.blobs[name], image_hw))
    sess = ort_session(export(net, blobs, all_blobs=True))
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, {i.name: golden[f"input/{i.name}"] for i in sess.get_inputs()})))
    compared = 0
    for layer in net.layers:
        if layer.type != "ROIPooling" or layer.bottoms[0] not in net.inputs:
            continue
        (top,) = layer.tops
        y = outs[top]
        ref = golden[f"output/{top}"] if f"output/{top}" in golden.files else None
        p = layer.spec.fork("roi_pooling_param")
        mine = roi_pool_ref(golden[f"input/{layer.bottoms[0]}"], golden[f"input/{layer.bottoms[1]}"],
                            p.pooled_h, p.pooled_w, p.spatial_scale)
        np.testing.assert_array_equal(y, mine)
        if ref is not None:
            err = float(np.max(np.abs(y.astype(np.float64) - ref)))
            assert err <= 1e-4 * max(1.0, float(np.max(np.abs(ref)))), f"{top}: {err}"
            compared += 1
        st = golden[f"stats/{top}"]
        assert abs(float(y.mean()) - st[0]) < 1e-5 and float(y.max()) == pytest.approx(st[3])
    assert compared >= 1
