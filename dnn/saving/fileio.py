"""Atomic writes: a temporary file beside the target, renamed over it only on success.

The content is flushed to disk before the rename and the folder after it, so a crash leaves
either the old file or the whole new one.  A target whose write permission is off (``chmod
444``) is refused, never replaced.  A temporary file left behind by a process that was killed
(``.NAME.<hex>.part``) is removed by the next write to the same target, once it has not been
touched for STALE_SECONDS.  A symbolic link stays a link: the file it points at is the one
replaced.  A path that is not a regular file (a named pipe, ``/dev/null``, a socket) is refused
before anything is opened: renaming a file over it would replace the pipe or the device itself,
and opening a named pipe nobody reads blocks forever.  :func:`open_in_place` opens a file that
is written as a job runs (a log), where a terminal or a pipe someone reads is taken as it is,
and :func:`check_writable`, which the command line asks before a long job, refuses what
:func:`atomic_write` refuses, without opening anything.  What the
file system refuses is a :class:`FileWriteError` naming the path, never the bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from pathlib import Path

from dnn.errors import FileWriteError, UsageError

NAME_MAX = 255  # bytes in a file name on the common file systems
STALE_SECONDS = 60
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
IN_THE_WAY = "a file stands where its folder should be"


def _temporary_prefix(path: Path) -> str:
    """``.NAME.``, with NAME cut so that ``.NAME.<8 hex>.part`` fits in NAME_MAX bytes."""
    name = os.fsencode(path.name)[:NAME_MAX - len(".._12345678.part")]
    return "." + os.fsdecode(name).encode("utf-8", "ignore").decode("utf-8", "ignore") + "."


def _create_beside(path: Path) -> tuple[int, Path]:
    """Open a new hidden file next to ``path`` (whose folder exists); returns its descriptor
    (open for writing) and its path.

    The file is created with mode 0o666 less the umask, as ``open()`` would create ``path``
    itself (:func:`tempfile.mkstemp` would make it 0o600, unreadable to the user's group).
    """
    prefix = _temporary_prefix(path)
    while True:
        temporary = path.parent / f"{prefix}{secrets.token_hex(4)}.part"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def _remove_stale_temporaries(path: Path, keep: Path) -> None:
    """Delete the temporary files of earlier writes to ``path`` that were left behind (their
    process was killed) and untouched for STALE_SECONDS, but not ``keep``."""
    pattern = re.compile(re.escape(_temporary_prefix(path)) + r"[0-9a-f]{8}\.part")
    cutoff = time.time() - STALE_SECONDS
    for candidate in path.parent.iterdir():
        if candidate != keep and pattern.fullmatch(candidate.name):
            with contextlib.suppress(OSError):
                if candidate.stat().st_mtime < cutoff:
                    candidate.unlink()


def _special_kind(path) -> str | None:
    """What ``path`` (symbolic links followed) is when it exists and is neither a regular file
    nor a folder ("a named pipe", "a character device", ...), else None."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), "a special file")


@contextlib.contextmanager
def write_errors_named(path):
    """Turn an OSError of the file system while writing ``path`` into a one-line
    :class:`FileWriteError` naming it."""
    try:
        yield
    except OSError as error:
        reason = (IN_THE_WAY if isinstance(error, (FileExistsError, NotADirectoryError))
                  else error.strerror or str(error))
        raise FileWriteError(f"cannot write {path}: {reason}", error) from None


def _protection(path: Path) -> str | None:
    """Why ``path``, an existing file, must not be replaced: its write permission is off (for
    everyone, or for this user), or it is a folder; None when it may be."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if not mode & WRITE_BITS or not os.access(path, os.W_OK):
        return f"it is write-protected (mode {stat.S_IMODE(mode):04o})"
    return None


def _refusal(path) -> str | None:
    """Why ``path`` must not be written: it is empty (it names no file: the file system would
    take it for the current folder), a named pipe, a device or a socket (symbolic links
    followed), a folder, or write-protected; None when it may be."""
    if not os.fspath(path):
        return "an empty path names no file: give the file's name"
    kind = _special_kind(path)
    if kind:
        return f"it is {kind}, not a regular file"
    return _protection(Path(os.path.realpath(path)))


def _refuse(path, doing: str) -> None:
    """A one-line :class:`UsageError` ("PATH: not DOING it, it is ...") when ``path`` must
    not be written (:func:`_refusal`)."""
    refusal = _refusal(path)
    if refusal:
        raise UsageError(f"{_shown(path)}: not {doing} it, {refusal}")


def _shown(path) -> str:
    """``path`` as an error message names it: as it is, or ``''`` when it is empty."""
    return str(path) if os.fspath(path) else repr(os.fspath(path))


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of a renamed file to disk (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield a file object whose content replaces ``path`` when the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was.  A new
    file gets the permissions ``open()`` would give it; a replaced file keeps its own; a
    write-protected one, a folder, a named pipe, a device or a socket is refused with a
    :class:`UsageError`.  The folder is made if missing; what the file system refuses on the
    way (a file standing where that folder should be, a full disk) is a
    :class:`FileWriteError`; errors of the block itself go through as they are.
    """
    _refuse(path, "replacing")
    path = Path(os.path.realpath(path))
    with write_errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _create_beside(path)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            with write_errors_named(path):
                file.flush()
                os.fsync(file.fileno())
        with write_errors_named(path):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
            os.replace(temporary, path)
            _sync_folder(path.parent)
        _remove_stale_temporaries(path, keep=temporary)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def open_in_place(path, mode: str = "w", **options):
    """``open(path, mode, **options)`` for a file written as a job runs, not replaced at its
    end (a log that keeps the lines of an interrupted job).  Written as it is, to write only:
    a character device (a terminal, ``/dev/stdout``, ``/dev/null``) and a named pipe that
    someone reads; refused as :func:`atomic_write` refuses a path, any other special file, a
    pipe no one reads (opening it would block) and, for a mode that reads too (``"a+"``),
    anything but a regular file.  What the file system refuses is a :class:`FileWriteError`
    naming ``path``; errors of the writes that follow are the caller's to name, with
    :func:`write_errors_named`."""
    kind = _special_kind(path)
    if kind not in ("a named pipe", "a character device") or "+" in mode or "r" in mode:
        _refuse(path, "writing to")
    elif kind == "a named pipe":  # opened without waiting: ENXIO when no one reads it
        try:
            handle = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise FileWriteError(f"cannot write {path}: {error.strerror}", error) from None
            raise UsageError(f"{path}: not writing to it, it is a named pipe no one reads "
                             "(writing would wait for ever)") from None
        os.set_blocking(handle, True)
        return os.fdopen(handle, mode, **options)
    with write_errors_named(path):
        return open(path, mode, **options)


def check_writable(path, option: str) -> None:
    """Raise a one-line :class:`UsageError` naming ``option`` unless :func:`atomic_write` can
    replace ``path`` by a regular file: not write-protected, not a folder, a named pipe, a
    device or a socket, and its folder (or the nearest one that exists, which must take a new
    folder) writable.  Called before a long job, so a mistyped destination fails in a
    second, not after hours of training; it creates nothing and opens nothing."""
    refusal = _refusal(path)
    if refusal:
        raise UsageError(f"{option} {_shown(path)}: cannot write there ({refusal})")
    target = Path(os.path.realpath(path))
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: cannot write a file there ({IN_THE_WAY})")
    if folder != target.parent:  # the folders to make are checked by making none of them
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {path}: cannot write a file there (cannot make a "
                             f"folder in {folder})")
        return
    try:
        handle, temporary = _create_beside(target)
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write a file there "
                         f"({error.strerror or error})") from None
    os.close(handle)
    os.unlink(temporary)
