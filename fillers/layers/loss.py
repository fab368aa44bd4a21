"""Loss layers and Accuracy: training-time layers, left out of an inference export."""

from __future__ import annotations

import numpy as np

from .base import LayerType, register, shape_count

FULL, VALID, BATCH_SIZE, NONE = 0, 1, 2, 3
_FLT_MIN = np.float32(1.1754944e-38)
_LOG_THRESHOLD = np.float32(1e-20)


def _normalization(lp, default=VALID):
    p = lp.loss_param
    if p.HasField("normalization"):
        return int(p.normalization)
    if p.HasField("normalize"):
        return VALID if p.normalize else BATCH_SIZE
    return default


def _normalizer(mode, outer, inner, valid):
    """Caffe's ``LossLayer::GetNormalizer`` (at least 1)."""
    if mode == FULL:
        n = outer * inner
    elif mode == VALID:
        n = outer * inner if valid == -1 else valid
    elif mode == BATCH_SIZE:
        n = outer
    else:
        n = 1
    return np.float32(max(1.0, float(n)))


def _scalar(v):
    return np.asarray(v, dtype=np.float32).reshape(())


def _softmax(x, axis):
    from .shape import softmax
    return softmax(x, axis)


def _labels(lp, bottoms, axis):
    """(outer, classes, inner, integer labels (outer, inner), valid mask) of a loss over
    classes on ``axis``."""
    x = bottoms[0]
    outer = shape_count(x.shape[:axis])
    inner = shape_count(x.shape[axis + 1:])
    labels = bottoms[1].reshape(outer, inner).astype(np.int64)  # static_cast<int>
    valid = np.ones(labels.shape, dtype=bool)
    if lp.loss_param.HasField("ignore_label"):
        valid = labels != int(lp.loss_param.ignore_label)
    return outer, int(x.shape[axis]), inner, labels, valid


class Loss(LayerType):
    """A loss: a scalar top (a blob of no axes); where a second top is allowed
    (SoftmaxWithLoss, InfogainLoss) it has bottom 0's shape."""

    n_bottoms = (2, 2)
    n_tops = (1, 1)
    training_only = True
    auto_tops = True

    def outputs(self, bottoms):
        if not bottoms[0] or not bottoms[1] or int(bottoms[0][0]) != int(bottoms[1][0]):
            self.fail(f"the bottoms' first dims differ ({bottoms[0][0]} vs {bottoms[1][0]})")
        return [(), tuple(bottoms[0])][:len(self.lp.top) or 1]

    def allow_force_backward(self, i):
        """Caffe's LossLayer: no diff for the labels (bottom 1)."""
        return i != 1


