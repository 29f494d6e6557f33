"""BLAS threads per rank: the machine's cores shared among its ranks.

NumPy's OpenBLAS starts one thread per core in every process; N ranks on one machine would run
N times as many threads as it has cores, each product waiting on the others.  The environment
variables that set its threads are read once, when it is loaded (before dnn runs), so the
count is set through the loaded library itself.  dnn's own threads (the cpu backend's
optimizer updates) take the same share: :func:`process_threads`.
"""

from __future__ import annotations

import ctypes
import os

from dnn import distributed

# What the user set, which is kept: each is read by some BLAS at its start.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Setters of the thread count, as NumPy's wheels (scipy-openblas), OpenBLAS and MKL name them.
SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
           "openblas_set_num_threads64_", "openblas_set_num_threads", "MKL_Set_Num_Threads")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (which ``taskset``, a container's
    cpuset or a batch scheduler narrows) where the system tells it, else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads(local_ranks: int) -> int:
    """The cores this process may use divided by ``local_ranks`` (the ranks its machine
    runs), at least 1."""
    return max(1, usable_cores() // max(local_ranks, 1))


def process_threads() -> int:
    """The threads this process may keep busy: :func:`default_threads` of the ranks on this
    machine (the communicator's ``local_size``: 1 in a plain run, which never imports MPI)."""
    return default_threads(distributed.communicator().local_size)


def limit_blas_threads(local_ranks: int) -> int | None:
    """Set the BLAS libraries loaded in this process to :func:`default_threads` threads,
    unless the user chose a count with one of :data:`THREAD_VARIABLES`; returns the count set,
    or None when it was left alone."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return None
    threads = default_threads(local_ranks)
    for path in _loaded_blas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                break
    return threads


def _loaded_blas() -> list[str]:
    """The files of the BLAS libraries mapped in this process (Linux; none elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return []
    return sorted(path for path in paths
                  if "openblas" in os.path.basename(path).lower()
                  or os.path.basename(path).startswith("libmkl_rt"))
