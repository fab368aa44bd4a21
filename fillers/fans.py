"""Caffe's fan rule, in one place: which counts xavier and msra divide by.

Caffe master (``filler.hpp`` since 2016)::

    fan_in  = count / shape(0)
    fan_out = num_axes > 1 ? count / shape(1) : count

Caffe 1.0 used the legacy accessors instead: ``fan_in = count / num()``,
``fan_out = count / channels()``, where a missing axis counts as 1 and a blob of more
than 4 axes aborts ("Cannot use legacy accessors on Blobs with > 4 axes").  The two agree
on blobs of 1 to 4 axes.  C++ integer division; the counts are positive here.

``variance_norm`` then picks the float32 ``n``: FAN_IN -> fan_in, FAN_OUT -> fan_out,
AVERAGE -> ``(fan_in + fan_out) / 2.0f`` (the int sum converted to float, then halved).
"""

from __future__ import annotations

import operator

import numpy as np

from .errors import FillerError

__all__ = [
    "FillerError", "FAN_IN", "FAN_OUT", "AVERAGE", "VARIANCE_NORMS", "CAFFE_VERSIONS",
    "blob_shape", "blob_count", "check_caffe_version", "variance_norm_value",
    "fan_in_fan_out", "variance_norm_n",
]

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2
#: FillerParameter.VarianceNorm, by name
VARIANCE_NORMS = {"FAN_IN": FAN_IN, "FAN_OUT": FAN_OUT, "AVERAGE": AVERAGE}
_NORM_ALIASES = {"FAN_AVG": AVERAGE}
CAFFE_VERSIONS = ("master", "1.0")


def blob_shape(shape):
    """``shape`` as a tuple of non-negative ints (an int means a 1-axis blob)."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise FillerError(f"A blob shape must be a sequence of ints, not {shape!r}.") from None
    if any(d < 0 for d in dims):
        raise FillerError(f"A blob shape cannot have negative dimensions: {list(dims)}.")
    return dims


def blob_count(shape):
    """The number of values of a blob: the product of its dims (1 for a blob with no axes)."""
    count = 1
    for d in blob_shape(shape):
        count *= d
    return count


def check_caffe_version(caffe_version):
    """``caffe_version`` if it is one this package knows, else a FillerError."""
    if caffe_version not in CAFFE_VERSIONS:
        raise FillerError(f"caffe_version must be one of {', '.join(map(repr, CAFFE_VERSIONS))}, "
                          f"not {caffe_version!r}.")
    return caffe_version


def variance_norm_value(variance_norm):
    """The enum int (0 FAN_IN, 1 FAN_OUT, 2 AVERAGE) of an int or a name (any case)."""
    if isinstance(variance_norm, str):
        key = variance_norm.upper()
        if key in VARIANCE_NORMS:
            return VARIANCE_NORMS[key]
        if key in _NORM_ALIASES:
            return _NORM_ALIASES[key]
    elif isinstance(variance_norm, (int, np.integer)) and not isinstance(variance_norm, bool):
        if int(variance_norm) in VARIANCE_NORMS.values():
            return int(variance_norm)
    raise FillerError(f"variance_norm must be FAN_IN (0), FAN_OUT (1) or AVERAGE (2), "
                      f"not {variance_norm!r}.")


def fan_in_fan_out(shape, caffe_version="master"):
    """``(fan_in, fan_out)`` of a blob, as Caffe's xavier and msra fillers compute them.

    master: ``fan_in = count // shape[0]``, ``fan_out = count // shape[1]`` (``count``
    for a 1-axis blob).  A blob with no axes has count 1 but no ``shape(0)``: master
    aborts there.  "1.0": ``count // num()``, ``count // channels()``, missing axes
    counting as 1; more than 4 axes abort.

    Raises:
        FillerError: where Caffe aborts, and for an empty blob (count 0, which every
            random filler CHECKs against first).
    """
    check_caffe_version(caffe_version)
    dims = blob_shape(shape)
    count = blob_count(dims)
    if caffe_version == "1.0":
        if len(dims) > 4:
            raise FillerError(
                f"Caffe 1.0 computes fans with the legacy num()/channels() accessors, which "
                f"abort for blobs of more than 4 axes; this blob has {len(dims)} ({list(dims)}).")
        num = dims[0] if len(dims) > 0 else 1
        channels = dims[1] if len(dims) > 1 else 1
    else:
        if not dims:
            raise FillerError("Caffe master reads shape(0) for the fans, which aborts for a blob "
                              "with no axes (a scalar blob); use caffe_version='1.0' to treat it as 1.")
        num = dims[0]
        channels = dims[1] if len(dims) > 1 else 1
    if count == 0:
        raise FillerError(f"The blob {list(dims)} has no values, so it has no fans "
                          "(Caffe's fillers CHECK that the count is non-zero).")
    return count // num, count // channels


def variance_norm_n(shape, variance_norm="FAN_IN", caffe_version="master"):
    """The float32 ``n`` that xavier and msra divide by: fan_in, fan_out or their mean.

    AVERAGE is ``float(fan_in + fan_out) / 2.0f`` as in Caffe.
    """
    mode = variance_norm_value(variance_norm)
    fan_in, fan_out = fan_in_fan_out(shape, caffe_version)
    if mode == AVERAGE:
        return np.float32(fan_in + fan_out) / np.float32(2)
    return np.float32(fan_out if mode == FAN_OUT else fan_in)
