"""Caffe's layer types, each described once (see :mod:`fillers.layers.base`)."""

from .base import (BIAS, OTHER, WEIGHT, LayerType, ParamBlob, ShapeError, known_types, lookup,
                   register, register_type)
from . import activation, conv, data, dense, loss, norm, pool, recurrent, shape  # noqa: F401  (registration)

__all__ = ["LayerType", "ParamBlob", "ShapeError", "register", "register_type", "lookup",
           "known_types", "WEIGHT", "BIAS", "OTHER"]
