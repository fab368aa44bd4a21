"""The layer registry: every Caffe layer type described once.

A layer type is a subclass of :class:`LayerType` registered with :func:`register`.  It
states, in one place:

* how many bottoms and tops it takes (``n_bottoms``/``n_tops``: ``(min, max)``, ``None``
  = any),
* ``params(bottoms)``: its parameter blobs, in Caffe's blob order, as :class:`ParamBlob`
  (shape, the filler Caffe uses, and the blob's role, declared once in ``roles``: which
  blobs ``--filler``/``--bias-filler`` replace),
* ``outputs(bottoms)``: the shapes of its tops,
* ``lower(ctx)``: its ONNX lowering (see :class:`fillers.onnx.LoweringContext`),
* where Caffe draws random numbers in an unusual order (recurrent layers), ``draws``,
* the parameters it reads from a Caffe fork's schema (``fork_params``), and where it
  comes from (``origin``),
* what the net builder, the filler and the export check need to know about it
  (``net_input``, ``runtime_source``, ``training_only``, ``fresh_params``,
  ``sample_input``, ``opencv_caveat`` ...), as attributes and hooks instead of switches
  on type names elsewhere.

A plugin for a fork layer type uses the same decorator; this example is tested
(``tests/test_plugins.py``)::

    from fillers.layers import LayerType, register

    @register("UpsampleNearest")
    class UpsampleNearest(LayerType):
        # nearest-neighbour upsampling by upsample_param { scale } (a fork field)
        origin = "my fork"
        fork_params = {"upsample_param": None}    # None: read as a dict; or a protobuf class

        def outputs(self, bottoms):
            n, c, h, w = bottoms[0]
            s = int(self.fork("upsample_param").get("scale", 2))
            return [(n, c, h * s, w * s)]

        def lower(self, ctx):
            s = float(self.fork("upsample_param").get("scale", 2))
            scales = ctx.const([1.0, 1.0, s, s], "scales")
            ctx.node("Resize", [ctx.inputs[0], "", scales], ctx.outputs[0], mode="nearest")

Shapes are tuples of ints.  A method raises :class:`ShapeError` (or calls
:meth:`LayerType.fail`) with a sentence; the net builder adds the layer's name and type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence


Shape = tuple

#: roles of parameter blobs: ``--filler`` replaces the filler of "weight" blobs (weight
#: matrices and kernels, what fan-based fillers are made for), ``--bias-filler`` that of
#: "bias" blobs (the additive bias paired with such a weight); "other" blobs (gains,
#: shifts and slopes of Scale/Bias/PReLU, BatchNorm's statistics) keep their layer's own
#: filler.
WEIGHT, BIAS, OTHER = "weight", "bias", "other"

#: ``LayerType.origin`` of Caffe's own types
BVLC = "BVLC"


class ShapeError(Exception):
    """Raised by a layer type's rules; the net builder turns it into a NetError."""


@dataclass
class ParamBlob:
    """One parameter blob of a layer, as the layer's set-up creates it.

    ``filler`` is a ``caffe_pb2.FillerParameter`` (the layer's own, or the default the
    layer applies), or ``None`` for blobs Caffe sets to zero without drawing numbers
    (BatchNorm's statistics).
    """

    name: str
    shape: Shape
    filler: object = None
    role: str = OTHER

    @property
    def count(self) -> int:
        return shape_count(self.shape)


