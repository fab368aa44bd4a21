"""Pooling and SPP (spatial pyramid pooling)."""

from __future__ import annotations

import math

import numpy as np

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


def pool_end_pads(sizes, kernel, stride, pad, out):
    """End pads that make ONNX's floor-mode pooling produce Caffe's output sizes ``out``.

    ONNX: ``floor((size + pad + end - k) / s) + 1``.  The last window starts at
    ``(out - 1) * s - pad``, so ``end = (out - 1) * s + k - size - pad`` (at least 0).
    Raises ValueError when a window would lie wholly outside the input (Caffe's
    unpadded ceil mode can do that when the stride passes the kernel).
    """
    ends = []
    for size, k, s, p, o in zip(sizes, kernel, stride, pad, out):
        e = max(0, (o - 1) * s + k - size - p)
        if (size + p + e - k) // s + 1 != o or e >= k or (o - 1) * s - p >= size:
            raise ValueError(f"a window of size {k} at stride {s} lies outside the input of size {size}")
        ends.append(e)
    return ends


def ave_divisors(size, kernel, stride, pad, out):
    """Caffe's AVE divisor along one axis: the window clipped to ``[-pad, size + pad)``."""
    d = []
    for o in range(out):
        start = o * stride - pad
        end = min(start + kernel, size + pad)
        d.append(end - start)
    return np.asarray(d, dtype=np.int64)


def lower_pool(ctx, x, shape, method, kernel, stride, pad, out, top, mask_top=None):
    """Emit Caffe's pooling of ``x`` (N, C, H, W) into the tensor named ``top``.

    MAX: MaxPool with explicit (asymmetric) pads, floor mode: the output size is Caffe's.
    AVE: AveragePool(count_include_pad=1) with the same pads gives window sums / (kh kw);
    where Caffe's divisor (the window clipped to [-pad, size + pad)) differs, a constant
    (kh kw / divisor) per output position corrects it.  STOCHASTIC (test time, as Caffe's
    GPU code; its CPU forward is not implemented): sum(x^2) / sum(x) over the window, 0
    where the sum is not positive.  ``mask_top``: MAX's second top, Caffe's argmax index
    within the channel plane (h * W + w), as float.
    """
    n, c, h, w = shape
    try:
        ends = pool_end_pads((h, w), kernel, stride, pad, out)
    except ValueError as exc:
        ctx.unsupported(str(exc))
    pads = [int(pad[0]), int(pad[1]), int(ends[0]), int(ends[1])]
    kernel = [int(k) for k in kernel]
    stride = [int(s) for s in stride]
    is_global = list(kernel) == [h, w] and not any(pads) and list(out) == [1, 1]
    if method == MAX:
        if mask_top is not None:
            y, idx = ctx.node("MaxPool", [x], [top, ctx.fresh("indices")], kernel_shape=kernel, strides=stride,
                              pads=pads)
            plane = ctx.node("Mod", [idx, ctx.const(np.int64(h * w), "plane", np.int64)])
            ctx.node("Cast", [plane], mask_top, to=1)
        elif is_global:
            ctx.node("GlobalMaxPool", [x], top)
        else:
            ctx.node("MaxPool", [x], top, kernel_shape=kernel, strides=stride, pads=pads)
        return
    if method == AVE:
        dh = ave_divisors(h, kernel[0], stride[0], pad[0], out[0])
        dw = ave_divisors(w, kernel[1], stride[1], pad[1], out[1])
        div = np.outer(dh, dw)
        full = kernel[0] * kernel[1]
        if is_global:
            ctx.node("GlobalAveragePool", [x], top)
        elif np.all(div == full):
            ctx.node("AveragePool", [x], top, kernel_shape=kernel, strides=stride, pads=pads, count_include_pad=1)
        else:
            y = ctx.node("AveragePool", [x], kernel_shape=kernel, strides=stride, pads=pads, count_include_pad=1)
            factor = (np.float64(full) / div).astype(np.float32)
            ctx.node("Mul", [y, ctx.const(factor, "divisor_fix")], top)
        return
    if method == STOCHASTIC:
        ctx.warn("STOCHASTIC pooling exported with Caffe's test-time rule sum(x^2)/sum(x) (its GPU code; "
                 "Caffe's CPU forward is not implemented)")
        full = float(kernel[0] * kernel[1])
        attrs = dict(kernel_shape=kernel, strides=stride, pads=pads, count_include_pad=1)
        s1 = ctx.node("Mul", [ctx.node("AveragePool", [x], **attrs), ctx.scalar(full, "window")])
        sq = ctx.node("Mul", [x, x])
        s2 = ctx.node("Mul", [ctx.node("AveragePool", [sq], **attrs), ctx.scalar(full, "window")])
        pos = ctx.node("Greater", [s1, ctx.scalar(0.0, "zero")])
        ratio = ctx.node("Div", [s2, s1])
        ctx.node("Where", [pos, ratio, ctx.scalar(0.0, "zero")], top)
        return
    ctx.unsupported(f"unknown pooling method {method}")


