"""The signal report: how a net's initialization carries the signal forward and the gradient
backward, layer by layer, with Caffe's own numbers (the numpy engine, :mod:`fillers.lab.engine`).

One forward pass on seeded unit-Gaussian inputs (or inputs given), one backward pass from a
seeded unit-variance diff at every output (or diffs given, or the net's own loss layers),
then, in net order, for each layer with parameters and each nonlinearity: depth, the std and
mean of the layer's own output (before an in-place successor replaces it), the ratio of that
std to the std of the layer's input, the std of the gradient with respect to the output and
to the weights, n_in·Var(W) and n_out·Var(W) with Caffe's fans (Glorot & Bengio ask 1 for
each; He et al. 2 for ReLU), and Brock et al.'s signal-propagation statistics (average
squared channel mean, average channel variance).  For recurrent layers, the norm of the
gradient with respect to each time step of the input.

>>> rep = signal_report(net, params)                                  # doctest: +SKIP
>>> print(rep.text()); rep.to_json()                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..textfmt import table
from .engine import Engine, stats

#: a signal below LOW or above HIGH times its start is marked
LOW, HIGH = 1e-3, 1e3


def is_nonlinear(layer) -> bool:
    """An elementwise activation (ReLU, TanH, Sigmoid, ELU, ... and fork types derived from
    them) or PReLU, by the layer type's class; Dropout (identity at inference) is not."""
    from ..layers.activation import Dropout, Elementwise, PReLU

    return isinstance(layer.spec, (Elementwise, PReLU)) and not isinstance(layer.spec, Dropout)


def is_recurrent(layer) -> bool:
    from ..layers.recurrent import Recurrent

    return isinstance(layer.spec, Recurrent)


def _label_like(layer, k) -> bool:
    """Bottom ``k`` of ``layer`` is read as labels: a bottom past the first that the type
    refuses a diff (losses' labels) or a layer without a backward pass (Accuracy)."""
    from .engine import _allow_force

    return k >= 1 and not is_recurrent(layer) and (not _allow_force(layer, k)
                                                    or not getattr(layer.spec, "has_backward", True))


def weighted(layer) -> bool:
    """Whether the layer has a weight blob (``LayerType.roles``: what ``--filler`` replaces)."""
    from ..layers.base import WEIGHT

    return any(pb.role == WEIGHT for pb, o in zip(layer.params, layer.owners))


def weight_index(layer) -> Optional[int]:
    from ..layers.base import WEIGHT

    for j, pb in enumerate(layer.params):
        if pb.role == WEIGHT:
            return j
    return None


# ---- inputs and diffs ----------------------------------------------------------------------

