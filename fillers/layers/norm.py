"""Normalisation and affine layers: BatchNorm, LRN, MVN, Scale, Bias."""

from __future__ import annotations

import numpy as np

from .base import OTHER, LayerType, register


def _channel_view(shape):
    """The shape a per-channel ``[C]`` vector takes to broadcast over ``shape`` (axis 1)."""
    nd = len(shape)
    if nd < 2:
        return (1,)
    return (int(shape[1]),) + (1,) * (nd - 2)


def _span_view(span, axis, nd):
    """A blob covering axes ``[axis, axis + len(span))`` of an ``nd``-axis bottom, shaped to
    broadcast (numpy rules: trailing ones; leading axes broadcast by themselves)."""
    span = tuple(int(d) for d in span)
    if not span:
        return ()
    return span + (1,) * (nd - axis - len(span))


@register("BatchNorm")
class BatchNorm(LayerType):
    """Caffe's BatchNorm: blobs mean ``[C]``, variance ``[C]`` and the moving-average
    scale factor ``[1]``, all set to 0 without drawing random numbers.  At inference
    ``y = (x - mean/f) / sqrt(var/f + eps)`` with ``f = 0`` read as 0 (so a fresh layer
    computes ``x / sqrt(eps)``)."""

    def params(self, bottoms):
        shape = bottoms[0]
        c = int(shape[1]) if len(shape) > 1 else 1
        return [self.blob("mean", (c,)), self.blob("variance", (c,)), self.blob("scale_factor", (1,))]

    @classmethod
    def upgrade(cls, lp):
        """Caffe drops the three old ``param { lr_mult: 0 }`` entries of BatchNorm layers."""
        if len(lp.param) == 3:
            del lp.param[:]

    def fresh_params(self, arrays, mode):
        """Fresh statistics are mean 0, variance 0, factor 0 (Caffe); ``identity`` gives
        mean 0, variance 1, factor 1 instead."""
        if mode == "identity":
            return [np.zeros_like(arrays[0]), np.ones_like(arrays[1]), np.ones_like(arrays[2])], None
        if not self.use_global_stats():  # normalizes with each batch's own statistics
            return None, None
        return None, ("fresh statistics (mean 0, variance 0, factor 0): at inference Caffe multiplies their "
                      "input by 1/sqrt(eps) (316x at eps 1e-5); use --batchnorm identity for mean 0, variance 1")

    def overflow_hint(self, arrays):
        if len(arrays) >= 3 and float(np.asarray(arrays[2]).ravel()[0]) == 0.0:
            return ("a scale factor of 0 (fresh statistics: mean 0, variance 0), so each multiplies by "
                    "1/sqrt(eps) (316 at eps 1e-5): use --batchnorm identity (mean 0, variance 1) for usable outputs")
        return None

    def use_global_stats(self) -> bool:
        """Caffe: ``use_global_stats`` defaults to ``phase == TEST``; an export is inference,
        so only an explicit ``use_global_stats: false`` selects batch statistics."""
        p = self.lp.batch_norm_param
        return bool(p.use_global_stats) if p.HasField("use_global_stats") else True

    def lower(self, ctx):
        """Global statistics: ``f = blob2[0]``, ``s = 0 if f == 0 else 1 / f``; Caffe computes
        ``(x - mean * s) / sqrt(var * s + eps)`` in float32: the two per-channel constants
        are derived the same way here, then Sub and Div.  Batch statistics (explicit
        ``use_global_stats: false``): mean and population variance over every axis but 1."""
        shape = ctx.bottom_shapes[0]
        nd = len(shape)
        eps = np.float32(self.lp.batch_norm_param.eps)
        view = _channel_view(shape)
        x = ctx.inputs[0]
        if self.use_global_stats():
            mean, var, factor = (np.asarray(a, dtype=np.float32) for a in ctx.params)
            f = np.float32(factor.ravel()[0])
            scale = np.float32(0) if f == 0 else np.float32(np.float32(1) / f)
            m = (mean * scale).astype(np.float32)
            d = np.sqrt((var * scale).astype(np.float32) + eps).astype(np.float32)
            xc = ctx.node("Sub", [x, ctx.const(m.reshape(view), "mean")])
            ctx.node("Div", [xc, ctx.const(d.reshape(view), "std")], ctx.outputs[0])
            return
        ctx.warn("use_global_stats is false: exported with batch statistics, as Caffe computes them")
        axes = [0] + list(range(2, nd))
        mean = ctx.reduce("ReduceMean", x, axes)
        xc = ctx.node("Sub", [x, mean])
        var = ctx.reduce("ReduceMean", ctx.node("Mul", [xc, xc]), axes)
        d = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar(eps, "eps")])])
        ctx.node("Div", [xc, d], ctx.outputs[0])

    backward_reads = ("tops",)

    def _batch_stats(self, ctx) -> bool:
        p = self.lp.batch_norm_param
        return not (bool(p.use_global_stats) if p.HasField("use_global_stats") else not ctx.train)

    def forward(self, bottoms, params, ctx):
        """Global statistics (TEST, or ``use_global_stats``): ``(x - mean/f) / sqrt(var/f + eps)``;
        batch statistics (TRAIN): mean and population variance over every axis but 1; the
        moving averages Caffe would store are left in ``ctx.cache["running"]``."""
        x = bottoms[0]
        nd = x.ndim
        c = x.shape[1] if nd > 1 else 1
        view = (1, c) + (1,) * (nd - 2) if nd > 1 else (1,)
        eps = np.float32(self.lp.batch_norm_param.eps)
        if not self._batch_stats(ctx):
            f = np.float32(params[2].ravel()[0])
            s = np.float32(0) if f == 0 else np.float32(np.float32(1) / f)
            mean, var = params[0] * s, params[1] * s
            xc = x - mean.reshape(view)
        else:
            axes = tuple(i for i in range(nd) if i != 1)
            m = x.size // c
            mean = (x.sum(axis=axes, dtype=np.float32) / np.float32(m)).astype(np.float32)
            xc = x - mean.reshape(view)
            var = ((xc * xc).sum(axis=axes, dtype=np.float32) / np.float32(m)).astype(np.float32)
            maf = np.float32(self.lp.batch_norm_param.moving_average_fraction)
            corr = np.float32(m / (m - 1)) if m > 1 else np.float32(1)
            ctx.cache["running"] = [mean + maf * params[0], corr * var + maf * params[1],
                                    params[2] * maf + np.float32(1)]
        std = np.sqrt(var + eps).astype(np.float32)
        ctx.cache["std"] = std
        if xc is x:
            xc = x.copy()
        np.divide(xc, std.reshape(view), out=xc)
        return [xc]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], [None, None, None]
        dy, y = top_diffs[0], tops[0]
        nd = y.ndim
        c = y.shape[1] if nd > 1 else 1
        view = (1, c) + (1,) * (nd - 2) if nd > 1 else (1,)
        std = ctx.cache["std"].reshape(view)
        if not self._batch_stats(ctx):
            return [dy / std], [None, None, None]
        axes = tuple(i for i in range(nd) if i != 1)
        m = np.float32(y.size // c)
        mean_dy = (dy.sum(axis=axes, dtype=np.float32) / m).reshape(view)
        mean_dyy = ((dy * y).sum(axis=axes, dtype=np.float32) / m).reshape(view)
        return [(dy - mean_dy - mean_dyy * y) / std], [None, None, None]


def _axis_span(layer, shape, axis, num_axes, what):
    axis = layer.canonical_axis(axis, len(shape))
    if num_axes < -1:
        layer.fail("num_axes must be non-negative, or -1 to extend to the end of the bottom")
    if num_axes >= 0 and len(shape) < axis + num_axes:
        layer.fail(f"{what} blob's axes (axis {axis} + num_axes {num_axes}) exceed the bottom's {len(shape)} axes")
    end = len(shape) if num_axes == -1 else axis + num_axes
    return axis, tuple(shape[axis:end])


def _same_as_first(layer, bottoms, axis, what):
    """Tops of Scale/Bias: bottom 0's shape; a second bottom must match bottom 0's dims
    from ``axis`` on."""
    if len(bottoms) == 2:
        axis = layer.canonical_axis(axis, len(bottoms[0]))
        s = tuple(bottoms[1])
        if tuple(bottoms[0][axis:axis + len(s)]) != s:
            layer.fail(f"the {what} bottom's shape {list(s)} does not match the first bottom's "
                       f"shape {list(bottoms[0])} from axis {axis}")
    return [tuple(bottoms[0])]


def _operand(layer, ctx, axis, num_axes, what, index):
    """The ONNX tensor that Scale/Bias apply: parameter blob ``index``, or bottom 1, shaped
    to broadcast against bottom 0 from ``axis``."""
    shape = ctx.bottom_shapes[0]
    nd = len(shape)
    if len(ctx.inputs) == 1:
        a, span = _axis_span(layer, shape, axis, num_axes, what)
        return ctx.param(index, _span_view(span, a, nd))
    span = ctx.bottom_shapes[1]
    a = 0 if not span else layer.canonical_axis(axis, nd)
    view = _span_view(span, a, nd)
    return ctx.inputs[1] if view == tuple(span) else ctx.reshape(ctx.inputs[1], view)


@register("Scale")
class Scale(LayerType):
    """y = x * scale (+ bias), the scale broadcast from ``axis`` over ``num_axes`` axes;
    with two bottoms the second is the scale and the layer learns no scale blob.
    Default fillers: scale constant 1, bias constant 0."""

    n_bottoms = (1, 2)
    #: the scale is a gain and the bias a shift of a normalized signal, not a layer's
    #: weight and bias: ``--filler``/``--bias-filler`` leave them to the layer's fillers
    roles = {"scale": OTHER, "bias": OTHER}

    def params(self, bottoms):
        p = self.lp.scale_param
        blobs = []
        if len(bottoms) == 1:
            _, shape = _axis_span(self, bottoms[0], p.axis, p.num_axes, "the scale")
            blobs.append(self.blob("scale", shape, self.filler(p, "filler", {"type": "constant", "value": 1.0})))
        if p.bias_term:
            n = len(bottoms[1]) if len(bottoms) > 1 else p.num_axes
            _, bshape = _axis_span(self, bottoms[0], p.axis, n, "the bias")
            blobs.append(self.blob("bias", bshape, self.filler(p, "bias_filler")))
        return blobs

    def outputs(self, bottoms):
        return _same_as_first(self, bottoms, self.lp.scale_param.axis, "scale")

    def lower(self, ctx):
        """Mul by the scale (a blob, or bottom 1) shaped to broadcast from ``axis``; Add the
        bias likewise."""
        p = self.lp.scale_param
        scale = _operand(self, ctx, p.axis, p.num_axes, "the scale", 0)
        if not p.bias_term:
            ctx.node("Mul", [ctx.inputs[0], scale], ctx.outputs[0])
            return
        y = ctx.node("Mul", [ctx.inputs[0], scale])
        shape = ctx.bottom_shapes[0]
        n = len(ctx.bottom_shapes[1]) if len(ctx.inputs) > 1 else p.num_axes
        baxis, bspan = _axis_span(self, shape, p.axis, n, "the bias")
        bias = ctx.param(len(ctx.params) - 1, _span_view(bspan, baxis, len(shape)))
        ctx.node("Add", [y, bias], ctx.outputs[0])

    backward_reads = ("bottoms",)

    def forward(self, bottoms, params, ctx):
        p = self.lp.scale_param
        x = bottoms[0]
        view, _ = _affine_geometry(self, x.shape, bottoms, p.axis, p.num_axes, "the scale")
        s = (params[0] if len(bottoms) == 1 else bottoms[1]).reshape(view)
        y = x * s
        if p.bias_term:
            n = bottoms[1].ndim if len(bottoms) > 1 else p.num_axes
            baxis, bspan = _axis_span(self, x.shape, p.axis, n, "the bias")
            y += params[-1].reshape(_bcast(bspan, baxis, x.ndim)[0])
        return [y]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.scale_param
        x, dy = bottoms[0], top_diffs[0]
        view, other = _affine_geometry(self, x.shape, bottoms, p.axis, p.num_axes, "the scale")
        s = params[0] if len(bottoms) == 1 else bottoms[1]
        want = ctx.param_propagate or [True] * len(params)
        pd = []
        ds = None
        if len(bottoms) == 1 and want[0] or len(bottoms) > 1 and propagate_down[1]:
            ds = _sum_to(dy * x, other, s.shape)
        if len(bottoms) == 1:
            pd.append(ds)
        if p.bias_term:
            n = bottoms[1].ndim if len(bottoms) > 1 else p.num_axes
            baxis, bspan = _axis_span(self, x.shape, p.axis, n, "the bias")
            bview, bother = _bcast(bspan, baxis, x.ndim)
            pd.append(_sum_to(dy, bother, params[-1].shape) if want[-1] else None)
        dx = dy * s.reshape(view) if propagate_down[0] else None
        bd = [dx] + ([ds] if len(bottoms) > 1 else [])
        return bd, pd


@register("Bias")
class Bias(LayerType):
    """y = x + bias, broadcast from ``axis`` over ``num_axes`` axes (a second bottom gives
    the bias).  Default filler: constant 0."""

    n_bottoms = (1, 2)

    def params(self, bottoms):
        if len(bottoms) == 2:
            return []
        p = self.lp.bias_param
        _, shape = _axis_span(self, bottoms[0], p.axis, p.num_axes, "the bias")
        return [self.blob("bias", shape, self.filler(p, "filler"))]

    def outputs(self, bottoms):
        return _same_as_first(self, bottoms, self.lp.bias_param.axis, "bias")

    def lower(self, ctx):
        """Add the bias (a blob, or bottom 1) shaped to broadcast from ``axis``."""
        p = self.lp.bias_param
        bias = _operand(self, ctx, p.axis, p.num_axes, "the bias", 0)
        ctx.node("Add", [ctx.inputs[0], bias], ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        p = self.lp.bias_param
        x = bottoms[0]
        view, _ = _affine_geometry(self, x.shape, bottoms, p.axis, p.num_axes, "the bias")
        b = params[0] if len(bottoms) == 1 else bottoms[1]
        return [x + b.reshape(view)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.bias_param
        x, dy = bottoms[0], top_diffs[0]
        view, other = _affine_geometry(self, x.shape, bottoms, p.axis, p.num_axes, "the bias")
        shape = params[0].shape if len(bottoms) == 1 else bottoms[1].shape
        db = _sum_to(dy, other, shape)
        bd = [dy if propagate_down[0] else None]
        if len(bottoms) > 1:
            return bd + [db if propagate_down[1] else None], []
        return bd, [db]


@register("LRN")
class LRN(LayerType):
    """Local response normalisation, ACROSS_CHANNELS or WITHIN_CHANNEL (4-d bottoms)."""

    def outputs(self, bottoms):
        p = self.lp.lrn_param
        if len(bottoms[0]) != 4:
            self.fail("LRN needs a 4-d bottom")
        if p.local_size % 2 == 0:
            self.fail("local_size must be odd")
        return [tuple(bottoms[0])]

    def opencv_caveat(self):
        p = self.lp.lrn_param
        if p.norm_region == p.ACROSS_CHANNELS and float(p.k) != 1.0:
            return f"OpenCV's Caffe importer ignores LRN's k (here {float(p.k):g})"
        return None

    def lower(self, ctx):
        """ACROSS_CHANNELS: ONNX LRN is Caffe's formula (``k + alpha/size * sum x^2``)^-beta.
        WITHIN_CHANNEL: Caffe builds it from layers: ``x * (1 + alpha * avg)^-beta`` with
        ``avg`` the AVE pooling of x^2 (size x size, pad (size-1)/2, stride 1), whose
        windows never pass the padded edge, so the divisor is always size^2 and ``k`` is not
        used.  AveragePool(count_include_pad=1) gives exactly that average."""
        p = self.lp.lrn_param
        size = int(p.local_size)
        alpha, beta, k = float(p.alpha), float(p.beta), float(p.k)
        x = ctx.inputs[0]
        if p.norm_region == p.ACROSS_CHANNELS:
            ctx.node("LRN", [x], ctx.outputs[0], size=size, alpha=alpha, beta=beta, bias=k)
            return
        pre = (size - 1) // 2
        sq = ctx.node("Mul", [x, x])
        avg = ctx.node("AveragePool", [sq], kernel_shape=[size, size], strides=[1, 1], pads=[pre] * 4,
                       count_include_pad=1)
        base = ctx.node("Add", [ctx.node("Mul", [avg, ctx.scalar(alpha, "alpha")]), ctx.scalar(1.0, "one")])
        scale = ctx.node("Pow", [base, ctx.scalar(-beta, "neg_beta")])
        ctx.node("Mul", [x, scale], ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        """ACROSS_CHANNELS: ``scale = k + alpha / size * sum x^2`` over ``size`` channels
        (zero-padded), ``y = x * scale^-beta``.  WITHIN_CHANNEL: Caffe's inner net,
        ``y = x * (1 + alpha * avg(x^2))^-beta`` with the size x size AVE pooling."""
        p = self.lp.lrn_param
        x = bottoms[0]
        size = int(p.local_size)
        alpha, beta = np.float32(p.alpha), np.float32(p.beta)
        if p.norm_region == 0:
            scale = _channel_window_sum(x * x, size) * np.float32(alpha / size) + np.float32(p.k)
        else:
            from .pool import AVE, pool_forward
            pre = (size - 1) // 2
            avg, _ = pool_forward(x * x, AVE, (size, size), (1, 1), (pre, pre), x.shape[2:])
            scale = avg * alpha + np.float32(1)
        ctx.cache["scale"] = scale
        return [x * np.power(scale, -beta)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        p = self.lp.lrn_param
        x, y, dy = bottoms[0], tops[0], top_diffs[0]
        size = int(p.local_size)
        alpha, beta = np.float32(p.alpha), np.float32(p.beta)
        scale = ctx.cache["scale"]
        if p.norm_region == 0:
            ratio = _channel_window_sum(dy * y / scale, size)
            return [dy * np.power(scale, -beta) - np.float32(2 * alpha * beta / size) * x * ratio], []
        from .pool import AVE, pool_backward
        pre = (size - 1) // 2
        g = dy * x * (-beta * alpha) * np.power(scale, -beta - np.float32(1))
        dsq = pool_backward(g, x.shape, AVE, (size, size), (1, 1), (pre, pre), x.shape[2:],
                            {"divisor": np.full(x.shape[2:], np.float32(size * size))})
        return [dy * np.power(scale, -beta) + np.float32(2) * x * dsq], []


@register("MVN")
class MVN(LayerType):
    """Mean (and variance) normalisation per sample (and per channel unless across_channels).

    Caffe's MVNLayer::Reshape shapes the top through the legacy accessors ``num()``,
    ``channels()``, ``height()``, ``width()``: the top always has 4 axes (missing ones are 1,
    so an ``(N, C)`` bottom gives ``(N, C, 1, 1)``), and a bottom of more than 4 axes is
    rejected."""

    def outputs(self, bottoms):
        s = tuple(bottoms[0])
        if len(s) > 4:
            self.fail(f"MVN reads its bottom as (num, channels, height, width); {len(s)} axes are too many")
        return [s + (1,) * (4 - len(s))]

    def lower(self, ctx):
        """Caffe: ``x - mean``; with normalize_variance, divided by ``sqrt(var) + eps`` (eps
        added to the standard deviation), var the population variance; over H and W, and C
        too with across_channels (on the bottom viewed as 4-d)."""
        p = self.lp.mvn_param
        shape = ctx.top_shapes[0]
        nd = len(shape)
        axes = list(range(1 if p.across_channels else 2, nd))
        x = ctx.inputs[0]
        if tuple(ctx.bottom_shapes[0]) != tuple(shape):
            x = ctx.reshape(x, shape)
        mean = ctx.reduce("ReduceMean", x, axes)
        if not p.normalize_variance:
            ctx.node("Sub", [x, mean], ctx.outputs[0])
            return
        xc = ctx.node("Sub", [x, mean])
        var = ctx.reduce("ReduceMean", ctx.node("Mul", [xc, xc]), axes)
        std = ctx.node("Add", [ctx.node("Sqrt", [var]), ctx.scalar(np.float32(p.eps), "eps")])
        ctx.node("Div", [xc, std], ctx.outputs[0])

    def _axes(self, nd):
        return tuple(range(1 if self.lp.mvn_param.across_channels else 2, nd))

    def forward(self, bottoms, params, ctx):
        p = self.lp.mvn_param
        shape = self.outputs([bottoms[0].shape])[0]
        x = bottoms[0].reshape(shape)
        axes = self._axes(len(shape))
        dim = np.float32(self.count(shape, axes[0]) if axes else 1)
        xc = x - x.sum(axis=axes, keepdims=True, dtype=np.float32) / dim
        if not p.normalize_variance:
            return [xc]
        std = np.sqrt((xc * xc).sum(axis=axes, keepdims=True, dtype=np.float32) / dim) + np.float32(p.eps)
        ctx.cache["std"] = std
        return [xc / std]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        p = self.lp.mvn_param
        y, dy = tops[0], top_diffs[0]
        axes = self._axes(y.ndim)
        dim = np.float32(self.count(y.shape, axes[0]) if axes else 1)
        if not p.normalize_variance:
            dx = dy - dy.sum(axis=axes, keepdims=True, dtype=np.float32) / dim
        else:
            s = y * (y * dy).sum(axis=axes, keepdims=True, dtype=np.float32) \
                + dy.sum(axis=axes, keepdims=True, dtype=np.float32)
            dx = (dy - s / dim) / ctx.cache["std"]
        return [dx.reshape(bottoms[0].shape)], []


def _bcast(span, axis, nd):
    """Shape of a blob covering axes ``[axis, axis + len(span))`` of an ``nd``-axis array,
    with ones elsewhere (broadcasts both ways), and the axes it does not cover."""
    span = tuple(int(d) for d in span)
    view = (1,) * axis + span + (1,) * (nd - axis - len(span))
    other = tuple(i for i in range(nd) if not axis <= i < axis + len(span))
    return view, other


def _affine_geometry(layer, x_shape, bottoms, axis, num_axes, what):
    """(view shape, reduced axes) of the scale/bias operand of Scale/Bias."""
    nd = len(x_shape)
    if len(bottoms) > 1:
        span = tuple(bottoms[1].shape)
        a = 0 if not span else layer.canonical_axis(axis, nd)
    else:
        a, span = _axis_span(layer, x_shape, axis, num_axes, what)
    return _bcast(span, a, nd)


def _sum_to(d, other, shape):
    return (d.sum(axis=other, dtype=np.float32) if other else d).reshape(shape)


__all__ = ["BatchNorm", "Scale", "Bias", "LRN", "MVN"]


def _channel_window_sum(a, size):
    """Sum of ``a`` (N, C, H, W) over the ``size`` channels centred on each channel (zero
    outside), Caffe's LRN window (pre_pad = (size - 1) / 2)."""
    pre = (size - 1) // 2
    c = a.shape[1]
    cs = np.zeros((a.shape[0], c + 1) + a.shape[2:], dtype=np.float64)
    np.cumsum(a, axis=1, dtype=np.float64, out=cs[:, 1:])
    hi = np.minimum(np.arange(c) + (size - pre), c)
    lo = np.maximum(np.arange(c) - pre, 0)
    return (cs[:, hi] - cs[:, lo]).astype(np.float32)
