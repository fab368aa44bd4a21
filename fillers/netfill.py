"""Filling a whole net, as Caffe's ``Net`` constructor does.

Caffe fills from one random stream, layer by layer in net order, each layer's blobs in the
order its set-up fills them (weights, then bias).  A layer that shares a blob through
``param { name }`` still fills its own copy first (the numbers are drawn) and then takes
the owner's; BatchNorm's statistics are set to zero without drawing.  With
``rng="caffe"`` this module reproduces that stream bit for bit; with ``rng="fast"`` (the
default) the same fillers draw from numpy's PCG64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import FillerError, NetError, UsageError
from .fans import CAFFE_VERSIONS
from .init import describe, filler_params
from .layers.base import BIAS, WEIGHT
from .rng import RNG_KINDS, CaffeRNG, make_rng

#: what ``batchnorm=`` (``--batchnorm``) may say to a layer's ``fresh_params``
BATCHNORM_MODES = ("caffe", "identity")


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
    """A net and the values of its parameter blobs, in memory.

    ``params[layer name]`` lists the layer's arrays in Caffe's order (pycaffe's
    ``net.params``); a shared blob is the same array object as its owner's.  (The net's
    activations are ``net.blobs``; ``FilledNet.blobs`` is kept as an alias of ``params``.)

    Cost: every blob is held in memory at once, 4 bytes per parameter (VGG-16: 528 MiB),
    and :meth:`save` / :meth:`to_onnx` write from these arrays.  To fill and write a
    large net in bounded memory (a few chunks of 4 MiB, whatever the net's size), stream
    it to the file instead: :func:`fillers.stream_fill` (``net.fill_to(path, ...)``, the
    same options and the same numbers), as ``fill-net`` does; its result exports to ONNX
    from the written file, memory-mapped.  :func:`fill_net` refuses a net whose arrays
    would not fit in the memory available.

    ``trained`` is the report of ``weights=`` (:class:`fillers.caffemodel.TrainedWeights`:
    ``copied``, ``filled``, ``ignored`` layer names, ``path``), or None.
    """

    net: object
    params: dict
    records: list = field(default_factory=list)
    seed: Optional[int] = None
    rng: str = "fast"
    warnings: list = field(default_factory=list)
    trained: object = None

    @property
    def blobs(self) -> dict:
        """Deprecated alias of :attr:`params`."""
        return self.params

    def save(self, path, progress=None) -> int:
        """Write a .caffemodel (atomically); returns its size in bytes."""
        from .caffemodel import write_caffemodel

        return write_caffemodel(path, self.net, self.params, progress=progress)

    def save_npz(self, path) -> None:
        """Write an .npz with keys ``<layer>/<blob index>`` (atomically)."""
        from .atomic import atomic_path, open_new

        arrays = {f"{l}/{i}": a for l, arrs in self.params.items() for i, a in enumerate(arrs)}
        with atomic_path(path) as tmp, open_new(tmp) as fh:
            np.savez(fh, **arrays)

    def to_onnx(self, path=None, **options):
        """Export to ONNX; see :func:`fillers.onnx.export`."""
        from .onnx import export

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


def _stream(rng, seed):
    """The random stream: a kind (``"fast"``/``"caffe"``) seeded with ``seed`` (None: a
    random seed, kept in the stream's ``.seed``), or a stream object given as is."""
    if not isinstance(rng, str):
        return make_rng(rng)
    if rng not in RNG_KINDS:
        raise UsageError(f"rng '{rng}' is not one of {', '.join(RNG_KINDS)}")
    try:
        return make_rng(seed, kind=rng)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--seed {seed}: {exc}") from None


def _override(spec, flag):
    """A filler given by the user (``--filler``/``--bias-filler``), read once; None keeps
    the layers' own."""
    if spec is None:
        return None
    try:
        return filler_params(spec)
    except FillerError as exc:
        raise UsageError(f"{flag} {spec if isinstance(spec, str) else ''}: {exc}".replace("  ", " ")) from None


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None
    when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_fits(net, trained) -> None:
    """Refuse up front a fill whose arrays would not fit in the available memory."""
    need = sum(p.count for l in net.layers if l.name not in trained
               for p, o in zip(l.params, l.owners) if o is None) * 4
    have = available_memory()
    if have is not None and need > have:
        raise UsageError(f"the filled net would take {need / 2**30:.1f} GiB in memory and only {have / 2**30:.1f} GiB "
                         "are available: stream it to a file instead, blob by blob in bounded memory, with "
                         "fillers.stream_fill(net, 'out.caffemodel') (or net.fill_to('out.caffemodel')), or on "
                         "the command line fill-net NET -o OUT.caffemodel")


def unknown_filler_warnings(net, overrides) -> list:
    """A warning per layer whose own filler type is unknown but replaced by ``--filler``
    / ``--bias-filler`` (without the replacement the fill is an error naming the layer)."""
    from .init import FILLERS

    flags = {WEIGHT: "--filler", BIAS: "--bias-filler"}
    out = []
    for layer in net.layers:
        seen = []
        for pb in layer.params:
            fp = pb.filler
            kind = getattr(fp, "type", None) if not isinstance(fp, dict) else fp.get("type")
            if fp is None or overrides.get(pb.role) is None or kind is None or kind in FILLERS:
                continue
            if (kind, pb.role) not in seen:
                seen.append((kind, pb.role))
                out.append(f"layer '{layer.name}' ({layer.type}): its {pb.name} filler type '{kind}' is unknown; "
                           f"replaced by {flags[pb.role]} {describe(overrides[pb.role])}")
    return out


def prepare_fill(net, filler, bias_filler, seed, rng, caffe_version, weights, batchnorm):
    """The options of a fill, checked and read once (for the in-memory and the streaming
    path): ``(overrides by role, random stream, its seed, trained weights checked against
    the net as Caffe's CopyTrainedLayersFrom does)``."""
    if caffe_version not in CAFFE_VERSIONS:
        raise UsageError(f"caffe_version '{caffe_version}' is not one of {', '.join(CAFFE_VERSIONS)}")
    if batchnorm not in BATCHNORM_MODES:
        raise UsageError(f"batchnorm '{batchnorm}' is not one of {', '.join(BATCHNORM_MODES)}")
    overrides = {WEIGHT: _override(filler, "--filler"), BIAS: _override(bias_filler, "--bias-filler")}
    stream = _stream(rng, seed)
    trained = _load_weights(weights, net)
    for layer in net.layers:
        if layer.name in trained:
            _check_trained(layer, trained[layer.name])
    return overrides, stream, getattr(stream, "seed", seed), trained


def fill_net(net, *, filler=None, bias_filler=None, seed=None, rng="fast", caffe_version="master",
             weights=None, batchnorm="caffe", progress: Optional[Callable] = None, **procedure_options) -> FilledNet:
    """Fill every parameter blob of ``net`` as Caffe would.

    Args:
        filler: replaces the filler of every blob whose layer type declares it a weight
            (``LayerType.roles``: Convolution, Deconvolution, InnerProduct, Embed, the
            weight matrices of LSTM/RNN, and fork types that say so); a FillerParameter,
            a dict, or ``"xavier"`` / ``"gaussian:std=0.01"``; ``None`` keeps the
            prototxt's.
        bias_filler: likewise for the blobs declared biases (the biases of those layers;
            not Scale/Bias shifts).
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
        procedure_options: for a net-level procedure named as ``filler`` (``"lsuv"``:
            ``lsuv_base``, ``lsuv_tol``, ``lsuv_max_iter``, ``inputs``, ``phase``,
            ``lsuv_progress``; see :mod:`fillers.lab.procedures`).

    Every array is held in memory (see :class:`FilledNet`); a net whose arrays would not
    fit in the available memory is refused with a :class:`~fillers.errors.UsageError`
    naming the streaming alternative, :func:`fillers.stream.stream_fill`.
    """
    from .lab.procedures import procedure_for

    procedure = procedure_for(filler)
    if procedure is not None:  # a net-level procedure (LSUV): it fills through this function
        return procedure(net, filler=filler, bias_filler=bias_filler, seed=seed, rng=rng,
                         caffe_version=caffe_version, weights=weights, batchnorm=batchnorm, progress=progress,
                         **procedure_options)
    if procedure_options:
        raise UsageError(f"unknown fill option(s): {', '.join(sorted(procedure_options))}")
    overrides, stream, seed, trained = prepare_fill(net, filler, bias_filler, seed, rng, caffe_version, weights,
                                                    batchnorm)
    _check_fits(net, trained)
    from .stream import fill_arrays

    # the walker of the streaming path (Caffe's draw order, shared and trained blobs, fresh
    # states), writing into arrays
    blobs, records, notes = fill_arrays(net, stream, overrides, trained, caffe_version, batchnorm, progress)
    _fix_shared_after_weights(net, blobs)  # a sharer holds its owner's array object
    for r in records:
        r.array = blobs[r.layer][r.index]
    return FilledNet(net=net, params=blobs, records=records, seed=seed,
                     rng="caffe" if isinstance(stream, CaffeRNG) else "fast",
                     warnings=unknown_filler_warnings(net, overrides) + notes, trained=trained)


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
