import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CAFFE_FILLERS_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
GOLDEN = SHARED / "golden"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def golden_source(net_id: str) -> pathlib.Path:
    """The prototxt behind a golden net id."""
    entry = golden_index()["nets"][net_id]
    src = entry["source"]
    return GOLDEN / src if src.startswith("nets/") else CORPUS / src


_INDEX = None


def golden_index():
    global _INDEX
    if _INDEX is None:
        _INDEX = json.loads((GOLDEN / "index.json").read_text())
    return _INDEX


def pytest_collection_modifyitems(config, items):
    if not SHARED.exists():
        skip = pytest.mark.skip(reason=f"shared data not found at {SHARED}")
        for item in items:
            if "shared" in item.keywords:
                item.add_marker(skip)
