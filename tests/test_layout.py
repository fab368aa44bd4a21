"""The promise of the layout: each Caffe layer type is described once, in its LayerType
class under fillers/layers/; no other module switches on layer type names."""

import ast
import pathlib

import fillers
from fillers.layers import known_types

PACKAGE = pathlib.Path(fillers.__file__).parent


def _strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _strings(elt)


def type_name_comparisons(source: str, names: set) -> list:
    """(line, name) of every comparison (==, !=, in, not in) against a string constant (or
    a tuple/list/set of them) that is a registered layer type name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found.extend((node.lineno, s) for s in _strings(operand) if s in names)
    return found


def test_the_check_finds_a_switch():
    names = set(known_types())
    assert type_name_comparisons('if layer.type == "BatchNorm":\n    pass\n', names) == [(1, "BatchNorm")]
    assert type_name_comparisons('ok = t in ("LSTM", "RNN")\n', names) == [(1, "LSTM"), (1, "RNN")]
    assert type_name_comparisons('x = {"ReLU": 1}\n', names) == []


def test_no_module_outside_layers_compares_layer_type_names():
    names = set(known_types())
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "layers" or path.name.endswith("_pb2.py"):
            continue
        for line, name in type_name_comparisons(path.read_text(), names):
            offenders.append(f"{rel}:{line}: compares with '{name}'")
    assert offenders == []
