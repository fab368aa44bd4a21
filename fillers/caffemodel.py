""".caffemodel files: a binary ``NetParameter`` whose layers carry their ``blobs``.

Writing streams each blob's float32 data straight from its numpy array into the file
(protobuf's per-element conversion would be slow and double the memory), through a
temporary file renamed into place, so a failed or interrupted write never leaves a partial
file.  Reading parses the wire format directly and maps packed float data with
``np.frombuffer`` (no copy); V1 files (``layers {}``, blobs with num/channels/height/
width) are read too.
"""

from __future__ import annotations

import os
import struct
import sys

import numpy as np

from . import caffe_pb2
from .atomic import atomic_path
from .wire import fields as _fields, key as _key, read_varint as _read_varint, varint as _varint
from .errors import ParseError

_LITTLE = sys.byteorder == "little"


def _blob_parts(arr: np.ndarray):
    """(header bytes, data buffer) of one BlobProto: ``shape`` then packed ``data``."""
    shape = caffe_pb2.BlobProto()
    shape.shape.dim.extend(int(d) for d in arr.shape)
    head = shape.SerializeToString()
    data = np.ascontiguousarray(arr, dtype="<f4")
    nbytes = data.size * 4
    head += _key(5, 2) + _varint(nbytes)
    return head, data


def layer_params_for_file(net, keep_blobs: bool = False):
    """The filtered LayerParameters to write (without blobs)."""
    out = []
    for layer in net.layers:
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer.lp)
        if not keep_blobs:
            del lp.blobs[:]
        out.append(lp)
    return out


def write_caffemodel(path, net, blobs: dict, *, progress=None) -> int:
    """Write ``blobs`` (``{layer name: [arrays]}``) for ``net`` to ``path`` atomically.

    Returns the number of bytes written.
    """
    head = caffe_pb2.NetParameter(name=net.name or "")
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        b = head.SerializeToString()
        fh.write(b)
        written += len(b)
        for lp, layer in zip(layer_params_for_file(net), net.layers):
            arrays = blobs.get(layer.name, [])
            lbytes = lp.SerializeToString()
            parts = [_blob_parts(a) for a in arrays]
            blob_entries = []
            total = len(lbytes)
            for h, d in parts:
                size = len(h) + d.size * 4
                prefix = _key(7, 2) + _varint(size)
                blob_entries.append((prefix, h, d))
                total += len(prefix) + size
            chunk = _key(100, 2) + _varint(total) + lbytes
            fh.write(chunk)
            written += len(chunk)
            for prefix, h, d in blob_entries:
                fh.write(prefix)
                fh.write(h)
                fh.write(memoryview(d).cast("B"))
                written += len(prefix) + len(h) + d.size * 4
            if progress is not None:
                progress(layer.name)
    return written


# ---- reading ---------------------------------------------------------------------------

def _parse_blob(buf, start, end):
    legacy = {}
    dims = None
    floats = []
    doubles = []
    for field, wire, v in _fields(buf, start, end):
        if field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = v
        elif field == 5:
            if wire == 2:
                floats.append(np.frombuffer(buf, dtype="<f4", count=(v[1] - v[0]) // 4, offset=v[0]))
            else:
                floats.append(np.frombuffer(bytes(v), dtype="<f4"))
        elif field == 8:
            if wire == 2:
                doubles.append(np.frombuffer(buf, dtype="<f8", count=(v[1] - v[0]) // 8, offset=v[0]))
            else:
                doubles.append(np.frombuffer(bytes(v), dtype="<f8"))
        elif field == 7 and wire == 2:
            dims = []
            for f2, w2, v2 in _fields(buf, v[0], v[1]):
                if f2 == 1 and w2 == 2:
                    j = v2[0]
                    while j < v2[1]:
                        d, j = _read_varint(buf, j)
                        dims.append(d)
                elif f2 == 1 and w2 == 0:
                    dims.append(v2)
    if dims is None:
        dims = [legacy.get(1, 0), legacy.get(2, 0), legacy.get(3, 0), legacy.get(4, 0)]
    if floats:
        data = floats[0] if len(floats) == 1 else np.concatenate(floats)
    elif doubles:
        data = (doubles[0] if len(doubles) == 1 else np.concatenate(doubles)).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if data.size != count:
        raise ValueError(f"blob of shape {dims} holds {data.size} values")
    return data.reshape(dims)


def read_caffemodel(path) -> dict:
    """``{layer name: [arrays]}`` from a .caffemodel (V2 or V1).

    Arrays are float32 views into the file's bytes (read-only).  A blob stored with the
    legacy num/channels/height/width fields comes back 4-d; the net's shape checks accept
    it where Caffe does.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            buf = fh.read()
    except OSError as exc:
        raise ParseError(path, f"cannot read the file: {exc.strerror}") from None
    layers: dict = {}
    try:
        for field, wire, v in _fields(buf, 0, len(buf)):
            if wire != 2 or field not in (100, 2):
                continue
            name_f, blob_f = (1, 7) if field == 100 else (4, 6)
            name, arrays = "", []
            for f2, w2, v2 in _fields(buf, v[0], v[1]):
                if f2 == name_f and w2 == 2:
                    name = bytes(buf[v2[0]:v2[1]]).decode("utf-8", "replace")
                elif f2 == blob_f and w2 == 2:
                    arrays.append(_parse_blob(buf, v2[0], v2[1]))
            layers[name] = arrays
    except (IndexError, ValueError, struct.error) as exc:
        raise ParseError(path, f"not a valid .caffemodel (binary NetParameter): {exc}") from None
    return layers
