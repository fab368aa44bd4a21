"""Export a Caffe net and its weights to ONNX, and check the result.

Each layer type lowers itself (``LayerType.lower(ctx)`` in :mod:`fillers.layers`); this
module walks the net, hands every layer a :class:`LoweringContext` and assembles the graph:

* **Inputs** are the tops of the data layers (``Input``, ``DummyData``, ``MemoryData``,
  database and Python data layers), with their shapes from the net model.
* **Tensor names** are static single assignment: Caffe reuses a blob name when a layer
  works in place (``ReLU``, ``BatchNorm``, ``Scale`` ...), so every version of a blob gets
  a tensor of its own (``conv1@conv1`` for the convolution's result, ``conv1`` for what
  ``relu1`` writes over it).  The last version of a blob carries the blob's own name, so
  the graph's outputs are named exactly as Caffe's output blobs.
* **Weights** become initializers named ``<layer>/<blob>``; a blob shared through
  ``param { name }`` becomes one initializer used by every layer that shares it.
* **Training-only layers** (losses, ``Accuracy``, ``HDF5Output``) are left out with a note;
  a blob that only they consumed becomes an output.  ``Silence`` emits nothing.
* **Outputs** are the blobs no kept layer consumes (Caffe's rule), with their shapes.

Every layer type without a lowering is collected and reported in one
:class:`~fillers.errors.ExportError`.  The model must pass
``onnx.checker.check_model(full_check=True)``; models whose initializers pass ~2 GB are
written with external data.  Files are written atomically.

:func:`export_and_check` also runs the model in onnxruntime and, where OpenCV's Caffe
importer can read the net, compares the outputs with OpenCV's forward pass of the same
weights.

>>> from fillers.net import load                                    # doctest: +SKIP
>>> net = load("deploy.prototxt")                                   # doctest: +SKIP
>>> model = export(net, blobs, "deploy.onnx")                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .atomic import atomic_path
from .errors import ExportError
from .wire import key as _key, varint as _varint

#: Softmax takes any axis from opset 13 on (earlier versions flatten to 2-d).
DEFAULT_OPSET = 13
MIN_OPSET = 13
#: initializer bytes above which the model is saved with external data (protobuf stops
#: at 2 GB; leave room for the graph itself).
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26

FLOAT = 1  # onnx.TensorProto.FLOAT
INT64 = 7  # onnx.TensorProto.INT64


class NoLowering(ExportError):
    """Raised by a ``lower`` method when the layer (its type, or these settings) cannot be
    expressed in ONNX.  The exporter collects these and reports them together."""


def _dtype_to_onnx(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class _Namer:
    """Unique names: a hint is used as is when free, else with ``_1``, ``_2`` ..."""

    def __init__(self):
        self.used: set = set()
        self.counts: dict = {}

    def reserve(self, name: str) -> None:
        self.used.add(name)

    def unique(self, hint: str) -> str:
        if hint not in self.used:
            self.used.add(hint)
            return hint
        k = self.counts.get(hint, 0)
        while True:
            k += 1
            name = f"{hint}_{k}"
            if name not in self.used:
                self.counts[hint] = k
                self.used.add(name)
                return name


class _Builder:
    """The graph under construction: nodes, initializers, inputs, names, notes."""

    def __init__(self, opset: int):
        import onnx
        from onnx import helper

        self.helper = helper
        self.opset = opset
        # the graph without its initializers; these stay numpy arrays until the model is
        # written (streamed from numpy's memory) or returned (copied in once)
        self.model = onnx.ModelProto()
        self.tensors: list = []  # (name, little-endian contiguous array), in order
        self.values = _Namer()  # tensor and initializer names
        self.node_names = _Namer()
        self.nodes: list = []
        self.init_bytes = 0
        self.inputs: list = []  # ValueInfoProto
        self.input_shapes: dict = {}
        self.produced: set = set()  # every tensor name some node, input or initializer makes
        self.warnings: list = []
        self._small_consts: dict = {}
        # param key (owner layer index, blob index) -> {shape: initializer name}
        self.param_inits: dict = {}

    def add_initializer(self, array: np.ndarray, hint: str) -> str:
        name = self.values.unique(hint)
        array = np.asarray(array)
        self.tensors.append((name, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))))
        self.init_bytes += array.nbytes
        self.produced.add(name)
        return name

    def constant(self, value, hint: str, dtype=np.float32) -> str:
        array = np.asarray(value, dtype=dtype)
        if array.size <= 64:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._small_consts:
                return self._small_consts[key]
            name = self.add_initializer(array, hint)
            self._small_consts[key] = name
            return name
        return self.add_initializer(array, hint)

    def add_node(self, op: str, inputs, outputs, name_hint: str, attrs: dict) -> None:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = self.helper.make_node(op, list(inputs), list(outputs), name=self.node_names.unique(name_hint),
                                     **attrs)
        self.nodes.append(node)
        self.produced.update(o for o in outputs if o)

    def add_input(self, name: str, shape) -> None:
        self.inputs.append(self.helper.make_tensor_value_info(name, FLOAT, [int(d) for d in shape]))
        self.input_shapes[name] = tuple(int(d) for d in shape)
        self.produced.add(name)


class LoweringContext:
    """What a layer's ``lower(ctx)`` works with.

    Attributes:
        layer: the :class:`fillers.net.Layer` (``name``, ``type``, ``lp``, ``spec`` ...).
        lp: the layer's ``caffe_pb2.LayerParameter``.
        inputs: tensor names of the bottoms, in order.
        outputs: tensor names the lowering must produce for the tops, in order.
        bottom_shapes, top_shapes: shapes from the net model (tuples of ints).
        params: the parameter arrays in Caffe's blob order (a shared blob: its owner's).
        opset: the target opset of the default domain.

    A lowering adds nodes with :meth:`node`, weights with :meth:`param`, constants with
    :meth:`const`/:meth:`ints`, and gives up with :meth:`unsupported`.
    """

    def __init__(self, builder: _Builder, net, layer, index: int, inputs, outputs, params, param_keys,
                 param_users):
        self._b = builder
        self.net = net
        self.layer = layer
        self.index = index
        self.lp = layer.lp
        self.spec = layer.spec
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.bottom_shapes = [tuple(int(d) for d in s) for s in layer.bottom_shapes]
        self.top_shapes = [tuple(int(d) for d in s) for s in layer.top_shapes]
        self.params = list(params)
        self.opset = builder.opset
        self._param_keys = list(param_keys)
        self._param_users = param_users
        self._n_nodes = 0

    # ---- names -----------------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        """A new unique tensor name, ``<layer>/<hint>``."""
        return self._b.values.unique(f"{self.layer.name}/{hint}")

    # ---- nodes -----------------------------------------------------------------------
    def node(self, op: str, inputs, outputs=None, *, n_outputs: int = 1, **attrs):
        """Add one node.  ``outputs``: a name, a list of names, or ``None`` for
        ``n_outputs`` fresh names.  Returns the output name (or the list of names when
        there are several).  Attributes whose value is ``None`` are left out."""
        if outputs is None:
            outputs = [self.fresh(op.lower()) for _ in range(n_outputs)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        hint = self.layer.name if self._n_nodes == 0 else f"{self.layer.name}/{op}"
        self._n_nodes += 1
        self._b.add_node(op, inputs, outputs, hint, attrs)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def identity(self, x: str, out: str) -> str:
        return self.node("Identity", [x], out)

    # ---- weights and constants -------------------------------------------------------
    def param(self, i: int, shape=None) -> str:
        """The initializer holding parameter blob ``i``, viewed with ``shape`` (default:
        Caffe's blob shape).  A blob only this layer uses is stored in the asked shape;
        a shared blob is stored once and reshaped by a node where needed."""
        array = self.params[i]
        shape = tuple(array.shape) if shape is None else tuple(int(d) for d in shape)
        if int(np.prod(shape, dtype=np.int64)) != array.size:
            raise ExportError(f"layer '{self.layer.name}': cannot view blob {i} of shape {list(array.shape)} "
                              f"as {list(shape)}")
        key = self._param_keys[i]
        stored = self._b.param_inits.setdefault(key, {})
        if shape in stored:
            return stored[shape]
        owner_layer = self.net.layers[key[0]]
        blob_name = owner_layer.params[key[1]].name if key[1] < len(owner_layer.params) else str(key[1])
        hint = f"{owner_layer.name}/{blob_name}"
        if not stored:
            base_shape = shape if self._param_users.get(key, 1) == 1 else tuple(array.shape)
            stored[base_shape] = self._b.add_initializer(np.ascontiguousarray(array.reshape(base_shape)), hint)
            if base_shape == shape:
                return stored[shape]
        base = next(iter(stored.values()))
        name = self.reshape(base, shape)
        stored[shape] = name
        return name

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        """A constant initializer (small ones are shared across the graph)."""
        return self._b.constant(value, f"{self.layer.name}/{hint}", dtype)

    def ints(self, values, hint: str = "ints") -> str:
        """A 1-d int64 constant (shapes, axes, pads ...)."""
        return self._b.constant(np.asarray(list(values), dtype=np.int64), f"{self.layer.name}/{hint}", np.int64)

    def scalar(self, value, hint: str = "scalar") -> str:
        """A float32 scalar constant (shape ``()``)."""
        return self._b.constant(np.float32(value), f"{self.layer.name}/{hint}")

    # ---- common patterns -------------------------------------------------------------
    def reshape(self, x: str, shape, out=None) -> str:
        return self.node("Reshape", [x, self.ints(shape, "shape")], out)

    def reduce(self, op: str, x: str, axes, keepdims: bool = True, out=None) -> str:
        """``Reduce*`` over ``axes`` (the axes are an input from opset 18 on, and from 13 on
        for ReduceSum)."""
        axes = [int(a) for a in axes]
        if not axes:
            raise ExportError(f"layer '{self.layer.name}': empty reduction axes")
        if self.opset >= 18 or op == "ReduceSum":
            return self.node(op, [x, self.ints(axes, "axes")], out, keepdims=int(keepdims))
        return self.node(op, [x], out, axes=axes, keepdims=int(keepdims))

    def split(self, x: str, sizes, axis: int, outputs=None):
        """Cut ``x`` along ``axis`` into pieces of ``sizes``; returns the list of names."""
        sizes = [int(s) for s in sizes]
        if len(sizes) == 1:
            out = outputs[0] if outputs else None
            return [self.node("Identity", [x], out)]
        if outputs is None:
            outputs = [self.fresh("split") for _ in sizes]
        res = self.node("Split", [x, self.ints(sizes, "split")], list(outputs), axis=int(axis))
        return res if isinstance(res, list) else [res]

    def graph_input(self, i: int) -> None:
        """Declare top ``i`` a graph input (data layers)."""
        self._b.add_input(self.outputs[i], self.top_shapes[i])

    # ---- notes -----------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self._b.warnings.append(f"layer '{self.layer.name}' ({self.layer.type}): {message}")

    def unsupported(self, message: str):
        """Give up on this layer: the export fails, listing every such layer together."""
        raise NoLowering(message)


@dataclass
class ExportInfo:
    """What :func:`export` did besides building the model."""

    warnings: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # graph input name -> shape
    outputs: dict = field(default_factory=dict)  # graph output name -> shape
    blob_of: dict = field(default_factory=dict)  # graph output name -> (Caffe blob, layer that wrote it, top index)
    external_data: bool = False
    path: Optional[str] = None
    init_bytes: int = 0
    #: graph input -> (consumer layer type, bottom index, layer) for every kept consumer
    consumers: dict = field(default_factory=dict)
    kept_layers: list = field(default_factory=list)  # indices into net.layers of the lowered layers
    n_nodes: int = 0
    seconds: float = 0.0


def _unpack(net, blobs, path):
    """Accept ``(net, blobs)`` or a FilledNet (``.net``, ``.blobs``) in place of both; a
    FilledNet's second positional argument may be the path."""
    if hasattr(net, "net") and hasattr(net, "blobs") and not hasattr(net, "layers"):
        if isinstance(blobs, (str, os.PathLike)) and path is None:
            path, blobs = blobs, None
        if blobs is None:
            blobs = net.blobs
        net = net.net
    if blobs is None:
        raise ExportError("no weights given: pass the blobs dict {layer name: [arrays]} (or a filled net)")
    return net, blobs, path


def _is_lowerable(cls) -> bool:
    from .layers.base import LayerType

    return getattr(cls, "lower", None) is not LayerType.lower


def export(net, blobs=None, path=None, *, opset: int = DEFAULT_OPSET, all_blobs: bool = False):
    """Lower ``net`` with its weights ``blobs`` (``{layer name: [float32 arrays in Caffe's
    blob order]}``) to an ``onnx.ModelProto``; with ``path``, also write it (atomically;
    external data when the weights pass ~2 GB).

    ``net`` may be a filled net (with ``.net`` and ``.blobs``), in which case ``blobs`` may
    be omitted.  ``opset`` (>= 13) is the target opset; ``all_blobs=True`` makes every
    version of every blob a graph output (for debugging).  Raises
    :class:`~fillers.errors.ExportError` listing every layer that cannot be lowered.
    """
    model, _ = export_with_info(net, blobs, path, opset=opset, all_blobs=all_blobs)
    return model


def export_with_info(net, blobs=None, path=None, *, opset: Optional[int] = DEFAULT_OPSET, all_blobs: bool = False,
                     return_model: bool = True):
    """Like :func:`export`, returning ``(model, ExportInfo)`` (notes, inputs, outputs).

    With a ``path`` and ``return_model=False`` the weights are only streamed to the file
    and ``model`` is None (what the command line does: it saves copying big weights into
    a protobuf message)."""
    import onnx

    t0 = time.perf_counter()
    net, blobs, path = _unpack(net, blobs, path)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: Softmax flattens to 2-d before opset 13 (Caffe's Softmax "
                          f"works on one axis); use --opset 13 or higher")
    max_opset = onnx.defs.onnx_opset_version()
    if opset > max_opset:
        raise ExportError(f"opset {opset} is newer than this onnx ({onnx.__version__}) knows (up to {max_opset})")

    b = _Builder(opset)
    info = ExportInfo()
    layers = net.layers

    # ---- which layers are lowered ------------------------------------------------------
    kept, left_out = [], []
    for i, layer in enumerate(layers):
        cls = type(layer.spec)
        if getattr(cls, "training_only", False):
            left_out.append(i)
            continue
        kept.append(i)
    if left_out:
        names = ", ".join(f"'{layers[i].name}' ({layers[i].type})" for i in left_out)
        b.warnings.append(f"left out {len(left_out)} training-only layer(s): {names}")
    info.kept_layers = kept

    # ---- the blob versions: who writes what, what is consumed --------------------------
    last_write: dict = {}
    first_write: dict = {}
    writer_of_final: dict = {}
    left_out_tops: dict = {}
    for i in left_out:
        for t in layers[i].tops:
            left_out_tops.setdefault(t, layers[i].name)
    available: dict = {}  # blob -> (layer index, top index) of its current version, unconsumed
    current_writer: dict = {}
    problems = []
    for i in kept:
        layer = layers[i]
        for b_name in layer.bottoms:
            if b_name not in current_writer:
                src = left_out_tops.get(b_name)
                problems.append(f"layer '{layer.name}' reads '{b_name}', which only the training-only layer "
                                f"'{src}' produces" if src else f"layer '{layer.name}' reads unknown blob '{b_name}'")
            available.pop(b_name, None)
        for j, t in enumerate(layer.tops):
            first_write.setdefault(t, i)
            last_write[t] = i
            writer_of_final[t] = (i, j)
            current_writer[t] = (i, j)
            available[t] = (i, j)
    if problems:
        raise ExportError("; ".join(problems))
    data_tops = set()
    for i in kept:
        if layers[i].spec.net_input:
            data_tops.update(layers[i].tops)
    outputs = sorted(t for t in available if not (t in data_tops and last_write[t] == first_write[t]))

    # which version of each blob gets the bare name
    bare: dict = {}
    for t in last_write:
        if t in outputs or t not in data_tops:
            bare[t] = (last_write[t], t)
        else:
            bare[t] = (first_write[t], t)  # an input rewritten in place keeps its name at the input
    for t in last_write:
        b.values.reserve(t)

    # ---- parameters: owners and users -------------------------------------------------
    users: Counter = Counter()
    for i in kept:
        for j, owner in enumerate(layers[i].owners or [None] * len(layers[i].params)):
            users[owner if owner is not None else (i, j)] += 1
    arrays, keys, weight_problems = {}, {}, []
    for i in kept:
        layer = layers[i]
        if not _is_lowerable(type(layer.spec)):
            continue  # reported below with the other layers that cannot be lowered
        owners = layer.owners or [None] * len(layer.params)
        arrs, ks = [], []
        for j, (pb, owner) in enumerate(zip(layer.params, owners)):
            key = owner if owner is not None else (i, j)
            src = layers[key[0]]
            got = blobs.get(src.name)
            if got is None or len(got) <= key[1]:
                weight_problems.append(f"'{src.name}' blob {key[1]} is missing")
                arrs.append(None)
            else:
                a = np.asarray(got[key[1]])
                want = tuple(src.params[key[1]].shape)
                if a.size != int(np.prod(want, dtype=np.int64)):
                    weight_problems.append(f"'{src.name}' blob {key[1]} has shape {list(a.shape)}, "
                                           f"the net needs {list(want)}")
                else:
                    a = a.reshape(want)
                if a.dtype != np.float32:
                    a = a.astype(np.float32)
                arrs.append(a)
            ks.append(key)
        arrays[i], keys[i] = arrs, ks
    if weight_problems:
        shown = weight_problems[:10]
        more = f" (and {len(weight_problems) - 10} more)" if len(weight_problems) > 10 else ""
        raise ExportError("the weights do not fit the net: " + "; ".join(shown) + more)

    # ---- lower every layer ------------------------------------------------------------
    version: dict = {}  # blob -> current tensor name
    failures: Counter = Counter()
    reasons: dict = {}
    produced_versions = []  # (tensor, shape) in order, for all_blobs
    for i in kept:
        layer = layers[i]
        if not _is_lowerable(type(layer.spec)):
            failures[layer.type] += 1
            continue
        if any(x not in version for x in layer.bottoms):
            continue  # fed by a layer that could not be lowered: reported through that one
        ins = [version[x] for x in layer.bottoms]
        outs = []
        for j, t in enumerate(layer.tops):
            if bare[t][0] == i:
                name = t
            else:
                name = b.values.unique(f"{t}@{layer.name}")
            outs.append(name)
        ctx = LoweringContext(b, net, layer, i, ins, outs, arrays[i], keys[i], users)
        try:
            layer.spec.lower(ctx)
        except NoLowering as exc:
            failures[layer.type] += 1
            reasons.setdefault(layer.type, f"layer '{layer.name}': {exc}")
            continue
        for name in outs:
            if name not in b.produced:
                raise ExportError(f"internal error: the lowering of layer '{layer.name}' ({layer.type}) did not "
                                  f"produce its top '{name}'")
        for j, t in enumerate(layer.tops):
            version[t] = outs[j]
            produced_versions.append((outs[j], layer.top_shapes[j], t, i, j))
    if failures:
        raise ExportError(_missing_message(failures, reasons))

    # ---- inputs, outputs, model -------------------------------------------------------
    used = set()
    for node in b.nodes:
        used.update(node.input)
    graph_outputs = []
    for t in outputs:
        name = version[t]
        li, j = writer_of_final[t]
        shape = layers[li].top_shapes[j]
        graph_outputs.append(b.helper.make_tensor_value_info(name, FLOAT, [int(d) for d in shape]))
        info.outputs[name] = tuple(int(d) for d in shape)
        info.blob_of[name] = (t, layers[li].name, j)
    if all_blobs:
        for name, shape, t, li, j in produced_versions:
            if name in info.outputs or name in b.input_shapes:
                continue
            graph_outputs.append(b.helper.make_tensor_value_info(name, FLOAT, [int(d) for d in shape]))
            info.outputs[name] = tuple(int(d) for d in shape)
            info.blob_of[name] = (t, layers[li].name, j)
    inputs = []
    for vi in b.inputs:
        if vi.name in used or vi.name in info.outputs:
            inputs.append(vi)
            info.inputs[vi.name] = b.input_shapes[vi.name]
        else:
            b.warnings.append(f"input '{vi.name}' is not used by any exported layer; left out of the graph inputs")
    for i in kept:
        for j, x in enumerate(layers[i].bottoms):
            info.consumers.setdefault(x, []).append((layers[i].type, j, layers[i].name))

    model = b.model
    graph = model.graph
    graph.name = net.name or "caffe_net"
    graph.node.extend(b.nodes)
    graph.input.extend(inputs)
    graph.output.extend(graph_outputs)
    opsets = [b.helper.make_opsetid("", opset)]
    model.opset_import.extend(opsets)
    model.producer_name = "caffe-fillers"
    model.producer_version = _version()
    model.ir_version = b.helper.find_min_ir_version_for(opsets)
    model.doc_string = f"Caffe net '{net.name}' exported by caffe-fillers"
    if b.warnings:
        entry = model.metadata_props.add()
        entry.key, entry.value = "caffe_fillers_notes", "\n".join(b.warnings)
    info.warnings = list(b.warnings)
    info.init_bytes = b.init_bytes
    info.n_nodes = len(b.nodes)
    info.external_data = b.init_bytes > EXTERNAL_DATA_THRESHOLD
    if path is not None:
        info.path = _write(model, b.tensors, path, external=info.external_data)
    elif info.external_data:
        raise ExportError(f"the weights take {b.init_bytes / 2**30:.2f} GiB, more than one protobuf message holds: "
                          "give a path, and they are written as external data next to the model")
    if return_model or path is None:
        _attach(model, b.tensors)
        if path is None:
            _check(model.SerializeToString(), None)
    else:
        model = None
    info.seconds = time.perf_counter() - t0
    return model, info


# ---- writing: the weights go from numpy's memory to the file, without protobuf copies ----

#: a written model up to this size is checked from the file itself; a larger one as its
#: skeleton (see _skeleton), since parsing every weight again costs seconds
CHECK_FILE_LIMIT = 2**26
#: tensors above this many bytes go to the external data file (when there is one)
EXTERNAL_MIN_BYTES = 1024


def _tensor_header(name: str, array: np.ndarray):
    import onnx

    t = onnx.TensorProto(name=name, data_type=_dtype_to_onnx(array.dtype))
    t.dims.extend(int(d) for d in array.shape)
    return t


def _attach(model, tensors) -> None:
    """Put the initializers into ``model`` (one copy of each array)."""
    for name, array in tensors:
        t = model.graph.initializer.add()
        t.CopyFrom(_tensor_header(name, array))
        t.raw_data = array.tobytes()


def _stream(fh, model, tensors) -> int:
    """Write ``model`` (whose graph has no initializers) with ``tensors`` as initializers
    holding raw data, in protobuf's wire format; the arrays are written from their own
    memory.  Fields may come in any order, so the initializers follow the rest of the
    graph.  Returns the bytes written."""
    import onnx

    graph_bytes = model.graph.SerializeToString()
    parts, total = [], len(graph_bytes)
    for name, array in tensors:
        head = _tensor_header(name, array).SerializeToString()
        raw_key = _key(9, 2) + _varint(array.nbytes)  # TensorProto.raw_data = 9
        size = len(head) + len(raw_key) + array.nbytes
        prefix = _key(5, 2) + _varint(size) + head + raw_key  # GraphProto.initializer = 5
        parts.append((prefix, array))
        total += len(prefix) + array.nbytes
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    head = rest.SerializeToString() + _key(7, 2) + _varint(total)  # ModelProto.graph = 7
    fh.write(head)
    fh.write(graph_bytes)
    for prefix, array in parts:
        fh.write(prefix)
        if array.nbytes:
            fh.write(array.reshape(-1).view(np.uint8))
    return len(head) + total


def _skeleton(model, tensors) -> bytes:
    """The model with its large float weights turned into graph inputs of the same type
    and shape: onnx's full checker (structure, types, shape inference, which only reads
    the small int64 constants) sees everything but the weight bytes, which are written
    from arrays of exactly those shapes."""
    import onnx
    from onnx import helper

    skel = onnx.ModelProto()
    skel.CopyFrom(model)
    for name, array in tensors:
        if array.nbytes > 4096 and array.dtype == np.float32:
            skel.graph.input.append(helper.make_tensor_value_info(name, FLOAT, [int(d) for d in array.shape]))
        else:
            t = skel.graph.initializer.add()
            t.CopyFrom(_tensor_header(name, array))
            t.raw_data = array.tobytes()
    return skel.SerializeToString()


def _write(model, tensors, path, *, external: bool) -> str:
    """Write the model atomically and check it with onnx's full checker: from the file
    (external data, or up to CHECK_FILE_LIMIT bytes), else as its skeleton."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not external:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                size = _stream(fh, model, tensors)
            if size <= CHECK_FILE_LIMIT:
                _check(None, tmp)
            else:
                _check(_skeleton(model, tensors), None)
        return path
    import onnx

    base = os.path.basename(path)
    location = base + ".data"
    tmpdir = tempfile.mkdtemp(prefix=".tmp-onnx-", dir=directory)
    try:
        small = []
        ext = onnx.ModelProto()
        ext.CopyFrom(model)
        with open(os.path.join(tmpdir, location), "wb") as fh:
            offset = 0
            for name, array in tensors:
                if array.nbytes <= EXTERNAL_MIN_BYTES:
                    small.append((name, array))
                    continue
                pad = (-offset) % 4096  # page-aligned, so runtimes can map the weights
                if pad:
                    fh.write(b"\0" * pad)
                    offset += pad
                fh.write(array.reshape(-1).view(np.uint8))
                t = ext.graph.initializer.add()
                t.CopyFrom(_tensor_header(name, array))
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
                offset += array.nbytes
        _attach(ext, small)
        tmp_model = os.path.join(tmpdir, base)
        with open(tmp_model, "wb") as fh:
            fh.write(ext.SerializeToString())
        _check(None, tmp_model)
        os.replace(os.path.join(tmpdir, location), os.path.join(directory, location))
        os.replace(tmp_model, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("caffe-fillers")
    except Exception:  # not installed
        return "0"


def _missing_message(counter: Counter, reasons: dict) -> str:
    n = len(counter)
    parts = ", ".join(f"{t} x{c}" for t, c in counter.items())
    msg = f"{n} layer type{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} no ONNX lowering: {parts}"
    if reasons:
        msg += " (" + "; ".join(reasons.values()) + ")"
    return msg


def _check(model, path) -> None:
    """onnx's full checker (with shape inference) on a ModelProto, its bytes, or a path."""
    import onnx

    try:
        onnx.checker.check_model(path if path is not None else model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the exported model fails onnx's checker: {str(exc).strip()}") from exc


# =====================================================================================
# Running and checking an export
# =====================================================================================


@dataclass
class OutputCheck:
    name: str
    shape: tuple
    expected_shape: tuple
    finite: bool
    max_abs: float
    max_abs_err: Optional[float] = None  # vs OpenCV
    max_rel_err: Optional[float] = None
    ok: bool = True


@dataclass
class ExportReport:
    """The outcome of :func:`export_and_check`."""

    path: Optional[str]
    opset: int
    ok: bool = True
    warnings: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # of OutputCheck
    checked: bool = False
    reference: Optional[str] = None  # "OpenCV 4.x" when compared
    export_seconds: float = 0.0
    session_seconds: float = 0.0
    run_seconds: float = 0.0
    model: object = None  # the ModelProto when exported in memory (None when written to a path)
    info: Optional[ExportInfo] = None

    def text(self) -> str:
        head = f"ONNX export: {self.path or '(in memory)'} (opset {self.opset}, exported in {self.export_seconds:.2f} s"
        if self.checked:
            head += f", onnxruntime session {self.session_seconds:.2f} s, run {self.run_seconds:.2f} s"
        head += ")"
        if not self.checked:
            return head + "\nnot run in onnxruntime (--no-check)"
        if self.reference:
            rows = [("output", "shape", "max |y|", f"max abs err vs {self.reference}", "max rel err", "status")]
        else:
            rows = [("output", "shape", "max |y|", "finite", "status")]
        for o in self.outputs:
            shape = "x".join(str(d) for d in o.shape) or "scalar"
            status = "ok" if o.ok else "FAIL"
            if self.reference:
                rows.append((o.name, shape, _fmt(o.max_abs), _fmt(o.max_abs_err), _fmt(o.max_rel_err), status))
            else:
                rows.append((o.name, shape, _fmt(o.max_abs), "yes" if o.finite else "NO", status))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = [head]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("result: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.3g}"


def make_inputs(info: ExportInfo, net, seed: int = 0) -> dict:
    """Seeded inputs for the graph inputs: what a consuming layer asks for
    (``LayerType.sample_input``: indices for Embed, ``cont`` for recurrent layers ...),
    else uniform(-1, 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in info.inputs.items():
        value = None
        for _, j, lname in info.consumers.get(name, []):
            asked = net.layer(lname).spec.sample_input(j, tuple(shape), rng)
            if asked is not None:
                value = np.asarray(asked, dtype=np.float32)
        feeds[name] = value if value is not None else rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def ort_session(model_or_path):
    """An onnxruntime CPU session for a model (or the path of one)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else model_or_path.SerializeToString()
    return ort.InferenceSession(os.fspath(src) if isinstance(src, os.PathLike) else src, opts,
                                providers=["CPUExecutionProvider"])


def opencv_prototxt(net, info: ExportInfo) -> str:
    """The kept layers of ``net`` as prototxt text for OpenCV's Caffe importer: data
    layers become ``Input`` layers with their shapes; include/exclude rules, blobs and
    training-only layers are dropped."""
    from google.protobuf import text_format

    from . import caffe_pb2

    out = caffe_pb2.NetParameter(name=net.name or "net")
    for i in info.kept_layers:
        layer = net.layers[i]
        if not layer.spec.opencv_reads:
            continue
        lp = out.layer.add()
        if layer.spec.net_input:
            lp.name, lp.type = layer.name, "Input"
            lp.top.extend(layer.tops)
            for s in layer.top_shapes:
                lp.input_param.shape.add().dim.extend(int(d) for d in s)
            continue
        lp.CopyFrom(layer.lp)
        del lp.include[:]
        del lp.exclude[:]
        del lp.blobs[:]
        lp.ClearField("phase")
    return text_format.MessageToString(out)


def _opencv_forward(net, blobs, info, feeds, caffemodel, workdir):
    """OpenCV's outputs for the graph outputs, or raise with the reason."""
    import cv2

    from .caffemodel import write_caffemodel

    proto = os.path.join(workdir, "net.prototxt")
    with open(proto, "w") as fh:
        fh.write(opencv_prototxt(net, info))
    if caffemodel is None:
        caffemodel = os.path.join(workdir, "net.caffemodel")
        write_caffemodel(caffemodel, net, blobs)
    try:  # OpenCV logs its own errors to stderr; the library must not print
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover
        level = None
    try:
        return _opencv_run(cv2, net, info, feeds, proto, caffemodel)
    finally:
        if level is not None:
            cv2.utils.logging.setLogLevel(level)


def _opencv_run(cv2, net, info, feeds, proto, caffemodel):
    cvnet = cv2.dnn.readNetFromCaffe(proto, os.fspath(caffemodel))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cvnet.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, value in feeds.items():
        cvnet.setInput(value, name)
    wanted, names = [], []
    for out_name in info.outputs:
        blob, lname, j = info.blob_of[out_name]
        wanted.append(out_name)
        names.append(lname if j == 0 else f"{lname}.{j}")
    results = cvnet.forward(names)
    return {w: np.asarray(r) for w, r in zip(wanted, results)}


def _opencv_reason(exc) -> str:
    """The telling part of a cv2.error ("Can't create layer ... of type Embed")."""
    import re

    text = str(exc).strip()
    m = re.search(r"error: \([-\d]+:[^)]*\) (.*?)(?: in function '[^']*')?\s*$", text.splitlines()[0] if text else "")
    if m and m.group(1).strip():
        return m.group(1).strip()
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__


def export_and_check(filled, path=None, *, opset=None, check: bool = True, all_blobs: bool = False,
                     caffemodel=None, seed: int = 0, compare_opencv: bool = True, rtol: float = 1e-3):
    """Export ``filled`` (a filled net, or a ``(net, blobs)`` pair) to ``path`` and check it.

    With ``check``: run the model in onnxruntime on seeded inputs (see :func:`make_inputs`),
    check that every output has the net model's shape and finite values, and, where
    OpenCV's Caffe importer can run the net, compare every output with OpenCV's (the same
    weights, from ``caffemodel`` or a temporary one): a maximum absolute error above
    ``rtol * max(1, max |OpenCV output|)`` fails.  Returns an :class:`ExportReport`.
    """
    if isinstance(filled, tuple):
        net, blobs = filled
    else:
        net, blobs = filled.net, filled.blobs
    report = ExportReport(path=None if path is None else os.fspath(path), opset=DEFAULT_OPSET if opset is None else opset)
    model, info = export_with_info(net, blobs, path, opset=report.opset, all_blobs=all_blobs,
                                   return_model=path is None)
    report.model, report.info = model, info
    report.export_seconds = info.seconds
    report.warnings.extend(info.warnings)
    if info.external_data:
        report.warnings.append(f"the weights ({info.init_bytes / 2**30:.2f} GiB) were written as external data "
                               f"next to the model ({os.path.basename(path)}.data)")
    if not check:
        return report
    if info.external_data and path is None:
        report.warnings.append("the model is too large to run from memory; give a path to check it")
        return report
    t0 = time.perf_counter()
    sess = ort_session(path if path is not None else model)
    report.session_seconds = time.perf_counter() - t0
    feeds = make_inputs(info, net, seed)
    t0 = time.perf_counter()
    out_names = [o.name for o in sess.get_outputs()]
    results = sess.run(out_names, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})
    report.run_seconds = time.perf_counter() - t0
    report.checked = True
    got = dict(zip(out_names, results))

    reference, why = None, None
    caveats = [(net.layers[i].name, net.layers[i].spec.opencv_caveat()) for i in info.kept_layers]
    caveats = [(name, why) for name, why in caveats if why]
    if compare_opencv and info.init_bytes >= 2**31 - 2**24:
        compare_opencv = False
        why = "not compared with OpenCV: it reads .caffemodel files up to 2 GB; compared shapes and finiteness only"
    if compare_opencv and caveats:
        compare_opencv = False
        why = (f"not compared with OpenCV: layer '{caveats[0][0]}': {caveats[0][1]}"
               + (f" (and {len(caveats) - 1} more layer(s))" if len(caveats) > 1 else "")
               + "; compared shapes and finiteness only")
    if compare_opencv:
        try:
            import cv2  # noqa: F401

            with tempfile.TemporaryDirectory(prefix="fillers-cv-") as work:
                reference = _opencv_forward(net, blobs, info, feeds, caffemodel, work)
            import cv2 as _cv2

            report.reference = f"OpenCV {_cv2.__version__}"
        except ImportError:
            why = "OpenCV (cv2) is not installed; compared shapes and finiteness only"
        except Exception as exc:  # OpenCV cannot read or run the net
            why = f"OpenCV could not run this net ({_opencv_reason(exc)}); compared shapes and finiteness only"
    if why:
        report.warnings.append(why)

    non_finite = False
    for name in out_names:
        y = np.asarray(got[name])
        expected = info.outputs.get(name, ())
        finite = bool(np.all(np.isfinite(y)))
        max_abs = float(np.max(np.abs(y))) if y.size and finite else (float("nan") if not finite else 0.0)
        oc = OutputCheck(name=name, shape=tuple(y.shape), expected_shape=tuple(expected), finite=finite,
                         max_abs=max_abs)
        if tuple(y.shape) != tuple(expected):
            oc.ok = False
            report.warnings.append(f"output '{name}' has shape {list(y.shape)}, the net model says {list(expected)}")
        if not finite:
            oc.ok = False
            non_finite = True
        if reference is not None and name in reference:
            ref = reference[name].astype(np.float32)
            if ref.size == y.size:
                ref = ref.reshape(y.shape)
                diff = np.abs(ref.astype(np.float64) - y.astype(np.float64))
                scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
                oc.max_abs_err = float(np.max(diff)) if diff.size else 0.0
                oc.max_rel_err = oc.max_abs_err / scale
                if not (oc.max_abs_err <= rtol * scale):
                    oc.ok = False
            else:
                oc.ok = False
                report.warnings.append(f"OpenCV's '{name}' has {ref.size} values, onnxruntime's {y.size}")
        report.outputs.append(oc)
    huge = any(o.finite and o.max_abs > 1e20 for o in report.outputs)
    if non_finite or huge:
        hints = [(l, l.spec.overflow_hint(blobs.get(l.name) or [])) for l in net.layers]
        hints = [(l, h) for l, h in hints if h]
        what = "non-finite values (inf/NaN)" if non_finite else "huge values"
        msg = f"the outputs hold {what}"
        if hints:
            layer, hint = hints[0]
            same = sum(1 for l, _ in hints if l.type == layer.type)
            msg += f"; {same} {layer.type} layer(s) have {hint}"
        report.warnings.append(msg)
    report.ok = all(o.ok for o in report.outputs)
    return report


__all__ = ["export", "export_with_info", "export_and_check", "LoweringContext", "NoLowering",
           "ExportReport", "ExportInfo", "make_inputs", "ort_session", "opencv_prototxt", "DEFAULT_OPSET"]
