"""Streaming fills: draw and write a net's parameter blobs chunk by chunk, in bounded memory.

:func:`stream_fill` makes the same numbers as :func:`fillers.netfill.fill_net` (with
``rng="caffe"``, Caffe's, bit for bit; with ``rng="fast"``, the in-memory fill's for the
same seed) but never holds more than a chunk of a blob: each blob is drawn in pieces of
:data:`CHUNK` values (the random streams give the same numbers drawn in pieces as in one
call) and every piece goes straight to the outputs (.caffemodel, .npz) and to the running
statistics of the table.  Memory does not grow with the net.

What is not drawn in pieces:

* fills whose values must be whole: ``positive_unitball`` (each row divided by its sum),
  ``gaussian`` with ``sparse`` (the mask is drawn after all the values), ``bilinear``,
  and any filler whose result is not the stream's draw as is: computed per blob, so
  memory is bounded by the largest such blob;
* layers whose type replaces fresh values (``fresh_params``: BatchNorm's statistics):
  filled in memory, a layer at a time (they are small);
* a blob shared through ``param { name }`` is written again for each sharer (Caffe writes
  every layer's blobs): its values are drawn again from a copy of the stream saved where
  the owner's draw began, or read again from the trained weights.

Trained weights (``weights=``) are read memory-mapped and copied a chunk at a time; the
pages read are given back to the kernel after each chunk (:func:`release`), so a large
weights file does not count in the process's resident memory either.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import NetError, UsageError
from .fans import fan_in_fan_out
from .init import describe, fill as fill_blob, filler_params
from .layers.base import LayerType
from .rng import CaffeRNG, FastRNG

#: float32 values per chunk (1 MiB); tests patch it smaller
CHUNK = 1 << 18
#: chunks queued for the writer thread (see :class:`AsyncFile`); 0 writes in the caller
WRITE_QUEUE = 4

_F32 = np.float32


# ---- memory-mapped arrays: give the pages back -------------------------------------------

_PAGE = mmap.PAGESIZE
_MAP_START: dict = {}  # id(mmap) -> (mmap, address of its first byte)


def _mapping(a: np.ndarray):
    """The ``mmap`` an array is a view of, or None (walks ``.base``)."""
    b = a
    while isinstance(b, np.ndarray):
        b = b.base
    if isinstance(b, memoryview):
        b = b.obj
    return b if isinstance(b, mmap.mmap) else None


try:
    from numpy.lib.array_utils import byte_bounds as _byte_bounds  # numpy >= 2
except ImportError:  # pragma: no cover
    _byte_bounds = np.byte_bounds


def release(a: np.ndarray) -> None:
    """For a view of a read-only file mapping: drop the pages under ``a`` from this
    process's resident memory (``MADV_DONTNEED``; they stay in the page cache and are
    read again if used).  Anything else is left alone (dropping anonymous memory would
    zero it)."""
    mm = _mapping(a)
    if mm is None or not hasattr(mm, "madvise") or a.size == 0:
        return
    entry = _MAP_START.get(id(mm))
    if entry is None or entry[0] is not mm:
        try:
            start = np.frombuffer(mm, np.uint8, count=1).ctypes.data
        except (ValueError, TypeError):
            return
        entry = _MAP_START[id(mm)] = (mm, start)
    lo, hi = _byte_bounds(a)
    off = lo - entry[1]
    begin = off - off % _PAGE
    try:
        mm.madvise(mmap.MADV_DONTNEED, begin, min(hi - entry[1], len(mm)) - begin)
    except (OSError, ValueError):
        pass


def array_chunks(a: np.ndarray, chunk_bytes: Optional[int] = None):
    """The flat little-endian bytes of ``a`` in pieces of about ``chunk_bytes`` (as uint8
    views, no copies of a contiguous array); pages of a mapped file are released after
    each piece is used."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    flat = flat.view(np.uint8)
    step = chunk_bytes or CHUNK * 4
    for pos in range(0, flat.size, step):
        piece = flat[pos:pos + step]
        yield piece
        release(piece)


def write_array(fh, a: np.ndarray) -> int:
    """Write ``a``'s bytes to ``fh`` in chunks (see :func:`array_chunks`); returns bytes."""
    n = 0
    for piece in array_chunks(a):
        fh.write(piece)
        n += piece.size
    return n


