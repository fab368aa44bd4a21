"""The ``fill-net`` command.

``parse_args`` only turns flags into settings; ``main(argv)`` calls the library, prints,
and maps errors to exit statuses: 0 success, 1 bad input or a failed check, 2 bad usage.
Only requested data (``--json``) goes to stdout when asked for; tables go to stdout,
warnings and progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import FillersError, UsageError
from .textfmt import table

PROG = "fill-net"

DESCRIPTION = """\
Initialize every learnable blob of a Caffe net exactly as Caffe would, write the weights as
a .caffemodel, and optionally export the net to ONNX and check it under onnxruntime.

The net's own fillers are used unless --filler / --bias-filler replace them (see "which
blobs --filler and --bias-filler replace" below).  Other blobs (Scale's gain and shift,
PReLU's slope, BatchNorm's statistics) keep their layer's fillers.
"""

#: one line of --help per filler of init.FILLERS (n is the fan picked by --variance-norm)
FILLER_HELP = {
    "constant": "value",
    "gaussian": "N(mean, std); with --sparse S, a Bernoulli(S/shape[0]) mask",
    "positive_unitball": "U(0, 1), each row divided by its sum",
    "uniform": "U(min, max)",
    "xavier": "U(-sqrt(3/n), sqrt(3/n))",
    "msra": "N(0, sqrt(2/n))",
    "bilinear": "upsampling kernels for Deconvolution (4-d, square)",
    "orthogonal": "not Caffe's: Saxe et al., rows or columns orthonormal, times gain (orthogonal:gain=G)",
    "delta_orthogonal": "not Caffe's: Xiao et al., orthogonal centre tap, zeros elsewhere (in <= out channels)",
}

EXAMPLES = """\
examples:
  fill-net deploy.prototxt --dry-run                       # layers, shapes, parameter counts
  fill-net deploy.prototxt --filler xavier --seed 1        # writes deploy.caffemodel
  fill-net deploy.prototxt --filler msra --rng caffe --seed 1701 --npz w.npz
  fill-net train_val.prototxt --phase TRAIN --input data=64,3,227,227
  fill-net deploy.prototxt --weights trained.caffemodel -o finetune.caffemodel
  fill-net deploy.prototxt --filler xavier --onnx deploy.onnx          # export and check
  fill-net shufflenet.prototxt --plugin my_layers.py --dry-run        # fork layer types

