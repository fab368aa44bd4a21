"""Atomic output files: write to a temporary file beside the target, rename it into place
only when everything succeeded, so a failure never leaves a partial file behind.

Interruptions count as failures: while a temporary file exists, SIGTERM (and SIGHUP) are
turned into an exception in the main thread, as Python does with SIGINT
(``KeyboardInterrupt``), so the temporary file is removed on the way out.  Two processes
writing the same output each write a temporary file of their own; the last rename wins
and the file is always one complete output."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM/SIGHUP during a write (a KeyboardInterrupt,
    so what handles Ctrl-C handles it too); ``signum`` is the signal."""

    def __init__(self, signum):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise(signum, frame):
    raise Terminated(signum)


_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_depth = 0


@contextlib.contextmanager
def signals_raise():
    """While inside: SIGTERM and SIGHUP raise :class:`Terminated` in the main thread
    (only where their handler is the default one, and only in the main thread; nested
    uses are free)."""
    global _depth
    installed = []
    if threading.current_thread() is threading.main_thread() and _depth == 0:
        for s in _SIGNALS:
            try:
                if signal.getsignal(s) is signal.SIG_DFL:
                    signal.signal(s, _raise)
                    installed.append(s)
            except (ValueError, OSError):
                pass
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s in installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, signal.SIG_DFL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pause_hook(path) -> None:
    """Tests: ``CAFFE_FILLERS_TEST_PAUSE=SECONDS`` sleeps once the temporary file exists
    (a deterministic point to interrupt a write at); unset, nothing."""
    delay = os.environ.get("CAFFE_FILLERS_TEST_PAUSE")
    if delay:
        import sys
        import time

        print(f"paused writing {path}", file=sys.stderr, flush=True)
        time.sleep(float(delay))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder; on success give it the usual file mode
    (``mkstemp`` makes 0600) and rename it to ``path``; on any error or interruption
    (SIGINT, SIGTERM, SIGHUP) remove it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    with signals_raise():
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
            os.close(fd)
            _pause_hook(path)
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise


def open_new(tmp):
    """Open the (new, empty) temporary file of :func:`atomic_path` for writing, without
    truncating it: ext4 flushes a file truncated to zero when it is closed (its
    ``auto_da_alloc`` heuristic), a tenth of a second per 500 MB spent waiting."""
    return open(tmp, "r+b")


@contextlib.contextmanager
def directory_lock(directory):
    """Hold an exclusive lock on a folder (``flock`` on the folder itself, no lock file)
    while several renames must land together (an ONNX model and its external data)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not POSIX)
        yield
        return
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
