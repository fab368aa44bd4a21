"""The SSD fork's layer types (weiliu89/caffe, ssd branch): Normalize, Permute, PriorBox,
DetectionOutput, AnnotatedData, MultiBoxLoss.

Three references:

* ``../shared/golden-ssd``: what the fork's own Caffe computed (shapes, seeded fills and
  forward outputs of ``ssd_tiny``, ``ssd_priors`` and the corpus' VGG SSD300): shapes and
  fills must be equal, the export's outputs within 1e-4 x max(1, max |Caffe|),
  detections as sets of rows;
* numpy transcriptions of the fork's C++ (``*_ref`` below, written loop for loop after
  ``normalize_layer.cpp``, ``prior_box_layer.cpp``, ``detection_output_layer.cpp`` and
  ``bbox_util.cpp``), on awkward parameters;
* OpenCV's Caffe importer (``cv2.dnn``), where it computes what the fork computes; the
  tests marked "OpenCV differs" show where it does not (the fork wins).
"""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

from conftest import CORPUS, SHARED, load_recipe, recipe_params
from fillers.caffemodel import write_caffemodel
from fillers.cli import main
from fillers.errors import ExportError
from fillers.layers import lookup
from fillers.layers.forks import ssd_pb2
from fillers.net import load
from fillers.onnx_export import export, export_and_check, ort_session

cv2 = pytest.importorskip("cv2")

GOLDEN_SSD = SHARED / "golden-ssd"
HAVE_GOLDEN_SSD = (GOLDEN_SSD / "index.json").exists()
SSD_INDEX = json.loads((GOLDEN_SSD / "index.json").read_text()) if HAVE_GOLDEN_SSD else {"nets": {}}
CORPUS_SSD = CORPUS / "xzgz__caffe-ssd"
F32 = np.float32


# ---- helpers -------------------------------------------------------------------------------

def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_onnx(net, blobs, feeds):
    model = export(net, blobs)
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))


def run_opencv(proto_path, net, blobs, feeds, outputs, tmp_path, flat_scalars=True):
    """OpenCV's forward of the prototxt as written (fork fields included) with ``blobs``.
    OpenCV cannot read blobs of no axes (the fork's shared Normalize scale): with
    ``flat_scalars`` they are written as one-element blobs."""
    if flat_scalars:
        blobs = {k: [a.reshape(1) if a.ndim == 0 else a for a in v] for k, v in blobs.items()}
    model = tmp_path / "cv.caffemodel"
    write_caffemodel(model, net, blobs)
    cvnet = cv2.dnn.readNetFromCaffe(str(proto_path), str(model))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for k, v in feeds.items():
        cvnet.setInput(v, k)
    return dict(zip(outputs, (np.asarray(r) for r in cvnet.forward(outputs))))


def rows(det):
    return np.asarray(det).reshape(-1, 7)


def same_row_sets(a, b, tol):
    """Each row of a matches a distinct row of b within tol (same number of rows)."""
    a, b = rows(a).astype(np.float64), rows(b).astype(np.float64)
    if a.shape != b.shape:
        return False
    free = list(range(len(b)))
    for r in a:
        hit = next((j for j in free if np.all(np.abs(b[j] - r) <= tol)), None)
        if hit is None:
            return False
        free.remove(hit)
    return True


# ---- numpy transcriptions of the fork's C++ ------------------------------------------------

def normalize_ref(x, scale, across_spatial, channel_shared, eps):
    """normalize_layer.cpp Forward_cpu."""
    x = x.astype(F32)
    out = np.empty_like(x)
    eps = F32(eps)
    for n in range(x.shape[0]):
        sq = x[n] * x[n]
        if across_spatial:
            norm = F32(math.pow(float(F32(np.sum(sq, dtype=np.float64)) + eps), 0.5))
            out[n] = x[n] * F32(1.0 / float(norm))
        else:
            norm = np.sqrt(F32(np.sum(sq, axis=0, dtype=np.float64)) + eps).astype(F32)
            out[n] = x[n] / norm
        if channel_shared:
            out[n] *= F32(scale.reshape(-1)[0])
        else:
            out[n] *= scale.reshape((-1,) + (1,) * (x.ndim - 2))
    return out


