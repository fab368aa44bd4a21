"""Lowering a whole net to an ONNX graph.

Each layer type lowers itself (``LayerType.lower(ctx)`` in :mod:`fillers.layers`); this
module walks the net in named steps (:func:`export_with_info`), hands every layer a
:class:`~fillers.onnx.lowering.LoweringContext` and assembles the model:

* **Inputs** are the tops of the layers whose type says ``net_input`` (``Input``,
  ``DummyData``, ``MemoryData``, database and Python data layers), with their shapes from
  the net model.
* **Tensor names** are static single assignment: Caffe reuses a blob name when a layer
  works in place (``ReLU``, ``BatchNorm``, ``Scale`` ...), so every version of a blob gets
  a tensor of its own (``conv1@conv1`` for the convolution's result), and, once the graph
  is complete, the last version of each blob is renamed to the blob's own name, so the
  graph's outputs are named exactly as Caffe's output blobs.  A graph input keeps its
  blob's name unless an output needs it (an input rewritten in place).
* **Weights** become initializers named ``<layer>/<blob>``; a blob shared through
  ``param { name }`` becomes one initializer used by every layer that shares it.
* **Layers left out**: training-only layers (losses, ``Accuracy``, ``HDF5Output``), layers
  whose lowering calls ``ctx.leave_out(reason)`` (fork layers ONNX cannot express
  exactly), and the layers that need their tops.  A note names them; a blob that only they
  consumed becomes an output.
* **Outputs** are the blobs no exported layer consumes (Caffe's rule), with their shapes.

Every layer type without a lowering (or whose lowering raises ``NoLowering``) is
collected and reported in one :class:`~fillers.errors.ExportError`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import ExportError
from ..layers.base import LayerType, shape_count
from .lowering import FLOAT, GraphBuilder, LeftOut, LoweringContext, NoLowering
from . import writer
from .writer import attach, check_model, write_model

#: Softmax takes any axis from opset 13 on (earlier versions flatten to 2-d).
DEFAULT_OPSET = 13
MIN_OPSET = 13


@dataclass
class ExportInfo:
    """What :func:`export` did besides building the model."""

    warnings: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # graph input name -> shape
    outputs: dict = field(default_factory=dict)  # graph output name -> shape
    blob_of: dict = field(default_factory=dict)  # graph output name -> (Caffe blob, layer that wrote it, top index)
    #: graph output name -> axes whose size is known only at run time (declared symbolic)
    dynamic_axes: dict = field(default_factory=dict)
    external_data: bool = False
    path: Optional[str] = None
    init_bytes: int = 0
    #: graph input -> (consumer layer type, bottom index, layer name) for every exported consumer
    consumers: dict = field(default_factory=dict)
    kept_layers: list = field(default_factory=list)  # indices into net.layers of the exported layers
    left_out: dict = field(default_factory=dict)  # layer name -> reason, for every layer left out
    n_nodes: int = 0
    seconds: float = 0.0


def export(net, blobs=None, path=None, *, opset: int = DEFAULT_OPSET, all_blobs: bool = False):
    """Lower ``net`` with its weights ``blobs`` (``{layer name: [float32 arrays in Caffe's
    blob order]}``) to an ``onnx.ModelProto``; with ``path``, also write it (atomically;
    external data when the weights pass ~2 GB).

    ``net`` may be a filled net (with ``.net`` and ``.params``), in which case ``blobs``
    may be omitted.  ``opset`` (>= 13) is the target opset; ``all_blobs=True`` makes every
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
    t0 = time.perf_counter()
    net, blobs, path = _unpack(net, blobs, path)
    opset = _check_opset(opset)
    builder = GraphBuilder(opset)
    info = ExportInfo()
    candidates = _leave_out_training_layers(net, builder, info)
    arrays, keys, users = _gather_params(net, blobs, candidates)
    versions = _lower_layers(net, builder, info, candidates, arrays, keys, users)
    _declare_outputs(net, builder, info, versions, all_blobs)
    model = _assemble(net, builder, info, opset)
    info.external_data = builder.init_bytes > writer.EXTERNAL_DATA_THRESHOLD
    if path is not None:
        info.path = write_model(model, builder.tensors, path, external=info.external_data)
    elif info.external_data:
        raise ExportError(f"the weights take {builder.init_bytes / 2**30:.2f} GiB, more than one protobuf "
                          "message holds: give a path, and they are written as external data next to the model")
    if return_model or path is None:
        attach(model, builder.tensors)
        if path is None:
            check_model(model.SerializeToString(), None)
    else:
        model = None
    info.seconds = time.perf_counter() - t0
    return model, info


