"""A Caffe net as Caffe builds it: layers in order after filtering, every blob's shape,
every layer's parameter blobs (shapes, fillers, shared blobs resolved to one owner).

>>> net = load("lenet.prototxt")                        # doctest: +SKIP
>>> [(l.name, [p.shape for p in l.params]) for l in net.layers][:2]   # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from . import caffe_pb2
from .errors import MissingInputShapeError, NetError, UnknownLayerTypeError, UsageError
from .layers import lookup
from .layers.base import ShapeError, shape_count
from .prototxt import PHASES, TEST, filter_net, make_state, read_net, warning_position


@dataclass
class Layer:
    """One layer of a built net."""

    name: str
    type: str
    bottoms: list
    tops: list
    params: list  # of ParamBlob, in Caffe's blob order
    spec: object  # the LayerType instance
    lp: object  # the LayerParameter
    #: for each param blob, ``None`` if this layer owns it, else ``(layer index, blob index)``
    owners: list = field(default_factory=list)
    bottom_shapes: list = field(default_factory=list)
    top_shapes: list = field(default_factory=list)

    @property
    def is_input(self) -> bool:
        """Whether the layer's tops are net inputs (a data layer; one with bottoms, such as
        a Python layer that computes, is not)."""
        return self.spec.net_input and not self.bottoms

    @property
    def shared(self) -> list:
        return [i for i, o in enumerate(self.owners) if o is not None]

    @property
    def n_params(self) -> int:
        return sum(p.count for p, o in zip(self.params, self.owners) if o is None)


@dataclass
class Net:
    """A built net: layers, blob shapes, inputs and outputs."""

    name: str
    layers: list
    blobs: dict  # name -> shape (the last shape a name held)
    inputs: list
    outputs: list
    path: str = ""
    phase: int = TEST
    warnings: list = field(default_factory=list)
    net_param: object = None

    @property
    def n_params(self) -> int:
        return sum(l.n_params for l in self.layers)

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The net as plain data (what ``fill-net --json`` prints)."""
        return {
            "name": self.name,
            "layers": [
                {
                    "name": l.name,
                    "type": l.type,
                    "bottoms": list(l.bottoms),
                    "tops": list(l.tops),
                    "params": [list(p.shape) for p in l.params],
                    "shared": l.shared,
                    "top_shapes": [list(s) for s in l.top_shapes],
                }
                for l in self.layers
            ],
            "blobs": {k: list(v) for k, v in self.blobs.items()},
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "n_params": self.n_params,
        }

    # Filling lives in fillers.netfill; these are thin conveniences.
    def fill(self, **options):
        """Fill every parameter blob; see :func:`fillers.netfill.fill_net`."""
        from .netfill import fill_net

        return fill_net(self, **options)


def parse_input_shapes(specs) -> dict:
    """``["data=1,3,224,224", ...]`` (or a dict) to ``{"data": (1, 3, 224, 224)}``."""
    if specs is None:
        return {}
    if isinstance(specs, dict):
        return {k: tuple(int(d) for d in v) for k, v in specs.items()}
    out = {}
    for s in specs:
        name, sep, dims = s.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in re.split(r"[,x]", dims.strip()))
            if not shape or min(shape) <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--input '{s}' is not of the form NAME=N,C,H,W with positive dims") from None
        out[name] = shape
    return out


def load(path, phase="TEST", input_shapes=None, stages=None, level=None, text=None) -> Net:
    """Read and build the net in ``path`` as Caffe would for ``phase``.

    ``input_shapes`` gives the shapes of the tops of data layers that read databases,
    files or Python modules (``{"data": (1, 3, 224, 224)}`` or ``["data=1,3,224,224"]``).
    ``stages``/``level`` complete the ``NetState`` used by include/exclude rules.
    """
    if isinstance(phase, str):
        try:
            phase = PHASES[phase.upper()]
        except KeyError:
            raise UsageError(f"phase '{phase}' is not TRAIN or TEST") from None
    result = read_net(path, text=text)
    state = make_state(result.net, phase=phase, stages=stages, level=level)
    kept = filter_net(result.net, state)
    if not kept:
        what = "no layers" if not len(result.net.layer) else \
            f"no layers left for phase {'TRAIN' if phase == 0 else 'TEST'} (its include/exclude rules drop them all)"
        raise NetError(f"{result.path}: the net has {what}")
    net = build([result.net.layer[i] for i in kept], parse_input_shapes(input_shapes), name=result.net.name,
                path=result.path, fork_fields=[result.fork_fields[i] for i in kept])
    net.phase = phase
    net.warnings = sorted(result.warnings + _unconsumed_fork_fields(result), key=warning_position) + net.warnings
    net.net_param = result.net
    return net