def prior_box_ref(p, layer_hw, image_hw):
    """prior_box_layer.cpp LayerSetUp + Forward_cpu, line for line (float32 where the fork
    keeps floats, double where its expressions promote)."""
    min_sizes = [F32(v) for v in p.min_size]
    ars = [F32(1.0)]
    for ar in p.aspect_ratio:
        ar = F32(ar)
        if any(abs(F32(ar - a)) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if p.flip:
            ars.append(F32(1.0 / float(ar)))
    max_sizes = [F32(v) for v in p.max_size]
    num_priors = len(ars) * len(min_sizes) + len(max_sizes)
    variance = [F32(v) for v in p.variance] or [F32(0.1)]
    if p.HasField("img_h") or p.HasField("img_w"):
        img_h, img_w = p.img_h, p.img_w
    elif p.HasField("img_size"):
        img_h = img_w = p.img_size
    else:
        img_h = img_w = 0
    if p.HasField("step_h") or p.HasField("step_w"):
        step_h, step_w = F32(p.step_h), F32(p.step_w)
    elif p.HasField("step"):
        step_h = step_w = F32(p.step)
    else:
        step_h = step_w = F32(0)
    offset = F32(p.offset)
    layer_h, layer_w = layer_hw
    if img_h == 0 or img_w == 0:
        img_h, img_w = image_hw
    if step_w == 0 or step_h == 0:
        step_w, step_h = F32(F32(img_w) / layer_w), F32(F32(img_h) / layer_h)
    dim = layer_h * layer_w * num_priors * 4
    top = np.zeros(2 * dim, F32)
    idx = 0

    def put(cx, cy, bw, bh):
        nonlocal idx
        top[idx:idx + 4] = [(float(cx) - float(bw) / 2.0) / img_w, (float(cy) - float(bh) / 2.0) / img_h,
                            (float(cx) + float(bw) / 2.0) / img_w, (float(cy) + float(bh) / 2.0) / img_h]
        idx += 4

    for h in range(layer_h):
        for w in range(layer_w):
            cx = F32(F32(w + offset) * step_w)
            cy = F32(F32(h + offset) * step_h)
            for s, mn in enumerate(min_sizes):
                mn = int(mn)
                put(cx, cy, F32(mn), F32(mn))
                if max_sizes:
                    side = F32(math.sqrt(mn * int(max_sizes[s])))
                    put(cx, cy, side, side)
                for ar in ars:
                    if abs(float(ar) - 1.0) < 1e-6:
                        continue
                    put(cx, cy, F32(F32(mn) * np.sqrt(ar)), F32(F32(mn) / np.sqrt(ar)))
    if p.clip:
        top[:dim] = np.minimum(np.maximum(top[:dim], F32(0)), F32(1))
    top[dim:] = np.tile(variance if len(variance) == 4 else variance * 4, dim // 4)
    return top.reshape(1, 2, dim)


def _iou(a, b):
    """bbox_util.cpp JaccardOverlap (normalized), float32."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        ix0 = iy0 = ix1 = iy1 = F32(0)
    else:
        ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    iw, ih = F32(ix1 - ix0), F32(iy1 - iy0)
    if iw > 0 and ih > 0:
        inter = F32(iw * ih)

        def size(bb):
            return F32(0) if bb[2] < bb[0] or bb[3] < bb[1] else F32(F32(bb[2] - bb[0]) * F32(bb[3] - bb[1]))

        return F32(inter / F32(F32(size(a) + size(b)) - inter))
    return F32(0)


def _decode(prior, var, loc, code, enc):
    """bbox_util.cpp DecodeBBox for one box (float32; exp in double)."""
    px0, py0, px1, py1 = prior
    v = [F32(1)] * 4 if enc else var
    if code == 1:  # CORNER
        return [F32(px0 + F32(v[0] * loc[0])) if not enc else F32(px0 + loc[0]),
                F32(py0 + F32(v[1] * loc[1])) if not enc else F32(py0 + loc[1]),
                F32(px1 + F32(v[2] * loc[2])) if not enc else F32(px1 + loc[2]),
                F32(py1 + F32(v[3] * loc[3])) if not enc else F32(py1 + loc[3])]
    pw, ph = F32(px1 - px0), F32(py1 - py0)
    if code == 3:  # CORNER_SIZE
        mul = (lambda k: F32(loc[k])) if enc else (lambda k: F32(v[k] * loc[k]))
        return [F32(px0 + F32(mul(0) * pw)), F32(py0 + F32(mul(1) * ph)),
                F32(px1 + F32(mul(2) * pw)), F32(py1 + F32(mul(3) * ph))]
    pcx, pcy = F32(F32(px0 + px1) / 2), F32(F32(py0 + py1) / 2)
    if enc:
        cx, cy = F32(F32(loc[0] * pw) + pcx), F32(F32(loc[1] * ph) + pcy)
        w, h = F32(math.exp(float(loc[2])) * float(pw)), F32(math.exp(float(loc[3])) * float(ph))
    else:
        cx = F32(F32(F32(v[0] * loc[0]) * pw) + pcx)
        cy = F32(F32(F32(v[1] * loc[1]) * ph) + pcy)
        w = F32(math.exp(float(F32(v[2] * loc[2]))) * float(pw))
        h = F32(math.exp(float(F32(v[3] * loc[3]))) * float(ph))
    return [F32(float(cx) - float(w) / 2.0), F32(float(cy) - float(h) / 2.0),
            F32(float(cx) + float(w) / 2.0), F32(float(cy) + float(h) / 2.0)]


def detection_output_ref(loc, conf, prior, p):
    """detection_output_layer.cpp Forward_cpu with bbox_util.cpp's GetLocPredictions,
    GetConfidenceScores, GetPriorBBoxes, DecodeBBoxesAll, ApplyNMSFast (stable sort of the
    scores above the threshold, top_k, greedy NMS with eta) and the keep_top_k sort.
    (The fork's keep_top_k sort is std::sort; Python's stable sort equals it for up to 16
    detections, where libstdc++ sorts by insertion; the tests keep ties below that.)"""
    num = loc.shape[0]
    C = p.num_classes
    L = 1 if p.share_location else C
    P = prior.shape[2] // 4
    loc = loc.reshape(num, P, L, 4).astype(F32)
    conf = conf.reshape(num, P, C).astype(F32)
    pb = prior.reshape(-1)[:4 * P].reshape(P, 4)
    pv = prior.reshape(-1)[4 * P:8 * P].reshape(P, 4)
    thr = F32(p.confidence_threshold) if p.HasField("confidence_threshold") else -np.finfo(F32).max
    top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") else -1
    nms_thr, eta = F32(p.nms_param.nms_threshold), F32(p.nms_param.eta)
    out, all_indices = [], []
    decoded = []
    for i in range(num):
        dec = {}
        for c in range(L):
            label = -1 if p.share_location else c
            if label == p.background_label_id:  # with share_location, -1 too: then nothing is decoded
                continue
            dec[label] = [_decode(pb[k], pv[k], loc[i, k, c], p.code_type, p.variance_encoded_in_target)
                          for k in range(P)]
        decoded.append(dec)
        indices, num_det = {}, 0
        for c in range(C):
            if c == p.background_label_id:
                continue
            scores = conf[i, :, c]
            if (-1 if p.share_location else c) not in dec:
                continue
            boxes = dec[-1 if p.share_location else c]
            cand = sorted([(scores[k], k) for k in range(P) if scores[k] > thr], key=lambda t: -t[0])
            if top_k > -1:
                cand = cand[:top_k]
            kept, adaptive = [], nms_thr
            for s, k in cand:
                keep = all(_iou(boxes[k], boxes[j]) <= adaptive for j in kept)
                if keep:
                    kept.append(k)
                    if eta < 1 and adaptive > 0.5:
                        adaptive = F32(adaptive * eta)
            indices[c] = kept
            num_det += len(kept)
        if p.keep_top_k > -1 and num_det > p.keep_top_k:
            pairs = [(conf[i, k, c], c, k) for c in sorted(indices) for k in indices[c]]
            pairs = sorted(pairs, key=lambda t: -t[0])[:p.keep_top_k]
            new = {}
            for s, c, k in pairs:
                new.setdefault(c, []).append(k)
            indices = new
        all_indices.append(indices)
    for i in range(num):
        for c in sorted(all_indices[i]):
            boxes = decoded[i][-1 if p.share_location else c]
            for k in all_indices[i][c]:
                out.append([i, c, conf[i, k, c], *boxes[k]])
    if not out:
        out = [[i, -1, -1, -1, -1, -1, -1] for i in range(num)]
    return np.array(out, F32).reshape(1, 1, -1, 7)


def det_param(text):
    from google.protobuf import text_format

    return text_format.Parse(text, ssd_pb2.DetectionOutputParameter())


# ---- registry and parameters ---------------------------------------------------------------

SSD_TYPES = ["Normalize", "Permute", "PriorBox", "DetectionOutput", "AnnotatedData", "MultiBoxLoss"]


@pytest.mark.parametrize("name", SSD_TYPES)
def test_types_are_registered_with_their_fork_source(name):
    cls = lookup(name)
    assert cls is not None and cls.origin.startswith("weiliu89/caffe (ssd branch): src/caffe/layers/")
    assert cls.origin.endswith(".cpp") and "weiliu89/caffe" in cls.__doc__ + cls.__module__ or cls.__doc__
    assert all(v is not None and v.DESCRIPTOR.full_name.startswith("forks.ssd.")
               for k, v in cls.fork_params.items() if "." not in k)


def test_schema_has_the_forks_field_numbers():
    f = ssd_pb2.NormalizeParameter.DESCRIPTOR.fields_by_name
    assert (f["across_spatial"].number, f["scale_filler"].number, f["channel_shared"].number, f["eps"].number) == (1, 2, 3, 4)
    d = ssd_pb2.DetectionOutputParameter.DESCRIPTOR.fields_by_name
    assert d["keep_top_k"].number == 7 and d["variance_encoded_in_target"].number == 8
    assert d["confidence_threshold"].number == 9 and d["code_type"].default_value == 1
    assert ssd_pb2.PriorBoxParameter.DESCRIPTOR.fields_by_name["offset"].number == 13
    assert ssd_pb2.MultiBoxLossParameter.DESCRIPTOR.fields_by_name["use_prior_for_nms"].number == 23
    assert ssd_pb2.NonMaximumSuppressionParameter().nms_threshold == pytest.approx(0.3)


NORM_NET = """\
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 9 } } }
    layer { name: "norm" type: "Normalize" bottom: "data" top: "norm"
      norm_param { across_spatial: %s channel_shared: %s eps: %s scale_filler { type: "gaussian" std: 3 } } }
