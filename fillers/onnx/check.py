"""Running and checking an export: onnxruntime on seeded inputs (what each consuming
layer asks for), every output's shape and finiteness, and, where OpenCV's Caffe importer
reads the net, a comparison with OpenCV's forward pass of the same weights."""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .graph import DEFAULT_OPSET, ExportInfo, export_with_info, filled_parts


@dataclass
class OutputCheck:
    name: str
    shape: tuple
    expected_shape: tuple
    finite: bool
    max_abs: float
    max_abs_err: Optional[float] = None  # vs OpenCV
    max_rel_err: Optional[float] = None
    ok: bool = True
    engine_abs_err: Optional[float] = None  # vs the numpy engine (fillers.lab), on the finite values
    engine_rel_err: Optional[float] = None
    #: the output holds inf/NaN and the engine's (Caffe's arithmetic) has them at the same positions
    overflow: bool = False


@dataclass
class ExportReport:
    """The outcome of :func:`export_and_check`."""

    path: Optional[str]
    opset: int
    ok: bool = True
    warnings: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # of OutputCheck
    checked: bool = False
    reference: Optional[str] = None  # "OpenCV 4.x" when compared
    engine: bool = False  # compared with the numpy engine (Caffe's forward pass, fillers.lab)
    engine_seconds: float = 0.0
    overflow: bool = False  # faithful, but the net itself overflows (inf/NaN as in Caffe)
    export_seconds: float = 0.0
    session_seconds: float = 0.0
    run_seconds: float = 0.0
    model: object = None  # the ModelProto when exported in memory (None when written to a path)
    info: Optional[ExportInfo] = None

    def text(self) -> str:
        head = f"ONNX export: {self.path or '(in memory)'} (opset {self.opset}, exported in {self.export_seconds:.2f} s"
        if self.checked:
            head += f", onnxruntime session {self.session_seconds:.2f} s, run {self.run_seconds:.2f} s"
        head += ")"
        if not self.checked:
            return head + "\nnot run in onnxruntime (--no-check)"
        if self.engine_seconds:
            head = head[:-1] + f", engine {self.engine_seconds:.2f} s)"
        row0 = ["output", "shape", "max |y|", "finite"]
        if self.engine:
            row0 += ["max abs err vs engine", "max rel err"]
        if self.reference:
            row0 += [f"max abs err vs {self.reference}", "max rel err"]
        rows = [tuple(row0 + ["status"])]
        for o in self.outputs:
            shape = "x".join(str(d) for d in o.shape) or "scalar"
            status = ("ok" if o.ok else "FAIL") + (" (overflows as in Caffe)" if o.overflow and o.ok else "")
            r = [o.name, shape, _fmt(o.max_abs), "yes" if o.finite else "NO"]
            if self.engine:
                r += [_fmt(o.engine_abs_err), _fmt(o.engine_rel_err)]
            if self.reference:
                r += [_fmt(o.max_abs_err), _fmt(o.max_rel_err)]
            rows.append(tuple(r + [status]))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = [head]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if not self.engine and not self.reference:
            lines.append("(no reference forward pass: shapes and finiteness only)")
        lines.append("result: " + ("ok" if self.ok else "FAILED")
                     + (" (faithful; the net overflows as Caffe's does: see the warning)" if self.ok and self.overflow
                        else ""))
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.3g}"


def make_inputs(info: ExportInfo, net, seed: int = 0) -> dict:
    """Seeded inputs for the graph inputs: what a consuming layer asks for
    (``LayerType.sample_input``: indices for Embed, ``cont`` for recurrent layers ...),
    else uniform(-1, 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in info.inputs.items():
        value = None
        for _, j, lname in info.consumers.get(name, []):
            asked = net.layer(lname).spec.sample_input(j, tuple(shape), rng)
            if asked is not None:
                value = np.asarray(asked, dtype=np.float32)
        feeds[name] = value if value is not None else rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def ort_session(model_or_path):
    """An onnxruntime CPU session for a model (or the path of one)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else model_or_path.SerializeToString()
    return ort.InferenceSession(os.fspath(src) if isinstance(src, os.PathLike) else src, opts,
                                providers=["CPUExecutionProvider"])


