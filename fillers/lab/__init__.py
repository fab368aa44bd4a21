"""The signal lab: Caffe's forward and backward pass in numpy (see :mod:`fillers.lab.engine`),
the signal report (:mod:`fillers.lab.report`), LSUV (:mod:`fillers.lab.lsuv_init`), comparisons
and plots (:mod:`fillers.lab.compare`, :mod:`fillers.lab.plot`)."""

import importlib

#: public name -> the submodule that defines it (imported on first use, so that the
#: command line's start-up does not pay for the engine unless it runs it)
_LAZY = {
    "Engine": "engine", "LayerContext": "engine", "run": "engine", "stats": "engine", "TRAIN": "engine",
    "TEST": "engine", "lsuv": "lsuv_init", "LsuvResult": "lsuv_init", "PROCEDURES": "procedures",
    "SignalReport": "report", "signal_report": "report", "default_inputs": "report",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fillers.lab' has no attribute '{name}'")
