"""Layers that move, join, split or reduce blobs without learning anything."""

from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import LayerType, register

_ELTWISE = caffe_pb2.EltwiseParameter
_REDUCTION = caffe_pb2.ReductionParameter
from .conv import spatial_settings


@register("Concat")
class Concat(LayerType):
    """Join bottoms along ``axis`` (or the legacy ``concat_dim``)."""

    n_bottoms = (1, None)

    def outputs(self, bottoms):
        p = self.lp.concat_param
        if p.HasField("concat_dim") and p.HasField("axis"):
            self.fail("give either axis or the legacy concat_dim, not both")
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        first = tuple(bottoms[0])
        axis = self.canonical_axis(axis, len(first))
        total = 0
        for i, b in enumerate(bottoms):
            if len(b) != len(first):
                self.fail(f"bottom {i} has {len(b)} axes where bottom 0 has {len(first)}")
            for j, (x, y) in enumerate(zip(first, b)):
                if j != axis and x != y:
                    self.fail(f"bottom {i} has shape {list(b)}, which differs from bottom 0's "
                              f"{list(first)} on axis {j} (only axis {axis} may differ)")
            total += int(b[axis])
        return [(*first[:axis], total, *first[axis + 1:])]

    def lower(self, ctx):
        p = self.lp.concat_param
        axis = self.canonical_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, len(ctx.bottom_shapes[0]))
        if len(ctx.inputs) == 1:
            ctx.node("Identity", ctx.inputs, ctx.outputs[0])
        else:
            ctx.node("Concat", ctx.inputs, ctx.outputs[0], axis=axis)


@register("Slice")
class Slice(LayerType):
    """Cut a bottom along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s, or into
    equal parts."""

    n_tops = (1, None)

    def outputs(self, bottoms):
        p = self.lp.slice_param
        if p.HasField("slice_dim") and p.HasField("axis"):
            self.fail("give either axis or the legacy slice_dim, not both")
        shape = tuple(bottoms[0])
        axis = self.canonical_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape))
        n_top = len(self.lp.top)
        dim = int(shape[axis])
        points = list(p.slice_point)
        if points:
            if len(points) != n_top - 1:
                self.fail(f"{len(points)} slice points need {len(points) + 1} tops, not {n_top}")
            prev, sizes = 0, []
            for pt in points:
                if pt <= prev:
                    self.fail("slice points must be strictly increasing and positive")
                sizes.append(pt - prev)
                prev = pt
            if prev >= dim:
                self.fail(f"slice point {prev} is not inside axis {axis} of size {dim}")
            sizes.append(dim - prev)
        else:
            if dim % n_top:
                self.fail(f"axis {axis} of size {dim} cannot be cut into {n_top} equal parts")
            sizes = [dim // n_top] * n_top
        return [(*shape[:axis], s, *shape[axis + 1:]) for s in sizes]

    def lower(self, ctx):
        p = self.lp.slice_param
        shape = ctx.bottom_shapes[0]
        axis = self.canonical_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape))
        ctx.split(ctx.inputs[0], [t[axis] for t in ctx.top_shapes], axis, ctx.outputs)


@register("Split")
class Split(LayerType):
    """Copies of one bottom."""

    n_tops = (1, None)

    def outputs(self, bottoms):
        return [tuple(bottoms[0])] * len(self.lp.top)

    def lower(self, ctx):
        for out in ctx.outputs:
            ctx.node("Identity", ctx.inputs, out)


