"""Distributed mode from the launcher's environment, and the launch of ``dnn train --workers``.

MPICH's ``mpiexec`` (and Slurm's ``srun --mpi=pmi2``, Intel MPI's) sets ``PMI_SIZE`` in every
process it starts, Open MPI's ``OMPI_COMM_WORLD_SIZE``: reading them needs no MPI, so a plain
run never imports it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dnn.errors import UsageError

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
MPI_EXTRA = "pip install 'dnn-framework[mpi]'"


def launched_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


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
