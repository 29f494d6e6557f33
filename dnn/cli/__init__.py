"""The ``dnn`` command line: ``train``, ``evaluate``, ``plugins``, ``check``."""

from dnn.cli.commands import main

__all__ = ["main"]