def _unconsumed_fork_fields(result) -> list:
    """The warnings of fork fields that the layer's registered type does not read."""
    out = []
    for lp, notes in zip(result.net.layer, result.fork_warnings):
        cls = lookup(lp.type)
        consumed = cls.fork_params if cls is not None else {}
        out.extend(note for key, note in notes.items() if key not in consumed)
    return out


def _check_count(n, bounds, what, lp):
    lo, hi = bounds
    if lo is not None and n < lo or hi is not None and n > hi:
        if lo == hi:
            want = f"exactly {lo}"
        elif hi is None:
            want = f"at least {lo}"
        elif lo in (None, 0):
            want = f"at most {hi}"
        else:
            want = f"{lo} to {hi}"
        raise NetError(f"takes {want} {what}, not {n}", layer=lp.name, layer_type=lp.type)


def _unknown_types_error(layers) -> Optional[UnknownLayerTypeError]:
    unknown = [lp for lp in layers if lookup(lp.type) is None]
    if not unknown:
        return None
    first = unknown[0]
    types = sorted({lp.type for lp in unknown})
    more = ""
    if len(unknown) > 1:
        more = f" ({len(unknown)} layers of {len(types)} unknown type(s) in all: {', '.join(types)})"
    kind = "no layer type given" if not first.type else f"'{first.type}' is not a standard BVLC Caffe layer type"
    return UnknownLayerTypeError(
        f"{kind}{more}; it comes from a Caffe fork: register a plugin with "
        "fillers.layers.register, or see 'fill-net --list-layers'",
        layer=first.name, layer_type=first.type or "?")


