"""The ``dnn`` console script: the command line, with a Ctrl-C while it starts as one line."""

import sys


def main() -> None:
    try:
        from dnn.cli import main as command_line
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted (Ctrl-C) while starting; nothing was done\n")
        sys.exit(130)
    command_line()