def opencv_prototxt(net, info: ExportInfo) -> str:
    """The exported layers of ``net`` as prototxt text for OpenCV's Caffe importer: data
    layers become ``Input`` layers of the graph inputs an exported layer reads, with their
    shapes; include/exclude rules, blobs and left-out layers are dropped; a layer's fork
    fields (blanked out of the BVLC message when the file was read) are written back into
    its block, as the fork's file had them."""
    from google.protobuf import text_format

    from .. import caffe_pb2

    blocks = [f'name: "{net.name or "net"}"']
    for i in info.kept_layers:
        layer = net.layers[i]
        if not layer.spec.opencv_reads:
            continue
        lp = caffe_pb2.LayerParameter()
        if layer.is_input:
            used = [(t, s) for t, s in zip(layer.tops, layer.top_shapes) if t in info.inputs and not _passed(t, info)]
            if not used:
                continue
            lp.name, lp.type = layer.name, "Input"
            for t, s in used:
                lp.top.append(t)
                lp.input_param.shape.add().dim.extend(int(d) for d in s)
            blocks.append("layer {\n" + text_format.MessageToString(lp, indent=2) + "}")
            continue
        lp.CopyFrom(layer.lp)
        del lp.include[:]
        del lp.exclude[:]
        del lp.blobs[:]
        lp.ClearField("phase")
        fork = "".join(f"  {name} {value if value[:1] in '{<' else ': ' + value}\n"
                       for name, value in layer.spec.fork_fields.items() if "." not in name)
        blocks.append("layer {\n" + text_format.MessageToString(lp, indent=2) + fork + "}")
    return "\n".join(blocks) + "\n"


def _opencv_forward(net, params, info, feeds, caffemodel, workdir):
    """OpenCV's outputs for the graph outputs, or raise with the reason."""
    import cv2

    from ..caffemodel import write_caffemodel

    proto = os.path.join(workdir, "net.prototxt")
    with open(proto, "w") as fh:
        fh.write(opencv_prototxt(net, info))
    if caffemodel is None:
        caffemodel = os.path.join(workdir, "net.caffemodel")
        write_caffemodel(caffemodel, net, params)
    try:  # OpenCV logs its own errors to stderr; the library must not print
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover
        level = None
    try:
        return _opencv_run(cv2, net, info, feeds, proto, caffemodel)
    finally:
        if level is not None:
            cv2.utils.logging.setLogLevel(level)


def _opencv_run(cv2, net, info, feeds, proto, caffemodel):
    cvnet = cv2.dnn.readNetFromCaffe(proto, os.fspath(caffemodel))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cvnet.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, value in feeds.items():
        if not _passed(name, info):
            cvnet.setInput(value, name)
    wanted, names = [], []
    passed = {}  # outputs that are graph inputs (an unused Input top): their values are the feeds
    for out_name in info.outputs:
        if _passed(out_name, info):
            passed[out_name] = np.asarray(feeds[out_name])
            continue
        blob, lname, j = info.blob_of[out_name]
        wanted.append(out_name)
        names.append(lname if j == 0 else f"{lname}.{j}")
    results = cvnet.forward(names) if names else []
    return {**{w: np.asarray(r) for w, r in zip(wanted, results)}, **passed}


def _passed(name, info) -> bool:
    """A graph input that is an output and feeds no exported layer (an unused Input top)."""
    return name in info.inputs and name in info.outputs and name not in info.consumers


def _opencv_reason(exc) -> str:
    """The telling part of a cv2.error ("Can't create layer ... of type Embed")."""
    import re

    text = str(exc).strip()
    m = re.search(r"error: \([-\d]+:[^)]*\) (.*?)(?: in function '[^']*')?\s*$", text.splitlines()[0] if text else "")
    if m and m.group(1).strip():
        return m.group(1).strip()
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__


