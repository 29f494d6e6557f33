"""Data-parallel training across processes, machines and GPUs, on MPI and NCCL.

``mpiexec -n N dnn train ...`` (or ``Sequential.fit`` on every rank of a script started by
``mpiexec``) trains as one process does at the same **global** batch: every rank shuffles
alike, takes its contiguous share of each global batch (:func:`share`), and the gradients of
the shares, each weighted by its rows over the global batch's, are summed in one flat buffer
between the backward pass and the optimizer's update.  Parameters and optimizer state start
from rank 0's; epoch figures, evaluation and validation are summed over the ranks, so every
callback decides alike (:mod:`dnn.trainers.data_parallel`).

Distributed mode comes from the launcher's environment (:mod:`dnn.distributed.launcher`), so a
plain run never imports MPI.  Under a launcher, importing this package makes an uncaught
exception end the whole job, even before the ranks are joined (:mod:`dnn.distributed.failure`:
MPI is started then, only to abort).  The communicators: :class:`SingleProcess` (a plain run),
:class:`dnn.distributed.mpi.MpiCommunicator` (mpi4py, the extra ``dnn-framework[mpi]``) and,
for CuPy arrays, :class:`dnn.distributed.nccl.NcclCommunicator` (``cupy.cuda.nccl``), whose
all-reduce a captured CUDA graph can hold.
"""

from __future__ import annotations

import importlib
import weakref

from dnn.distributed import failure
from dnn.distributed.communicator import Communicator, SingleProcess
from dnn.distributed.launcher import launched_size
from dnn.errors import UsageError

__all__ = ["Communicator", "SingleProcess", "abort", "communicator", "for_backend",
           "launched_size", "share", "use_local_gpu"]

_process: Communicator | None = None
_by_backend: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

if launched_size() > 1:  # a failure before the ranks are joined ends the job too
    failure.install()


def communicator() -> Communicator:
    """This process's communicator, made once: :class:`SingleProcess` unless a launcher
    started several processes, else the MPI one (which limits BLAS to this machine's cores
    divided by its ranks, and ends the whole job when an exception ends this rank)."""
    global _process
    if _process is None:
        if launched_size() > 1:
            from dnn.distributed.mpi import MpiCommunicator

            _process = MpiCommunicator()
        else:
            _process = SingleProcess()
    return _process


def for_backend(backend) -> Communicator:
    """The communicator for the arrays of ``backend``: NCCL for CuPy arrays where every rank
    has it, else :func:`communicator` (which moves device arrays through the host)."""
    process = communicator()
    if process.size == 1 or backend is None:
        return process
    if backend not in _by_backend:
        _by_backend[backend] = _device_communicator(process, backend)
    return _by_backend[backend]


def _device_communicator(process: Communicator, backend) -> Communicator:
    """NCCL where ``backend``'s arrays are CuPy's and every rank can load NCCL (decided
    together, since making a NCCL communicator waits for every rank), else ``process``."""
    module = type(backend.empty((0,), "float32")).__module__.split(".")[0]
    nccl = _nccl_module() if module == "cupy" else None
    if not process.all(nccl is not None):
        return process
    from dnn.distributed.nccl import NcclCommunicator

    return NcclCommunicator(process, nccl, importlib.import_module("cupy"))


def _nccl_module():
    """``cupy.cuda.nccl`` where it imports with NCCL loaded, else None."""
    try:
        nccl = importlib.import_module("cupy.cuda.nccl")
    except Exception:  # ImportError, or a broken installation raising at import
        return None
    return nccl if getattr(nccl, "available", False) else None


def use_local_gpu() -> int:
    """Make the GPU of this rank's local rank (among those it sees, in turn) CuPy's current
    device, and return its number: one GPU per rank.  Call it before a model is built on the
    gpu backend (``dnn train`` does).  A machine whose ranks see one GPU each
    (``CUDA_VISIBLE_DEVICES`` per rank, Slurm's ``--gpus-per-task``, a MIG slice each) works
    as one that shows every rank all of them; a UsageError where two ranks would share one GPU
    (its memory and its time, unasked), which their devices' UUIDs tell."""
    import cupy

    ranks = communicator()
    number = ranks.local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(number).use()
    mine = cupy.cuda.runtime.getDeviceProperties(number)["uuid"]
    holders = [rank for rank, theirs in enumerate(ranks.gather_objects(mine)) if theirs == mine]
    if len(holders) > 1:
        raise UsageError(f"ranks {holders[0]} and {holders[1]} would share one GPU (device "
                         f"{number} of rank {ranks.rank}): start at most one rank per GPU")
    return number


def share(rows: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)``: the contiguous rows of a global batch of ``rows`` that rank
    ``rank`` of ``size`` takes; the first ``rows % size`` ranks take one row more, and a rank
    past the rows takes none (it still joins every sum, with zeros)."""
    base, extra = divmod(rows, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def abort(status: int = 1):
    """End the whole job with ``status`` (every rank, at once); a plain run exits."""
    communicator().abort(status)
