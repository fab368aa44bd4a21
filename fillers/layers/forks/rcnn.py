"""Region-based detectors: Fast/Faster R-CNN (rbgirshick/caffe-fast-rcnn), R-FCN
(daijifeng001/caffe-rfcn) and the C++ ports of Faster R-CNN's proposal layer.

None of these layers has parameter blobs.  ``ROIPooling`` and ``PSROIPooling`` are
lowered to ONNX exactly (standard ops only, the fork's integer rounding reproduced);
``Proposal`` is not (see its docstring); ``SmoothL1Loss`` is a loss, left out of an
inference export.

ONNX's ``MaxRoiPool`` is not used although onnxruntime's CPU kernel
(``core/providers/cpu/nn/roi_pool.cc``) is a copy of the fork's loop and, in onnxruntime
1.32, gives the fork's numbers (``tests/test_forks_rcnn.py`` checks it): the operator's
definition leaves the rounding open (other runtimes differ or lack it), and earlier
onnxruntime versions started each bin's maximum at ``numeric_limits<float>::min()`` (the
smallest *positive* float), so bins of negative values came out as 1.2e-38.  The
composition below uses only Slice/Pad/Max/Gather/arithmetic and is exact anywhere.
"""

from __future__ import annotations

import math

import numpy as np

from ..base import LayerType, register, shape_count
from . import rcnn_pb2

FAST_RCNN = "rbgirshick/caffe-fast-rcnn"
RFCN = "daijifeng001/caffe-rfcn"


# ---- helpers shared by the ROI layers ------------------------------------------------------

def _roi_count(shape) -> int:
    if not shape:
        LayerType.fail("the ROI bottom needs at least one axis (the number of ROIs)")
    n = int(shape[0])
    per = shape_count(shape[1:]) if len(shape) > 1 else 1
    if per < 5:
        LayerType.fail(f"each ROI needs 5 values [batch, x1, y1, x2, y2]; the ROI bottom {list(shape)} has {per}")
    return n


def _check_map(shape, what="the feature map"):
    if len(shape) != 4:
        LayerType.fail(f"{what} must be 4-d (N, C, H, W), got {list(shape)}")


def sample_rois(n_rois: int, per_roi: int, image_h: int, image_w: int, batch: int, rng) -> np.ndarray:
    """Valid regions of interest for the export check: rows ``[b, x1, y1, x2, y2]`` (then
    zeros up to ``per_roi`` values) with integer corners inside an ``image_h`` x ``image_w``
    image, ``b`` below ``batch``; boxes of all sizes, the first touching the top-left
    border, the last a single pixel at the bottom-right corner."""
    h, w = max(int(image_h), 1), max(int(image_w), 1)
    x1 = np.floor(rng.uniform(0, w, n_rois))
    y1 = np.floor(rng.uniform(0, h, n_rois))
    x2 = np.minimum(x1 + np.floor(rng.uniform(0, w, n_rois)), w - 1)
    y2 = np.minimum(y1 + np.floor(rng.uniform(0, h, n_rois)), h - 1)
    b = rng.integers(0, max(int(batch), 1), n_rois)
    rois = np.zeros((n_rois, per_roi), dtype=np.float32)
    rois[:, :5] = np.stack([b, x1, y1, x2, y2], axis=1)
    if n_rois > 1:
        rois[0, 1:5] = [0, 0, w - 1, min(h - 1, 2)]
        rois[-1, 1:5] = [w - 1, h - 1, w - 1, h - 1]
    return rois


class _ROILayer(LayerType):
    """Two bottoms (the feature map and the ROIs ``[R, 5]``), one top."""

    n_bottoms = (2, 2)
    n_tops = (1, 1)

    def spatial_scale(self) -> float:
        raise NotImplementedError

    def outputs(self, bottoms):
        self._bottom_shapes = [tuple(int(d) for d in s) for s in bottoms]
        return self.roi_outputs(bottoms)

    def sample_input(self, bottom, shape, rng):
        """The ROI bottom gets valid boxes ``[b, x1, y1, x2, y2]`` in image coordinates
        (the feature map's size divided by ``spatial_scale``), ``b`` a valid batch index."""
        if bottom != 1 or not getattr(self, "_bottom_shapes", None):
            return None
        n, _, fh, fw = self._bottom_shapes[0]
        scale = self.spatial_scale() or 1.0
        image_h = max(1, int(math.floor(fh / scale)))
        image_w = max(1, int(math.floor(fw / scale)))
        per = shape_count(shape[1:]) if len(shape) > 1 else 5
        return sample_rois(int(shape[0]), per, image_h, image_w, n, rng).reshape(shape)

    # -- ONNX pieces ------------------------------------------------------------------------
    @staticmethod
    def _roi_columns(ctx):
        """The ROI bottom as five [R, 1] float tensors: batch index, x1, y1, x2, y2 (Caffe
        steps through the blob by ``offset(1)``, reading the first five values)."""
        shape = ctx.bottom_shapes[1]
        r = int(shape[0])
        per = shape_count(shape[1:]) if len(shape) > 1 else 1
        rois = ctx.reshape(ctx.inputs[1], [r, per])
        if per != 5:
            rois = ctx.node("Slice", [rois, ctx.ints([0], "start"), ctx.ints([5], "end"), ctx.ints([1], "axis")])
        return ctx.split(rois, [1] * 5, axis=1)


