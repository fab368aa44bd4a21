"""Layer types of the SSD fork of Caffe: weiliu89/caffe, branch ``ssd`` (the goldens in
``../shared/golden-ssd`` come from its commit 4817bf8b).

``Normalize``, ``Permute``, ``PriorBox``, ``DetectionOutput`` (inference), ``AnnotatedData``
and ``MultiBoxLoss`` (training).  Their parameter messages are the fork's, restated in
``proto/forks/ssd.proto`` (generated into :mod:`ssd_pb2`).  Each type's docstring names
the fork's C++ source it follows and states what that source computes; where OpenCV's
importer (``modules/dnn/src/layers/*``) computes something else, the docstring says so and
the fork wins.
"""

from __future__ import annotations

import numpy as np

from ..base import OTHER, LayerType, register
from ..data import RuntimeData
from ..loss import Loss
from . import ssd_pb2

_FORK = "weiliu89/caffe (ssd branch): src/caffe/layers/"
_CODE = ssd_pb2.PriorBoxParameter
FLT_MAX = float(np.finfo(np.float32).max)


# ---- Normalize -----------------------------------------------------------------------------

@register("Normalize")
class Normalize(LayerType):
    """L2 normalisation with a learned scale (ParseNet), as the SSD fork's
    ``src/caffe/layers/normalize_layer.cpp`` computes it.

    ``across_spatial`` (default true): per item, ``y = x / sqrt(sum(x^2 over C*H*W) + eps)``;
    otherwise per position, ``y = x / sqrt(sum_c x^2 + eps)``.  ``eps`` (default 1e-10) is
    added to the sum of squares *before* the square root.  Then ``y *= scale``: one value
    (``channel_shared``, default true; a blob of no axes) or one per channel (``[C]``).

    One parameter blob "scale", filled by ``norm_param.scale_filler`` (default constant
    1.0; role "other": ``--filler`` does not replace it).  The top has the bottom's shape.
    OpenCV's ``NormalizeBBox`` layer computes the same for these settings.
    """

    origin = _FORK + "normalize_layer.cpp"
    fork_params = {"norm_param": ssd_pb2.NormalizeParameter}
    roles = {"scale": OTHER}

    def _channels(self, shape):
        if len(shape) < 2:
            self.fail(f"the bottom needs at least 2 axes, not {len(shape)}")
        return int(shape[1])

    def params(self, bottoms):
        p = self.fork("norm_param")
        c = self._channels(bottoms[0])
        filler = self.filler(p, "scale_filler", {"type": "constant", "value": 1.0})
        return [self.blob("scale", () if p.channel_shared else (c,), filler)]

    def outputs(self, bottoms):
        self._channels(bottoms[0])
        return [tuple(bottoms[0])]

    def lower(self, ctx):
        p = self.fork("norm_param")
        shape = ctx.bottom_shapes[0]
        nd = len(shape)
        x = ctx.inputs[0]
        sq = ctx.node("Mul", [x, x])
        axes = list(range(1, nd)) if p.across_spatial else [1]
        ssum = ctx.reduce("ReduceSum", sq, axes)
        norm = ctx.node("Sqrt", [ctx.node("Add", [ssum, ctx.scalar(np.float32(p.eps), "eps")])])
        if p.across_spatial:  # the fork multiplies by 1 / norm
            y = ctx.node("Mul", [x, ctx.node("Reciprocal", [norm])])
        else:
            y = ctx.node("Div", [x, norm])
        if p.channel_shared:
            scale = ctx.param(0, ())
        else:
            scale = ctx.param(0, (shape[1],) + (1,) * (nd - 2))
        ctx.node("Mul", [y, scale], ctx.outputs[0])


# ---- Permute -------------------------------------------------------------------------------

