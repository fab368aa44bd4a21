"""Net-level initialization procedures: ``--filler`` values that are not per-blob fillers.

A per-blob filler (:data:`fillers.init.FILLERS`) makes a blob from its shape alone; a
procedure needs the whole net and a batch (LSUV runs the net forward).  The CLI's
``--filler`` vocabulary is ``FILLERS`` plus :data:`PROCEDURES`; :func:`fillers.netfill.fill_net`
hands a procedure's name to the procedure (``net.fill(filler="lsuv", ...)``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional

#: LSUV's defaults (--lsuv-base, --lsuv-tol, --lsuv-max-iter)
LSUV_DEFAULTS = {"base": "orthogonal", "tol": 0.1, "max_iter": 10}

#: name -> (one line of help, "module:function" taking ``(net, **fill options)``)
PROCEDURES = {
    "lsuv": ("not Caffe's: Mishkin & Matas 2015, a base filler (--lsuv-base, default orthogonal), then each "
             "weight layer rescaled until its output variance on the batch is within --lsuv-tol of 1",
             "fillers.lab.lsuv_init:fill_lsuv"),
}


def procedure_name(filler) -> Optional[str]:
    """The procedure a ``filler`` argument names (``"lsuv"``, ``{"type": "lsuv"}``), or None."""
    if isinstance(filler, str):
        kind = filler.partition(":")[0].strip()
    elif isinstance(filler, dict):
        kind = str(filler.get("type", ""))
    else:
        kind = str(getattr(filler, "type", "") or "")
    return kind if kind in PROCEDURES else None


def procedure_for(filler) -> Optional[Callable]:
    """The function that fills a whole net for a procedure name, or None for a per-blob filler."""
    name = procedure_name(filler)
    if name is None:
        return None
    module, _, func = PROCEDURES[name][1].partition(":")
    return getattr(importlib.import_module(module), func)
