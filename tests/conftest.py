"""Shared test helpers.

The reference data (the corpus of real prototxt files and the goldens made by real Caffe)
lives in ``../shared`` (or ``$CAFFE_FILLERS_SHARED``).  Tests that read it carry the
``shared`` marker (per test, or ``pytestmark`` for a whole module); without the data they
are skipped with one reason, and the unit tests still run.
"""

import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
GOLDEN = SHARED / "golden"
HAVE_SHARED = (GOLDEN / "index.json").exists() and (CORPUS / "MANIFEST.tsv").exists()
SKIP_REASON = f"reference data not found at {SHARED} (set CAFFE_FILLERS_SHARED)"

#: golden nets we cannot read yet, with the reason: their tests are expected failures
KNOWN_FAILURES: dict = {}

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def golden_source(net_id: str) -> pathlib.Path:
    """The prototxt behind a golden net id."""
    entry = golden_index()["nets"][net_id]
    src = entry["source"]
    return GOLDEN / src if src.startswith("nets/") else CORPUS / src


_INDEX = None


def golden_index():
    """``golden/index.json`` (an empty index when the reference data is missing)."""
    global _INDEX
    if _INDEX is None:
        path = GOLDEN / "index.json"
        _INDEX = json.loads(path.read_text()) if path.exists() else {"nets": {}}
    return _INDEX


_RECIPES: dict = {}


def load_recipe(folder=GOLDEN):
    """The ``recipe.py`` of a golden folder (``golden``, ``golden-ssd`` ...) as a module."""
    import importlib.util

    path = pathlib.Path(folder) / "recipe.py"
    if path not in _RECIPES:
        spec = importlib.util.spec_from_file_location(f"recipe_{len(_RECIPES)}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _RECIPES[path] = module
    return _RECIPES[path]


def recipe_params(recipe, net) -> dict:
    """``recipe.param_blob`` for every blob a layer owns; a shared blob is its owner's
    array (as the goldens set them: through the owning layer only)."""
    params: dict = {}
    for layer in net.layers:
        arrs = []
        for j, (pb, owner) in enumerate(zip(layer.params, layer.owners)):
            if owner is None:
                arrs.append(recipe.param_blob(layer.name, layer.type, j, pb.shape))
            else:
                arrs.append(params[net.layers[owner[0]].name][owner[1]])
        if arrs:
            params[layer.name] = arrs
    return params


def golden_param(net_id: str, value=None, marks=(), id=None):
    """``pytest.param(value)`` (default: the net id) for a test of golden net ``net_id``:
    an expected failure when the net is in KNOWN_FAILURES."""
    marks = list(marks)
    if net_id in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[net_id], strict=False))
    return pytest.param(net_id if value is None else value, marks=marks, id=id or net_id)


def pytest_collection_modifyitems(config, items):
    if HAVE_SHARED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("shared") is not None:
            item.add_marker(skip)