@register("Crop")
class Crop(LayerType):
    """Crop bottom 0 to bottom 1's shape on the axes from ``axis`` (default 2), starting
    at ``offset`` (one for all cropped axes, or one per axis)."""

    n_bottoms = (2, 2)

    def crop(self, bottoms):
        p = self.lp.crop_param
        a, b = tuple(bottoms[0]), tuple(bottoms[1])
        if len(a) != len(b):
            self.fail(f"the bottoms have {len(a)} and {len(b)} axes; they must have the same number")
        axis = self.canonical_axis(p.axis, len(a))
        n_crop = len(a) - axis
        offsets = list(p.offset)
        if len(offsets) > 1 and len(offsets) != n_crop:
            self.fail(f"give one offset or one per cropped axis ({n_crop}), not {len(offsets)}")
        starts = []
        for i in range(len(a)):
            if i < axis:
                starts.append(0)
                continue
            off = 0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i - axis])
            if a[i] - off < b[i]:
                self.fail(f"axis {i}: offset {off} + size {b[i]} is larger than the input's {a[i]}")
            starts.append(off)
        return axis, starts

    def outputs(self, bottoms):
        axis, _ = self.crop(bottoms)
        a, b = tuple(bottoms[0]), tuple(bottoms[1])
        return [(*a[:axis], *b[axis:])]

    def lower(self, ctx):
        """Slice bottom 0 from the offsets on the axes from ``axis`` (bottom 1 only gives
        the size)."""
        axis, starts = self.crop(ctx.bottom_shapes)
        top = ctx.top_shapes[0]
        axes = [i for i in range(axis, len(top))]
        if not axes:
            ctx.node("Identity", [ctx.inputs[0]], ctx.outputs[0])
            return
        st = [starts[i] for i in axes]
        en = [starts[i] + top[i] for i in axes]
        ctx.node("Slice", [ctx.inputs[0], ctx.ints(st, "starts"), ctx.ints(en, "ends"), ctx.ints(axes, "axes")],
                 ctx.outputs[0])


@register("Reshape")
class Reshape(LayerType):
    """New shape for the axes ``[axis, axis + num_axes)``: 0 copies the bottom's dim,
    -1 is inferred."""

    def target(self, bottoms):
        p = self.lp.reshape_param
        shape = tuple(bottoms[0])
        nd = len(shape)
        start = p.axis if p.axis >= 0 else nd + p.axis + 1
        if not 0 <= start <= nd:
            self.fail(f"axis {p.axis} is out of range for a bottom of {nd} axes")
        if p.num_axes < -1:
            self.fail("num_axes must be >= 0, or -1 for all")
        end = nd if p.num_axes == -1 else start + p.num_axes
        if end > nd:
            self.fail(f"axis {start} + num_axes {p.num_axes} exceed the bottom's {nd} axes")
        dims = [int(d) for d in p.shape.dim]
        out, infer = [], None
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= nd:
                    self.fail(f"dim {i} is 0 (copy) but the bottom has no axis {start + i}")
                out.append(int(shape[start + i]))
            elif d == -1:
                if infer is not None:
                    self.fail("only one dim may be -1")
                infer = i
                out.append(1)
            elif d < 0:
                self.fail(f"dim {d} is not allowed (only 0, -1 or positive)")
            else:
                out.append(d)
        full = list(shape[:start]) + out + list(shape[end:])
        total = self.count(shape)
        known = self.count(full)
        if infer is not None:
            if known == 0 or total % known:
                self.fail(f"cannot infer dim {infer}: {total} elements are not a multiple of {known}")
            full[start + infer] = total // known
        if self.count(full) != total:
            self.fail(f"the new shape {full} holds {self.count(full)} elements, the bottom {list(shape)} {total}")
        return tuple(full)

    def outputs(self, bottoms):
        return [self.target(bottoms)]

    def lower(self, ctx):
        """The final shape (0 copied, -1 inferred) is known from the net model."""
        ctx.reshape(ctx.inputs[0], ctx.top_shapes[0], ctx.outputs[0])


@register("Flatten")
class Flatten(LayerType):
    """Merge axes ``axis`` .. ``end_axis`` into one."""

    def outputs(self, bottoms):
        p = self.lp.flatten_param
        s = tuple(bottoms[0])
        a = self.canonical_axis(p.axis, len(s))
        e = self.canonical_axis(p.end_axis, len(s))
        return [(*s[:a], self.count(s, a, e + 1), *s[e + 1:])]

    def lower(self, ctx):
        ctx.reshape(ctx.inputs[0], ctx.top_shapes[0], ctx.outputs[0])


@register("Tile")
class Tile(LayerType):
    """Repeat the bottom ``tiles`` times along ``axis``."""

    def outputs(self, bottoms):
        p = self.lp.tile_param
        s = list(bottoms[0])
        a = self.canonical_axis(p.axis, len(s))
        if p.tiles <= 0:
            self.fail("tiles must be greater than zero")
        s[a] *= p.tiles
        return [tuple(s)]

    def lower(self, ctx):
        p = self.lp.tile_param
        nd = len(ctx.bottom_shapes[0])
        reps = [1] * nd
        reps[self.canonical_axis(p.axis, nd)] = int(p.tiles)
        ctx.node("Tile", [ctx.inputs[0], ctx.ints(reps, "repeats")], ctx.outputs[0])