@register("EuclideanLoss", "HingeLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss")
class PlainLoss(Loss):
    pass

    def allow_force_backward(self, i):
        return True if self.lp.type == "EuclideanLoss" else i != 1

    def forward(self, bottoms, params, ctx):
        t = self.lp.type
        x, y = bottoms
        num = x.shape[0]
        if t == "EuclideanLoss":
            d = x - y.reshape(x.shape)
            ctx.cache["diff"] = d
            return [_scalar(np.float32((d.astype(np.float64) ** 2).sum()) / np.float32(num) / np.float32(2))]
        if t == "SigmoidCrossEntropyLoss":
            target = y.reshape(x.shape)
            valid = np.ones(x.shape, dtype=bool)
            if self.lp.loss_param.HasField("ignore_label"):
                valid = target.astype(np.int64) != int(self.lp.loss_param.ignore_label)
            pos = (x >= 0).astype(np.float32)
            term = x * (target - pos) - np.log1p(np.exp(x - np.float32(2) * x * pos))
            norm = _normalizer(_normalization(self.lp, BATCH_SIZE), num, x.size // max(num, 1), int(valid.sum()))
            ctx.cache["norm"] = norm
            return [_scalar(-np.float32(term[valid].astype(np.float64).sum()) / norm)]
        x2 = x.reshape(num, -1)
        labels = y.reshape(num).astype(np.int64)
        rows = np.arange(num)
        if t == "HingeLoss":
            d = x2.copy()
            d[rows, labels] *= -1
            d = np.maximum(np.float32(0), np.float32(1) + d)
            ctx.cache["diff"] = d
            l2 = self.lp.hinge_loss_param.norm == 2
            v = (d.astype(np.float64) ** 2).sum() if l2 else np.abs(d.astype(np.float64)).sum()
            return [_scalar(np.float32(v) / np.float32(num))]
        if t == "MultinomialLogisticLoss":
            prob = np.maximum(x2[rows, labels], _LOG_THRESHOLD)
            return [_scalar(-np.float32(np.log(prob).astype(np.float64).sum()) / np.float32(num))]
        raise NotImplementedError(f"layer type '{t}' has no forward pass in the numpy engine")

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        t = self.lp.type
        x, y = bottoms
        num = x.shape[0]
        lw = np.float32(top_diffs[0].reshape(-1)[0])
        if t == "EuclideanLoss":
            d = ctx.cache["diff"]
            a = lw / np.float32(num)
            return [d * a if propagate_down[0] else None, (d * -a).reshape(y.shape) if propagate_down[1] else None], []
        if not propagate_down[0]:
            return [None, None], []
        if t == "SigmoidCrossEntropyLoss":
            from .activation import _sigmoid
            target = y.reshape(x.shape)
            g = _sigmoid(x) - target
            if self.lp.loss_param.HasField("ignore_label"):
                g[target.astype(np.int64) == int(self.lp.loss_param.ignore_label)] = 0
            return [g * (lw / ctx.cache["norm"]), None], []
        x2 = x.reshape(num, -1)
        labels = y.reshape(num).astype(np.int64)
        rows = np.arange(num)
        if t == "HingeLoss":
            d = ctx.cache["diff"].copy()
            d[rows, labels] *= -1
            if self.lp.hinge_loss_param.norm == 2:
                g = d * np.float32(2 * lw / num)
            else:
                g = np.sign(d) * np.float32(lw / num)
            return [g.reshape(x.shape), None], []
        g = np.zeros(x2.shape, dtype=np.float32)
        g[rows, labels] = -(lw / np.float32(num)) / np.maximum(x2[rows, labels], _LOG_THRESHOLD)
        return [g.reshape(x.shape), None], []


@register("ContrastiveLoss")
class ContrastiveLoss(Loss):
    n_bottoms = (3, 3)

    def allow_force_backward(self, i):
        return i != 1 and i != 2

    def forward(self, bottoms, params, ctx):
        p = self.lp.contrastive_loss_param
        a, b, sim = bottoms
        num = a.shape[0]
        d = (a - b).reshape(num, -1)
        dist_sq = (d * d).sum(axis=1, dtype=np.float32)
        similar = sim.reshape(num).astype(np.int64) != 0
        margin = np.float32(p.margin)
        if p.legacy_version:
            other = np.maximum(margin - dist_sq, np.float32(0))
        else:
            other = np.maximum(margin - np.sqrt(dist_sq), np.float32(0)) ** 2
        ctx.cache.update(diff=d, dist_sq=dist_sq, similar=similar)
        loss = np.where(similar, dist_sq, other).astype(np.float64).sum()
        return [_scalar(np.float32(loss) / np.float32(num) / np.float32(2))]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.contrastive_loss_param
        a = bottoms[0]
        num = a.shape[0]
        d, dist_sq, similar = ctx.cache["diff"], ctx.cache["dist_sq"], ctx.cache["similar"]
        margin = np.float32(p.margin)
        out = []
        for i in range(2):
            if not propagate_down[i]:
                out.append(None)
                continue
            alpha = np.float32((1 if i == 0 else -1) * float(top_diffs[0].reshape(-1)[0]) / num)
            if p.legacy_version:
                mdist = margin - dist_sq
                beta = np.full(num, -alpha, dtype=np.float32)
            else:
                dist = np.sqrt(dist_sq)
                mdist = margin - dist
                beta = -alpha * mdist / (dist + np.float32(1e-4))
            coef = np.where(similar, alpha, np.where(mdist > 0, beta, np.float32(0))).astype(np.float32)
            out.append((d * coef[:, None]).reshape(a.shape))
        return out + [None], []


@register("InfogainLoss")
class InfogainLoss(Loss):
    n_bottoms = (2, 3)
    n_tops = (1, 2)

    def allow_force_backward(self, i):
        return i == 0

    def _h(self, bottoms, k):
        if len(bottoms) < 3:
            raise NotImplementedError("InfogainLoss with the matrix H in a file (infogain_param.source): feed H "
                                      "as the third bottom for the numpy engine")
        return bottoms[2].reshape(k, k)

    def forward(self, bottoms, params, ctx):
        """Softmax over ``axis``, then ``-sum_l H[label, l] log(max(prob_l, 1e-20))``
        normalized as SoftmaxWithLoss."""
        x = bottoms[0]
        axis = self.canonical_axis(self.lp.infogain_loss_param.axis, x.ndim)
        prob = _softmax(x, axis)
        outer, k, inner, labels, valid = _labels(self.lp, bottoms, axis)
        h = self._h(bottoms, k)
        p3 = prob.reshape(outer, k, inner)
        logp = np.log(np.maximum(p3, _LOG_THRESHOLD))  # (outer, k, inner)
        hl = h[np.clip(labels, 0, k - 1)]  # (outer, inner, k)
        per = -(hl * logp.transpose(0, 2, 1)).sum(axis=2, dtype=np.float32)
        norm = _normalizer(_normalization(self.lp), outer, inner, int(valid.sum()))
        ctx.cache.update(prob=prob, norm=norm)
        tops = [_scalar(np.float32(per[valid].astype(np.float64).sum()) / norm)]
        if len(self.lp.top) > 1:
            tops.append(prob)
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None] * len(bottoms), []
        x = bottoms[0]
        axis = self.canonical_axis(self.lp.infogain_loss_param.axis, x.ndim)
        outer, k, inner, labels, valid = _labels(self.lp, bottoms, axis)
        h = self._h(bottoms, k)
        lab = np.clip(labels, 0, k - 1)
        p3 = ctx.cache["prob"].reshape(outer, k, inner)
        sum_rows = h.sum(axis=1, dtype=np.float32)
        g = p3 * sum_rows[lab][:, None, :] - h[lab].transpose(0, 2, 1)
        g = g * valid[:, None, :]
        lw = np.float32(top_diffs[0].reshape(-1)[0]) / ctx.cache["norm"]
        return [(g * lw).reshape(x.shape)] + [None] * (len(bottoms) - 1), []


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Loss):
    """Softmax then multinomial logistic loss; a second top gives the probabilities."""

    n_tops = (1, 2)

    def forward(self, bottoms, params, ctx):
        """Softmax over ``softmax_param.axis``, then ``-log(max(prob[label], FLT_MIN))`` summed
        over the positions whose label is not ``ignore_label``, divided by the normalizer
        (VALID by default; legacy ``normalize: false`` = BATCH_SIZE)."""
        x = bottoms[0]
        axis = self.canonical_axis(self.lp.softmax_param.axis, x.ndim)
        prob = _softmax(x, axis)
        outer, k, inner, labels, valid = _labels(self.lp, bottoms, axis)
        p3 = prob.reshape(outer, k, inner)
        lab = np.where(valid, labels, 0)
        if np.any(valid & ((labels < 0) | (labels >= k))):
            raise ValueError(f"labels must lie in [0, {k})")
        picked = np.take_along_axis(p3, lab[:, None, :], axis=1)[:, 0, :]
        norm = _normalizer(_normalization(self.lp), outer, inner, int(valid.sum()))
        ctx.cache.update(prob=prob, norm=norm)
        loss = -np.log(np.maximum(picked, _FLT_MIN))[valid].astype(np.float64).sum()
        tops = [_scalar(np.float32(loss) / norm)]
        if len(self.lp.top) > 1:
            tops.append(prob)
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        if not propagate_down[0]:
            return [None, None], []
        x = bottoms[0]
        axis = self.canonical_axis(self.lp.softmax_param.axis, x.ndim)
        outer, k, inner, labels, valid = _labels(self.lp, bottoms, axis)
        g = ctx.cache["prob"].reshape(outer, k, inner).copy()
        lab = np.where(valid, labels, 0)
        rows = np.arange(outer)[:, None]
        cols = np.arange(inner)[None, :]
        g[rows, lab, cols] -= valid.astype(np.float32)
        g *= valid[:, None, :]
        lw = np.float32(top_diffs[0].reshape(-1)[0]) / ctx.cache["norm"]
        return [(g * lw).reshape(x.shape), None], []


