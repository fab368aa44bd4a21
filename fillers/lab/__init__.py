"""The signal lab: Caffe's forward and backward pass in numpy (see :mod:`fillers.lab.engine`)."""

from .engine import TEST, TRAIN, Engine, LayerContext, run, stats

__all__ = ["Engine", "LayerContext", "run", "stats", "TRAIN", "TEST"]
