"""Writing an ONNX model whose weights are numpy arrays: the weights go from numpy's memory
to the file without protobuf copies (streamed in protobuf's wire format), with external
data beyond protobuf's 2 GB, atomically, and checked with onnx's full checker."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np

from ..atomic import atomic_path, directory_lock, open_new, signals_raise
from ..errors import ExportError
from ..stream import write_array
from ..wire import key as _key, varint as _varint
from .lowering import FLOAT

#: initializer bytes above which the model is saved with external data (protobuf stops
#: at 2 GB; leave room for the graph itself).
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
# the wire numbers of the fields written by hand
_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data
_LENGTH_DELIMITED = 2


#: called as ``progress(done bytes, total bytes, tensor name)`` while weights are written
#: (set with :func:`reporting`)
_progress = None


@contextlib.contextmanager
def reporting(progress):
    """While inside, the weights written by :func:`write_model` report their progress to
    ``progress(done_bytes, total_bytes, name)`` (the command line's progress bar)."""
    global _progress
    before, _progress = _progress, progress
    try:
        yield
    finally:
        _progress = before


class _Meter:
    def __init__(self, tensors):
        self.total = sum(a.nbytes for _, a in tensors)
        self.done = 0

    def write(self, fh, name, array):
        if _progress is None:
            write_array(fh, array)
            return
        from ..stream import array_chunks

        for piece in array_chunks(array):
            fh.write(piece)
            self.done += piece.size
            _progress(self.done, self.total, name)


def _dtype_to_onnx(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


#: a written model up to this size is checked from the file itself; a larger one as its
#: skeleton (see _skeleton), since parsing every weight again costs seconds
CHECK_FILE_LIMIT = 2**26
#: tensors above this many bytes go to the external data file (when there is one)
EXTERNAL_MIN_BYTES = 1024


def _tensor_header(name: str, array: np.ndarray):
    import onnx

    t = onnx.TensorProto(name=name, data_type=_dtype_to_onnx(array.dtype))
    t.dims.extend(int(d) for d in array.shape)
    return t


def attach(model, tensors) -> None:
    """Put the initializers into ``model`` (one copy of each array)."""
    for name, array in tensors:
        t = model.graph.initializer.add()
        t.CopyFrom(_tensor_header(name, array))
        t.raw_data = array.tobytes()


def _stream(fh, model, tensors) -> int:
    """Write ``model`` (whose graph has no initializers) with ``tensors`` as initializers
    holding raw data, in protobuf's wire format; the arrays are written from their own
    memory.  Fields may come in any order, so the initializers follow the rest of the
    graph.  Returns the bytes written."""
    import onnx

    graph_bytes = model.graph.SerializeToString()
    parts, total = [], len(graph_bytes)
    for name, array in tensors:
        head = _tensor_header(name, array).SerializeToString()
        raw_key = _key(_TENSOR_RAW_DATA, _LENGTH_DELIMITED) + _varint(array.nbytes)
        size = len(head) + len(raw_key) + array.nbytes
        prefix = _key(_GRAPH_INITIALIZER, _LENGTH_DELIMITED) + _varint(size) + head + raw_key
        parts.append((prefix, array))
        total += len(prefix) + array.nbytes
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    head = rest.SerializeToString() + _key(_MODEL_GRAPH, _LENGTH_DELIMITED) + _varint(total)
    fh.write(head)
    fh.write(graph_bytes)
    meter = _Meter(tensors)
    for (prefix, array), (name, _) in zip(parts, tensors):
        fh.write(prefix)
        if array.nbytes:
            meter.write(fh, name, array)  # in chunks; a mapped file's pages are given back as they go
    return len(head) + total


def _skeleton(model, tensors) -> bytes:
    """The model with its large float weights turned into graph inputs of the same type
    and shape: onnx's full checker (structure, types, shape inference, which only reads
    the small int64 constants) sees everything but the weight bytes, which are written
    from arrays of exactly those shapes."""
    import onnx
    from onnx import helper

    skel = onnx.ModelProto()
    skel.CopyFrom(model)
    for name, array in tensors:
        if array.nbytes > 4096 and array.dtype == np.float32:
            skel.graph.input.append(helper.make_tensor_value_info(name, FLOAT, [int(d) for d in array.shape]))
        else:
            t = skel.graph.initializer.add()
            t.CopyFrom(_tensor_header(name, array))
            t.raw_data = array.tobytes()
    return skel.SerializeToString()


def write_model(model, tensors, path, *, external: bool) -> str:
    """Write the model atomically and check it with onnx's full checker: from the file
    (external data, or up to CHECK_FILE_LIMIT bytes), else as its skeleton."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not external:
        with atomic_path(path) as tmp:
            with open_new(tmp) as fh:
                size = _stream(fh, model, tensors)
            if size <= CHECK_FILE_LIMIT:
                check_model(None, tmp)
            else:
                check_model(_skeleton(model, tensors), None)
        return path
    with signals_raise():  # SIGTERM too removes the temporary folder
        return _write_external(model, tensors, path, directory)


def _write_external(model, tensors, path, directory) -> str:
    """The model and its weights file, written in a temporary folder beside ``path`` and
    moved into place together (under a lock on the folder, so two writers of the same
    model never leave one's model with the other's data)."""
    import onnx

    base = os.path.basename(path)
    location = base + ".data"
    tmpdir = tempfile.mkdtemp(prefix=".tmp-onnx-", dir=directory)
    try:
        small = []
        ext = onnx.ModelProto()
        ext.CopyFrom(model)
        meter = _Meter(tensors)
        with open(os.path.join(tmpdir, location), "wb") as fh:
            offset = 0
            for name, array in tensors:
                if array.nbytes <= EXTERNAL_MIN_BYTES:
                    small.append((name, array))
                    continue
                pad = (-offset) % 4096  # page-aligned, so runtimes can map the weights
                if pad:
                    fh.write(b"\0" * pad)
                    offset += pad
                meter.write(fh, name, array)
                t = ext.graph.initializer.add()
                t.CopyFrom(_tensor_header(name, array))
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
                offset += array.nbytes
        attach(ext, small)
        tmp_model = os.path.join(tmpdir, base)
        with open(tmp_model, "wb") as fh:
            fh.write(ext.SerializeToString())
        check_model(None, tmp_model)
        with directory_lock(directory):
            os.replace(os.path.join(tmpdir, location), os.path.join(directory, location))
            os.replace(tmp_model, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def check_model(model, path) -> None:
    """onnx's full checker (with shape inference) on a ModelProto, its bytes, or a path."""
    import onnx

    try:
        onnx.checker.check_model(path if path is not None else model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the exported model fails onnx's checker: {str(exc).strip()}") from exc
