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

    # ---- the numpy reference engine: Caffe's unrolled net, one step at a time ------------
    def allow_force_backward(self, i):
        """Caffe: no diff for the sequence indicators ``cont``."""
        return i != 1

    def _split_bottoms(self, bottoms):
        p, x, static, n_hidden = self._check([b.shape for b in bottoms])
        xs = bottoms[2] if static is not None else None
        hidden = bottoms[2 + (static is not None):]
        return p, xs, list(hidden), n_hidden

    def _inputs(self, bottoms, params):
        """``W x_t + b`` for every step (T, N, G*H), the static term (N, G*H) or None."""
        x = bottoms[0]
        t_steps, n = x.shape[:2]
        p, xs, hidden, _ = self._split_bottoms(bottoms)
        wx = (x.reshape(t_steps * n, -1) @ params[0].T + params[1]).reshape(t_steps, n, -1)
        static = xs.reshape(n, -1) @ params[2].T if xs is not None else None
        return wx, static, hidden

    def _input_backward(self, d_wx, bottoms, params, propagate_down, ctx):
        """Diffs of x, x_static and the blobs W_x, b (and W_static) from the diffs of the
        per-step input terms ``d_wx`` (T, N, G*H)."""
        x = bottoms[0]
        t_steps, n = x.shape[:2]
        p, xs, hidden, _ = self._split_bottoms(bottoms)
        d2 = d_wx.reshape(t_steps * n, -1)
        dw_x = d2.T @ x.reshape(t_steps * n, -1)
        db = d2.sum(axis=0, dtype=np.float32)
        dx = (d2 @ params[0]).reshape(x.shape) if propagate_down[0] else None
        extra = []
        dxs = None
        if xs is not None:
            ds = d_wx.sum(axis=0, dtype=np.float32)
            extra.append(ds.T @ xs.reshape(n, -1))
            if propagate_down[2]:
                dxs = (ds @ params[2]).reshape(xs.shape)
        return dx, dxs, [dw_x, db] + extra


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

    def forward(self, bottoms, params, ctx):
        """Caffe's unrolled LSTM: ``h_conted = cont_t * h_{t-1}``; gates = W_hc h_conted +
        W_xc x_t + b_c (+ W_xc_static x_static); LSTMUnit (gates i, f, o, g)."""
        from .shape import lstm_unit_forward
        wx, static, hidden = self._inputs(bottoms, params)
        cont = bottoms[1]
        t_steps, n = cont.shape
        w_hc = params[-1]
        h_dim = w_hc.shape[1]
        h = hidden[0].reshape(n, h_dim) if hidden else np.zeros((n, h_dim), dtype=np.float32)
        c = hidden[1].reshape(n, h_dim) if hidden else np.zeros((n, h_dim), dtype=np.float32)
        hs = np.empty((t_steps, n, h_dim), dtype=np.float32)
        steps = []
        for t in range(t_steps):
            ct = cont[t].reshape(n, 1)
            h_conted = h * ct
            gates = h_conted @ w_hc.T + wx[t]
            if static is not None:
                gates = gates + static
            c_prev = c
            c, h, cache = lstm_unit_forward(c_prev, gates, ct)
            hs[t] = h
            steps.append((h_conted, c_prev, c, cache))
        ctx.cache["steps"] = steps
        tops = [hs]
        if len(self.lp.top) > 1:
            tops += [h.reshape(1, n, h_dim), c.reshape(1, n, h_dim)]
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        """Back through time: each step's LSTMUnit backward, the recurrent weight's diff summed
        over the steps, the hidden state's diff passed back through ``cont``."""
        from .shape import lstm_unit_backward
        cont = bottoms[1]
        t_steps, n = cont.shape
        w_hc = params[-1]
        h_dim = w_hc.shape[1]
        steps = ctx.cache["steps"]
        dh_top = top_diffs[0]
        dh = top_diffs[1].reshape(n, h_dim).copy() if len(top_diffs) > 1 else np.zeros((n, h_dim), np.float32)
        dc = top_diffs[2].reshape(n, h_dim).copy() if len(top_diffs) > 2 else np.zeros((n, h_dim), np.float32)
        d_gates = np.empty((t_steps, n, 4 * h_dim), dtype=np.float32)
        dw_hc = np.zeros(w_hc.shape, dtype=np.float32)
        for t in range(t_steps - 1, -1, -1):
            h_conted, c_prev, c, cache = steps[t]
            ct = cont[t].reshape(n, 1)
            dc, dg = lstm_unit_backward(dc, dh + dh_top[t], c_prev, ct, c, cache)
            d_gates[t] = dg
            dw_hc += dg.T @ h_conted
            dh = (dg @ w_hc) * ct
        dx, dxs, pd = self._input_backward(d_gates, bottoms, params, propagate_down, ctx)
        p, xs, hidden, n_hidden = self._split_bottoms(bottoms)
        bd = [dx, None] + ([dxs] if xs is not None else [])
        if n_hidden:
            k = len(bd)
            bd += [dh.reshape(1, n, h_dim) if propagate_down[k] else None,
                   dc.reshape(1, n, h_dim) if propagate_down[k + 1] else None]
        return bd, pd + [dw_hc]


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

    def forward(self, bottoms, params, ctx):
        """Caffe's unrolled RNN: ``h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h (+ static))``,
        ``o_t = tanh(W_ho h_t + b_o)``."""
        wx, static, hidden = self._inputs(bottoms, params)
        cont = bottoms[1]
        t_steps, n = cont.shape
        w_hh, w_ho, b_o = params[-3], params[-2], params[-1]
        h_dim = w_hh.shape[1]
        h = hidden[0].reshape(n, h_dim) if hidden else np.zeros((n, h_dim), dtype=np.float32)
        os_ = np.empty((t_steps, n, h_dim), dtype=np.float32)
        steps = []
        for t in range(t_steps):
            h_conted = h * cont[t].reshape(n, 1)
            pre = h_conted @ w_hh.T + wx[t]
            if static is not None:
                pre = pre + static
            h = np.tanh(pre)
            os_[t] = np.tanh(h @ w_ho.T + b_o)
            steps.append((h_conted, h))
        ctx.cache["steps"] = steps
        tops = [os_]
        if len(self.lp.top) > 1:
            tops.append(h.reshape(1, n, h_dim))
        return tops

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx):
        cont = bottoms[1]
        t_steps, n = cont.shape
        w_hh, w_ho = params[-3], params[-2]
        h_dim = w_hh.shape[1]
        steps = ctx.cache["steps"]
        o, do = tops[0], top_diffs[0]
        dpre_o = do * (np.float32(1) - o * o)  # (T, N, H)
        hs = np.stack([s[1] for s in steps])
        dw_ho = dpre_o.reshape(-1, h_dim).T @ hs.reshape(-1, h_dim)
        db_o = dpre_o.reshape(-1, h_dim).sum(axis=0, dtype=np.float32)
        dh_out = (dpre_o.reshape(-1, h_dim) @ w_ho).reshape(t_steps, n, h_dim)
        dh = top_diffs[1].reshape(n, h_dim).copy() if len(top_diffs) > 1 else np.zeros((n, h_dim), np.float32)
        d_pre = np.empty((t_steps, n, h_dim), dtype=np.float32)
        dw_hh = np.zeros(w_hh.shape, dtype=np.float32)
        for t in range(t_steps - 1, -1, -1):
            h_conted, h = steps[t]
            dp = (dh + dh_out[t]) * (np.float32(1) - h * h)
            d_pre[t] = dp
            dw_hh += dp.T @ h_conted
            dh = (dp @ w_hh) * cont[t].reshape(n, 1)
        dx, dxs, pd = self._input_backward(d_pre, bottoms, params, propagate_down, ctx)
        p, xs, hidden, n_hidden = self._split_bottoms(bottoms)
        bd = [dx, None] + ([dxs] if xs is not None else [])
        if n_hidden:
            bd.append(dh.reshape(1, n, h_dim) if propagate_down[len(bd)] else None)
        return bd, pd + [dw_hh, dw_ho, db_o]
