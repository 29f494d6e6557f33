"""How an exception that ends one rank ends the whole job, before dnn has joined the ranks too.

Under a launcher, the other ranks of a job wait for a rank that left: in their next collective,
or in ``MPI_Init`` itself, which waits for every rank to start MPI (MPICH's ``mpiexec`` then
never ends the job, whatever the status the rank exited with).  Once the MPI
communicator is made, its ``sys.excepthook`` aborts the job (:mod:`dnn.distributed.mpi`).
Before that, from the moment :mod:`dnn.distributed` is imported (``from dnn import
distributed``, or the first model or backend a script makes), :class:`AbortBeforeJoining` is
the hook: it prints the exception at once, then starts MPI on this rank only to abort the job
with the status of a single process (``MPI_Abort``), which ends the others wherever they wait.
Starting MPI waits for every rank to start it; where the others never do (a rank that exits
without ever training), this rank ends itself after :data:`JOIN_WAIT` seconds by ``SIGALRM``,
which the launcher takes for the job's end.  Nothing here imports MPI until an exception
reaches the top, and a plain run (no launcher) never installs the hook.  Only the process the
launcher started is a rank: a process it starts (a Python subprocess importing dnn inherits
the launcher's variables) or forks ends alone, as does an error typed at Python's prompt,
which is the user's to see and go on from (:func:`ends_the_job`; the hook of a joined rank,
:mod:`dnn.distributed.mpi`, asks it too).

``sys.exit(N)`` is no exception to a hook (Python exits without calling one): run a script with
``python -m mpi4py script.py``, whose runner aborts the job with that status once MPI is
started (docs/distributed.md, "When something fails").
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
import traceback

from dnn.distributed.launcher import launched_rank
from dnn.errors import UsageError

SIGNALLED = 128  # an exit status above this one is 128 + the number of the signal that ended it
JOIN_WAIT = 60  # seconds a rank that failed before joining waits for the others to start MPI
RANK_PROCESS = "DNN_RANK_PROCESS"  # the id of the rank's own process, for the ones it starts
ANCESTORS_LOOKED_AT = 64  # processes up the tree, at most
FORWARD_DELAY = 0.2  # for the launcher to forward what was written before an abort ends it


def exit_status(error: BaseException) -> int:
    """The exit status of a job ended by ``error``: 130 for Ctrl-C, 2 for a usage error, 1
    otherwise."""
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 2 if isinstance(error, UsageError) else 1


def report_prefix(rank: int, status: int) -> str:
    """What an error's report starts with: ``"rank N: "`` on a rank N other than 0, but
    nothing for a signal (a ``status`` above 128), which is the job's, not the rank's."""
    return f"rank {rank}: " if rank > 0 and status <= SIGNALLED else ""


def write_exception(hook, prefix: str, kind, error, trace) -> None:
    """Print an uncaught exception after ``prefix``: through ``hook``, the ``sys.excepthook``
    that was there before dnn's, where it is a user's; else its traceback in one write, which
    the launcher forwards whole (not mixed with another rank's lines)."""
    if hook is not sys.__excepthook__:
        sys.stderr.write(prefix)
        hook(kind, error, trace)
        return
    sys.stderr.flush()
    lines = traceback.format_exception(kind, error, trace)
    os.write(2, f"{prefix}{''.join(lines)}".encode())


def abort_world(world, status: int) -> None:
    """``MPI_Abort`` of ``world`` (an mpi4py communicator) with ``status``, after what this
    process wrote had time to reach the launcher."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(FORWARD_DELAY)
    world.Abort(status)


class AbortBeforeJoining:
    """``sys.excepthook`` of a rank under a launcher until its MPI communicator is made: the
    exception is printed (after ``"rank N: "`` on a rank N other than 0), then the job is
    aborted with :func:`exit_status` (module docstring).  ``previous`` is the hook it
    replaced."""

    def __init__(self, previous):
        self.previous = previous
        self.process = os.getpid()

    def __call__(self, kind, error, trace) -> None:
        if not ends_the_job(self.process):
            self.previous(kind, error, trace)
            return
        status = exit_status(error)
        write_exception(self.previous, report_prefix(launched_rank(), status), kind, error,
                        trace)
        abort_after_joining(status)


def abort_after_joining(status: int) -> None:
    """Start MPI on this rank (where it is not yet) and abort the job with ``status``; after
    :data:`JOIN_WAIT` seconds waiting for the other ranks to start it, SIGALRM ends this rank.
    Without mpi4py, or with MPI already finalized, nothing: the rank exits as it would."""
    if importlib.util.find_spec("mpi4py") is None:
        return
    end_this_rank_after(JOIN_WAIT)
    from mpi4py import MPI

    if not MPI.Is_initialized():  # mpi4py.rc.initialize False: the user starts MPI
        MPI.Init()
    if not MPI.Is_finalized():
        abort_world(MPI.COMM_WORLD, status)
    end_this_rank_after(0)  # the script finalized MPI: nothing to abort, nothing to wait for


def end_this_rank_after(seconds: int) -> None:
    """Have the system end this process with SIGALRM in ``seconds`` (0: no longer; POSIX,
    from the main thread; elsewhere nothing): a wait in MPI's C code holds the interpreter,
    so only the signal's default action can end it."""
    if not hasattr(signal, "alarm"):
        return
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    except ValueError:  # not the main thread
        return
    signal.alarm(seconds)


def ends_the_job(process: int) -> bool:
    """Whether an exception reaching the top here ends the job: in ``process`` (the rank's,
    where its hook was installed), not in a fork of it, and not typed at Python's prompt
    (``python -i`` once its script ran: an error in the script itself still ends the job,
    which no one may be there to go on with)."""
    return os.getpid() == process and not hasattr(sys, "ps1")


def install() -> None:
    """Make :class:`AbortBeforeJoining` this process's ``sys.excepthook`` (once), where this
    is the process the launcher started: the first to install it marks the environment with
    its process id (:data:`RANK_PROCESS`); a process started by it (its descendant) then
    installs none.  A mark of a process that is no ancestor (left in the environment by
    another job) is replaced."""
    marked = os.environ.get(RANK_PROCESS, "")
    if marked.isdigit() and int(marked) != os.getpid() and _descends_from(int(marked)):
        return
    os.environ[RANK_PROCESS] = str(os.getpid())
    if not isinstance(sys.excepthook, AbortBeforeJoining):
        sys.excepthook = AbortBeforeJoining(sys.excepthook)


def _descends_from(process: int) -> bool:
    """Whether ``process`` is this one's parent, or an ancestor where ``/proc`` tells."""
    current = os.getpid()
    for _ in range(ANCESTORS_LOOKED_AT):
        parent = os.getppid() if current == os.getpid() else _parent_of(current)
        if parent is None or parent <= 1:
            return False
        if parent == process:
            return True
        current = parent
    return False


def _parent_of(process: int) -> int | None:
    """The parent of ``process`` from ``/proc`` (Linux), else None."""
    try:
        with open(f"/proc/{process}/stat") as status:
            return int(status.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def hook_before_dnn(hook):
    """The ``sys.excepthook`` that ``hook`` replaced where it is :class:`AbortBeforeJoining`,
    else ``hook``."""
    return hook.previous if isinstance(hook, AbortBeforeJoining) else hook
