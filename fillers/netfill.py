"""Filling a whole net, as Caffe's ``Net`` constructor does.

Caffe fills from one random stream, layer by layer in net order, each layer's blobs in the
order its set-up fills them (weights, then bias).  A layer that shares a blob through
``param { name }`` still fills its own copy first (the numbers are drawn) and then takes
the owner's; BatchNorm's statistics are set to zero without drawing.  With
``rng="caffe"`` this module reproduces that stream bit for bit; with ``rng="fast"`` (the
default) the same fillers draw from numpy's PCG64.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import caffe_pb2
from .errors import NetError, UsageError
from .fans import fan_in_fan_out
from .fill import fill as fill_blob
from .layers.base import BIAS, WEIGHT
from .rng import CaffeRNG, FastRNG

FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")
_VARIANCE_NORMS = {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}


def filler_parameter(spec) -> "caffe_pb2.FillerParameter":
    """A ``FillerParameter`` from a message, a dict of its fields, a type name, or the
    compact form ``"gaussian:std=0.01,mean=0"``."""
    if spec is None or isinstance(spec, caffe_pb2.FillerParameter):
        return spec
    if isinstance(spec, str):
        kind, _, rest = spec.partition(":")
        d = {"type": kind}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            k, sep, v = item.partition("=")
            if not sep:
                raise UsageError(f"filler option '{item}' is not of the form key=value")
            d[k.strip()] = v.strip()
        spec = d
    if not isinstance(spec, dict):
        raise UsageError(f"a filler must be a FillerParameter, a dict or a string, not {type(spec).__name__}")
    fp = caffe_pb2.FillerParameter()
    for k, v in spec.items():
        if v is None:
            continue
        if k == "variance_norm":
            if isinstance(v, str):
                if v.upper() not in _VARIANCE_NORMS:
                    raise UsageError(f"variance_norm '{v}' is not one of FAN_IN, FAN_OUT, AVERAGE")
                v = _VARIANCE_NORMS[v.upper()]
            fp.variance_norm = int(v)
        elif k == "type":
            if v not in FILLER_TYPES:
                raise UsageError(f"filler type '{v}' is not one of {', '.join(FILLER_TYPES)}")
            fp.type = v
        elif k in ("value", "min", "max", "mean", "std"):
            try:
                setattr(fp, k, float(v))
            except ValueError:
                raise UsageError(f"filler option {k}={v!r} is not a number") from None
        elif k == "sparse":
            try:
                fp.sparse = int(v)
            except ValueError:
                raise UsageError(f"filler option sparse={v!r} is not an integer") from None
        else:
            raise UsageError(f"'{k}' is not a FillerParameter field (type, value, min, max, mean, std, "
                             "sparse, variance_norm)")
    return fp


def describe_filler(fp) -> str:
    """A short text for a FillerParameter: ``xavier(FAN_IN)``, ``gaussian(0,0.01)``..."""
    if fp is None:
        return "zero"
    t = fp.type
    norm = caffe_pb2.FillerParameter.VarianceNorm.Name(fp.variance_norm)
    if t == "constant":
        return f"constant({fp.value:g})"
    if t == "uniform":
        return f"uniform({fp.min:g},{fp.max:g})"
    if t == "gaussian":
        s = f"gaussian({fp.mean:g},{fp.std:g})"
        return s + (f",sparse={fp.sparse}" if fp.sparse >= 0 else "")
    if t in ("xavier", "msra"):
        return f"{t}({norm})"
    return t


@dataclass
class BlobRecord:
    """What happened to one parameter blob; ``mean``/``std`` of its values are computed
    when first asked for (a quiet run never pays for them)."""

    layer: str
    index: int
    name: str
    shape: tuple
    filler: str  # description, or "shared:<layer>/<i>", "weights", "zero"
    fan_in: Optional[int]
    fan_out: Optional[int]
    source: str  # "filled", "shared", "weights", "zero", "identity"
    array: np.ndarray = field(repr=False, default=None)
    _stats: Optional[tuple] = field(repr=False, default=None)

    @property
    def mean(self) -> float:
        return self.stats()[0]

    @property
    def std(self) -> float:
        return self.stats()[1]

    def stats(self) -> tuple:
        if self._stats is None:
            self._stats = _stats(self.array)
        return self._stats


@dataclass
class FilledNet:
    """A net and the values of its parameter blobs.

    ``blobs[layer name]`` lists the layer's arrays in Caffe's order; a shared blob is the
    same array object as its owner's.
    """

    net: object
    blobs: dict
    records: list = field(default_factory=list)
    seed: Optional[int] = None
    rng: str = "fast"
    warnings: list = field(default_factory=list)

    def save(self, path, progress=None) -> int:
        """Write a .caffemodel (atomically); returns its size in bytes."""
        from .caffemodel import write_caffemodel

        return write_caffemodel(path, self.net, self.blobs, progress=progress)

    def save_npz(self, path) -> None:
        """Write an .npz with keys ``<layer>/<blob index>`` (atomically)."""
        from .atomic import atomic_path

        arrays = {f"{l}/{i}": a for l, arrs in self.blobs.items() for i, a in enumerate(arrs)}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def to_onnx(self, path=None, **options):
        """Export to ONNX; see :func:`fillers.onnx_export.export`."""
        from .onnx_export import export

        return export(self, path, **options)


def _stats(a: np.ndarray):
    """Mean and population std of a float32 array, fast (float32 pairwise sum and a BLAS
    dot product, combined in float64; an exact pass only for near-constant blobs)."""
    n = a.size
    if n == 0:
        return 0.0, 0.0
    flat = a.reshape(-1)
    mean = float(np.add.reduce(flat, dtype=np.float32)) / n
    var = max(float(np.dot(flat, flat)) / n - mean * mean, 0.0)
    if var <= 1e-6 * mean * mean:  # float32 cancellation would show as noise: redo exactly
        var = float(np.var(flat, dtype=np.float64))
    return mean, var ** 0.5


def make_stream(rng="fast", seed=None):
    """The random stream for ``rng`` ("fast" or "caffe") and ``seed`` (None: random)."""
    if isinstance(rng, (CaffeRNG, FastRNG)):
        return rng, getattr(rng, "seed", seed)
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 32)
    if rng == "caffe":
        if not 0 <= int(seed) < 2 ** 32:
            raise UsageError(f"--seed {seed} is not an unsigned 32-bit value (Caffe's seed type)")
        return CaffeRNG(int(seed)), int(seed)
    if rng == "fast":
        return FastRNG(int(seed)), int(seed)
    raise UsageError(f"rng '{rng}' is not 'fast' or 'caffe'")


def fill_net(net, *, filler=None, bias_filler=None, seed=None, rng="fast", caffe_version="master",
             weights=None, batchnorm="caffe", progress: Optional[Callable] = None) -> FilledNet:
    """Fill every parameter blob of ``net`` as Caffe would.

    Args:
        filler: replaces the weight filler of Convolution, Deconvolution, InnerProduct,
            Embed and the weight matrices of LSTM/RNN (a FillerParameter, a dict, or
            ``"xavier"`` / ``"gaussian:std=0.01"``); ``None`` keeps the prototxt's.
        bias_filler: likewise for those layers' biases.
        seed: the seed (an unsigned 32-bit int for ``rng="caffe"``); ``None`` picks one,
            reported in ``FilledNet.seed``.
        rng: ``"fast"`` (numpy PCG64) or ``"caffe"`` (Caffe's boost::mt19937 stream, bit
            for bit).
        caffe_version: ``"master"`` or ``"1.0"`` (legacy fan axes and bilinear formula).
        weights: a .caffemodel path or ``{layer: [arrays]}``: blobs copied by layer name,
            with Caffe's count and shape checks; the others are filled.
        batchnorm: ``"caffe"`` (fresh statistics 0/0/0, as Caffe; a warning names the
            layers) or ``"identity"`` (mean 0, variance 1, factor 1).
        progress: called as ``progress(done_values, total_values, layer_name)``.
    """
    if caffe_version not in ("master", "1.0"):
        raise UsageError(f"caffe_version '{caffe_version}' is not 'master' or '1.0'")
    if batchnorm not in ("caffe", "identity"):
        raise UsageError(f"batchnorm '{batchnorm}' is not 'caffe' or 'identity'")
    weight_fp = filler_parameter(filler)
    bias_fp = filler_parameter(bias_filler)
    stream, seed = make_stream(rng, seed)
    trained = _load_weights(weights, net)
    overridable = {"Convolution", "Deconvolution", "InnerProduct", "Embed", "LSTM", "RNN"}
    blobs: dict = {}
    records: list = []
    warnings: list = []
    fresh_bn = []
    total = max(net.n_params, 1)
    done = 0
    draw_everything = isinstance(stream, CaffeRNG)
    for layer in net.layers:
        arrays: list = [None] * len(layer.params)
        descs: list = [""] * len(layer.params)
        from_weights = layer.name in trained
        if from_weights:
            _check_trained(layer, trained[layer.name])
        for idx, pb in layer.spec.draws(layer.params, layer.bottom_shapes):
            fp = pb.filler
            if layer.type in overridable:
                if pb.role == WEIGHT and weight_fp is not None:
                    fp = weight_fp
                elif pb.role == BIAS and bias_fp is not None:
                    fp = bias_fp
            keep = idx is not None and layer.owners[idx] is None
            if fp is None:
                if keep:
                    arrays[idx] = np.zeros(pb.shape, np.float32)
                    descs[idx] = "zero"
                continue
            if not draw_everything and (not keep or from_weights):
                continue  # the fast stream skips draws whose values are dropped
            try:
                values = fill_blob(pb.shape, fp, rng=stream, caffe_version=caffe_version)
            except ValueError as exc:
                raise NetError(f"blob {idx if idx is not None else ''} {list(pb.shape)}: {exc}",
                               layer=layer.name, layer_type=layer.type) from None
            if keep:
                arrays[idx] = values
                descs[idx] = describe_filler(fp)
        for j, owner in enumerate(layer.owners):
            if owner is not None:
                oli, obj = owner
                arrays[j] = blobs[net.layers[oli].name][obj]
                descs[j] = f"shared:{net.layers[oli].name}/{obj}"
        if from_weights:
            for j, src in enumerate(trained[layer.name]):
                data = np.asarray(src, dtype=np.float32).reshape(layer.params[j].shape)
                if layer.owners[j] is not None:
                    # Caffe copies into the shared memory: the owner's values change too
                    oli, obj = layer.owners[j]
                    blobs[net.layers[oli].name][obj] = data
                arrays[j] = data
                descs[j] = "weights"
        if layer.type == "BatchNorm" and not from_weights:
            if batchnorm == "identity":
                arrays = [np.zeros(layer.params[0].shape, np.float32), np.ones(layer.params[1].shape, np.float32),
                          np.ones(layer.params[2].shape, np.float32)]
                descs = ["identity"] * 3
            else:
                fresh_bn.append(layer.name)
        blobs[layer.name] = arrays
        for j, (pb, arr) in enumerate(zip(layer.params, arrays)):
            try:
                fi, fo = fan_in_fan_out(pb.shape, caffe_version=caffe_version) if len(pb.shape) else (1, 1)
            except ValueError:
                fi = fo = None
            src = descs[j].split(":")[0] if descs[j] else "filled"
            src = src if src in ("shared", "weights", "zero", "identity") else "filled"
            records.append(BlobRecord(layer.name, j, pb.name, tuple(pb.shape), descs[j], fi, fo, src, arr))
        done += layer.n_params
        if progress is not None:
            progress(done, total, layer.name)
    if fresh_bn:
        shown = ", ".join(fresh_bn[:5]) + (f" and {len(fresh_bn) - 5} more" if len(fresh_bn) > 5 else "")
        warnings.append(
            f"{len(fresh_bn)} BatchNorm layer(s) ({shown}) hold fresh statistics (mean 0, variance 0, factor 0): "
            "at inference Caffe multiplies their input by 1/sqrt(eps) (316x at eps 1e-5); "
            "use --batchnorm identity for mean 0, variance 1")
    _fix_shared_after_weights(net, blobs)
    for r in records:  # trained blobs copied into shared memory may have replaced an owner's array
        r.array = blobs[r.layer][r.index]
    return FilledNet(net=net, blobs=blobs, records=records, seed=seed,
                     rng="caffe" if draw_everything else "fast", warnings=warnings)


def _fix_shared_after_weights(net, blobs):
    """After copying trained blobs into shared memory, every sharer sees the owner's data."""
    for layer in net.layers:
        for j, owner in enumerate(layer.owners):
            if owner is not None:
                oli, obj = owner
                blobs[layer.name][j] = blobs[net.layers[oli].name][obj]