class AsyncFile:
    """A binary file whose writes happen in a thread of their own, so drawing the next
    chunk overlaps writing the last one (numpy and the file system release the GIL).

    At most ``depth`` writes wait in the queue (bounded memory); the buffers handed to
    :meth:`write` must not change afterwards (the streaming fill's chunks never do).
    ``tell``, ``seek`` and ``flush`` wait for the queue first, so the file behaves as a
    plain one (zipfile seeks back to finish its entries).  An error of the writer is
    raised in the caller at its next call."""

    def __init__(self, fh, depth=None):
        import queue
        import threading

        self.fh = fh
        self._error = None
        self._queue = queue.Queue(maxsize=max(1, depth or WRITE_QUEUE))
        self._thread = threading.Thread(target=self._run, name="fillers-writer", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.fh.write(item)
            except BaseException as exc:  # kept for the caller
                self._error = exc
            finally:
                self._queue.task_done()

    def _check(self):
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def write(self, data):
        self._check()
        self._queue.put(data)
        return len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes

    def drain(self):
        self._queue.join()
        self._check()

    def flush(self):
        self.drain()
        self.fh.flush()

    def tell(self):
        self.drain()
        return self.fh.tell()

    def seek(self, *args):
        self.drain()
        return self.fh.seek(*args)

    def seekable(self):
        return self.fh.seekable()

    def close(self, failed=False):
        """Stop the thread: after the queued writes (``failed``: dropping them)."""
        if self._thread.is_alive():
            if failed:
                self._error = self._error or RuntimeError("closed")
            self._queue.put(None)
            self._thread.join()
        if not failed:
            self._check()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)


# ---- statistics on the fly --------------------------------------------------------------

class RunningStats:
    """Mean and population std of values seen a chunk at a time: per chunk, the float32
    mean and the sum of squared deviations from it (a centred float32 dot product, so a
    large mean costs no precision), combined across chunks in float64 (Chan et al.)."""

    __slots__ = ("n", "mean", "m2", "_buf")

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self._buf = None

    def add(self, x: np.ndarray) -> None:
        k = x.size
        if k == 0:
            return
        x = x.reshape(-1)
        if x.dtype != _F32:
            x = x.astype(_F32)
        m = float(np.add.reduce(x, dtype=np.float64 if k < 4096 else _F32)) / k
        if self._buf is None or self._buf.size < k:
            self._buf = np.empty(max(k, CHUNK), _F32)
        d = self._buf[:k]
        np.subtract(x, _F32(m), out=d)
        r = float(np.add.reduce(d, dtype=_F32)) / k  # what rounding m to float32 left over
        m2 = max(float(np.dot(d, d)) - k * r * r, 0.0)
        m += r
        n = self.n + k
        delta = m - self.mean
        self.mean += delta * k / n
        self.m2 += m2 + delta * delta * self.n * k / n
        self.n = n

    def result(self) -> tuple:
        if self.n == 0:
            return 0.0, 0.0
        return self.mean, (self.m2 / self.n) ** 0.5


# ---- sources of a blob's values ---------------------------------------------------------

class _Probe:
    """A stand-in random stream that records the draws a filler asks for and returns
    zero-stride arrays (no memory): a fill whose result is exactly one draw, reshaped, can
    be drawn in pieces from the real stream."""

    def __init__(self):
        self.calls = []
        self.dummy = np.zeros(1, _F32)

    def _draw(self, name, n, *args):
        self.calls.append((name, int(n), args))
        return np.broadcast_to(self.dummy, (int(n),))

    def uniform(self, n, a=0.0, b=1.0):
        return self._draw("uniform", n, a, b)

    def gaussian(self, n, mu=0.0, sigma=1.0):
        return self._draw("gaussian", n, mu, sigma)

    def bernoulli(self, n, p):
        self.calls.append(("bernoulli", int(n), (p,)))
        return np.broadcast_to(np.zeros(1, bool), (int(n),))

    def words(self, n):
        self.calls.append(("words", int(n), ()))
        return np.broadcast_to(np.zeros(1, np.uint32), (int(n),))


def _count(shape) -> int:
    c = 1
    for d in shape:
        c *= int(d)
    return c