def export_and_check(filled, path=None, *, opset=None, check: bool = True, all_blobs: bool = False,
                     caffemodel=None, seed: int = 0, compare_opencv: bool = True, rtol: float = 1e-3,
                     compare_engine: bool = True):
    """Export ``filled`` (a filled net, or a ``(net, params)`` pair) to ``path`` and check it.

    With ``check``: run the model in onnxruntime on seeded inputs (see :func:`make_inputs`),
    check that every output has the net model's shape, and compare every output with the
    numpy engine's forward pass of the same weights and inputs (Caffe's arithmetic,
    :mod:`fillers.lab`; ``compare_engine``) and, where OpenCV's Caffe importer can run the
    net, with OpenCV's (the same weights, from ``caffemodel`` or a temporary one): a
    maximum absolute error above ``rtol * max(1, max |reference|)`` fails.  Where the
    engine, as Caffe, produces inf/NaN (fresh BatchNorm statistics), the positions of the
    non-finite values must be the same and the finite values agree: the export is then
    faithful, ``report.overflow`` is set and a warning says why the net overflows.  A net
    the engine cannot run (a layer type without a forward pass in numpy) falls back to
    shapes and finiteness (and OpenCV), with a warning.  Returns an :class:`ExportReport`.
    """
    net, params = filled_parts(filled)
    report = ExportReport(path=None if path is None else os.fspath(path), opset=DEFAULT_OPSET if opset is None else opset)
    model, info = export_with_info(net, params, path, opset=report.opset, all_blobs=all_blobs,
                                   return_model=path is None)
    report.model, report.info = model, info
    report.export_seconds = info.seconds
    report.warnings.extend(info.warnings)
    if info.external_data:
        report.warnings.append(f"the weights ({info.init_bytes / 2**30:.2f} GiB) were written as external data "
                               f"next to the model ({os.path.basename(path)}.data)")
    if not check:
        return report
    if info.external_data and path is None:
        report.warnings.append("the model is too large to run from memory; give a path to check it")
        return report
    feeds = make_inputs(info, net, seed)
    got = _run_onnxruntime(report, path if path is not None else model, feeds)
    engine = _engine_reference(report, net, params, info, feeds) if compare_engine else None
    reference = _opencv_reference(report, net, params, info, feeds, caffemodel,
                                  "compared with the numpy engine" if engine is not None else
                                  "compared shapes and finiteness only") if compare_opencv else None
    for name, y in got.items():
        _, layer_name, top = info.blob_of[name]
        spec = net.layer(layer_name).spec
        report.outputs.append(_check_output(report, name, np.asarray(y), info.outputs.get(name, ()),
                                            info.dynamic_axes.get(name, ()),
                                            None if reference is None else reference.get(name), rtol,
                                            lambda a: spec.canonical_output(top, a),
                                            None if engine is None else engine.get(name)))
    report.overflow = any(o.overflow for o in report.outputs)
    _explain_overflow(report, net, params)
    report.ok = all(o.ok for o in report.outputs)
    return report