def _load_weights(weights, net) -> dict:
    """The trained blobs to copy, as Caffe's ``CopyTrainedLayersFrom`` picks them: every
    layer of the weights that the net has (a layer without blobs too: the count check
    then applies), the file's other layers ignored.

    Returns a :class:`fillers.caffemodel.TrainedWeights` (a dict ``{layer: arrays}``)
    whose ``copied``, ``filled`` and ``ignored`` name the layers copied, the net's layers
    with parameters left to fill, and the weights' layers the net does not have.
    """
    from .caffemodel import TrainedWeights, read_caffemodel

    if weights is None:
        return TrainedWeights()
    names = [l.name for l in net.layers]
    wanted = set(names)
    if isinstance(weights, dict):
        src, file_names, path = weights, list(weights), None
    else:
        src = read_caffemodel(weights, layers=wanted)
        file_names, path = src.layer_names, src.path
    out = TrainedWeights({k: v for k, v in src.items() if k in wanted}, path=path)
    out.copied = [n for n in names if n in out]
    out.filled = [l.name for l in net.layers if l.params and l.name not in out]
    out.ignored = list(dict.fromkeys(n for n in file_names if n not in wanted))
    return out


def _shape_text(shape) -> str:
    count = 1
    for d in shape:
        count *= int(d)
    return f"{list(shape)} ({count} value{'s' if count != 1 else ''})"