@register("Permute")
class Permute(LayerType):
    """Axis permutation, as ``src/caffe/layers/permute_layer.cpp``: ``permute_param.order``
    lists the top's axes by bottom axis; axes left out follow in their own order.  Orders
    must be distinct and below the bottom's number of axes."""

    origin = _FORK + "permute_layer.cpp"
    fork_params = {"permute_param": ssd_pb2.PermuteParameter}

    def order(self, shape):
        nd = len(shape)
        orders = []
        for o in self.fork("permute_param").order:
            if o >= nd:
                self.fail(f"order {o} is not an axis of a bottom of {nd} axes")
            if o in orders:
                self.fail(f"order {o} is given twice")
            orders.append(int(o))
        return orders + [i for i in range(nd) if i not in orders]

    def outputs(self, bottoms):
        shape = tuple(bottoms[0])
        return [tuple(shape[i] for i in self.order(shape))]

    def lower(self, ctx):
        perm = self.order(ctx.bottom_shapes[0])
        if perm == sorted(perm):
            ctx.node("Identity", [ctx.inputs[0]], ctx.outputs[0])
        else:
            ctx.node("Transpose", [ctx.inputs[0]], ctx.outputs[0], perm=perm)


# ---- PriorBox ------------------------------------------------------------------------------

@register("PriorBox")
class PriorBox(LayerType):
    """Default boxes of a feature map, as ``src/caffe/layers/prior_box_layer.cpp``.

    Bottoms: the feature map (its H, W) and the image (its H, W, unless ``img_size`` or
    ``img_h``/``img_w`` give them).  Top ``[1, 2, H * W * num_priors * 4]``: channel 0 the
    boxes ``(xmin, ymin, xmax, ymax)`` normalised by the image size, channel 1 the
    variances.

    Aspect ratios: 1 first, then each given ratio not within 1e-6 of one already listed,
    followed by its reciprocal when ``flip`` (default true).  Per cell ``(h, w)`` (row
    major), per ``min_size``: the square of side ``min_size``, then (with ``max_size``) the
    square of side ``sqrt(min_size * max_size)``, then ``min_size * sqrt(ar)`` by
    ``min_size / sqrt(ar)`` for every ratio other than 1.  The fork truncates min_size and
    max_size to integers, takes ``sqrt(min * max)`` in double and ``sqrt(ar)``, the
    products and quotients in float32; centres are ``(w + offset) * step`` (step: ``step``/``step_h``/
    ``step_w``, else image size / map size, in float32); the corners are computed in double
    and stored as float32; ``clip`` clamps them to [0, 1].  Variance: one value for all,
    four per coordinate, or 0.1.

    The export writes the computed top as a constant (it depends on shapes only).
    OpenCV's PriorBox differs from the fork: it keeps fractional min/max sizes (the fork
    truncates them) and orders a layer with several min sizes differently (all min sizes,
    then all max sizes ...); the tests show where.
    """

    origin = _FORK + "prior_box_layer.cpp"
    fork_params = {"prior_box_param": ssd_pb2.PriorBoxParameter}
    n_bottoms = (2, 2)

    def settings(self):
        p = self.fork("prior_box_param")
        if not len(p.min_size):
            self.fail("prior_box_param needs min_size")
        mins = [float(np.float32(v)) for v in p.min_size]
        if min(mins) <= 0:
            self.fail("min_size must be positive")
        ars = [np.float32(1.0)]
        for a in p.aspect_ratio:
            a = np.float32(a)
            if any(abs(float(np.float32(a - b))) < 1e-6 for b in ars):
                continue
            ars.append(a)
            if p.flip:
                ars.append(np.float32(1.0 / float(a)))
        maxs = [float(np.float32(v)) for v in p.max_size]
        if maxs:
            if len(maxs) != len(mins):
                self.fail(f"{len(mins)} min_size but {len(maxs)} max_size; give one max_size per min_size")
            for lo, hi in zip(mins, maxs):
                if not hi > lo:
                    self.fail(f"max_size {hi:g} must be greater than min_size {lo:g}")
        var = [float(np.float32(v)) for v in p.variance]
        if len(var) > 1 and len(var) != 4:
            self.fail(f"give one variance or four, not {len(var)}")
        if any(v <= 0 for v in var):
            self.fail("variances must be positive")
        if not var:
            var = [float(np.float32(0.1))]
        if (p.HasField("img_h") or p.HasField("img_w")) and p.HasField("img_size"):
            self.fail("give either img_size or img_h/img_w, not both")
        if (p.HasField("step_h") or p.HasField("step_w")) and p.HasField("step"):
            self.fail("give either step or step_h/step_w, not both")
        if p.HasField("img_h") or p.HasField("img_w"):
            img = (int(p.img_h), int(p.img_w))
            if min(img) <= 0:
                self.fail("img_h and img_w must both be larger than 0")
        elif p.HasField("img_size"):
            img = (int(p.img_size),) * 2
            if img[0] <= 0:
                self.fail("img_size must be larger than 0")
        else:
            img = (0, 0)
        if p.HasField("step_h") or p.HasField("step_w"):
            step = (np.float32(p.step_h), np.float32(p.step_w))
            if min(step) <= 0:
                self.fail("step_h and step_w must both be larger than 0")
        elif p.HasField("step"):
            step = (np.float32(p.step),) * 2
            if step[0] <= 0:
                self.fail("step must be larger than 0")
        else:
            step = (np.float32(0), np.float32(0))
        return dict(mins=mins, maxs=maxs, ars=ars, var=var, img=img, step=step, clip=bool(p.clip),
                    offset=np.float32(p.offset))

    def num_priors(self, s=None):
        s = s or self.settings()
        return len(s["ars"]) * len(s["mins"]) + len(s["maxs"])

    def outputs(self, bottoms):
        s = self.settings()
        feat = tuple(bottoms[0])
        if len(feat) < 2:
            self.fail("bottom 0 needs a height and a width")
        h, w = _legacy_hw(feat)
        return [(1, 2, h * w * self.num_priors(s) * 4)]

    def compute(self, bottoms) -> np.ndarray:
        """The top, as the fork's Forward_cpu computes it (float32)."""
        s = self.settings()
        lh, lw = _legacy_hw(tuple(bottoms[0]))
        if s["img"][0] == 0 or s["img"][1] == 0:
            img_h, img_w = _legacy_hw(tuple(bottoms[1]))
        else:
            img_h, img_w = s["img"]
        f32 = np.float32
        if s["step"][0] == 0 or s["step"][1] == 0:
            step_w, step_h = f32(f32(img_w) / f32(lw)), f32(f32(img_h) / f32(lh))
        else:
            step_h, step_w = s["step"]
        # box sizes per prior, in the fork's order (float32, as the fork stores them)
        sizes = []
        for k, mn in enumerate(s["mins"]):
            mn_i = int(mn)  # the fork keeps sizes in an int
            sizes.append((f32(mn_i), f32(mn_i)))
            if s["maxs"]:
                side = f32(np.sqrt(np.float64(mn_i * int(s["maxs"][k]))))
                sizes.append((side, side))
            for ar in s["ars"]:
                if abs(float(ar) - 1.0) < 1e-6:
                    continue
                r = np.sqrt(f32(ar))  # float sqrt, float product and quotient
                sizes.append((f32(f32(mn_i) * r), f32(f32(mn_i) / r)))
        bw = np.array([b[0] for b in sizes], np.float32).astype(np.float64)[None, None, :]
        bh = np.array([b[1] for b in sizes], np.float32).astype(np.float64)[None, None, :]
        cx = ((np.arange(lw, dtype=np.float32) + s["offset"]).astype(np.float32) * step_w).astype(np.float32)
        cy = ((np.arange(lh, dtype=np.float32) + s["offset"]).astype(np.float32) * step_h).astype(np.float32)
        cx = cx.astype(np.float64)[None, :, None]
        cy = cy.astype(np.float64)[:, None, None]
        boxes = np.empty((lh, lw, len(sizes), 4), np.float32)
        boxes[..., 0] = (cx - bw / 2.0) / img_w
        boxes[..., 1] = (cy - bh / 2.0) / img_h
        boxes[..., 2] = (cx + bw / 2.0) / img_w
        boxes[..., 3] = (cy + bh / 2.0) / img_h
        boxes = boxes.reshape(-1)
        if s["clip"]:
            boxes = np.minimum(np.maximum(boxes, f32(0)), f32(1))
        var = np.array(s["var"], np.float32)
        variances = np.tile(var if len(var) == 4 else np.repeat(var, 4), boxes.size // 4)
        return np.stack([boxes, variances]).reshape(1, 2, -1).astype(np.float32)

    def lower(self, ctx):
        """A constant: the boxes depend on the bottoms' shapes only."""
        value = self.compute(ctx.bottom_shapes)
        ctx.identity(ctx.const(value, "priors"), ctx.outputs[0])


def _legacy_hw(shape):
    """Caffe's legacy ``height()``/``width()``: axes 2 and 3, 1 where absent."""
    shape = tuple(shape)
    h = int(shape[2]) if len(shape) > 2 else 1
    w = int(shape[3]) if len(shape) > 3 else 1
    return h, w


# ---- DetectionOutput -----------------------------------------------------------------------

@register("DetectionOutput")
class DetectionOutput(LayerType):
    """SSD's detections, as ``src/caffe/layers/detection_output_layer.cpp`` and
    ``src/caffe/util/bbox_util.cpp`` compute them (CPU forward).

    Bottoms: location predictions ``[N, P * L * 4]`` (``L`` = 1 with ``share_location``,
    else ``num_classes``), confidences ``[N, P * num_classes]`` (used as given, e.g. after
    a Softmax), priors ``[1, 2, P * 4]`` (boxes, then variances).  Per image:

    1. decode each prior's prediction by ``code_type`` (CORNER: prior corner + variance *
       offset; CENTER_SIZE: centre moved by variance * offset * prior size, size scaled
       by exp(variance * offset); CORNER_SIZE: corner + variance * offset * prior size;
       with ``variance_encoded_in_target`` the variances are left out); boxes are not
       clipped.  With ``share_location`` and ``background_label_id: -1`` the fork skips
       the shared locations (their label is -1 too) and so detects nothing;
    2. per class other than ``background_label_id``: the scores above
       ``confidence_threshold`` (all when it is absent), sorted by score descending (a
       stable sort: equal scores keep the prior order), the first ``nms_param.top_k``
       of them, then greedy NMS: a box is kept when its Jaccard overlap with every box
       kept so far is <= the threshold (``eta`` < 1 lowers the threshold after each kept
       box while it is above 0.5);
    3. when more than ``keep_top_k`` (> -1) boxes survive over all classes, the
       ``keep_top_k`` best scores over all classes (``std::sort``, not stable);
    4. rows ``[image, label, score, xmin, ymin, xmax, ymax]`` by image, then label
       ascending, then score descending.  Top ``[1, 1, rows, 7]``; with no detection at
       all in the batch, one row ``[i, -1, -1, -1, -1, -1, -1]`` per image.

    The number of rows is only known at run time; the net model has Caffe's set-up shape
    ``[1, 1, 1, 7]``.  The ONNX lowering uses TopK (per class, to pick the candidates in
    the fork's order: ONNX TopK breaks ties by the lower index, as the fork's stable sort
    does), NonMaxSuppression (fed distinct rank scores, so that its order among equal
    scores is the fork's too, and the same float IoU test ``iou > threshold``), TopK
    again for ``keep_top_k`` and NonZero to list the rows in the fork's order.  It is
    exact except: (a) equal scores straddling the ``keep_top_k`` cut when more than 16
    detections compete (the fork's std::sort is then unstable, ONNX TopK takes the lower
    label first); (b) inverted boxes (xmax < xmin, possible with CORNER codes), whose
    area the fork takes as 0 and NonMaxSuppression as |w * h|; (c) ``eta`` < 1 with an
    NMS threshold above 0.5, which NonMaxSuppression cannot express: the export refuses
    such a layer.  ``save_output_param`` and ``visualize`` only write files; they are
    ignored.
    """

    origin = _FORK + "detection_output_layer.cpp"
    fork_params = {"detection_output_param": ssd_pb2.DetectionOutputParameter}
    n_bottoms = (3, 4)
    #: the number of detections is known only at run time (Caffe reshapes in Forward)
    dynamic_axes = {0: (2,)}

    def canonical_output(self, top, array):
        """The detections as a set of rows: OpenCV's all-zero padding rows dropped, rows
        sorted (OpenCV lists them by score across classes, the fork by label)."""
        rows = np.asarray(array, dtype=np.float32).reshape(-1, 7)
        rows = rows[np.any(rows != 0, axis=1)]
        return rows[np.lexsort(rows.T[::-1])]

    def settings(self, bottoms):
        p = self.fork("detection_output_param")
        if not p.HasField("num_classes") or p.num_classes <= 0:
            self.fail("detection_output_param needs num_classes")
        n_cls = int(p.num_classes)
        n_loc = 1 if p.share_location else n_cls
        nms = p.nms_param
        if nms.nms_threshold < 0:
            self.fail("nms_threshold must be non negative")
        if not 0 < nms.eta <= 1:
            self.fail("eta must be in (0, 1]")
        loc, conf, prior = (tuple(b) for b in bottoms[:3])
        if len(prior) < 3:
            self.fail(f"bottom 2 (the priors) must have 3 axes or more, not {list(prior)}")
        n_priors = _legacy_hw(prior)[0] // 4
        n = int(loc[0])
        if int(conf[0]) != n:
            self.fail(f"the location and confidence bottoms have {n} and {conf[0]} items")
        if self.count(loc, 1) != n_priors * n_loc * 4:
            self.fail(f"{n_priors} priors need {n_priors * n_loc * 4} location values per item, "
                      f"bottom 0 has {self.count(loc, 1)}")
        if self.count(conf, 1) != n_priors * n_cls:
            self.fail(f"{n_priors} priors need {n_priors * n_cls} confidences per item, "
                      f"bottom 1 has {self.count(conf, 1)}")
        return dict(p=p, n=n, P=n_priors, C=n_cls, L=n_loc,
                    top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
                    thr=float(np.float32(p.confidence_threshold)) if p.HasField("confidence_threshold") else -FLT_MAX)

    def outputs(self, bottoms):
        self.settings(bottoms)
        return [(1, 1, 1, 7)]

    def lower(self, ctx):
        s = self.settings(ctx.bottom_shapes)
        p = s["p"]
        n, P, C, L = s["n"], s["P"], s["C"], s["L"]
        nms_thr = float(np.float32(p.nms_param.nms_threshold))
        if p.nms_param.eta < 1 and nms_thr > 0.5:
            ctx.unsupported(f"adaptive NMS (eta {p.nms_param.eta:g} with nms_threshold {nms_thr:g} > 0.5) "
                            "has no ONNX equivalent")
        labels = [c for c in range(C) if c != p.background_label_id]
        K = P if s["top_k"] < 0 else min(s["top_k"], P)
        Cp = len(labels)
        f32 = np.float32

        # ---- priors and decoding --------------------------------------------------------
        prior = ctx.reshape(ctx.inputs[2], [-1])
        prior = ctx.node("Slice", [prior, ctx.ints([0], "s0"), ctx.ints([8 * P], "e8p"), ctx.ints([0], "ax0")])
        pbox, pvar = ctx.split(ctx.reshape(prior, [2, P, 1, 4]), [1, 1], 0)
        pbox = ctx.reshape(pbox, [P, 1, 4])
        pvar = ctx.reshape(pvar, [P, 1, 4])
        loc = ctx.reshape(ctx.inputs[0], [n, P, L, 4])
        enc = p.variance_encoded_in_target
        code = p.code_type
        if code == _CODE.CORNER:
            off = loc if enc else ctx.node("Mul", [pvar, loc])
            boxes = ctx.node("Add", [pbox, off])
        else:
            pmin, pmax = ctx.split(pbox, [2, 2], 2)
            psize = ctx.node("Sub", [pmax, pmin])  # (w, h)
            if code == _CODE.CORNER_SIZE:
                off = loc if enc else ctx.node("Mul", [pvar, loc])
                boxes = ctx.node("Add", [pbox, ctx.node("Mul", [off, ctx.node("Concat", [psize, psize], axis=2)])])
            elif code == _CODE.CENTER_SIZE:
                pcenter = ctx.node("Div", [ctx.node("Add", [pmin, pmax]), ctx.scalar(2.0, "two")])
                lc, ls = ctx.split(loc, [2, 2], 3)
                if not enc:
                    vc, vs = ctx.split(pvar, [2, 2], 2)
                    lc = ctx.node("Mul", [vc, lc])
                    ls = ctx.node("Mul", [vs, ls])
                center = ctx.node("Add", [ctx.node("Mul", [lc, psize]), pcenter])
                # the fork calls exp() on a float and multiplies in double
                d = ctx.node("Mul", [ctx.node("Exp", [ctx.node("Cast", [ls], to=11)]),
                                     ctx.node("Cast", [psize], to=11)])
                size = ctx.node("Cast", [d], to=1)
                half = ctx.node("Div", [size, ctx.scalar(2.0, "two")])
                boxes = ctx.node("Concat", [ctx.node("Sub", [center, half]), ctx.node("Add", [center, half])], axis=3)
            else:
                ctx.unsupported(f"unknown code_type {code}")
        # boxes: [n, P, L, 4]

        # ---- per-class candidates: scores above the threshold, best top_k, fork's order ----
        conf = ctx.node("Transpose", [ctx.reshape(ctx.inputs[1], [n, P, C])], perm=[0, 2, 1])
        conf = ctx.node("Gather", [conf, ctx.ints(labels, "labels")], axis=1)  # [n, C', P]
        if K == 0 or Cp == 0 or (p.share_location and p.background_label_id == -1):
            # the fork's DecodeBBoxesAll skips the shared location label -1 when it equals
            # background_label_id: nothing is decoded, nothing detected
            self._emit(ctx, None, None, None, n, 0, 0, labels)
            return
        vals, idx = ctx.node("TopK", [conf, ctx.ints([K], "k")], n_outputs=2, axis=2, largest=1, sorted=1)
        if p.share_location:
            b = ctx.reshape(boxes, [n, P, 4])
            cand = ctx.node("GatherND", [b, ctx.reshape(idx, [n, Cp * K, 1])], batch_dims=1)
        else:
            b = ctx.node("Transpose", [boxes], perm=[0, 2, 1, 3])
            b = ctx.reshape(ctx.node("Gather", [b, ctx.ints(labels, "labels")], axis=1), [n * Cp, P, 4])
            cand = ctx.node("GatherND", [b, ctx.reshape(idx, [n * Cp, K, 1])], batch_dims=1)
        cand = ctx.reshape(cand, [n * Cp, K, 4])
        valid = ctx.node("Greater", [vals, ctx.scalar(f32(s["thr"]), "thr")])
        ranks = ctx.const(np.arange(K, 0, -1, dtype=np.float32), "ranks")
        rank_scores = ctx.node("Where", [valid, ranks, ctx.scalar(0.0, "zero")])
        rank_scores = ctx.reshape(rank_scores, [n * Cp, 1, K])
        sel = ctx.node("NonMaxSuppression", [cand, rank_scores, ctx.ints([K], "maxout"),
                                             ctx.scalar(min(nms_thr, 1.0), "iou"),
                                             ctx.scalar(0.5, "rank_thr")], center_point_box=0)
        # kept: [n * C', K] (1 where NMS kept the candidate)
        pos = ctx.node("Gather", [sel, ctx.ints([0, 2], "cols")], axis=1)
        ones = ctx.node("Expand", [ctx.scalar(1.0, "one"), ctx.node("Slice", [ctx.node("Shape", [sel]),
                                                                             ctx.ints([0], "s0"), ctx.ints([1], "e1")])])
        kept = ctx.node("ScatterND", [ctx.const(np.zeros((n * Cp, K), np.float32), "zeros"), pos, ones])
        kept = ctx.reshape(kept, [n, Cp * K])
        flat_vals = ctx.reshape(vals, [n, Cp * K])
        if p.keep_top_k > -1:
            if p.keep_top_k == 0:
                kept = ctx.node("Mul", [kept, ctx.scalar(0.0, "zero")])
            else:
                kk = min(int(p.keep_top_k), Cp * K)
                masked = ctx.node("Where", [ctx.node("Greater", [kept, ctx.scalar(0.5, "half")]), flat_vals,
                                            ctx.scalar(-np.inf, "ninf")])
                _, best = ctx.node("TopK", [masked, ctx.ints([kk], "keep_k")], n_outputs=2, axis=1, largest=1,
                                   sorted=1)
                top = ctx.node("ScatterElements", [ctx.const(np.zeros((n, Cp * K), np.float32), "zeros_k"), best,
                                                   ctx.const(np.ones((n, kk), np.float32), "ones_k")], axis=1)
                kept = ctx.node("Mul", [kept, top])
        self._emit(ctx, kept, flat_vals, ctx.reshape(cand, [n, Cp * K, 4]), n, Cp, K, labels)

    def _emit(self, ctx, kept, flat_vals, flat_boxes, n, Cp, K, labels):
        """Rows of the kept (image, class, candidate) in row-major order, or the fork's
        -1 rows when there is none."""
        fallback = np.full((n, 7), -1.0, np.float32)
        fallback[:, 0] = np.arange(n)
        fallback = ctx.const(fallback, "none")
        if kept is None:
            ctx.reshape(fallback, [1, 1, n, 7], ctx.outputs[0])
            return
        nz = ctx.node("Transpose", [ctx.node("NonZero", [ctx.node("Greater", [kept, ctx.scalar(0.5, "half")])])],
                      perm=[1, 0])  # [R, 2]: (image, c' * K + j)
        img, f = ctx.split(nz, [1, 1], 1)
        label = ctx.node("Gather", [ctx.const(np.array(labels, np.float32), "label_ids"),
                                    ctx.node("Div", [ctx.reshape(f, [-1]), ctx.ints([K], "K")])], axis=0)
        score = ctx.node("GatherND", [flat_vals, nz])
        box = ctx.node("GatherND", [flat_boxes, nz])
        rows = ctx.node("Concat", [ctx.node("Cast", [img], to=1), ctx.reshape(label, [-1, 1]),
                                   ctx.reshape(score, [-1, 1]), box], axis=1)
        count = ctx.node("Slice", [ctx.node("Shape", [rows]), ctx.ints([0], "s0"), ctx.ints([1], "e1")])
        none = ctx.node("Cast", [ctx.node("Equal", [count, ctx.ints([0], "zero_i")])], to=7)
        end = ctx.node("Add", [count, ctx.node("Mul", [none, ctx.ints([n], "n")])])
        both = ctx.node("Concat", [rows, fallback], axis=0)
        out = ctx.node("Slice", [both, ctx.ints([0], "s0"), end, ctx.ints([0], "ax0")])
        ctx.reshape(out, [1, 1, -1, 7], ctx.outputs[0])


# ---- training side -------------------------------------------------------------------------

_TRANSFORM_FORK_FIELDS = ("resize_param", "noise_param", "distort_param", "expand_param", "emit_constraint")


@register("AnnotatedData")
class AnnotatedData(RuntimeData):
    """Images with box annotations from a database, as ``src/caffe/layers/
    annotated_data_layer.cpp``: the data shape comes from the database (give it with
    ``--input data=N,C,H,W``).  The fork's label top is ``[1, 1, num_boxes, 8]`` (one
    row ``[item, label, instance, xmin, ymin, xmax, ymax, difficult]`` per box of the
    batch) for box annotations; it defaults here to ``[1, 1, 1, 8]``, the shape the
    fork's set-up gives it, unless given (``--input label=1,1,B,8``).  ``annotated_data_param`` and the fork's
    augmentation fields of ``transform_param`` (resize, noise, distortion, expansion,
    emit constraint) are read, not used."""

    origin = _FORK + "annotated_data_layer.cpp"
    runtime_source = "an annotated database (LMDB)"
    n_tops = (1, 2)

    def runtime_shape(self, top, first):
        """The label of box annotations as the fork's set-up shapes it, ``[1, 1, 1, 8]``
        (one row until a batch is read)."""
        return (1, 1, 1, 8) if top == 1 else None
    fork_params = {"annotated_data_param": ssd_pb2.AnnotatedDataParameter,
                   **{f"TransformationParameter.{f}": None for f in _TRANSFORM_FORK_FIELDS}}


@register("MultiBoxLoss")
class MultiBoxLoss(Loss):
    """SSD's training loss, as ``src/caffe/layers/multibox_loss_layer.cpp``: bottoms
    location predictions, confidences, priors and the ground truth; one scalar top.
    Training only: left out of an inference export."""

    origin = _FORK + "multibox_loss_layer.cpp"
    fork_params = {"multibox_loss_param": ssd_pb2.MultiBoxLossParameter}
    n_bottoms = (4, 4)
    n_tops = (1, 1)

    def outputs(self, bottoms):
        p = self.fork("multibox_loss_param")
        if not p.HasField("num_classes"):
            self.fail("multibox_loss_param needs num_classes")
        if int(bottoms[0][0]) != int(bottoms[1][0]):
            self.fail(f"the location and confidence bottoms have {bottoms[0][0]} and {bottoms[1][0]} items")
        return [()]
