"""LSTM and RNN: Caffe's recurrent layers, unrolled over the T time steps of bottom 0.

Bottoms: ``x`` (T x N x ...), ``cont`` (T x N), optionally ``x_static`` (N x ...), and
with ``expose_hidden`` the initial hidden state(s).  Caffe fills the blobs while it
builds the unrolled net, so the shared recurrent weights are drawn once per time step
(only the first draw is kept): :meth:`draws` reproduces that order.
"""

from __future__ import annotations

import numpy as np

from .base import BIAS, WEIGHT, LayerType, register


class Recurrent(LayerType):
    n_bottoms = (2, 5)
    n_tops = (1, 3)
    n_states = 1
    gates = 1

    def sample_input(self, bottom, shape, rng):
        """``cont`` (bottom 1): 0 at the first time step (a sequence starts), 1 after."""
        if bottom != 1:
            return None
        cont = np.ones(shape, dtype=np.float32)
        if cont.ndim:
            cont[0] = 0
        return cont

    def _check(self, bottoms):
        p = self.lp.recurrent_param
        if p.num_output <= 0:
            self.fail("num_output must be positive")
        x, cont = tuple(bottoms[0]), tuple(bottoms[1])
        if len(x) < 2:
            self.fail("bottom 0 (x) needs at least 2 axes, T x N x ...")
        if len(cont) != 2 or cont != x[:2]:
            self.fail(f"bottom 1 (cont) must be T x N = {list(x[:2])}, not {list(cont)}")
        n_hidden = self.n_states if p.expose_hidden else 0
        n_static = len(bottoms) - 2 - n_hidden
        if n_static not in (0, 1):
            self.fail(f"takes x, cont, an optional x_static and, with expose_hidden, "
                      f"{self.n_states} initial state(s); got {len(bottoms)} bottoms")
        if len(self.lp.top) != 1 + n_hidden:
            self.fail(f"needs {1 + n_hidden} top(s)")
        static = tuple(bottoms[2]) if n_static else None
        if static is not None and (len(static) < 1 or static[0] != x[1]):
            self.fail("x_static must be N x ...")
        return p, x, static, n_hidden

    def outputs(self, bottoms):
        p, x, _, n_hidden = self._check(bottoms)
        h = int(p.num_output)
        return [(x[0], x[1], h)] + [(1, x[1], h)] * n_hidden

    # ---- ONNX: the unrolled net, one step at a time (T is known from the shape) ---------
    def _unroll_inputs(self, ctx):
        """Common start of the unrolled net: ``x`` folded to ``[T*N, D]`` and transformed
        by blob 0 and bias 1 (Caffe's ``x_transform``, an InnerProduct on axis 2), cut into
        T steps of ``[N, gates * H]``; ``cont`` cut into T steps of ``[N, 1]``; the static
        input's transform ``[N, gates * H]`` (or None); the exposed initial states."""
        p, x, static, n_hidden = self._check(ctx.bottom_shapes)
        t_steps, n = int(x[0]), int(x[1])
        d = self.count(x, 2)
        xs = ctx.reshape(ctx.inputs[0], (t_steps * n, d))
        wx = ctx.node("Gemm", [xs, ctx.param(0), ctx.param(1)], transB=1)
        x_steps = ctx.split(wx, [n] * t_steps, 0)
        cont = ctx.reshape(ctx.inputs[1], (t_steps * n, 1))
        cont_steps = ctx.split(cont, [n] * t_steps, 0)
        static_term = None
        if static is not None:
            xst = ctx.reshape(ctx.inputs[2], (n, self.count(static, 1)))
            static_term = ctx.node("Gemm", [xst, ctx.param(2)], transB=1)
        first_hidden = 2 + (static is not None)
        exposed = [ctx.reshape(ctx.inputs[first_hidden + k], (n, int(p.num_output))) for k in range(n_hidden)]
        return t_steps, n, int(p.num_output), x_steps, cont_steps, static_term, exposed

    def _gate_input(self, ctx, h_conted, w_h, x_t, static_term):
        """Caffe's Eltwise SUM of W_h h_conted, W_x x_t (+ bias, already in) and the static
        term, in that order."""
        g = ctx.node("Add", [ctx.node("Gemm", [h_conted, w_h], transB=1), x_t])
        if static_term is not None:
            g = ctx.node("Add", [g, static_term])
        return g


