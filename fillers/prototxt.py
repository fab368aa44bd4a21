"""Reading Caffe net definitions: text prototxt (V2 ``layer {}``, V1 ``layers {}``, a
SolverParameter with ``net_param {}``), phase/stage/level filtering as Caffe's
``Net::FilterNet`` applies it, and the upgrades of Caffe's ``upgrade_proto.cpp`` that
matter for building a net (V1 layers, ``input:`` fields).

Fork fields (e.g. ``ceil_mode`` in ``pooling_param``, ``shuffle_channel_param``, from
Caffe forks used by many model zoos) are not in BVLC's schema.  One walk over the text with
the schema finds them; each is blanked out of the text (line numbers kept) and its value
text kept for the layer it belongs to, where a layer type that declares the field
(``LayerType.fork_params``) reads it parsed.  A field no layer type consumes gets a warning
naming it (given by :func:`fillers.net.load`, which knows the types).  The one fork field
with an exact BVLC meaning, ``pooling_param.ceil_mode``, becomes ``round_mode`` (true:
CEIL, false: FLOOR).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from google.protobuf import text_format

from . import caffe_pb2
from .errors import NetError, ParseError
from .upgrade_v0 import needs_v0_upgrade, upgrade_v0

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
PHASES = {"TRAIN": TRAIN, "TEST": TEST}

_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_MAX_FORK_FIELDS = 10000


@dataclass
class ReadResult:
    """A parsed net and what the reader had to say about it."""

    net: object  # caffe_pb2.NetParameter, upgraded to V2 layers with an Input layer
    path: str
    warnings: list = field(default_factory=list)
    #: the file's format: "V2", "V1" (``layers {}``) or "V0" (upgraded as Caffe does)
    format: str = "V2"
    #: per layer of ``net.layer`` (same order): ``{field name: value text}`` of the fork
    #: fields read out of that layer's text, for fork layer types
    fork_fields: list = field(default_factory=list)
    #: per layer: ``{field name: warning}`` for those fields, to give unless the layer's
    #: type consumes the field
    fork_warnings: list = field(default_factory=list)


def _position(text: str, line: int, col: int) -> int:
    offset = 0
    for _ in range(line - 1):
        nl = text.find("\n", offset)
        if nl < 0:
            return len(text)
        offset = nl + 1
    return offset + col - 1


def _skip_space(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        if text[i] in " \t\r\n,;":
            i += 1
        elif text[i] == "#":
            while i < n and text[i] != "\n":
                i += 1
        else:
            break
    return i


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _skip_value(text: str, i: int) -> int:
    """End of the field value starting at ``i`` (a scalar, a quoted string, a list or a
    ``{...}`` / ``<...>`` block)."""
    n = len(text)
    if i < n and text[i] in "{<":
        depth, i = 0, i
        while i < n:
            c = text[i]
            if c in "\"'":
                i = _skip_string(text, i)
                continue
            if c == "#":
                while i < n and text[i] != "\n":
                    i += 1
                continue
            if c in "{<":
                depth += 1
            elif c in "}>":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    if i < n and text[i] == "[":
        while i < n and text[i] != "]":
            i = _skip_string(text, i) if text[i] in "\"'" else i + 1
        return i + 1
    if i < n and text[i] in "\"'":
        while i < n and text[i] in "\"'":
            i = _skip_string(text, i)
            j = _skip_space(text, i)
            if j < n and text[j] in "\"'":
                i = j
            else:
                break
        return i
    while i < n and not text[i].isspace() and text[i] not in "{}<>;,#":
        i += 1
    return i


def _field_span(text: str, start: int):
    """(end, value text) of the field whose name starts at ``start``."""
    i = start
    while i < len(text) and (text[i].isalnum() or text[i] == "_"):
        i += 1
    i = _skip_space(text, i)
    if i < len(text) and text[i] == ":":
        i = _skip_space(text, i + 1)
    vstart = i
    end = _skip_value(text, i)
    return end, text[vstart:end]


def _blank(text: str, start: int, end: int, replacement: str = "") -> str:
    span = text[start:end]
    filler = "".join("\n" if c == "\n" else " " for c in span)
    if replacement:
        first_nl = filler.find("\n")
        room = len(filler) if first_nl < 0 else first_nl
        if len(replacement) <= room:
            filler = replacement + filler[len(replacement):]
        else:
            filler = replacement + filler[room:] if first_nl >= 0 else replacement
    return text[:start] + filler + text[end:]


def _walk(text: str, root):
    """One pass over ``text`` with the schema (``root``, a message descriptor).

    Returns the fields unknown to the schema below the top level, ``(start, end, owner
    full name, field name)`` each, and the ``(start, end)`` spans of the net's ``layer {}``
    / ``layers {}`` blocks, in order.  Top-level unknowns are left to the parser (they tell
    a solver file from a net); so is anything the walk cannot follow."""
    found, blocks, i, n = [], [], 0, len(text)
    stack = [(root, "", 0)]  # (descriptor or None, field name, start) of the open blocks
    net = caffe_pb2.NetParameter.DESCRIPTOR
    while True:
        i = _skip_space(text, i)
        if i >= n:
            return found, blocks
        c = text[i]
        if c in "}>":
            if len(stack) > 1:
                _, name, start = stack.pop()
                if name in ("layer", "layers") and stack[-1][0] is net:
                    blocks.append((start, i + 1))
            i += 1
            continue
        if not (c.isalpha() or c == "_"):
            i += 1
            continue
        j = i
        while j < n and (text[j].isalnum() or text[j] == "_"):
            j += 1
        desc = stack[-1][0]
        fd = desc.fields_by_name.get(text[i:j]) if desc is not None else None
        k = _skip_space(text, j)
        if k < n and text[k] == ":":
            k = _skip_space(text, k + 1)
        unknown = desc is not None and fd is None and len(stack) > 1
        if k < n and text[k] in "{<" and not unknown:
            stack.append((fd.message_type if fd is not None else None, text[i:j], i))
            i = k + 1
            continue
        end = _skip_value(text, k)
        if unknown:
            found.append((i, end, desc.full_name, text[i:j]))
        i = max(end, j)


def parse_text(text: str, message, path: str, warnings: list, stripped: list | None = None):
    """Parse ``text`` into ``message``, blanking out fork fields with a warning each.

    ``stripped`` (if given) receives ``(offset, owner message, field name, value text,
    warning)`` for every field blanked out (the warning is then left to the caller), and
    finally ``(None, None, None, layer blocks, None)`` with the spans of the layer blocks
    in the text as parsed (the offsets refer to it)."""

    def strip(text, start, end, owner, name):
        value = text[start:end].split(name, 1)[1].lstrip().lstrip(":").strip()
        line = text.count("\n", 0, start) + 1
        col = start - (text.rfind("\n", 0, start) + 1) + 1
        replacement = ""
        if owner == "caffe.PoolingParameter" and name == "ceil_mode":
            mode = "FLOOR" if value.lower() in ("false", "0", "f") else "CEIL"
            replacement = f"round_mode:{mode}"
            warnings.append(f"{path}:{line}:{col}: fork field pooling_param.ceil_mode: {value} "
                            f"read as BVLC's round_mode: {mode}")
        shown = value.split("\n")[0]
        shown = shown if len(shown) <= 30 and "{" not in shown else "{...}"
        note = None if replacement else (
            f"{path}:{line}:{col}: ignoring field '{name}' ({owner.split('.')[-1]}; value {shown}), "
            "which BVLC Caffe does not have")
        if stripped is not None:
            stripped.append((start, owner, name, value, note))
        elif note:
            warnings.append(note)
        return _blank(text, start, end, replacement)

    for start, end, owner, name in reversed(_walk(text, message.DESCRIPTOR)[0]):
        text = strip(text, start, end, owner, name)
    if stripped is not None:
        stripped.sort(key=lambda s: s[0])
    warnings.sort(key=warning_position)
    for _ in range(_MAX_FORK_FIELDS):
        try:
            text_format.Parse(text, message, allow_unknown_extension=False)
            if stripped is not None:
                blocks = _walk(text, message.DESCRIPTOR)[1] if stripped else []  # only needed for fork fields
                stripped.append((None, None, None, blocks, None))
            return message
        except text_format.ParseError as exc:
            msg = str(exc)
            line, col = exc.GetLine(), exc.GetColumn()
            m = _UNKNOWN_FIELD.search(msg)
            if m is None or line is None or m.group(1) in ("caffe.NetParameter", "caffe.SolverParameter"):
                detail = re.sub(r"^\d+:\d+ : ", "", msg)
                raise ParseError(path, detail, line, col) from None
            start = _position(text, line, col)
            end, _ = _field_span(text, start)
            text = strip(text, start, end, m.group(1), m.group(2))
            message.Clear()
    raise ParseError(path, "too many fields unknown to BVLC Caffe")


def warning_position(warning: str):
    """Sort key of a ``FILE:LINE:COL: ...`` warning: its line and column."""
    return [int(x) for x in re.split(r":(\d+):(\d+):", warning, 1)[1:3]]


def read_text_file(path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ParseError(path, f"cannot read the file: {exc.strerror}") from None
    if b"\x00" in raw[:65536]:
        raise ParseError(path, "this is a binary file (a .caffemodel?), not a text prototxt; give the net "
                               "definition, and the weights with --weights")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SOLVER_ONLY = {f.name for f in caffe_pb2.SolverParameter.DESCRIPTOR.fields} - {
    f.name for f in caffe_pb2.NetParameter.DESCRIPTOR.fields}


def read_net(path, text: str | None = None) -> ReadResult:
    """Read a net definition file into an upgraded V2 ``NetParameter``.

    Accepts a NetParameter (V2 or V1) or a SolverParameter holding ``net_param`` (or
    ``net``/``test_net`` naming a file beside it).
    """
    path = str(path)
    if text is None:
        text = read_text_file(path)
    else:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    warnings: list = []
    stripped: list = []
    net = caffe_pb2.NetParameter()
    try:
        parse_text(text, net, path, warnings, stripped)
    except ParseError as exc:
        m = re.search(r'Message type "caffe.NetParameter" has no field named "(\w+)"', exc.detail)
        if not (m and m.group(1) in _SOLVER_ONLY):
            raise
        warnings.clear()
        stripped.clear()
        solver = parse_text(text, caffe_pb2.SolverParameter(), path, warnings, stripped)
        if solver.HasField("net_param"):
            net = solver.net_param
        elif solver.HasField("train_net_param"):
            net = solver.train_net_param
        else:
            ref = solver.net or solver.train_net
            if not ref:
                raise ParseError(path, "this solver file names no net (net_param, net or train_net); "
                                 "give the net's own prototxt instead") from None
            ref_path = ref if os.path.isabs(ref) else os.path.join(os.path.dirname(path), ref)
            if not os.path.exists(ref_path):
                raise ParseError(path, f"this solver file names the net '{ref}', which is not at "
                                 f"{ref_path}; give the net's own prototxt instead") from None
            inner = read_net(ref_path)
            inner.warnings[:0] = warnings
            return inner
    fork, fork_warnings = _fork_fields_by_layer(stripped, max(len(net.layer), len(net.layers)), warnings)
    fmt = "V2"
    if len(net.layers):
        fmt = "V1"
        if len(net.layer):
            raise ParseError(path, "the file mixes V2 'layer {}' and V1 'layers {}' entries; use one kind")
        if needs_v0_upgrade(net):
            fmt = "V0"
            net, kept = upgrade_v0(net, path, warnings)
            fork = [fork[i] for i in kept] if len(fork) > max(kept, default=-1) else [{} for _ in kept]
            fork_warnings = [fork_warnings[i] for i in kept] if len(fork_warnings) > max(kept, default=-1) \
                else [{} for _ in kept]
        net = upgrade_v1(net, path)
    if upgrade_inputs(net, path):
        fork.insert(0, {})
        fork_warnings.insert(0, {})
    upgrade_types(net)
    return ReadResult(net=net, path=path, warnings=warnings, format=fmt, fork_fields=fork,
                      fork_warnings=fork_warnings)


def _fork_fields_by_layer(stripped, n_layers, warnings):
    """Map the fork fields blanked out of the text to the layers whose blocks held them:
    ``(fields, notes)``, a ``{key: value text}`` and a ``{key: warning}`` per layer.  The
    key is the field's name for a field of the layer itself, ``Message.name`` deeper down.
    Warnings of fields outside any layer go to ``warnings`` at once."""
    out = [{} for _ in range(n_layers)]
    notes = [{} for _ in range(n_layers)]
    if not stripped:
        return out, notes
    blocks = stripped[-1][3]
    for offset, owner, name, value, note in stripped[:-1]:
        for i, (a, b) in enumerate(blocks if len(blocks) == n_layers else ()):
            if a <= offset < b:
                key = name if owner in ("caffe.LayerParameter", "caffe.V1LayerParameter") else \
                    f"{owner.split('.')[-1]}.{name}"
                out[i][key] = value
                if note:
                    notes[i][key] = note
                break
        else:
            if note:
                warnings.append(note)
    return out, notes


# ---- upgrades --------------------------------------------------------------------------

V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling",
    "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

_V2_MESSAGE_FIELDS = {f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields
                      if f.message_type is not None}


def upgrade_v1(net, path):
    """V1 ``layers {}`` to V2 ``layer {}``, as Caffe's UpgradeV1Net does."""
    if needs_v0_upgrade(net):
        net = upgrade_v0(net, path)[0]
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    enum = caffe_pb2.V1LayerParameter.LayerType
    for v1 in net.layers:
        lp = out.layer.add()
        lp.name = v1.name
        lp.type = V1_TYPES.get(enum.Name(v1.type), enum.Name(v1.type))
        lp.bottom.extend(v1.bottom)
        lp.top.extend(v1.top)
        for rule in v1.include:
            lp.include.add().CopyFrom(rule)
        for rule in v1.exclude:
            lp.exclude.add().CopyFrom(rule)
        lp.loss_weight.extend(v1.loss_weight)
        for b in v1.blobs:
            lp.blobs.add().CopyFrom(b)
        n = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
        for i in range(n):
            spec = lp.param.add()
            if i < len(v1.param):
                spec.name = v1.param[i]
            if i < len(v1.blob_share_mode):
                spec.share_mode = v1.blob_share_mode[i]
            if i < len(v1.blobs_lr):
                spec.lr_mult = v1.blobs_lr[i]
            if i < len(v1.weight_decay):
                spec.decay_mult = v1.weight_decay[i]
        for fd, value in v1.ListFields():
            if fd.message_type is not None and fd.name.endswith("_param") and fd.name in _V2_MESSAGE_FIELDS:
                getattr(lp, fd.name).CopyFrom(value)
    return out