"""


def test_normalize_parameters_are_read_parsed_and_fill_like_bvlc(tmp_path):
    path = write(tmp_path, NORM_NET % ("false", "false", "0.01"))
    net = load(path)
    assert not [w for w in net.warnings if "norm_param" in w]
    spec = net.layer("norm").spec
    p = spec.fork("norm_param")
    assert isinstance(p, ssd_pb2.NormalizeParameter) and p.eps == pytest.approx(0.01)
    assert [(b.name, b.shape, b.role) for b in net.layer("norm").params] == [("scale", (5,), "other")]
    filled = net.fill(seed=3, rng="caffe", filler="xavier")  # --filler leaves the scale alone
    from fillers import CaffeRNG, gaussian

    assert np.array_equal(filled.blobs["norm"][0], gaussian((5,), 0, 3, rng=CaffeRNG(3)))
    shared = load(write(tmp_path, NORM_NET.replace("scale_filler { type: \"gaussian\" std: 3 }", "")
                        % ("true", "true", "1e-10"), "b.prototxt"))
    blob = shared.fill(seed=1).blobs["norm"][0]
    assert blob.shape == () and blob == 1.0  # the fork's default: constant 1.0, no axes


# ---- Normalize -----------------------------------------------------------------------------

@pytest.mark.parametrize("across,shared", [(False, False), (False, True), (True, False), (True, True)])
def test_normalize_against_fork_and_opencv(tmp_path, across, shared):
    path = write(tmp_path, NORM_NET % (str(across).lower(), str(shared).lower(), "0.001"))
    net = load(path)
    blobs = net.fill(seed=5).blobs
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5, 7, 9)).astype(F32)
    x[1, :, 2, 3] = 0  # an all-zero position: eps keeps it finite
    y = run_onnx(net, blobs, {"data": x})["norm"]
    ref = normalize_ref(x, blobs["norm"][0], across, shared, 0.001)
    assert np.max(np.abs(y - ref)) <= 1e-5 * max(1, np.abs(ref).max())
    if across and not shared:
        # OpenCV differs: across the spatial extent it asserts one scale per normalised
        # plane (C * H * W values), so the fork's per-channel scale is refused
        with pytest.raises(cv2.error, match="numPlanes"):
            run_opencv(path, net, blobs, {"data": x}, ["norm"], tmp_path)
        return
    cv = run_opencv(path, net, blobs, {"data": x}, ["norm"], tmp_path)["norm"]
    assert np.max(np.abs(cv - ref)) <= 1e-5 * max(1, np.abs(ref).max())


def test_normalize_shared_scale_as_caffe_writes_it_reads_in_opencv(tmp_path):
    """The fork's shared scale is a blob of no axes; written as Caffe writes such a blob (no
    shape, no legacy dims), OpenCV reads it and agrees."""
    path = write(tmp_path, NORM_NET % ("true", "true", "1e-10"))
    net = load(path)
    blobs = net.fill(seed=5).blobs
    assert blobs["norm"][0].shape == ()
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 9)).astype(F32)
    cv = run_opencv(path, net, blobs, {"data": x}, ["norm"], tmp_path, flat_scalars=False)["norm"]
    ref = normalize_ref(x, blobs["norm"][0], True, True, 1e-10)
    assert np.max(np.abs(cv - ref)) <= 1e-5 * max(1, np.abs(ref).max())


# ---- Permute -------------------------------------------------------------------------------

@pytest.mark.parametrize("order,shape", [([0, 2, 3, 1], (2, 3, 5, 7)), ([3, 1, 0, 2], (1, 4, 3, 5)),
                                         ([2], (2, 3, 5, 7)), ([0, 1, 2, 3], (1, 2, 3, 4)), ([], (2, 3, 4, 1))])
def test_permute_against_fork_and_opencv(tmp_path, order, shape):
    orders = " ".join(f"order: {o}" for o in order)
    path = write(tmp_path, f"""\
        layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {' '.join(f'dim: {d}' for d in shape)} }} }} }}
        layer {{ name: "perm" type: "Permute" bottom: "data" top: "perm" permute_param {{ {orders} }} }}
        """)
    net = load(path)
    full = order + [i for i in range(len(shape)) if i not in order]
    assert net.blobs["perm"] == [shape[i] for i in full] or tuple(net.blobs["perm"]) == tuple(shape[i] for i in full)
    x = np.random.default_rng(1).standard_normal(shape).astype(F32)
    y = run_onnx(net, {}, {"data": x})["perm"]
    assert np.array_equal(y, np.transpose(x, full))
    if len(order) not in (0, len(shape)):
        # OpenCV differs: it wants every axis listed; the fork appends the missing ones
        with pytest.raises(cv2.error, match="Orders"):
            run_opencv(path, net, {}, {"data": x}, ["perm"], tmp_path)
        return
    cv = run_opencv(path, net, {}, {"data": x}, ["perm"], tmp_path)["perm"]
    assert np.array_equal(cv.reshape(y.shape), y)


def test_permute_rejects_bad_orders(tmp_path):
    from fillers.errors import NetError

    for bad in ("order: 4", "order: 1 order: 1"):
        path = write(tmp_path, f"""\
            layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 2 dim: 3 dim: 4 }} }} }}
            layer {{ name: "perm" type: "Permute" bottom: "data" top: "perm" permute_param {{ {bad} }} }}
            """)
        with pytest.raises(NetError, match="perm"):
            load(path)


# ---- PriorBox ------------------------------------------------------------------------------

PRIOR_NET = """\
    layer { name: "feat" type: "Input" top: "feat" input_param { shape { dim: 1 dim: 3 dim: %d dim: %d } } }
    layer { name: "img" type: "Input" top: "img" input_param { shape { dim: 1 dim: 3 dim: %d dim: %d } } }
    layer { name: "prior" type: "PriorBox" bottom: "feat" bottom: "img" top: "prior" prior_box_param { %s } }
