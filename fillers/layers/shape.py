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

    def _axis(self, nd):
        p = self.lp.concat_param
        return self.canonical_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, nd)

    def forward(self, bottoms, params, ctx):
        return [np.concatenate(bottoms, axis=self._axis(bottoms[0].ndim))]

    backward_reads = ()

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        shapes = ctx.layer.bottom_shapes if ctx.layer is not None else [b.shape for b in bottoms]
        axis = self._axis(len(shapes[0]))
        cuts = np.cumsum([s[axis] for s in shapes])[:-1]
        parts = np.split(top_diffs[0], cuts, axis=axis)
        return [np.ascontiguousarray(d) if pd else None for d, pd in zip(parts, propagate_down)], []


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

    def _axis(self, nd):
        p = self.lp.slice_param
        return self.canonical_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, nd)

    def forward(self, bottoms, params, ctx):
        axis = self._axis(bottoms[0].ndim)
        sizes = [t[axis] for t in self.outputs([bottoms[0].shape])]
        return [np.ascontiguousarray(a) for a in np.split(bottoms[0], np.cumsum(sizes)[:-1], axis=axis)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        return [np.concatenate(top_diffs, axis=self._axis(bottoms[0].ndim))], []


@register("Split")
class Split(LayerType):
    """Copies of one bottom."""

    n_tops = (1, None)

    def outputs(self, bottoms):
        return [tuple(bottoms[0])] * len(self.lp.top)

    def lower(self, ctx):
        for out in ctx.outputs:
            ctx.node("Identity", ctx.inputs, out)

    backward_reads = ()

    def forward(self, bottoms, params, ctx):
        return [bottoms[0]] * len(self.lp.top)

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        d = top_diffs[0]
        for t in top_diffs[1:]:
            d = d + t
        return [d], []


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

    def allow_force_backward(self, i):
        return i == 0  # bottom 1 only gives the size; Caffe writes no diff to it

    def forward(self, bottoms, params, ctx):
        axis, starts = self.crop([b.shape for b in bottoms])
        top = self.outputs([b.shape for b in bottoms])[0]
        return [np.ascontiguousarray(bottoms[0][tuple(slice(s, s + t) for s, t in zip(starts, top))])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None, None], []
        axis, starts = self.crop([b.shape for b in bottoms])
        dx = np.zeros(bottoms[0].shape, dtype=np.float32)
        dx[tuple(slice(s, s + t) for s, t in zip(starts, top_diffs[0].shape))] = top_diffs[0]
        return [dx, None], []


class _View(LayerType):
    """A layer that only gives its bottom's values another shape (its ``outputs``): the
    same values in the same order, forward and backward."""

    def lower(self, ctx):
        """The final shape (Reshape: 0 copied, -1 inferred) is known from the net model."""
        ctx.reshape(ctx.inputs[0], ctx.top_shapes[0], ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        return [bottoms[0].reshape(self.outputs([bottoms[0].shape])[0])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [top_diffs[0].reshape(bottoms[0].shape) if propagate_down[0] else None], []


@register("Reshape")
class Reshape(_View):
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

@register("Flatten")
class Flatten(_View):
    """Merge axes ``axis`` .. ``end_axis`` into one."""

    def outputs(self, bottoms):
        p = self.lp.flatten_param
        s = tuple(bottoms[0])
        a = self.canonical_axis(p.axis, len(s))
        e = self.canonical_axis(p.end_axis, len(s))
        return [(*s[:a], self.count(s, a, e + 1), *s[e + 1:])]


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

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        reps = [1] * x.ndim
        reps[self.canonical_axis(self.lp.tile_param.axis, x.ndim)] = int(self.lp.tile_param.tiles)
        return [np.tile(x, reps)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        x = bottoms[0]
        a = self.canonical_axis(self.lp.tile_param.axis, x.ndim)
        t = int(self.lp.tile_param.tiles)
        d = top_diffs[0].reshape(*x.shape[:a], t, *x.shape[a:])
        return [d.sum(axis=a, dtype=np.float32)], []


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

    def forward(self, bottoms, params, ctx):
        """PROD: the product in bottom order; SUM: ``sum coeff_i x_i``; MAX: Caffe's rule for
        the index kept: bottom 1 wins ties with bottom 0, later bottoms must be strictly
        larger."""
        p = self.lp.eltwise_param
        if p.operation == 0:
            y = bottoms[0] * bottoms[1]
            for b in bottoms[2:]:
                y = y * b
            return [y]
        if p.operation == 1:
            coeff = [np.float32(c) for c in p.coeff] or [np.float32(1)] * len(bottoms)
            y = bottoms[0] * coeff[0] if coeff[0] != 1 else bottoms[0].copy()
            for b, c in zip(bottoms[1:], coeff[1:]):
                y += b * c if c != 1 else b
            return [y]
        a, b = bottoms[0], bottoms[1]
        m = a > b
        y = np.where(m, a, b)
        idx = np.where(m, 0, 1).astype(np.int32)
        for k, b in enumerate(bottoms[2:], 2):
            m = b > y
            y = np.where(m, b, y)
            idx[m] = k
        ctx.cache["argmax"] = idx
        return [y]

    @property
    def backward_reads(self):
        p = self.lp.eltwise_param
        if p.operation == 0:
            return ("bottoms",) if p.stable_prod_grad else ("bottoms", "tops")
        return ()

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.eltwise_param
        dy = top_diffs[0]
        out = []
        for i, pd in enumerate(propagate_down):
            if not pd:
                out.append(None)
                continue
            if p.operation == 0:
                if p.stable_prod_grad:
                    g = None
                    for j, b in enumerate(bottoms):
                        if j != i:
                            g = b.copy() if g is None else g * b
                else:
                    g = tops[0] / bottoms[i]
                out.append(g * dy)
            elif p.operation == 1:
                c = np.float32(p.coeff[i]) if len(p.coeff) else np.float32(1)
                out.append(dy if c == 1 else dy * c)
            else:
                out.append(np.where(ctx.cache["argmax"] == i, dy, np.float32(0)))
        return out, []


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

    def forward(self, bottoms, params, ctx):
        p = self.lp.reduction_param
        x = bottoms[0]
        a = self.canonical_axis(p.axis, x.ndim)
        num, dim = self.count(x.shape, 0, a), self.count(x.shape, a)
        x2 = x.reshape(num, dim)
        if p.operation == 1 or p.operation == 4:
            r = x2.sum(axis=1, dtype=np.float32)
        elif p.operation == 2:
            r = np.abs(x2).sum(axis=1, dtype=np.float32)
        elif p.operation == 3:
            r = (x2 * x2).sum(axis=1, dtype=np.float32)
        else:
            raise ValueError(f"unknown reduction operation {p.operation}")
        coeff = np.float32(p.coeff)
        if p.operation == 4:
            coeff = np.float32(coeff / np.float32(dim))
        return [(r * coeff).reshape(x.shape[:a])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        p = self.lp.reduction_param
        x = bottoms[0]
        a = self.canonical_axis(p.axis, x.ndim)
        num, dim = self.count(x.shape, 0, a), self.count(x.shape, a)
        coeff = np.float32(p.coeff)
        if p.operation == 4:
            coeff = np.float32(coeff / np.float32(dim))
        g = (top_diffs[0].reshape(num, 1) * coeff)
        x2 = x.reshape(num, dim)
        if p.operation in (1, 4):
            d = np.broadcast_to(g, (num, dim)).astype(np.float32)
        elif p.operation == 2:
            d = np.sign(x2) * g
        else:
            d = x2 * np.float32(2) * g
        return [d.reshape(x.shape)], []


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

    has_backward = False  # Caffe: NOT_IMPLEMENTED

    def forward(self, bottoms, params, ctx):
        """Caffe ranks (value, index) pairs descending: among equal values the larger index
        comes first."""
        p = self.lp.argmax_param
        x = bottoms[0]
        k = int(p.top_k)
        top = self.outputs([x.shape])[0]
        if p.HasField("axis"):
            a = self.canonical_axis(p.axis, x.ndim)
            xr = np.flip(x, axis=a)
            order = np.argsort(-xr, axis=a, kind="stable")
            idx = (x.shape[a] - 1 - np.take(order, range(k), axis=a))
            vals = np.take_along_axis(x, idx, axis=a)
            return [vals if p.out_max_val else idx.astype(np.float32)]
        n = x.shape[0]
        x2 = x.reshape(n, -1)
        order = np.argsort(-x2[:, ::-1], axis=1, kind="stable")[:, :k]
        idx = x2.shape[1] - 1 - order
        out = idx.astype(np.float32)
        if p.out_max_val:
            out = np.concatenate([out, np.take_along_axis(x2, idx, axis=1)], axis=1)
        return [out.reshape(top)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [None], []


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

    def forward(self, bottoms, params, ctx):
        a = self.canonical_axis(self.lp.softmax_param.axis, bottoms[0].ndim)
        return [softmax(bottoms[0], a)]

    backward_reads = ("tops",)

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        a = self.canonical_axis(self.lp.softmax_param.axis, tops[0].ndim)
        y, dy = tops[0], top_diffs[0]
        return [(dy - (dy * y).sum(axis=a, keepdims=True, dtype=np.float32)) * y], []


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

    def forward(self, bottoms, params, ctx):
        return []

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        """Caffe writes zeros to the bottoms' diffs."""
        return [np.zeros(b.shape, dtype=np.float32) if pd else None for b, pd in zip(bottoms, propagate_down)], []


@register("BatchReindex")
class BatchReindex(LayerType):
    """Gather samples of bottom 0 by the indices in bottom 1."""

    n_bottoms = (2, 2)

    def outputs(self, bottoms):
        return [(int(bottoms[1][0]), *bottoms[0][1:])]

    def lower(self, ctx):
        idx = ctx.node("Cast", [ctx.inputs[1]], to=7)
        ctx.node("Gather", [ctx.inputs[0], idx], ctx.outputs[0], axis=0)

    def allow_force_backward(self, i):
        return i == 0

    def forward(self, bottoms, params, ctx):
        return [bottoms[0][bottoms[1].astype(np.int64)]]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None, None], []
        dx = np.zeros(bottoms[0].shape, dtype=np.float32)
        np.add.at(dx, bottoms[1].astype(np.int64), top_diffs[0])
        return [dx, None], []


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

    def forward(self, bottoms, params, ctx):
        return [params[0]]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [], [top_diffs[0]]


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

    def forward(self, bottoms, params, ctx):
        from .conv import im2col
        p = self.lp.convolution_param
        x = bottoms[0]
        axis = self.canonical_axis(p.axis, x.ndim)
        kernel, stride, pad, dilation = spatial_settings(p, x.ndim - axis - 1, "im2col")
        top = self.outputs([x.shape])[0]
        lead = self.count(x.shape, 0, axis)
        cols = im2col(x.reshape(lead, *x.shape[axis:]), kernel, stride, pad, dilation, top[axis + 1:])
        return [cols.reshape(top)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        from .conv import col2im
        p = self.lp.convolution_param
        x = bottoms[0]
        axis = self.canonical_axis(p.axis, x.ndim)
        kernel, stride, pad, dilation = spatial_settings(p, x.ndim - axis - 1, "im2col")
        top = tops[0].shape
        lead = self.count(x.shape, 0, axis)
        d = col2im(top_diffs[0].reshape(lead, top[axis], -1), (lead, *x.shape[axis:]), kernel, stride, pad,
                   dilation, top[axis + 1:])
        return [d.reshape(x.shape)], []


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

    def allow_force_backward(self, i):
        return i != 2  # Caffe: no diff for the sequence indicators

    def forward(self, bottoms, params, ctx):
        c_prev, x, cont = bottoms
        c, h, cache = lstm_unit_forward(c_prev, x, cont.reshape(*cont.shape, 1))
        ctx.cache.update(cache)
        return [c, h]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        c_prev, x, cont = bottoms
        dc_prev, dx = lstm_unit_backward(top_diffs[0], top_diffs[1], c_prev, cont.reshape(*cont.shape, 1),
                                         tops[0], ctx.cache)
        return [dc_prev if propagate_down[0] else None, dx if propagate_down[1] else None, None], []


# ---- numpy kernels of the reference engine (fillers.lab) ------------------------------------

def softmax(x, axis):
    """Caffe's softmax along ``axis``: subtract the max, exp, divide by the sum (float32)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True, dtype=np.float32)


def _sigmoid(x):
    return np.float32(0.5) * np.tanh(np.float32(0.5) * x) + np.float32(0.5)


def lstm_unit_forward(c_prev, x, cont):
    """Caffe's LSTMUnit: gates (i, f, o, g) = split(x) on the last axis; ``c = cont * f *
    c_prev + i * g``, ``h = o * tanh(c)``.  ``cont`` broadcasts over the last axis."""
    h = c_prev.shape[-1]
    i = _sigmoid(x[..., :h])
    f = _sigmoid(x[..., h:2 * h])
    o = _sigmoid(x[..., 2 * h:3 * h])
    g = np.tanh(x[..., 3 * h:])
    c = cont * f * c_prev + i * g
    tanh_c = np.tanh(c)
    return c, o * tanh_c, {"i": i, "f": f, "o": o, "g": g, "tanh_c": tanh_c}


def lstm_unit_backward(dc, dh, c_prev, cont, c, cache):
    """Caffe's ``LSTMUnitLayer::Backward_cpu``: (diff of c_prev, diff of the gate input x)."""
    i, f, o, g, tanh_c = cache["i"], cache["f"], cache["o"], cache["g"], cache["tanh_c"]
    one = np.float32(1)
    c_diff = dc + dh * o * (one - tanh_c * tanh_c)
    dc_prev = cont * c_diff * f
    di = c_diff * g
    df = cont * c_diff * c_prev
    do = dh * tanh_c
    dg = c_diff * i
    dx = np.concatenate([di * i * (one - i), df * f * (one - f), do * o * (one - o), dg * (one - g * g)], axis=-1)
    return dc_prev, dx
