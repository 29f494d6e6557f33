"""The communicator interface every data-parallel run speaks, and its single-process form.

A communicator joins the ranks of one job.  Device arrays (``array``, an array of ``backend``)
are summed and broadcast in place; host values (settings, a random generator's state, flags)
travel as Python objects.  Every call is collective: every rank makes the same calls in the
same order, or the job waits forever, so a failure on one rank ends the job (:meth:`abort`).
"""

from __future__ import annotations

import sys
import time

from dnn.distributed.failure import report_prefix
from dnn.errors import UsageError

REPORT_DELAY = 1.0  # seconds a rank other than 0 waits before it reports an error (end_job)


class Communicator:
    """The ranks of one job: ``rank`` of ``size``, ``local_rank`` of the ``local_size`` on
    this machine.  ``in_graph`` says whether :meth:`all_reduce` may run inside a captured CUDA
    graph (NCCL's does; MPI's, through the host, does not)."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    in_graph = True

    def all_reduce(self, array, backend) -> None:
        """Sum the device ``array`` (C-contiguous) over the ranks, in place."""
        raise NotImplementedError

    def broadcast(self, array, backend) -> None:
        """Give every rank rank 0's values of the device ``array``, in place."""
        raise NotImplementedError

    def broadcast_object(self, value):
        """Rank 0's ``value`` (any picklable object), on every rank."""
        raise NotImplementedError

    def gather_objects(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        raise NotImplementedError

    def all(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        raise NotImplementedError

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on some rank."""
        return not self.all(not flag)

    def abort(self, status: int):
        """End every rank of the job with exit status ``status``."""
        raise NotImplementedError

    def end_job(self, report, status: int):
        """Report an error, ``report(prefix)`` printing it after ``prefix``, and end every
        rank with exit status ``status``.  A rank other than 0 waits :data:`REPORT_DELAY`
        seconds first, so that an error every rank meets (a setting refused, a file missing)
        is reported once, by rank 0, whose end ends the others.

        ``prefix`` is ``"rank N: "`` on a rank N other than 0, else empty; but a signal (a
        ``status`` above 128, 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM) is
        the job's, not the rank's: it is reported without one, the same line whichever ranks
        it reached and whichever of them reports it (rank 0 when it can; not when it waits in
        a sum that the signalled rank left, which only that rank's report ends)."""
        if self.rank > 0:
            time.sleep(REPORT_DELAY)
        report(report_prefix(self.rank, status))
        self.abort(status)

    def require_same(self, settings: dict) -> None:
        """Refuse, on every rank alike, ``settings`` (name -> a value that compares with
        ``==``) that differ between the ranks: UsageError naming the first difference."""
        difference = first_difference(self.gather_objects(settings))
        if difference is not None:
            raise UsageError(f"every rank must run with the same settings: {difference}")


def first_difference(gathered: list) -> str | None:
    """The first setting in which a rank's dict of ``gathered`` (every rank's, in rank order)
    differs from rank 0's, as ``"rank N has NAME VALUE, rank 0 VALUE"``; None where they
    agree."""
    first, *others = gathered
    for rank, theirs in enumerate(others, 1):
        for name in [*first, *(name for name in theirs if name not in first)]:
            if first.get(name) != theirs.get(name):
                return (f"rank {rank} has {name} {theirs.get(name)!r}, rank 0 "
                        f"{first.get(name)!r}")
    return None


class SingleProcess(Communicator):
    """A job of one process: every collective is that process's own value."""

    def all_reduce(self, array, backend) -> None:
        pass

    def broadcast(self, array, backend) -> None:
        pass

    def broadcast_object(self, value):
        return value

    def gather_objects(self, value) -> list:
        return [value]

    def all(self, flag: bool) -> bool:
        return bool(flag)

    def abort(self, status: int):
        sys.exit(status)