# ---- the steps ---------------------------------------------------------------------------

def filled_parts(filled):
    """``(net, params)`` of a filled net (``.net`` and ``.params``, or the older name
    ``.blobs``) or of a ``(net, params)`` pair."""
    if isinstance(filled, tuple):
        return filled
    params = getattr(filled, "params", None)
    return filled.net, params if params is not None else filled.blobs


def _unpack(net, blobs, path):
    """Accept ``(net, params)`` or a FilledNet in place of both; a FilledNet's second
    positional argument may be the path."""
    if hasattr(net, "net") and not hasattr(net, "layers"):
        if isinstance(blobs, (str, os.PathLike)) and path is None:
            path, blobs = blobs, None
        net, own = filled_parts(net)
        blobs = own if blobs is None else blobs
    if blobs is None:
        raise ExportError("no weights given: pass the parameter arrays {layer name: [arrays]} (or a filled net)")
    return net, blobs, path


def _check_opset(opset) -> int:
    import onnx

    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: Softmax flattens to 2-d before opset 13 (Caffe's Softmax "
                          f"works on one axis); use --opset 13 or higher")
    max_opset = onnx.defs.onnx_opset_version()
    if opset > max_opset:
        raise ExportError(f"opset {opset} is newer than this onnx ({onnx.__version__}) knows (up to {max_opset})")
    return opset


def _leave_out_training_layers(net, builder, info) -> list:
    """The indices of the layers to lower: all but the training-only ones (noted)."""
    kept, left_out = [], []
    for i, layer in enumerate(net.layers):
        (left_out if layer.spec.training_only else kept).append(i)
    if left_out:
        names = ", ".join(f"'{net.layers[i].name}' ({net.layers[i].type})" for i in left_out)
        builder.warnings.append(f"left out {len(left_out)} training-only layer(s): {names}")
        for i in left_out:
            info.left_out[net.layers[i].name] = "training only"
    return kept


def _is_lowerable(spec) -> bool:
    return type(spec).lower is not LayerType.lower


def _gather_params(net, blobs, candidates):
    """Every lowered layer's parameter arrays (float32, in Caffe's shapes; a shared blob:
    its owner's), the key ``(owner layer index, blob index)`` of each, and how many layers
    use each key.  Missing or misshapen weights are reported together."""
    layers = net.layers
    users: Counter = Counter()
    for i in candidates:
        for j, owner in enumerate(layers[i].owners or [None] * len(layers[i].params)):
            users[owner if owner is not None else (i, j)] += 1
    arrays, keys, problems = {}, {}, []
    for i in candidates:
        layer = layers[i]
        if not _is_lowerable(layer.spec):
            continue  # reported with the other layers that cannot be lowered
        owners = layer.owners or [None] * len(layer.params)
        arrs, ks = [], []
        for j, owner in enumerate(owners):
            key = owner if owner is not None else (i, j)
            src = layers[key[0]]
            got = blobs.get(src.name)
            if got is None or len(got) <= key[1]:
                problems.append(f"'{src.name}' blob {key[1]} is missing")
                arrs.append(None)
            else:
                a = np.asarray(got[key[1]])
                want = tuple(src.params[key[1]].shape)
                if a.size != shape_count(want):
                    problems.append(f"'{src.name}' blob {key[1]} has shape {list(a.shape)}, the net needs {list(want)}")
                else:
                    a = a.reshape(want)
                arrs.append(a if a.dtype == np.float32 else a.astype(np.float32))
            ks.append(key)
        arrays[i], keys[i] = arrs, ks
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ExportError("the weights do not fit the net: " + "; ".join(problems[:10]) + more)
    return arrays, keys, users


