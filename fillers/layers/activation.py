"""Element-wise layers: activations, Power/Exp/Log, Dropout, PReLU.

Each type states its ONNX lowering next to Caffe's formula (from Caffe's
``<type>_layer.cpp``, ``Forward_cpu``).  Constants that Caffe derives in ``LayerSetUp`` are
derived here the same way, in float32.
"""

from __future__ import annotations

import numpy as np

from .base import LayerType, register

f32 = np.float32


class Elementwise(LayerType):
    """One bottom, one top of the same shape, no parameters."""


@register("ReLU")
class ReLU(Elementwise):
    """``max(x, 0) + negative_slope * min(x, 0)`` -> Relu, or LeakyRelu(alpha=negative_slope)."""

    def lower(self, ctx):
        slope = float(self.lp.relu_param.negative_slope)
        if slope == 0.0:
            ctx.node("Relu", ctx.inputs, ctx.outputs[0])
        else:
            ctx.node("LeakyRelu", ctx.inputs, ctx.outputs[0], alpha=slope)

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        slope = f32(self.lp.relu_param.negative_slope)
        if slope == 0:
            return [np.maximum(x, f32(0))]
        return [np.where(x > 0, x, x * slope)]

    @property
    def backward_reads(self):
        """Caffe's in-place ReLU tests the top (y > 0 iff x > 0 for a slope >= 0)."""
        return ("tops",) if self.lp.relu_param.negative_slope >= 0 else ("bottoms",)

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        slope = f32(self.lp.relu_param.negative_slope)
        x, dy = (tops[0] if slope >= 0 else bottoms[0]), top_diffs[0]
        return [np.where(x > 0, dy, dy * slope if slope != 0 else f32(0))], []


@register("ELU")
class ELU(Elementwise):
    """``max(x, 0) + alpha * (exp(min(x, 0)) - 1)`` -> Elu(alpha)."""

    def lower(self, ctx):
        ctx.node("Elu", ctx.inputs, ctx.outputs[0], alpha=float(self.lp.elu_param.alpha))

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        alpha = f32(self.lp.elu_param.alpha)
        return [np.maximum(x, f32(0)) + alpha * (np.exp(np.minimum(x, f32(0))) - f32(1))]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        x, y, dy = bottoms[0], tops[0], top_diffs[0]
        alpha = f32(self.lp.elu_param.alpha)
        return [np.where(x > 0, dy, dy * (alpha + y))], []