def _engine_reference(report, net, params, info, feeds) -> Optional[dict]:
    """The numpy engine's values (Caffe's forward pass, phase TEST) of the graph outputs on
    the same inputs, or None with a warning saying why not (a layer type without a numpy
    forward pass, a net the engine cannot run)."""
    from ..layers.base import LayerType

    missing = [l for l in net.layers if type(l.spec).forward is LayerType.forward]
    if missing:
        report.warnings.append(f"not compared with the numpy engine: layer '{missing[0].name}' ({missing[0].type}) "
                               "has no forward pass in numpy"
                               + (f" (and {len(missing) - 1} more layer(s))" if len(missing) > 1 else "")
                               + "; compared shapes and finiteness" + (" (and OpenCV where it runs)"))
        return None
    from ..lab.engine import Engine
    from ..lab.report import default_inputs

    wanted = {}  # (layer index, top) -> graph output name
    index = {l.name: i for i, l in enumerate(net.layers)}
    for out_name in info.outputs:
        _, lname, j = info.blob_of[out_name]
        wanted[(index[lname], j)] = out_name
    got: dict = {}

    def keep(li, bottoms, tops):
        for j, t in enumerate(tops):
            name = wanted.get((li, j))
            if name is not None:
                got[name] = t

    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            caffe_feeds = {_input_blob(net, name): value for name, value in feeds.items()}
            all_feeds = {**default_inputs(net, 0), **caffe_feeds}
            eng = Engine(net, params, phase="TEST", rng=0, force_backward=False)
            eng.forward(all_feeds, keep=False, outputs=[], observer=keep)
    except Exception as exc:  # a net the engine cannot run: today's check
        report.warnings.append(f"not compared with the numpy engine: it could not run this net ({exc}); "
                               "compared shapes and finiteness (and OpenCV where it runs)")
        return None
    report.engine_seconds = time.perf_counter() - t0
    report.engine = True
    return got


def _input_blob(net, name) -> str:
    """The Caffe blob of a graph input: its name, or, for an input the net rewrites in
    place and also outputs, the name the export gave it (``x@first_writer``)."""
    if name in net.inputs:
        return name
    for k in range(len(name)):
        if name[k] == "@" and name[:k] in net.inputs:
            return name[:k]
    return name


def compare_arrays(y, ref):
    """``(max abs err, max rel err, same non-finite positions, any non-finite)`` of ``y``
    against ``ref`` (same size): the errors over the positions where both are finite
    (relative to ``max(1, max |finite ref|)``); NaN, +inf and -inf must sit at the same
    positions in both."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    fy, fr = np.isfinite(y), np.isfinite(ref)
    same = bool(np.array_equal(fy, fr) and np.array_equal(np.isnan(y), np.isnan(ref))
                and np.array_equal(np.isposinf(y), np.isposinf(ref)))
    both = fy & fr
    diff = np.abs(y[both] - ref[both])
    scale = max(1.0, float(np.max(np.abs(ref[both])))) if both.any() else 1.0
    abs_err = float(np.max(diff)) if diff.size else 0.0
    return abs_err, abs_err / scale, same, not bool(fy.all() and fr.all())


def _run_onnxruntime(report, model_or_path, feeds) -> dict:
    """The model's outputs on ``feeds`` (the session and run times go into the report)."""
    t0 = time.perf_counter()
    sess = ort_session(model_or_path)
    report.session_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    results = sess.run(out_names, {k: v for k, v in feeds.items() if k in wanted})
    report.run_seconds = time.perf_counter() - t0
    report.checked = True
    return dict(zip(out_names, results))


def _opencv_reference(report, net, params, info, feeds, caffemodel, instead) -> Optional[dict]:
    """OpenCV's outputs for the same weights and inputs, or None with a warning saying why
    not (weights past 2 GB, a layer whose ``opencv_caveat`` says OpenCV differs, no cv2,
    a net OpenCV cannot read) and what was ``instead`` compared."""
    caveats = [(net.layers[i].name, net.layers[i].spec.opencv_caveat()) for i in info.kept_layers]
    caveats = [(name, why) for name, why in caveats if why]
    why = None
    if info.init_bytes >= 2**31 - 2**24:
        why = "not compared with OpenCV: it reads .caffemodel files up to 2 GB"
    elif caveats:
        why = (f"not compared with OpenCV: layer '{caveats[0][0]}': {caveats[0][1]}"
               + (f" (and {len(caveats) - 1} more layer(s))" if len(caveats) > 1 else ""))
    else:
        try:
            import cv2

            with tempfile.TemporaryDirectory(prefix="fillers-cv-") as work:
                reference = _opencv_forward(net, params, info, feeds, caffemodel, work)
            report.reference = f"OpenCV {cv2.__version__}"
            return reference
        except ImportError:
            why = "OpenCV (cv2) is not installed"
        except Exception as exc:  # OpenCV cannot read or run the net
            why = f"OpenCV could not run this net ({_opencv_reason(exc)})"
    report.warnings.append(f"{why}; {instead}")
    return None


