"""Export a Caffe net and its weights to ONNX, and check the result.

* :mod:`.lowering`: what a layer type's ``lower(ctx)`` works with (``LoweringContext``,
  the graph builder, ``NoLowering``/``LeftOut``);
* :mod:`.graph`: the walk over the net (``export``, ``export_with_info``);
* :mod:`.writer`: the file (weights streamed from numpy, external data, onnx's checker);
* :mod:`.check`: running the export in onnxruntime and comparing with OpenCV
  (``export_and_check``).

>>> import fillers                                                  # doctest: +SKIP
>>> filled = fillers.load("deploy.prototxt").fill(seed=1)           # doctest: +SKIP
>>> report = export_and_check(filled, "deploy.onnx"); report.ok     # doctest: +SKIP
True
"""

from .check import ExportReport, OutputCheck, export_and_check, make_inputs, opencv_prototxt, ort_session
from .graph import DEFAULT_OPSET, MIN_OPSET, ExportInfo, export, export_with_info
from .lowering import LeftOut, LoweringContext, NoLowering
from .writer import EXTERNAL_DATA_THRESHOLD

__all__ = ["export", "export_with_info", "export_and_check", "LoweringContext", "NoLowering", "LeftOut",
           "ExportReport", "ExportInfo", "OutputCheck", "make_inputs", "ort_session", "opencv_prototxt",
           "DEFAULT_OPSET", "MIN_OPSET", "EXTERNAL_DATA_THRESHOLD"]
