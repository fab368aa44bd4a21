"""YOLO ports of Caffe: the YOLOv2 passthrough (``Reorg``) and region (``Region``) layers
and the YOLOv3 detection head (``Yolov3DetectionOutput``).  None has parameter blobs."""

from __future__ import annotations

from ..base import LayerType, register
from . import yolo_pb2

YOLOV2 = "gklz1982/caffe-yolov2"


@register("Reorg")
class Reorg(LayerType):
    """YOLOv2's passthrough layer as the Caffe ports implement it (gklz1982/caffe-yolov2,
    ``src/caffe/layers/reorg_layer.cpp`` with ``reorg_cpu`` of
    ``src/caffe/util/math_functions.cpp``; the same index order as Darknet's
    ``reorg_cpu`` called with ``forward = 0``).

    ``reorg_param { stride: s }`` (required), ``reverse`` (default false).  Default: top
    ``[N, C s^2, H/s, W/s]``.  The copy is Darknet's, not a space-to-depth: with
    ``C' = C / s^2``, the bottom *viewed* as ``[N, C', H s, W s]`` is read and the top
    *viewed* with the bottom's dims ``[N, C, H, W]`` is written::

        top[n, (dy s + dx) C' + c', y, x] = bottom_view[n, c', y s + dy, x s + dx]

    so it needs ``C`` divisible by ``s^2`` and ``H``, ``W`` by ``s``.  ``reverse: true``
    is the inverse copy, top ``[N, C / s^2, H s, W s]``.

    ONNX: exact (Reshape, Transpose, Reshape).
    """

    origin = f"{YOLOV2}: src/caffe/layers/reorg_layer.cpp"
    fork_params = {"reorg_param": yolo_pb2.ReorgParameter}

    def param(self):
        p = self.fork("reorg_param")
        if not p.HasField("stride") or p.stride <= 0:
            self.fail("reorg_param needs a stride > 0")
        return p

    def outputs(self, bottoms):
        p = self.param()
        s = int(p.stride)
        if len(bottoms[0]) != 4:
            self.fail(f"Reorg needs a 4-d bottom, got {list(bottoms[0])}")
        n, c, h, w = (int(d) for d in bottoms[0])
        if c % (s * s):
            self.fail(f"the channels ({c}) must be divisible by stride^2 ({s * s})")
        if p.reverse:
            return [(n, c // (s * s), h * s, w * s)]
        if h % s or w % s:
            self.fail(f"the height and width ({h}x{w}) must be divisible by the stride ({s})")
        return [(n, c * s * s, h // s, w // s)]

    def lower(self, ctx):
        p = self.param()
        s = int(p.stride)
        n, c, h, w = ctx.bottom_shapes[0]
        cp = c // (s * s)
        if p.reverse:
            # top_view[n, c', y, dy, x, dx] = bottom[n, (dy s + dx) C' + c', y, x]
            v = ctx.reshape(ctx.inputs[0], [n, s, s, cp, h, w])
            t = ctx.node("Transpose", [v], perm=[0, 3, 4, 1, 5, 2])
        else:
            v = ctx.reshape(ctx.inputs[0], [n, cp, h, s, w, s])
            t = ctx.node("Transpose", [v], perm=[0, 3, 5, 1, 2, 4])
        ctx.reshape(t, list(ctx.top_shapes[0]), ctx.outputs[0])


@register("Region")
class Region(LayerType):
    """YOLOv2's region layer as the Caffe ports run it at inference
    (BirdeeChen/caffe_yolo_v2, ``src/caffe/layers/region_layer.cpp``; the forward of
    the 2016 Darknet ``region_layer.c``).

    ``region_param { classes coords boxes_of_each_grid softmax }``; the bottom
    ``[N, B (coords + 1 + classes), H, W]`` with B = boxes_of_each_grid.  The top has the
    bottom's shape, but holds the data in Darknet's ``flatten`` order, ``[N, H W, B,
    coords + 1 + classes]``, with the logistic function applied to value 4 of each box
    (the objectness) and, with ``softmax: true``, a softmax over the ``classes`` values
    from index 5.  The box coordinates are passed through (Darknet applies their
    logistic/exp when it decodes boxes).  The port's ``LayerSetUp`` never reads
    ``softmax`` (its member is uninitialized); this follows the field as written.

    OpenCV's ``Region`` (``region_layer.cpp``) is a different layer: it decodes boxes
    with anchors and outputs ``[N H W B, 5 + classes]`` detections, so it is not
    compared.

    ONNX: exact (Reshape, Transpose, Sigmoid, Softmax, Concat).
    """

    origin = "BirdeeChen/caffe_yolo_v2: src/caffe/layers/region_layer.cpp"
    fork_params = {"region_param": yolo_pb2.RegionParameter}

    def box_size(self):
        p = self.fork("region_param")
        return int(p.coords) + 1 + int(p.classes)

    def outputs(self, bottoms):
        p = self.fork("region_param")
        if len(bottoms[0]) != 4:
            self.fail(f"Region needs a 4-d bottom, got {list(bottoms[0])}")
        size = self.box_size()
        if p.coords < 4:
            self.fail("region_param.coords must be at least 4 (the objectness is value 4 of each box)")
        if int(bottoms[0][1]) != p.boxes_of_each_grid * size:
            self.fail(f"the bottom has {bottoms[0][1]} channels; boxes_of_each_grid ({p.boxes_of_each_grid}) x "
                      f"(coords + 1 + classes = {size}) = {p.boxes_of_each_grid * size} expected")
        return [tuple(int(d) for d in bottoms[0])]

    def lower(self, ctx):
        p = self.fork("region_param")
        n, c, h, w = ctx.bottom_shapes[0]
        size, nb, k = self.box_size(), int(p.boxes_of_each_grid), int(p.classes)
        x = ctx.node("Transpose", [ctx.reshape(ctx.inputs[0], [n, c, h * w])], perm=[0, 2, 1])
        x = ctx.reshape(x, [n, h * w, nb, size])
        sizes = [4, 1, min(k, size - 5), size - 5 - min(k, size - 5)]
        keep = [s for s in sizes if s > 0]
        parts = ctx.split(x, keep, axis=3)
        pieces = dict(zip([i for i, s in enumerate(sizes) if s > 0], parts))
        pieces[1] = ctx.node("Sigmoid", [pieces[1]])
        if p.softmax and 2 in pieces:
            pieces[2] = ctx.node("Softmax", [pieces[2]], axis=3)
        y = ctx.node("Concat", [pieces[i] for i in sorted(pieces)], axis=3)
        ctx.reshape(y, [n, c, h, w], ctx.outputs[0])


@register("Yolov3DetectionOutput")
class Yolov3DetectionOutput(LayerType):
    """YOLOv3's detection head as the Caffe YOLOv3 ports implement it
    (eric612/Caffe-YOLOv3-Windows, ``src/caffe/layers/yolov3_detection_output_layer.cpp``).

    Bottoms: ``mask_group_num`` YOLO output maps ``[N, num_box (5 + num_classes), H, W]``
    (``num_classes`` is required); ``biases`` (anchor sizes), ``anchors_scale`` (each
    map's stride) and ``mask`` (which anchors each map uses).  Per cell and anchor: the
    logistic of x, y, the objectness and every class score, ``exp`` of w, h times the
    anchor; every class whose logistic score times the objectness passes
    ``confidence_threshold`` becomes a candidate; candidates are sorted by score and a
    greedy NMS at ``nms_threshold`` (IoU of the centre-size boxes) keeps the rest.  The
    top lists the detections as ``[1, 1, K, 7]`` rows ``[0, class + 1, score, x1, y1, x2,
    y2]`` (normalized, not clipped), K found at run time.  This tool gives K = 1, the
    shape the port's ``Reshape`` sets up before any forward pass.

    ONNX: left out (K depends on the data and on the ports' NMS order).
    """

    origin = "eric612/Caffe-YOLOv3-Windows: src/caffe/layers/yolov3_detection_output_layer.cpp"
    fork_params = {"yolov3_detection_output_param": yolo_pb2.Yolov3DetectionOutputParameter}
    n_bottoms = (1, None)
    n_tops = (1, 1)

    def outputs(self, bottoms):
        p = self.fork("yolov3_detection_output_param")
        if not p.HasField("num_classes"):
            self.fail("yolov3_detection_output_param needs num_classes")
        if len(bottoms) != int(p.mask_group_num):
            self.fail(f"{len(bottoms)} bottoms given; mask_group_num is {p.mask_group_num}")
        per = int(p.num_box) * (5 + int(p.num_classes))
        for i, s in enumerate(bottoms):
            if len(s) != 4 or int(s[1]) != per:
                self.fail(f"bottom {i} {list(s)} must be [N, num_box (5 + num_classes) = {per}, H, W]")
        return [(1, 1, 1, 7)]

    def lower(self, ctx):
        ctx.leave_out("the number of detections depends on the data (confidence threshold and NMS); "
                        "ONNX has no fixed-shape equivalent of the ports' output")
