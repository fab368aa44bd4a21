"""What a layer's ``lower(ctx)`` works with: the graph under construction
(:class:`GraphBuilder`: nodes, initializers, unique names) and the per-layer
:class:`LoweringContext`, plus the two ways a lowering gives up (:class:`NoLowering`: the
export fails; :class:`LeftOut`: the layer is left out of an export that goes on)."""

from __future__ import annotations

import numpy as np

from ..errors import ExportError
from ..layers.base import shape_count

FLOAT = 1  # onnx.TensorProto.FLOAT
INT64 = 7  # onnx.TensorProto.INT64


class NoLowering(ExportError):
    """Raised by a ``lower`` method when the layer (its type, or these settings) cannot be
    expressed in ONNX.  The exporter collects these and reports them together."""


class LeftOut(ExportError):
    """Raised by a ``lower`` method (:meth:`LoweringContext.leave_out`) for a layer that an
    export leaves out on purpose (a fork layer whose arithmetic ONNX cannot express
    exactly, a Python layer): the rest of the net is exported, and a note names the layer,
    the reason and the outputs left out."""


class Namer:
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


class GraphBuilder:
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
        self.values = Namer()  # tensor and initializer names
        self.node_names = Namer()
        self.nodes: list = []
        self.init_bytes = 0
        self.inputs: list = []  # ValueInfoProto
        self.outputs: list = []  # ValueInfoProto
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
        inputs: tensor names of the bottoms, in order.
        outputs: tensor names the lowering must produce for the tops, in order.
        bottom_shapes, top_shapes: shapes from the net model (tuples of ints).
        params: the parameter arrays in Caffe's blob order (a shared blob: its owner's).
        opset: the target opset of the default domain.

    A lowering adds nodes with :meth:`node`, weights with :meth:`param`, constants with
    :meth:`const`/:meth:`ints`, and gives up with :meth:`unsupported` (the export fails)
    or :meth:`leave_out` (the layer is left out, the rest exported).
    """

    def __init__(self, builder: GraphBuilder, net, layer, inputs, outputs, params, param_keys, param_users):
        self._b = builder
        self.net = net
        self.layer = layer
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
        """Copy tensor ``x`` into ``out`` (a top that is an existing value)."""
        return self.node("Identity", [x], out)

    # ---- weights and constants -------------------------------------------------------
    def param(self, i: int, shape=None) -> str:
        """The initializer holding parameter blob ``i``, viewed with ``shape`` (default:
        Caffe's blob shape).  A blob only this layer uses is stored in the asked shape;
        a shared blob is stored once and reshaped by a node where needed."""
        array = self.params[i]
        shape = tuple(array.shape) if shape is None else tuple(int(d) for d in shape)
        if shape_count(shape) != array.size:
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

    def leave_out(self, message: str):
        """Leave this layer out of the export (with the layers that need its tops): the
        rest is exported, and a note gives ``message``."""
        raise LeftOut(message)