def _round_half_away(ctx, x):
    """C's ``round``: halves away from zero (ONNX's Round goes to even), exactly: the
    fraction ``x - floor(x)`` of a float32 is exact."""
    fl = ctx.node("Floor", [x])
    frac = ctx.node("Sub", [x, fl])
    half = ctx.scalar(0.5, "half")
    zero = ctx.scalar(0.0, "zero")
    up_pos = ctx.node("Cast", [ctx.node("GreaterOrEqual", [frac, half])], to=1)
    up_neg = ctx.node("Cast", [ctx.node("Greater", [frac, half])], to=1)
    nonneg = ctx.node("GreaterOrEqual", [x, zero])
    return ctx.node("Add", [fl, ctx.node("Where", [nonneg, up_pos, up_neg])])


def _clip(ctx, x, hi):
    """min(max(x, 0), hi) on float tensors (Caffe clips bin boundaries to the map)."""
    return ctx.node("Min", [ctx.node("Max", [x, ctx.scalar(0.0, "zero")]), ctx.scalar(float(hi), "hi")])


# ---- ROIPooling ------------------------------------------------------------------------------

@register("ROIPooling")
class ROIPooling(_ROILayer):
    """Fast R-CNN's ROI max pooling (rbgirshick/caffe-fast-rcnn,
    ``src/caffe/layers/roi_pooling_layer.cpp``).

    Bottoms: the feature map ``[N, C, H, W]`` and the ROIs ``[R, 5]`` (rows
    ``[batch, x1, y1, x2, y2]`` in image pixels); top ``[R, C, pooled_h, pooled_w]``.
    For each ROI, as the fork computes it (float32 throughout):

    * each corner times ``spatial_scale``, rounded half away from zero (C ``round``);
      the batch index truncated to an int;
    * ROI size inclusive: ``max(end - start + 1, 1)``; bin size = size / pooled size;
    * bin ``p`` covers ``[floor(p * bin), ceil((p + 1) * bin))`` from the ROI start,
      clipped to ``[0, H]`` (``[0, W]``);
    * the maximum over the bin; an empty bin gives 0.

    OpenCV (``pooling_layer.cpp``, type ROI) computes the same for ROIs inside the image:
    it truncates ``start + p * bin`` instead of flooring ``p * bin`` before adding the
    start, which differs only for ROIs starting left of / above the map.

    ONNX: exact, with standard ops.  A sparse table of 2^i x 2^j window maxima (each a
    pairwise Max of the previous level and its shift, so ``(log2 H + 1)(log2 W + 1)``
    copies of the map) answers
    every bin with four Gathers (a maximum over overlapping windows is exact); the bin
    boundaries are computed with the fork's float32 arithmetic.
    """

    origin = f"{FAST_RCNN}: src/caffe/layers/roi_pooling_layer.cpp"
    fork_params = {"roi_pooling_param": rcnn_pb2.ROIPoolingParameter}

    def param(self):
        return self.fork("roi_pooling_param")

    def spatial_scale(self):
        return float(self.param().spatial_scale)

    def roi_outputs(self, bottoms):
        p = self.param()
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            self.fail("roi_pooling_param needs pooled_h > 0 and pooled_w > 0")
        _check_map(bottoms[0])
        r = _roi_count(bottoms[1])
        return [(r, int(bottoms[0][1]), int(p.pooled_h), int(p.pooled_w))]

    def lower(self, ctx):
        p = self.param()
        ph_n, pw_n = int(p.pooled_h), int(p.pooled_w)
        n, c, h, w = ctx.bottom_shapes[0]
        r = ctx.top_shapes[0][0]
        b, x1, y1, x2, y2 = self._roi_columns(ctx)
        scale = ctx.scalar(float(np.float32(p.spatial_scale)), "spatial_scale")
        xs, ys, xe, ye = (_round_half_away(ctx, ctx.node("Mul", [v, scale])) for v in (x1, y1, x2, y2))
        one = ctx.scalar(1.0, "one")

        def bins(start, end, pooled, size, hint):
            length = ctx.node("Max", [ctx.node("Add", [ctx.node("Sub", [end, start]), one]), one])
            bin_size = ctx.node("Div", [length, ctx.scalar(float(pooled), f"pooled_{hint}")])
            idx = ctx.const(np.arange(pooled, dtype=np.float32).reshape(1, pooled), f"{hint}_index")
            idx1 = ctx.const(np.arange(1, pooled + 1, dtype=np.float32).reshape(1, pooled), f"{hint}_index1")
            lo = ctx.node("Floor", [ctx.node("Mul", [idx, bin_size])])
            hi = ctx.node("Ceil", [ctx.node("Mul", [idx1, bin_size])])
            lo = _clip(ctx, ctx.node("Add", [lo, start]), size)
            hi = _clip(ctx, ctx.node("Add", [hi, start]), size)
            empty = ctx.node("LessOrEqual", [hi, lo])
            # a non-empty query window of the right length, inside the map
            lo_q = ctx.node("Min", [lo, ctx.scalar(float(size - 1), f"{hint}_last")])
            span = ctx.node("Max", [ctx.node("Sub", [hi, lo]), one])
            lo_i = ctx.node("Cast", [lo_q], to=7)
            span_i = ctx.node("Cast", [span], to=7)
            # level k = floor(log2 span) and 2^k, by table lookup
            k_tab = [0] + [int(math.floor(math.log2(v))) for v in range(1, size + 1)]
            level = ctx.node("Gather", [ctx.ints(k_tab, f"{hint}_log2"), span_i])
            width = ctx.node("Gather", [ctx.ints([1 << k for k in k_tab], f"{hint}_pow2"), span_i])
            lo2 = ctx.node("Sub", [ctx.node("Add", [lo_i, span_i]), width])
            return empty, level, lo_i, lo2, len(set(k_tab[1:]))

        empty_h, lev_h, h1, h2, kh_n = bins(ys, ye, ph_n, h, "h")
        empty_w, lev_w, w1, w2, kw_n = bins(xs, xe, pw_n, w, "w")

        # the sparse table T[i, j] = max over [y, y + 2^i) x [x, x + 2^j), stacked
        def doubled(x, axis, d, size):
            # max(x[.., y], x[.., y + d]); positions y + d >= size are padded with 0 (a
            # level-k query only reads positions y <= size - 2^k, where y + d is inside)
            tail = ctx.node("Slice", [x, ctx.ints([d], "d"), ctx.ints([size], "size"), ctx.ints([axis], "axis")])
            pads = [0] * 8
            pads[4 + axis] = d
            return ctx.node("Max", [x, ctx.node("Pad", [tail, ctx.ints(pads, "pads")])])

        rows = []
        cur_row = ctx.inputs[0]
        for i in range(kh_n):
            if i > 0:
                cur_row = doubled(cur_row, 2, 1 << (i - 1), h)
            cur = cur_row
            for j in range(kw_n):
                if j > 0:
                    cur = doubled(cur, 3, 1 << (j - 1), w)
                rows.append(cur)
        table = rows[0] if len(rows) == 1 else ctx.node("Concat", rows, axis=0)  # [K*N, C, H, W]
        flat = ctx.reshape(table, [-1])

        def as4(x, shape):
            return ctx.reshape(x, shape)

        i64 = lambda v, hint: ctx.ints([v], hint)  # noqa: E731
        lev_h4 = as4(lev_h, [r, 1, ph_n, 1])
        lev_w4 = as4(lev_w, [r, 1, 1, pw_n])
        level = ctx.node("Add", [ctx.node("Mul", [lev_h4, i64(kw_n, "kw")]), lev_w4])  # [R,1,PH,PW]
        bi = as4(ctx.node("Cast", [b], to=7), [r, 1, 1, 1])
        plane = ctx.node("Add", [ctx.node("Mul", [level, i64(n, "n")]), bi])
        chans = ctx.const(np.arange(c, dtype=np.int64).reshape(1, c, 1, 1), "channels", np.int64)
        plane = ctx.node("Add", [ctx.node("Mul", [plane, i64(c, "c")]), chans])  # [R,C,PH,PW]
        base = ctx.node("Mul", [plane, i64(h * w, "hw")])
        corners = []
        for hh in (h1, h2):
            rowoff = ctx.node("Mul", [as4(hh, [r, 1, ph_n, 1]), i64(w, "w")])
            for ww in (w1, w2):
                off = ctx.node("Add", [rowoff, as4(ww, [r, 1, 1, pw_n])])
                corners.append(ctx.node("Gather", [flat, ctx.node("Add", [base, off])]))
        best = ctx.node("Max", corners)
        empty = ctx.node("Or", [as4(empty_h, [r, 1, ph_n, 1]), as4(empty_w, [r, 1, 1, pw_n])])
        ctx.node("Where", [empty, ctx.scalar(0.0, "zero"), best], ctx.outputs[0])


