"""The ``dnn`` console script and ``python -m dnn``: the command line, with a Ctrl-C while it
starts as one line.

A Ctrl-C reaches dnn's code in three stretches:

1. Before any of it runs: the interpreter's own start (``site``, the ``.pth`` files and, in an
   editable install, setuptools' import finder), then ``dnn/__init__.py`` (which imports
   ``importlib`` alone) and this module, until the console script (or ``dnn/__main__.py``)
   calls :func:`main`.  Nothing of dnn can handle it there: Python prints its own traceback
   of whatever was importing (about 40 ms from the start on a current machine, most of it
   Python's).  Nothing has been done by then.
2. From :func:`main` until a command starts: :func:`_interrupted_while_starting` prints one
   line and exits 130 at once, wherever the import of the command line (click, NumPy, the
   backends) was: no exception travels through the import machinery, so none can surface as
   a traceback or as an "Exception ignored" warning.
3. While a command runs: :func:`dnn.cli.commands.reports_errors` makes it a
   KeyboardInterrupt, reported in one line that says what was saved (exit 130).

Once the command is over (its result printed, the process exiting), a Ctrl-C ends the process
as the signal does by default, silently: there is nothing left to report.
"""

import os
import signal

STARTING = "Error: interrupted (Ctrl-C) while starting; nothing was done\n"


def _interrupted_while_starting(signum, frame) -> None:
    """SIGINT before a command runs: one line, exit 130, nothing to clean up."""
    os.write(2, STARTING.encode())
    os._exit(128 + signal.SIGINT)


def main() -> None:
    """Run the ``dnn`` command line (the console script's entry point, and ``python -m
    dnn``'s), named ``dnn`` in its usage lines however it was started; a SIGINT the process
    was started ignoring (a background job's) stays ignored."""
    handled = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    if handled:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from dnn.cli import main as command_line

        command_line(prog_name="dnn")
    finally:
        if handled:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
