"""Atomic file writes: a temporary file beside the target, renamed over it only on success.

A symbolic link stays a link: the file it points at is the one replaced.  A path that is not a
regular file (``/dev/null``, ``/dev/stdout``, a named pipe) is written in place, since renaming
a file over it would replace the device or the pipe itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from dnn.errors import UsageError


def _create_beside(path: Path) -> tuple[int, Path]:
    """Make ``path``'s folder if it is missing and open a new hidden file next to ``path``;
    returns its descriptor (open for writing) and its path.

    The file is created with mode 0o666 less the umask, as ``open()`` would create ``path``
    itself (:func:`tempfile.mkstemp` would make it 0o600, unreadable to the user's group).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def _is_special(path) -> bool:
    """True when ``path`` (symbolic links followed) exists and is neither a regular file nor
    a folder: a device, a named pipe or a socket."""
    try:
        kind = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(kind) or stat.S_ISDIR(kind))


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield a file object whose content replaces ``path`` when the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was.  A new
    file gets the permissions ``open()`` would give it; a replaced file keeps its own.
    """
    if _is_special(path):
        with open(path, mode) as file:
            yield file
        return
    path = Path(os.path.realpath(path))
    handle, temporary = _create_beside(path)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def check_writable(path, option: str) -> None:
    """Raise a one-line :class:`UsageError` naming ``option`` unless :func:`atomic_write` can
    write ``path``: its folder is made if missing and must take a new file.  Called before a
    long job, so a mistyped destination fails in a second, not after hours of training."""
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: cannot write there (permission denied)")
        return
    try:
        handle, temporary = _create_beside(Path(os.path.realpath(path)))
    except OSError as error:
        # mkdir reports a file standing where a folder should be as "File exists"
        reason = ("a file stands where its folder should be"
                  if isinstance(error, (FileExistsError, NotADirectoryError))
                  else error.strerror or str(error))
        raise UsageError(f"{option} {path}: cannot write a file there ({reason})") from None
    os.close(handle)
    os.unlink(temporary)
