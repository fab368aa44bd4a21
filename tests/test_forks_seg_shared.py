"""The SegNet and PSPNet forks' own goldens (../shared/golden-segnet, golden-pspnet: shapes
and forward outputs made by the forks' Caffe) and the corpus files of the SegNet, PSPNet
and mobile-net/SENet families: they fill and export, and, where OpenCV reads the net,
the export equals OpenCV's forward."""

import csv
import json

import numpy as np
import pytest

from conftest import CORPUS, HAVE_SHARED, SHARED, load_recipe, recipe_params
from fillers.caffemodel import write_caffemodel
from fillers.net import load
from fillers.onnx_export import export, export_and_check, make_inputs, ort_session

pytestmark = pytest.mark.shared

FORK_GOLDENS = ["golden-segnet", "golden-pspnet"]


def _index(name):
    path = SHARED / name / "index.json"
    return json.loads(path.read_text()) if path.exists() else {"nets": {}}


def _nets(key):
    return [pytest.param(g, n, id=f"{g}:{n}") for g in FORK_GOLDENS for n, e in sorted(_index(g)["nets"].items())
            if e.get(key)]


def _source(golden, net_id):
    src = _index(golden)["nets"][net_id]["source"]
    return SHARED / golden / src if src.startswith("nets/") else CORPUS / src


@pytest.mark.parametrize("golden,net_id", _nets("loaded"))
def test_shapes_equal_the_forks(golden, net_id):
    gold = json.loads((SHARED / golden / "shapes" / f"{net_id}.json").read_text())
    net = load(_source(golden, net_id))
    theirs = [l for l in gold["layers"] if not l["auto_split"]]
    named = {l["name"] for l in theirs}
    layers = [l for l in net.layers if not (l.spec.net_input and l.name not in named)]  # `input:` fields
    assert [l.name for l in layers] == [l["name"] for l in theirs]
    for mine, ref in zip(layers, theirs):
        assert mine.type == ref["type"], mine.name
        assert [list(p.shape) for p in mine.params] == ref["params"], mine.name
        assert mine.tops == ref["tops"] and mine.bottoms == ref["bottoms"], mine.name
    split = {t for l in gold["layers"] if l["auto_split"] for t in l["tops"]}
    assert {k: list(v) for k, v in net.blobs.items()} == {k: v for k, v in gold["blobs"].items() if k not in split}
    assert net.inputs == gold["inputs"] and sorted(net.outputs) == sorted(gold["outputs"])
    assert net.n_params == gold["n_params"]


@pytest.mark.parametrize("golden,net_id", _nets("has_forward"))
def test_export_equals_the_forks_forward(golden, net_id):
    recipe = load_recipe(SHARED / golden)
    net = load(_source(golden, net_id))
    blobs = recipe_params(recipe, net)
    ref = np.load(SHARED / golden / "forward" / f"{net_id}.npz")
    sess = ort_session(export(net, blobs))
    feeds = {i.name: ref[f"input/{i.name}"] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, feeds)))
    compared = 0
    for name, y in outs.items():
        if f"output/{name}" not in ref.files:
            continue
        caffe = ref[f"output/{name}"]
        assert y.shape == caffe.shape, name
        err = float(np.max(np.abs(y.astype(np.float64) - caffe)))
        assert err <= 1e-4 * max(1.0, float(np.max(np.abs(caffe)))), f"{name}: {err:.3g}"
        compared += 1
    assert compared == len(_index(golden)["nets"][net_id]["forward"]["outputs_full"])


# ---- corpus -------------------------------------------------------------------------------------

ROWS = list(csv.DictReader(open(CORPUS / "MANIFEST.tsv"), delimiter="\t")) if HAVE_SHARED else []
FAMILY = {"ConvolutionDepthwise", "DepthwiseConvolution", "ShuffleChannel", "Axpy", "ReLU6", "Interp",
          "Upsample", "BN", "DenseImageData"}
MINE = [r for r in ROWS if r["standard_only"] == "no" and FAMILY & set(r["custom_types"].split(","))]
#: settings per file: the phase, shapes of run-time inputs
SETTINGS = {
    "Models__segnet_inference.prototxt": {"input_shapes": {"data": (1, 3, 360, 480), "label": (1, 1, 360, 480)}},
    "Models__segnet_basic_train.prototxt": {"phase": "TRAIN",
                                            "input_shapes": {"data": (2, 3, 360, 480), "label": (2, 1, 360, 480)}},
    "prototxts__enet_train_encoder_decoder.prototxt": {"phase": "TRAIN",
                                                       "input_shapes": {"data": (1, 3, 512, 1024),
                                                                        "label": (1, 1, 512, 1024)}},
}
# Every corpus file of these families fills and exports in tests/test_corpus.py
# (test_fork_file_fills_and_exports); here, what needs more than the generic check.


def _key(row):
    return row["file"].split("/")[-1]


def _load(row):
    settings = SETTINGS.get(_key(row), {})
    return load(CORPUS / row["file"], **settings)


def test_the_family_has_corpus_files():
    assert {"Axpy", "Interp", "Upsample", "BN", "ShuffleChannel", "ConvolutionDepthwise"} <= {
        t for r in MINE for t in r["custom_types"].split(",")}


@pytest.mark.slow
def test_se_resnet_equals_opencv_with_axpy_bottoms_swapped(tmp_path):
    """OpenCV computes Axpy as a * bottom 2 + bottom 1; with the two bottoms swapped in the
    file it gives it SENet's a * X + Y, and then equals the export."""
    row = next(r for r in MINE if "SE-ResNet-50" in r["file"])
    import cv2
    from google.protobuf import text_format

    from fillers import caffe_pb2

    net = _load(row)
    filled = net.fill(filler="msra", seed=1, batchnorm="identity")
    report = export_and_check(filled, str(tmp_path / "net.onnx"), compare_opencv=False)
    assert report.ok
    proto = caffe_pb2.NetParameter()
    text_format.Parse((CORPUS / row["file"]).read_text(), proto)
    for lp in proto.layer:
        if lp.type == "Axpy":
            lp.bottom[1], lp.bottom[2] = lp.bottom[2], lp.bottom[1]
    (tmp_path / "swapped.prototxt").write_text(text_format.MessageToString(proto))
    write_caffemodel(tmp_path / "net.caffemodel", net, filled.blobs)
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "swapped.prototxt"), str(tmp_path / "net.caffemodel"))
    feeds = make_inputs(report.info, net, seed=0)
    cv.setInput(feeds["data"], "data")
    ref = cv.forward("prob")
    (y,) = ort_session(str(tmp_path / "net.onnx")).run(["prob"], {"data": feeds["data"]})
    assert np.max(np.abs(y - ref.reshape(y.shape))) <= 1e-4