def _check_output(report, name, y, expected, dynamic, ref, rtol, canonical, engine=None) -> OutputCheck:
    """One output against the net model's shape (but for its ``dynamic`` axes), the
    engine's values (``engine``; then inf/NaN where the engine has them are faithful) or
    else finiteness, and (``ref``) OpenCV's values, all in their ``canonical`` form."""
    finite = bool(np.all(np.isfinite(y)))
    max_abs = float(np.max(np.abs(y))) if y.size and finite else (float("nan") if not finite else 0.0)
    oc = OutputCheck(name=name, shape=tuple(y.shape), expected_shape=tuple(expected), finite=finite, max_abs=max_abs)
    if dynamic:  # only the static axes are known in advance
        if len(y.shape) == len(expected):
            expected = tuple(y.shape[a] if a in dynamic else d for a, d in enumerate(expected))
    if tuple(y.shape) != tuple(expected):
        oc.ok = False
        report.warnings.append(f"output '{name}' has shape {list(y.shape)}, the net model says {list(expected)}")
    yc = np.asarray(canonical(y))
    faithful_nonfinite = False
    if engine is not None:
        errors = _compare(report, oc, name, yc, canonical(np.asarray(engine, dtype=np.float32)), rtol, "the engine's",
                          "the numpy engine's (Caffe's forward pass)")
        if errors is not None:
            oc.engine_abs_err, oc.engine_rel_err, faithful_nonfinite = errors
            oc.overflow = faithful_nonfinite
    if not finite and not faithful_nonfinite:
        oc.ok = False
    if ref is not None:
        errors = _compare(report, oc, name, yc, canonical(np.asarray(ref, dtype=np.float32)), rtol, "OpenCV's")
        if errors is not None:
            oc.max_abs_err, oc.max_rel_err, _ = errors
    return oc


def _compare(report, oc, name, y, reference, rtol, whose, explain=None):
    """``y`` against a reference forward pass: ``(max abs error, max relative error,
    whether they agree and hold inf/NaN at the same positions)``, or None when the sizes
    differ; ``oc.ok`` is cleared when they disagree (a warning says how when ``explain``
    names the reference)."""
    reference = np.asarray(reference, dtype=np.float32)
    if reference.size != y.size:
        oc.ok = False
        report.warnings.append(f"{whose} '{name}' has {reference.size} values, onnxruntime's {y.size}")
        return None
    abs_err, rel_err, same, nonfinite = compare_arrays(y, reference)
    agree = rel_err <= rtol and same
    if not agree:
        oc.ok = False
        if explain:
            report.warnings.append(f"output '{name}' differs from {explain}: "
                                   + (f"max relative error {rel_err:.3g}" if same else "inf/NaN at other positions"))
    return abs_err, rel_err, agree and nonfinite


def _explain_overflow(report, net, params) -> None:
    """A warning when outputs overflow, with the first layer type whose ``overflow_hint``
    explains it (a fresh BatchNorm)."""
    non_finite = any(not o.finite for o in report.outputs)
    if not (non_finite or any(o.finite and o.max_abs > 1e20 for o in report.outputs)):
        return
    hints = [(l, l.spec.overflow_hint(params.get(l.name) or [])) for l in net.layers]
    hints = [(l, h) for l, h in hints if h]
    msg = f"the outputs hold {'non-finite values (inf/NaN)' if non_finite else 'huge values'}"
    if report.overflow:
        msg = ("the export is faithful (onnxruntime's outputs match the numpy engine's, inf/NaN at the same "
               "positions), but the net overflows as Caffe's forward pass does")
    if hints:
        layer, hint = hints[0]
        same = sum(1 for l, _ in hints if l.type == layer.type)
        msg += f"; {same} {layer.type} layer(s) have {hint}"
    report.warnings.append(msg)
