""".caffemodel files: a binary ``NetParameter`` whose layers carry their ``blobs``.

Writing streams each blob's float32 data straight from its numpy array into the file
(protobuf's per-element conversion would be slow and double the memory), through a
temporary file renamed into place, so a failed or interrupted write never leaves a partial
file.

Reading memory-maps the file and walks the wire format by hand: the arrays are float32
views of the mapped file (no second copy in memory; the pages are read from the disk when
the data is used).  It reads what Caffe's ``ReadNetParamsFromBinaryFileOrDie`` +
``CopyTrainedLayersFrom`` read: V2 files (``layer``), V1 files (``layers``, blobs with the
legacy num/channels/height/width) and V0 files (``layers { layer { ... } }``); fields it
does not know, or known field numbers with another wire type (fork files), are skipped as
protobuf skips unknown fields.  A blob's shape follows ``Blob::FromProto``: the legacy
4-d dims when any of them is on the wire, else ``shape`` (none: zero axes, one value).
Problems are one-line :class:`ParseError`s: an empty, truncated, text or image file, a
blob whose data size disagrees with its shape.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from . import caffe_pb2
from .atomic import atomic_path
from .errors import ParseError
from .wire import I32, I64, LEN, VARINT, WireError, fields as _fields, key as _key, \
    read_varint as _read_varint, signed64 as _signed64, varint as _varint


def _number(message, field: str) -> int:
    return message.DESCRIPTOR.fields_by_name[field].number


# Wire field numbers, from the schema (caffe.proto).
NET_NAME = _number(caffe_pb2.NetParameter, "name")  # 1
NET_LAYER = _number(caffe_pb2.NetParameter, "layer")  # 100: V2 LayerParameter
NET_LAYERS = _number(caffe_pb2.NetParameter, "layers")  # 2: V1LayerParameter
LAYER_NAME = _number(caffe_pb2.LayerParameter, "name")  # 1
LAYER_BLOBS = _number(caffe_pb2.LayerParameter, "blobs")  # 7
V1_NAME = _number(caffe_pb2.V1LayerParameter, "name")  # 4
V1_BLOBS = _number(caffe_pb2.V1LayerParameter, "blobs")  # 6
V1_V0_LAYER = _number(caffe_pb2.V1LayerParameter, "layer")  # 1: a V0LayerParameter
V0_NAME = _number(caffe_pb2.V0LayerParameter, "name")  # 1
V0_BLOBS = _number(caffe_pb2.V0LayerParameter, "blobs")  # 50
BLOB_LEGACY = tuple(_number(caffe_pb2.BlobProto, f) for f in ("num", "channels", "height", "width"))  # 1..4
BLOB_DATA = _number(caffe_pb2.BlobProto, "data")  # 5: packed float
BLOB_SHAPE = _number(caffe_pb2.BlobProto, "shape")  # 7: BlobShape
BLOB_DOUBLE_DATA = _number(caffe_pb2.BlobProto, "double_data")  # 8: packed double
SHAPE_DIM = _number(caffe_pb2.BlobShape, "dim")  # 1: packed int64
MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes


def _blob_parts(arr: np.ndarray):
    """(header bytes, data buffer) of one BlobProto: ``shape`` then packed ``data``."""
    dims = np.shape(arr)
    data = np.ascontiguousarray(arr, dtype="<f4")  # (at least 1-d)
    shape = caffe_pb2.BlobProto()
    if dims:  # as Caffe's Blob::ToProto: a blob with no axes has no shape message
        shape.shape.dim.extend(int(d) for d in dims)
    head = shape.SerializeToString()
    nbytes = data.size * 4
    head += _key(BLOB_DATA, LEN) + _varint(nbytes)
    return head, data


def layer_params_for_file(net):
    """The filtered LayerParameters to write (without blobs)."""
    out = []
    for layer in net.layers:
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer.lp)
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
                prefix = _key(LAYER_BLOBS, LEN) + _varint(size)
                blob_entries.append((prefix, h, d))
                total += len(prefix) + size
            chunk = _key(NET_LAYER, LEN) + _varint(total) + lbytes
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

class LayerBlobs(list):
    """The arrays of one layer of a weights file, in Caffe's blob order.

    ``legacy[j]`` is true when blob ``j`` gave its shape with the legacy num/channels/
    height/width fields: Caffe's ``Blob::ShapeEquals`` then compares (num, channels,
    height, width) with the net blob's shape padded with leading 1s to 4 axes (a legacy
    ``1 1 1 N`` bias fits an ``(N,)`` blob); a blob with a ``shape`` must match exactly.
    """

    def __init__(self, arrays=(), legacy=()):
        super().__init__(arrays)
        self.legacy = list(legacy)


class WeightsFile(dict):
    """``{layer name: LayerBlobs}`` read from a .caffemodel.

    ``path`` is the file; ``layer_names`` lists every layer entry of the file in order,
    including those not read (``read_caffemodel(path, layers=...)``)."""

    path: str = ""
    layer_names: list = []


class TrainedWeights(dict):
    """``{net layer name: arrays}``: the layers whose blobs Caffe's
    ``CopyTrainedLayersFrom`` copies (every layer of the file that the net has, in the
    net's order), with what a caller reports:

    - ``copied``: those layer names, in the net's order (layers without parameters too);
    - ``filled``: the net's layers with parameters that the weights do not hold (filled);
    - ``ignored``: the weights' layer names that the net does not have (Caffe ignores them);
    - ``path``: the weights file (``None`` for a dict).
    """

    def __init__(self, items=(), copied=(), filled=(), ignored=(), path=None):
        super().__init__(items)
        self.copied = list(copied)
        self.filled = list(filled)
        self.ignored = list(ignored)
        self.path = path


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"RIFF", "a RIFF (WebP/WAV/AVI) file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Caffe's .caffemodel.h5 format, which fill-net does not read; "
                           "save the weights as a binary .caffemodel)"),
    (b"PK\x03\x04", "a zip archive (an .npz?)"), (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"BZh", "a bzip2-compressed file (decompress it first)"), (b"\xfd7zXZ\x00", "an xz-compressed file "
                                                                                 "(decompress it first)"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"\x7fELF", "an executable (ELF)"), (b"%PDF", "a PDF document"),
]

_TEXT_CONTROL = bytes(set(range(32)) - {9, 10, 11, 12, 13}) + b"\x7f"


def _looks_like_text(sample: bytes, complete: bool) -> bool:
    if not sample or any(c in _TEXT_CONTROL for c in sample):
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return not complete and exc.start >= len(sample) - 3  # a character cut by the sample's end
    return True


def _map(path):
    """The file's bytes: a read-only memory map (a plain read for what cannot be mapped)."""
    try:
        with open(path, "rb") as fh:
            try:
                size = os.fstat(fh.fileno()).st_size
                if size > 0:
                    return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                pass
            return fh.read()  # an empty file, a pipe, ...
    except OSError as exc:
        raise ParseError(path, f"cannot read the file: {exc.strerror or exc}") from None


def _sniff(path, buf):
    """One-line errors for what is plainly not a .caffemodel."""
    if len(buf) == 0:
        raise ParseError(path, "the file is empty; --weights takes a binary .caffemodel (as Caffe or fill-net -o "
                               "writes it)")
    head = bytes(buf[:16])
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise ParseError(path, f"this is {what}, not a .caffemodel (a binary NetParameter)")
    sample = bytes(buf[:4096])
    if _looks_like_text(sample, complete=len(buf) <= 4096):
        import re

        proto = re.search(rb"(^|\s)(layers?|input|name|net_param|input_dim)\s*[:{]", sample)
        what = "a text prototxt (a net definition)" if proto else "a text file"
        raise ParseError(path, f"this is {what}, not a binary .caffemodel; --weights takes the trained weights "
                               "(.caffemodel), the prototxt is the first argument")


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _shown(name: str, limit: int = 60) -> str:
    """A layer name for a one-line message: control characters escaped, long ones cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return out if len(out) <= limit else out[:limit] + "..."


def _layer_entry(path, buf, field, span):
    """(name, [blob spans]) of one ``layer`` (V2) or ``layers`` (V1/V0) entry.

    Fields other than the name and the blobs, and those two numbers with another wire
    type (a fork's reuse of the number), are skipped.  A V1 entry holding a V0 ``layer``
    takes its name and blobs from it, as Caffe's V0 upgrade does."""
    start, end = span
    name_f, blobs_f = (LAYER_NAME, LAYER_BLOBS) if field == NET_LAYER else (V1_NAME, V1_BLOBS)
    name, blobs, v0 = None, [], []
    try:
        for f, w, v in _fields(buf, start, end):
            if w != LEN:
                continue
            if f == name_f:
                name = _text(buf, v)
            elif f == blobs_f:
                blobs.append(v)
            elif field == NET_LAYERS and f == V1_V0_LAYER:
                v0.append(v)
        if v0:
            name, blobs = None, []
            for sub in v0:
                for f, w, v in _fields(buf, *sub):
                    if w == LEN and f == V0_NAME:
                        name = _text(buf, v)
                    elif w == LEN and f == V0_BLOBS:
                        blobs.append(v)
    except WireError as exc:
        named = f" (layer '{_shown(name)}')" if name is not None else ""
        raise ParseError(path, f"not a valid .caffemodel: the layer entry at byte {start}{named} is malformed: "
                               f"{exc}") from None
    return name or "", blobs


def _walk(path, buf):
    """[(name, [blob spans])] of the file's layer entries, in order."""
    entries = []
    kinds = set()
    try:
        for field, wire, v in _fields(buf, 0, len(buf)):
            if wire == LEN and field in (NET_LAYER, NET_LAYERS):
                entries.append(_layer_entry(path, buf, field, v))
                kinds.add(field)
    except WireError as exc:
        looks_right = entries or bytes(buf[:1]) in (b"\x0a", b"\x12", b"\xa2")
        if exc.truncated and looks_right:
            raise ParseError(path, f"the file is truncated after {len(entries)} complete layer(s) "
                                   f"({len(buf)} bytes; {exc})") from None
        raise ParseError(path, f"not a .caffemodel (a binary NetParameter): {exc}") from None
    if not entries:
        hint = " (an ONNX model?)" if bytes(buf[:1]) == b"\x08" else ""
        raise ParseError(path, f"not a .caffemodel{hint}: it holds no layers (a binary NetParameter has "
                               "'layer' or 'layers' entries)")
    return entries


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _read_blob(path, buf, span, layer, j):
    """(array, legacy) of one BlobProto, as Caffe's ``Blob::FromProto(proto, reshape=true)``."""
    where = f"layer '{_shown(layer)}' blob {j}"
    legacy = [None] * 4
    dims = []
    floats, doubles = [], []  # (offset, count) of packed runs, or one value's bytes
    try:
        for f, w, v in _fields(buf, *span):
            if w == VARINT and f in BLOB_LEGACY:
                legacy[BLOB_LEGACY.index(f)] = _signed32(v)
            elif f == BLOB_DATA and w in (LEN, I32):
                floats.append(v)
            elif f == BLOB_DOUBLE_DATA and w in (LEN, I64):
                doubles.append(v)
            elif f == BLOB_SHAPE and w == LEN:  # repeated occurrences merge: dims append
                for f2, w2, v2 in _fields(buf, *v):
                    if f2 != SHAPE_DIM:
                        continue
                    if w2 == VARINT:
                        dims.append(_signed64(v2))
                    elif w2 == LEN:
                        k = v2[0]
                        while k < v2[1]:
                            d, k = _read_varint(buf, k, v2[1])
                            dims.append(_signed64(d))
    except WireError as exc:
        raise ParseError(path, f"not a valid .caffemodel: {where} is malformed: {exc}") from None
    is_legacy = any(x is not None for x in legacy)
    shape = tuple(x or 0 for x in legacy) if is_legacy else tuple(dims)
    if len(shape) > MAX_BLOB_AXES:
        raise ParseError(path, f"{where} has {len(shape)} axes; Caffe allows at most {MAX_BLOB_AXES}")
    if any(d < 0 for d in shape):
        raise ParseError(path, f"{where} has a negative dimension: {list(shape)}")
    count = 1
    for d in shape:
        count *= d
    runs, size, dtype = (doubles, 8, "<f8") if doubles else (floats, 4, "<f4")
    parts = []
    held = 0
    for r in runs:
        if isinstance(r, tuple):
            nbytes = r[1] - r[0]
            if nbytes % size:
                raise ParseError(path, f"not a valid .caffemodel: {where} holds packed {dtype[1:]} data of "
                                       f"{nbytes} bytes, not a multiple of {size}")
            parts.append((r[0], nbytes // size))
            held += nbytes // size
        else:
            parts.append(r)
            held += 1
    if held != count:
        kind = "double_data" if doubles else "data"
        raise ParseError(path, f"{where}: its shape {list(shape)} needs {count} value(s), the file holds {held} "
                               f"({kind})")
    arrays = [np.frombuffer(buf, dtype=dtype, count=p[1], offset=p[0]) if isinstance(p, tuple)
              else np.frombuffer(p, dtype=dtype) for p in parts]
    if not arrays:
        data = np.zeros(0, dtype)
    elif len(arrays) == 1:
        data = arrays[0]
    else:
        data = np.concatenate(arrays)
    if doubles:
        data = data.astype(np.float32)  # Caffe converts double_data to the net's float
    return data.reshape(shape), is_legacy


def read_caffemodel(path, layers=None) -> WeightsFile:
    """``{layer name: LayerBlobs}`` from a .caffemodel (V2, V1 or V0).

    The arrays are float32 read-only views of the memory-mapped file (``double_data`` is
    converted).  Shapes follow Caffe's ``Blob::FromProto``: a blob stored with the legacy
    num/channels/height/width fields comes back 4-d (``LayerBlobs.legacy`` tells which);
    a blob with neither legacy fields nor ``shape`` has zero axes and one value.

    ``layers`` (a set of names) limits the blobs read and checked to those layers, as
    Caffe's ``CopyTrainedLayersFrom`` only looks at the layers the net has; the file's
    structure is checked whole.  A later entry with the same name replaces an earlier one.
    """
    path = os.fspath(path)
    buf = _map(path)
    _sniff(path, buf)
    entries = _walk(path, buf)
    out = WeightsFile()
    out.path = path
    out.layer_names = [name for name, _ in entries]
    for name, spans in entries:
        if layers is not None and name not in layers:
            continue
        arrays, flags = [], []
        for j, span in enumerate(spans):
            arr, legacy = _read_blob(path, buf, span, name, j)
            arrays.append(arr)
            flags.append(legacy)
        out[name] = LayerBlobs(arrays, flags)
    return out
