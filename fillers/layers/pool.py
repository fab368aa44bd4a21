"""Pooling and SPP (spatial pyramid pooling)."""

from __future__ import annotations

import math

from .base import LayerType, register

MAX, AVE, STOCHASTIC = 0, 1, 2
CEIL, FLOOR = 0, 1


def pooled_size(size: int, kernel: int, stride: int, pad: int, round_mode: int = CEIL) -> int:
    """Caffe's pooled output size along one axis.

    ``ceil((size + 2 pad - kernel) / stride) + 1`` (``floor`` with round_mode FLOOR), the
    division done in float; with padding, a last window that would start inside the right
    padding is dropped.  Like Caffe, a kernel larger than the padded input is accepted as
    long as the result is positive (``ceil(-0.5) + 1 = 1``).
    """
    q = float(size + 2 * pad - kernel) / float(stride)
    out = int(math.ceil(q) if round_mode == CEIL else math.floor(q)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    if out <= 0:
        LayerType.fail(f"the kernel {kernel} (stride {stride}) is larger than the padded input "
                       f"{size} + 2*{pad}: the output would have size {out}")
    return out


def pooling_geometry(lp, shape):
    """(kernel, stride, pad, out) as [h, w] lists for a Pooling layer on a 4-d bottom,
    with the checks of Caffe's PoolingLayer::LayerSetUp."""
    p = lp.pooling_param
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            LayerType.fail("with global_pooling the kernel size cannot be given")
    else:
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            LayerType.fail("give the kernel as kernel_size or as kernel_h and kernel_w (both), not both ways")
    if not ((not has("pad") and has("pad_h") and has("pad_w")) or (not has("pad_h") and not has("pad_w"))):
        LayerType.fail("give pad, or pad_h and pad_w (both)")
    if not ((not has("stride") and has("stride_h") and has("stride_w")) or (not has("stride_h") and not has("stride_w"))):
        LayerType.fail("give stride, or stride_h and stride_w (both)")
    if len(shape) != 4:
        LayerType.fail(f"pooling needs a 4-d bottom (N, C, H, W), got {len(shape)} axes")
    h, w = int(shape[2]), int(shape[3])
    if p.global_pooling:
        kernel = [h, w]
    elif has("kernel_size"):
        kernel = [p.kernel_size] * 2
    else:
        kernel = [p.kernel_h, p.kernel_w]
    pad = [p.pad_h, p.pad_w] if has("pad_h") else [p.pad] * 2
    stride = [p.stride_h, p.stride_w] if has("stride_h") else [p.stride] * 2
    if min(kernel) <= 0:
        LayerType.fail("kernel dimensions must be greater than zero")
    if min(stride) <= 0:
        LayerType.fail("stride must be greater than zero")
    if p.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        LayerType.fail("global pooling needs pad 0 and stride 1")
    if any(pad):
        if p.pool not in (MAX, AVE):
            LayerType.fail("padding is implemented only for MAX and AVE pooling")
        for k, pd in zip(kernel, pad):
            if pd >= k:
                LayerType.fail(f"pad {pd} must be smaller than the kernel {k}")
    out = [pooled_size(s, k, st, pd, p.round_mode) for s, k, st, pd in zip((h, w), kernel, stride, pad)]
    return kernel, stride, pad, out


@register("Pooling")
class Pooling(LayerType):
    """MAX / AVE / STOCHASTIC pooling with Caffe's ceil-and-clip output size."""

    tops = (1, 2)

    def outputs(self, bottoms):
        if len(self.lp.top) == 2 and self.lp.pooling_param.pool != MAX:
            self.fail("only MAX pooling has a second (mask) top")
        n, c = bottoms[0][:2]
        _, _, _, out = pooling_geometry(self.lp, bottoms[0])
        return [(n, c, *out)] * len(self.lp.top)


def spp_level(h: int, w: int, level: int):
    """Kernel, stride and pad of SPP's pyramid level ``level`` (2^level bins a side)."""
    bins = 2 ** level
    kh = math.ceil(h / bins)
    kw = math.ceil(w / bins)
    ph = (kh * bins - h + 1) // 2
    pw = (kw * bins - w + 1) // 2
    return (kh, kw), (kh, kw), (ph, pw)


@register("SPP")
class SPP(LayerType):
    """Spatial pyramid pooling: pyramid_height levels of 2^l x 2^l bins, flattened and
    concatenated (one level: the pooled 4-d blob itself)."""

    def outputs(self, bottoms):
        p = self.lp.spp_param
        if len(bottoms[0]) != 4:
            self.fail("SPP needs a 4-d bottom")
        n, c, h, w = bottoms[0]
        if p.pyramid_height < 1:
            self.fail("pyramid_height must be at least 1")
        total = 0
        for level in range(p.pyramid_height):
            (kh, kw), (sh, sw), (ph, pw) = spp_level(h, w, level)
            oh = pooled_size(h, kh, sh, ph)
            ow = pooled_size(w, kw, sw, pw)
            if p.pyramid_height == 1:
                return [(n, c, oh, ow)]
            total += c * oh * ow
        return [(n, total)]
