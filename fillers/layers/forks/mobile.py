"""Layer types of the mobile-net ports of Caffe and of SENet: depthwise convolutions
(``ConvolutionDepthwise``, ``DepthwiseConvolution``), ``ReLU6``, ``ShuffleChannel`` and
``Axpy``.

OpenCV 4.x reads ``ConvolutionDepthwise`` (as Convolution), ``ReLU6``, ``ShuffleChannel``
and ``Axpy``, but computes ``Axpy`` differently from SENet's source (see :class:`Axpy`);
it does not know ``DepthwiseConvolution``.
"""

from __future__ import annotations

import numpy as np

from ..base import LayerType, register
from ..conv import Convolution
from .mobile_pb2 import ReLU6Parameter, ShuffleChannelParameter


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(Convolution):
    """Depthwise convolution of the ShuffleNet/MobileNet ports (farmingyard/ShuffleNet's
    ``conv_dw_layer.cpp``, ``ConvolutionDepthwiseLayer``, copied into many forks).

    Each input channel is convolved with its own ``kh x kw`` kernel: a Convolution with
    ``group = num_output = C_in``.  The fork reads only ``kernel_size``/``kernel_h``/
    ``kernel_w``, ``stride``, ``pad``, ``dilation``, ``bias_term`` and the fillers from
    ``convolution_param``; it **ignores** ``num_output`` and ``group`` (the top always has
    ``C_in`` channels), and so does this type.  Shapes: one bottom ``(N, C, H, W)``, top
    ``(N, C, (H + 2 pad - ext) / stride + 1, ...)`` with ``ext = dilation (k - 1) + 1``.
    Blobs: weights ``[C, 1, kh, kw]`` (``weight_filler``, default constant 0), bias ``[C]``
    (``bias_filler``, default constant 0) when ``bias_term``; Caffe's fans are those of
    that shape (fan_in ``kh kw``).  Lowering: ONNX Conv with ``group = C`` (exact).
    OpenCV reads the type as a Convolution whose groups follow from the weights' shape,
    which equals the fork's output when ``num_output`` is ``C``.
    """

    origin = "farmingyard/ShuffleNet: conv_dw_layer.cpp (ConvolutionDepthwiseLayer)"

    def __init__(self, lp):
        super().__init__(lp)
        # the fork's settings live in a private copy; the file's layer stays as written
        own = type(lp)()
        own.CopyFrom(lp)
        self.lp = own
        self._written = (int(lp.convolution_param.num_output), int(lp.convolution_param.group))
        self._channels = None

    def _setup(self, bottoms):
        if len(bottoms) != 1:
            self.fail("ConvolutionDepthwise takes one bottom")
        if len(bottoms[0]) != 4:
            self.fail(f"ConvolutionDepthwise needs a 4-d bottom (N, C, H, W), not {list(bottoms[0])}")
        c = int(bottoms[0][1])
        self._channels = c
        p = self.lp.convolution_param
        p.group = c
        p.num_output = c
        return super()._setup(bottoms)

    def opencv_caveat(self):
        num_output, _ = self._written
        if self._channels is not None and num_output != self._channels:
            return (f"OpenCV reads ConvolutionDepthwise as a Convolution of num_output {num_output}; the fork "
                    f"ignores num_output and keeps the {self._channels} input channels")
        return None


@register("DepthwiseConvolution")
class DepthwiseConvolution(Convolution):
    """Depthwise convolution of the MobileNet ports (yonghenglh6/DepthwiseConvolution,
    ``depthwise_conv_layer.cpp``, ``DepthwiseConvolutionLayer``; e.g. in
    eric612/MobileNet-YOLO).

    A ``BaseConvolutionLayer``: its set-up, blobs, fillers and CPU forward are
    Convolution's, with the prototxt's ``num_output`` and ``group`` (the files set
    ``group = num_output = C_in``; its GPU kernel assumes that).  So this type is exactly
    :class:`fillers.layers.conv.Convolution`: weights ``[num_output, C_in / group, kh,
    kw]``, bias ``[num_output]``, default fillers constant 0; lowered to ONNX Conv with
    ``group`` (exact).  OpenCV 4.x does not know this type name.
    """

    origin = "yonghenglh6/DepthwiseConvolution: depthwise_conv_layer.cpp (DepthwiseConvolutionLayer)"


