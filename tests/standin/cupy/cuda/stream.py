"""``cupy.cuda.Stream``: streams, the current one, and a graph captured on one, as CuPy 14
(``cupy/cuda/stream.pyx``) and CUDA's capture rules have them.

What a stream runs runs at once, on the host, in the order it is launched.  While a stream is
being captured, what runs on it is also recorded, and the graph ``end_capture`` returns runs
the records again on each launch.  Three kinds of work are recorded:

- operations on arrays (NumPy's, on the stand-in's arrays), by :class:`dnn.replay.Traced`,
  whose recording is on exactly while the current stream is being captured;
- ``cupy.ElementwiseKernel`` launches, on the current stream;
- kernels a library launches on a stream it was handed (the stub cuBLAS): a stream's ``ptr``
  is the address of a C ``struct standin_stream`` whose ``launch`` runs a kernel on it
  (tests/standin/stub_cublas.c); the legacy default stream's is 0, on which a library runs
  its kernels at once.

The capture follows CuPy's default, relaxed, mode: the legacy default stream cannot be
captured; synchronizing a stream that is being captured is refused and invalidates the capture
(``end_capture`` then raises); CuPy refuses host transfers on it (cupy/_array.py).  Unlike a
GPU's, a capture here also computes what it records.  One stream at a time may capture.
"""

from __future__ import annotations

import ctypes
import threading
import traceback

from cupy.cuda import graph as graph_module
from cupy.cuda.runtime import (CUDARuntimeError, errorIllegalState,
                               errorStreamCaptureInvalidated, errorStreamCaptureUnsupported)
from dnn.replay import record_into

KERNEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void kernel(const void *args)
LAUNCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _StreamStruct(ctypes.Structure):
    """``struct standin_stream``: how a C library launches a kernel on the stream."""

    _fields_ = [("launch", LAUNCH)]


class Capture:
    """What a stream records while it is being captured: ``operations`` (functions of no
    arguments, in order), ``arrays`` (the values of the arrays made meanwhile, which the
    graph's kernels may hold the addresses of), ``regions`` (the device memory handed out to
    them, cupy/cuda/memory.py) and whether an error ``invalidated`` it."""

    def __init__(self):
        self.operations, self.arrays, self.regions, self.invalidated = [], [], [], False


class Stream:
    """A CUDA stream (``null=True``: the legacy default stream, ``ptr`` 0)."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.device_id = 0
        self._capture = None
        if null:
            self.ptr = 0
            return
        self._launch_callback = LAUNCH(self._launch_from_library)
        self._struct = _StreamStruct(self._launch_callback)
        self.ptr = ctypes.addressof(self._struct)

    def __enter__(self):
        _stack().append(self)
        _switch_recording()
        return self

    def __exit__(self, *exc_info):
        _stack().pop()
        _switch_recording()

    def use(self):
        _stack()[-1] = self
        _switch_recording()
        return self

    def synchronize(self) -> None:
        if self._capture is not None:
            self._capture.invalidated = True
            raise CUDARuntimeError(errorStreamCaptureUnsupported)

    def begin_capture(self, mode=None) -> None:
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self._capture is not None:
            raise CUDARuntimeError(errorIllegalState)
        if _Capturing.stream is not None:
            raise NotImplementedError("the stand-in captures on one stream at a time")
        self._capture, _Capturing.stream = Capture(), self
        _switch_recording()

    def end_capture(self):
        """The graph of what was launched on this stream since ``begin_capture``."""
        if self._capture is None:
            raise CUDARuntimeError(errorIllegalState)
        capture, self._capture, _Capturing.stream = self._capture, None, None
        _switch_recording()
        if capture.invalidated:
            raise CUDARuntimeError(errorStreamCaptureInvalidated)
        return graph_module.Graph._from_capture(capture)

    def _launch(self, run) -> None:
        """Run ``run`` (a function of no arguments) on this stream: now, and in each launch
        of the graph being captured on it, if any."""
        run()
        if self._capture is not None:
            self._capture.operations.append(run)

    def _hold(self, values) -> None:
        """Keep an array made on this stream for the graph being captured on it, if any."""
        if self._capture is not None:
            self._capture.arrays.append(values)

    def _launch_from_library(self, kernel: int, args: int, size: int) -> int:
        """``launch`` of the C struct: ``kernel(args)`` on this stream, ``size`` bytes of
        ``args`` kept for the replays; 0, or 1 when it failed (its traceback printed)."""
        try:
            arguments = ctypes.create_string_buffer(ctypes.string_at(args, size), size)
            function = KERNEL(kernel)
            self._launch(lambda: function(ctypes.addressof(arguments)))
        except Exception:
            traceback.print_exc()
            return 1
        return 0


Stream.null = Stream(null=True)


class _Capturing:
    """The stream being captured, if any."""

    stream: Stream | None = None


_thread_local = threading.local()


def _stack() -> list:
    """This thread's current streams, innermost last."""
    if not hasattr(_thread_local, "stack"):
        _thread_local.stack = [Stream.null]
    return _thread_local.stack


def _switch_recording() -> None:
    """Traced arrays record exactly while the current stream is being captured."""
    capture = get_current_stream()._capture
    record_into(None if capture is None else capture.operations)


def get_current_stream(device_id: int = -1) -> Stream:
    return _stack()[-1]