@register("Accuracy")
class Accuracy(LayerType):
    """Top-k accuracy (a scalar) and, with a second top, per-class accuracy."""

    n_bottoms = (2, 2)
    n_tops = (1, 2)
    training_only = True

    def outputs(self, bottoms):
        p = self.lp.accuracy_param
        axis = self.canonical_axis(p.axis, len(bottoms[0]))
        out = [()]
        if len(self.lp.top) == 2:
            out.append((int(bottoms[0][axis]),))
        return out

    has_backward = False  # Caffe: NOT_IMPLEMENTED

    def forward(self, bottoms, params, ctx):
        """A label is right when fewer than ``top_k`` classes score at least as high as it
        (ties count against), over the positions not ``ignore_label``; the second top gives
        the accuracy per class."""
        p = self.lp.accuracy_param
        x = bottoms[0]
        axis = self.canonical_axis(p.axis, x.ndim)
        outer = shape_count(x.shape[:axis])
        inner = shape_count(x.shape[axis + 1:])
        k = int(x.shape[axis])
        labels = bottoms[1].reshape(outer, inner).astype(np.int64)
        valid = np.ones(labels.shape, dtype=bool)
        if p.HasField("ignore_label"):
            valid = labels != int(p.ignore_label)
        x3 = x.reshape(outer, k, inner)
        lab = np.where(valid, labels, 0)
        true = np.take_along_axis(x3, lab[:, None, :], axis=1)
        better = (x3 >= true).sum(axis=1) - 1
        right = (better < int(p.top_k)) & valid
        count = int(valid.sum())
        tops = [_scalar(np.float32(right.sum()) / np.float32(count) if count else 0.0)]
        if len(self.lp.top) > 1:
            nums = np.bincount(lab[valid], minlength=k)[:k]
            hits = np.bincount(lab[right], minlength=k)[:k]
            tops.append(np.where(nums > 0, hits / np.maximum(nums, 1), 0).astype(np.float32))
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        return [None, None], []
