"""Distributed mode from the launcher's environment, and the launch of ``dnn train --workers``.

MPICH's ``mpiexec`` (and Slurm's ``srun --mpi=pmi2``, Intel MPI's) sets ``PMI_SIZE`` and
``PMI_RANK`` in every process it starts, Open MPI's ``OMPI_COMM_WORLD_SIZE`` and
``OMPI_COMM_WORLD_RANK``: reading them needs no MPI, so a plain run never imports it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dnn.errors import UsageError

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
MPI_EXTRA = "pip install 'dnn-framework[mpi]'"


def launched_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher numbered it (0 without a launcher), known before
    MPI is started."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the venv's own, from the ``mpich`` wheel), else the
    one on ``PATH``; UsageError with the fix when there is none."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise UsageError(f"--workers starts mpiexec, which is not installed: {MPI_EXTRA}")
    return found


def workers_command(workers: int, arguments: list[str]) -> list[str]:
    """The command that runs ``python -m dnn`` with ``arguments`` on ``workers`` processes
    of this machine."""
    return [mpiexec(), "-n", str(workers), sys.executable, "-m", "dnn", *arguments]
