"""Convolution and Deconvolution (Caffe's BaseConvolutionLayer family)."""

from __future__ import annotations

from .base import BIAS, WEIGHT, LayerType, register


def spatial_settings(p, n_spatial: int, what: str):
    """kernel, stride, pad, dilation per spatial axis, read as Caffe's
    BaseConvolutionLayer::LayerSetUp reads them (``kernel_h``/``kernel_w`` only for 2-d)."""

    def per_axis(repeated, h, w, has_hw, default, name):
        if has_hw:
            if n_spatial != 2:
                LayerType.fail(f"{name}_h/{name}_w can only be used for 2-d {what}")
            if len(repeated):
                LayerType.fail(f"give either {name} or {name}_h/{name}_w, not both")
            return [int(h), int(w)]
        vals = [int(v) for v in repeated]
        if len(vals) == 0:
            return [default] * n_spatial
        if len(vals) == 1:
            return vals * n_spatial
        if len(vals) != n_spatial:
            LayerType.fail(
                f"{name} must be given once or once per spatial axis ({n_spatial}), not {len(vals)} times"
            )
        return vals

    has_kh = p.HasField("kernel_h") or p.HasField("kernel_w")
    if has_kh and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        LayerType.fail("for non-square kernels both kernel_h and kernel_w are required")
    kernel = per_axis(p.kernel_size, p.kernel_h, p.kernel_w, has_kh, None, "kernel_size")
    if None in kernel:
        LayerType.fail("kernel_size (or kernel_h and kernel_w) is required")
    has_sh = p.HasField("stride_h") or p.HasField("stride_w")
    if has_sh and not (p.HasField("stride_h") and p.HasField("stride_w")):
        LayerType.fail("for non-square strides both stride_h and stride_w are required")
    stride = per_axis(p.stride, p.stride_h, p.stride_w, has_sh, 1, "stride")
    has_ph = p.HasField("pad_h") or p.HasField("pad_w")  # an unset one of the two is 0
    pad = per_axis(p.pad, p.pad_h, p.pad_w, has_ph, 0, "pad")
    dilation = per_axis(p.dilation, 0, 0, False, 1, "dilation")
    for k in kernel:
        if k <= 0:
            LayerType.fail("kernel dimensions must be greater than zero")
    for s in stride:
        if s <= 0:
            LayerType.fail("stride dimensions must be greater than zero")
    return kernel, stride, pad, dilation


class _ConvBase(LayerType):
    n_bottoms = (1, None)
    n_tops = (1, None)
    roles = {"weights": WEIGHT, "bias": BIAS}
    transposed = False

    def _setup(self, bottoms):
        p = self.lp.convolution_param
        if len(bottoms) != len(self.lp.top):
            self.fail("needs as many tops as bottoms")
        shape = tuple(bottoms[0])
        for b in bottoms[1:]:
            if tuple(b) != shape:
                self.fail("all bottoms must have the same shape")
        axis = self.canonical_axis(p.axis, len(shape))
        n_spatial = len(shape) - axis - 1
        if n_spatial < 0:
            self.fail("the bottom has no channel axis")
        if not p.force_nd_im2col and n_spatial != 2 and n_spatial < 1:
            self.fail("needs at least one spatial axis")
        kernel, stride, pad, dilation = spatial_settings(p, n_spatial, "convolution")
        channels = int(shape[axis])
        if p.num_output <= 0:
            self.fail("num_output must be greater than zero")
        group = int(p.group)
        if group <= 0:
            self.fail("group must be greater than zero")
        if channels % group:
            self.fail(f"the input has {channels} channels, which group {group} does not divide")
        if p.num_output % group:
            self.fail(f"num_output {p.num_output} is not a multiple of group {group}")
        return shape, axis, kernel, stride, pad, dilation, channels, group

    def params(self, bottoms):
        shape, axis, kernel, _, _, _, channels, group = self._setup(bottoms)
        p = self.lp.convolution_param
        if self.transposed:
            wshape = (channels, p.num_output // group, *kernel)
        else:
            wshape = (p.num_output, channels // group, *kernel)
        blobs = [self.blob("weights", wshape, self.filler(p, "weight_filler"))]
        if p.bias_term:
            blobs.append(self.blob("bias", (p.num_output,), self.filler(p, "bias_filler")))
        return blobs

    def outputs(self, bottoms):
        shape, axis, kernel, stride, pad, dilation, _, _ = self._setup(bottoms)
        out = []
        for i, (k, s, pd, d) in enumerate(zip(kernel, stride, pad, dilation)):
            size = int(shape[axis + 1 + i])
            extent = d * (k - 1) + 1
            if self.transposed:
                o = s * (size - 1) + extent - 2 * pd
                if o <= 0:
                    self.fail(f"the output size along spatial axis {i} would be {o}")
            else:
                if size + 2 * pd < extent:
                    self.fail(
                        f"the kernel extent {extent} is larger than the padded input "
                        f"{size} + 2*{pd} along spatial axis {i}"
                    )
                o = (size + 2 * pd - extent) // s + 1
            out.append(o)
        top = (*shape[:axis], int(self.lp.convolution_param.num_output), *out)
        return [top] * len(bottoms)

    def lower(self, ctx):
        """Convolution -> Conv, Deconvolution -> ConvTranspose (ONNX's weight layouts are
        Caffe's).  A channel axis other than 1 is handled by folding the leading axes into
        one batch axis and unfolding the result."""
        shape, axis, kernel, stride, pad, dilation, _, group = self._setup(ctx.bottom_shapes)
        p = self.lp.convolution_param
        if not kernel:
            ctx.unsupported("a convolution without spatial axes has no ONNX Conv equivalent")
        op = "ConvTranspose" if self.transposed else "Conv"
        weights = [ctx.param(0)] + ([ctx.param(1)] if p.bias_term else [])
        lead = self.count(shape, 0, axis)
        for x, out, top in zip(ctx.inputs, ctx.outputs, ctx.top_shapes):
            folded = axis != 1
            if folded:
                x = ctx.reshape(x, (lead, *shape[axis:]))
            y = ctx.node(op, [x] + weights, None if folded else out, kernel_shape=list(kernel),
                         strides=list(stride), pads=list(pad) + list(pad), dilations=list(dilation), group=group)
            if folded:
                ctx.reshape(y, top, out)


@register("Convolution")
class Convolution(_ConvBase):
    """y = W * x + b, weights ``[num_output, C_in / group, k...]``."""


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution, weights ``[C_in, num_output / group, k...]``."""

    transposed = True

