"""The signal lab: Caffe's forward and backward pass in numpy (see :mod:`fillers.lab.engine`),
the signal report (:mod:`fillers.lab.report`), LSUV (:mod:`fillers.lab.lsuv`), comparisons
and plots (:mod:`fillers.lab.compare`, :mod:`fillers.lab.plot`)."""

from .engine import TEST, TRAIN, Engine, LayerContext, run, stats
from .lsuv import LsuvResult, lsuv
from .procedures import PROCEDURES
from .report import SignalReport, default_inputs, signal_report

__all__ = ["Engine", "LayerContext", "run", "stats", "TRAIN", "TEST", "lsuv", "LsuvResult", "PROCEDURES",
           "SignalReport", "signal_report", "default_inputs"]
