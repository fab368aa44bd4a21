"""Layers that bring data into the net.

``Input``, ``DummyData`` and ``MemoryData`` carry their shapes in the prototxt.  The
others read a database, an image list, HDF5 files or a Python module, so their shapes
come from the user (``--input NAME=N,C,H,W``, or ``input_shapes=`` in the API); the label
top of Data/ImageData/WindowData defaults to ``[N]``.
"""

from __future__ import annotations

import numpy as np

from .base import LayerType, register, shape_count


def _dims(shape_msg):
    return tuple(int(d) for d in shape_msg.dim)


class _GraphInput:
    """Mixin of the data layers: their tops are the net's inputs (graph inputs of an
    ONNX export)."""

    net_input = True

    def lower(self, ctx):
        for i in range(len(ctx.outputs)):
            ctx.graph_input(i)

    def forward(self, bottoms, params, ctx):
        """The tops are the arrays fed (``ctx.feeds``), in Caffe's shapes; a DummyData top
        not fed is made by its ``data_filler`` (``ctx.rng`` for random fillers)."""
        tops = []
        shapes = ctx.layer.top_shapes if ctx.layer is not None else [None] * len(ctx.feeds)
        for k, (a, shape) in enumerate(zip(ctx.feeds, shapes)):
            if a is None:
                a = self.default_top(k, shape, ctx)
            if a is None:
                raise ValueError(f"no array fed for top '{self.lp.top[k]}'")
            a = np.asarray(a, dtype=np.float32)
            if shape is not None and a.shape != tuple(shape):
                if a.size != shape_count(shape):
                    raise ValueError(f"top '{self.lp.top[k]}': fed {a.shape}, the net needs {tuple(shape)}")
                a = a.reshape(shape)
            tops.append(a)
        return tops

    def default_top(self, k, shape, ctx):
        return None

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [None] * len(bottoms), []


@register("Input")
class Input(_GraphInput, LayerType):
    """Net inputs with shapes from ``input_param.shape`` (one for all tops or one each)."""

    n_bottoms = (0, 0)
    n_tops = (1, None)

    def outputs(self, bottoms):
        shapes = list(self.lp.input_param.shape)
        n = len(self.lp.top)
        if len(shapes) not in (1, n):
            self.fail(f"give one input_param shape, or one per top ({n}); {len(shapes)} given")
        if not shapes:
            self.fail("input_param needs a shape")
        return [_dims(shapes[0] if len(shapes) == 1 else shapes[i]) for i in range(n)]


@register("DummyData")
class DummyData(_GraphInput, LayerType):
    """Tops filled by ``data_filler``s; shapes from ``shape`` (or legacy num/channels/
    height/width), one for all tops or one each."""

    n_bottoms = (0, 0)
    n_tops = (1, None)

    def outputs(self, bottoms):
        p = self.lp.dummy_data_param
        n = len(self.lp.top)
        if len(p.shape):
            if len(p.shape) not in (1, n):
                self.fail(f"give one shape or one per top ({n})")
            return [_dims(p.shape[0] if len(p.shape) == 1 else p.shape[i]) for i in range(n)]
        legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
        if not any(legacy):
            self.fail("dummy_data_param needs shape (or num, channels, height and width)")
        out = []
        for i in range(n):
            dims = []
            for vals in legacy:
                if len(vals) not in (1, n):
                    self.fail("num, channels, height and width need one value or one per top")
                dims.append(int(vals[0] if len(vals) == 1 else vals[i]))
            out.append(tuple(dims))
        return out

    def lower(self, ctx):
        ctx.warn("DummyData tops become graph inputs (Caffe fills them with data_filler at set-up)")
        super().lower(ctx)

    def default_top(self, k, shape, ctx):
        """Caffe's DummyData fillers: constant, uniform, gaussian (others: an error)."""
        fp = self.data_fillers()[k]
        t = fp.type or "constant"
        if t == "constant":
            return np.full(shape, np.float32(fp.value), dtype=np.float32)
        if t == "uniform":
            return ctx.rng.uniform(fp.min, fp.max, size=shape).astype(np.float32)
        if t == "gaussian":
            return (ctx.rng.standard_normal(size=shape) * fp.std + fp.mean).astype(np.float32)
        return None


@register("MemoryData")
class MemoryData(_GraphInput, LayerType):
    """Data pushed from memory: ``[batch_size, channels, height, width]`` and a label
    ``[batch_size]``."""

    n_bottoms = (0, 0)
    n_tops = (2, 2)

    def outputs(self, bottoms):
        p = self.lp.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(dims) <= 0:
            self.fail("batch_size, channels, height and width must all be greater than zero")
        return [dims, (dims[0],)]


class RuntimeData(_GraphInput, LayerType):
    """A data layer whose shapes only exist at run time (a database, files, Python): the
    net builder takes them from the user (``--input``)."""

    n_bottoms = (0, 0)
    n_tops = (1, None)
    runtime_source = "a database or file list"

    def outputs(self, bottoms):  # the net builder supplies shapes from the user
        raise NotImplementedError


@register("Data", "ImageData", "WindowData")
class DatabaseData(RuntimeData):
    """Data read from a database, an image list or windows: the user gives the data
    shape; a label top defaults to ``[N]``."""

    n_tops = (1, 2)

    def runtime_shape(self, top, first):
        """A label top (after the data) defaults to ``[N]``."""
        return (first[0],) if top > 0 and first else None


@register("HDF5Data")
class HDF5Data(RuntimeData):
    """HDF5 files: every top's shape comes from the user."""

    n_tops = (1, None)
    runtime_source = "HDF5 files"


@register("Python")
class Python(RuntimeData):
    """A Python layer: every top's shape comes from the user; one with bottoms runs user
    code, which ONNX cannot express."""

    n_bottoms = (0, None)
    n_tops = (0, None)
    runtime_source = "a Python module"

    def lower(self, ctx):
        if ctx.inputs:
            ctx.leave_out("a Python layer with bottoms runs user code, which ONNX cannot express")
        super().lower(ctx)


@register("HDF5Output")
class HDF5Output(LayerType):
    """Writes its two bottoms to an HDF5 file; no tops."""

    n_bottoms = (2, 2)
    n_tops = (0, 0)
    training_only = True

    def outputs(self, bottoms):
        return []