exit status: 0 success, 1 bad input or a failed check, 2 bad usage.
"""


def epilog() -> str:
    """The fillers and the blobs the override flags replace, from the registries, then
    the examples."""
    from .init import FILLERS
    from .layers import BIAS, WEIGHT, known_types, lookup

    width = max(map(len, FILLERS))
    lines = ["fillers (Caffe's semantics; n is fan_in = count/shape[0], fan_out = count/shape[1], "
             "or their mean):"]
    lines += [f"  {name:<{width}}  {FILLER_HELP.get(name, '')}".rstrip() for name in FILLERS]
    from .lab.procedures import PROCEDURES

    lines += [f"  {name:<{width}}  {help_}" for name, (help_, _) in PROCEDURES.items()]
    lines += ["", "which blobs --filler and --bias-filler replace (by layer type):"]
    rows = []
    for t in known_types():
        roles = lookup(t).roles
        weights = [b for b, r in roles.items() if r == WEIGHT]
        biases = [b for b, r in roles.items() if r == BIAS]
        if weights or biases:
            rows.append((t, ", ".join(weights) or "-", ", ".join(biases) or "-"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines += [f"  {t:<{w0}}  --filler: {w:<{w1}}  --bias-filler: {b}" for t, w, b in rows]
    return "\n".join(lines) + "\n\n" + EXAMPLES


def filler_arg(text: str) -> str:
    """argparse type of --filler/--bias-filler: ``TYPE`` or ``TYPE:key=value,...``, read
    by the one parser of the compact form (:func:`fillers.init.filler_params`)."""
    from .errors import FillerError
    from .init import FILLERS, filler_params

    from .lab.procedures import PROCEDURES

    kind = text.partition(":")[0]
    if kind in PROCEDURES:  # a net-level procedure (LSUV); its options are flags of their own
        return text
    if kind not in FILLERS:
        raise argparse.ArgumentTypeError(f"invalid choice: '{kind}' (choose from {', '.join([*FILLERS, *PROCEDURES])})")
    try:
        filler_params(text)
    except FillerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .fans import CAFFE_VERSIONS, VARIANCE_NORMS
    from .netfill import BATCHNORM_MODES
    from .rng import RNG_KINDS

    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=epilog(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="*", help="the net: a .prototxt (V2 or V1) or a solver with net_param; several "
                                            "nets or a folder (every *.prototxt below it): a zoo run, see below")
    net = p.add_argument_group("reading the net")
    net.add_argument("--phase", choices=["TRAIN", "TEST"], default="TEST",
                     help="the phase for include/exclude rules (default: TEST, as a deploy net)")
    net.add_argument("--stage", action="append", default=None, metavar="NAME",
                     help="a NetState stage for include/exclude rules (repeatable)")
    net.add_argument("--level", type=int, default=None, help="the NetState level")
    net.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                     help="import this Python file or module first: it may register layer types "
                          "(fillers.layers.register) for fork layers (repeatable)")
    net.add_argument("--input", action="append", default=[], metavar="NAME=N,C,H,W",
                     help="the shape of a data layer's top that reads a database, files or Python "
                          "(repeatable)")
    out = p.add_argument_group("what to do")
    out.add_argument("--dry-run", action="store_true", help="only build the net and print its table")
    out.add_argument("--json", action="store_true", help="print the net (layers, shapes) as JSON on stdout")
    out.add_argument("--list-layers", action="store_true", help="list the layer types this tool knows")
    out.add_argument("-o", "--output", metavar="OUT.caffemodel",
                     help="where to write the weights (default: the model's stem + .caffemodel here)")
    out.add_argument("--npz", metavar="OUT.npz", help="also write the blobs as .npz (keys LAYER/INDEX)")
    out.add_argument("--no-caffemodel", action="store_true", help="do not write a .caffemodel")
    out.add_argument("-q", "--quiet", action="store_true", help="no table, no progress")
    fill = p.add_argument_group("filling")
    fill.add_argument("--filler", type=filler_arg, metavar="TYPE[:k=v,...]",
                      help="replace the filler of every weight blob with this one, e.g. xavier, "
                           "msra:variance_norm=FAN_OUT, gaussian:std=0.01 (options may also be given "
                           "as the flags below)")
    fill.add_argument("--variance-norm", choices=list(VARIANCE_NORMS), help="for xavier/msra")
    fill.add_argument("--std", type=float, help="gaussian std")
    fill.add_argument("--mean", type=float, help="gaussian mean")
    fill.add_argument("--min", type=float, help="uniform lower bound")
    fill.add_argument("--max", type=float, help="uniform upper bound")
    fill.add_argument("--value", type=float, help="constant value")
    fill.add_argument("--sparse", type=int, help="gaussian: expected non-zeros per output unit")
    fill.add_argument("--bias-filler", type=filler_arg, metavar="TYPE[:k=v,...]",
                      help="replace the filler of every bias blob, e.g. constant:value=0.1 or gaussian:std=0.01")
    fill.add_argument("--seed", type=int, help="random seed (default: a random one, printed)")
    fill.add_argument("--rng", choices=list(RNG_KINDS), default="fast",
                      help="fast: numpy PCG64 (default); caffe: Caffe's boost::mt19937 stream, bit-exact")
    fill.add_argument("--caffe-version", choices=list(CAFFE_VERSIONS), default="master",
                      help="fan and bilinear rules of Caffe's final master (default) or the 1.0 release")
    fill.add_argument("--weights", metavar="TRAINED.caffemodel",
                      help="copy these blobs by layer name (Caffe's shape checks) and fill the rest")
    fill.add_argument("--batchnorm", choices=list(BATCHNORM_MODES), default="caffe",
                      help="fresh BatchNorm statistics: caffe (0/0/0, gain 1/sqrt(eps)) or identity")
    zoo = p.add_argument_group("several models (a zoo run)", "the same options for every model; the outputs go to "
                               "--out-dir, named by -o/--npz/--onnx with {name} (default -o {name}.caffemodel); a "
                               "line per model on stderr, a summary table (--json: the results as JSON) on stdout; "
                               "exit status 1 if any model failed")
    zoo.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="models run at a time, each in its own "
                                                                            "process (default 1)")
    zoo.add_argument("--out-dir", metavar="DIR", help="where a zoo run writes (default: here)")
    ox = p.add_argument_group("ONNX")
    ox.add_argument("--onnx", metavar="OUT.onnx", help="export the filled net to ONNX")
    ox.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 13)")
    ox.add_argument("--check", dest="check", action="store_true", default=None,
                    help="run the export in onnxruntime and compare with OpenCV (default with --onnx)")
    ox.add_argument("--no-check", dest="check", action="store_false", help="skip the check")
    ox.add_argument("--all-blobs", action="store_true",
                    help="debug: make every blob of the net an ONNX output")
    from .lab.cli import add_arguments as add_lab_arguments

    add_lab_arguments(p)
    return p


def _fmt_shape(s) -> str:
    return "x".join(str(d) for d in s) if len(s) else "scalar"


def dry_run_table(net) -> str:
    rows = []
    for l in net.layers:
        params = ", ".join(_fmt_shape(p.shape) + ("*" if o is not None else "") for p, o in zip(l.params, l.owners))
        rows.append([l.name, l.type, ", ".join(_fmt_shape(s) for s in l.top_shapes), params or "-",
                     f"{l.n_params:,}" if l.params else "-"])
    text = table(rows, ["layer", "type", "tops", "params", "count"], right=(4,))
    text += (f"\n\n{len(net.layers)} layers, {net.n_params:,} parameters "
             f"({net.n_params * 4 / 2**20:.1f} MiB as float32); inputs: {', '.join(net.inputs) or '-'}; "
             f"outputs: {', '.join(net.outputs) or '-'}")
    if any(o is not None for l in net.layers for o in l.owners):
        text += "\n* shared with an earlier layer's blob (param { name })"
    return text


def fill_table(filled) -> str:
    rows = []
    for r in filled.records:
        rows.append([r.layer, str(r.index), _fmt_shape(r.shape), r.filler,
                     "-" if r.fan_in is None else str(r.fan_in), "-" if r.fan_out is None else str(r.fan_out),
                     f"{r.mean:.4g}", f"{r.std:.4g}"])
    return table(rows, ["layer", "blob", "shape", "filler", "fan_in", "fan_out", "mean", "std"],
                  right=(1, 4, 5, 6, 7))


class Progress:
    """A progress bar on stderr for long work, drawn only when stderr is a terminal
    (quiet when piped or redirected, and under -q)."""

    def __init__(self, total, label, stream=None, enabled=True):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream)
        self.enabled = enabled and self.tty
        self.last = -1

    def __call__(self, done, total=None, what=""):
        if not self.enabled:
            return
        frac = min(done / max(total or self.total, 1), 1.0)
        step = int(frac * 200)
        if step == self.last:
            return
        self.last = step
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {what[:30]:<30}")
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


#: FillerParameter fields that have a flag of their own (--variance-norm, --std ...)
FILLER_FLAGS = ("variance_norm", "std", "mean", "min", "max", "value", "sparse")


def _weight_filler_spec(args):
    """--filler TYPE[:k=v,...] with the field flags added to it (a dict), or None."""
    given = {k: getattr(args, k) for k in FILLER_FLAGS if getattr(args, k) is not None}
    if args.filler is None:
        if given:
            raise UsageError(f"--{next(iter(given)).replace('_', '-')} needs --filler")
        return None
    from .init import parse_compact

    return {**parse_compact(args.filler), **given}


def _plugins_first(argv) -> None:
    """Load the --plugin files before the parser is built, so that --help and the
    registries it lists know their layer types."""
    from .layers import load_plugin

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    for spec in pre.parse_known_args(argv)[0].plugin:
        load_plugin(spec)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _plugins_first(argv)
    except FillersError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except FillersError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM/SIGHUP during a write (fillers.atomic)
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 1


def _warn(messages):
    for w in messages:
        print(f"{PROG}: warning: {w}", file=sys.stderr)


def layer_list() -> str:
    """The registered layer types and where each comes from (``--list-layers``)."""
    from .layers import known_types, lookup

    rows = [[t, lookup(t).origin] for t in known_types()]
    return table(rows, ["type", "origin"])


def _run(args, parser) -> int:
    if len(args.model) > 1 or (args.model and os.path.isdir(args.model[0])):
        from .zoo import main_zoo

        if args.dry_run:
            raise UsageError("--dry-run takes one model")
        return main_zoo(args, args.model)
    args.model = args.model[0] if args.model else None
    if args.list_layers:
        print(layer_list())
        return 0
    if not args.model:
        parser.error("the model prototxt is required")
    from .net import load

    net = load(args.model, phase=args.phase, input_shapes=args.input, stages=args.stage, level=args.level)
    _warn(net.warnings)
    if args.json:
        print(json.dumps(net.to_dict(), indent=1))
        return 0
    if args.dry_run:
        print(dry_run_table(net))
        return 0

    weight_spec = _weight_filler_spec(args)
    from .lab import cli as lab

    if lab.wanted(args):  # --report / --compare / --plot
        return lab.run(args, net, weight_spec, _warn)
    progress = Progress(net.n_params, "filling", enabled=not args.quiet and net.n_params > 10_000_000)
    from .stream import caffemodel_for, fill_in_memory, stream_fill

    # a net-level procedure (--filler lsuv) runs forward passes: in memory; the rest is streamed
    procedure = lab.procedure_options(args, weight_spec, net, args.quiet)
    fill = fill_in_memory if procedure else stream_fill

    out = None if args.no_caffemodel else args.output or os.path.splitext(os.path.basename(args.model))[0] + ".caffemodel"
    written, status = [], 0
    with caffemodel_for(out, args.onnx) as weights_path:  # streamed: blob by blob, bounded memory
        filled = fill(net, weights_path, npz=args.npz, filler=weight_spec, bias_filler=args.bias_filler,
                      seed=args.seed, rng=args.rng, caffe_version=args.caffe_version, weights=args.weights,
                      batchnorm=args.batchnorm, stats=not args.quiet, progress=progress, **procedure)
        _warn(filled.warnings)
        if not args.quiet:
            print(fill_table(filled))
            if args.weights and filled.trained is not None:
                print("\n" + filled.trained.summary())
            print(f"\n{net.n_params:,} parameters filled in {filled.seconds:.2f} s (rng {filled.rng}, seed {filled.seed})")
        if out is not None:
            size = filled.sizes["caffemodel"]
            written.append(f"{out} ({size / 2**20:.1f} MiB)")
            if size >= 2**31 - 1:
                _warn([f"{out} is larger than 2 GB; Caffe and OpenCV cannot read protobuf messages that large"])
        if args.npz:
            written.append(args.npz)
        if args.onnx:
            from .onnx import export_and_check
            from .onnx.writer import reporting

            check = True if args.check is None else args.check
            with reporting(Progress(1, "ONNX export", enabled=not args.quiet and net.n_params > 10_000_000)):
                report = export_and_check((net, filled.params), args.onnx, opset=args.opset, check=check,
                                          all_blobs=args.all_blobs, caffemodel=weights_path)
            _warn(report.warnings)
            if not args.quiet:
                print(report.text())
            written.append(args.onnx)
            if not report.ok:
                failed = ", ".join(o.name for o in report.outputs if not o.ok) or "-"
                print(f"{PROG}: error: the check of {args.onnx} failed (outputs: {failed}); see the warnings above",
                      file=sys.stderr)
                status = 1
    if not args.quiet and written:
        print("wrote " + ", ".join(written))
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
