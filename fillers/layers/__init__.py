"""Caffe's layer types, each described once (see :mod:`fillers.layers.base`)."""

from .base import (BIAS, BVLC, OTHER, WEIGHT, LayerType, ParamBlob, ShapeError, known_types, load_plugin,
                   lookup, register, register_type)
from . import activation, conv, data, dense, loss, norm, pool, recurrent, shape  # noqa: F401  (registration)
from . import forks  # noqa: F401,E402  (fork layer types)

__all__ = ["LayerType", "ParamBlob", "ShapeError", "register", "register_type", "lookup",
           "known_types", "load_plugin", "WEIGHT", "BIAS", "OTHER", "BVLC"]