def _plan_draw(shape, fp, caffe_version):
    """How a fill is drawn: ``("const", value)``, ``("stream", method, args)`` (one draw
    of the whole count, used as is: drawn in pieces) or ``("whole",)`` (per blob)."""
    count = _count(shape)
    if count == 0:
        return ("whole",)
    try:
        p = filler_params(fp)
    except ValueError:
        return ("whole",)  # the real fill raises the error
    if p["type"] == "constant":
        try:
            return ("const", fill_blob((1,), fp, caffe_version=caffe_version)[0])
        except ValueError:
            return ("whole",)
    if p["type"] == "bilinear":
        return ("whole",)
    probe = _Probe()
    try:
        res = fill_blob(shape, fp, rng=probe, caffe_version=caffe_version)
    except Exception:  # a check that fails (raised again by the real fill), or an in-place step
        return ("whole",)
    if (len(probe.calls) == 1 and probe.calls[0][0] in ("uniform", "gaussian") and probe.calls[0][1] == count
            and isinstance(res, np.ndarray) and res.shape == tuple(int(d) for d in shape)
            and not any(res.strides) and np.shares_memory(res, probe.dummy)):
        name, _, args = probe.calls[0]
        return ("stream", name, args)
    return ("whole",)


def _fork(stream):
    """An independent copy of a random stream at its position, or None."""
    if isinstance(stream, CaffeRNG):
        return stream.copy()
    if isinstance(stream, FastRNG):
        bg = stream.generator.bit_generator
        other = type(bg)()
        other.state = bg.state
        return FastRNG(np.random.Generator(other))
    return None


@dataclass
class _Source:
    """Where a blob's values come from: ``kind`` is ``"draw"`` (``plan``, ``fp``, and
    ``state``: a copy of the stream where the draw began, kept to draw it again for a
    sharer), ``"array"`` (an array, maybe a view of a mapped file), ``"zero"`` or
    ``"shared"`` (``owner``: (layer index, blob index))."""

    kind: str
    shape: tuple
    fp: object = None
    plan: tuple = ()
    array: Optional[np.ndarray] = None
    owner: Optional[tuple] = None
    state: object = None
    stats: Optional[tuple] = None
    drawn: bool = False


def _chunks_of_draw(src: _Source, stream, caffe_version):
    count = _count(src.shape)
    kind = src.plan[0]
    if kind == "const":
        buf = np.empty(min(CHUNK, count), _F32)
        buf.fill(src.plan[1])
        for pos in range(0, count, CHUNK):
            yield buf[:min(CHUNK, count - pos)]
    elif kind == "stream":
        method = getattr(stream, src.plan[1])
        for pos in range(0, count, CHUNK):
            yield method(min(CHUNK, count - pos), *src.plan[2])
    else:
        whole = fill_blob(src.shape, src.fp, rng=stream, caffe_version=caffe_version).reshape(-1)
        for pos in range(0, whole.size, CHUNK):
            yield whole[pos:pos + CHUNK]


def _chunks_of_array(a):
    flat = np.ascontiguousarray(a, dtype=_F32).reshape(-1)
    for pos in range(0, flat.size, CHUNK):
        piece = flat[pos:pos + CHUNK]
        yield piece
        release(piece)


def _zeros(count):
    buf = np.zeros(min(CHUNK, count), _F32)
    for pos in range(0, count, CHUNK):
        yield buf[:min(CHUNK, count - pos)]


# ---- outputs ----------------------------------------------------------------------------

class _CaffemodelSink:
    """A .caffemodel written as the blobs come (each length known from the shapes)."""

    def __init__(self, fh, net):
        from . import caffe_pb2

        self.fh = fh
        self.written = 0
        self._write(caffe_pb2.NetParameter(name=net.name or "").SerializeToString())

    def _write(self, b):
        self.fh.write(b)
        self.written += len(b)

    def begin_layer(self, layer, shapes):
        from .caffemodel import layer_entry_head

        self._write(layer_entry_head(layer, shapes))

    def begin_blob(self, j, shape):
        from .caffemodel import blob_entry_head

        self._write(blob_entry_head(shape))

    def write(self, chunk):
        self.fh.write(chunk)
        self.written += chunk.nbytes

    def end_blob(self):
        pass


class _ArraysSink:
    """The blobs kept as arrays in memory (what :func:`fillers.netfill.fill_net` returns):
    ``params[layer name]`` lists each layer's arrays."""

    def __init__(self):
        self.params: dict = {}

    def begin_layer(self, layer, shapes):
        self._arrays = self.params.setdefault(layer.name, [None] * len(shapes))

    def begin_blob(self, j, shape):
        self._j, self._shape, self._pos = j, tuple(shape), 0
        self._buf = np.empty(_count(shape), _F32)

    def write(self, chunk):
        n = chunk.size
        self._buf[self._pos:self._pos + n] = chunk.reshape(-1)
        self._pos += n

    def end_blob(self):
        self._arrays[self._j] = self._buf.reshape(self._shape)


