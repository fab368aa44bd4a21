"""caffe-fillers: initialize Caffe nets exactly as Caffe does.

The fillers, shaped like ``torch.nn.init`` (a shape in Caffe order in, a float32 array
out)::

    >>> import fillers
    >>> w = fillers.xavier((64, 3, 3, 3), rng=0)            # U(+-sqrt(3 / fan_in))
    >>> b = fillers.fill((64,), {"type": "constant", "value": 0.1})

Whole nets::

    >>> net = fillers.load("deploy.prototxt")                            # doctest: +SKIP
    >>> filled = net.fill(filler="msra", seed=1701, rng="caffe")         # doctest: +SKIP
    >>> filled.save("deploy.caffemodel"); filled.to_onnx("deploy.onnx")  # doctest: +SKIP
"""

from .errors import (ExportError, FillersError, MissingInputShapeError, NetError, ParseError,
                     UnknownLayerTypeError, UsageError)
from .net import Net, load
# The fillers (module fillers.init), as functions of the package: ``fillers.fill`` is the function.
from .init import (bilinear, constant, delta_orthogonal, fill, gaussian, msra, orthogonal, positive_unitball,
                   uniform, xavier)
from .fans import fan_in_fan_out
from .rng import CaffeRNG, FastRNG

__version__ = "0.1.0"

_LAZY = {
    # nets
    "fill_net": "netfill", "FilledNet": "netfill", "stream_fill": "stream", "StreamedFill": "stream",
    "read_caffemodel": "caffemodel", "write_caffemodel": "caffemodel",
    "export": "onnx", "export_and_check": "onnx",
    "register": "layers",
}

__all__ = sorted(set(_LAZY) | {"load", "Net", "constant", "uniform", "gaussian", "positive_unitball", "xavier",
                               "msra", "bilinear", "orthogonal", "delta_orthogonal", "fill", "fan_in_fan_out", "CaffeRNG", "FastRNG", "FillersError", "ParseError", "NetError",
                               "UnknownLayerTypeError", "MissingInputShapeError", "UsageError",
                               "ExportError"})


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'fillers' has no attribute '{name}'")