@register("ReLU6")
class ReLU6(LayerType):
    """ReLU6 of the MobileNet-v2 ports (e.g. eric612/MobileNet-YOLO, ``relu6_layer.cpp``):
    ``y = min(max(x, 0) + negative_slope * min(x, 0), 6)`` element-wise
    (``relu6_param { negative_slope }``, default 0).  No blobs; top = bottom's shape.
    Lowering: ``Clip(x, 0, 6)`` for slope 0, else ``Min(LeakyRelu(x, slope), 6)`` (exact).
    OpenCV's ReLU6 clips to [0, 6] and ignores ``negative_slope``."""

    origin = "eric612/MobileNet-YOLO: relu6_layer.cpp (ReLU6Layer)"
    fork_params = {"relu6_param": ReLU6Parameter}

    def lower(self, ctx):
        slope = float(np.float32(self.fork("relu6_param").negative_slope))
        if slope == 0.0:
            ctx.node("Clip", [ctx.inputs[0], ctx.scalar(0.0, "zero"), ctx.scalar(6.0, "six")], ctx.outputs[0])
        else:
            leaky = ctx.node("LeakyRelu", [ctx.inputs[0]], alpha=slope)
            ctx.node("Min", [leaky, ctx.scalar(6.0, "six")], ctx.outputs[0])

    def opencv_caveat(self):
        slope = float(self.fork("relu6_param").negative_slope)
        if slope != 0.0:
            return f"OpenCV's ReLU6 ignores negative_slope (here {slope:g})"
        return None


@register("ShuffleChannel")
class ShuffleChannel(LayerType):
    """ShuffleNet's channel shuffle (farmingyard/ShuffleNet, ``shuffle_channel_layer.cpp``).

    ``shuffle_channel_param { group }`` (default 1): the C channels are viewed as a
    ``group x (C / group)`` matrix and transposed, i.e. output channel
    ``j * group + i`` is input channel ``i * (C / group) + j``.  ``group`` must divide C.
    No blobs; top = bottom's shape (axes after 1 are moved together).  Lowering:
    Reshape ``(N, group, C / group, rest)``, Transpose, Reshape back (exact).  OpenCV
    computes the same.
    """

    origin = "farmingyard/ShuffleNet: shuffle_channel_layer.cpp (ShuffleChannelLayer)"
    fork_params = {"shuffle_channel_param": ShuffleChannelParameter}

    def _group(self, shape):
        group = int(self.fork("shuffle_channel_param").group)
        if group <= 0:
            self.fail("group must be greater than 0")
        if len(shape) < 2:
            self.fail(f"ShuffleChannel needs a channel axis; the bottom is {list(shape)}")
        if int(shape[1]) % group:
            self.fail(f"{shape[1]} channels cannot be shuffled in {group} groups (group must divide them)")
        return group

    def outputs(self, bottoms):
        self._group(bottoms[0])
        return [tuple(bottoms[0])]

    def lower(self, ctx):
        shape = ctx.bottom_shapes[0]
        group = self._group(shape)
        n, c = int(shape[0]), int(shape[1])
        rest = self.count(shape, 2)
        x = ctx.reshape(ctx.inputs[0], (n, group, c // group, rest))
        t = ctx.node("Transpose", [x], perm=[0, 2, 1, 3])
        ctx.reshape(t, shape, ctx.outputs[0])


@register("Axpy")
class Axpy(LayerType):
    """SENet's Axpy (hujie-frank/SENet, ``axpy_layer.cpp``): ``F = a * X + Y``.

    Bottoms: ``a`` (N x C, or N x C x 1 x 1: one gain per sample and channel), ``X`` and
    ``Y`` (both N x C x ...; the same shape).  Top: X's shape.  No blobs.  Caffe copies Y
    and adds ``a[n, c] * X[n, c, :]`` (``caffe_axpy``).  Lowering: ``Add(Mul(X, a), Y)``
    with ``a`` reshaped to broadcast (exact).

    OpenCV's Caffe importer turns Axpy into Scale + Eltwise but wires the bottoms the
    other way round: it computes ``a * Y + X`` (bottom 2 scaled, bottom 1 added).  This
    type follows SENet's source; the export check does not compare it with OpenCV.
    """

    origin = "hujie-frank/SENet: axpy_layer.cpp (AxpyLayer)"
    n_bottoms = (3, 3)

    def outputs(self, bottoms):
        a, x, y = (tuple(int(d) for d in b) for b in bottoms)
        if len(x) < 2 or len(a) < 2:
            self.fail("Axpy needs a channel axis in its bottoms")
        if a[0] != x[0] or a[1] != x[1]:
            self.fail(f"the scale bottom {list(a)} must match X {list(x)} on axes 0 and 1")
        if len(a) == 4 and (a[2] != 1 or a[3] != 1):
            self.fail(f"the scale bottom {list(a)} must be N x C x 1 x 1")
        if self.count(a) != a[0] * a[1]:
            self.fail(f"the scale bottom {list(a)} must hold one value per sample and channel")
        if x != y:
            self.fail(f"X {list(x)} and Y {list(y)} must have the same shape")
        return [x]

    def lower(self, ctx):
        a_shape, x_shape = ctx.bottom_shapes[0], ctx.bottom_shapes[1]
        view = (int(x_shape[0]), int(x_shape[1])) + (1,) * (len(x_shape) - 2)
        a = ctx.inputs[0] if tuple(a_shape) == view else ctx.reshape(ctx.inputs[0], view)
        ax = ctx.node("Mul", [ctx.inputs[1], a])
        ctx.node("Add", [ax, ctx.inputs[2]], ctx.outputs[0])

    def opencv_caveat(self):
        return "OpenCV computes Axpy as a * bottom 2 + bottom 1, SENet's source as a * bottom 1 + bottom 2"
