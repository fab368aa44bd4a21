"""Layer types of SegNet's fork of Caffe (alexgkendall/caffe-segnet) and of the forks that
copied it (ENet's TimoSaemann/caffe-enet): ``Upsample`` (which also stands for the YOLOv3
ports' nearest-neighbour ``Upsample``), ``BN`` and ``DenseImageData``.

OpenCV 4.x reads none of these three types (its importer has no ``Upsample`` or ``BN``;
a data layer is handed to it as an ``Input``), so nets using them are checked against the
fork's goldens and a numpy transcription of the fork's source only.
"""

from __future__ import annotations

import numpy as np

from ..base import OTHER, LayerType, register
from ..data import RuntimeData
from .segnet_pb2 import BNParameter, DenseImageDataParameter, UpsampleParameter


def _legacy_4d(layer, shape, what):
    """A bottom read through Caffe's legacy num()/channels()/height()/width(): missing
    axes are 1, more than 4 are refused."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > 4:
        layer.fail(f"{what} reads its bottom as (num, channels, height, width); {len(shape)} axes are too many")
    return shape + (1,) * (4 - len(shape))


# ---- Upsample -----------------------------------------------------------------------------

def segnet_upsample_size(layer, p, h: int, w: int) -> tuple:
    """SegNet's ``UpsampleLayer::LayerSetUp``/``Reshape``: ``upsample_h x upsample_w`` when
    both are given, else ``h * scale_h - pad_out_h`` by ``w * scale_w - pad_out_w``."""
    has_hw = p.HasField("upsample_h") and p.HasField("upsample_w")
    has_shw = p.HasField("scale_h") and p.HasField("scale_w")
    if not (has_hw or (not p.HasField("scale") and has_shw)
            or (not p.HasField("scale_h") and not p.HasField("scale_w"))):
        layer.fail("upsample_h and upsample_w are required, else scale, or scale_h and scale_w (not both)")
    if has_hw:
        uh, uw = int(p.upsample_h), int(p.upsample_w)
        if uh <= 1 or uw <= 1:
            layer.fail("upsample_h and upsample_w must be greater than 1")
        return uh, uw
    if not p.HasField("scale_h"):
        sh = sw = int(p.scale)
        if sh <= 1:
            layer.fail("scale must be greater than 1")
    else:
        sh, sw = int(p.scale_h), int(p.scale_w)
        if sh <= 1 or sw <= 1:
            layer.fail("scale_h and scale_w must be greater than 1")
    if p.pad_out_h and sh != 2:
        layer.fail("pad_out_h requires scale_h == 2 (otherwise the output size is ill-defined)")
    if p.pad_out_w and sw != 2:
        layer.fail("pad_out_w requires scale_w == 2 (otherwise the output size is ill-defined)")
    return h * sh - int(p.pad_out_h), w * sw - int(p.pad_out_w)


def unpool_reference(data: np.ndarray, mask: np.ndarray, out_hw) -> np.ndarray:
    """A numpy transcription of SegNet's ``UpsampleLayer::Forward_cpu``: zeros, then for
    each input position i in order, ``top[mask[i]] = data[i]`` per (n, c) plane (so a
    later i wins where two positions share a mask index)."""
    n, c, h, w = data.shape
    oh, ow = out_hw
    top = np.zeros((n, c, oh * ow), dtype=np.float32)
    d = data.reshape(n, c, h * w)
    m = mask.reshape(n, c, h * w)
    for a in range(n):
        for b in range(c):
            for i in range(h * w):
                idx = int(m[a, b, i])
                if idx >= oh * ow:
                    raise ValueError(f"upsample top index {idx} out of range")
                top[a, b, idx] = d[a, b, i]
    return top.reshape(n, c, oh, ow)


@register("Upsample")
class Upsample(LayerType):
    """``Upsample``: two incompatible layers share this name; the number of bottoms
    picks one (a plugin can replace the type: ``register_type("Upsample", cls,
    replace=True)``).

    **Two bottoms: SegNet's unpooling** (alexgkendall/caffe-segnet,
    ``src/caffe/layers/upsample_layer.cpp``; the same in ENet's caffe-enet).  Bottom 0 is
    the data, bottom 1 the mask of a MAX Pooling's second top (each value's flat
    position ``h * W + w`` in its channel plane), both ``(N, C, H, W)``.  Top:
    ``(N, C, upsample_h, upsample_w)`` when both are given, else ``(N, C, H * scale_h -
    pad_out_h, W * scale_w - pad_out_w)`` (``scale`` default 2 for both axes; ``pad_out``
    only with scale 2).  The top is zero except at the mask positions, where it takes the
    data (positions in order: where two share an index, the later wins; an index outside
    the top is a fatal error in the fork).  Lowering: ScatterElements of the data into a
    zero tensor ``(N, C, H_out * W_out)`` at the mask (cast to int64), along axis 2; the
    zeros come from ConstantOfShape (exact; onnxruntime applies the updates in order, as
    the fork does).

    **One bottom: the YOLOv3 ports' nearest-neighbour upsampling** (the Darknet-to-Caffe
    converters' ``upsample_layer.cpp``, e.g. ChenYingpeng/caffe-yolov3,
    eric612/MobileNet-YOLO): ``upsample_param { scale }`` (their schema's default is 1);
    the last two axes grow by ``scale`` and ``top[..., h, w] = bottom[..., h / scale, w /
    scale]``.  Lowering: Resize, nearest, ``asymmetric`` coordinates, ``floor`` (exact).

    No blobs.  OpenCV 4.x has no ``Upsample`` layer in its Caffe importer.
    """

    origin = "alexgkendall/caffe-segnet: upsample_layer.cpp (two bottoms); YOLOv3 ports: upsample_layer.cpp (one)"
    n_bottoms = (1, 2)
    fork_params = {"upsample_param": UpsampleParameter}

    def _yolo_scale(self):
        p = self.fork("upsample_param")
        scale = int(p.scale) if p.HasField("scale") else 1
        if scale < 1:
            self.fail("scale must be at least 1")
        return scale

    def outputs(self, bottoms):
        if len(bottoms) == 1:
            shape = tuple(int(d) for d in bottoms[0])
            if len(shape) < 2:
                self.fail(f"nearest-neighbour Upsample needs two spatial axes; the bottom is {list(shape)}")
            s = self._yolo_scale()
            return [shape[:-2] + (shape[-2] * s, shape[-1] * s)]
        data, mask = (tuple(int(d) for d in b) for b in bottoms)
        if len(data) != 4 or len(mask) != 4:
            self.fail("the data and mask bottoms must have 4 axes (num, channels, height, width)")
        if data != mask:
            self.fail(f"the mask {list(mask)} must have the data's shape {list(data)}")
        oh, ow = segnet_upsample_size(self, self.fork("upsample_param"), data[2], data[3])
        return [(data[0], data[1], oh, ow)]

    def lower(self, ctx):
        if len(ctx.inputs) == 1:
            s = float(self._yolo_scale())
            nd = len(ctx.bottom_shapes[0])
            scales = ctx.const([1.0] * (nd - 2) + [s, s], "scales")
            ctx.node("Resize", [ctx.inputs[0], "", scales], ctx.outputs[0], mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            return
        from onnx import TensorProto, helper

        n, c, h, w = ctx.bottom_shapes[0]
        top = ctx.top_shapes[0]
        plane = (n, c, top[2] * top[3])
        zeros = ctx.node("ConstantOfShape", [ctx.ints(plane, "plane")],
                         value=helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0]))
        data = ctx.reshape(ctx.inputs[0], (n, c, h * w))
        idx = ctx.node("Cast", [ctx.reshape(ctx.inputs[1], (n, c, h * w))], to=TensorProto.INT64)
        flat = ctx.node("ScatterElements", [zeros, idx, data], axis=2)
        ctx.reshape(flat, top, ctx.outputs[0])

    def sample_input(self, bottom, shape, rng):
        """A mask fed as a graph input: distinct valid positions of the top's plane per
        channel (what a MAX pooling's mask holds)."""
        if bottom != 1 or len(shape) != 4:
            return None
        n, c, h, w = (int(d) for d in shape)
        oh, ow = segnet_upsample_size(self, self.fork("upsample_param"), h, w)
        out = np.empty((n, c, h * w), dtype=np.float32)
        for a in range(n):
            for b in range(c):
                out[a, b] = rng.choice(oh * ow, size=h * w, replace=False)
        return out.reshape(shape)


# ---- BN -------------------------------------------------------------------------------------

#: the fork's fixed epsilon (``var_eps_`` in ``BNLayer::LayerSetUp``)
BN_EPS = np.float32(1e-9)


def bn_reference(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, mode: str) -> tuple:
    """A numpy transcription of SegNet's ``BNLayer::Forward_cpu`` for a 4-d float32 ``x``:
    ``(top, batch_mean, batch_variance)`` (the statistics only in LEARN mode)."""
    x = x.astype(np.float32)
    n, c, h, w = x.shape
    sc = scale.reshape(1, c, 1, 1).astype(np.float32)
    sh = shift.reshape(1, c, 1, 1).astype(np.float32)
    if mode == "INFERENCE":
        return (x * sc + sh).astype(np.float32), None, None
    spatial_mean = x.reshape(n, c, -1).mean(axis=2, dtype=np.float32)            # E over H, W
    mean = spatial_mean.mean(axis=0, dtype=np.float32)                           # then over N
    spatial_sq = (x * x).reshape(n, c, -1).mean(axis=2, dtype=np.float32)
    ex2 = spatial_sq.mean(axis=0, dtype=np.float32)
    var = (ex2 - mean * mean).astype(np.float32)                                 # E(X^2) - (EX)^2
    std = np.power(var + BN_EPS, np.float32(0.5)).astype(np.float32)
    xn = (x - mean.reshape(1, c, 1, 1)) / std.reshape(1, c, 1, 1)
    return (xn * sc + sh).astype(np.float32), mean.reshape(1, c, 1, 1), var.reshape(1, c, 1, 1)


@register("BN")
class BN(LayerType):
    """SegNet's batch normalisation (alexgkendall/caffe-segnet, ``src/caffe/layers/
    bn_layer.cpp``, ``BNLayer``; the same in ENet's caffe-enet).

    Blobs: ``scale`` and ``shift``, each ``[1, C, 1, 1]``, filled by ``bn_param``'s
    ``scale_filler`` and ``shift_filler`` (unset: Caffe's default filler, constant 0).
    ``--filler``/``--bias-filler`` leave them alone (role "other", like Scale's).
    The bottom is read as (num, channels, height, width) (missing axes 1); the top has
    those 4 axes.

    ``bn_mode: LEARN`` (the default): normalized with the current batch's per-channel
    statistics over N, H and W, **also in the TEST phase**: ``mean = E[x]``,
    ``var = E[x^2] - mean^2``, ``y = scale (x - mean) / sqrt(var + 1e-9) + shift``; the
    optional tops 1 and 2 are the batch mean and variance ``[1, C, 1, 1]``.
    ``bn_mode: INFERENCE``: ``y = scale * x + shift`` (the statistics folded into the
    blobs, as SegNet's ``compute_bn_statistics.py`` leaves them); tops 1 and 2, if any,
    stay zero.  Lowering: the same formulas with ReduceMean, Sub, Div, Mul, Add (exact up
    to float summation order).  OpenCV 4.x does not read ``BN``.
    """

    origin = "alexgkendall/caffe-segnet: bn_layer.cpp (BNLayer)"
    n_tops = (1, 3)
    roles = {"scale": OTHER, "shift": OTHER}
    fork_params = {"bn_param": BNParameter}

    def _shape(self, bottoms):
        return _legacy_4d(self, bottoms[0], "BN")

    def params(self, bottoms):
        c = self._shape(bottoms)[1]
        p = self.fork("bn_param")
        blobs = []
        for name, field in (("scale", "scale_filler"), ("shift", "shift_filler")):
            blobs.append(self.blob(name, (1, c, 1, 1), self.filler(p, field)))
        return blobs

    def outputs(self, bottoms):
        shape = self._shape(bottoms)
        stats = (1, shape[1], 1, 1)
        return [shape, stats, stats][:max(1, len(self.lp.top))]

    def mode(self) -> str:
        return BNParameter.BNMode.Name(self.fork("bn_param").bn_mode)

    def lower(self, ctx):
        shape = ctx.top_shapes[0]
        c = shape[1]
        x = ctx.inputs[0]
        if tuple(ctx.bottom_shapes[0]) != tuple(shape):
            x = ctx.reshape(x, shape)
        scale, shift = ctx.param(0), ctx.param(1)
        if self.mode() == "INFERENCE":
            ctx.node("Add", [ctx.node("Mul", [x, scale]), shift], ctx.outputs[0])
            for out in ctx.outputs[1:]:
                ctx.node("Identity", [ctx.const(np.zeros((1, c, 1, 1), np.float32), "zeros")], out)
            return
        ctx.warn("bn_mode LEARN: normalized with the batch's own statistics, as the fork computes it in "
                 "every phase (bn_mode: INFERENCE uses the folded scale and shift)")
        axes = [0, 2, 3]
        outs = ctx.outputs
        mean = ctx.reduce("ReduceMean", x, axes, out=outs[1] if len(outs) > 1 else None)
        ex2 = ctx.reduce("ReduceMean", ctx.node("Mul", [x, x]), axes)
        var = ctx.node("Sub", [ex2, ctx.node("Mul", [mean, mean])], outs[2] if len(outs) > 2 else None)
        std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar(BN_EPS, "eps")])])
        xn = ctx.node("Div", [ctx.node("Sub", [x, mean]), std])
        ctx.node("Add", [ctx.node("Mul", [xn, scale]), shift], outs[0])


