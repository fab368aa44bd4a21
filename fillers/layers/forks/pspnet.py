"""Layer types of DeepLab v2 / PSPNet's forks of Caffe: ``Interp``."""

from __future__ import annotations

import numpy as np

from ..base import LayerType, register
from .pspnet_pb2 import InterpParameter

f32 = np.float32


def interp_size(p, size_in: int, what: str = "") -> tuple:
    """``(size_eff, size_out)`` along one axis as the fork's ``InterpLayer::Reshape``
    computes them: the input cropped by ``pad_beg``/``pad_end``, then the output size by
    precedence shrink only, zoom only, height/width, shrink then zoom (``what``: "height"
    or "width", for the explicit size)."""
    eff = size_in + int(p.pad_beg) + int(p.pad_end)
    has_s, has_z = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    s, z = int(p.shrink_factor), int(p.zoom_factor)
    if has_s and not has_z:
        if s < 1:
            LayerType.fail("shrink_factor must be positive")
        out = _c_div(eff - 1, s) + 1
    elif has_z and not has_s:
        if z < 1:
            LayerType.fail("zoom_factor must be positive")
        out = eff + (eff - 1) * (z - 1)
    elif p.HasField("height") and p.HasField("width"):
        out = int(getattr(p, what))
    elif has_s and has_z:
        if s < 1 or z < 1:
            LayerType.fail("shrink_factor and zoom_factor must be positive")
        out = _c_div(eff - 1, s) + 1
        out = out + (out - 1) * (z - 1)
    else:
        LayerType.fail("interp_param needs zoom_factor, shrink_factor, or height and width")
    if eff <= 0:
        LayerType.fail(f"the {what} after pad_beg/pad_end ({eff}) must be positive")
    if out <= 0:
        LayerType.fail(f"the output {what} ({out}) must be positive")
    return eff, out


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def interp_weights(size_in: int, beg: int, eff: int, out: int) -> np.ndarray:
    """The ``(out, size_in)`` float32 matrix of ``caffe_cpu_interp2`` along one axis:
    output ``d`` reads the cropped input ``[beg, beg + eff)`` at ``d (eff - 1) / (out - 1)``
    (float32, as the fork computes it), weights ``1 - lambda`` and ``lambda`` on the two
    neighbours, the second clamped at the last row."""
    a = np.zeros((out, size_in), dtype=np.float32)
    if eff == out:  # the fork copies (its special case; the general path gives the same)
        a[np.arange(out), beg + np.arange(out)] = 1.0
        return a
    r = f32(eff - 1) / f32(out - 1) if out > 1 else f32(0.0)
    for d in range(out):
        pos = f32(r * f32(d))
        i = int(pos)
        step = 1 if i < eff - 1 else 0
        lam1 = f32(pos - f32(i))
        lam0 = f32(f32(1.0) - lam1)
        a[d, beg + i] += lam0
        a[d, beg + i + step] += lam1
    return a


def interp_reference(x: np.ndarray, p) -> np.ndarray:
    """A numpy transcription of the fork's forward (``caffe_cpu_interp2``, not packed) for
    a 4-d float32 ``x``: the same float32 positions and weights, the same sum order."""
    n, c, h, w = x.shape
    h_eff, h_out = interp_size(p, h, "height")
    w_eff, w_out = interp_size(p, w, "width")
    beg = -int(p.pad_beg)
    x = x.astype(np.float32)
    if h_eff == h_out and w_eff == w_out:
        return x[:, :, beg:beg + h_eff, beg:beg + w_eff].copy()
    y = np.empty((n, c, h_out, w_out), dtype=np.float32)
    rh = f32(h_eff - 1) / f32(h_out - 1) if h_out > 1 else f32(0)
    rw = f32(w_eff - 1) / f32(w_out - 1) if w_out > 1 else f32(0)
    for h2 in range(h_out):
        h1r = f32(rh * f32(h2))
        h1 = int(h1r)
        h1p = 1 if h1 < h_eff - 1 else 0
        hl1 = f32(h1r - f32(h1))
        hl0 = f32(f32(1) - hl1)
        for w2 in range(w_out):
            w1r = f32(rw * f32(w2))
            w1 = int(w1r)
            w1p = 1 if w1 < w_eff - 1 else 0
            wl1 = f32(w1r - f32(w1))
            wl0 = f32(f32(1) - wl1)
            r0, c0 = beg + h1, beg + w1
            a = x[:, :, r0, c0]
            b = x[:, :, r0, c0 + w1p]
            cc = x[:, :, r0 + h1p, c0]
            d = x[:, :, r0 + h1p, c0 + w1p]
            y[:, :, h2, w2] = hl0 * (wl0 * a + wl1 * b) + hl1 * (wl0 * cc + wl1 * d)
    return y


