"""Atomic file writes: a temporary file beside the target, renamed over it only on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from dnn.errors import UsageError


def _beside(path: Path) -> dict:
    """Make ``path``'s folder if it is missing; the :mod:`tempfile` arguments for a hidden
    temporary file next to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"dir": path.parent, "prefix": f".{path.name}.", "suffix": ".part"}


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield a file object whose content replaces ``path`` when the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(**_beside(path))
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def check_writable(path, option: str) -> None:
    """Raise a one-line :class:`UsageError` naming ``option`` unless :func:`atomic_write` can
    write ``path``: its folder is made if missing and must take a new file.  Called before a
    long job, so a mistyped destination fails in a second, not after hours of training."""
    path = Path(path)
    try:
        with tempfile.TemporaryFile(**_beside(path)):
            pass
    except OSError as error:
        # mkdir reports a file standing where a folder should be as "File exists"
        reason = ("a file stands where its folder should be"
                  if isinstance(error, (FileExistsError, NotADirectoryError))
                  else error.strerror or str(error))
        raise UsageError(f"{option} {path}: cannot write a file there ({reason})") from None