@dataclass
class _Versions:
    """What the lowering produced: the current tensor of every blob, every version made
    (tensor, shape, blob, layer index, top index) in order, the tensors graph inputs made,
    and the layers lowered."""

    current: dict = field(default_factory=dict)
    made: list = field(default_factory=list)
    read: set = field(default_factory=set)  # the tensors lowered layers read
    input_of: dict = field(default_factory=dict)  # blob -> its graph input tensor
    lowered: list = field(default_factory=list)


def _lower_layers(net, builder, info, candidates, arrays, keys, users) -> _Versions:
    """Lower every candidate layer in net order.  Each top gets a fresh tensor name
    (renamed to the blob's name later if it is an output); graph inputs take their blob's
    name.  Layers that leave themselves out, and those that need their tops, are noted;
    layers without a lowering are collected into one error."""
    layers = net.layers
    for layer in layers:
        for t in layer.tops:
            builder.values.reserve(t)
    v = _Versions()
    failures: Counter = Counter()
    reasons: dict = {}
    left_out: list = []  # (layer, reason)
    for i in candidates:
        layer = layers[i]
        if not _is_lowerable(layer.spec):
            failures[layer.type] += 1
            continue
        missing = [x for x in layer.bottoms if x not in v.current]
        if missing:
            writer = _writer(net, i, missing[0])
            left_out.append((layer, f"needs '{missing[0]}'" + (f" from layer '{writer}'" if writer else "")))
            continue
        ins = [v.current[x] for x in layer.bottoms]
        outs = [t if layer.is_input else builder.values.unique(f"{t}@{layer.name}") for t in layer.tops]
        n_nodes, n_inputs = len(builder.nodes), len(builder.inputs)
        ctx = LoweringContext(builder, net, layer, ins, outs, arrays[i], keys[i], users)
        try:
            layer.spec.lower(ctx)
        except NoLowering as exc:
            failures[layer.type] += 1
            reasons.setdefault(layer.type, f"layer '{layer.name}': {exc}")
            continue
        except LeftOut as exc:
            del builder.nodes[n_nodes:]
            del builder.inputs[n_inputs:]
            left_out.append((layer, str(exc)))
            continue
        for name in outs:
            if name not in builder.produced:
                raise ExportError(f"internal error: the lowering of layer '{layer.name}' ({layer.type}) did not "
                                  f"produce its top '{name}'")
        for j, t in enumerate(layer.tops):
            v.current[t] = outs[j]
            v.made.append((outs[j], layer.top_shapes[j], t, i, j))
            if outs[j] in builder.input_shapes:
                v.input_of[t] = outs[j]
        v.lowered.append(i)
        v.read.update(ins)
    if failures:
        raise ExportError(_missing_message(failures, reasons))
    if left_out:
        _note_left_out(net, builder, info, left_out, v)
    info.kept_layers = v.lowered
    return v


def _writer(net, index, blob) -> Optional[str]:
    """The name of the last layer before ``index`` that writes ``blob``."""
    for layer in reversed(net.layers[:index]):
        if blob in layer.tops:
            return layer.name
    return None


def _note_left_out(net, builder, info, left_out, versions) -> None:
    produced = {t for _, _, t, _, _ in versions.made}
    lost = sorted({t for layer, _ in left_out for t in layer.tops if t not in produced})
    parts = [f"'{layer.name}' ({layer.type}): {why}" for layer, why in left_out]
    builder.warnings.append(f"left out {len(left_out)} layer(s) that ONNX cannot express here: "
                            + "; ".join(parts) + (f"; outputs left out: {', '.join(lost)}" if lost else ""))
    for layer, why in left_out:
        info.left_out[layer.name] = why