def upgrade_inputs(net, path):
    """``input:`` + ``input_dim:``/``input_shape {}`` become a leading Input layer named
    "input", as Caffe's UpgradeNetInput does."""
    if not len(net.input):
        if len(net.input_dim) or len(net.input_shape):
            raise ParseError(path, "input_dim/input_shape are given without any 'input:' name")
        return False
    inp = caffe_pb2.LayerParameter(name="input", type="Input")
    n = len(net.input)
    if len(net.input_shape):
        if len(net.input_shape) != n:
            raise ParseError(path, f"{n} inputs but {len(net.input_shape)} input_shape entries; give one per input")
        shapes = [list(s.dim) for s in net.input_shape]
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * n:
            raise ParseError(path, f"{n} inputs need {4 * n} input_dim values, not {len(net.input_dim)}")
        shapes = [list(net.input_dim[4 * i:4 * i + 4]) for i in range(n)]
    else:
        raise ParseError(path, "the net names inputs ('input:') but gives no input_shape or input_dim")
    for name, dims in zip(net.input, shapes):
        inp.top.append(name)
        inp.input_param.shape.add().dim.extend(dims)
    layers = list(net.layer)
    del net.layer[:]
    net.layer.add().CopyFrom(inp)
    for lp in layers:
        net.layer.add().CopyFrom(lp)
    del net.input[:]
    del net.input_dim[:]
    del net.input_shape[:]
    return True


def upgrade_types(net):
    """The per-type upgrades of Caffe's ``upgrade_proto`` (``LayerType.upgrade``)."""
    from .layers import lookup

    for lp in net.layer:
        cls = lookup(lp.type)
        if cls is not None:
            cls.upgrade(lp)


# ---- filtering -------------------------------------------------------------------------

def make_state(net, phase=TEST, stages=None, level=None):
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    state.phase = phase
    if stages is not None:
        del state.stage[:]
        state.stage.extend(stages)
    if level is not None:
        state.level = level
    return state


def meets_rule(state, rule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    if any(s in state.stage for s in rule.not_stage):
        return False
    return True


def filter_net(net, state):
    """The indices of the layers Caffe keeps for ``state`` (Net::FilterNet)."""
    kept = []
    for index, lp in enumerate(net.layer):
        if len(lp.include) and len(lp.exclude):
            raise NetError("give either include or exclude rules, not both", layer=lp.name, layer_type=lp.type)
        included = len(lp.include) == 0
        if any(meets_rule(state, r) for r in lp.exclude):
            included = False
        if any(meets_rule(state, r) for r in lp.include):
            included = True
        if included:
            kept.append(index)
    return kept
