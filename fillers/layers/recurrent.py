"""LSTM and RNN: Caffe's recurrent layers, unrolled over the T time steps of bottom 0.

Bottoms: ``x`` (T x N x ...), ``cont`` (T x N), optionally ``x_static`` (N x ...), and
with ``expose_hidden`` the initial hidden state(s).  Caffe fills the blobs while it
builds the unrolled net, so the shared recurrent weights are drawn once per time step
(only the first draw is kept): :meth:`draws` reproduces that order.
"""

from __future__ import annotations

from .base import BIAS, WEIGHT, LayerType, ParamBlob, register


class Recurrent(LayerType):
    bottoms = (2, 5)
    tops = (1, 3)
    n_states = 1
    gates = 1

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


@register("LSTM")
class LSTM(Recurrent):
    """Blobs W_xc ``[4H, D]``, b_c ``[4H]``, (W_xc_static ``[4H, D_s]``), W_hc ``[4H, H]``;
    gates in Caffe's order i, f, o, g."""

    n_states = 2

    def params(self, bottoms):
        p, x, static, _ = self._check(bottoms)
        h = int(p.num_output)
        w = self.filler(p, "weight_filler")
        blobs = [ParamBlob("W_xc", (4 * h, self.count(x, 2)), w, WEIGHT),
                 ParamBlob("b_c", (4 * h,), self.filler(p, "bias_filler"), BIAS)]
        if static is not None:
            blobs.append(ParamBlob("W_xc_static", (4 * h, self.count(static, 1)), w, WEIGHT))
        blobs.append(ParamBlob("W_hc", (4 * h, h), w, WEIGHT))
        return blobs

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

    def params(self, bottoms):
        p, x, static, _ = self._check(bottoms)
        h = int(p.num_output)
        w = self.filler(p, "weight_filler")
        b = self.filler(p, "bias_filler")
        blobs = [ParamBlob("W_xh", (h, self.count(x, 2)), w, WEIGHT), ParamBlob("b_h", (h,), b, BIAS)]
        if static is not None:
            blobs.append(ParamBlob("W_xh_static", (h, self.count(static, 1)), w, WEIGHT))
        blobs += [ParamBlob("W_hh", (h, h), w, WEIGHT), ParamBlob("W_ho", (h, h), w, WEIGHT),
                  ParamBlob("b_o", (h,), b, BIAS)]
        return blobs

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
