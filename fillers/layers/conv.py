"""Convolution and Deconvolution (Caffe's BaseConvolutionLayer family)."""

from __future__ import annotations

import numpy as np

from .base import BIAS, WEIGHT, LayerType, register, shape_count


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

    # ---- the numpy reference engine ------------------------------------------------------
    backward_reads = ("bottoms",)

    def _geometry(self, shape):
        shape, axis, kernel, stride, pad, dilation, channels, group = self._setup([shape])
        lead = self.count(shape, 0, axis)
        return axis, lead, kernel, stride, pad, dilation, channels, group

    def _plan(self, shape):
        """``_geometry`` plus the top's shape, num_output and the spatial sizes in and out."""
        axis, lead, kernel, stride, pad, dilation, channels, group = self._geometry(shape)
        top = self.outputs([shape])[0]
        return (axis, lead, kernel, stride, pad, dilation, channels, group, top,
                int(self.lp.convolution_param.num_output), tuple(shape[axis + 1:]), tuple(top[axis + 1:]))

    def forward(self, bottoms, params, ctx):
        """im2col + one matrix product per image and group, as Caffe's ``forward_cpu_gemm``
        (the same GEMM shapes, so the same rounding as closely as a BLAS allows; the batch
        goes in chunks to bound the column buffer); Deconvolution is the adjoint
        (``backward_cpu_gemm`` then col2im)."""
        p = self.lp.convolution_param
        shape = bottoms[0].shape
        axis, lead, kernel, stride, pad, dilation, channels, group, top, o, spatial_in, spatial_out = \
            self._plan(shape)
        w = params[0]
        tops = []
        for x in bottoms:
            x = x.reshape(lead, channels, *spatial_in)
            y = np.empty((lead, o, *spatial_out), dtype=np.float32)
            if not self.transposed:
                wg = w.reshape(group, o // group, -1)
                step = _chunk(lead, wg.shape[2] * group * shape_count(spatial_out))
                for a in range(0, lead, step):
                    cols = im2col(x[a:a + step], kernel, stride, pad, dilation, spatial_out)
                    m = cols.shape[0]
                    np.matmul(wg, cols.reshape(m, group, -1, cols.shape[-1]),
                              out=y[a:a + m].reshape(m, group, o // group, cols.shape[-1]))
            else:
                cg = channels // group
                wgt = np.ascontiguousarray(w.reshape(group, cg, -1).transpose(0, 2, 1))
                step = _chunk(lead, wgt.shape[1] * group * shape_count(spatial_in))
                for a in range(0, lead, step):
                    xc = x[a:a + step]
                    cols = np.matmul(wgt, xc.reshape(xc.shape[0], group, cg, -1))
                    y[a:a + step] = col2im(cols.reshape(xc.shape[0], -1, cols.shape[-1]), (xc.shape[0], o, *spatial_out),
                                           kernel, stride, pad, dilation, spatial_in)
            if p.bias_term:
                y += params[1].reshape((o,) + (1,) * len(spatial_out))
            tops.append(y.reshape(top))
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        """Caffe's ``Backward_cpu``: per image, the bias diff, the weight diff (accumulated image
        after image) and the bottom diff (the adjoint GEMM, then col2im)."""
        p = self.lp.convolution_param
        shape = bottoms[0].shape
        axis, lead, kernel, stride, pad, dilation, channels, group, top, o, spatial_in, spatial_out = \
            self._plan(shape)
        w = params[0]
        want = ctx.param_propagate or [True] * len(params)
        dw = np.zeros(w.shape, dtype=np.float32) if want[0] else None
        db = np.zeros((o,), dtype=np.float32) if p.bias_term and want[-1] else None
        dxs = []
        for k, (x, dy) in enumerate(zip(bottoms, top_diffs)):
            x = x.reshape(lead, channels, *spatial_in)
            dy = dy.reshape(lead, o, *spatial_out)
            if db is not None:
                db += dy.reshape(lead, o, -1).sum(axis=2, dtype=np.float32).sum(axis=0, dtype=np.float32)
            dx = np.empty((lead, channels, *spatial_in), dtype=np.float32) if propagate_down[k] else None
            if not self.transposed:
                og = o // group
                wg = w.reshape(group, og, -1)
                wgt = np.ascontiguousarray(wg.transpose(0, 2, 1))
                dwg = dw.reshape(group, og, -1) if dw is not None else None
                step = _chunk(lead, wg.shape[2] * group * shape_count(spatial_out))
                for a in range(0, lead, step):
                    dyg = dy[a:a + step].reshape(-1, group, og, shape_count(spatial_out))
                    if dwg is not None:
                        cols = im2col(x[a:a + step], kernel, stride, pad, dilation, spatial_out)
                        cols = cols.reshape(cols.shape[0], group, -1, cols.shape[-1])
                        for i in range(cols.shape[0]):  # image after image, as Caffe accumulates
                            for g in range(group):
                                dwg[g] += dyg[i, g] @ cols[i, g].T
                        del cols
                    if dx is not None:
                        dcols = np.matmul(wgt, dyg)
                        dx[a:a + step] = col2im(dcols.reshape(dcols.shape[0], -1, dcols.shape[-1]),
                                                (dcols.shape[0], channels, *spatial_in), kernel, stride, pad,
                                                dilation, spatial_out)
            else:
                cg = channels // group
                wg = w.reshape(group, cg, -1)
                dwg = dw.reshape(group, cg, -1) if dw is not None else None
                step = _chunk(lead, wg.shape[2] * group * shape_count(spatial_in))
                for a in range(0, lead, step):
                    dcols = im2col(dy[a:a + step], kernel, stride, pad, dilation, spatial_in)
                    dcols = dcols.reshape(dcols.shape[0], group, -1, dcols.shape[-1])
                    xg = x[a:a + step].reshape(-1, group, cg, shape_count(spatial_in))
                    if dwg is not None:
                        for i in range(dcols.shape[0]):
                            for g in range(group):
                                dwg[g] += xg[i, g] @ dcols[i, g].T
                    if dx is not None:
                        dx[a:a + step] = np.matmul(wg, dcols).reshape(-1, channels, *spatial_in)
            dxs.append(dx.reshape(shape) if dx is not None else None)
        pd = [dw] + ([db] if p.bias_term else [])
        return dxs, pd


@register("Convolution")
class Convolution(_ConvBase):
    """y = W * x + b, weights ``[num_output, C_in / group, k...]``."""


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution, weights ``[C_in, num_output / group, k...]``."""

    transposed = True



# ---- numpy kernels of the reference engine (fillers.lab) ------------------------------------

def im2col(x, kernel, stride, pad, dilation, out):
    """Caffe's column buffer for a batch: ``x`` (N, C, *spatial) -> (N, C * prod(kernel),
    prod(out)), rows in Caffe's order (channel, kernel offsets...)."""
    n, c = x.shape[:2]
    if any(pad):
        x = np.pad(x, [(0, 0), (0, 0)] + [(int(p), int(p)) for p in pad])
    if all(k == 1 for k in kernel) and all(s == 1 for s in stride) and tuple(x.shape[2:]) == tuple(out):
        return x.reshape(n, c, -1)
    cols = np.empty((n, c, *kernel, *out), dtype=np.float32)
    for offs in np.ndindex(*kernel):
        sl = tuple(slice(o * d, o * d + s * (q - 1) + 1, s) for o, d, s, q in zip(offs, dilation, stride, out))
        cols[(slice(None), slice(None)) + offs] = x[(slice(None), slice(None)) + sl]
    return cols.reshape(n, c * int(np.prod(kernel)), -1)


def col2im(cols, shape, kernel, stride, pad, dilation, out):
    """The adjoint of :func:`im2col`: sums ``cols`` (N, C * prod(kernel), prod(out)) back into
    an array of ``shape`` (N, C, *spatial)."""
    n, c = shape[:2]
    spatial = tuple(shape[2:])
    padded = tuple(int(s) + 2 * int(p) for s, p in zip(spatial, pad))
    cols = cols.reshape(n, c, *kernel, *out)
    if all(k == 1 for k in kernel) and all(s == 1 for s in stride) and padded == tuple(out):
        xp = cols.reshape(n, c, *out)
    else:
        xp = np.zeros((n, c, *padded), dtype=np.float32)
        for offs in np.ndindex(*kernel):
            sl = tuple(slice(o * d, o * d + s * (q - 1) + 1, s) for o, d, s, q in zip(offs, dilation, stride, out))
            xp[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + offs]
    if any(pad):
        xp = xp[(slice(None), slice(None)) + tuple(slice(int(p), int(p) + int(s)) for p, s in zip(pad, spatial))]
    return np.ascontiguousarray(xp)


def _chunk(n, per_image, budget=1 << 24):
    """Images per chunk so that a column buffer stays under ``budget`` values (64 MB)."""
    return max(1, min(n, budget // max(1, per_image)))