@register("Eltwise")
class Eltwise(LayerType):
    """PROD, SUM (with optional coefficients) or MAX of two or more same-shape bottoms."""

    n_bottoms = (2, None)

    def outputs(self, bottoms):
        p = self.lp.eltwise_param
        if len(p.coeff) and len(p.coeff) != len(bottoms):
            self.fail(f"{len(p.coeff)} coefficients for {len(bottoms)} bottoms; give one per bottom")
        if len(p.coeff) and p.operation == _ELTWISE.PROD:  # Caffe rejects them for PROD only; MAX ignores them
            self.fail("coefficients are not allowed with operation PROD")
        for i, b in enumerate(bottoms[1:], 1):
            if tuple(b) != tuple(bottoms[0]):
                self.fail(f"bottom {i} has shape {list(b)}, bottom 0 {list(bottoms[0])}; they must match")
        return [tuple(bottoms[0])]

    def lower(self, ctx):
        """PROD: Mul; SUM: ``sum coeff_i * x_i`` accumulated left to right as Caffe's axpy
        loop does; MAX: Max."""
        p = self.lp.eltwise_param
        xs = list(ctx.inputs)
        if p.operation == _ELTWISE.MAX:
            ctx.node("Max", xs, ctx.outputs[0])
            return
        op = "Mul" if p.operation == _ELTWISE.PROD else "Add"
        if p.operation == _ELTWISE.SUM and len(p.coeff):
            xs = [x if np.float32(c) == 1 else ctx.node("Mul", [x, ctx.scalar(c, "coeff")])
                  for x, c in zip(xs, p.coeff)]
        acc = xs[0]
        for k, x in enumerate(xs[1:], 1):
            acc = ctx.node(op, [acc, x], ctx.outputs[0] if k == len(xs) - 1 else None)


@register("Reduction")
class Reduction(LayerType):
    """SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` on, times ``coeff``."""

    def outputs(self, bottoms):
        s = tuple(bottoms[0])
        a = self.canonical_axis(self.lp.reduction_param.axis, len(s))
        return [s[:a]]

    def lower(self, ctx):
        """Fold to ``[num, dim]`` (dims before / from ``axis``), reduce axis 1, times ``coeff``
        (``coeff / dim`` for MEAN, as Caffe), reshape to the top."""
        p = self.lp.reduction_param
        shape = ctx.bottom_shapes[0]
        a = self.canonical_axis(p.axis, len(shape))
        num, dim = self.count(shape, 0, a), self.count(shape, a)
        ops = {_REDUCTION.SUM: "ReduceSum", _REDUCTION.ASUM: "ReduceL1", _REDUCTION.SUMSQ: "ReduceSumSquare",
               _REDUCTION.MEAN: "ReduceSum"}
        if p.operation not in ops:
            ctx.unsupported(f"unknown reduction operation {p.operation}")
        coeff = np.float32(p.coeff)
        if p.operation == _REDUCTION.MEAN:
            coeff = np.float32(coeff / np.float32(dim))
        x = ctx.reshape(ctx.inputs[0], (num, dim))
        r = ctx.reduce(ops[p.operation], x, [1], keepdims=False)
        if coeff != 1:
            r = ctx.node("Mul", [r, ctx.scalar(coeff, "coeff")])
        ctx.reshape(r, ctx.top_shapes[0], ctx.outputs[0])