@register("Pooling")
class Pooling(LayerType):
    """MAX / AVE / STOCHASTIC pooling with Caffe's ceil-and-clip output size."""

    n_tops = (1, 2)

    def outputs(self, bottoms):
        if len(self.lp.top) == 2 and self.lp.pooling_param.pool != MAX:
            self.fail("only MAX pooling has a second (mask) top")
        _, _, _, out = pooling_geometry(self.lp, bottoms[0])  # checks the bottom's axes first
        n, c = bottoms[0][:2]
        return [(n, c, *out)] * len(self.lp.top)

    def lower(self, ctx):
        kernel, stride, pad, out = pooling_geometry(self.lp, ctx.bottom_shapes[0])
        mask = ctx.outputs[1] if len(ctx.outputs) > 1 else None
        lower_pool(ctx, ctx.inputs[0], ctx.bottom_shapes[0], self.lp.pooling_param.pool, kernel, stride, pad, out,
                   ctx.outputs[0], mask)

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        kernel, stride, pad, out = pooling_geometry(self.lp, x.shape)
        y, cache = pool_forward(x, self.lp.pooling_param.pool, kernel, stride, pad, out)
        ctx.cache.update(cache)
        tops = [y]
        if len(self.lp.top) > 1:
            tops.append(pool_mask(cache["argmax"], kernel, stride, pad, x.shape[3]))
        return tops

    backward_reads = ()  # the shapes and the argmax / divisor kept in ctx.cache

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        shape = bottoms[0].shape if bottoms[0] is not None else tuple(ctx.layer.bottom_shapes[0])
        kernel, stride, pad, out = pooling_geometry(self.lp, shape)
        return [pool_backward(top_diffs[0], shape, self.lp.pooling_param.pool, kernel, stride, pad, out,
                              ctx.cache)], []


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
            if ph or pw:  # the checks of the PoolingLayer SPP builds for this level
                if p.pool not in (MAX, AVE):
                    self.fail(f"pyramid level {level} needs padding, which Caffe's Pooling implements only for "
                              "MAX and AVE")
                if ph >= kh or pw >= kw:
                    self.fail(f"pyramid level {level} needs pad {[ph, pw]} >= kernel {[kh, kw]}, which Caffe's "
                              f"Pooling rejects (the bottom is too small for {2 ** level} bins a side)")
            oh = pooled_size(h, kh, sh, ph)
            ow = pooled_size(w, kw, sw, pw)
            if p.pyramid_height == 1:
                return [(n, c, oh, ow)]
            total += c * oh * ow
        return [(n, total)]

    def lower(self, ctx):
        """Each pyramid level is a Pooling with Caffe's geometry, flattened to
        ``[N, C * oh * ow]``; the levels are concatenated on axis 1."""
        p = self.lp.spp_param
        n, c, h, w = ctx.bottom_shapes[0]
        parts = []
        for level in range(p.pyramid_height):
            kernel, stride, pad = spp_level(h, w, level)
            out = [pooled_size(h, kernel[0], stride[0], pad[0]), pooled_size(w, kernel[1], stride[1], pad[1])]
            if p.pyramid_height == 1:
                lower_pool(ctx, ctx.inputs[0], (n, c, h, w), p.pool, kernel, stride, pad, out, ctx.outputs[0])
                return
            y = ctx.fresh(f"level{level}")
            lower_pool(ctx, ctx.inputs[0], (n, c, h, w), p.pool, kernel, stride, pad, out, y)
            parts.append(ctx.reshape(y, (n, c * out[0] * out[1])))
        ctx.node("Concat", parts, ctx.outputs[0], axis=1)

    def _levels(self, shape):
        p = self.lp.spp_param
        n, c, h, w = shape
        for level in range(p.pyramid_height):
            kernel, stride, pad = spp_level(h, w, level)
            out = (pooled_size(h, kernel[0], stride[0], pad[0]), pooled_size(w, kernel[1], stride[1], pad[1]))
            yield level, kernel, stride, pad, out

    def forward(self, bottoms, params, ctx):
        x = bottoms[0]
        n = x.shape[0]
        parts = []
        for level, kernel, stride, pad, out in self._levels(x.shape):
            y, cache = pool_forward(x, self.lp.spp_param.pool, kernel, stride, pad, out)
            ctx.cache[level] = cache
            parts.append(y if self.lp.spp_param.pyramid_height == 1 else y.reshape(n, -1))
        return [parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None], []
        x = bottoms[0]
        n, c = x.shape[:2]
        dx = np.zeros(x.shape, dtype=np.float32)
        dy = top_diffs[0].reshape(n, -1)
        start = 0
        for level, kernel, stride, pad, out in self._levels(x.shape):
            size = c * out[0] * out[1]
            g = dy[:, start:start + size].reshape(n, c, *out)
            start += size
            dx += pool_backward(g, x.shape, self.lp.spp_param.pool, kernel, stride, pad, out, ctx.cache[level])
        return [dx], []