@register("LSTM")
class LSTM(Recurrent):
    """Blobs W_xc ``[4H, D]``, b_c ``[4H]``, (W_xc_static ``[4H, D_s]``), W_hc ``[4H, H]``;
    gates in Caffe's order i, f, o, g."""

    n_states = 2
    roles = {"W_xc": WEIGHT, "b_c": BIAS, "W_xc_static": WEIGHT, "W_hc": WEIGHT}

    def params(self, bottoms):
        p, x, static, _ = self._check(bottoms)
        h = int(p.num_output)
        w = self.filler(p, "weight_filler")
        blobs = [self.blob("W_xc", (4 * h, self.count(x, 2)), w),
                 self.blob("b_c", (4 * h,), self.filler(p, "bias_filler"))]
        if static is not None:
            blobs.append(self.blob("W_xc_static", (4 * h, self.count(static, 1)), w))
        blobs.append(self.blob("W_hc", (4 * h, h), w))
        return blobs

    def lower(self, ctx):
        """Unrolled over T: ``h_conted = cont_t * h_{t-1}``; gates = W_hc h_conted + W_xc x_t
        + b_c (+ W_xc_static x_static); i, f, o = sigmoid, g = tanh (Caffe's order i, f, o,
        g); ``c_t = cont_t * f * c_{t-1} + i * g``; ``h_t = o * tanh(c_t)``.  The state starts
        at 0 (or the exposed h_0, c_0); tops: h for every step, then h_T and c_T with
        expose_hidden."""
        t_steps, n, h, x_steps, cont_steps, static_term, exposed = self._unroll_inputs(ctx)
        w_hc = ctx.param(len(ctx.params) - 1)
        zeros = ctx.const(np.zeros((n, h), dtype=np.float32), "zeros")
        h_prev, c_prev = (exposed[0], exposed[1]) if exposed else (zeros, zeros)
        hs = []
        for t in range(t_steps):
            cont_t = cont_steps[t]
            h_conted = ctx.node("Mul", [h_prev, cont_t])
            gates = self._gate_input(ctx, h_conted, w_hc, x_steps[t], static_term)
            gi, gf, go, gg = ctx.split(gates, [h] * 4, 1)
            i = ctx.node("Sigmoid", [gi])
            f = ctx.node("Mul", [cont_t, ctx.node("Sigmoid", [gf])])
            o = ctx.node("Sigmoid", [go])
            g = ctx.node("Tanh", [gg])
            c_prev = ctx.node("Add", [ctx.node("Mul", [f, c_prev]), ctx.node("Mul", [i, g])])
            h_prev = ctx.node("Mul", [o, ctx.node("Tanh", [c_prev])])
            hs.append(h_prev)
        allh = hs[0] if len(hs) == 1 else ctx.node("Concat", hs, axis=0)
        ctx.reshape(allh, ctx.top_shapes[0], ctx.outputs[0])
        if len(ctx.outputs) > 1:
            ctx.reshape(h_prev, ctx.top_shapes[1], ctx.outputs[1])
            ctx.reshape(c_prev, ctx.top_shapes[2], ctx.outputs[2])

    def draws(self, params, bottoms):
        steps = int(bottoms[0][0])
        order = [(i, p) for i, p in enumerate(params[:-1])]
        order.append((len(params) - 1, params[-1]))
        order += [(None, params[-1])] * (steps - 1)
        return order


@register("RNN")
class RNN(Recurrent):
    """Blobs W_xh ``[H, D]``, b_h ``[H]``, (W_xh_static), W_hh ``[H, H]``, W_ho ``[H, H]``,
    b_o ``[H]``; h_t = tanh(W_hh h_{t-1} cont_t + W_xh x_t + b_h), o_t = tanh(W_ho h_t + b_o)."""

    roles = {"W_xh": WEIGHT, "b_h": BIAS, "W_xh_static": WEIGHT, "W_hh": WEIGHT, "W_ho": WEIGHT, "b_o": BIAS}

    def params(self, bottoms):
        p, x, static, _ = self._check(bottoms)
        h = int(p.num_output)
        w = self.filler(p, "weight_filler")
        b = self.filler(p, "bias_filler")
        blobs = [self.blob("W_xh", (h, self.count(x, 2)), w), self.blob("b_h", (h,), b)]
        if static is not None:
            blobs.append(self.blob("W_xh_static", (h, self.count(static, 1)), w))
        blobs += [self.blob("W_hh", (h, h), w), self.blob("W_ho", (h, h), w),
                  self.blob("b_o", (h,), b)]
        return blobs

    def lower(self, ctx):
        """Unrolled over T: ``h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h (+ W_xh_static
        x_static))``, ``o_t = tanh(W_ho h_t + b_o)``; tops: o for every step, then h_T with
        expose_hidden."""
        t_steps, n, h, x_steps, cont_steps, static_term, exposed = self._unroll_inputs(ctx)
        k = len(ctx.params)
        w_hh, w_ho, b_o = ctx.param(k - 3), ctx.param(k - 2), ctx.param(k - 1)
        h_prev = exposed[0] if exposed else ctx.const(np.zeros((n, h), dtype=np.float32), "zeros")
        os_ = []
        for t in range(t_steps):
            h_conted = ctx.node("Mul", [h_prev, cont_steps[t]])
            h_prev = ctx.node("Tanh", [self._gate_input(ctx, h_conted, w_hh, x_steps[t], static_term)])
            os_.append(ctx.node("Tanh", [ctx.node("Gemm", [h_prev, w_ho, b_o], transB=1)]))
        allo = os_[0] if len(os_) == 1 else ctx.node("Concat", os_, axis=0)
        ctx.reshape(allo, ctx.top_shapes[0], ctx.outputs[0])
        if len(ctx.outputs) > 1:
            ctx.reshape(h_prev, ctx.top_shapes[1], ctx.outputs[1])

    def draws(self, params, bottoms):
        steps = int(bottoms[0][0])
        n = len(params)
        head = [(i, params[i]) for i in range(n - 3)]
        loop = []
        for t in range(steps):
            loop += [(n - 3 if t == 0 else None, params[n - 3]),
                     (n - 2 if t == 0 else None, params[n - 2]),
                     (n - 1 if t == 0 else None, params[n - 1])]
        return head + loop