@register("ArgMax")
class ArgMax(LayerType):
    """Indices (and optionally values) of the ``top_k`` largest entries, per sample or
    along ``axis``."""

    def outputs(self, bottoms):
        p = self.lp.argmax_param
        s = tuple(bottoms[0])
        if p.top_k < 1:
            self.fail("top_k must be at least 1")
        if p.HasField("axis"):
            a = self.canonical_axis(p.axis, len(s))
            if p.top_k > s[a]:
                self.fail(f"top_k {p.top_k} is larger than axis {a} ({s[a]})")
            out = list(s)
            out[a] = p.top_k
            return [tuple(out)]
        if p.top_k > self.count(s, 1):
            self.fail(f"top_k {p.top_k} is larger than the {self.count(s, 1)} values per sample")
        # Caffe's ArgMaxLayer::Reshape: at least 3 top axes (N, 1 or 2, top_k), so an
        # InnerProduct output (N, K) gives (N, 1, top_k)
        out = [1] * max(3, len(s))
        out[0] = s[0]
        out[2] = p.top_k
        if p.out_max_val:
            out[1] = 2
        return [tuple(out)]

    def lower(self, ctx):
        """TopK (largest, sorted).  With ``axis``: the indices (as float), or the values with
        ``out_max_val``.  Without: per sample over all other axes; with ``out_max_val`` the
        top_k indices then the top_k values.  Ties: Caffe ranks (value, index) pairs, so the
        larger index comes first; TopK puts the smaller first."""
        p = self.lp.argmax_param
        shape = ctx.bottom_shapes[0]
        k = ctx.ints([int(p.top_k)], "k")
        top = ctx.top_shapes[0]
        if p.HasField("axis"):
            a = self.canonical_axis(p.axis, len(shape))
            vals, idx = ctx.node("TopK", [ctx.inputs[0], k], n_outputs=2, axis=a, largest=1, sorted=1)
            if p.out_max_val:
                ctx.node("Identity", [vals], ctx.outputs[0])
            else:
                ctx.node("Cast", [idx], ctx.outputs[0], to=1)
            return
        n = int(shape[0])
        x = ctx.reshape(ctx.inputs[0], (n, self.count(shape, 1)))
        vals, idx = ctx.node("TopK", [x, k], n_outputs=2, axis=1, largest=1, sorted=1)
        fidx = ctx.node("Cast", [idx], to=1)
        if p.out_max_val:
            fidx = ctx.node("Concat", [fidx, vals], axis=1)
        ctx.reshape(fidx, top, ctx.outputs[0])


@register("Softmax")
class Softmax(LayerType):
    """Softmax along ``axis`` (default 1)."""

    def outputs(self, bottoms):
        self.canonical_axis(self.lp.softmax_param.axis, len(bottoms[0]))
        return [tuple(bottoms[0])]

    def lower(self, ctx):
        """Softmax along one axis (opset >= 13 semantics)."""
        axis = self.canonical_axis(self.lp.softmax_param.axis, len(ctx.bottom_shapes[0]))
        ctx.node("Softmax", ctx.inputs, ctx.outputs[0], axis=axis)


@register("Silence")
class Silence(LayerType):
    """Consumes bottoms and produces nothing."""

    n_bottoms = (1, None)
    n_tops = (0, 0)

    opencv_reads = False

    def outputs(self, bottoms):
        return []

    def lower(self, ctx):
        """Nothing to compute; the silenced blobs are simply not outputs."""


@register("BatchReindex")
class BatchReindex(LayerType):
    """Gather samples of bottom 0 by the indices in bottom 1."""

    n_bottoms = (2, 2)

    def outputs(self, bottoms):
        return [(int(bottoms[1][0]), *bottoms[0][1:])]

    def lower(self, ctx):
        idx = ctx.node("Cast", [ctx.inputs[1]], to=7)
        ctx.node("Gather", [ctx.inputs[0], idx], ctx.outputs[0], axis=0)


@register("Filter")
class Filter(LayerType):
    """Keep the samples whose selector (last bottom) is non-zero; at set-up the tops have
    the bottoms' shapes."""

    n_bottoms = (2, None)
    n_tops = (1, None)

    def outputs(self, bottoms):
        if len(self.lp.top) != len(bottoms) - 1:
            self.fail("needs one top per bottom except the selector")
        return [tuple(b) for b in bottoms[:-1]]

    def lower(self, ctx):
        ctx.unsupported("its output size depends on the selector's values; the static shapes of an export "
                        "cannot express it")


@register("Parameter")
class Parameter(LayerType):
    """A learnable blob of ``parameter_param.shape`` exposed as a top (not filled: zeros)."""

    n_bottoms = (0, 0)

    def params(self, bottoms):
        return [self.blob("value", tuple(int(d) for d in self.lp.parameter_param.shape.dim))]

    def outputs(self, bottoms):
        return [tuple(int(d) for d in self.lp.parameter_param.shape.dim)]

    def lower(self, ctx):
        ctx.node("Identity", [ctx.param(0)], ctx.outputs[0])


