"""The NCCL communicator: CuPy arrays summed on the GPUs (``cupy.cuda.nccl``), the rest on MPI.

Written against CuPy's documented API (``cupy_backends/cuda/libs/nccl.pyx``): rank 0's
``get_unique_id()`` (128 bytes) is sent to the others over MPI, each rank makes
``NcclCommunicator(size, unique_id, rank)``, and ``allReduce(sendbuf, recvbuf, count,
datatype, op, stream)`` takes device pointers and the stream to run on.  The all-reduce runs
on the current stream: inside a captured step that is the capture's stream, so the graph holds
it (NCCL 2.9 and later capture; with an older NCCL the step runs eagerly) and each replay sums
that step's gradients in order with the kernels around it.  Everything else (broadcasts at the
start, settings, flags) is host work, rare, done by the MPI communicator this one wraps.
"""

from __future__ import annotations

import numpy as np

from dnn.distributed.communicator import Communicator
from dnn.errors import DnnError

CAPTURED_FROM = 20900  # NCCL_VERSION_CODE of 2.9.0, the first NCCL a CUDA graph can hold


class NcclCommunicator(Communicator):
    """NCCL for :meth:`all_reduce` of CuPy arrays, ``host`` (a Communicator: MPI) for the
    rest.  ``nccl`` is the ``cupy.cuda.nccl`` module, ``cupy`` the ``cupy`` module."""

    def __init__(self, host: Communicator, nccl, cupy):
        self._host, self._nccl, self._cupy = host, nccl, cupy
        self.in_graph = nccl.get_version() >= CAPTURED_FROM
        self.rank, self.size = host.rank, host.size
        self.local_rank, self.local_size = host.local_rank, host.local_size
        unique_id = host.broadcast_object(nccl.get_unique_id() if host.rank == 0 else None)
        self._communicator = nccl.NcclCommunicator(host.size, unique_id, host.rank)
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16,
                       np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64}

    def all_reduce(self, array, backend) -> None:
        datatype = self._types.get(np.dtype(array.dtype))
        if datatype is None or not array.flags.c_contiguous:
            raise DnnError(f"NCCL sums C-contiguous arrays of {', '.join(map(str, self._types))}"
                           f", not a {'' if array.flags.c_contiguous else 'strided '}"
                           f"{array.dtype} one")
        pointer = array.data.ptr
        self._communicator.allReduce(pointer, pointer, array.size, datatype,
                                     self._nccl.NCCL_SUM,
                                     self._cupy.cuda.get_current_stream().ptr)

    def broadcast(self, array, backend) -> None:
        self._host.broadcast(array, backend)

    def broadcast_object(self, value):
        return self._host.broadcast_object(value)

    def gather_objects(self, value) -> list:
        return self._host.gather_objects(value)

    def all(self, flag: bool) -> bool:
        return self._host.all(flag)

    def abort(self, status: int):
        self._host.abort(status)