# ---- numpy kernels of the reference engine (fillers.lab) ------------------------------------

def _end_pads(h, w, kernel, stride, pad, out):
    return [max(0, (o - 1) * s + k - size - p) for size, k, s, p, o in zip((h, w), kernel, stride, pad, out)]


def _window_slices(kernel, stride, out):
    for i in range(int(kernel[0])):
        for j in range(int(kernel[1])):
            yield i * int(kernel[1]) + j, (slice(None), slice(None),
                                           slice(i, i + stride[0] * (out[0] - 1) + 1, stride[0]),
                                           slice(j, j + stride[1] * (out[1] - 1) + 1, stride[1]))


def pool_forward(x, method, kernel, stride, pad, out):
    """Caffe's ``PoolingLayer::Forward_cpu`` on ``x`` (N, C, H, W): ``(top, cache)``.

    MAX: the first maximum in the window's scan order (row by row) wins, windows clipped to
    the input; ``cache["argmax"]`` holds the window offset chosen.  AVE: window sums over
    the zero-padded input divided by the window clipped to ``[-pad, size + pad)``.
    STOCHASTIC: Caffe's test-time rule ``sum(x^2) / sum(x)`` (its GPU code)."""
    n, c, h, w = x.shape
    kernel, stride, pad, out = [tuple(int(v) for v in a) for a in (kernel, stride, pad, out)]
    is_global = kernel == (h, w) and not any(pad) and out == (1, 1)
    if method == MAX:
        if is_global:
            flat = x.reshape(n, c, h * w)
            idx = flat.argmax(axis=2)  # the first maximum, as Caffe's scan
            y = np.take_along_axis(flat, idx[..., None], axis=2).reshape(n, c, 1, 1)
            return y, {"argmax": idx.reshape(n, c, 1, 1).astype(np.int32)}
        eh, ew = _end_pads(h, w, kernel, stride, pad, out)
        xp = np.pad(x, ((0, 0), (0, 0), (pad[0], eh), (pad[1], ew)), constant_values=-np.inf)
        best = np.full((n, c, *out), -np.inf, dtype=np.float32)
        idx = np.full((n, c, *out), -1, dtype=np.int32)
        m = np.empty(best.shape, dtype=bool)
        for k, sl in _window_slices(kernel, stride, out):
            v = xp[sl]
            np.greater(v, best, out=m)
            np.copyto(best, v, where=m)
            np.copyto(idx, k, where=m)
        return best, {"argmax": idx}
    if method in (AVE, STOCHASTIC):
        if is_global and method == AVE:
            y = x.reshape(n, c, h * w).sum(axis=2, dtype=np.float32) / np.float32(h * w)
            return y.reshape(n, c, 1, 1), {}
        eh, ew = _end_pads(h, w, kernel, stride, pad, out)
        xp = np.pad(x, ((0, 0), (0, 0), (pad[0], eh), (pad[1], ew)))
        acc = np.zeros((n, c, *out), dtype=np.float32)
        if method == STOCHASTIC:
            sq = np.zeros_like(acc)
            for _, sl in _window_slices(kernel, stride, out):
                acc += xp[sl]
                sq += xp[sl] * xp[sl]
            return np.where(acc > 0, sq / np.where(acc > 0, acc, 1), 0).astype(np.float32), {}
        for _, sl in _window_slices(kernel, stride, out):
            acc += xp[sl]
        div = np.outer(ave_divisors(h, kernel[0], stride[0], pad[0], out[0]),
                       ave_divisors(w, kernel[1], stride[1], pad[1], out[1])).astype(np.float32)
        return acc / div, {"divisor": div}
    raise ValueError(f"unknown pooling method {method}")


