"""CUDA graphs for the gpu backend: a training step captured once and replayed per batch.

On a small network the GPU is launch-bound: the seed network's step is ~0.3 GFLOP but ~15
kernel launches and the Python around each.  Replaying the step as one graph launch removes
both.  What a capture needs, as read in CuPy 14's source and measured on an H200:

- the products through cuBLAS of our own (:mod:`dnn.backends.cublas`), since CuPy refuses
  cuBLAS while a stream captures;
- a stream of its own to capture on (the default stream cannot be captured);
- the step's temporaries from a memory pool of their own, warmed on that stream: CuPy's
  ``MemoryPool`` keeps free blocks per stream, so the eager warm-up runs on the capture stream
  and the capture then finds the blocks it asks for already there (CuPy captures in relaxed
  mode, so a new allocation would be legal, but it is one more ``cudaMalloc`` per capture).
  A warm-up from an empty pool is not enough: the pool's best fit among the blocks the
  warm-up left free may split one the capture later asks for whole.  The step is warmed up
  again until a warm-up takes no new block (``pool_grew``, counted by the pool's allocator):
  the capture, starting where that one started (no array a step makes outlives it), then
  makes the same choices, but where two free blocks of one size tie (CuPy orders them by
  the address of its Python chunk objects, which differ from run to run): a capture may
  then still take a block, which the relaxed capture mode allows.
  The addresses a graph holds stay its own: after a capture the pool goes with the graph,
  which nothing else allocates from or trims (``free_all_blocks`` would free memory the
  graph writes), and the next warm-up starts a new one.  The buffers a warm-up makes, kept
  from step to step, come from the allocator in use outside, not from that pool.

Replays are launched on the current stream, in order with the host's writes of each batch's
indices (made there) and the reads of the epoch's totals.  The steps run with these kernels
(the warm-up, the eager steps a replay is checked against) wait for the current stream before
they start, and it for them.  :mod:`dnn.trainers.step` decides when to capture and checks each new graph
against the eager step.
"""

from __future__ import annotations

import contextlib
import weakref

from dnn.backends.cublas import Cublas
from dnn.errors import CaptureError, Terminated


class CapturedGraph:
    """A captured step: ``replay()`` launches it on the current stream.  It holds the memory
    pool its temporaries live in, so that the pool outlives it, and hands that pool's blocks
    back to the device once it is gone (CuPy 14.1 and later free no pool's blocks when the
    pool is dropped)."""

    def __init__(self, cupy, graph, pool):
        self._cupy, self._graph, self._pool = cupy, graph, pool
        weakref.finalize(self, pool.free_all_blocks)

    def replay(self) -> None:
        self._graph.launch(stream=self._cupy.cuda.get_current_stream())


class CountedAllocations:
    """The device allocations of a capture's pool (its ``allocator``, as CuPy's own makes
    them), counted in ``made``: a pool that ran out trims its free blocks before it allocates
    again, so its total bytes would not tell."""

    def __init__(self, cuda):
        self._cuda, self.made = cuda, 0

    def __call__(self, size: int):
        self.made += 1
        return self._cuda.MemoryPointer(self._cuda.Memory(size), 0)


class CudaGraphs:
    """The gpu backend's capture machinery: cuBLAS handle, capture stream, the pool of the
    next capture.  Raises :class:`CaptureError` when cuBLAS cannot be loaded."""

    def __init__(self, backend, cupy):
        self._backend, self._cupy = backend, cupy
        self._cublas = Cublas(cupy)
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._allocator_outside = None  # the allocator in use where kernels() was entered
        self.pool_grew = False  # whether the last kernels() block took new memory for the pool
        self._new_pool()

    def _new_pool(self) -> None:
        """Start the pool of the next warm-up and capture, whose blocks go back to the device
        when this object is gone (CuPy 14.1 and later free none of a dropped pool's), unless a
        graph took the pool by then."""
        self._allocations = CountedAllocations(self._cupy.cuda)
        self._pool = self._cupy.cuda.MemoryPool(self._allocations)
        self._release_pool = weakref.finalize(self, self._pool.free_all_blocks)

    @contextlib.contextmanager
    def kernels(self):
        """Run a step as a capture runs it: on our stream, after the work queued on the
        current one, with products through our cuBLAS and temporaries from the pool the next
        capture takes."""
        cupy, stream, backend = self._cupy, self._stream, self._backend
        cupy.cuda.get_current_stream().synchronize()  # the batch's indices are written there
        self._allocator_outside = cupy.cuda.get_allocator()
        allocations, made = self._allocations, self._allocations.made
        try:
            with stream, cupy.cuda.using_allocator(self._pool.malloc):
                self._cublas.set_stream(stream.ptr)
                backend._gemm = self._cublas.gemm
                yield
        finally:
            backend._gemm = backend._cupy_gemm
            self._allocator_outside = None
            self.pool_grew = allocations.made > made
            stream.synchronize()  # the current stream reads what it wrote

    @contextlib.contextmanager
    def allocating_outside(self):
        """Allocate from the allocator in use outside :meth:`kernels`, inside them too: for an
        array kept from step to step (a buffer made in the warm-up).  From the pool of the
        next capture it would be on memory that goes with the graph, and once the graph and
        its pool are gone its allocation would never go back to the device where the pool
        had split it (CuPy 14's chunks are freed only through their pool)."""
        cuda = self._cupy.cuda
        with cuda.using_allocator(self._allocator_outside or cuda.get_allocator()):
            yield

    def capture(self, step) -> CapturedGraph:
        """``step`` captured on our stream (called inside :meth:`kernels`, after a warm-up in
        it); the pool it allocated from goes with the graph.  What the step raises (the
        driver's or CuPy's refusal, as it is or as a plugin's error) is a
        :class:`CaptureError`, but for a request to stop (Ctrl-C, SIGTERM's
        :class:`Terminated`), which goes through, the capture ended."""
        stream = self._stream
        try:
            stream.begin_capture()
            try:
                step()
            except BaseException:
                with contextlib.suppress(Exception):  # the step's error is the one to see
                    stream.end_capture()
                raise
            graph = stream.end_capture()
        except Exception as error:  # the driver's or CuPy's refusal, whatever its type
            if isinstance(error, (CaptureError, Terminated)):
                raise
            raise CaptureError(f"{type(error).__name__}: {error}") from error
        pool = self._pool
        self._release_pool.detach()  # the graph's now: it frees the pool once it is gone
        self._new_pool()
        return CapturedGraph(self._cupy, graph, pool)