@register("Sigmoid")
class Sigmoid(Elementwise):
    """``1 / (1 + exp(-x))`` -> Sigmoid."""

    backward_reads = ("tops",)

    def lower(self, ctx):
        ctx.node("Sigmoid", ctx.inputs, ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        return [_sigmoid(bottoms[0])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        y = tops[0]
        return [top_diffs[0] * y * (f32(1) - y)], []


@register("TanH")
class TanH(Elementwise):
    """``tanh(x)`` -> Tanh."""

    backward_reads = ("tops",)

    def lower(self, ctx):
        ctx.node("Tanh", ctx.inputs, ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        return [np.tanh(bottoms[0])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        y = tops[0]
        return [top_diffs[0] * (f32(1) - y * y)], []


@register("AbsVal")
class AbsVal(Elementwise):
    """``|x|`` -> Abs."""

    def lower(self, ctx):
        ctx.node("Abs", ctx.inputs, ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        return [np.abs(bottoms[0])]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        return [top_diffs[0] * np.sign(bottoms[0])], []


@register("BNLL")
class BNLL(Elementwise):
    """``log(1 + exp(x))`` (Caffe's stable form ``x + log(1 + exp(-x))`` for x > 0) -> Softplus."""

    def lower(self, ctx):
        ctx.node("Softplus", ctx.inputs, ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        return [np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, f32(0)))))]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        e = np.exp(np.minimum(bottoms[0], f32(50)))  # Caffe's kBNLL_THRESHOLD
        return [top_diffs[0] * e / (e + f32(1))], []


@register("Power")
class Power(Elementwise):
    """``(shift + scale * x) ^ power``; when ``power * scale == 0`` Caffe writes the constant
    ``1`` (power 0) or ``shift ^ power`` without reading x."""

    def lower(self, ctx):
        p = self.lp.power_param
        power, scale, shift = f32(p.power), f32(p.scale), f32(p.shift)
        shape = ctx.top_shapes[0]
        if power * scale == 0:
            value = f32(1) if power == 0 else f32(np.power(shift, power))
            ctx.node("Expand", [ctx.scalar(value, "value"), ctx.ints(shape, "shape")], ctx.outputs[0])
            return
        steps = []
        if scale != 1:
            steps.append(("Mul", scale))
        if shift != 0:
            steps.append(("Add", shift))
        if power != 1:
            steps.append(("Pow", power))
        _chain(ctx, ctx.inputs[0], steps)

    def forward(self, bottoms, params, ctx):
        p = self.lp.power_param
        power, scale, shift = f32(p.power), f32(p.scale), f32(p.shift)
        x = bottoms[0]
        if power * scale == 0:
            value = f32(1) if power == 0 else f32(np.power(shift, power))
            return [np.full(x.shape, value, dtype=np.float32)]
        y = x * scale if scale != 1 else x
        if shift != 0:
            y = y + shift
        if power != 1:
            y = np.power(y, power)
        return [y]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        """Caffe: dy/dx = power * scale * (shift + scale x)^(power - 1), computed as
        ``diff_scale * y / (shift + scale x)`` (and its special cases)."""
        if not propagate_down[0]:
            return [None], []
        p = self.lp.power_param
        power, scale, shift = f32(p.power), f32(p.scale), f32(p.shift)
        ds = f32(power * scale)
        x, y, dy = bottoms[0], tops[0], top_diffs[0]
        if ds == 0:
            return [np.zeros_like(x)], []
        if power == 1:
            return [dy * ds], []
        if power == 2:
            g = x * f32(ds * scale)
            if shift != 0:
                g = g + f32(ds * shift)
        elif shift == 0:
            g = y / x * power
        else:
            g = y / (x * scale + shift) * ds
        return [dy * g], []


def _chain(ctx, x, steps):
    """Apply ``[(op, scalar)]`` in order, the last writing the layer's top."""
    if not steps:
        ctx.node("Identity", [x], ctx.outputs[0])
        return
    for k, (op, value) in enumerate(steps):
        out = ctx.outputs[0] if k == len(steps) - 1 else None
        x = ctx.node(op, [x, ctx.scalar(value, op.lower())], out)


@register("Exp")
class Exp(Elementwise):
    """``base ^ (shift + scale * x)`` (base -1: e), computed as Caffe does:
    ``outer * exp(inner * x)`` with ``inner = log(base) * scale``, ``outer = base ^ shift``."""

    def lower(self, ctx):
        p = self.lp.exp_param
        base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
        if base != -1 and base <= 0:
            ctx.unsupported(f"base {base} must be strictly positive (or -1 for e)")
        log_base = f32(1) if base == -1 else f32(np.log(base))
        inner = f32(log_base * scale)
        outer = f32(1) if shift == 0 else (f32(np.power(base, shift)) if base != -1 else f32(np.exp(shift)))
        x = ctx.inputs[0]
        if inner != 1:
            x = ctx.node("Mul", [x, ctx.scalar(inner, "inner_scale")])
        if outer != 1:
            x = ctx.node("Exp", [x])
            ctx.node("Mul", [x, ctx.scalar(outer, "outer_scale")], ctx.outputs[0])
        else:
            ctx.node("Exp", [x], ctx.outputs[0])

    def _scales(self):
        p = self.lp.exp_param
        base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
        log_base = f32(1) if base == -1 else f32(np.log(base))
        inner = f32(log_base * scale)
        outer = f32(1) if shift == 0 else (f32(np.power(base, shift)) if base != -1 else f32(np.exp(shift)))
        return inner, outer

    def forward(self, bottoms, params, ctx):
        inner, outer = self._scales()
        x = bottoms[0]
        y = np.exp(x * inner if inner != 1 else x)
        return [y * outer if outer != 1 else y]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        inner, _ = self._scales()
        d = tops[0] * top_diffs[0]
        return [d * inner if inner != 1 else d], []


@register("Log")
class Log(Elementwise):
    """``log_base(shift + scale * x)`` (base -1: e): ``log(shift + scale * x) / log(base)``."""

    def lower(self, ctx):
        p = self.lp.log_param
        base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
        if base != -1 and base <= 0:
            ctx.unsupported(f"base {base} must be strictly positive (or -1 for e)")
        log_base = f32(1) if base == -1 else f32(np.log(base))
        base_scale = f32(f32(1) / log_base)
        x = ctx.inputs[0]
        if scale != 1:
            x = ctx.node("Mul", [x, ctx.scalar(scale, "scale")])
        if shift != 0:
            x = ctx.node("Add", [x, ctx.scalar(shift, "shift")])
        if base_scale != 1:
            x = ctx.node("Log", [x])
            ctx.node("Mul", [x, ctx.scalar(base_scale, "base_scale")], ctx.outputs[0])
        else:
            ctx.node("Log", [x], ctx.outputs[0])

    def _scales(self):
        p = self.lp.log_param
        base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
        log_base = f32(1) if base == -1 else f32(np.log(base))
        return scale, shift, f32(f32(1) / log_base)

    def _inner(self, x):
        """``shift + scale * x`` in float32, in Caffe's order."""
        scale, shift, _ = self._scales()
        if scale != 1:
            x = x * scale
        return x + shift if shift != 0 else x

    def forward(self, bottoms, params, ctx):
        base_scale = self._scales()[2]
        y = np.log(self._inner(bottoms[0]))
        return [y * base_scale if base_scale != 1 else y]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        scale, shift, base_scale = self._scales()
        x = self._inner(bottoms[0])
        g = f32(1) / x
        num = f32(base_scale * scale)
        if num != 1:
            g = g * num
        return [top_diffs[0] * g], []


@register("Threshold")
class Threshold(Elementwise):
    """``1 if x > threshold else 0`` -> Cast(Greater)."""

    def lower(self, ctx):
        g = ctx.node("Greater", [ctx.inputs[0], ctx.scalar(self.lp.threshold_param.threshold, "threshold")])
        ctx.node("Cast", [g], ctx.outputs[0], to=1)

    has_backward = False  # Caffe: NOT_IMPLEMENTED

    def forward(self, bottoms, params, ctx):
        return [(bottoms[0] > f32(self.lp.threshold_param.threshold)).astype(np.float32)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [None], []


@register("Clip")
class Clip(Elementwise):
    """``max(min, min(x, max))`` -> Clip (Min then Max when min > max, as Caffe's order gives)."""

    def lower(self, ctx):
        p = self.lp.clip_param
        lo, hi = f32(p.min), f32(p.max)
        if lo <= hi:
            ctx.node("Clip", [ctx.inputs[0], ctx.scalar(lo, "min"), ctx.scalar(hi, "max")], ctx.outputs[0])
        else:
            m = ctx.node("Min", [ctx.inputs[0], ctx.scalar(hi, "max")])
            ctx.node("Max", [m, ctx.scalar(lo, "min")], ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        p = self.lp.clip_param
        return [np.maximum(f32(p.min), np.minimum(bottoms[0], f32(p.max)))]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        p = self.lp.clip_param
        x = bottoms[0]
        return [top_diffs[0] * ((x >= f32(p.min)) & (x <= f32(p.max)))], []


@register("Swish")
class Swish(Elementwise):
    """``x * sigmoid(beta * x)``."""

    def lower(self, ctx):
        beta = f32(self.lp.swish_param.beta)
        x = ctx.inputs[0]
        z = x if beta == 1 else ctx.node("Mul", [x, ctx.scalar(beta, "beta")])
        s = ctx.node("Sigmoid", [z])
        ctx.node("Mul", [x, s], ctx.outputs[0])

    def forward(self, bottoms, params, ctx):
        beta = f32(self.lp.swish_param.beta)
        s = _sigmoid(bottoms[0] * beta)
        ctx.cache["sigmoid"] = s
        return [bottoms[0] * s]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        beta = f32(self.lp.swish_param.beta)
        s = ctx.cache.get("sigmoid")
        if s is None:
            s = _sigmoid(bottoms[0] * beta)
        y = tops[0]
        return [top_diffs[0] * (beta * y + s * (f32(1) - beta * y))], []


@register("Dropout")
class Dropout(Elementwise):
    """At test time Caffe copies the bottom (its dropout is inverted: the scaling happens
    at training), so the lowering is an identity."""

    def lower(self, ctx):
        ctx.node("Identity", ctx.inputs, ctx.outputs[0])

    backward_reads = ()

    def _scale(self):
        p = self.lp.dropout_param
        return f32(p.dropout_ratio), f32(1.0 / (1.0 - float(p.dropout_ratio))), bool(getattr(p, "scale_train", True))

    def forward(self, bottoms, params, ctx):
        """TRAIN: keep each value with probability 1 - p (the mask from ``ctx.rng``), times
        1 / (1 - p); TEST: a copy (Caffe's inverted dropout; without ``scale_train`` the
        scaling moves to TEST)."""
        ratio, scale, scale_train = self._scale()
        x = bottoms[0]
        if ctx.train:
            mask = (ctx.rng.random(x.shape, dtype=np.float32) >= ratio)
            ctx.cache["mask"] = mask
            return [x * mask * scale if scale_train else x * mask]
        return [x if scale_train else x / scale]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        ratio, scale, scale_train = self._scale()
        dy = top_diffs[0]
        if ctx.train:
            mask = ctx.cache["mask"]
            return [dy * mask * scale if scale_train else dy * mask], []
        return [dy if scale_train else dy / scale], []


@register("PReLU")
class PReLU(LayerType):
    """y = max(0, x) + a * min(0, x); ``a`` per channel ``[C]`` (axis 1) or one shared
    value (a blob of no axes).  Default filler: constant 0.25."""

    def params(self, bottoms):
        p = self.lp.prelu_param
        if len(bottoms[0]) < 2:
            self.fail("PReLU needs a bottom of at least 2 axes")
        if len(bottoms[0]) > 4:  # Caffe reads channels() through the legacy 4-d accessor
            self.fail(f"PReLU reads its bottom's channels() as a 4-d blob; {len(bottoms[0])} axes are too many")
        shape = () if p.channel_shared else (int(bottoms[0][1]),)
        return [self.blob("slope", shape, self.filler(p, "filler", {"type": "constant", "value": 0.25}))]

    def lower(self, ctx):
        nd = len(ctx.bottom_shapes[0])
        if self.lp.prelu_param.channel_shared:
            slope = ctx.param(0, (1,))
        else:
            # PRelu broadcasts from the right: [C] must become [C, 1, ..., 1]
            slope = ctx.param(0, (ctx.bottom_shapes[0][1],) + (1,) * (nd - 2))
        ctx.node("PRelu", [ctx.inputs[0], slope], ctx.outputs[0])

    def _slope(self, params, shape):
        a = params[0]
        if self.lp.prelu_param.channel_shared:
            return a.reshape(())
        return a.reshape((shape[1],) + (1,) * (len(shape) - 2))

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        a = self._slope(params, x.shape)
        return [np.maximum(x, f32(0)) + a * np.minimum(x, f32(0))]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        x, dy = bottoms[0], top_diffs[0]
        neg = x <= 0
        pdiff = None
        if not ctx.param_propagate or ctx.param_propagate[0]:
            t = dy * x * neg
            if self.lp.prelu_param.channel_shared:
                pdiff = np.asarray(t.sum(dtype=np.float32), dtype=np.float32).reshape(params[0].shape)
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                pdiff = t.sum(axis=axes, dtype=np.float32)
        dx = None
        if propagate_down[0]:
            a = self._slope(params, x.shape)
            dx = dy * np.where(neg, a, f32(1))
        return [dx], [pdiff]


def _sigmoid(x):
    """Caffe's sigmoid in float32: ``0.5 * tanh(0.5 x) + 0.5``."""
    return f32(0.5) * np.tanh(f32(0.5) * x) + f32(0.5)