# ---- PSROIPooling ----------------------------------------------------------------------------

@register("PSROIPooling")
class PSROIPooling(_ROILayer):
    """R-FCN's position-sensitive ROI average pooling (daijifeng001/caffe-rfcn,
    ``src/caffe/layers/psroi_pooling_layer.cu``; the fork has no CPU forward).

    Bottoms: the score maps ``[N, output_dim * group_size^2, H, W]`` and the ROIs
    ``[R, 5]``; top ``[R, output_dim, group_size, group_size]``.  As the fork computes it
    (float32):

    * ``start = round(x1) * spatial_scale``, ``end = (round(x2) + 1) * spatial_scale``
      (rounded in image pixels, half away from zero, *before* scaling: unlike
      ROIPooling); ROI size ``max(end - start, 0.1)``; bin = size / group_size;
    * bin ``p`` covers ``[floor(p * bin + start), ceil((p + 1) * bin + start))``,
      clipped to the map;
    * top channel ``d`` at bin ``(ph, pw)`` averages input channel
      ``(d * group_size + ph) * group_size + pw``; an empty bin gives 0.

    The products and sums are rounded one at a time, as the source is written (a CUDA
    build may fuse ``p * bin + start`` into one FMA, which can move a boundary that
    lands within one float rounding of an integer).  OpenCV (``pooling_layer.cpp``, type
    PSROI) computes the same formulas.

    ONNX: exact up to the order of summation: each bin's sum comes from a float64
    integral image (CumSum) with four Gathers.
    """

    origin = f"{RFCN}: src/caffe/layers/psroi_pooling_layer.cu"
    fork_params = {"psroi_pooling_param": rcnn_pb2.PSROIPoolingParameter}

    def param(self):
        return self.fork("psroi_pooling_param")

    def spatial_scale(self):
        return float(self.param().spatial_scale)

    def roi_outputs(self, bottoms):
        p = self.param()
        for f in ("spatial_scale", "output_dim", "group_size"):
            if not p.HasField(f):
                self.fail(f"psroi_pooling_param needs {f} (a required field of the fork)")
        if p.output_dim <= 0 or p.group_size <= 0:
            self.fail("psroi_pooling_param needs output_dim > 0 and group_size > 0")
        _check_map(bottoms[0])
        g = int(p.group_size)
        if int(bottoms[0][1]) != p.output_dim * g * g:
            self.fail(f"the input has {bottoms[0][1]} channels; output_dim * group_size^2 = "
                      f"{p.output_dim * g * g}")
        r = _roi_count(bottoms[1])
        return [(r, int(p.output_dim), g, g)]

    def lower(self, ctx):
        p = self.param()
        g, d = int(p.group_size), int(p.output_dim)
        n, c, h, w = ctx.bottom_shapes[0]
        r = ctx.top_shapes[0][0]
        b, x1, y1, x2, y2 = self._roi_columns(ctx)
        scale = ctx.scalar(float(np.float32(p.spatial_scale)), "spatial_scale")
        one = ctx.scalar(1.0, "one")
        xs = ctx.node("Mul", [_round_half_away(ctx, x1), scale])
        ys = ctx.node("Mul", [_round_half_away(ctx, y1), scale])
        xe = ctx.node("Mul", [ctx.node("Add", [_round_half_away(ctx, x2), one]), scale])
        ye = ctx.node("Mul", [ctx.node("Add", [_round_half_away(ctx, y2), one]), scale])
        idx = ctx.const(np.arange(g, dtype=np.float32).reshape(1, g), "bin_index")
        idx1 = ctx.const(np.arange(1, g + 1, dtype=np.float32).reshape(1, g), "bin_index1")

        def bins(start, end, size):
            length = ctx.node("Max", [ctx.node("Sub", [end, start]), ctx.scalar(float(np.float32(0.1)), "min_size")])
            bin_size = ctx.node("Div", [length, ctx.scalar(float(g), "group")])
            lo = ctx.node("Floor", [ctx.node("Add", [ctx.node("Mul", [idx, bin_size]), start])])
            hi = ctx.node("Ceil", [ctx.node("Add", [ctx.node("Mul", [idx1, bin_size]), start])])
            lo, hi = _clip(ctx, lo, size), _clip(ctx, hi, size)
            return lo, hi

        h_lo, h_hi = bins(ys, ye, h)
        w_lo, w_hi = bins(xs, xe, w)
        hl4, hh4 = (ctx.reshape(v, [r, 1, g, 1]) for v in (h_lo, h_hi))
        wl4, wh4 = (ctx.reshape(v, [r, 1, 1, g]) for v in (w_lo, w_hi))
        empty = ctx.node("Or", [ctx.node("LessOrEqual", [hh4, hl4]), ctx.node("LessOrEqual", [wh4, wl4])])
        area = ctx.node("Mul", [ctx.node("Sub", [hh4, hl4]), ctx.node("Sub", [wh4, wl4])])
        area = ctx.node("Cast", [ctx.node("Max", [area, one])], to=11)

        # integral image S[n, c, y, x] = sum of X[n, c, :y, :x], in float64
        x64 = ctx.node("Cast", [ctx.inputs[0]], to=11)
        s = ctx.node("CumSum", [x64, ctx.ints([2], "axis2")])
        s = ctx.node("CumSum", [s, ctx.ints([3], "axis3")])
        s = ctx.node("Pad", [s, ctx.ints([0, 0, 1, 1, 0, 0, 0, 0], "pads")])
        flat = ctx.reshape(s, [-1])
        hw1 = (h + 1) * (w + 1)
        chan = ((np.arange(d).reshape(d, 1, 1) * g + np.arange(g).reshape(1, g, 1)) * g
                + np.arange(g).reshape(1, 1, g)).reshape(1, d, g, g).astype(np.int64)
        bi = ctx.reshape(ctx.node("Cast", [b], to=7), [r, 1, 1, 1])
        plane = ctx.node("Add", [ctx.node("Mul", [bi, ctx.ints([c], "c")]), ctx.const(chan, "channels", np.int64)])
        base = ctx.node("Mul", [plane, ctx.ints([hw1], "hw1")])  # [R, D, G, G]

        def at(hv, wv):
            hi = ctx.node("Cast", [hv], to=7)
            wi = ctx.node("Cast", [wv], to=7)
            off = ctx.node("Add", [ctx.node("Mul", [hi, ctx.ints([w + 1], "w1")]), wi])
            return ctx.node("Gather", [flat, ctx.node("Add", [base, off])])

        total = ctx.node("Add", [ctx.node("Sub", [at(hh4, wh4), at(hl4, wh4)]),
                                 ctx.node("Sub", [at(hl4, wl4), at(hh4, wl4)])])
        mean = ctx.node("Cast", [ctx.node("Div", [total, area])], to=1)
        ctx.node("Where", [empty, ctx.scalar(0.0, "zero"), mean], ctx.outputs[0])