@register("Interp")
class Interp(LayerType):
    """Bilinear resizing with aligned corners, DeepLab v2's ``Interp`` as PSPNet's fork
    has it (hszhao/PSPNet, ``src/caffe/layers/interp_layer.cpp`` with
    ``src/caffe/util/interp.cpp``: ``caffe_cpu_interp2``).

    ``interp_param``: the 4-d input (N, C, H, W) is first cropped by ``pad_beg`` and
    ``pad_end`` (both must be <= 0: ``pad_beg`` rows/columns off the top/left, ``pad_end``
    off the bottom/right, the same on both axes), giving ``H_eff x W_eff``; the output
    size is then, in this order of precedence: ``shrink_factor`` only,
    ``(H_eff - 1) / s + 1``; ``zoom_factor`` only, ``H_eff + (H_eff - 1)(z - 1)``;
    ``height`` and ``width`` as given; both factors, shrink then zoom.  Output pixel ``d``
    samples the cropped input at ``d (H_eff - 1) / (H_out - 1)`` (0 for a one-pixel
    output), computed in float32; the bottom/right neighbour is clamped at the edge.
    No blobs.

    Lowering (exact up to float rounding): two MatMuls with constant interpolation
    matrices, ``A_h @ X @ A_w^T``, built with the fork's float32 positions and weights;
    the crop is folded into the matrices (columns of cropped rows are zero).

    OpenCV 4.x reads ``Interp`` (``zoom_factor`` or ``height``/``width``, aligned
    corners) but ignores ``shrink_factor`` and ``pad_beg``/``pad_end``: with shrinking it
    computes another size (shrink alone: an empty output, which it refuses), with padding
    another size and other values.  This type follows the fork; the export check does not
    compare such a layer with OpenCV.
    """

    origin = "hszhao/PSPNet (DeepLab v2): interp_layer.cpp, util/interp.cpp (caffe_cpu_interp2)"
    fork_params = {"interp_param": InterpParameter}

    def _sizes(self, shape):
        p = self.fork("interp_param")
        if len(shape) != 4:
            self.fail(f"Interp needs a 4-d bottom (N, C, H, W), not {list(shape)}")
        if p.pad_beg > 0 or p.pad_end > 0:
            self.fail("pad_beg and pad_end must be <= 0 (the fork only crops)")
        h_eff, h_out = interp_size(p, int(shape[2]), "height")
        w_eff, w_out = interp_size(p, int(shape[3]), "width")
        return p, h_eff, h_out, w_eff, w_out

    def outputs(self, bottoms):
        _, _, h_out, _, w_out = self._sizes(bottoms[0])
        n, c = bottoms[0][:2]
        return [(int(n), int(c), h_out, w_out)]

    def lower(self, ctx):
        shape = ctx.bottom_shapes[0]
        p, h_eff, h_out, w_eff, w_out = self._sizes(shape)
        beg = -int(p.pad_beg)
        h, w = int(shape[2]), int(shape[3])
        if (h_eff, w_eff) == (h, w) and (h_out, w_out) == (h, w):
            ctx.node("Identity", [ctx.inputs[0]], ctx.outputs[0])
            return
        a_w = interp_weights(w, beg, w_eff, w_out)
        a_h = interp_weights(h, beg, h_eff, h_out)
        x = ctx.node("MatMul", [ctx.inputs[0], ctx.const(np.ascontiguousarray(a_w.T), "weights_w")])
        ctx.node("MatMul", [ctx.const(a_h, "weights_h"), x], ctx.outputs[0])

    def opencv_caveat(self):
        p = self.fork("interp_param")
        ignored = [f for f in ("shrink_factor", "pad_beg", "pad_end") if p.HasField(f) and getattr(p, f) != 0]
        if p.HasField("shrink_factor") and not ignored:
            ignored = ["shrink_factor"]
        if ignored:
            return f"OpenCV's Interp ignores {'/'.join(ignored)}"
        return None
