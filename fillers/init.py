"""Caffe's fillers as functions (like ``torch.nn.init``): shape in (Caffe's axis order),
new float32 array out.

One core, :func:`variance_scaling`, holds the fan-based math; ``xavier`` and ``msra`` are
settings of it.  ``constant``, ``uniform``, ``gaussian``, ``positive_unitball`` and
``bilinear`` are the rest of Caffe's ``filler.hpp``.  :data:`FILLERS` is the one
vocabulary of filler names (the API's :func:`fill`, the command line's ``--filler`` and
``--bias-filler``); :func:`filler_params` reads a filler given as a ``FillerParameter``, a
dict of its fields, or the compact text ``"gaussian:std=0.01,mean=0"``.

Every random filler takes ``rng``: ``None`` (a fresh :class:`~fillers.rng.FastRNG`), an
int seed (a FastRNG), a numpy ``Generator``, a ``FastRNG`` or a
:class:`~fillers.rng.CaffeRNG`.  With a CaffeRNG, a sequence of fills in Caffe's order
gives Caffe's values bit for bit, and draws exactly the words Caffe draws.

Where Caffe aborts (a failed CHECK), these functions raise
:class:`~fillers.fans.FillerError` (a ``ValueError``) before drawing anything:

* every filler but bilinear: the blob must not be empty (``CHECK(count)``);
* every filler but gaussian: ``sparse`` must be -1 ("Sparsity not supported");
* uniform: ``min <= max``; gaussian: ``std > 0``, ``sparse >= -1``, and with
  ``sparse >= 0`` a blob of at least one axis and ``sparse <= shape[0]`` (the Bernoulli
  probability ``sparse / shape[0]`` must not exceed 1);
* xavier, msra: Caffe master reads ``shape(0)``, so a blob with no axes aborts; Caffe
  1.0's legacy accessors abort beyond 4 axes;
* positive_unitball: at least one axis (master; 1.0 reads ``num()``);
* bilinear: exactly 4 axes and ``height == width``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .errors import FillerError
from .fans import (AVERAGE, FAN_IN, FAN_OUT, VARIANCE_NORMS, blob_count, blob_shape, check_caffe_version,
                   fan_in_fan_out, variance_norm_n, variance_norm_value)
from .rng import make_rng

__all__ = [
    "FillerError", "FILLER_DEFAULTS", "FILLERS", "constant", "uniform", "gaussian",
    "positive_unitball", "variance_scaling", "xavier", "msra", "bilinear", "orthogonal", "delta_orthogonal", "fill",
    "filler_params", "parse_compact", "describe", "fan_in_fan_out", "variance_norm_n", "FAN_IN", "FAN_OUT", "AVERAGE",
]

_F32 = np.float32

#: FillerParameter's defaults (caffe.proto), the one place fill() takes them from
FILLER_DEFAULTS = {
    "type": "constant", "value": 0.0, "min": 0.0, "max": 1.0, "mean": 0.0, "std": 1.0,
    "sparse": -1, "variance_norm": FAN_IN,
}
#: fields of this package's own fillers (orthogonal, delta_orthogonal), not in Caffe's
#: FillerParameter: given in the compact form (``orthogonal:gain=1.414``) or a dict
EXTRA_DEFAULTS = {"gain": 1.0}

#: scratch size of the positive_unitball row sums: values per piece, columns per piece
_SCRATCH = 1 << 20
_COLUMNS = 1 << 16


def _nonempty(shape, filler):
    dims = blob_shape(shape)
    count = blob_count(dims)
    if count == 0:
        raise FillerError(f"The {filler} filler cannot fill the empty blob {list(dims)} "
                          "(Caffe CHECKs that the count is non-zero).")
    return dims, count


def _sparse_unsupported(sparse, filler):
    if int(sparse) != -1:
        raise FillerError(f"The {filler} filler does not support sparse (got sparse: {int(sparse)}); "
                          "Caffe CHECKs sparse == -1 for every filler but gaussian.")


def constant(shape, value=0.0):
    """Caffe's ``constant`` filler: every value is ``value`` (as float32); draws nothing.

    Example:
        >>> constant((2, 3), 0.5)[0]
        array([0.5, 0.5, 0.5], dtype=float32)
    """
    dims, _ = _nonempty(shape, "constant")
    out = np.empty(dims, _F32)
    out.fill(_F32(value))
    return out


def uniform(shape, min=0.0, max=1.0, rng=None):
    """Caffe's ``uniform`` filler: ``x ~ U[min, max]``.

    Caffe samples ``[min, nextafterf(max))``: ``(float(u) / 2^32) * (max' - min) + min``
    in float32 (see :meth:`fillers.rng.CaffeRNG.uniform`), so ``max`` itself can occur.

    Example:
        >>> from fillers.rng import CaffeRNG
        >>> uniform((2,), -1, 1, rng=CaffeRNG(1701)).dtype
        dtype('float32')
    """
    dims, count = _nonempty(shape, "uniform")
    lo, hi = _F32(min), _F32(max)
    if not lo <= hi:
        raise FillerError(f"The uniform filler needs min <= max (Caffe CHECKs it), got min {lo} > max {hi}.")
    return make_rng(rng).uniform(count, lo, hi).reshape(dims)


def gaussian(shape, mean=0.0, std=1.0, sparse=-1, rng=None):
    """Caffe's ``gaussian`` filler: ``x ~ N(mean, std^2)``, optionally made sparse.

    Values are ``z * std + mean`` in float32.  With ``sparse >= 0``, a Bernoulli mask with
    ``p = float(sparse) / float(shape[0])`` is drawn after all the values (one word per
    value, none when ``sparse == 0``) and multiplied in, so each output keeps on average
    ``sparse`` non-zero inputs; dropped values become signed zeros, as in Caffe.
    """
    dims, count = _nonempty(shape, "gaussian")
    sparse = int(sparse)
    mean, std = _F32(mean), _F32(std)
    if not std > 0:
        raise FillerError(f"The gaussian filler needs std > 0 (Caffe CHECKs it), got std {std}.")
    if sparse < -1:
        raise FillerError(f"The gaussian filler needs sparse >= -1 (Caffe CHECKs it), got sparse {sparse}.")
    p = None
    if sparse >= 0:
        if not dims:
            raise FillerError("A sparse gaussian fill needs a blob with at least one axis "
                              "(Caffe CHECKs num_axes >= 1).")
        p = _F32(sparse) / _F32(dims[0])
        if not p <= 1:
            raise FillerError(f"A sparse gaussian fill needs sparse <= shape[0] (the probability "
                              f"{sparse}/{dims[0]} must not exceed 1; Caffe CHECKs it).")
    stream = make_rng(rng)
    values = stream.gaussian(count, mean, std)
    if p is not None:
        mask = stream.bernoulli(count, p)
        np.multiply(values, mask, out=values)
    return values.reshape(dims)


def positive_unitball(shape, rng=None, caffe_version="master"):
    """Caffe's ``positive_unitball`` filler: ``x ~ U[0, 1]``, then each row sums to 1.

    The blob is seen as ``shape[0]`` rows (Caffe 1.0: ``num()``) of ``count / rows``
    values; each row is divided by its sum, the sum taken in float32 from left to right
    (not pairwise, as ``np.sum`` would).
    """
    check_caffe_version(caffe_version)
    dims, count = _nonempty(shape, "positive_unitball")
    if caffe_version == "1.0":
        if len(dims) > 4:
            raise FillerError(f"Caffe 1.0's positive_unitball filler reads num(), which aborts for "
                              f"blobs of more than 4 axes; this blob has {len(dims)} ({list(dims)}).")
        rows = dims[0] if dims else 1
    else:
        if not dims:
            raise FillerError("Caffe master's positive_unitball filler reads shape(0), which aborts "
                              "for a blob with no axes.")
        rows = dims[0]
    out = make_rng(rng).uniform(count, 0.0, 1.0)
    _divide_rows_by_sequential_sums(out.reshape(rows, count // rows))
    return out.reshape(dims)


def _divide_rows_by_sequential_sums(a):
    """In place: ``a[i] /= sum(a[i])`` with the sum accumulated left to right in float32."""
    rows, dim = a.shape
    width = min(dim, _COLUMNS)
    row_block = max(1, _SCRATCH // width)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r0 in range(0, rows, row_block):
            block = a[r0:r0 + row_block]
            sums = None
            for j0 in range(0, dim, width):
                part = block[:, j0:j0 + width].copy()
                if sums is not None:
                    part[:, 0] += sums
                np.add.accumulate(part, axis=1, out=part)
                sums = part[:, -1].copy()
            block /= sums[:, None]


def variance_scaling(shape, scale=1.0, mode="FAN_IN", distribution="uniform", rng=None,
                     caffe_version="master"):
    """The fan-scaled core of xavier and msra: variance ``scale / n``.

    ``n`` is the float32 fan picked by ``mode`` (FAN_IN, FAN_OUT or AVERAGE, see
    :func:`fillers.fans.variance_norm_n`).  ``distribution="uniform"`` samples
    ``U[-s, s]`` with ``s = sqrtf(3 * scale / n)``; ``"normal"`` samples ``N(0, sigma^2)``
    with ``sigma = sqrtf(scale / n)``; both in float32 as Caffe computes them.
    ``xavier`` is ``variance_scaling(1, mode, "uniform")`` and ``msra`` is
    ``variance_scaling(2, mode, "normal")``.
    """
    mode = variance_norm_value(mode)
    if distribution not in ("uniform", "normal"):
        raise FillerError(f"distribution must be 'uniform' or 'normal', not {distribution!r}.")
    dims, count = _nonempty(shape, "xavier" if distribution == "uniform" else "msra")
    n = variance_norm_n(dims, mode, caffe_version)
    stream = make_rng(rng)
    if distribution == "uniform":
        s = np.sqrt(_F32(3.0 * scale) / n)
        return stream.uniform(count, -s, s).reshape(dims)
    sigma = np.sqrt(_F32(scale) / n)
    return stream.gaussian(count, 0.0, sigma).reshape(dims)


def xavier(shape, variance_norm="FAN_IN", rng=None, caffe_version="master"):
    """Caffe's ``xavier`` filler (Glorot & Bengio 2010): ``x ~ U[-s, s]``, ``s = sqrtf(3 / n)``.

    ``n`` is fan_in (default), fan_out or their average (``variance_norm``); fans as in
    :func:`fillers.fans.fan_in_fan_out`.
    """
    return variance_scaling(shape, 1.0, variance_norm, "uniform", rng, caffe_version)


def msra(shape, variance_norm="FAN_IN", rng=None, caffe_version="master"):
    """Caffe's ``msra`` filler (He et al. 2015): ``x ~ N(0, sigma^2)``, ``sigma = sqrtf(2 / n)``.

    ``n`` is fan_in (default), fan_out or their average (``variance_norm``).
    """
    return variance_scaling(shape, 2.0, variance_norm, "normal", rng, caffe_version)


def bilinear(shape, caffe_version="master"):
    """Caffe's ``bilinear`` filler: a bilinear upsampling kernel in every (n, c) slice.

    For a ``[N, C, K, K]`` blob, ``f = ceil(K / 2.)`` and the value at row y, column x is
    ``(1 - |x / f - c|) * (1 - |y / f - c|)`` in float32, with
    ``c = float((K - 1) / (2. * f))`` (master) or ``float((2f - 1 - f % 2) / (2. * f))``
    (Caffe 1.0; differs for K = 2, 3, 6, 7, ...).  Draws nothing.

    Example:
        >>> bilinear((1, 1, 4, 4))[0, 0, 0]
        array([0.0625, 0.1875, 0.1875, 0.0625], dtype=float32)
    """
    check_caffe_version(caffe_version)
    dims = blob_shape(shape)
    if len(dims) != 4:
        raise FillerError(f"The bilinear filler needs a blob of 4 axes (Caffe: 'Blob must be 4 dim'), "
                          f"got {list(dims)}.")
    if dims[2] != dims[3]:
        raise FillerError(f"The bilinear filler needs square kernels (Caffe: 'Filter must be square'), "
                          f"got height {dims[2]} and width {dims[3]}.")
    out = np.empty(dims, _F32)
    k = dims[3]
    if out.size == 0:
        return out
    f = math.ceil(k / 2.0)
    if caffe_version == "1.0":
        c = _F32((2 * f - 1 - f % 2) / (2.0 * f))
    else:
        c = _F32((k - 1) / (2.0 * f))
    x = np.arange(k, dtype=_F32)
    a = _F32(1) - np.abs(x / _F32(f) - c)
    out[...] = a[None, :] * a[:, None]
    return out


# --- FillerParameter dispatch ----------------------------------------------------------

def filler_params(filler):
    """A dict of the 8 FillerParameter fields from a message-like object, a dict, or the
    compact text ``"TYPE"`` / ``"TYPE:key=value,..."`` (``"gaussian:std=0.01,mean=1"``,
    ``"xavier:variance_norm=AVERAGE"``).

    Missing keys take FillerParameter's defaults; unknown keys are an error, and so is a
    type that is not in :data:`FILLERS`.  Floats become float32 (as the proto stores them)
    and ``variance_norm`` its enum int.

    Example:
        >>> p = filler_params("gaussian:std=0.01")
        >>> p["type"], float(p["std"]), p["sparse"]
        ('gaussian', 0.009999999776482582, -1)
    """
    if isinstance(filler, str):
        filler = parse_compact(filler)
    if isinstance(filler, Mapping):
        unknown = sorted(set(filler) - set(FILLER_DEFAULTS) - set(EXTRA_DEFAULTS))
        if unknown:
            raise FillerError(f"Unknown FillerParameter field(s) {', '.join(map(repr, unknown))}; "
                              f"the fields are {', '.join(FILLER_DEFAULTS)}.")
        raw = {**FILLER_DEFAULTS, **EXTRA_DEFAULTS, **filler}
    else:
        raw = {k: getattr(filler, k, d) for k, d in {**FILLER_DEFAULTS, **EXTRA_DEFAULTS}.items()}
    p = {"type": str(raw["type"])}
    if p["type"] not in FILLERS:
        raise FillerError(f"Unknown filler type {p['type']!r}; the known types are {', '.join(FILLERS)}.")
    ours = ("gain",) if p["type"] in ("orthogonal", "delta_orthogonal") else ()
    for k in ("value", "min", "max", "mean", "std") + ours:
        try:
            p[k] = _F32(raw[k])
        except (TypeError, ValueError):
            raise FillerError(f"The filler field {k}={raw[k]!r} is not a number.") from None
    try:
        p["sparse"] = int(raw["sparse"])
    except (TypeError, ValueError):
        raise FillerError(f"The filler field sparse={raw['sparse']!r} is not an integer.") from None
    p["variance_norm"] = variance_norm_value(raw["variance_norm"])
    return p


def parse_compact(text: str) -> dict:
    """``"TYPE:k=v,k=v"`` to ``{"type": TYPE, k: v, ...}`` (values still text)."""
    kind, _, rest = text.partition(":")
    out = {"type": kind.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, sep, v = item.partition("=")
        if not sep:
            raise FillerError(f"The filler option {item!r} is not of the form key=value.")
        out[k.strip()] = v.strip()
    return out


def describe(filler) -> str:
    """A short text for a filler: ``xavier(FAN_IN)``, ``gaussian(0,0.01)``, ``constant(0)``.

    ``None`` (a blob set to zero without a filler) is ``zero``."""
    if filler is None:
        return "zero"
    p = filler_params(filler)
    t = p["type"]
    norm = next(k for k, v in VARIANCE_NORMS.items() if v == p["variance_norm"])
    if t == "constant":
        return f"constant({p['value']:g})"
    if t == "uniform":
        return f"uniform({p['min']:g},{p['max']:g})"
    if t == "gaussian":
        return f"gaussian({p['mean']:g},{p['std']:g})" + (f",sparse={p['sparse']}" if p["sparse"] >= 0 else "")
    if t in ("xavier", "msra"):
        return f"{t}({norm})"
    if t in ("orthogonal", "delta_orthogonal"):
        return f"{t}(gain={p['gain']:g})"
    return t


def _fill_constant(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "constant")
    return constant(shape, p["value"])


def _fill_uniform(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "uniform")
    return uniform(shape, p["min"], p["max"], rng)


def _fill_gaussian(shape, p, rng, version):
    return gaussian(shape, p["mean"], p["std"], p["sparse"], rng)


def _fill_unitball(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "positive_unitball")
    return positive_unitball(shape, rng, version)


def _fill_xavier(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "xavier")
    return xavier(shape, p["variance_norm"], rng, version)


def _fill_msra(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "msra")
    return msra(shape, p["variance_norm"], rng, version)


def _fill_bilinear(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "bilinear")
    return bilinear(shape, version)


#: filler type -> ``fn(shape, params, rng, caffe_version)``, in filler.hpp's order
def orthogonal(shape, gain=1.0, rng=None):
    """Saxe et al. (2013): an orthogonal matrix times ``gain``, as ``torch.nn.init.orthogonal_``.

    The blob is seen as a ``shape[0] x (count / shape[0])`` matrix (Caffe's fan_in axes);
    a Gaussian matrix drawn from ``rng`` (``count`` values, so a CaffeRNG's stream moves as
    for a gaussian fill) is orthonormalized by QR (signs fixed by ``R``'s diagonal, so the
    result is Haar-distributed), in float64: the rows are orthonormal when there are no
    more rows than columns, else the columns.  Not a Caffe filler (Caffe aborts on it).

    Example:
        >>> w = orthogonal((4, 2, 3, 3), rng=0).reshape(4, -1)
        >>> bool(np.allclose(w @ w.T, np.eye(4), atol=1e-5))
        True
    """
    dims, count = _nonempty(shape, "orthogonal")
    if not dims:
        raise FillerError("The orthogonal filler needs a blob with at least one axis.")
    rows = dims[0]
    cols = count // rows
    a = make_rng(rng).gaussian(count, 0.0, 1.0).astype(np.float64).reshape(rows, cols)
    q = _orthonormal(a)
    return (q * float(_F32(gain))).astype(_F32).reshape(dims)


def _orthonormal(a):
    """The Q of ``a``'s QR with ``sign(diag(R))`` folded in, for tall or wide ``a``."""
    wide = a.shape[0] < a.shape[1]
    m = a.T if wide else a
    q, r = np.linalg.qr(m)
    q = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
    return q.T if wide else q


def delta_orthogonal(shape, gain=1.0, rng=None):
    """Xiao et al. (2018): a convolution kernel that is zero but at its centre tap, where
    the ``out x in`` matrix is orthogonal (times ``gain``); the signal then passes a deep
    CNN as through an orthogonal linear map.  ``shape`` is ``[out, in, k...]`` (a 2-axis
    blob is simply orthogonal); ``in`` must not exceed ``out`` (the columns must be
    orthonormal).  The centre of a side of even size k is ``k // 2``.  Draws ``out * in``
    Gaussian values.

    Example:
        >>> w = delta_orthogonal((4, 2, 3, 3), rng=0)
        >>> bool((w[:, :, 1, 1] != 0).all()) and float(np.abs(w).sum() - np.abs(w[:, :, 1, 1]).sum())
        0.0
    """
    dims, _ = _nonempty(shape, "delta_orthogonal")
    if len(dims) < 2:
        raise FillerError(f"The delta_orthogonal filler needs a blob [out, in, k...], got {list(dims)}.")
    if len(dims) == 2:  # no spatial taps: a plain orthogonal matrix
        return orthogonal(dims, gain, rng)
    out_c, in_c = dims[0], dims[1]
    if in_c > out_c:
        raise FillerError(f"The delta_orthogonal filler needs in channels <= out channels (an orthogonal "
                          f"centre tap has orthonormal columns only then); this blob {list(dims)} has "
                          f"{in_c} in and {out_c} out.")
    centre = orthogonal((out_c, in_c), gain, rng)
    w = np.zeros(dims, _F32)
    w[(slice(None), slice(None)) + tuple(k // 2 for k in dims[2:])] = centre
    return w


def _fill_orthogonal(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "orthogonal")
    return orthogonal(shape, p["gain"], rng)


def _fill_delta_orthogonal(shape, p, rng, version):
    _sparse_unsupported(p["sparse"], "delta_orthogonal")
    return delta_orthogonal(shape, p["gain"], rng)


FILLERS = {
    "constant": _fill_constant,
    "gaussian": _fill_gaussian,
    "positive_unitball": _fill_unitball,
    "uniform": _fill_uniform,
    "xavier": _fill_xavier,
    "msra": _fill_msra,
    "bilinear": _fill_bilinear,
    # not Caffe's: the fillers the signal-propagation analysis calls for
    "orthogonal": _fill_orthogonal,
    "delta_orthogonal": _fill_delta_orthogonal,
}


def fill(shape, filler, rng=None, caffe_version="master"):
    """Fill a new float32 blob of ``shape`` as Caffe's ``GetFiller(filler)->Fill`` does.

    Args:
        shape: the blob shape, in Caffe's axis order.
        filler: a ``caffe_pb2.FillerParameter`` (or any object with its fields) or a dict
            of its fields (missing ones take the proto defaults: constant 0, min 0, max 1,
            mean 0, std 1, sparse -1, variance_norm FAN_IN).
        rng: the random stream (see the module docstring); unused by constant/bilinear.
        caffe_version: ``"master"`` or ``"1.0"`` (fan axes, unitball rows, bilinear centre).

    Raises:
        FillerError: an unknown type, or a fill Caffe would abort on.
    """
    check_caffe_version(caffe_version)
    p = filler_params(filler)
    return FILLERS[p["type"]](shape, p, rng, caffe_version)
