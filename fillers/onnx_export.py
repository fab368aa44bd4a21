"""Deprecated: the ONNX export lives in :mod:`fillers.onnx` (``lowering``, ``graph``,
``writer``, ``check``); this module re-exports its public names."""

from .onnx import *  # noqa: F401,F403
from .onnx import __all__  # noqa: F401
