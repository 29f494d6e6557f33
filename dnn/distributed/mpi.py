"""The MPI communicator (mpi4py, the extra ``dnn-framework[mpi]``): host collectives, and device
arrays summed and broadcast through the host.

A device array that is not a NumPy one (CuPy's, on GPUs where NCCL is missing on some rank) is
copied to the host (``backend.to_numpy``, which waits for the GPU's work queued before it),
summed there and copied back.  A captured CUDA graph cannot hold a host copy and an MPI call, so
this communicator says ``in_graph = False`` and a training step that sums with it is never
captured: every step runs eagerly (:class:`dnn.trainers.step.ReplayedStep`), without a
``GraphFallbackWarning`` (nothing failed), and the sum is outside any graph.

An exception that ends one rank must end the job: the other ranks wait in their next collective
for one that never comes (a plain ``sys.exit(1)`` on one rank hangs MPICH, Open MPI and Intel MPI
alike).  So, once this communicator is made, an exception that reaches the top of a rank prints
its traceback and aborts the job (``MPI_Abort``) with the status the command line gives it:
2 for a usage error, 130 for Ctrl-C, 1 for the others (:meth:`Communicator.end_job`: reported
once where every rank meets it; a signal's without the rank's name).  Before it is made, the
hook of :mod:`dnn.distributed.failure` aborts the job; ``sys.exit`` calls no hook, which
``fit`` covers inside it (:func:`dnn.trainers.data_parallel.end_job_at_exit`) and
``python -m mpi4py`` elsewhere (for a status other than 0).  A script that catches an error
on one rank ends the job itself, with :func:`dnn.distributed.abort`.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from dnn.distributed.communicator import Communicator
from dnn.distributed.failure import (abort_world, ends_the_job, exit_status, hook_before_dnn,
                                     write_exception)
from dnn.distributed.launcher import MPI_EXTRA, SIZE_VARIABLES, launched_size
from dnn.distributed.threads import limit_blas_threads
from dnn.errors import DnnError, UsageError


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DnnError(f"the launcher started {launched_size()} processes, but mpi4py is not "
                       f"installed: {MPI_EXTRA}") from None
    return MPI


class MpiCommunicator(Communicator):
    """``MPI.COMM_WORLD``.  Made once per process (see :func:`dnn.distributed.communicator`):
    it limits BLAS to this machine's cores divided by its ranks and installs the abort on an
    uncaught exception."""

    in_graph = False

    def __init__(self):
        self._mpi = _import_mpi()
        self._world = self._mpi.COMM_WORLD
        self.rank, self.size = self._world.Get_rank(), self._world.Get_size()
        if self.size != launched_size():  # a launcher's variable, without its launcher
            names = " or ".join(SIZE_VARIABLES)
            raise UsageError(f"{names} says {launched_size()} processes, but MPI started "
                             f"{self.size}: start the job with mpiexec, or unset the variable "
                             "to train in one process")
        machine = self._world.Split_type(self._mpi.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = machine.Get_rank(), machine.Get_size()
        machine.Free()
        limit_blas_threads(self.local_size)
        self._previous_hook = hook_before_dnn(sys.excepthook)  # the user's, or Python's
        self._process = os.getpid()
        sys.excepthook = self._abort_on_exception

    def _abort_on_exception(self, kind, error, trace) -> None:
        if not ends_the_job(self._process):  # a fork's, or typed at the prompt
            self._previous_hook(kind, error, trace)
            return

        def report(prefix: str) -> None:
            write_exception(self._previous_hook, prefix, kind, error, trace)

        self.end_job(report, exit_status(error))

    def all_reduce(self, array, backend) -> None:
        self._in_place(array, backend, lambda host: self._world.Allreduce(
            self._mpi.IN_PLACE, host, op=self._mpi.SUM))

    def broadcast(self, array, backend) -> None:
        self._in_place(array, backend, lambda host: self._world.Bcast(host, root=0))

    def _in_place(self, array, backend, collective) -> None:
        """Run ``collective`` on a host array holding ``array``'s values, then write them
        back: ``array`` itself where it is a C-contiguous NumPy array, else a host copy."""
        if isinstance(array, np.ndarray) and array.flags.c_contiguous:
            collective(array)
            return
        host = np.ascontiguousarray(backend.to_numpy(array))
        collective(host)
        array[...] = backend.asarray(host)

    def broadcast_object(self, value):
        return self._world.bcast(value, root=0)

    def gather_objects(self, value) -> list:
        return self._world.allgather(value)

    def all(self, flag: bool) -> bool:
        return bool(self._world.allreduce(bool(flag), op=self._mpi.LAND))

    def abort(self, status: int):
        abort_world(self._world, status)