# ---- Proposal --------------------------------------------------------------------------------

@register("Proposal")
class Proposal(LayerType):
    """Faster R-CNN's region proposal layer as ported to C++ (the ``ProposalParameter``
    of Intel's Caffe-like Proposal, read by OpenCV's ``proposal_layer.cpp`` and OpenVINO;
    the same algorithm as py-faster-rcnn's ``lib/rpn/proposal_layer.py``).

    Bottoms: the RPN objectness ``[N, 2A, H, W]`` (background scores for the A anchors,
    then foreground), the box deltas ``[N, 4A, H, W]`` and ``im_info`` ``[N, 3]`` (image
    height, width and scale); A = len(ratio) * len(scale) anchors per cell (defaults
    ratios 0.5, 1, 2 and scales 8, 16, 32, as py-faster-rcnn).  It generates the anchors
    of ``base_size`` at every ``feat_stride`` step, applies the deltas, clips to the
    image, drops boxes smaller than ``min_size * im_info[2]``, keeps the
    ``pre_nms_topn`` best, runs NMS at ``nms_thresh`` and keeps ``post_nms_topn``.

    Top ``rois``: ``[post_nms_topn, 5]`` rows ``[0, x1, y1, x2, y2]`` (this tool fixes N
    at post_nms_topn, the size Caffe's ports reserve; the ports shrink it at run time when
    fewer boxes survive); an optional second top ``scores`` ``[post_nms_topn, 1]``.

    ONNX: left out.  The number of boxes surviving the size filter and NMS depends on the
    data, and ONNX's NonMaxSuppression neither pads to a fixed count nor reproduces the
    ports' ordering of ties, so no fixed-shape graph equals the layer.
    """

    origin = "C++ ports of py-faster-rcnn's proposal layer (Intel/OpenCV ProposalParameter): proposal_layer.cpp"
    fork_params = {"proposal_param": rcnn_pb2.ProposalParameter}
    n_bottoms = (3, 3)
    n_tops = (1, 2)

    def param(self):
        return self.fork("proposal_param")

    def anchors_per_cell(self) -> int:
        p = self.param()
        return (len(p.ratio) or 3) * (len(p.scale) or 3)

    def outputs(self, bottoms):
        self._bottom_shapes = [tuple(int(d) for d in s) for s in bottoms]
        p = self.param()
        if p.post_nms_topn <= 0:
            self.fail("proposal_param needs post_nms_topn > 0")
        _check_map(bottoms[0], "the objectness blob")
        a = self.anchors_per_cell()
        if int(bottoms[0][1]) != 2 * a:
            self.fail(f"the objectness blob has {bottoms[0][1]} channels; 2 x {a} anchors = {2 * a} expected")
        if len(bottoms[1]) != 4 or int(bottoms[1][1]) != 4 * a or tuple(bottoms[1][2:]) != tuple(bottoms[0][2:]):
            self.fail(f"the box deltas must be [N, {4 * a}, {bottoms[0][2]}, {bottoms[0][3]}], got {list(bottoms[1])}")
        if int(np.prod(bottoms[2][1:], dtype=np.int64)) < 3:
            self.fail(f"im_info needs 3 values per image (height, width, scale), got {list(bottoms[2])}")
        k = int(p.post_nms_topn)
        return [(k, 5), (k, 1)][:len(self.lp.top)]

    def sample_input(self, bottom, shape, rng):
        """``im_info``: the image size the feature map stands for (feature size times
        ``feat_stride``) and scale 1; the objectness as probabilities in [0, 1]."""
        shapes = getattr(self, "_bottom_shapes", None)
        if not shapes:
            return None
        if bottom == 2:
            _, _, fh, fw = shapes[0]
            stride = int(self.param().feat_stride)
            info = np.zeros(shape, dtype=np.float32).reshape(int(shape[0]), -1)
            info[:, 0], info[:, 1], info[:, 2] = fh * stride, fw * stride, 1.0
            return info.reshape(shape)
        if bottom == 0:
            return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
        return None

    def lower(self, ctx):
        ctx.leave_out("the number of proposals surviving NMS depends on the data (the C++ ports' ordering and "
                        "padding cannot be expressed with a fixed-shape ONNX graph)")