def fill_arrays(net, stream, overrides, trained, caffe_version, batchnorm, progress=None):
    """One pass of the walker that :func:`stream_fill` uses, into arrays in memory:
    ``(params, records, warnings)``, with Caffe's draw order and the same numbers."""
    from .netfill import BlobRecord

    walker = _Filler(net, stream, overrides, trained, caffe_version, batchnorm, False, progress)
    sink = _ArraysSink()
    walker.run([sink], BlobRecord)
    return sink.params, walker.records, walker.warnings()


class _NpzSink:
    """An .npz (keys ``<layer>/<blob index>``, as :meth:`FilledNet.save_npz`) written as
    the blobs come: a stored zip member per blob, its .npy header then the values."""

    def __init__(self, fh):
        self.zf = zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.layer = None
        self.member = None

    def begin_layer(self, layer, shapes):
        self.layer = layer.name

    def begin_blob(self, j, shape):
        self.member = self.zf.open(f"{self.layer}/{j}.npy", mode="w", force_zip64=True)
        np.lib.format.write_array_header_1_0(
            self.member, {"descr": "<f4", "fortran_order": False, "shape": tuple(int(d) for d in shape)})

    def write(self, chunk):
        self.member.write(chunk)

    def end_blob(self):
        self.member.close()
        self.member = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.zf.close()
        else:  # the file is removed anyway; keep the first error
            with contextlib.suppress(Exception):
                if self.member is not None:
                    self.member.close()
                self.zf.close()


# ---- the result -------------------------------------------------------------------------

@dataclass
class StreamedFill:
    """What :func:`stream_fill` did: the table's ``records`` (``BlobRecord``s with their
    statistics, no arrays), ``seed``, ``rng``, ``warnings``, ``trained`` (the
    :class:`~fillers.caffemodel.TrainedWeights` report of ``weights=``), and the files
    written (``caffemodel``, ``npz``, with ``sizes``)."""

    net: object
    records: list = field(default_factory=list)
    seed: Optional[int] = None
    rng: str = "fast"
    warnings: list = field(default_factory=list)
    trained: object = None
    caffemodel: Optional[str] = None
    npz: Optional[str] = None
    sizes: dict = field(default_factory=dict)
    seconds: float = 0.0
    _params: object = field(default=None, repr=False)

    @property
    def params(self):
        """The written weights read back memory-mapped (``{layer: [read-only arrays]}``,
        :func:`fillers.caffemodel.read_caffemodel`), as :attr:`FilledNet.params` gives
        them in memory: what the ONNX export takes.  Needs the .caffemodel."""
        if self._params is None:
            if not self.caffemodel:
                raise UsageError("no .caffemodel was written: give stream_fill a caffemodel path to read the weights "
                                 "back")
            from .caffemodel import read_caffemodel

            self._params = read_caffemodel(self.caffemodel)
        return self._params

    @property
    def blobs(self):
        """Alias of :attr:`params` (as FilledNet's)."""
        return self.params

    def to_onnx(self, path, **options):
        """Export to ONNX from the written .caffemodel, mapped (bounded memory); options
        as :func:`fillers.onnx.export_and_check` (``check=False`` by default here)."""
        from .onnx import export_and_check

        options.setdefault("check", False)
        options.setdefault("caffemodel", self.caffemodel)
        return export_and_check((self.net, self.params), path, **options)


@contextlib.contextmanager
def caffemodel_for(path, onnx=None):
    """The .caffemodel path to stream to: ``path``; or, when only an ONNX export is
    wanted (``path`` None, ``onnx`` given), a temporary file beside the export, removed
    afterwards (the export reads the weights back from it, memory-mapped); or None."""
    if path is not None or onnx is None:
        yield None if path is None else os.fspath(path)
        return
    import tempfile

    from .atomic import signals_raise

    directory = os.path.dirname(os.path.abspath(os.fspath(onnx)))
    with signals_raise():  # SIGTERM too removes it
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-weights.caffemodel", dir=directory)
            os.close(fd)
            yield tmp
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


# ---- the fill ---------------------------------------------------------------------------

