"""The errors of caffe-fillers.

Every problem a user can cause (a malformed prototxt, an unknown layer type, a shape that
cannot work, a bad flag value) is raised as a subclass of :class:`FillersError` whose
message is one full sentence.  The library never prints and never exits; the command line
(:mod:`fillers.cli`) turns these errors into one line on stderr and an exit status.
"""

from __future__ import annotations


class FillersError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_status = 1


class ParseError(FillersError):
    """A prototxt or caffemodel file could not be read.

    ``str()`` gives ``FILE:LINE:COL: message`` when a position is known.
    """

    def __init__(self, path, message, line=None, column=None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.detail = message
        where = self.path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class NetError(FillersError):
    """The net is well-formed text but cannot be built (bad wiring, bad shapes, ...).

    ``layer`` names the layer at fault when there is one.
    """

    def __init__(self, message, layer=None, layer_type=None):
        self.layer = layer
        self.layer_type = layer_type
        if layer is not None:
            kind = f" ({layer_type})" if layer_type else ""
            message = f"layer '{layer}'{kind}: {message}"
        super().__init__(message)


class UnknownLayerTypeError(NetError):
    """A layer type that is neither a standard BVLC Caffe type nor a registered plugin."""


class MissingInputShapeError(NetError):
    """A data layer whose shape lives in a database or a Python module, with no --input given."""


class UsageError(FillersError):
    """A bad option value (from the command line or the Python API)."""

    exit_status = 2


class FillerError(FillersError, ValueError):
    """A fill Caffe would refuse (a failed CHECK in ``filler.hpp``), or a bad filler
    argument.  A ``ValueError`` too, so callers may catch either."""


class ExportError(FillersError):
    """The net cannot be lowered to ONNX, or the exported model fails its check."""