def _declare_outputs(net, builder, info, versions, all_blobs) -> None:
    """Caffe's outputs: the blobs whose last version no exported layer consumes (a graph
    input nothing reads is not one).  Their last versions take the blobs' names; every
    graph input an exported layer reads is declared, with its consumers."""
    layers = net.layers
    for i in versions.lowered:
        for j, x in enumerate(layers[i].bottoms):
            info.consumers.setdefault(x, []).append((layers[i].type, j, layers[i].name))
    final = {t: (name, shape, li, j) for name, shape, t, li, j in versions.made}
    outputs = [t for t, (name, *_) in final.items() if name not in versions.read and versions.input_of.get(t) != name]
    renames = {}
    for t, (name, *_) in final.items():  # the last version of every blob takes the blob's name
        if name == t:
            continue
        if t in builder.input_shapes:  # an input rewritten in place keeps its name, unless an output needs it
            if t not in outputs:
                continue
            renames[t] = builder.values.unique(f"{t}@{layers[_first_writer(net, t)].name}")
        renames[name] = t
    if renames:
        _rename(builder, versions, renames, final)
    for t in sorted(outputs):
        name, shape, li, j = final[t]
        _add_output(builder, info, name, shape, t, layers[li], j)
    if all_blobs:
        for name, shape, t, li, j in versions.made:
            name = renames.get(name, name)
            if name not in info.outputs and name not in builder.input_shapes:
                _add_output(builder, info, name, shape, t, layers[li], j)
    used = set()
    for node in builder.nodes:
        used.update(node.input)
    for vi in builder.inputs:
        if vi.name in used or vi.name in info.outputs:
            info.inputs[vi.name] = builder.input_shapes[vi.name]
        else:
            builder.warnings.append(f"input '{vi.name}' is not used by any exported layer; left out of the graph inputs")
    builder.inputs = [vi for vi in builder.inputs if vi.name in info.inputs]


def _first_writer(net, blob) -> int:
    return next(i for i, layer in enumerate(net.layers) if blob in layer.tops)


def _rename(builder, versions, renames, final) -> None:
    for node in builder.nodes:
        for k, x in enumerate(node.input):
            if x in renames:
                node.input[k] = renames[x]
        for k, x in enumerate(node.output):
            if x in renames:
                node.output[k] = renames[x]
    for vi in builder.inputs:
        if vi.name in renames:
            old = vi.name
            vi.name = renames[old]
            builder.input_shapes[vi.name] = builder.input_shapes.pop(old)
    for t, (name, shape, li, j) in list(final.items()):
        final[t] = (renames.get(name, name), shape, li, j)


def _add_output(builder, info, name, shape, blob, layer, j) -> None:
    """A graph output; the axes the layer type says are sized at run time get a symbolic
    dimension (``<blob>_dim<axis>``)."""
    dynamic = tuple(layer.spec.dynamic_axes.get(j, ()))
    dims = [f"{blob}_dim{a}" if a in dynamic else int(d) for a, d in enumerate(shape)]
    builder.outputs.append(builder.helper.make_tensor_value_info(name, FLOAT, dims))
    info.outputs[name] = tuple(int(d) for d in shape)
    info.blob_of[name] = (blob, layer.name, j)
    if dynamic:
        info.dynamic_axes[name] = dynamic


def _assemble(net, builder, info, opset):
    """The ModelProto (without initializers): graph, opset, producer, notes."""
    model = builder.model
    graph = model.graph
    graph.name = net.name or "caffe_net"
    graph.node.extend(builder.nodes)
    graph.input.extend(builder.inputs)
    graph.output.extend(builder.outputs)
    opsets = [builder.helper.make_opsetid("", opset)]
    model.opset_import.extend(opsets)
    model.producer_name = "caffe-fillers"
    model.producer_version = _version()
    model.ir_version = builder.helper.find_min_ir_version_for(opsets)
    model.doc_string = f"Caffe net '{net.name}' exported by caffe-fillers"
    if builder.warnings:
        entry = model.metadata_props.add()
        entry.key, entry.value = "caffe_fillers_notes", "\n".join(builder.warnings)
    info.warnings = list(builder.warnings)
    info.init_bytes = builder.init_bytes
    info.n_nodes = len(builder.nodes)
    return model


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
