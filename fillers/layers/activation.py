"""Element-wise layers: activations, Power/Exp/Log, Dropout, PReLU."""

from __future__ import annotations

from .base import LayerType, ParamBlob, register, OTHER


@register("ReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log",
          "Threshold", "Clip", "Swish", "Dropout")
class Elementwise(LayerType):
    """One bottom, one top of the same shape, no parameters."""


@register("PReLU")
class PReLU(LayerType):
    """y = max(0, x) + a * min(0, x); ``a`` per channel ``[C]`` (axis 1) or one shared
    value (a blob of no axes).  Default filler: constant 0.25."""

    def params(self, bottoms):
        p = self.lp.prelu_param
        if len(bottoms[0]) < 2:
            self.fail("PReLU needs a bottom of at least 2 axes")
        shape = () if p.channel_shared else (int(bottoms[0][1]),)
        return [ParamBlob("slope", shape, self.filler(p, "filler", {"type": "constant", "value": 0.25}), OTHER)]