class LayerType:
    """Base class of a layer type.  Instances wrap one ``LayerParameter`` (``self.lp``)."""

    #: Caffe's type string(s); filled by :func:`register`.
    type_name: ClassVar[str] = ""
    #: where the type comes from: ``"BVLC"``, or the fork (repository, file) whose source
    #: it follows
    origin: ClassVar[str] = BVLC
    #: accepted number of bottoms and tops, ``(min, max)``; ``None`` for no bound.
    n_bottoms: ClassVar[tuple] = (1, 1)
    n_tops: ClassVar[tuple] = (1, 1)
    #: the role of each parameter blob, by the blob's name (see WEIGHT, BIAS, OTHER);
    #: :meth:`blob` takes the role from here, ``--help`` lists what ``--filler`` replaces
    roles: ClassVar[dict] = {}
    #: layers that only matter for training (losses, Accuracy): left out of an ONNX export.
    training_only: ClassVar[bool] = False
    #: Caffe's AutoTopBlobs: missing tops are made anonymously (losses)
    auto_tops: ClassVar[bool] = False
    #: the layer's tops are the net's inputs (data layers): ``Net.inputs``, graph inputs
    #: of an ONNX export, ``Input`` layers for OpenCV
    net_input: ClassVar[bool] = False
    #: for a net input whose shapes only exist at run time: where they come from ("a
    #: database or file list"); the user gives them (``--input NAME=N,C,H,W``)
    runtime_source: ClassVar[Optional[str]] = None
    #: top index -> the axes whose size Caffe only knows at run time (it reshapes the top
    #: in Forward: DetectionOutput's number of detections); the export declares them
    #: symbolic and the check does not compare their size with the net model's
    dynamic_axes: ClassVar[dict] = {}
    #: OpenCV's Caffe importer reads this layer (False: left out of the net handed to it,
    #: as it emits nothing, like Silence)
    opencv_reads: ClassVar[bool] = True
    #: fork parameter messages this type reads, by field name as written in the layer's
    #: text (``{"upsample_param": UpsampleParameter}``; ``None`` reads the block as a
    #: dict): the reader does not warn about them, :meth:`fork` returns them parsed
    fork_params: ClassVar[dict] = {}

    def __init__(self, lp):
        self.lp = lp
        #: fields of this layer's text that BVLC's schema lacks (``{name: value text}``,
        #: e.g. ``{"shuffle_channel_param": "{ group: 3 }"}``); read them with :meth:`fork`
        self.fork_fields: dict = {}
        self._fork_cache: dict = {}

    # ---- rules every type may override -------------------------------------------------
    def params(self, bottoms: Sequence[Shape]) -> list:
        """The layer's parameter blobs, in Caffe's order.  Default: none."""
        return []

    def outputs(self, bottoms: Sequence[Shape]) -> list:
        """Top shapes.  Default: one top of the first bottom's shape."""
        return [tuple(bottoms[0])]

    def draws(self, params: Sequence[ParamBlob], bottoms: Sequence[Shape]) -> list:
        """The fills Caffe performs at set-up, in order: ``(blob index or None, ParamBlob)``.

        ``None`` marks a fill whose numbers are drawn and then dropped (Caffe's unrolled
        recurrent nets fill each time step's copy of a shared weight).  Default: each blob
        once, in blob order.
        """
        return [(i, p) for i, p in enumerate(params)]

    def lower(self, ctx) -> None:
        """Emit ONNX nodes; see :class:`fillers.onnx.LoweringContext`."""
        raise NotImplementedError

    def fresh_params(self, arrays: list, mode: str):
        """Called after a fill (not for trained weights) with the layer's new arrays and
        the ``batchnorm`` option (``"caffe"`` or ``"identity"``).  Returns ``(arrays,
        note)``: replacement arrays (or None to keep them) and a short note for a warning
        about the fresh state (or None).  Default: nothing to say."""
        return None, None

    def overflow_hint(self, arrays: list) -> Optional[str]:
        """Why this layer, with these parameter values, might make outputs overflow (for
        the export check's message), or None."""
        return None

    def sample_input(self, bottom: int, shape: Shape, rng):
        """The values the export check feeds a graph input that this layer reads as its
        bottom ``bottom`` (a float32 array of ``shape``), or None for the default,
        uniform(-1, 1).  E.g. Embed wants indices below ``input_dim``."""
        return None

    def runtime_shape(self, top: int, first: Optional[Shape]) -> Optional[Shape]:
        """For a ``runtime_source`` layer: the shape of top ``top`` when the user gives
        none, knowing the first top's shape (``first``, or None for top 0), or None to
        ask the user for it."""
        return None

    def canonical_output(self, top: int, array):
        """Top ``top``'s values in a form two correct implementations agree on, for the
        export check's comparison with another runtime (e.g. detections as a sorted set
        of rows).  Default: as is."""
        return array

    def opencv_caveat(self) -> Optional[str]:
        """Why OpenCV's Caffe importer would compute something else for this layer (so
        the check must not compare with it), or None."""
        return None

    @classmethod
    def upgrade(cls, lp) -> None:
        """Caffe's ``upgrade_proto`` for this type, applied to the ``LayerParameter`` in
        place as the file is read (e.g. BatchNorm drops its old ``param`` entries)."""

    # ---- helpers -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.lp.name

    @staticmethod
    def fail(message: str):
        raise ShapeError(message)

    @staticmethod
    def canonical_axis(axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's ``Blob::CanonicalAxisIndex``: negative axes count from the end."""
        if not -ndim <= axis < max(ndim, 1) and not (ndim == 0 and axis in (0, -1)):
            raise ShapeError(f"{what} {axis} is out of range for a blob of {ndim} axes")
        return axis + ndim if axis < 0 else axis

    @staticmethod
    def count(shape, start=0, end=None) -> int:
        """The product of ``shape[start:end]`` (Caffe's ``count``)."""
        return shape_count(tuple(shape)[start:end])

    def blob(self, name: str, shape, filler=None) -> ParamBlob:
        """A :class:`ParamBlob` with its role from :attr:`roles` (OTHER when absent)."""
        return ParamBlob(name, tuple(int(d) for d in shape), filler, self.roles.get(name, OTHER))

    def filler(self, message, field_name: str, default: Optional[dict] = None):
        """The ``FillerParameter`` in ``message.field_name``; when unset, Caffe's default
        for this layer (``default``, a dict of FillerParameter fields) or the schema's."""
        from .. import caffe_pb2

        if message.HasField(field_name):
            return getattr(message, field_name)
        fp = caffe_pb2.FillerParameter()
        for k, v in (default or {}).items():
            setattr(fp, k, v)
        return fp

    def fork(self, field_name: str):
        """The fork parameter ``field_name`` of this layer, parsed: a message of the class
        :attr:`fork_params` names (its defaults when the layer does not give it), or a
        dict for ``None`` (empty when absent)."""
        if field_name not in self._fork_cache:
            from .forkparams import parse_fork_field

            if field_name not in self.fork_params:
                raise KeyError(f"{type(self).__name__}.fork_params does not declare '{field_name}'")
            self._fork_cache[field_name] = parse_fork_field(
                self.fork_params[field_name], self.fork_fields.get(field_name), field_name)
        return self._fork_cache[field_name]

    # ---- the numpy reference engine (fillers.lab) -----------------------------------------
    def forward(self, bottoms, params, ctx) -> list:
        """Caffe's ``Forward_cpu``: the tops (float32 numpy arrays of Caffe's shapes) from the
        bottoms and the parameter arrays.  ``ctx`` is a :class:`fillers.lab.engine.LayerContext`:
        ``ctx.phase`` ("TRAIN"/"TEST"), ``ctx.rng`` (a numpy Generator, e.g. Dropout's mask),
        ``ctx.cache`` (a dict this layer's forward fills for its backward), ``ctx.feeds`` (data
        layers: the arrays fed for their tops)."""
        raise NotImplementedError(f"layer type '{self.type_name or self.lp.type}' has no forward pass in the "
                                  "numpy engine")

    def backward(self, top_diffs, bottoms, tops, params, propagate_down, ctx) -> tuple:
        """Caffe's ``Backward_cpu``: ``(bottom_diffs, param_diffs)``, a diff per bottom (``None``
        where ``propagate_down[i]`` is false or Caffe has none) and per parameter blob (``None``
        where the layer writes none)."""
        raise NotImplementedError(f"layer type '{self.type_name or self.lp.type}' has no backward pass in the "
                                  "numpy engine")


def shape_count(shape) -> int:
    """The number of values of a blob of ``shape``: the product of its dims (1 for none)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


_REGISTRY: dict = {}


def register(*type_names: str) -> Callable:
    """Class decorator: register a :class:`LayerType` under one or more Caffe type names.

    Registering a name twice is an error (pass ``replace=True`` to :func:`register_type`
    to override a built-in deliberately).
    """

    def deco(cls):
        for t in type_names:
            register_type(t, cls)
        if not cls.type_name:
            cls.type_name = type_names[0]
        return cls

    return deco


def register_type(type_name: str, cls, replace: bool = False) -> None:
    if not replace and type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
        raise ValueError(
            f"layer type '{type_name}' is already registered by "
            f"{_REGISTRY[type_name].__module__}.{_REGISTRY[type_name].__name__}; "
            "pass replace=True to override it"
        )
    _REGISTRY[type_name] = cls


def lookup(type_name: str):
    """The registered class for ``type_name``, or ``None``."""
    return _REGISTRY.get(type_name)


def known_types() -> list:
    """The registered type names, sorted."""
    return sorted(_REGISTRY)


def load_plugin(spec: str) -> None:
    """Import a plugin, a path to a ``.py`` file or a module name, whose classes register
    layer types (:func:`register`).  Any error becomes a one-line ``UsageError``."""
    import importlib
    import importlib.util
    import os
    import sys

    from ..errors import UsageError

    try:
        if spec.endswith(".py") or os.sep in spec:
            name = "fillers_plugin_" + os.path.splitext(os.path.basename(spec))[0]
            loader_spec = importlib.util.spec_from_file_location(name, spec)
            if loader_spec is None or not os.path.exists(spec):
                raise FileNotFoundError(f"no such file: {spec}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except Exception as exc:  # a plugin's own error: report it in one line
        raise UsageError(f"cannot load plugin '{spec}': {type(exc).__name__}: {exc}") from None