def default_inputs(net, seed=0) -> dict:
    """Seeded inputs for the net's inputs: unit Gaussian, or what a consuming layer asks for
    (``LayerType.sample_input``: Embed's indices, a recurrent layer's ``cont``); a loss or
    Accuracy layer's label gets class indices."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for layer in net.layers:
        if layer.bottoms:
            continue
        for t, shape in zip(layer.tops, layer.top_shapes):
            shape = tuple(int(d) for d in shape)
            value = None
            for other in net.layers:
                for k, b in enumerate(other.bottoms):
                    if b != t or value is not None:
                        continue
                    asked = other.spec.sample_input(k, shape, rng)
                    if asked is not None:
                        value = np.asarray(asked, dtype=np.float32)
                    elif _label_like(other, k) and len(other.bottom_shapes[0]) > 1:
                        classes = int(other.bottom_shapes[0][1])
                        value = rng.integers(0, classes, size=shape).astype(np.float32)
            feeds[t] = value if value is not None else rng.standard_normal(shape).astype(np.float32)
    return feeds


def default_output_diffs(net, seed=0, eng=None) -> dict:
    """A seeded unit-variance Gaussian diff at every net output; none when the net has loss
    layers (their ``loss_weight`` starts the backward pass, as in Caffe)."""
    from .engine import _loss_weights

    loss = any(any(_loss_weights(l)) for l in net.layers)
    if loss:
        return {}
    rng = np.random.default_rng([seed, 1])
    return {n: rng.standard_normal(tuple(net.blobs[n])).astype(np.float32) for n in net.outputs}


def read_arrays(path, names, prefixes, what) -> dict:
    """``{name: array}`` from an .npz whose keys are bare names (``data``) or carry one of
    ``prefixes`` (``input/data``, ``diff/prob``); keys with another prefix (``stats/...``)
    are ignored; a bare key that is not one of ``names`` is an error."""
    from ..errors import FillersError

    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise FillersError(f"{what} {path}: cannot read it as .npz ({exc})") from None
    out = {}
    for key in z.files:
        head, sep, rest = key.partition("/")
        if sep:
            if head not in prefixes:
                continue
            name = rest
        else:
            name = key
        if name not in names:
            raise FillersError(f"{what} {path}: '{key}' names no {'input' if 'input' in prefixes else 'output'} "
                             f"of the net (it has: {', '.join(names) or '-'})")
        out[name] = np.asarray(z[key], dtype=np.float32)
    return out


# ---- the report ----------------------------------------------------------------------------

@dataclass
class Row:
    depth: int
    layer: str
    type: str
    std: float
    mean: float
    gain: Optional[float]  # std(output) / std(input of the layer)
    grad_std: Optional[float]  # std of the diff with respect to the output
    wgrad_std: Optional[float]  # std of the weight blob's diff
    n_in_var: Optional[float]
    n_out_var: Optional[float]
    sq_mean: float  # Brock et al.: average squared channel mean
    ch_var: float  # Brock et al.: average channel variance
    fwd_mark: str = ""
    bwd_mark: str = ""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass
class SignalReport:
    net: str
    phase: str
    label: str = ""  # the filler (for comparisons and plots)
    rows: list = field(default_factory=list)
    blobs: dict = field(default_factory=dict)  # blob -> {"data": stats, "diff": stats}
    params: dict = field(default_factory=dict)  # "layer/j" -> {"data": stats, "diff": stats}
    time_steps: dict = field(default_factory=dict)  # recurrent layer -> [gradient norm per input step]
    input_std: float = float("nan")
    output_std: float = float("nan")
    output_grad_std: float = float("nan")
    input_grad_std: float = float("nan")
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    loss: bool = False

    @property
    def forward_gain(self) -> float:
        return _ratio(self.output_std, self.input_std)

    @property
    def backward_gain(self) -> float:
        return _ratio(self.input_grad_std, self.output_grad_std)

    def summary(self) -> str:
        return (f"forward gain input -> output (std): {_fmt(self.forward_gain)}; backward gain output -> input "
                f"(gradient std): {_fmt(self.backward_gain)}")

    def text(self) -> str:
        head = ["depth", "layer", "type", "std", "mean", "std/in", "grad std", "grad W std", "n_in*Var(W)",
                "n_out*Var(W)", "ch mean^2", "ch var", ""]
        rows = []
        for r in self.rows:
            mark = " ".join(m for m in (r.fwd_mark, r.bwd_mark) if m)
            rows.append([str(r.depth), r.layer, r.type, _fmt(r.std), _fmt(r.mean), _fmt(r.gain), _fmt(r.grad_std),
                         _fmt(r.wgrad_std), _fmt(r.n_in_var), _fmt(r.n_out_var), _fmt(r.sq_mean), _fmt(r.ch_var),
                         mark])
        lines = [f"signal report: {self.net} (phase {self.phase}{', ' + self.label if self.label else ''}; "
                 f"inputs {', '.join(self.inputs) or '-'}, gradient from "
                 f"{'the loss layers' if self.loss else ', '.join(self.outputs) or '-'})"]
        lines.append(table(rows, head, right=set(range(3, 12)) | {0}))
        for name, norms in self.time_steps.items():
            lines.append(f"{name}: gradient norm w.r.t. each time step of the input (t = 0..{len(norms) - 1}): "
                         + " ".join(_fmt(n) for n in norms))
        if any(r.fwd_mark or r.bwd_mark for r in self.rows):
            lines.append(f"markers: fwd v / fwd ^ = output std below {LOW:g} / above {HIGH:g} times the input's; "
                         f"bwd v / bwd ^ = gradient std below {LOW:g} / above {HIGH:g} times the output's")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "net": self.net, "phase": self.phase, "filler": self.label,
            "blobs": self.blobs, "params": self.params,
            "layers": [r.as_dict() for r in self.rows],
            "time_steps": self.time_steps,
            "summary": {"input_std": _num(self.input_std), "output_std": _num(self.output_std),
                        "output_grad_std": _num(self.output_grad_std), "input_grad_std": _num(self.input_grad_std),
                        "forward_gain": _num(self.forward_gain), "backward_gain": _num(self.backward_gain)},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)


def _num(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _ratio(a, b) -> float:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return float("nan")
    return a / b


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:.3g}"


def channel_stats(a, axis=1):
    """Brock et al. (2021): the average over channels of the squared channel mean, and the
    average channel variance (over every other axis), in float64."""
    a = np.asarray(a)
    if a.ndim < 2:
        x = a.astype(np.float64).reshape(-1)
        return float(x.mean() ** 2), float(x.var())
    axis = axis % a.ndim
    other = tuple(i for i in range(a.ndim) if i != axis)
    m = a.mean(axis=other, dtype=np.float64)
    sq = np.square(a, dtype=np.float64).mean(axis=other)
    var = np.maximum(sq - m * m, 0.0)
    return float(np.mean(m * m)), float(np.mean(var))


def _std(a) -> float:
    return float(stats(a)[1])


def signal_report(net, params, feeds=None, output_diffs=None, phase=None, seed=0, label="",
                  force_backward=True, caffe_version="master") -> SignalReport:
    """Run one forward and one backward pass of ``net`` with ``params`` and report the
    signal (see the module docstring).  ``feeds``: ``{input: array}`` (default: seeded, see
    :func:`default_inputs`); ``output_diffs``: ``{output: diff}`` (default: a seeded unit
    Gaussian at every output, or the loss layers when the net has any); ``phase``: the
    engine's (default the net's); ``seed``: for the default inputs, diffs and Dropout."""
    from ..fans import fan_in_fan_out

    eng = Engine(net, params, phase=phase, rng=seed, force_backward=force_backward, keep_splits=True)
    given = dict(feeds or {})
    feeds = {**default_inputs(net, seed), **given} if len(given) < len(net.inputs) else given
    layers = net.layers
    wanted = [li for li, l in enumerate(layers) if (l.params and not l.is_input) or is_nonlinear(l)
              or is_recurrent(l)]
    wanted_set = set(wanted)
    fwd: dict = {}

    def on_forward(li, bottoms, tops):
        if li not in wanted_set or not tops:
            return
        t = tops[0]
        st = stats(t)
        axis = -1 if is_recurrent(layers[li]) else 1
        fwd[li] = (st, _std(bottoms[0]) if bottoms else float("nan"), channel_stats(t, axis))

    eng.forward(feeds, observer=on_forward)
    if output_diffs is None:
        output_diffs = default_output_diffs(net, seed, eng)
    bwd: dict = {}
    steps: dict = {}

    def on_backward(li, top_diffs, bottom_diffs, param_diffs):
        if li in wanted_set and top_diffs:
            bwd[li] = _std(top_diffs[0])
        if is_recurrent(layers[li]) and bottom_diffs and bottom_diffs[0] is not None:
            d = np.asarray(bottom_diffs[0], dtype=np.float64)
            steps[layers[li].name] = [float(v) for v in np.sqrt(np.square(d.reshape(d.shape[0], -1)).sum(axis=1))]

    blob_diffs, param_diffs = eng.backward(output_diffs, observer=on_backward)
    loss = not output_diffs and any(any(w) for w in eng.loss_weights)
    rep = SignalReport(net=net.name or "net", phase=eng.phase, label=label, inputs=list(net.inputs),
                       outputs=list(output_diffs) if output_diffs else list(net.outputs), loss=loss)
    gs = eng.golden_stats()
    for key, v in gs.items():
        kind, rest = key.split("/", 1)
        if kind == "stats":
            rep.blobs.setdefault(rest, {})["data"] = [float(x) for x in v]
        elif kind == "dstats":
            rep.blobs.setdefault(rest, {})["diff"] = [float(x) for x in v]
        elif kind == "pdstats":
            lname, j = rest.rsplit("/", 1)
            li = next(i for i, l in enumerate(layers) if l.name == lname)
            rep.params[rest] = {"data": [float(x) for x in stats(eng.params[li][int(j)])], "diff": [float(x) for x in v]}
    # the start and the end of the signal
    in_stds = [_std(feeds[n]) for n in net.inputs if n in feeds and not _is_index_input(net, n)]
    rep.input_std = float(np.mean(in_stds)) if in_stds else float("nan")
    out_stds = [rep.blobs[n]["data"][1] for n in net.outputs if n in rep.blobs]
    rep.output_std = float(np.mean(out_stds)) if out_stds else float("nan")
    if output_diffs:
        rep.output_grad_std = float(np.mean([_std(d) for d in output_diffs.values()]))
    else:  # from the loss layers: the gradient at their bottoms
        starts = [bwd[li] for li in range(len(layers) - 1, -1, -1) if li in bwd]
        ls = [_std(blob_diffs[b]) for li, l in enumerate(layers) if any(eng.loss_weights[li]) for b in l.bottoms[:1]]
        rep.output_grad_std = float(np.mean(ls)) if ls else (starts[0] if starts else float("nan"))
    ig = [_std(blob_diffs[n]) for n in net.inputs if n in blob_diffs and not _is_index_input(net, n)]
    rep.input_grad_std = float(np.mean(ig)) if ig else float("nan")
    depth = 0
    for li in wanted:
        layer = layers[li]
        if weighted(layer):
            depth += 1
        if li not in fwd:
            continue
        st, in_std, (sq_mean, ch_var) = fwd[li]
        wi = weight_index(layer)
        n_in = n_out = wgrad = None
        if wi is not None:
            w = eng.params[li][wi]
            try:
                fi, fo = fan_in_fan_out(w.shape, caffe_version=caffe_version)
                var = float(stats(w)[1]) ** 2
                n_in, n_out = fi * var, fo * var
            except Exception:
                pass
            owner = layer.owners[wi]
            oname, oj = (layer.name, wi) if owner is None else (layers[owner[0]].name, owner[1])
            wgrad = _std(param_diffs[oname][oj])
        row = Row(depth=depth, layer=layer.name, type=layer.type, std=float(st[1]), mean=float(st[0]),
                  gain=_ratio(float(st[1]), in_std), grad_std=bwd.get(li), wgrad_std=wgrad, n_in_var=n_in,
                  n_out_var=n_out, sq_mean=sq_mean, ch_var=ch_var)
        f = _ratio(row.std, rep.input_std)
        if f < LOW:
            row.fwd_mark = "fwd v"
        elif f > HIGH:
            row.fwd_mark = "fwd ^"
        if row.grad_std is not None:
            b = _ratio(row.grad_std, rep.output_grad_std)
            if b < LOW:
                row.bwd_mark = "bwd v"
            elif b > HIGH:
                row.bwd_mark = "bwd ^"
        rep.rows.append(row)
    rep.time_steps = steps
    return rep


def _is_index_input(net, name) -> bool:
    """An input read as indices or flags (what a consumer's ``sample_input`` asks for:
    Embed's indices, a recurrent layer's cont; or labels)."""
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in net.blobs[name])
    for layer in net.layers:
        for k, b in enumerate(layer.bottoms):
            if b == name and (_label_like(layer, k) or layer.spec.sample_input(k, shape, rng) is not None):
                return True
    return False
