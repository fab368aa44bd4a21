"""Normalisation and affine layers: BatchNorm, LRN, MVN, Scale, Bias."""

from __future__ import annotations

from .base import BIAS, OTHER, WEIGHT, LayerType, ParamBlob, register


@register("BatchNorm")
class BatchNorm(LayerType):
    """Caffe's BatchNorm: blobs mean ``[C]``, variance ``[C]`` and the moving-average
    scale factor ``[1]``, all set to 0 without drawing random numbers.  At inference
    ``y = (x - mean/f) / sqrt(var/f + eps)`` with ``f = 0`` read as 0 (so a fresh layer
    computes ``x / sqrt(eps)``)."""

    def params(self, bottoms):
        shape = bottoms[0]
        c = int(shape[1]) if len(shape) > 1 else 1
        return [ParamBlob("mean", (c,)), ParamBlob("variance", (c,)), ParamBlob("scale_factor", (1,))]


def _axis_span(layer, shape, axis, num_axes, what):
    axis = layer.canonical_axis(axis, len(shape))
    if num_axes < -1:
        layer.fail("num_axes must be non-negative, or -1 to extend to the end of the bottom")
    if num_axes >= 0 and len(shape) < axis + num_axes:
        layer.fail(f"{what} blob's axes (axis {axis} + num_axes {num_axes}) exceed the bottom's {len(shape)} axes")
    end = len(shape) if num_axes == -1 else axis + num_axes
    return axis, tuple(shape[axis:end])


@register("Scale")
class Scale(LayerType):
    """y = x * scale (+ bias), the scale broadcast from ``axis`` over ``num_axes`` axes;
    with two bottoms the second is the scale and the layer learns no scale blob.
    Default fillers: scale constant 1, bias constant 0."""

    bottoms = (1, 2)

    def params(self, bottoms):
        p = self.lp.scale_param
        blobs = []
        if len(bottoms) == 1:
            axis, shape = _axis_span(self, bottoms[0], p.axis, p.num_axes, "the scale")
            blobs.append(ParamBlob("scale", shape, self.filler(p, "filler", {"type": "constant", "value": 1.0}), WEIGHT))
        else:
            axis = self.canonical_axis(p.axis, len(bottoms[0]))
        if p.bias_term:
            n = len(bottoms[1]) if len(bottoms) > 1 else p.num_axes
            _, bshape = _axis_span(self, bottoms[0], p.axis, n, "the bias")
            blobs.append(ParamBlob("bias", bshape, self.filler(p, "bias_filler"), BIAS))
        return blobs

    def outputs(self, bottoms):
        if len(bottoms) == 2:
            axis = self.canonical_axis(self.lp.scale_param.axis, len(bottoms[0]))
            s = tuple(bottoms[1])
            if tuple(bottoms[0][axis:axis + len(s)]) != s:
                self.fail(f"the scale bottom's shape {list(s)} does not match the first bottom's "
                          f"shape {list(bottoms[0])} from axis {axis}")
        return [tuple(bottoms[0])]


@register("Bias")
class Bias(LayerType):
    """y = x + bias, broadcast from ``axis`` over ``num_axes`` axes (a second bottom gives
    the bias).  Default filler: constant 0."""

    bottoms = (1, 2)

    def params(self, bottoms):
        if len(bottoms) == 2:
            return []
        p = self.lp.bias_param
        _, shape = _axis_span(self, bottoms[0], p.axis, p.num_axes, "the bias")
        return [ParamBlob("bias", shape, self.filler(p, "filler"), BIAS)]

    def outputs(self, bottoms):
        if len(bottoms) == 2:
            axis = self.canonical_axis(self.lp.bias_param.axis, len(bottoms[0]))
            s = tuple(bottoms[1])
            if tuple(bottoms[0][axis:axis + len(s)]) != s:
                self.fail(f"the bias bottom's shape {list(s)} does not match the first bottom's "
                          f"shape {list(bottoms[0])} from axis {axis}")
        return [tuple(bottoms[0])]


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


@register("MVN")
class MVN(LayerType):
    """Mean (and variance) normalisation per sample (and per channel unless across_channels)."""


__all__ = ["BatchNorm", "Scale", "Bias", "LRN", "MVN", "OTHER"]
