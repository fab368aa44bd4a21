"""InnerProduct and Embed: the dense layers."""

from __future__ import annotations

import numpy as np

from .base import BIAS, WEIGHT, LayerType, register


@register("InnerProduct")
class InnerProduct(LayerType):
    """y = x W^T + b over the axes from ``axis`` on; weights ``[N, K]`` (``[K, N]`` if
    ``transpose``), K the product of the bottom's dims from ``axis``."""

    roles = {"weights": WEIGHT, "bias": BIAS}

    def _nk(self, bottoms):
        p = self.lp.inner_product_param
        axis = self.canonical_axis(p.axis, len(bottoms[0]))
        if p.num_output <= 0:
            self.fail("num_output must be greater than zero")
        return int(p.num_output), self.count(bottoms[0], axis), axis

    def params(self, bottoms):
        p = self.lp.inner_product_param
        n, k, _ = self._nk(bottoms)
        wshape = (k, n) if p.transpose else (n, k)
        blobs = [self.blob("weights", wshape, self.filler(p, "weight_filler"))]
        if p.bias_term:
            blobs.append(self.blob("bias", (n,), self.filler(p, "bias_filler")))
        return blobs

    def outputs(self, bottoms):
        n, _, axis = self._nk(bottoms)
        return [(*bottoms[0][:axis], n)]

    def lower(self, ctx):
        """Fold the bottom to ``[M, K]`` (M the product of the dims before ``axis``), Gemm
        with the weights (``transB`` unless ``transpose``) and the bias, unfold to the top."""
        p = self.lp.inner_product_param
        n, k, axis = self._nk(ctx.bottom_shapes)
        shape = ctx.bottom_shapes[0]
        m = self.count(shape, 0, axis)
        x = ctx.inputs[0]
        if shape != (m, k):
            x = ctx.reshape(x, (m, k))
        ins = [x, ctx.param(0)] + ([ctx.param(1)] if p.bias_term else [])
        top = ctx.top_shapes[0]
        if top == (m, n):
            ctx.node("Gemm", ins, ctx.outputs[0], transB=0 if p.transpose else 1)
        else:
            y = ctx.node("Gemm", ins, transB=0 if p.transpose else 1)
            ctx.reshape(y, top, ctx.outputs[0])

    backward_reads = ("bottoms",)

    def forward(self, bottoms, params, ctx):
        p = self.lp.inner_product_param
        n, k, axis = self._nk([bottoms[0].shape])
        x = bottoms[0].reshape(-1, k)
        y = x @ (params[0] if p.transpose else params[0].T)
        if p.bias_term:
            y = y + params[1]
        return [y.reshape(*bottoms[0].shape[:axis], n)]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.inner_product_param
        n, k, axis = self._nk([bottoms[0].shape])
        x = bottoms[0].reshape(-1, k)
        dy = top_diffs[0].reshape(-1, n)
        want = ctx.param_propagate or [True] * len(params)
        dw = (x.T @ dy if p.transpose else dy.T @ x) if want[0] else None
        pd = [dw]
        if p.bias_term:
            pd.append(dy.sum(axis=0, dtype=np.float32) if want[1] else None)
        dx = None
        if propagate_down[0]:
            dx = (dy @ (params[0].T if p.transpose else params[0])).reshape(bottoms[0].shape)
        return [dx], pd


@register("Embed")
class Embed(LayerType):
    """A lookup table: integer indices below ``input_dim`` pick rows of ``[input_dim,
    num_output]``; the top gains a last axis of ``num_output``."""

    roles = {"weights": WEIGHT, "bias": BIAS}

    def params(self, bottoms):
        p = self.lp.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            self.fail("num_output and input_dim must be greater than zero")
        blobs = [self.blob("weights", (int(p.input_dim), int(p.num_output)), self.filler(p, "weight_filler"))]
        if p.bias_term:
            blobs.append(self.blob("bias", (int(p.num_output),), self.filler(p, "bias_filler")))
        return blobs

    def sample_input(self, bottom, shape, rng):
        """Indices: integers below ``input_dim``."""
        return rng.integers(0, int(self.lp.embed_param.input_dim), size=shape).astype(np.float32)

    def outputs(self, bottoms):
        return [(*bottoms[0], int(self.lp.embed_param.num_output))]

    def lower(self, ctx):
        """Caffe reads the float indices with ``static_cast<int>`` (truncation): Cast to
        int64, Gather rows of the weights, add the bias."""
        idx = ctx.node("Cast", [ctx.inputs[0]], to=7)
        if self.lp.embed_param.bias_term:
            g = ctx.node("Gather", [ctx.param(0), idx], axis=0)
            ctx.node("Add", [g, ctx.param(1)], ctx.outputs[0])
        else:
            ctx.node("Gather", [ctx.param(0), idx], ctx.outputs[0], axis=0)

    def allow_force_backward(self, i):
        """Caffe allows it, then aborts (no gradient with respect to the indices)."""
        return False

    def forward(self, bottoms, params, ctx):
        p = self.lp.embed_param
        idx = bottoms[0].astype(np.int64)  # static_cast<int>: truncation
        if idx.size and (idx.min() < 0 or idx.max() >= p.input_dim):
            raise ValueError(f"indices must lie in [0, {p.input_dim})")
        y = params[0][idx]
        if p.bias_term:
            y = y + params[1]
        return [y]

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        p = self.lp.embed_param
        idx = bottoms[0].astype(np.int64).ravel()
        dy = top_diffs[0].reshape(-1, int(p.num_output))
        dw = np.zeros(params[0].shape, dtype=np.float32)
        np.add.at(dw, idx, dy)
        pd = [dw]
        if p.bias_term:
            pd.append(dy.sum(axis=0, dtype=np.float32))
        return [None], pd
