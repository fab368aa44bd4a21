"""Every net real BVLC Caffe could load: our layers, parameter blob shapes, shared blobs,
blob shapes, inputs and outputs equal Caffe's (auto-inserted Split layers aside)."""

import json

import pytest

from conftest import GOLDEN, golden_index, golden_param, golden_source
from fillers.cli import main

pytestmark = pytest.mark.shared

SHAPES = sorted(p for p in (GOLDEN / "shapes").glob("*.json") if json.loads(p.read_text())["loaded"])


def test_every_net_caffe_loaded_has_a_shape_file():
    loaded = sorted(k for k, e in golden_index()["nets"].items() if e["loaded"])
    assert loaded and [json.loads(p.read_text())["net"] for p in SHAPES] == loaded


def _unsplit(name: str, split_names: dict) -> str:
    return split_names.get(name, name)


@pytest.mark.parametrize("net_id", [golden_param(p.stem) for p in SHAPES])
def test_json_matches_caffe(net_id, capsys):
    gold = json.loads((GOLDEN / "shapes" / f"{net_id}.json").read_text())
    status = main([str(golden_source(gold["net"])), "--json"])
    out = capsys.readouterr().out
    assert status == 0
    mine = json.loads(out)
    # Caffe's Split layers: map each split top back to the blob it copies
    split_of = {}
    for l in gold["layers"]:
        if l["auto_split"]:
            for t in l["tops"]:
                split_of[t] = l["bottoms"][0]
    theirs = [l for l in gold["layers"] if not l["auto_split"]]
    assert [l["name"] for l in mine["layers"]] == [l["name"] for l in theirs]
    for a, b in zip(mine["layers"], theirs):
        assert a["type"] == b["type"], a["name"]
        assert a["params"] == b["params"], a["name"]
        assert a["shared"] == b["shared_params"], a["name"]
        assert a["tops"] == b["tops"], a["name"]
        assert a["bottoms"] == [_unsplit(x, split_of) for x in b["bottoms"]], a["name"]
    blobs = {k: v for k, v in gold["blobs"].items() if k not in split_of}
    assert mine["blobs"] == blobs
    assert mine["inputs"] == gold["inputs"]
    assert mine["outputs"] == gold["outputs"]
    assert mine["n_params"] == gold["n_params"]
