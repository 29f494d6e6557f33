"""CUDA graphs for the gpu backend: a training step captured once and replayed per batch.

On a small network the GPU is launch-bound: the seed network's step is ~0.3 GFLOP but ~15
kernel launches and the Python around each.  Replaying the step as one graph launch removes
both.  What a capture needs, as measured on an H200 with CuPy 14.2:

- the products through cuBLAS of our own (:mod:`dnn.backends.cublas`), since CuPy refuses
  cuBLAS while a stream captures;
- the step's temporaries from a memory pool of their own, warmed by an eager step before the
  capture and used by nothing else, so the addresses a graph holds stay its own;
- a stream of its own to capture on (the default stream cannot be captured); replays are
  launched on the current stream, in order with everything else.

:mod:`dnn.step` decides when to capture and checks each new graph against the eager step.
"""

from __future__ import annotations

import contextlib

from dnn.backends.cublas import Cublas
from dnn.errors import CaptureError


class CapturedGraph:
    """A captured step: ``replay()`` launches it on the current stream."""

    def __init__(self, cupy, graph):
        self._cupy, self._graph = cupy, graph

    def replay(self) -> None:
        self._graph.launch(stream=self._cupy.cuda.get_current_stream())


class CudaGraphs:
    """The gpu backend's capture machinery: cuBLAS handle, memory pool, capture stream."""

    def __init__(self, backend, cupy):
        self._backend, self._cupy = backend, cupy
        self._cublas = None
        self._pool = cupy.cuda.MemoryPool()
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def _cublas_handle(self) -> Cublas:
        if self._cublas is None:
            self._cublas = Cublas(self._cupy)  # CaptureError when cuBLAS cannot be loaded
        return self._cublas

    @contextlib.contextmanager
    def kernels(self):
        """Products through our cuBLAS on the current stream, temporaries from our pool: the
        kernels of a captured step, for the steps it is compared with."""
        cublas, backend = self._cublas_handle(), self._backend
        cublas.set_stream(self._cupy.cuda.get_current_stream().ptr)
        backend._gemm = cublas.gemm
        try:
            with self._cupy.cuda.using_allocator(self._pool.malloc):
                yield
        finally:
            backend._gemm = backend._cupy_gemm

    def capture(self, step) -> CapturedGraph:
        """``step`` captured on our stream (called inside :meth:`kernels`)."""
        cupy, stream = self._cupy, self._stream
        try:
            cublas = self._cublas_handle()
            cupy.cuda.get_current_stream().synchronize()
            with stream:
                cublas.set_stream(stream.ptr)
                stream.begin_capture()
                try:
                    step()
                finally:
                    graph = stream.end_capture()
        except CaptureError:
            raise
        except Exception as error:  # the driver's or CuPy's refusal, whatever its type
            raise CaptureError(f"{type(error).__name__}: {error}") from None
        finally:
            if self._cublas is not None:
                self._cublas.set_stream(cupy.cuda.get_current_stream().ptr)
        return CapturedGraph(cupy, graph)
