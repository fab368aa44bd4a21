"""Plots of signal reports (matplotlib, the ``lab`` extra: ``pip install 'caffe-fillers[lab]'``).

:func:`plot_reports` draws, per report (one line per filler): the std of each weight
layer's output against depth and the std of the gradient with respect to it (log y); for
recurrent nets a third panel, the gradient's norm against the input's time step.
"""

from __future__ import annotations

import math

from ..errors import UsageError

EXTRA_HINT = "--plot needs matplotlib: pip install 'caffe-fillers[lab]'"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(EXTRA_HINT) from None
    return plt


def _series(rep):
    """Depth, forward std and gradient std of the weight layers' outputs (the rows whose
    depth increases), positive values only (log scale)."""
    xs, fwd, bwd = [], [], []
    seen = set()
    for row in rep.rows:
        if row.wgrad_std is None or row.depth in seen:
            continue
        seen.add(row.depth)
        xs.append(row.depth)
        fwd.append(row.std if row.std and math.isfinite(row.std) and row.std > 0 else float("nan"))
        g = row.grad_std
        bwd.append(g if g and math.isfinite(g) and g > 0 else float("nan"))
    return xs, fwd, bwd


def plot_reports(reports, path, title=None, size=(11.0, 4.2), dpi=100) -> tuple:
    """Write the plot of ``reports`` (signal reports of one net) to ``path`` (PNG);
    returns its size in pixels ``(width, height)``."""
    plt = _pyplot()
    recurrent = any(r.time_steps for r in reports)
    n = 3 if recurrent else 2
    width = size[0] * (1.3 if recurrent else 1.0)
    fig, axes = plt.subplots(1, n, figsize=(width, size[1]), dpi=dpi)
    net = reports[0].net if reports else "net"
    fig.suptitle(title or f"{net}: signal propagation at initialization"
                 + (f" ({len(reports)} fillers, the same inputs and diffs)" if len(reports) > 1 else ""))
    ax_f, ax_b = axes[0], axes[1]
    for rep in reports:
        xs, fwd, bwd = _series(rep)
        label = rep.label or "prototxt fillers"
        ax_f.plot(xs, fwd, marker="o", markersize=3, label=label)
        ax_b.plot(xs, bwd, marker="o", markersize=3, label=label)
    ax_f.set_title("forward")
    ax_f.set_xlabel("depth (weight layers)")
    ax_f.set_ylabel("std of the layer's output")
    ax_b.set_title("backward")
    ax_b.set_xlabel("depth (weight layers)")
    ax_b.set_ylabel("std of the gradient w.r.t. the output")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_f, ax_b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if recurrent:
        ax_t = axes[2]
        for rep in reports:
            for name, norms in rep.time_steps.items():
                vals = [v if v > 0 else float("nan") for v in norms]
                label = (rep.label or "prototxt fillers") + (f" ({name})" if len(rep.time_steps) > 1 else "")
                ax_t.plot(range(len(vals)), vals, marker=".", label=label)
        ax_t.set_yscale("log")
        ax_t.set_title("through time")
        ax_t.set_xlabel("time step of the input")
        ax_t.set_ylabel("gradient norm w.r.t. the input")
        ax_t.grid(True, which="both", alpha=0.3)
        ax_t.legend(fontsize=8)
    fig.tight_layout()
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    w, h = fig.canvas.get_width_height()
    plt.close(fig)
    return w, h
