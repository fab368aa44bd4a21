"""The layer registry: every Caffe layer type described once.

A layer type is a subclass of :class:`LayerType` registered with :func:`register`.  It
states, in one place:

* how many bottoms and tops it takes (``bottoms``/``tops``: ``(min, max)``, ``None`` = any),
* ``params(bottoms)``: its parameter blobs, in Caffe's blob order, as :class:`ParamBlob`
  (shape, the filler Caffe uses, and the blob's role for ``--filler``/``--bias-filler``),
* ``outputs(bottoms)``: the shapes of its tops,
* ``lower(ctx)``: its ONNX lowering (see :mod:`fillers.onnx_export`),
* where Caffe draws random numbers in an unusual order (recurrent layers), ``draws``.

A plugin for a fork layer type uses the same decorator::

    @register("Upsample")
    class Upsample(LayerType):
        def outputs(self, bottoms):
            n, c, h, w = bottoms[0]
            s = self.lp.upsample_param.scale      # or a field of your own
            return [(n, c, h * s, w * s)]

Shapes are tuples of ints.  A method raises :class:`ShapeError` (or calls
:meth:`LayerType.fail`) with a sentence; the net builder adds the layer's name and type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence


Shape = tuple

#: roles of parameter blobs: ``--filler`` replaces the filler of "weight" blobs,
#: ``--bias-filler`` that of "bias" blobs; "other" blobs keep the layer's own filler.
WEIGHT, BIAS, OTHER = "weight", "bias", "other"


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
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


class LayerType:
    """Base class of a layer type.  Instances wrap one ``LayerParameter`` (``self.lp``)."""

    #: Caffe's type string(s); filled by :func:`register`.
    type_name: ClassVar[str] = ""
    #: accepted number of bottoms and tops, ``(min, max)``; ``None`` for no bound.
    bottoms: ClassVar[tuple] = (1, 1)
    tops: ClassVar[tuple] = (1, 1)
    #: layers that only matter for training (losses, Accuracy): left out of an ONNX export.
    training_only: ClassVar[bool] = False
    #: Caffe's AutoTopBlobs: missing tops are made anonymously (losses)
    auto_tops: ClassVar[bool] = False
    #: layers whose tops are the net's data, read from outside (shape from the user).
    data_layer: ClassVar[bool] = False

    def __init__(self, lp, phase: int = 1):
        self.lp = lp
        self.phase = phase
        #: fields of this layer's text that BVLC's schema lacks (``{name: value text}``,
        #: e.g. ``{"shuffle_channel_param": "{ group: 3 }"}``): for fork layer types
        self.fork_fields: dict = {}

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
        """Emit ONNX nodes; see :class:`fillers.onnx_export.LoweringContext`."""
        raise NotImplementedError

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
        n = 1
        for d in tuple(shape)[start:end]:
            n *= int(d)
        return n

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
    return sorted(_REGISTRY)
