"""Whole-net fills with --rng caffe are byte-identical to real Caffe's (seed 1701, and
seed 42 for fillers_zoo)."""

import numpy as np
import pytest

from conftest import GOLDEN, golden_index, golden_param, golden_source
from fillers.cli import main
from fillers.net import load

pytestmark = pytest.mark.shared

FILES = sorted((GOLDEN / "fills").glob("*.npz"))


def _case(path):
    net_id, seed = path.stem, 1701
    if ".seed" in net_id:
        net_id, s = net_id.split(".seed")
        seed = int(s)
    return net_id, seed


def test_all_golden_fill_files_are_covered():
    with_fills = {k for k, e in golden_index()["nets"].items() if e.get("has_fills")}
    assert with_fills and {_case(p)[0] for p in FILES} == with_fills


@pytest.mark.parametrize("path", [golden_param(_case(p)[0], p, id=p.stem) for p in FILES])
def test_fill_is_byte_exact(path):
    net_id, seed = _case(path)
    filled = load(golden_source(net_id)).fill(seed=seed, rng="caffe")
    gold = np.load(path)
    assert sorted(gold.files) == sorted(f"{l}/{i}" for l, arrs in filled.blobs.items() for i in range(len(arrs)))
    for key in gold.files:
        layer, index = key.rsplit("/", 1)
        mine = filled.blobs[layer][int(index)]
        assert mine.dtype == np.float32 and mine.shape == gold[key].shape, key
        assert np.array_equal(mine.view(np.uint32), gold[key].view(np.uint32)), key


def test_cli_npz_and_caffemodel_are_byte_exact(tmp_path):
    from fillers.caffemodel import read_caffemodel

    npz, model = tmp_path / "w.npz", tmp_path / "w.caffemodel"
    src = golden_source("BVLC__caffe__examples__siamese__mnist_siamese")
    assert main([str(src), "--rng", "caffe", "--seed", "1701", "--npz", str(npz), "-o", str(model), "-q"]) == 0
    gold = np.load(GOLDEN / "fills" / "BVLC__caffe__examples__siamese__mnist_siamese.npz")
    mine = np.load(npz)
    back = read_caffemodel(model)
    for key in gold.files:
        layer, index = key.rsplit("/", 1)
        assert np.array_equal(mine[key].view(np.uint32), gold[key].view(np.uint32)), key
        assert np.array_equal(back[layer][int(index)].view(np.uint32), gold[key].view(np.uint32)), key


def test_other_seed_differs():
    a = load(golden_source("fillers_zoo")).fill(seed=1701, rng="caffe").blobs["conv_xavier_in"][0]
    b = load(golden_source("fillers_zoo")).fill(seed=1702, rng="caffe").blobs["conv_xavier_in"][0]
    assert not np.array_equal(a, b)
