"""Layers that move, join, split or reduce blobs without learning anything."""

from __future__ import annotations

from .base import LayerType, ParamBlob, register
from .conv import spatial_settings


@register("Concat")
class Concat(LayerType):
    """Join bottoms along ``axis`` (or the legacy ``concat_dim``)."""

    bottoms = (1, None)

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


@register("Slice")
class Slice(LayerType):
    """Cut a bottom along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s, or into
    equal parts."""

    tops = (1, None)

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


@register("Split")
class Split(LayerType):
    """Copies of one bottom."""

    tops = (1, None)

    def outputs(self, bottoms):
        return [tuple(bottoms[0])] * len(self.lp.top)


@register("Crop")
class Crop(LayerType):
    """Crop bottom 0 to bottom 1's shape on the axes from ``axis`` (default 2), starting
    at ``offset`` (one for all cropped axes, or one per axis)."""

    bottoms = (2, 2)

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


@register("Flatten")
class Flatten(LayerType):
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


@register("Eltwise")
class Eltwise(LayerType):
    """PROD, SUM (with optional coefficients) or MAX of two or more same-shape bottoms."""

    bottoms = (2, None)

    def outputs(self, bottoms):
        p = self.lp.eltwise_param
        if len(p.coeff) and len(p.coeff) != len(bottoms):
            self.fail(f"{len(p.coeff)} coefficients for {len(bottoms)} bottoms; give one per bottom")
        if len(p.coeff) and p.operation != 1:
            self.fail("coefficients are only allowed with operation SUM")
        for i, b in enumerate(bottoms[1:], 1):
            if tuple(b) != tuple(bottoms[0]):
                self.fail(f"bottom {i} has shape {list(b)}, bottom 0 {list(bottoms[0])}; they must match")
        return [tuple(bottoms[0])]


@register("Reduction")
class Reduction(LayerType):
    """SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` on, times ``coeff``."""

    def outputs(self, bottoms):
        s = tuple(bottoms[0])
        a = self.canonical_axis(self.lp.reduction_param.axis, len(s))
        return [s[:a]]


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
        if len(s) < 3:
            self.fail("without axis, ArgMax needs a bottom of at least 3 axes")
        if p.top_k > self.count(s, 1):
            self.fail(f"top_k {p.top_k} is larger than the {self.count(s, 1)} values per sample")
        out = [1] * len(s)
        out[0] = s[0]
        out[2] = p.top_k
        if p.out_max_val:
            out[1] = 2
        return [tuple(out)]


@register("Softmax")
class Softmax(LayerType):
    """Softmax along ``axis`` (default 1)."""

    def outputs(self, bottoms):
        self.canonical_axis(self.lp.softmax_param.axis, len(bottoms[0]))
        return [tuple(bottoms[0])]


@register("Silence")
class Silence(LayerType):
    """Consumes bottoms and produces nothing."""

    bottoms = (1, None)
    tops = (0, 0)

    def outputs(self, bottoms):
        return []


@register("BatchReindex")
class BatchReindex(LayerType):
    """Gather samples of bottom 0 by the indices in bottom 1."""

    bottoms = (2, 2)

    def outputs(self, bottoms):
        return [(int(bottoms[1][0]), *bottoms[0][1:])]


@register("Filter")
class Filter(LayerType):
    """Keep the samples whose selector (last bottom) is non-zero; at set-up the tops have
    the bottoms' shapes."""

    bottoms = (2, None)
    tops = (1, None)

    def outputs(self, bottoms):
        if len(self.lp.top) != len(bottoms) - 1:
            self.fail("needs one top per bottom except the selector")
        return [tuple(b) for b in bottoms[:-1]]


@register("Parameter")
class Parameter(LayerType):
    """A learnable blob of ``parameter_param.shape`` exposed as a top (not filled: zeros)."""

    bottoms = (0, 0)

    def params(self, bottoms):
        return [ParamBlob("value", tuple(int(d) for d in self.lp.parameter_param.shape.dim))]

    def outputs(self, bottoms):
        return [tuple(int(d) for d in self.lp.parameter_param.shape.dim)]


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


@register("LSTMUnit")
class LSTMUnit(LayerType):
    """One LSTM step on (c_prev, gates x, cont): tops c and h, shaped like c_prev."""

    bottoms = (3, 3)
    tops = (2, 2)

    def outputs(self, bottoms):
        return [tuple(bottoms[0])] * 2