def pool_mask(idx, kernel, stride, pad, w_in):
    """MAX's mask top: the argmax's index ``h * W + w`` in its channel plane (as float)."""
    oh, ow = idx.shape[2:]
    ki, kj = idx // int(kernel[1]), idx % int(kernel[1])
    hh = np.arange(oh).reshape(oh, 1) * stride[0] - pad[0] + ki
    ww = np.arange(ow).reshape(1, ow) * stride[1] - pad[1] + kj
    return np.where(idx < 0, -1, hh * w_in + ww).astype(np.float32)


def pool_backward(dy, shape, method, kernel, stride, pad, out, cache):
    """Caffe's ``PoolingLayer::Backward_cpu``: MAX routes each top diff to its argmax, AVE
    spreads it over the window divided by the same divisor."""
    n, c, h, w = shape
    kernel, stride, pad, out = [tuple(int(v) for v in a) for a in (kernel, stride, pad, out)]
    if method == MAX and "argmax" in cache and cache["argmax"].shape[2:] == (1, 1) and out == (1, 1) \
            and kernel == (h, w) and not any(pad):
        dx = np.zeros((n, c, h * w), dtype=np.float32)
        np.put_along_axis(dx, cache["argmax"].reshape(n, c, 1), dy.reshape(n, c, 1), axis=2)
        return dx.reshape(shape)
    if method == AVE and "divisor" not in cache:  # global average
        return np.broadcast_to(dy / np.float32(h * w), shape).astype(np.float32)
    eh, ew = _end_pads(h, w, kernel, stride, pad, out)
    dxp = np.zeros((n, c, h + pad[0] + eh, w + pad[1] + ew), dtype=np.float32)
    if method == MAX:
        idx = cache["argmax"]
        for k, sl in _window_slices(kernel, stride, out):
            dxp[sl] += np.where(idx == k, dy, np.float32(0))
    elif method == AVE:
        g = dy / cache["divisor"]
        for _, sl in _window_slices(kernel, stride, out):
            dxp[sl] += g
    else:
        raise NotImplementedError("STOCHASTIC pooling has no backward pass in Caffe's CPU code")
    return np.ascontiguousarray(dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w])