def stream_fill(net, caffemodel=None, *, npz=None, filler=None, bias_filler=None, seed=None, rng="fast",
                caffe_version="master", weights=None, batchnorm="caffe", stats: bool = True,
                progress: Optional[Callable] = None) -> StreamedFill:
    """Fill ``net`` as :func:`fillers.netfill.fill_net` does (same options, same numbers)
    and write the blobs to ``caffemodel`` and/or ``npz`` (atomically) as they are drawn
    (neither: only the table's statistics),
    in chunks of :data:`CHUNK` values: memory stays bounded whatever the net's size (see
    the module docstring for the fills computed per blob).

    ``stats`` computes each blob's mean and std on the way (for the table); ``progress``
    is called as ``progress(done_values, total_values, layer_name)`` after every chunk.
    Returns a :class:`StreamedFill` (no arrays in memory; ``.params`` maps the written
    .caffemodel back, ``.to_onnx(path)`` exports from it).
    """
    from .atomic import atomic_path, open_new
    from .netfill import BlobRecord, prepare_fill, unknown_filler_warnings

    t0 = time.perf_counter()
    overrides, stream, seed, trained = prepare_fill(net, filler, bias_filler, seed, rng, caffe_version, weights,
                                                    batchnorm)
    result = StreamedFill(net=net, seed=seed, rng="caffe" if isinstance(stream, CaffeRNG) else "fast",
                          trained=trained, caffemodel=None if caffemodel is None else os.fspath(caffemodel),
                          npz=None if npz is None else os.fspath(npz))
    result.warnings.extend(unknown_filler_warnings(net, overrides))
    filler_state = _Filler(net, stream, overrides, trained, caffe_version, batchnorm, stats, progress)
    with contextlib.ExitStack() as stack:
        sinks = []
        def output(path):  # the file, written by a thread of its own; closed before the rename
            tmp = stack.enter_context(atomic_path(path))
            fh = stack.enter_context(open_new(tmp))
            return stack.enter_context(AsyncFile(fh)) if WRITE_QUEUE else fh

        if caffemodel is not None:
            sinks.append(_CaffemodelSink(output(caffemodel), net))
        if npz is not None:
            sinks.append(stack.enter_context(_NpzSink(output(npz))))
        filler_state.run(sinks, BlobRecord)
    if caffemodel is not None:
        result.sizes["caffemodel"] = sinks[0].written
    if npz is not None:
        result.sizes["npz"] = os.path.getsize(npz)
    result.records = filler_state.records
    result.warnings.extend(filler_state.warnings())
    result.seconds = time.perf_counter() - t0
    return result


def fill_in_memory(net, caffemodel=None, *, npz=None, stats: bool = True, progress=None, **options) -> StreamedFill:
    """:func:`fillers.netfill.fill_net` (every array in memory: what a net-level procedure
    such as ``filler="lsuv"`` needs, as it runs the net) written to the outputs of
    :func:`stream_fill`, with its kind of result (``.params`` are the arrays in memory)."""
    t0 = time.perf_counter()
    filled = net.fill(progress=progress, **options)
    res = StreamedFill(net=net, records=filled.records, seed=filled.seed, rng=filled.rng,
                       warnings=list(filled.warnings), trained=getattr(filled, "trained", None),
                       caffemodel=None if caffemodel is None else os.fspath(caffemodel),
                       npz=None if npz is None else os.fspath(npz), _params=filled.params)
    if caffemodel is not None:
        res.sizes["caffemodel"] = filled.save(caffemodel)
    if npz is not None:
        filled.save_npz(npz)
        res.sizes["npz"] = os.path.getsize(npz)
    res.seconds = time.perf_counter() - t0
    return res


