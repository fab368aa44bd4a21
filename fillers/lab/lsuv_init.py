"""LSUV: layer-sequential unit-variance initialization (Mishkin & Matas, "All you need is a
good init", 2015).

Start from a base fill (orthonormal by default), then, for each layer with a weight blob in
net order, run the net forward on a batch up to that layer and rescale the weights by
``1 / sqrt(Var(output))`` until ``|Var(output) - 1| < tol`` (at most ``max_iter`` rescales).
The output measured is the layer's own top as the engine computes it, before any in-place
successor (BatchNorm, Scale, ReLU written into the same blob) replaces it: the net's
structure, not layer names, says what is measured.  BatchNorm and Scale layers (no weight
blob in the sense of ``--filler``) are run, never rescaled.  The forward pass is done once,
layer by layer, re-running only the layer being rescaled: LSUV costs about two forward
passes plus the re-runs of the rescaled layers.

>>> res = lsuv(net, params, feeds, tol=0.1, max_iter=10)               # doctest: +SKIP
>>> res.variances["conv1"]                                             # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .engine import Engine, stats
from .procedures import LSUV_DEFAULTS
from .report import default_inputs, weighted

DEFAULT_BASE, DEFAULT_TOL, DEFAULT_MAX_ITER = (LSUV_DEFAULTS[k] for k in ("base", "tol", "max_iter"))


@dataclass
class LsuvResult:
    """What LSUV did: per rescaled layer, the total scale applied, the final variance of its
    output and the number of rescales; the layers skipped, with warnings."""

    scales: dict = field(default_factory=dict)
    variances: dict = field(default_factory=dict)
    iterations: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # layer -> reason
    warnings: list = field(default_factory=list)
    layer_runs: int = 0  # layers run (forward) in all
    seconds: float = 0.0

    def text(self) -> str:
        lines = ["LSUV: layer, rescales, total scale, output variance"]
        for name in self.scales:
            lines.append(f"  {name}  {self.iterations[name]}  {self.scales[name]:.4g}  {self.variances[name]:.4g}")
        return "\n".join(lines)


def lsuv(net, params, feeds=None, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER, phase=None,
         seed=0, skip=(), progress: Optional[Callable] = None) -> LsuvResult:
    """Rescale the weight blobs of ``params`` (``{layer: [arrays]}``, modified in place) so
    that each weight layer's output has unit variance on the batch ``feeds`` (default:
    seeded unit Gaussian, :func:`fillers.lab.report.default_inputs`).

    ``tol``: the accepted ``|Var - 1|``; ``max_iter``: at most this many rescales per layer;
    ``phase``: the engine's (default the net's; BatchNorm uses batch statistics in TRAIN);
    ``skip``: layer names not to rescale (e.g. copied from trained weights); ``progress``:
    called as ``progress(done, total, layer name)``.  A layer whose output variance is zero
    (or not finite) is skipped with a warning; a layer that shares its weights with an
    earlier one is not rescaled again; a layer still outside ``tol`` after ``max_iter``
    rescales gets a warning.
    """
    if not tol > 0:
        raise ValueError(f"tol must be positive, not {tol}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, not {max_iter}")
    from ..layers.base import WEIGHT

    t0 = time.perf_counter()
    feeds = dict(feeds) if feeds else default_inputs(net, seed)
    for layer in net.layers:  # rescale arrays we own (float32, writable)
        arrs = params.get(layer.name)
        if arrs is None:
            continue
        for j, a in enumerate(arrs):
            if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.writeable):
                arrs[j] = np.array(a, dtype=np.float32)
    for layer in net.layers:  # sharers see the owners' (possibly copied) arrays
        for j, owner in enumerate(layer.owners):
            if owner is not None and layer.name in params:
                params[layer.name][j] = params[net.layers[owner[0]].name][owner[1]]
    eng = Engine(net, params, phase=phase, rng=seed, force_backward=False)
    res = LsuvResult()
    targets = [li for li, l in enumerate(net.layers) if weighted(l) and l.name not in skip]
    total = len(targets)
    done = 0
    data: dict = {}
    state = eng.start_forward(feeds, keep=False)
    skip = set(skip)
    for li, layer in enumerate(net.layers):
        tops = eng.forward_layer(li, data, state)
        res.layer_runs += 1
        if weighted(layer) and layer.name not in skip:
            tops = _rescale(eng, li, layer, tops, data, state, tol, max_iter, res, WEIGHT, net)
            done += 1
            if progress is not None:
                progress(done, total, layer.name)
        eng.release(li, data, state)
    res.seconds = time.perf_counter() - t0
    return res


def _variance(a) -> float:
    return float(stats(a)[1]) ** 2


def _rescale(eng, li, layer, tops, data, state, tol, max_iter, res, WEIGHT, net):
    blobs = [j for j, pb in enumerate(layer.params) if pb.role == WEIGHT and layer.owners[j] is None]
    if not blobs:
        owner = next(o for j, o in enumerate(layer.owners) if layer.params[j].role == WEIGHT)
        res.skipped[layer.name] = f"shares its weights with layer '{net.layers[owner[0]].name}'"
        res.warnings.append(f"LSUV: layer '{layer.name}' shares its weights with layer "
                            f"'{net.layers[owner[0]].name}': not rescaled again")
        return tops
    if not tops:
        return tops
    var = _variance(tops[0])
    scale, n = 1.0, 0
    while True:
        if not math.isfinite(var) or var == 0.0:
            res.skipped[layer.name] = f"output variance {var:g}"
            res.warnings.append(f"LSUV: layer '{layer.name}' ({layer.type}): its output variance is "
                                f"{'zero' if var == 0.0 else var}; skipped (not rescaled)")
            return tops
        if abs(var - 1.0) < tol or n >= max_iter:
            break
        s = 1.0 / math.sqrt(var)
        for j in blobs:
            arr = eng.params[li][j]
            arr *= np.float32(s)  # in place: the caller's arrays (the engine holds views of them)
        scale *= s
        n += 1
        tops = eng.forward_layer(li, data, state)
        res.layer_runs += 1
        var = _variance(tops[0])
    res.scales[layer.name] = scale
    res.variances[layer.name] = var
    res.iterations[layer.name] = n
    if not abs(var - 1.0) < tol:
        res.warnings.append(f"LSUV: layer '{layer.name}' ({layer.type}): output variance {var:.4g} after "
                            f"{n} rescale(s), not within {tol:g} of 1 (--lsuv-max-iter)")
    return tops


def fill_lsuv(net, *, filler="lsuv", lsuv_base=DEFAULT_BASE, lsuv_tol=DEFAULT_TOL, lsuv_max_iter=DEFAULT_MAX_ITER,
              inputs=None, lsuv_progress=None, phase=None, **fill_options):
    """``net.fill(filler="lsuv", ...)``: fill with ``lsuv_base`` (a filler name, compact
    form or dict; the other fill options as :func:`fillers.netfill.fill_net`), then
    :func:`lsuv` on ``inputs`` (default: seeded unit Gaussian, from the fill's seed).
    Layers copied from ``weights`` are not rescaled.  Returns the
    :class:`fillers.netfill.FilledNet`, its ``lsuv`` attribute holding the
    :class:`LsuvResult`."""
    from ..errors import UsageError
    from ..netfill import fill_net
    from .procedures import procedure_name

    if (isinstance(filler, str) and ":" in filler) or (isinstance(filler, dict) and set(filler) - {"type"}):
        raise UsageError("lsuv takes its options as --lsuv-base, --lsuv-tol and --lsuv-max-iter "
                         "(lsuv_base=, lsuv_tol=, lsuv_max_iter= in Python), not lsuv:k=v")
    if procedure_name(lsuv_base) is not None:
        raise UsageError(f"the LSUV base filler must be a per-blob filler, not '{lsuv_base}'")
    filled = fill_net(net, filler=lsuv_base, **fill_options)
    copied = {r.layer for r in filled.records if r.source == "weights"}
    try:
        res = lsuv(net, filled.params, inputs or default_inputs(net, filled.seed or 0), tol=float(lsuv_tol),
                   max_iter=int(lsuv_max_iter), phase=phase, seed=filled.seed or 0, skip=copied,
                   progress=lsuv_progress)
    except ValueError as exc:
        raise UsageError(f"lsuv: {exc}") from None
    by_layer = {l.name: l for l in net.layers}
    for r in filled.records:
        if r.layer in res.scales and by_layer[r.layer].params[r.index].role == "weight" and r.source == "filled":
            r.filler = f"lsuv({r.filler}, x{res.scales[r.layer]:.4g})"
            r.array = filled.params[r.layer][r.index]
            r._stats = None
    filled.warnings.extend(res.warnings)
    filled.lsuv = res
    return filled