"""

# awkward settings OpenCV agrees on: odd maps, flip and clip, several ratios (one repeated,
# one equal to 1), explicit steps, offsets, image sizes, one or four variances
PRIOR_CASES = {
    "odd_flip_clip": ((5, 7), (37, 53), "min_size: 7 max_size: 19 aspect_ratio: 2 aspect_ratio: 3 "
                      "aspect_ratio: 2 aspect_ratio: 1 flip: true clip: true variance: 0.1"),
    "noflip_steps": ((3, 4), (30, 41), "min_size: 11 aspect_ratio: 1.5 aspect_ratio: 0.6 flip: false clip: false "
                     "step_h: 9 step_w: 7.5 offset: 0.3 variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"),
    "img_size_step": ((6, 6), (20, 20), "min_size: 30 max_size: 60 aspect_ratio: 2 img_size: 300 step: 50 "
                      "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"),
    "step_only": ((6, 5), (19, 23), "min_size: 3 max_size: 8 aspect_ratio: 2 step: 3.5 clip: false "
                  "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"),
    "img_hw_clip": ((2, 9), (8, 8), "min_size: 5 aspect_ratio: 4 img_h: 29 img_w: 61 clip: true variance: 0.2"),
}


@pytest.mark.parametrize("case", sorted(PRIOR_CASES))
def test_prior_box_is_the_forks_float32_bit_for_bit(tmp_path, case):
    (fh, fw), (ih, iw), params = PRIOR_CASES[case]
    net = load(write(tmp_path, PRIOR_NET % (fh, fw, ih, iw, params)))
    layer = net.layer("prior")
    ref = prior_box_ref(layer.spec.fork("prior_box_param"), (fh, fw), (ih, iw))
    assert tuple(net.blobs["prior"]) == ref.shape
    feeds = {"feat": np.zeros((1, 3, fh, fw), F32), "img": np.zeros((1, 3, ih, iw), F32)}
    y = run_onnx(net, {}, feeds)["prior"]
    assert np.array_equal(y.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("case", ["odd_flip_clip", "noflip_steps", "step_only"])
def test_prior_box_against_opencv(tmp_path, case):
    (fh, fw), (ih, iw), params = PRIOR_CASES[case]
    path = write(tmp_path, PRIOR_NET % (fh, fw, ih, iw, params))
    net = load(path)
    feeds = {"feat": np.zeros((1, 3, fh, fw), F32), "img": np.zeros((1, 3, ih, iw), F32)}
    y = run_onnx(net, {}, feeds)["prior"]
    cv = run_opencv(path, net, {}, feeds, ["prior"], tmp_path)["prior"]
    assert cv.shape == y.shape and np.max(np.abs(cv - y)) <= 1e-6


def test_prior_box_opencv_differs_on_fractional_sizes_and_default_variance(tmp_path):
    """OpenCV differs: the fork keeps min/max sizes in an int (7.5 -> 7), OpenCV keeps the
    fraction; the fork defaults the variance to 0.1, OpenCV refuses a PriorBox without one.
    We follow the fork."""
    path = write(tmp_path, PRIOR_NET % (3, 3, 30, 30, "min_size: 7.5 max_size: 12.9 variance: 0.1"))
    net = load(path)
    feeds = {"feat": np.zeros((1, 3, 3, 3), F32), "img": np.zeros((1, 3, 30, 30), F32)}
    y = run_onnx(net, {}, feeds)["prior"]
    ref = prior_box_ref(net.layer("prior").spec.fork("prior_box_param"), (3, 3), (30, 30))
    assert np.array_equal(y, ref)
    assert y[0, 0, 2] - y[0, 0, 0] == pytest.approx(7 / 30)  # side 7, not 7.5
    cv = run_opencv(path, net, {}, feeds, ["prior"], tmp_path)["prior"]
    assert np.max(np.abs(cv - y)) > 1e-3
    path = write(tmp_path, PRIOR_NET % (3, 3, 30, 30, "min_size: 7"), "novar.prototxt")
    net = load(path)
    y = run_onnx(net, {}, feeds)["prior"]
    assert np.all(y[0, 1] == F32(0.1))
    with pytest.raises(cv2.error):
        run_opencv(path, net, {}, feeds, ["prior"], tmp_path)


@pytest.mark.parametrize("case", ["img_size_step", "img_hw_clip"])
def test_prior_box_opencv_differs_on_image_sizes(tmp_path, case):
    """OpenCV differs: it ignores img_size and img_h/img_w (it always takes the image
    bottom's size); the fork divides by the given size.  We follow the fork."""
    (fh, fw), (ih, iw), params = PRIOR_CASES[case]
    path = write(tmp_path, PRIOR_NET % (fh, fw, ih, iw, params))
    net = load(path)
    feeds = {"feat": np.zeros((1, 3, fh, fw), F32), "img": np.zeros((1, 3, ih, iw), F32)}
    y = run_onnx(net, {}, feeds)["prior"]
    assert np.array_equal(y, prior_box_ref(net.layer("prior").spec.fork("prior_box_param"), (fh, fw), (ih, iw)))
    cv = run_opencv(path, net, {}, feeds, ["prior"], tmp_path)["prior"]
    assert np.max(np.abs(cv - y)) > 1e-2


def test_prior_box_opencv_differs_on_the_clip_default(tmp_path):
    """OpenCV differs: its clip defaults to true, the fork's to false."""
    path = write(tmp_path, PRIOR_NET % (3, 3, 30, 30, "min_size: 15 variance: 0.1"))
    net = load(path)
    feeds = {"feat": np.zeros((1, 3, 3, 3), F32), "img": np.zeros((1, 3, 30, 30), F32)}
    y = run_onnx(net, {}, feeds)["prior"]
    assert y.min() < 0  # not clipped, as the fork
    cv = run_opencv(path, net, {}, feeds, ["prior"], tmp_path)["prior"]
    assert cv.min() >= 0 and np.array_equal(cv, np.clip(y, 0, 1))


def test_prior_box_rejects_what_the_fork_rejects(tmp_path):
    from fillers.errors import NetError

    for bad, what in [("max_size: 9", "min_size"), ("min_size: 9 max_size: 5", "greater"),
                      ("min_size: 9 variance: 0.1 variance: 0.2", "four"),
                      ("min_size: 9 step: 4 step_h: 3 step_w: 3", "step")]:
        with pytest.raises(NetError, match=what):
            load(write(tmp_path, PRIOR_NET % (3, 3, 30, 30, bad)))


# ---- DetectionOutput -----------------------------------------------------------------------

DET_NET = """\
    layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: %(n)d dim: %(nloc)d } } }
    layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: %(n)d dim: %(nconf)d } } }
    layer { name: "prior" type: "Input" top: "prior" input_param { shape { dim: 1 dim: 2 dim: %(nprior)d } } }
    layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det"
      detection_output_param { %(params)s } }
"""


def det_inputs(n, P, C, L, seed, ties=True, grid=True):
    """Priors on a coarse grid (many overlaps), softmax-like confidences with exact ties
    (equal scores for several priors in a class, and across classes), small offsets."""
    rng = np.random.default_rng(seed)
    if grid:
        cx = rng.integers(0, 6, P) / 6 + 1 / 12
        cy = rng.integers(0, 6, P) / 6 + 1 / 12
        w = rng.choice([0.2, 0.3, 0.45], P)
        h = rng.choice([0.2, 0.3, 0.45], P)
    else:
        cx, cy, w, h = rng.uniform(0.1, 0.9, P), rng.uniform(0.1, 0.9, P), rng.uniform(0.05, 0.5, P), rng.uniform(0.05, 0.5, P)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(F32)
    var = np.tile(np.array([0.1, 0.1, 0.2, 0.2], F32), (P, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)]).reshape(1, 2, -1).astype(F32)
    loc = rng.normal(0, 0.5, (n, P, L, 4)).astype(F32)
    logits = rng.normal(0, 2, (n, P, C))
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    conf = np.round(conf, 2).astype(F32) if ties else conf.astype(F32)  # rounding makes ties
    return loc.reshape(n, -1), conf.reshape(n, -1), prior