def _check_trained(layer, arrays):
    """Caffe's CopyTrainedLayersFrom checks: the blob count, then each blob's shape with
    ``Blob::ShapeEquals``: a blob read with the legacy num/channels/height/width fields
    matches a net blob of at most 4 axes whose shape, padded with leading 1s to 4 axes, is
    the same; a blob read with ``shape`` (or with no axes) must match exactly.  Arrays
    that do not say how they were stored (a dict of arrays) get the legacy rule when
    4-d."""
    if len(arrays) != len(layer.params):
        raise NetError(f"incompatible number of blobs: the weights file has {len(arrays)} blob(s) for this "
                       f"layer, the net needs {len(layer.params)}", layer=layer.name, layer_type=layer.type)
    legacy = getattr(arrays, "legacy", None)
    for j, (a, pb) in enumerate(zip(arrays, layer.params)):
        got, want = tuple(int(d) for d in np.shape(a)), tuple(int(d) for d in pb.shape)
        padded = len(want) <= 4 and got == (1,) * (4 - len(want)) + want
        if legacy is None:
            ok = got == want or (len(got) == 4 and padded)
        else:
            ok = padded if legacy[j] else got == want
        if not ok:
            raise NetError(f"cannot copy blob {j} from the weights file: shape mismatch; the file's shape is "
                           f"{_shape_text(got)}, the net's is {_shape_text(want)}; to learn this layer's "
                           "parameters from scratch rather than copying them, rename the layer",
                           layer=layer.name, layer_type=layer.type)