# ---- SmoothL1Loss ----------------------------------------------------------------------------

@register("SmoothL1Loss")
class SmoothL1Loss(LayerType):
    """Fast/Faster R-CNN's smooth L1 box regression loss (rbgirshick/caffe-fast-rcnn,
    ``src/caffe/layers/smooth_L1_loss_layer.cpp``; the faster-rcnn branch adds ``sigma``
    and the inside/outside weights: 2 or 4 bottoms of one shape).  A scalar top; a
    training layer, left out of an inference export."""

    origin = f"{FAST_RCNN}: src/caffe/layers/smooth_L1_loss_layer.cpp"
    fork_params = {"smooth_l1_loss_param": rcnn_pb2.SmoothL1LossParameter}
    n_bottoms = (2, 4)
    n_tops = (1, 1)
    training_only = True
    auto_tops = True

    def outputs(self, bottoms):
        if len(bottoms) == 3:
            self.fail("with weights, give both the inside and the outside weights (4 bottoms)")
        first = tuple(bottoms[0])
        if len(first) < 1:
            self.fail("the predictions need at least one axis")
        for i, s in enumerate(bottoms[1:], 1):
            if int(s[0]) != int(first[0]) or self.count(s, 1) != self.count(first, 1):
                self.fail(f"bottom {i} {list(s)} does not match the predictions {list(first)}")
        return [()]
