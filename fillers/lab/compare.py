"""Several fillers on the same net, the same inputs and the same diffs, side by side.

``parse_fillers("xavier,msra,gaussian:std=0.01,mean=0")`` splits a ``--compare`` list: an
item with ``=`` but no ``:`` (``mean=0``) is an option of the filler before it, so commas
may separate both fillers and a filler's options; ``;`` (or repeating ``--compare``)
separates fillers unambiguously.
"""

from __future__ import annotations

import json

from ..textfmt import table
from .report import _fmt


def parse_fillers(texts) -> list:
    """The fillers of one or more ``--compare`` values, in order, in compact form."""
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for text in texts:
        for group in text.split(";"):
            items = [s.strip() for s in group.split(",") if s.strip()]
            for item in items:
                if "=" in item and ":" not in item and out and out[-1] is not None:
                    out[-1] += ("," if ":" in out[-1] else ":") + item
                else:
                    out.append(item)
    return out


def compare_text(reports) -> str:
    """The reports' rows side by side: per filler, the output's std and the gradient's std."""
    if not reports:
        return ""
    base = reports[0]
    head = ["depth", "layer", "type"]
    for r in reports:
        head += [f"{r.label} std", f"{r.label} grad"]
    rows = []
    index = [{row.layer: row for row in r.rows} for r in reports]
    for row in base.rows:
        cells = [str(row.depth), row.layer, row.type]
        for rows_of in index:
            other = rows_of.get(row.layer)
            if other is None:
                cells += ["-", "-"]
                continue
            cells += [_fmt(other.std) + ("*" if other.fwd_mark else ""),
                      _fmt(other.grad_std) + ("*" if other.bwd_mark else "")]
        rows.append(cells)
    lines = [f"signal comparison: {base.net} (phase {base.phase}; the same inputs and diffs for each filler)",
             table(rows, head, right=set(range(3, len(head))) | {0})]
    for name in base.time_steps:
        for r in reports:
            norms = r.time_steps.get(name, [])
            if norms:
                lines.append(f"{r.label}: {name}: gradient norm at t = 0, {len(norms) // 2}, {len(norms) - 1}: "
                             f"{_fmt(norms[0])}, {_fmt(norms[len(norms) // 2])}, {_fmt(norms[-1])}")
    lines.append("* outside [1e-3, 1e3] times its start (std: the input's; grad: the output's)")
    for r in reports:
        lines.append(f"{r.label}: {r.summary()}")
    return "\n".join(lines)


def compare_json(reports) -> str:
    return json.dumps({"net": reports[0].net if reports else "", "fillers": [r.to_dict() for r in reports]},
                      indent=1)
