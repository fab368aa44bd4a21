"""Loss layers and Accuracy: training-time layers, left out of an inference export."""

from __future__ import annotations

from .base import LayerType, register


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


@register("EuclideanLoss", "HingeLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss")
class PlainLoss(Loss):
    pass


@register("ContrastiveLoss")
class ContrastiveLoss(Loss):
    n_bottoms = (3, 3)


@register("InfogainLoss")
class InfogainLoss(Loss):
    n_bottoms = (2, 3)
    n_tops = (1, 2)


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Loss):
    """Softmax then multinomial logistic loss; a second top gives the probabilities."""

    n_tops = (1, 2)


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
