"""``fill-net``'s signal-lab flags: ``--report``, ``--compare``, ``--plot``, ``--inputs``,
``--output-diffs`` and LSUV's options.  :mod:`fillers.cli` adds the argument group and
calls :func:`run` when a lab output is asked for (:func:`wanted`)."""

from __future__ import annotations

import sys

from ..errors import UsageError
from .procedures import LSUV_DEFAULTS

DEFAULT_BASE, DEFAULT_TOL, DEFAULT_MAX_ITER = (LSUV_DEFAULTS[k] for k in ("base", "tol", "max_iter"))


def add_arguments(parser) -> None:
    lab = parser.add_argument_group(
        "signal lab (a forward and a backward pass of the filled net in numpy, as Caffe computes them)")
    lab.add_argument("--report", nargs="?", const="table", choices=["table", "json"], default=None,
                     help="print the signal through each weight layer and nonlinearity (table, or json on "
                          "stdout); no .caffemodel is written unless -o/--npz is given")
    lab.add_argument("--compare", action="append", default=None, metavar="F1,F2,...",
                     help="report several fillers side by side on the same inputs and diffs, e.g. "
                          "'xavier,msra,gaussian:std=0.01' (a filler's k=v options follow it; ';' or a "
                          "repeated --compare also separates fillers)")
    lab.add_argument("--plot", metavar="FILE.png",
                     help="plot forward and gradient std against depth (and, for recurrent nets, the "
                          "gradient norm against time step); needs pip install 'caffe-fillers[lab]'")
    lab.add_argument("--inputs", metavar="FILE.npz",
                     help="the net's inputs (keys 'data' or 'input/data'); default: seeded unit Gaussian")
    lab.add_argument("--output-diffs", metavar="FILE.npz",
                     help="the diffs fed at the outputs (keys 'prob' or 'diff/prob'); default: seeded unit "
                          "Gaussian at every output, or the net's loss layers when it has any (--phase TRAIN)")
    lab.add_argument("--lsuv-base", default=DEFAULT_BASE, metavar="TYPE[:k=v,...]",
                     help=f"--filler lsuv: the filler before rescaling (default: {DEFAULT_BASE})")
    lab.add_argument("--lsuv-tol", type=float, default=DEFAULT_TOL,
                     help=f"--filler lsuv: accepted |Var(output) - 1| (default: {DEFAULT_TOL})")
    lab.add_argument("--lsuv-max-iter", type=int, default=DEFAULT_MAX_ITER,
                     help=f"--filler lsuv: rescales per layer at most (default: {DEFAULT_MAX_ITER})")


def wanted(args) -> bool:
    return bool(args.report or args.compare or args.plot)


def read_feeds(args, net) -> tuple:
    """``(inputs or None, output diffs or None)`` from ``--inputs``/``--output-diffs``."""
    from .report import read_arrays

    feeds = diffs = None
    if getattr(args, "inputs", None):
        feeds = read_arrays(args.inputs, list(net.inputs), ("input", "dummy"), "--inputs")
    if getattr(args, "output_diffs", None):
        diffs = read_arrays(args.output_diffs, list(net.blobs), ("diff",), "--output-diffs")
    return feeds, diffs


def procedure_options(args, filler, net, quiet=False, feeds=None) -> dict:
    """The options a net-level procedure (``--filler lsuv``) takes from the flags (none,
    and nothing read, for a per-blob filler); its batch is ``feeds``, else ``--inputs``."""
    from .procedures import procedure_name

    if procedure_name(filler) is None:
        return {}
    from ..cli import Progress

    if feeds is None:
        feeds = read_feeds(args, net)[0]

    stream = sys.stderr
    progress = Progress(1, "lsuv", enabled=not quiet and stream.isatty())
    return {"lsuv_base": args.lsuv_base, "lsuv_tol": args.lsuv_tol, "lsuv_max_iter": args.lsuv_max_iter,
            "inputs": feeds, "phase": args.phase, "lsuv_progress": lambda d, t, n: _step(progress, d, t, n)}


def _step(progress, done, total, name):
    progress.total = max(total, 1)
    progress(done, total, name)


def run(args, net, weight_spec, warn) -> int:
    """Fill (once per compared filler), report, compare, plot; write weights only when asked."""
    import numpy as np

    from .compare import compare_json, compare_text, parse_fillers
    from .report import default_inputs, signal_report

    if args.plot:  # fail before the work when matplotlib is missing
        from .plot import _pyplot

        _pyplot()
    feeds, diffs = read_feeds(args, net)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    if feeds is None or len(feeds) < len(net.inputs):
        feeds = {**default_inputs(net, seed), **(feeds or {})}
    if args.compare:
        if weight_spec is not None:
            raise UsageError("--compare replaces --filler: give the fillers to compare in --compare only")
        specs = parse_fillers(args.compare)
        from ..init import FILLERS, filler_params
        from .procedures import procedure_name

        for s in specs:
            if procedure_name(s) is None:
                kind = s.partition(":")[0]
                if kind not in FILLERS:
                    raise UsageError(f"--compare: unknown filler '{kind}'")
                filler_params(s)
    else:
        specs = [weight_spec]
    reports, last = [], None
    for spec in specs:
        label = spec if isinstance(spec, str) else _label(spec)
        last = net.fill(filler=spec, bias_filler=args.bias_filler, seed=seed, rng=args.rng,
                        caffe_version=args.caffe_version, weights=args.weights, batchnorm=args.batchnorm,
                        **procedure_options(args, spec, net, args.quiet, feeds))
        warn([f"{label}: {w}" if args.compare else w for w in last.warnings])
        reports.append(signal_report(net, last.params, feeds, diffs, phase=args.phase, seed=seed, label=label,
                                     caffe_version=args.caffe_version))
    json_out = args.report == "json"
    if json_out:
        print(compare_json(reports) if args.compare else reports[0].to_json())
    elif args.compare:
        print(compare_text(reports))
    elif args.report or not args.quiet:
        print(reports[0].text())
    if not json_out and not args.quiet:
        print(f"(rng {last.rng}, seed {seed})")
    if args.plot:
        from .plot import plot_reports

        plot_reports(reports, args.plot)
        if not args.quiet and not json_out:
            print(f"wrote {args.plot}")
    if args.output or args.npz:
        if args.compare:
            raise UsageError("-o/--npz with --compare: which filler's weights? fill without --compare to write them")
        if args.output and not args.no_caffemodel:
            last.save(args.output)
        if args.npz:
            last.save_npz(args.npz)
    return 0


def _label(spec) -> str:
    if spec is None:
        return "prototxt fillers"
    if isinstance(spec, dict):
        kind = spec.get("type", "")
        rest = ",".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        return f"{kind}:{rest}" if rest else str(kind)
    return str(spec)