def build(layer_params, input_shapes=None, name="", path="", fork_fields=None) -> Net:
    """Build a :class:`Net` from filtered ``LayerParameter``s (in Caffe's order).

    ``fork_fields`` gives, per layer, the fork fields read out of its text (``{name:
    value text}``); a layer type's instance sees them as ``self.fork_fields``."""
    input_shapes = dict(input_shapes or {})
    err = _unknown_types_error(layer_params)
    if err is not None:
        raise err
    layers: list = []
    shapes: dict = {}  # current shape of every available blob name
    produced_by: dict = {}
    available: set = set()
    inputs: list = []
    owners_by_name: dict = {}
    used_inputs: set = set()
    for li, lp in enumerate(layer_params):
        cls = lookup(lp.type)
        spec = cls(lp)
        spec.fork_fields = fork_fields[li] if fork_fields else {}
        _check_count(len(lp.bottom), cls.n_bottoms, "bottom(s)", lp)
        if not (cls.auto_tops and len(lp.top) < (cls.n_tops[0] or 0)):
            _check_count(len(lp.top), cls.n_tops, "top(s)", lp)
        bottom_shapes = []
        for i, b in enumerate(lp.bottom):
            if b not in shapes:
                raise NetError(f"bottom {i} '{b}' is unknown: no earlier layer produces it",
                               layer=lp.name, layer_type=lp.type)
            bottom_shapes.append(shapes[b])
        for t in lp.top:
            if t in produced_by and t not in lp.bottom:
                raise NetError(f"top '{t}' is also produced by layer '{produced_by[t]}'; a top may only be "
                               "written again in place (as a bottom of the same layer)",
                               layer=lp.name, layer_type=lp.type)
        try:
            if cls.runtime_source:
                top_shapes = _runtime_shapes(spec, lp, input_shapes, used_inputs, bottom_shapes)
            else:
                top_shapes = [tuple(int(d) for d in s) for s in spec.outputs(bottom_shapes)]
            params = list(spec.params(bottom_shapes))
        except ShapeError as exc:
            raise NetError(str(exc), layer=lp.name, layer_type=lp.type) from None
        top_shapes = top_shapes[:len(lp.top)]
        for s in top_shapes:
            if any(d < 0 for d in s):
                raise NetError(f"a top would have the impossible shape {list(s)}", layer=lp.name, layer_type=lp.type)
        # blobs given in the prototxt replace the layer's own
        if len(lp.blobs):
            given = [tuple(_blob_shape(b)) for b in lp.blobs]
            if len(given) != len(params) or any(g != p.shape for g, p in zip(given, params)):
                raise NetError(f"the {len(given)} blob(s) given in the prototxt have shapes {given}, "
                               f"the layer needs {[list(p.shape) for p in params]}", layer=lp.name, layer_type=lp.type)
        if len(lp.param) > len(params):
            raise NetError(f"{len(lp.param)} param {{}} entries, but the layer has only {len(params)} "
                           "parameter blob(s)", layer=lp.name, layer_type=lp.type)
        owners = []
        for j, pb in enumerate(params):
            pname = lp.param[j].name if j < len(lp.param) else ""
            if not pname:
                owners.append(None)
                continue
            if pname not in owners_by_name:
                owners_by_name[pname] = (len(layers), j, pb.shape)
                owners.append(None)
                continue
            li, bj, oshape = owners_by_name[pname]
            permissive = lp.param[j].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
            if permissive:
                if shape_count(oshape) != pb.count:
                    raise NetError(f"cannot share param '{pname}' owned by layer '{layers[li].name}' with "
                                   f"count mismatch: {shape_count(oshape)} vs {pb.count}",
                                   layer=lp.name, layer_type=lp.type)
            elif tuple(oshape) != tuple(pb.shape):
                raise NetError(f"cannot share param '{pname}' owned by layer '{layers[li].name}': shape "
                               f"{list(oshape)} vs {list(pb.shape)}; use share_mode PERMISSIVE to share "
                               "blobs of equal count", layer=lp.name, layer_type=lp.type)
            owners.append((li, bj))
        for b in lp.bottom:
            available.discard(b)
        for t, s in zip(lp.top, top_shapes):
            shapes[t] = s
            produced_by[t] = lp.name
            available.add(t)
        if cls.net_input and not lp.bottom:
            inputs.extend(lp.top)
        layers.append(Layer(name=lp.name, type=lp.type, bottoms=list(lp.bottom), tops=list(lp.top),
                            params=params, spec=spec, lp=lp, owners=owners,
                            bottom_shapes=bottom_shapes, top_shapes=top_shapes))
    unused = set(input_shapes) - used_inputs
    if unused:
        raise UsageError(f"--input names {', '.join(sorted(unused))}, which no data layer of this net produces")
    outputs = sorted(available)
    return Net(name=name, layers=layers, blobs=shapes, inputs=inputs, outputs=outputs, path=path)


def _blob_shape(b):
    if b.HasField("shape"):
        return [int(d) for d in b.shape.dim]
    return [int(b.num), int(b.channels), int(b.height), int(b.width)]


def _runtime_shapes(spec, lp, input_shapes, used, bottom_shapes):
    """Top shapes of a layer whose shapes only exist at run time: given by the user, the
    layer type's default (``runtime_shape``), or, for a top written in place, its bottom's
    shape (a Python layer working in place)."""
    out = []
    for i, t in enumerate(lp.top):
        if t in input_shapes:
            out.append(tuple(input_shapes[t]))
            used.add(t)
        elif t in lp.bottom:
            out.append(tuple(bottom_shapes[list(lp.bottom).index(t)]))
        elif spec.runtime_shape(i, out[0] if out else None) is not None:
            out.append(tuple(int(d) for d in spec.runtime_shape(i, out[0] if out else None)))
        else:
            raise MissingInputShapeError(
                f"top '{t}' gets its shape from {spec.runtime_source} at run time; give it with "
                f"--input {t}=N,C,H,W (e.g. --input {t}=1,3,224,224)", layer=lp.name, layer_type=lp.type)
    return out