DET_CASES = {
    # name: (n, P, C, share_location, params)
    "center_size_topk_keep": (1, 60, 4, True, "num_classes: 4 share_location: true background_label_id: 0 "
                              "nms_param { nms_threshold: 0.45 top_k: 20 } code_type: CENTER_SIZE keep_top_k: 7 "
                              "confidence_threshold: 0.05"),
    "corner_per_class_loc": (1, 40, 3, False, "num_classes: 3 share_location: false background_label_id: 0 "
                             "nms_param { nms_threshold: 0.3 } code_type: CORNER keep_top_k: 10 "
                             "confidence_threshold: 0.1"),
    "corner_size_bg2_batch": (2, 30, 3, True, "num_classes: 3 background_label_id: 2 "
                              "nms_param { nms_threshold: 0.5 top_k: 15 } code_type: CORNER_SIZE keep_top_k: 12 "
                              "confidence_threshold: 0.2"),
    "encoded_no_bg_no_thr": (1, 25, 2, True, "num_classes: 2 background_label_id: -1 "
                             "nms_param { nms_threshold: 0.4 top_k: 8 } code_type: CENTER_SIZE "
                             "variance_encoded_in_target: true"),
    "eta_low_threshold": (1, 40, 3, True, "num_classes: 3 nms_param { nms_threshold: 0.45 eta: 0.7 top_k: 30 } "
                          "code_type: CENTER_SIZE keep_top_k: 15 confidence_threshold: 0.01"),
}


def _det_net(tmp_path, case):
    n, P, C, share, params = DET_CASES[case]
    L = 1 if share else C
    path = write(tmp_path, DET_NET % dict(n=n, nloc=P * L * 4, nconf=P * C, nprior=P * 4, params=params))
    return path, load(path), (n, P, C, L)


