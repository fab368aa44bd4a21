"""Caffe's forward and backward pass in numpy, driven over a built :class:`fillers.net.Net`.

Each layer type computes its own forward and backward (``LayerType.forward`` /
``LayerType.backward`` in :mod:`fillers.layers`); this module runs them in Caffe's order
with Caffe's bookkeeping:

* blobs are *versions*: a layer writing a name in place makes a new version; every layer
  keeps the arrays it saw, so nothing is overwritten (the final data of a name is its last
  writer's output, as in Caffe);
* a version read by several layers gets the sum of their diffs (Caffe's automatic Split
  layers; their per-consumer diffs can be kept under Caffe's split blob names);
* after the backward pass a name written in place holds the diff with respect to its
  *first* writer's output (Caffe's in-place diff buffer);
* which layers and bottoms get a diff follows ``Net::Init``: ``force_backward`` asks every
  bottom the layer's ``AllowForceBackward`` permits (losses refuse labels, recurrent layers
  their ``cont``); without it, only what parameters upstream of a loss need; a layer's
  ``propagate_down`` entries override; shared parameters' diffs are summed into the owner.

>>> from fillers.net import load                                      # doctest: +SKIP
>>> net = load("lenet.prototxt"); params = net.fill(seed=1701, rng="caffe").params
>>> eng = Engine(net, params, phase="TEST")
>>> out = eng.forward({"data": x})                                  # {blob: array}
>>> diffs, pdiffs = eng.backward({"prob": dprob})                   # blob diffs, param diffs
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..layers.base import shape_count

TRAIN, TEST = "TRAIN", "TEST"


class LayerContext:
    """What a layer's ``forward``/``backward`` may use besides its arrays.

    ``phase``: "TRAIN" or "TEST"; ``rng``: a ``numpy.random.Generator`` (Dropout's mask,
    DummyData's fillers); ``cache``: a dict the layer's forward fills for its backward
    (MAX pooling's argmax, BatchNorm's batch statistics, ...), one per layer and cleared at
    each forward; ``feeds``: for data layers, the arrays fed for their tops (``None`` for a
    top not fed); ``param_propagate``: per parameter blob, whether its diff is wanted;
    ``layer``: the net's :class:`fillers.net.Layer` (name, shapes, ...).
    """

    __slots__ = ("phase", "rng", "cache", "feeds", "param_propagate", "layer")

    def __init__(self, phase=TEST, rng=None, layer=None):
        self.phase = phase
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.cache: dict = {}
        self.feeds: list = []
        self.param_propagate: list = []
        self.layer = layer

    @property
    def train(self) -> bool:
        return self.phase == TRAIN


def stats(a) -> np.ndarray:
    """The goldens' statistics of an array: float64 ``[mean, std (population), min, max,
    mean |x|]``."""
    y = np.asarray(a).reshape(-1)
    n = y.size
    if n == 0:
        return np.zeros(5)
    if n <= _CHUNK:
        y = y.astype(np.float64)
        return np.array([y.mean(), y.std(), y.min(), y.max(), np.abs(y).mean()])
    # two passes in float64 over chunks: no float64 copy of a large blob
    total = abs_total = 0.0
    lo, hi = np.inf, -np.inf
    for i in range(0, n, _CHUNK):
        c = y[i:i + _CHUNK].astype(np.float64)
        total += c.sum()
        abs_total += np.abs(c).sum()
        lo, hi = min(lo, c.min()), max(hi, c.max())
    mean = total / n
    sq = 0.0
    for i in range(0, n, _CHUNK):
        c = y[i:i + _CHUNK].astype(np.float64) - mean
        sq += np.dot(c, c)
    return np.array([mean, np.sqrt(sq / n), lo, hi, abs_total / n])


_CHUNK = 1 << 20


_NO_PARAM_LR_TYPES = ("BatchNorm",)  # Caffe masks these blobs from optimization (lr_mult 0)


def _loss_weights(layer) -> list:
    lp = layer.lp
    n = len(layer.tops)
    if len(lp.loss_weight):
        w = [float(v) for v in lp.loss_weight] + [0.0] * n
        return w[:n]
    if layer.type.endswith("Loss") and n:
        return [1.0] + [0.0] * (n - 1)
    return [0.0] * n


def _param_lr(layer, j) -> float:
    if layer.type in _NO_PARAM_LR_TYPES:
        return 0.0
    lp = layer.lp
    return float(lp.param[j].lr_mult) if j < len(lp.param) else 1.0


def _allow_force(layer, i) -> bool:
    fn = getattr(layer.spec, "allow_force_backward", None)
    return True if fn is None else bool(fn(i))


class Engine:
    """Caffe's forward and backward pass for ``net`` with parameter arrays ``params``
    (``{layer name: [arrays]}``, e.g. ``net.fill(...).params``; shared blobs may be given
    under the owner only).

    ``phase``: "TRAIN"/"TEST" (default: the net's); ``rng``: a seed or a numpy Generator
    (Dropout's masks in TRAIN); ``force_backward``: Caffe's ``force_backward`` (default on;
    ``None`` reads the prototxt's); ``keep_splits``: keep each consumer's diff of a blob read
    by several layers under Caffe's split blob names (``split_diffs``).
    """

    def __init__(self, net, params, phase: Optional[str] = None, rng=None, force_backward: Optional[bool] = True,
                 keep_splits: bool = False):
        self.net = net
        if phase is None:
            phase = TRAIN if getattr(net, "phase", 1) == 0 else TEST
        if isinstance(phase, int):
            phase = TRAIN if phase == 0 else TEST
        phase = str(phase).upper()
        if phase not in (TRAIN, TEST):
            raise ValueError(f"phase '{phase}' is not TRAIN or TEST")
        self.phase = phase
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if force_backward is None:
            np_ = getattr(net, "net_param", None)
            force_backward = bool(np_ is not None and np_.force_backward)
        self.force_backward = force_backward
        self.keep_splits = keep_splits
        self.params = self._resolve_params(params)
        self.ctxs = [LayerContext(phase, self.rng, l) for l in net.layers]
        self._plan()
        self.split_diffs: dict = {}
        self._data: dict = {}

    # ---- set-up ----------------------------------------------------------------------------
    def _resolve_params(self, params) -> list:
        out = []
        for li, layer in enumerate(self.net.layers):
            given = params.get(layer.name) if params is not None else None
            arrs = []
            for j, (pb, owner) in enumerate(zip(layer.params, layer.owners)):
                if owner is not None:
                    arrs.append(out[owner[0]][owner[1]])
                    continue
                if given is None or j >= len(given):
                    raise KeyError(f"no array for parameter blob {j} of layer '{layer.name}'")
                a = np.asarray(given[j], dtype=np.float32)
                if a.size != pb.count:
                    raise ValueError(f"layer '{layer.name}' blob {j}: {a.shape} given, {pb.shape} needed")
                arrs.append(a.reshape(pb.shape))
            out.append(arrs)
        return out

    def _plan(self):
        """Versions, consumers, Caffe's split names and the need-backward flags of Net::Init."""
        layers = self.net.layers
        cur: dict = {}  # name -> version id
        self.vname: list = []  # version id -> blob name
        self.vproducer: list = []  # version id -> (layer index, top index)
        self.lbottoms: list = []
        self.ltops: list = []
        self.consumers: dict = {}  # version -> [(layer, bottom index)]
        for li, layer in enumerate(layers):
            bv = [cur[b] for b in layer.bottoms]
            for k, v in enumerate(bv):
                self.consumers.setdefault(v, []).append((li, k))
            tv = []
            for j, t in enumerate(layer.tops):
                v = len(self.vname)
                self.vname.append(t)
                self.vproducer.append((li, j))
                cur[t] = v
                tv.append(v)
            self.lbottoms.append(bv)
            self.ltops.append(tv)
        self.final_version = cur
        self.versions_of: dict = {}
        for v, n in enumerate(self.vname):
            self.versions_of.setdefault(n, []).append(v)
        self.loss_weights = [_loss_weights(l) for l in layers]
        # Caffe's split blob names (insert_splits.cpp): a top read by several bottoms (a loss
        # weight counts as a reader)
        self.split_name: dict = {}  # (layer, bottom index) -> split blob name
        self.split_sources: dict = {}  # split blob name -> blob name
        for v, cons in self.consumers.items():
            li, j = self.vproducer[v]
            n = len(cons) + (1 if self.loss_weights[li][j] else 0)
            if n > 1:
                for k, (ci, bi) in enumerate(cons):
                    name = f"{self.vname[v]}_{layers[li].name}_{j}_split_{k}"
                    self.split_name[(ci, bi)] = name
                    self.split_sources[name] = self.vname[v]
        # Net::Init's need-backward flags (blob flags by name, as Caffe's blob ids)
        blob_need = {}
        self.layer_need = []
        self.bottom_need = []
        self.param_need = []
        for li, layer in enumerate(layers):
            need = False
            bn = []
            pd = list(layer.lp.propagate_down)
            for k, b in enumerate(layer.bottoms):
                nb = blob_need.get(b, False)
                need |= nb
                if pd:
                    nb = bool(pd[k])
                bn.append(nb)
            pn = [_param_lr(layer, j) != 0 for j in range(len(layer.params))]
            need |= any(pn)
            if need:
                for t in layer.tops:
                    blob_need[t] = True
            self.layer_need.append(need)
            self.bottom_need.append(bn)
            self.param_need.append(pn)
        under_loss, skip = set(), set()
        for li in range(len(layers) - 1, -1, -1):
            layer = layers[li]
            contributes, skip_prop = False, True
            for j, t in enumerate(layer.tops):
                if self.loss_weights[li][j] or t in under_loss:
                    contributes = True
                if t not in skip:
                    skip_prop = False
            if self.layer_need[li] and skip_prop:
                self.layer_need[li] = False
                self.bottom_need[li] = [False] * len(layer.bottoms)
            if not contributes:
                self.layer_need[li] = False
            for k, b in enumerate(layer.bottoms):
                if contributes:
                    under_loss.add(b)
                else:
                    self.bottom_need[li][k] = False
                if not self.bottom_need[li][k]:
                    skip.add(b)
        if self.force_backward:
            for li, layer in enumerate(layers):
                self.layer_need[li] = True
                self.bottom_need[li] = [nb or _allow_force(layer, k) for k, nb in enumerate(self.bottom_need[li])]
                self.param_need[li] = [True] * len(layer.params)
        # a layer without a backward pass in Caffe (ArgMax, Accuracy, ...) writes no diff
        for li, layer in enumerate(layers):
            if not getattr(layer.spec, "has_backward", True):
                self.bottom_need[li] = [False] * len(layer.bottoms)
        for li, ctx in enumerate(self.ctxs):
            ctx.param_propagate = self.param_need[li]
        # which versions' data the backward pass reads: a layer's ``backward_reads`` names
        # what its backward uses ("bottoms", "tops"); the final version of every name is kept
        self.vshape = [None] * len(self.vname)
        for li, layer in enumerate(layers):
            for v, shp in zip(self.ltops[li], layer.top_shapes):
                self.vshape[v] = tuple(int(d) for d in shp)
        finals = set(self.final_version.values())
        self.data_needed = [v in finals for v in range(len(self.vname))]
        for li, layer in enumerate(layers):
            if not self.layer_need[li]:
                continue
            reads = getattr(layer.spec, "backward_reads", ("bottoms", "tops"))
            if "bottoms" in reads:
                for v in self.lbottoms[li]:
                    self.data_needed[v] = True
            if "tops" in reads:
                for v in self.ltops[li]:
                    self.data_needed[v] = True

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, feeds: Optional[dict] = None, keep: bool = True, outputs=None, observer=None) -> dict:
        """Run every layer in net order; returns ``{blob name: array}`` with each name's final
        data (its last writer's output).  ``feeds`` gives the data layers' tops by name.
        ``keep=False`` frees every array as soon as no later layer reads it (forward only;
        the result then holds the net's outputs only, or the names in ``outputs``).
        ``observer(layer index, bottoms, tops)`` is called after each layer (the report's
        statistics of each layer's own tops, before an in-place successor replaces them)."""
        data: dict = {}
        state = self.start_forward(feeds, keep, outputs)
        for li in range(len(self.net.layers)):
            tops = self.forward_layer(li, data, state)
            if observer is not None:
                observer(li, [data[v] for v in self.lbottoms[li]], tops)
            self.release(li, data, state)
        return self.finish_forward(data, state)

    def start_forward(self, feeds=None, keep: bool = True, outputs=None) -> dict:
        """The bookkeeping of a layer-by-layer forward (:meth:`forward_layer`,
        :meth:`release`, :meth:`finish_forward`; LSUV re-runs a layer between them)."""
        wanted = self.net.outputs if outputs is None else list(outputs)
        return {"feeds": dict(feeds or {}), "keep": keep, "wanted": wanted,
                "remaining": {v: len(c) for v, c in self.consumers.items()},
                "outputs": set(self.final_version[n] for n in wanted if n in self.final_version)}

    def forward_layer(self, li: int, data: dict, state: dict) -> list:
        """Run layer ``li`` on its bottoms' versions in ``data``; stores and returns its tops."""
        layer = self.net.layers[li]
        ctx = self.ctxs[li]
        ctx.cache = {}
        feeds = state["feeds"]
        if not layer.bottoms:
            ctx.feeds = [None if feeds.get(t) is None else np.asarray(feeds[t], dtype=np.float32)
                         for t in layer.tops]
        bottoms = [data[v] for v in self.lbottoms[li]]
        try:
            tops = layer.spec.forward(bottoms, self.params[li], ctx)
        except NotImplementedError:
            raise
        except Exception as exc:  # name the layer
            raise type(exc)(f"layer '{layer.name}' ({layer.type}): {exc}") from exc
        out = []
        for v, t, shape in zip(self.ltops[li], tops, layer.top_shapes):
            t = np.asarray(t, dtype=np.float32)
            if t.shape != tuple(shape):
                if t.size == layer.spec.count(shape):
                    t = t.reshape(shape)
                else:
                    raise ValueError(f"layer '{layer.name}' ({layer.type}) produced {t.shape}, "
                                     f"Caffe's shape is {tuple(shape)}")
            data[v] = t
            out.append(t)
        return out

    def release(self, li: int, data: dict, state: dict) -> None:
        """After layer ``li``: free what no later layer (and no backward) reads."""
        keep, remaining, outputs = state["keep"], state["remaining"], state["outputs"]
        for v in self.lbottoms[li]:
            remaining[v] -= 1
            if remaining[v] == 0 and v not in outputs and v in data and (not keep or not self.data_needed[v]):
                del data[v]  # no later layer reads it, and no backward either
        if not keep:
            self.ctxs[li].cache = {}

    def finish_forward(self, data: dict, state: dict) -> dict:
        self._data = data
        self._kept = state["keep"]
        if state["keep"]:
            return {n: data[v] for n, v in self.final_version.items() if v in data}
        return {n: data[self.final_version[n]] for n in state["wanted"] if self.final_version.get(n) in data}

    # ---- backward --------------------------------------------------------------------------
    def backward(self, output_diffs: Optional[dict] = None, observer=None):
        """Caffe's ``Net::Backward`` after :meth:`forward`.  ``output_diffs``: the diffs of net
        outputs (``{name: array}``; a loss layer's top gets its ``loss_weight`` unless given).

        Returns ``(blob_diffs, param_diffs)``: ``{blob name: diff}`` for every blob (Caffe's
        diff buffer: a name written in place holds the diff with respect to its first
        writer's output; zeros where no diff reaches), and ``{layer name: [diff per blob]}``
        for the layers owning parameters (shared blobs' diffs summed into the owner).

        ``observer(layer index, top diffs, bottom diffs, parameter diffs)`` is called after
        each layer's backward (the diffs with respect to that layer's own tops, before an
        in-place predecessor's backward replaces them in Caffe's shared buffer)."""
        if not self._data or not getattr(self, "_kept", False):
            raise RuntimeError("backward needs a forward(..., keep=True) first")
        layers = self.net.layers
        data = self._data
        acc: dict = {}
        written: set = set()
        for li, layer in enumerate(layers):
            for j, w in enumerate(self.loss_weights[li]):
                if w:
                    v = self.ltops[li][j]
                    acc[v] = np.full(self.vshape[v], w, dtype=np.float32)
                    written.add(v)
        for name, d in (output_diffs or {}).items():
            if name not in self.final_version:
                raise KeyError(f"'{name}' is not a blob of the net")
            v = self.final_version[name]
            d = np.asarray(d, dtype=np.float32)
            if d.size != shape_count(self.vshape[v]):
                raise ValueError(f"diff for '{name}' has {d.shape}, the blob {self.vshape[v]}")
            acc[v] = d.reshape(self.vshape[v])
            written.add(v)
        pdiffs = [[None] * len(l.params) for l in layers]
        self.split_diffs = {}
        for li in range(len(layers) - 1, -1, -1):
            if not self.layer_need[li]:
                continue
            layer = layers[li]
            pd = self.bottom_need[li]
            if not any(pd) and not any(self.param_need[li]) or not layer.tops and not any(pd):
                continue
            top_diffs = []
            for v in self.ltops[li]:
                d = acc.get(v)
                top_diffs.append(d if d is not None else np.zeros(self.vshape[v], dtype=np.float32))
            bottoms = [data.get(v) for v in self.lbottoms[li]]
            tops = [data.get(v) for v in self.ltops[li]]
            try:
                bdiffs, ldiffs = layer.spec.backward(top_diffs, bottoms, tops, self.params[li], list(pd),
                                                     self.ctxs[li])
            except NotImplementedError:
                raise
            except Exception as exc:
                raise type(exc)(f"layer '{layer.name}' ({layer.type}) backward: {exc}") from exc
            if observer is not None:
                observer(li, top_diffs, list(bdiffs), list(ldiffs or []))
            for k, v in enumerate(self.lbottoms[li]):
                if not pd[k]:
                    continue
                d = bdiffs[k] if k < len(bdiffs) else None
                if d is None:
                    d = np.zeros(self.vshape[v], dtype=np.float32)
                d = np.asarray(d, dtype=np.float32).reshape(self.vshape[v])
                if self.keep_splits and (li, k) in self.split_name:
                    self.split_diffs[self.split_name[(li, k)]] = d
                if v in acc and v in written:
                    acc[v] = acc[v] + d
                else:
                    acc[v] = d
                written.add(v)
            # an in-place top's diff is superseded once this layer wrote its bottom's (Caffe's
            # shared diff buffer): only the earliest written version of a name is kept
            for j, v in enumerate(self.ltops[li]):
                if v in acc and j < len(self.lbottoms[li]) and self.vname[self.lbottoms[li][j]] == self.vname[v] \
                        and self.lbottoms[li][j] in written and pd[j]:
                    del acc[v]
            for j, d in enumerate(ldiffs or []):
                if d is None or not self.param_need[li][j]:
                    continue
                d = np.asarray(d, dtype=np.float32).reshape(layer.params[j].shape)
                oi, oj = (li, j) if layer.owners[j] is None else layer.owners[j]
                pdiffs[oi][oj] = d if pdiffs[oi][oj] is None else pdiffs[oi][oj] + d
        blob_diffs = {}
        for name, vs in self.versions_of.items():
            d = None
            for v in vs:  # the earliest version whose diff was written
                if v in written:
                    d = acc[v]
                    break
            if d is None:
                d = np.zeros(self.vshape[vs[-1]], dtype=np.float32)
            blob_diffs[name] = d
        param_diffs = {}
        for li, layer in enumerate(layers):
            if not layer.params:
                continue
            row = []
            for j, pb in enumerate(layer.params):
                if layer.owners[j] is not None:
                    oi, oj = layer.owners[j]
                    d = pdiffs[oi][oj]
                else:
                    d = pdiffs[li][j]
                row.append(d if d is not None else np.zeros(pb.shape, dtype=np.float32))
            param_diffs[layer.name] = row
        self.blob_diffs, self.param_diffs = blob_diffs, param_diffs
        return blob_diffs, param_diffs

    # ---- what the goldens store ------------------------------------------------------------
    def blob_data(self) -> dict:
        """``{blob name: final data}`` after :meth:`forward` (Caffe's split blobs included,
        holding their source's data)."""
        out = {n: self._data[v] for n, v in self.final_version.items()}
        return out

    def golden_stats(self, include_splits: bool = True) -> dict:
        """The goldens' keys after forward (and backward, if run): ``stats/<blob>``,
        ``dstats/<blob>``, ``pdstats/<layer>/<j>`` (owners only), as float64 arrays."""
        out = {}
        data = self.blob_data()
        for n, a in data.items():
            out[f"stats/{n}"] = stats(a)
        if include_splits:
            for s, src in self.split_sources.items():
                out[f"stats/{s}"] = out[f"stats/{src}"]
        if getattr(self, "blob_diffs", None) is not None:
            for n, d in self.blob_diffs.items():
                out[f"dstats/{n}"] = stats(d)
            if include_splits:
                for s in self.split_sources:
                    d = self.split_diffs.get(s)
                    out[f"dstats/{s}"] = stats(d) if d is not None else np.zeros(5)
            for li, layer in enumerate(self.net.layers):
                for j, owner in enumerate(layer.owners):
                    if owner is None:
                        out[f"pdstats/{layer.name}/{j}"] = stats(self.param_diffs[layer.name][j])
        return out


def run(net, params, feeds, output_diffs=None, phase=None, rng=None, force_backward=True, keep_splits=True):
    """Forward, then backward with ``output_diffs``; returns the engine (its ``golden_stats()``,
    ``blob_diffs``, ``param_diffs``)."""
    eng = Engine(net, params, phase=phase, rng=rng, force_backward=force_backward, keep_splits=keep_splits)
    eng.forward(feeds)
    eng.backward(output_diffs)
    return eng
