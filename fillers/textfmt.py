"""Plain-text tables for the command line's output (the fill table, the signal report)."""

from __future__ import annotations


def table(rows, headers, right=()) -> str:
    """``rows`` (lists of strings) under ``headers`` with a rule, columns padded to their
    widest cell; the columns in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(r):
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