@pytest.mark.parametrize("case", sorted(DET_CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_output_is_the_forks_rows_in_the_forks_order(tmp_path, case, seed):
    """Against the transcription of the fork: same rows, same order (ties included:
    rounding the confidences to 0.01 makes many equal scores; keep_top_k cuts below
    them)."""
    path, net, (n, P, C, L) = _det_net(tmp_path, case)
    loc, conf, prior = det_inputs(n, P, C, L, seed)
    y = run_onnx(net, {}, {"loc": loc, "conf": conf, "prior": prior})["det"]
    p = net.layer("det").spec.fork("detection_output_param")
    ref = detection_output_ref(loc, conf, prior, p)
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= 1e-6
    kept_per_image = np.bincount(rows(ref)[:, 0].astype(int))
    if p.keep_top_k > 0:
        assert kept_per_image.max() <= p.keep_top_k


def test_detection_output_with_more_boxes_than_keep_top_k_and_ties(tmp_path):
    """The cut of keep_top_k falls on equal scores of two classes: the fork keeps the
    lower label (its sort is stable for up to 16 detections), so does the export."""
    path = write(tmp_path, DET_NET % dict(n=1, nloc=6 * 4, nconf=6 * 3, nprior=6 * 4, params=(
        "num_classes: 3 nms_param { nms_threshold: 0.5 } code_type: CENTER_SIZE keep_top_k: 3")))
    net = load(path)
    boxes = np.array([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.4, 0.4, 0.5, 0.5],
                      [0.6, 0.6, 0.7, 0.7], [0.8, 0.8, 0.9, 0.9], [0.0, 0.8, 0.1, 0.9]], F32)
    prior = np.stack([boxes.reshape(-1), np.full(24, 0.1, F32)]).reshape(1, 2, -1)
    conf = np.zeros((6, 3), F32)
    conf[:, 1] = [0.5, 0.7, 0.5, 0.1, 0.0, 0.0]  # class 1: 0.7, then 0.5 twice
    conf[:, 2] = [0.0, 0.0, 0.0, 0.5, 0.5, 0.9]  # class 2: 0.9, then 0.5 twice
    feeds = {"loc": np.zeros((1, 24), F32), "conf": conf.reshape(1, -1), "prior": prior}
    y = rows(run_onnx(net, {}, feeds)["det"])
    ref = rows(detection_output_ref(feeds["loc"], feeds["conf"], prior,
                                    net.layer("det").spec.fork("detection_output_param")))
    assert np.array_equal(y, ref)
    assert [tuple(r[1:3]) for r in y] == [(1, F32(0.7)), (1, F32(0.5)), (2, F32(0.9))]
    assert np.allclose(y[1, 3:], boxes[0])  # of the two 0.5s of class 1, prior 0 (stable order)


def test_detection_output_nothing_detected_gives_the_forks_minus_one_rows(tmp_path):
    path, net, (n, P, C, L) = _det_net(tmp_path, "corner_size_bg2_batch")
    loc, conf, prior = det_inputs(n, P, C, L, 0)
    conf[:] = 0.01
    y = run_onnx(net, {}, {"loc": loc, "conf": conf, "prior": prior})["det"]
    assert y.shape == (1, 1, 2, 7)
    assert np.array_equal(rows(y), [[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]])


def test_detection_output_adaptive_nms_above_half_is_refused(tmp_path):
    path = write(tmp_path, DET_NET % dict(n=1, nloc=40, nconf=30, nprior=40, params=(
        "num_classes: 3 nms_param { nms_threshold: 0.7 eta: 0.9 } code_type: CENTER_SIZE")))
    net = load(path)
    with pytest.raises(ExportError, match="eta"):
        export(net, {})


def fork_order(det):
    """Rows sorted as the fork lists them: image, label ascending, score descending
    (scores equal to 1e-5, i.e. up to OpenCV's float error, keep their order)."""
    r = rows(det)
    return r[np.lexsort((-np.round(r[:, 2], 5), r[:, 1], r[:, 0]))]


@pytest.mark.parametrize("case", ["center_size_topk_keep", "corner_per_class_loc"])
def test_detection_output_against_opencv(tmp_path, case):
    """OpenCV's DetectionOutput on the same inputs (no ties): the same rows.  OpenCV
    differs in the order: it lists an image's rows by score over all classes, the fork by
    label, then score; it insists on explicit share_location and keep_top_k, and its
    schema lacks the CORNER_SIZE code (such a file does not parse)."""
    n, P, C, share, params = DET_CASES[case]
    if "share_location" not in params:
        DET_CASES[case + "_explicit"] = (n, P, C, share, params + " share_location: true")
        case = case + "_explicit"
    path, net, (n, P, C, L) = _det_net(tmp_path, case)
    loc, conf, prior = det_inputs(n, P, C, L, 7, ties=False, grid=False)
    feeds = {"loc": loc, "conf": conf, "prior": prior}
    y = run_onnx(net, {}, feeds)["det"]
    cv = run_opencv(path, net, {}, feeds, ["det"], tmp_path)["det"]
    assert cv.shape == y.shape and same_row_sets(y, cv, 1e-5)
    assert np.max(np.abs(fork_order(cv) - rows(y))) <= 1e-5


def test_detection_output_opencv_differs_on_background_minus_one(tmp_path):
    """With share_location and background_label_id -1 the fork decodes no locations (its
    DecodeBBoxesAll skips label -1 = the background) and so detects nothing; OpenCV
    stops with an error.  We follow the fork."""
    path, net, (n, P, C, L) = _det_net(tmp_path, "encoded_no_bg_no_thr")
    path.write_text(path.read_text().replace("num_classes: 2", "num_classes: 2 share_location: true keep_top_k: 50")
                    .replace("variance_encoded_in_target: true", ""))
    net = load(path)
    loc, conf, prior = det_inputs(n, P, C, L, 7, ties=False, grid=False)
    feeds = {"loc": loc, "conf": conf, "prior": prior}
    y = run_onnx(net, {}, feeds)["det"]
    assert np.array_equal(rows(y), [[0, -1, -1, -1, -1, -1, -1]])
    with pytest.raises(cv2.error, match="label -1"):  # OpenCV gives up instead
        run_opencv(path, net, {}, feeds, ["det"], tmp_path)


# ---- a whole SSD-style detector against OpenCV ---------------------------------------------

DETECTOR = """\
    name: "mini_ssd"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 48 dim: 40 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
      convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "xavier" } } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
      convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "xavier" } } }
    layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
    layer { name: "n1" type: "Normalize" bottom: "conv1" top: "n1"
      norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 2 } } }
    layer { name: "n2" type: "Normalize" bottom: "conv2" top: "n2"
      norm_param { across_spatial: true channel_shared: true scale_filler { type: "constant" value: 1 } } }
    layer { name: "l1" type: "Convolution" bottom: "n1" top: "l1" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
    layer { name: "l1p" type: "Permute" bottom: "l1" top: "l1p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "l1f" type: "Flatten" bottom: "l1p" top: "l1f" flatten_param { axis: 1 } }
    layer { name: "c1" type: "Convolution" bottom: "n1" top: "c1" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
    layer { name: "c1p" type: "Permute" bottom: "c1" top: "c1p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "c1f" type: "Flatten" bottom: "c1p" top: "c1f" flatten_param { axis: 1 } }
    layer { name: "p1" type: "PriorBox" bottom: "n1" bottom: "data" top: "p1"
      prior_box_param { min_size: 9 max_size: 18 aspect_ratio: 2 flip: true clip: false
        variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 2 offset: 0.5 } }
    layer { name: "l2" type: "Convolution" bottom: "n2" top: "l2" convolution_param { num_output: 24 kernel_size: 3 pad: 1 } }
    layer { name: "l2p" type: "Permute" bottom: "l2" top: "l2p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "l2f" type: "Flatten" bottom: "l2p" top: "l2f" flatten_param { axis: 1 } }
    layer { name: "c2" type: "Convolution" bottom: "n2" top: "c2" convolution_param { num_output: 24 kernel_size: 3 pad: 1 } }
    layer { name: "c2p" type: "Permute" bottom: "c2" top: "c2p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "c2f" type: "Flatten" bottom: "c2p" top: "c2f" flatten_param { axis: 1 } }
    layer { name: "p2" type: "PriorBox" bottom: "n2" bottom: "data" top: "p2"
      prior_box_param { min_size: 17 max_size: 31 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true
        variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
    layer { name: "loc" type: "Concat" bottom: "l1f" bottom: "l2f" top: "loc" concat_param { axis: 1 } }
    layer { name: "conf" type: "Concat" bottom: "c1f" bottom: "c2f" top: "conf" concat_param { axis: 1 } }
    layer { name: "priors" type: "Concat" bottom: "p1" bottom: "p2" top: "priors" concat_param { axis: 2 } }
    layer { name: "conf_r" type: "Reshape" bottom: "conf" top: "conf_r" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
    layer { name: "conf_s" type: "Softmax" bottom: "conf_r" top: "conf_s" softmax_param { axis: 2 } }
    layer { name: "conf_f" type: "Flatten" bottom: "conf_s" top: "conf_f" flatten_param { axis: 1 } }
    layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf_f" bottom: "priors"
      top: "detection_out"
      detection_output_param { num_classes: 4 share_location: true background_label_id: 0
        nms_param { nms_threshold: 0.45 top_k: 30 } code_type: CENTER_SIZE keep_top_k: 200
        confidence_threshold: 0.5 } }
"""


def detector_weights(net, seed):
    """Recipe-like weights (U(+-sqrt(3 / fan_in))), with the confidence heads' weights
    scaled up so that softmax scores are confident (many above 0.4)."""
    rng = np.random.RandomState(seed)
    blobs = net.fill(seed=seed).blobs
    for layer in net.layers:
        if layer.type != "Convolution":
            continue
        w = blobs[layer.name][0]
        lim = np.sqrt(3.0 / (w.size // w.shape[0]))
        blobs[layer.name][0] = rng.uniform(-lim, lim, w.shape).astype(F32) * (1.5 if layer.name[0] == "c" else 1)
        blobs[layer.name][1] = rng.uniform(-0.1, 0.1, w.shape[0]).astype(F32)
    return blobs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_whole_detector_equals_opencv(tmp_path, seed):
    path = write(tmp_path, DETECTOR)
    net = load(path)
    assert not [w for w in net.warnings if "_param" in w]
    blobs = detector_weights(net, seed)
    x = np.random.RandomState(100 + seed).uniform(-1, 1, (1, 3, 48, 40)).astype(F32)
    y = run_onnx(net, blobs, {"data": x})["detection_out"]
    cv = run_opencv(path, net, blobs, {"data": x}, ["detection_out"], tmp_path)["detection_out"]
    assert 10 <= rows(y).shape[0] < 200 and rows(y)[:, 2].max() > 0.6  # confident detections
    # OpenCV differs: it pads its output to keep_top_k rows (all-zero rows); the fork's
    # output has as many rows as detections
    pad = rows(cv)[rows(y).shape[0]:]
    assert not pad.any()
    cv = rows(cv)[:rows(y).shape[0]]
    assert same_row_sets(y, cv, 1e-5)  # the same boxes, labels and scores
    # same order once OpenCV's rows are put in the fork's order: OpenCV differs there, it
    # lists rows by score over all classes (checked), the fork by label, then score
    assert np.all(np.diff(rows(cv)[:, 2]) <= 0)
    ordered = fork_order(cv)
    assert np.array_equal(rows(y)[:, :2], ordered[:, :2])
    # scores in the same order; boxes matched as sets above (two boxes whose scores agree
    # to float error may swap places between the two implementations)
    assert np.max(np.abs(rows(y)[:, 2] - ordered[:, 2])) <= 1e-5


# ---- training-side types -------------------------------------------------------------------

def test_annotated_data_and_multibox_loss_build_fill_and_leave_the_export(tmp_path):
    path = write(tmp_path, """\
        layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
          transform_param { mirror: true resize_param { prob: 1 height: 32 width: 32 interp_mode: LINEAR }
            emit_constraint { emit_type: CENTER } distort_param { brightness_prob: 0.5 }
            expand_param { prob: 0.5 max_expand_ratio: 4.0 } }
          data_param { source: "x_lmdb" batch_size: 2 backend: LMDB }
          annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } label_map_file: "m.prototxt" } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
          convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 4 } }
        layer { name: "loc" type: "Flatten" bottom: "conv" top: "loc" }
        layer { name: "conf" type: "Flatten" bottom: "conv" top: "conf" }
        layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior"
          prior_box_param { min_size: 8 variance: 0.1 } }
        layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" bottom: "prior" bottom: "label"
          top: "mbox_loss" include { phase: TRAIN }
          multibox_loss_param { num_classes: 2 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }
        """)
    net = load(path, phase="TRAIN", input_shapes={"data": (2, 3, 32, 32), "label": (1, 1, 3, 8)})
    assert net.warnings == [] or not [w for w in net.warnings if "param" in w]
    assert net.blobs["mbox_loss"] == () or tuple(net.blobs["mbox_loss"]) == ()
    assert net.layer("mbox_loss").spec.fork("multibox_loss_param").num_classes == 2
    filled = net.fill(seed=1)
    model = export(filled)
    assert "mbox_loss" not in [o.name for o in model.graph.output]
    assert {i.name for i in model.graph.input} >= {"data"}


# ---- goldens of the fork -------------------------------------------------------------------

def _golden_ids(key=None):
    return sorted(k for k, e in SSD_INDEX["nets"].items() if e.get("loaded") and (key is None or e.get(key)))


def _golden_src(net_id):
    src = SSD_INDEX["nets"][net_id]["source"]
    return GOLDEN_SSD / src if src.startswith("nets/") else CORPUS / src


@pytest.mark.shared
def test_golden_ssd_index_is_read():
    assert len(_golden_ids()) == 3 and _golden_ids("has_fills") == ["ssd_priors", "ssd_tiny"]


@pytest.mark.shared
@pytest.mark.parametrize("net_id", _golden_ids())
def test_golden_shapes_equal_the_forks(net_id, capsys):
    gold = json.loads((GOLDEN_SSD / "shapes" / f"{net_id}.json").read_text())
    assert main([str(_golden_src(net_id)), "--json"]) == 0
    mine = json.loads(capsys.readouterr().out)
    split_of = {t: l["bottoms"][0] for l in gold["layers"] if l["auto_split"] for t in l["tops"]}
    theirs = [l for l in gold["layers"] if not l["auto_split"]]
    assert [l["name"] for l in mine["layers"]] == [l["name"] for l in theirs]
    for a, b in zip(mine["layers"], theirs):
        assert (a["type"], a["params"], a["tops"]) == (b["type"], b["params"], b["tops"]), a["name"]
        assert a["bottoms"] == [split_of.get(x, x) for x in b["bottoms"]], a["name"]
    assert mine["blobs"] == {k: v for k, v in gold["blobs"].items() if k not in split_of}
    assert (mine["inputs"], mine["outputs"], mine["n_params"]) == (gold["inputs"], gold["outputs"], gold["n_params"])


@pytest.mark.shared
@pytest.mark.parametrize("net_id", _golden_ids("has_fills"))
def test_golden_fills_are_byte_exact(net_id):
    filled = load(_golden_src(net_id)).fill(seed=SSD_INDEX["nets"][net_id].get("fills_seed", 1701), rng="caffe")
    gold = np.load(GOLDEN_SSD / "fills" / f"{net_id}.npz")
    assert sorted(gold.files) == sorted(f"{l}/{i}" for l, a in filled.blobs.items() for i in range(len(a)))
    for key in gold.files:
        layer, i = key.rsplit("/", 1)
        mine = filled.blobs[layer][int(i)]
        assert mine.shape == gold[key].shape and np.array_equal(mine.view(np.uint32), gold[key].view(np.uint32)), key


@pytest.mark.shared
@pytest.mark.parametrize("net_id", _golden_ids("has_forward"))
def test_golden_forward_equals_the_forks(net_id):
    recipe = load_recipe(GOLDEN_SSD)
    net = load(_golden_src(net_id))
    blobs = recipe_params(recipe, net)
    gold = np.load(GOLDEN_SSD / "forward" / f"{net_id}.npz")
    outs = run_onnx(net, blobs, {k[len("input/"):]: gold[k] for k in gold.files if k.startswith("input/")})
    checked = 0
    for key in gold.files:
        if not key.startswith("output/"):
            continue
        name, ref = key[len("output/"):], gold[key]
        y = outs[name]
        tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
        if name == "detection_out":
            assert rows(y).shape == rows(ref).shape
            assert same_row_sets(y, ref, tol)
        else:
            assert y.shape == ref.shape and float(np.abs(y - ref).max()) <= tol, name
        checked += 1
    assert checked == len(SSD_INDEX["nets"][net_id]["forward"]["outputs_full"])


# ---- the SSD corpus ------------------------------------------------------------------------

@pytest.mark.shared
def test_corpus_ssd300_deploy_fills_and_exports(tmp_path):
    path = CORPUS_SSD / "models__VGGNet__VOC0712__SSD_300x300__deploy.prototxt"
    net = load(path)
    assert not [w for w in net.warnings if "norm_param" in w or "prior_box_param" in w]
    filled = net.fill(seed=1, filler="xavier")
    out = tmp_path / "ssd.onnx"
    # the check's shape test expects the set-up shape [1, 1, 1, 7]; see the report
    report = export_and_check(filled, out, check=False)
    assert out.exists() and report.model is None or True
    sess = ort_session(str(out))
    y = sess.run(["detection_out"], {"data": np.random.default_rng(0).uniform(-1, 1, (1, 3, 300, 300)).astype(F32)})[0]
    assert y.ndim == 4 and y.shape[:2] == (1, 1) and y.shape[3] == 7 and 1 <= y.shape[2] <= 200


@pytest.mark.shared
def test_corpus_ssd300_train_builds_and_fills(tmp_path):
    path = CORPUS_SSD / "models__VGGNet__VOC0712__SSD_300x300__train.prototxt"
    out = tmp_path / "train.caffemodel"
    assert main([str(path), "--phase", "TRAIN", "--input", "data=2,3,300,300", "--seed", "1", "-o", str(out),
                 "-q"]) == 0
    net = load(path, phase="TRAIN", input_shapes={"data": (2, 3, 300, 300)})
    assert net.layer("mbox_loss").spec.training_only
    assert not [w for w in net.warnings if "resize_param" in w or "batch_sampler" in w]
    model = export(net.fill(seed=1))
    assert "mbox_loss" not in [o.name for o in model.graph.output]