@register("Im2col")
class Im2col(LayerType):
    """The column buffer of a convolution: ``C * prod(kernel)`` channels."""

    def outputs(self, bottoms):
        p = self.lp.convolution_param
        s = tuple(bottoms[0])
        axis = self.canonical_axis(p.axis, len(s))
        kernel, stride, pad, dilation = spatial_settings(p, len(s) - axis - 1, "im2col")
        out = []
        for i, (k, st, pd, d) in enumerate(zip(kernel, stride, pad, dilation)):
            extent = d * (k - 1) + 1
            out.append((s[axis + 1 + i] + 2 * pd - extent) // st + 1)
        return [(*s[:axis], s[axis] * self.count(kernel), *out)]

    def lower(self, ctx):
        """Caffe's column order is (channel, kernel offsets...): a grouped convolution with
        one group per channel and one-hot kernels produces exactly that."""
        p = self.lp.convolution_param
        s = ctx.bottom_shapes[0]
        axis = self.canonical_axis(p.axis, len(s))
        kernel, stride, pad, dilation = spatial_settings(p, len(s) - axis - 1, "im2col")
        if not kernel:
            ctx.unsupported("im2col without spatial axes")
        c, kk = int(s[axis]), self.count(kernel)
        w = np.zeros((c * kk, 1, *kernel), dtype=np.float32)
        for ch in range(c):
            for j in range(kk):
                w[(ch * kk + j, 0) + np.unravel_index(j, kernel)] = 1
        x = ctx.inputs[0]
        lead = self.count(s, 0, axis)
        if axis != 1:
            x = ctx.reshape(x, (lead, *s[axis:]))
        y = ctx.node("Conv", [x, ctx.const(w, "one_hot")], ctx.outputs[0] if axis == 1 else None,
                     kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2, dilations=list(dilation),
                     group=c)
        if axis != 1:
            ctx.reshape(y, ctx.top_shapes[0], ctx.outputs[0])


@register("LSTMUnit")
class LSTMUnit(LayerType):
    """One LSTM step on (c_prev, gates x, cont): tops c and h, shaped like c_prev."""

    n_bottoms = (3, 3)
    n_tops = (2, 2)

    def outputs(self, bottoms):
        c_prev, x, cont = (tuple(b) for b in bottoms)
        if len(c_prev) != 3 or len(x) != 3 or len(cont) != 2:
            self.fail(f"needs c_prev 1 x N x H, x 1 x N x 4H and cont 1 x N; got {list(c_prev)}, {list(x)}, "
                      f"{list(cont)}")
        if any(b[0] != 1 or b[1] != c_prev[1] for b in (c_prev, x, cont)):
            self.fail(f"every bottom must be 1 x N x ... with N = {c_prev[1]}; got {list(c_prev)}, {list(x)}, "
                      f"{list(cont)}")
        if x[2] != 4 * c_prev[2]:
            self.fail(f"x must hold 4 x {c_prev[2]} gate values per instance, not {x[2]}")
        return [c_prev] * 2

    def sample_input(self, bottom, shape, rng):
        """``cont`` (bottom 2): ones (the sequence goes on)."""
        return np.ones(shape, dtype=np.float32) if bottom == 2 else None

    def lower(self, ctx):
        """Gates (i, f, o, g) = split(x); ``c = cont * sigmoid(f) * c_prev + sigmoid(i) * tanh(g)``,
        ``h = sigmoid(o) * tanh(c)``."""
        c_prev, gates, cont = ctx.inputs
        shape = ctx.bottom_shapes[0]
        h = int(shape[-1])
        cont_view = ctx.reshape(cont, (*ctx.bottom_shapes[2], 1))
        gi, gf, go, gg = ctx.split(gates, [h] * 4, len(ctx.bottom_shapes[1]) - 1)
        i = ctx.node("Sigmoid", [gi])
        f = ctx.node("Mul", [ctx.node("Sigmoid", [gf]), cont_view])
        o = ctx.node("Sigmoid", [go])
        g = ctx.node("Tanh", [gg])
        c = ctx.node("Add", [ctx.node("Mul", [f, c_prev]), ctx.node("Mul", [i, g])], ctx.outputs[0])
        ctx.node("Mul", [o, ctx.node("Tanh", [c])], ctx.outputs[1])
