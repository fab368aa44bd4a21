"""Every corpus file that uses only standard BVLC layers builds; files with fork layers
fail with one clear line naming the layer and its type."""

import csv
import subprocess
import sys

import pytest

from conftest import CORPUS, HAVE_SHARED, REPO
from fillers.errors import FillersError, MissingInputShapeError, UnknownLayerTypeError
from fillers.net import load

pytestmark = pytest.mark.shared

ROWS = list(csv.DictReader(open(CORPUS / "MANIFEST.tsv"), delimiter="\t")) if HAVE_SHARED else []
STANDARD = [r for r in ROWS if r["standard_only"] == "yes"]
CUSTOM = [r for r in ROWS if r["standard_only"] == "no"]

# Shapes for tops that only exist at run time (databases, HDF5, Python layers).
RUNTIME_SHAPES = {
    "data": (2, 3, 227, 227), "pair_data": (2, 2, 28, 28), "sim": (2,),
    "cont_sentence": (20, 2), "input_sentence": (20, 2), "target_sentence": (20, 2),
    "sem": (2, 1, 64, 64), "geo": (2, 1, 64, 64), "loss": (1,), "label": (2,),
}
# Settings under which Caffe itself builds these nets (their TEST layers need a stage).
SETTINGS = {
    "BVLC__caffe/examples__mnist__mnist_autoencoder.prototxt": {"stages": ["test-on-test"]},
    "BVLC__caffe/examples__mnist__mnist_autoencoder__v1_at_11a4c16.prototxt": {"stages": ["test-on-test"]},
    "BVLC__caffe/examples__coco_caption__lrcn__pr2033_at_668b17e.prototxt": {"stages": ["test-on-val", "factored"]},
}


def build(row):
    opts = dict(SETTINGS.get(row["file"], {}))
    shapes = {}
    for _ in range(10):
        try:
            return load(CORPUS / row["file"], input_shapes=shapes, **opts)
        except MissingInputShapeError as exc:
            top = str(exc).split("top '")[1].split("'")[0]
            assert top not in shapes and top in RUNTIME_SHAPES, str(exc)
            shapes[top] = RUNTIME_SHAPES[top]
    raise AssertionError("too many runtime inputs")


def test_manifest_is_read():
    assert len(STANDARD) == 45 and len(CUSTOM) == 14


def test_every_standard_file_builds():
    failures = []
    for row in STANDARD:
        try:
            net = build(row)
            assert net.layers and net.n_params > 0
        except FillersError as exc:
            failures.append(f"{row['file']}: {exc}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("row", CUSTOM, ids=[r["file"].split("/")[-1] for r in CUSTOM])
def test_fork_layers_name_layer_and_type(row):
    custom = row["custom_types"].split(",")
    with pytest.raises(UnknownLayerTypeError) as info:
        build(row)
    msg = str(info.value)
    assert info.value.layer_type in custom
    assert f"layer '{info.value.layer}' ({info.value.layer_type})" in msg
    assert "\n" not in msg


def test_fork_file_on_the_command_line_is_one_line_exit_1():
    row = next(r for r in CUSTOM if "SE-ResNet" in r["file"])
    proc = subprocess.run([sys.executable, "-m", "fillers.cli", str(CORPUS / row["file"]), "--dry-run"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fill-net: error: layer '") and "(Axpy)" in lines[0]
    assert "Traceback" not in proc.stderr


def test_ceil_mode_fork_field_is_read_with_a_warning():
    row = next(r for r in STANDARD if "DenseNet" in r["file"])
    net = build(row)
    assert any("ceil_mode" in w and "round_mode: FLOOR" in w for w in net.warnings)
    pool = net.layer("pool1")
    assert pool.lp.pooling_param.round_mode == 1