class _Filler:
    """One streaming pass over the net (see :func:`stream_fill`)."""

    def __init__(self, net, stream, overrides, trained, caffe_version, batchnorm, stats, progress):
        self.net = net
        self.stream = stream
        self.overrides = overrides
        self.trained = trained
        self.caffe_version = caffe_version
        self.batchnorm = batchnorm
        self.stats = stats
        self.progress = progress
        self.draw_everything = isinstance(stream, CaffeRNG)
        self.records: list = []
        self.fresh: dict = {}
        self.sources: dict = {}  # (layer index, blob index) -> the final _Source of an owned blob
        self.total = max(sum(_count(p.shape) for l in net.layers for p in l.params), 1)
        self.done = 0
        # owned blobs other layers share, and trained data copied into them by a sharer
        # (Caffe copies into the shared memory: the last copy in net order wins)
        self.has_sharers = set()
        self.final_override: dict = {}
        for li, layer in enumerate(net.layers):
            for j, owner in enumerate(layer.owners):
                if owner is not None:
                    self.has_sharers.add(owner)
            if layer.name in trained:
                for j, owner in enumerate(layer.owners):
                    self.final_override[owner if owner is not None else (li, j)] = (li, j)

    def warnings(self):
        out = []
        for note, layers in self.fresh.items():
            names = [l.name for l in layers]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            out.append(f"{len(layers)} {layers[0].type} layer(s) ({shown}) hold {note}")
        return out

    def _trained_array(self, li, j):
        layer = self.net.layers[li]
        return np.asarray(self.trained[layer.name][j]).reshape(layer.params[j].shape)

    def _error(self, layer, idx, shape, exc):
        return NetError(f"blob {idx if idx is not None else ''} {list(shape)}: {exc}",
                        layer=layer.name, layer_type=layer.type)

    def _plan(self, layer, shape, fp, idx):
        try:
            return _plan_draw(shape, fp, self.caffe_version)
        except ValueError as exc:
            raise self._error(layer, idx, shape, exc) from None

    def _drain(self, layer, idx, src):
        """Draw and drop (the stream moves on as Caffe's does)."""
        try:
            for _ in _chunks_of_draw(src, self.stream, self.caffe_version):
                pass
        except ValueError as exc:
            raise self._error(layer, idx, src.shape, exc) from None

    def run(self, sinks, BlobRecord):
        for li, layer in enumerate(self.net.layers):
            self._layer(li, layer, sinks, BlobRecord)

    def _layer(self, li, layer, sinks, BlobRecord):
        n = len(layer.params)
        from_weights = layer.name in self.trained
        sources: list = [None] * n
        descs: list = [""] * n
        ops: list = []  # in draw order: (blob index or None, _Source, kept)
        for idx, pb in layer.spec.draws(layer.params, layer.bottom_shapes):
            fp = self.overrides.get(pb.role) or pb.filler
            keep = idx is not None and layer.owners[idx] is None
            if fp is None:
                if keep:
                    sources[idx] = _Source("zero", tuple(pb.shape))
                    descs[idx] = "zero"
                continue
            if not self.draw_everything and (not keep or from_weights):
                continue  # the fast stream skips draws whose values are dropped
            src = _Source("draw", tuple(pb.shape), fp=fp, plan=self._plan(layer, pb.shape, fp, idx))
            kept = keep and not from_weights and self.final_override.get((li, idx)) is None
            ops.append((idx, src, kept))
            try:
                text = describe(fp)
            except ValueError as exc:
                raise self._error(layer, idx, pb.shape, exc) from None
            if keep:
                descs[idx] = text
                if kept:
                    sources[idx] = src
        for j, owner in enumerate(layer.owners):
            shape = tuple(layer.params[j].shape)
            final = self.final_override.get(owner if owner is not None else (li, j))
            if final is not None:  # trained values (this layer's, or copied into the shared memory later)
                sources[j] = _Source("array", shape, array=self._trained_array(*final))
            elif owner is not None:
                sources[j] = _Source("shared", shape, owner=owner)
            if owner is not None:
                descs[j] = f"shared:{self.net.layers[owner[0]].name}/{owner[1]}"
            if from_weights:
                descs[j] = "weights"
        custom_fresh = type(layer.spec).fresh_params is not LayerType.fresh_params
        if not from_weights and custom_fresh:
            sources, descs = self._in_memory(li, layer, ops, sources, descs)
            ops = []
        self._write_layer(li, layer, ops, sources, sinks)
        for j, pb in enumerate(layer.params):
            try:
                fi, fo = fan_in_fan_out(pb.shape, caffe_version=self.caffe_version) if len(pb.shape) else (1, 1)
            except ValueError:
                fi = fo = None
            src = descs[j].split(":")[0] if descs[j] else "filled"
            src = src if src in ("shared", "weights", "zero", "identity") else "filled"
            rec = BlobRecord(layer.name, j, pb.name, tuple(pb.shape), descs[j], fi, fo, src, None)
            if self.stats:
                rec._stats = self._final(li, j).stats
            self.records.append(rec)

    def _final(self, li, j) -> _Source:
        """The source of the values blob ``j`` of layer ``li`` ends with (a sharer: its
        owner's)."""
        src = self.sources[(li, j)]
        return self.sources[src.owner] if src.kind == "shared" else src

    def _in_memory(self, li, layer, ops, sources, descs):
        """A layer whose type replaces fresh values: its arrays in memory (as fill_net)."""
        arrays = [None] * len(sources)
        for idx, src, kept in ops:
            try:
                values = fill_blob(src.shape, src.fp, rng=self.stream, caffe_version=self.caffe_version)
            except ValueError as exc:
                raise self._error(layer, idx, src.shape, exc) from None
            if kept:
                arrays[idx] = values
        for j, src in enumerate(sources):
            if arrays[j] is None:
                arrays[j] = self._materialize(src)
        replaced, note = layer.spec.fresh_params(arrays, self.batchnorm)
        if replaced is not None:
            arrays, descs = list(replaced), ["identity"] * len(replaced)
        if note:
            self.fresh.setdefault(note, []).append(layer)
        return [_Source("array", tuple(np.shape(a)), array=np.asarray(a, _F32)) for a in arrays], descs

    def _materialize(self, src) -> np.ndarray:
        """A source's values as one array (a small blob)."""
        if src.kind == "shared":
            src = self.sources[src.owner]
        if src.kind == "zero":
            return np.zeros(src.shape, _F32)
        if src.kind == "array":
            return np.array(src.array, _F32)
        return np.concatenate(list(_chunks_of_draw(src, _fork_at(src), self.caffe_version))).reshape(src.shape)

    def _write_layer(self, li, layer, ops, sources, sinks):
        shapes = [s.shape for s in sources]
        for sink in sinks:
            sink.begin_layer(layer, shapes)
        written = 0  # blobs 0..written-1 are in the file
        for idx, src, kept in ops:
            if not kept:
                self._drain(layer, idx, src)
                continue
            if any(sources[k].kind == "draw" and k != idx and not sources[k].drawn for k in range(written, idx)):
                # drawn before an earlier blob: hold it in memory until its turn
                sources[idx] = self._hold(layer, idx, src)
                continue
            while written < idx:
                self._write_blob(li, layer, written, sources[written], sinks)
                written += 1
            self._write_blob(li, layer, idx, src, sinks)
            written = idx + 1
        while written < len(sources):
            self._write_blob(li, layer, written, sources[written], sinks)
            written += 1

    def _hold(self, layer, idx, src):
        try:
            values = fill_blob(src.shape, src.fp, rng=self.stream, caffe_version=self.caffe_version)
        except ValueError as exc:
            raise self._error(layer, idx, src.shape, exc) from None
        return _Source("array", src.shape, array=values)

    def _write_blob(self, li, layer, j, src, sinks):
        if src.kind == "draw":
            src.drawn = True
            if (li, j) in self.has_sharers:
                src.state = _fork(self.stream)  # to draw it again for the sharers
                if src.state is None:  # a stream that cannot be copied: keep the values
                    src = self._hold(layer, j, src)
        if src.kind == "draw":
            chunks = _chunks_of_draw(src, self.stream, self.caffe_version)
        elif src.kind == "shared":
            chunks = self._replay(self.sources[src.owner])
        elif src.kind == "zero":
            chunks = _zeros(_count(src.shape))
        else:
            chunks = _chunks_of_array(src.array)
        running = RunningStats() if self.stats and src.kind != "shared" else None
        for sink in sinks:
            sink.begin_blob(j, src.shape)
        try:
            for chunk in chunks:
                for sink in sinks:
                    sink.write(chunk)
                if running is not None:
                    running.add(chunk)
                self.done += chunk.size
                if self.progress is not None:
                    self.progress(self.done, self.total, layer.name)
        except ValueError as exc:
            raise self._error(layer, j, src.shape, exc) from None
        for sink in sinks:
            sink.end_blob()
        if running is not None:
            src.stats = running.result()
        self.sources[(li, j)] = src

    def _replay(self, owner: _Source):
        if owner.kind == "draw":
            return _chunks_of_draw(owner, _fork_at(owner), self.caffe_version)
        if owner.kind == "zero":
            return _zeros(_count(owner.shape))
        return _chunks_of_array(owner.array)


def _fork_at(src):
    """A fresh copy of the stream saved where ``src``'s draw began."""
    copy = _fork(src.state)
    if copy is None:
        raise NetError("internal error: a shared blob's stream was not saved")
    return copy
