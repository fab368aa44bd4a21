"""Whole model zoos: many nets through the same fill (and export), one result each.

``fill-net A.prototxt B.prototxt ...`` or ``fill-net FOLDER`` (every ``*.prototxt`` below
it) runs :func:`run_model` for each net with the same options, ``--jobs N`` at a time
(each model in a process of its own, so even a crash in a native library stops only that
model), and writes each model's outputs into ``--out-dir`` under the model's name.  One
bad model does not stop the others; :func:`summary_table` and :func:`summary_json` report
them all.

    >>> from fillers.zoo import ZooOptions, find_models, run_zoo     # doctest: +SKIP
    >>> results = run_zoo(find_models(["models/"]), ZooOptions(filler="xavier"), jobs=2)
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from .textfmt import table

_PLUGINS_LOADED: set = set()

#: the name of a model's outputs in ``--out-dir``: ``{name}`` is the model's name
DEFAULT_CAFFEMODEL = "{name}.caffemodel"


@dataclass
class ZooOptions:
    """The options every model of a zoo run gets (the ``fill-net`` flags)."""

    phase: str = "TEST"
    stages: Optional[list] = None
    level: Optional[int] = None
    #: shapes for data layers whose tops are only known at run time, used where a net asks
    #: for them (``{"data": (1, 3, 224, 224)}``)
    input_shapes: dict = field(default_factory=dict)
    #: per model (by a substring of its path): extra stages, as ``{"lrcn": ["factored"]}``
    stages_for: dict = field(default_factory=dict)
    filler: object = None
    bias_filler: object = None
    seed: Optional[int] = None
    rng: str = "fast"
    caffe_version: str = "master"
    weights: Optional[str] = None
    batchnorm: str = "caffe"
    #: output names (``{name}`` replaced by the model's name), relative to the out dir;
    #: None: not written
    caffemodel: Optional[str] = DEFAULT_CAFFEMODEL
    npz: Optional[str] = None
    onnx: Optional[str] = None
    opset: Optional[int] = None
    check: bool = True
    all_blobs: bool = False
    plugins: list = field(default_factory=list)


@dataclass
class ZooResult:
    """One model's outcome.  ``result`` is ``"ok"``, ``"error"`` (a one-line message:
    the input cannot be filled or exported), ``"check failed"`` (the ONNX check found a
    difference) or ``"crashed"`` (an unexpected exception or a dead process: a bug)."""

    model: str
    path: str
    result: str = "ok"
    message: str = ""
    error_type: str = ""
    layers: Optional[int] = None
    params: Optional[int] = None
    seconds: float = 0.0
    outputs: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    reference: str = ""  # what the ONNX check compared with
    worst_rel_err: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def find_models(paths) -> list:
    """``[(path, name)]``: the given files, and every ``*.prototxt`` below the given
    folders (sorted); names are the paths relative to their common folder, without the
    extension, ``/`` turned into ``__`` (unique, usable as file names)."""
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".prototxt")]
        else:
            files.append(p)
    files = list(dict.fromkeys(files))
    if not files:
        return []
    absolute = [os.path.abspath(f) for f in files]
    common = os.path.commonpath([os.path.dirname(a) for a in absolute]) if len(files) > 1 \
        else os.path.dirname(absolute[0])
    out, used = [], set()
    for f, a in zip(files, absolute):
        name = os.path.splitext(os.path.relpath(a, common))[0].replace(os.sep, "__")
        base, k = name, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        out.append((f, name))
    return out


def _load(path, options: ZooOptions):
    from .errors import MissingInputShapeError
    from .net import load

    stages = options.stages
    for key, extra in options.stages_for.items():
        if key in str(path):
            stages = list(stages or []) + list(extra)
    shapes: dict = {}
    while True:
        try:
            return load(path, phase=options.phase, input_shapes=shapes, stages=stages, level=options.level)
        except MissingInputShapeError as exc:
            top = str(exc).split("top '", 1)[-1].split("'", 1)[0]
            if top in shapes or top not in options.input_shapes:
                raise
            shapes[top] = tuple(options.input_shapes[top])


def run_model(path, name, options: ZooOptions, out_dir=".") -> ZooResult:
    """Build, fill (streamed) and write one model, and export and check it when asked;
    never raises for a bad model (the result says what happened)."""
    from .errors import ExportError, FillersError
    from .stream import caffemodel_for, fill_in_memory, stream_fill

    res = ZooResult(model=name, path=os.fspath(path))
    t0 = time.perf_counter()
    try:
        from .layers import load_plugin

        for spec in options.plugins:
            if spec not in _PLUGINS_LOADED:  # once per process (a forked child inherits them)
                load_plugin(spec)
                _PLUGINS_LOADED.add(spec)
        net = _load(path, options)
        res.layers, res.params = len(net.layers), net.n_params
        res.warnings += net.warnings

        def target(template):
            return None if template is None else os.path.join(out_dir, template.replace("{name}", name))

        model_path, npz, onnx = target(options.caffemodel), target(options.npz), target(options.onnx)
        from .lab.procedures import procedure_for

        fill = fill_in_memory if procedure_for(options.filler) is not None else stream_fill  # LSUV runs the net
        with caffemodel_for(model_path, onnx) as weights_path:
            filled = fill(net, weights_path, npz=npz, filler=options.filler, bias_filler=options.bias_filler,
                          seed=options.seed, rng=options.rng, caffe_version=options.caffe_version,
                          weights=options.weights, batchnorm=options.batchnorm, stats=False)
            res.warnings += filled.warnings
            res.outputs += [p for p in (model_path, npz) if p is not None]
            if onnx is not None:
                from .onnx import export_and_check

                report = export_and_check((net, filled.params), onnx, opset=options.opset, check=options.check,
                                          all_blobs=options.all_blobs, caffemodel=weights_path)
                res.warnings += report.warnings
                res.outputs.append(onnx)
                res.reference = report.reference or ("shapes and finiteness only" if report.checked else "")
                errs = [o.max_rel_err for o in report.outputs if o.max_rel_err is not None]
                res.worst_rel_err = max(errs) if errs else None
                if not report.ok:
                    res.result = "check failed"
                    failed = ", ".join(o.name for o in report.outputs if not o.ok) or "-"
                    res.message = f"the ONNX check failed (outputs: {failed})"
    except ExportError as exc:
        res.result, res.message, res.error_type = "error", str(exc), type(exc).__name__
    except FillersError as exc:
        res.result, res.message, res.error_type = "error", str(exc), type(exc).__name__
    except MemoryError:
        res.result, res.message, res.error_type = "error", "out of memory", "MemoryError"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug: report it with where it happened, go on with the others
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        res.result, res.message, res.error_type = "crashed", f"{type(exc).__name__}: {exc}{where}", type(exc).__name__
    res.seconds = time.perf_counter() - t0
    return res


def _child(conn, path, name, options, out_dir):
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = run_model(path, name, options, out_dir)
    except KeyboardInterrupt:
        res = ZooResult(model=name, path=os.fspath(path), result="crashed", message="interrupted")
    conn.send(asdict(res))
    conn.close()


def run_zoo(models, options: ZooOptions, *, jobs: int = 1, out_dir=".",
            on_result: Optional[Callable] = None) -> list:
    """Run every ``(path, name)`` of ``models`` (see :func:`find_models`); ``jobs > 1``
    runs that many at a time, each in a process of its own.  ``on_result(result, done,
    total)`` is called as each model finishes.  Returns the results in the models' order.
    """
    os.makedirs(out_dir, exist_ok=True)
    total = len(models)
    results: list = [None] * total
    done = 0

    def finish(i, res):
        nonlocal done
        results[i] = res
        done += 1
        if on_result is not None:
            on_result(res, done, total)

    if jobs <= 1:
        for i, (path, name) in enumerate(models):
            finish(i, run_model(path, name, options, out_dir))
        return results
    from .atomic import signals_raise

    with signals_raise():  # SIGTERM: stop the running models (they remove their temporary files)
        return _run_parallel(models, options, jobs, out_dir, finish, results)


def _run_parallel(models, options, jobs, out_dir, finish, results):
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("fork")
    pending = list(enumerate(models))
    running: dict = {}  # connection -> (index, process, start time)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, (path, name) = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send, path, name, options, out_dir), daemon=True)
                proc.start()
                send.close()
                running[recv] = (i, proc, time.perf_counter())
            for conn in wait(list(running)):
                i, proc, start = running.pop(conn)
                path, name = models[i]
                try:
                    res = ZooResult(**conn.recv())
                except (EOFError, OSError):  # the process died without a word
                    proc.join()
                    code = proc.exitcode
                    why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                    res = ZooResult(model=name, path=os.fspath(path), result="crashed",
                                    message=f"the process running this model died ({why})",
                                    seconds=time.perf_counter() - start)
                conn.close()
                proc.join()
                finish(i, res)
    except BaseException:
        for conn, (i, proc, _) in running.items():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the child removes its temporary files
        for conn, (i, proc, _) in running.items():
            proc.join(5)
        raise
    return results


def _fmt_params(n) -> str:
    return "-" if n is None else f"{n:,}"


def summary_table(results) -> str:
    """The table: model, layers, parameters, result, time; then the counts."""
    rows = []
    for r in results:
        text = r.result if r.ok else f"{r.result}: {r.message}"
        if r.ok and r.reference:
            text += f" (onnx checked: {r.reference}" + \
                (f", worst rel err {r.worst_rel_err:.2g})" if r.worst_rel_err is not None else ")")
        rows.append([r.model, "-" if r.layers is None else str(r.layers), _fmt_params(r.params),
                     f"{r.seconds:.2f}s", text])
    return table(rows, ["model", "layers", "parameters", "time", "result"], right=(1, 2, 3)) + \
        "\n\n" + summary_line(results)


def summary_line(results) -> str:
    counts: dict = {}
    for r in results:
        counts[r.result] = counts.get(r.result, 0) + 1
    parts = [f"{counts.get('ok', 0)} ok"] + [f"{v} {k}" for k, v in counts.items() if k != "ok"]
    seconds = sum(r.seconds for r in results)
    return f"{len(results)} model(s): " + ", ".join(parts) + f" ({seconds:.1f} s of work)"


def summary_json(results, wall: Optional[float] = None) -> dict:
    out = {"models": [asdict(r) for r in results],
           "ok": sum(r.ok for r in results), "failed": sum(not r.ok for r in results)}
    if wall is not None:
        out["seconds"] = wall
    return out


def progress_line(res: ZooResult, done: int, total: int) -> str:
    width = len(str(total))
    what = f"{res.layers} layers, {_fmt_params(res.params)} params" if res.layers is not None else ""
    tail = what if res.ok else res.message
    return f"[{done:>{width}}/{total}] {res.result:<12} {res.seconds:6.2f}s  {res.model}  {tail}"[:200]


def main_zoo(args, models, *, stream=None) -> int:
    """What ``fill-net`` does with several models or a folder: run them, print a progress
    line per model on stderr (a terminal, not under ``-q``), the summary table (or
    ``--json``) on stdout; exit status 1 if any model failed."""
    import json

    from .errors import UsageError
    from .net import parse_input_shapes

    err = stream or sys.stderr
    for flag, value in (("--npz", args.npz), ("--onnx", args.onnx), ("-o", args.output)):
        if value is not None and "{name}" not in value:
            raise UsageError(f"with several models, {flag} takes a name with {{name}} in it (e.g. {flag} "
                             f"{{name}}{'.npz' if flag == '--npz' else '.onnx' if flag == '--onnx' else '.caffemodel'}"
                             "), written in --out-dir")
    found = find_models(args.model)
    if not found:
        raise UsageError(f"no .prototxt files in {', '.join(args.model)}")
    from .cli import _weight_filler_spec

    options = ZooOptions(
        phase=args.phase, stages=args.stage, level=args.level, input_shapes=parse_input_shapes(args.input),
        filler=_weight_filler_spec(args), bias_filler=args.bias_filler, seed=args.seed, rng=args.rng,
        caffe_version=args.caffe_version, weights=args.weights, batchnorm=args.batchnorm,
        caffemodel=None if args.no_caffemodel else (args.output or DEFAULT_CAFFEMODEL), npz=args.npz,
        onnx=args.onnx, opset=args.opset, check=True if args.check is None else args.check,
        all_blobs=args.all_blobs, plugins=[])  # the command line loaded --plugin already (children inherit them)
    show = not args.quiet and err.isatty()

    def on_result(res, done, total):
        if show:
            err.write(progress_line(res, done, total) + "\n")
            err.flush()

    t0 = time.perf_counter()
    results = run_zoo(found, options, jobs=max(1, args.jobs or 1), out_dir=args.out_dir or ".", on_result=on_result)
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps(summary_json(results, wall), indent=1))
    elif not args.quiet:
        print(summary_table(results))
        print(f"wall time {wall:.1f} s with {max(1, args.jobs or 1)} job(s)")
    return 0 if all(r.ok for r in results) else 1