# ---- DenseImageData -------------------------------------------------------------------------

@register("DenseImageData")
class DenseImageData(RuntimeData):
    """SegNet's data layer of image and label-image pairs (alexgkendall/caffe-segnet,
    ``src/caffe/layers/dense_image_data_layer.cpp``; ENet's fork adds
    ``label_divide_factor``).

    Tops: the images ``(batch_size, 3 or 1, H, W)`` and the label images
    ``(batch_size, 1, H, W)`` (``H / label_divide_factor`` in ENet's fork), where H x W is
    ``crop_height x crop_width``, else ``new_height x new_width``, else the first image's
    size: the shapes exist only at run time, so the data takes ``--input`` (e.g.
    ``--input data=1,3,360,480``); the label follows it unless given.  No blobs; in an ONNX export
    the tops are graph inputs.
    """

    origin = "alexgkendall/caffe-segnet: dense_image_data_layer.cpp (DenseImageDataLayer)"
    n_tops = (2, 2)
    runtime_source = "an image and label-image list"
    fork_params = {"dense_image_data_param": DenseImageDataParameter}

    def runtime_shape(self, top, first):
        """The label image, when not given: ``[N, 1, H / f, W / f]`` for data ``[N, C, H,
        W]`` (``f`` ENet's ``label_divide_factor``, default 1)."""
        if top != 1 or not first or len(first) != 4:
            return None
        f = max(int(self.fork("dense_image_data_param").label_divide_factor or 1), 1)
        return (first[0], 1, first[2] // f, first[3] // f)
