"""Stream each epoch's figures to a CSV file, as Keras' ``CSVLogger`` writes it."""

from __future__ import annotations

import collections.abc
import csv
import os

import numpy as np

from dnn.callbacks.arguments import check_flag, check_path
from dnn.callbacks.callback import Callback
from dnn.errors import ArgumentTypeError, UsageError
from dnn.saving.fileio import open_in_place, write_errors_named


class CSVLogger(Callback):
    """Write one row per epoch to the CSV file ``filename``, as Keras does: the header
    ``epoch`` and the figures of the first epoch's logs in alphabetical order, then each
    epoch's index (from 0) and figures; a figure an epoch lacks is ``NA``.  When the first
    epoch has no ``val_`` figure, a ``val_`` column is added for each figure (which stays
    ``NA`` unless later epochs bring it).  Lines end in ``\\r\\n`` (the csv module's default,
    and what Keras writes on Linux).

    Each row is written and flushed as its epoch ends, so an interrupted run keeps the rows
    of the epochs it finished.  A terminal (``"/dev/stdout"``) or a named pipe someone reads
    is written as it is; a write-protected file, a pipe no one reads and other special files
    are refused, as is anything but a regular file to append to; what the file system
    refuses (a full disk) is a :class:`~dnn.errors.FileWriteError` naming it.

    Args:
        filename: the CSV file's path, e.g. ``"run/log.csv"``; its folder must exist.
        separator: the one character between the fields.
        append: True to add to the file if it exists (without a second header when it has
            one; it must be UTF-8 text), for a resumed run; False to overwrite it.

    Example::

        model.fit(x, y, callbacks=[CSVLogger("training.log")])
    """

    writes_files = True

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = check_path("CSVLogger", "filename", filename)
        if not isinstance(separator, str):
            raise ArgumentTypeError(f"CSVLogger separator must be a str, not {separator!r}")
        if len(separator) != 1:
            raise UsageError(f"CSVLogger separator must be one character, not {separator!r}")
        check_flag("CSVLogger", "append", append)
        folder = os.path.dirname(self.filename) or "."
        if not os.path.isdir(folder):
            raise UsageError(f"CSVLogger cannot write {self.filename}: the folder {folder} "
                             "does not exist")
        self.sep, self.append = separator, append
        self.csv_file = self.writer = self.keys = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        self._close()  # a file left open by a fit that never ended
        self.csv_file = open_in_place(self.filename, "a+" if self.append else "w",
                                      newline="", encoding="utf-8")
        self.append_header = not (self.append and self._has_header())
        self.keys = None

    def _has_header(self) -> bool:
        """Whether the file, open to append, has a first line; a UsageError naming it when
        that line is not UTF-8 text."""
        self.csv_file.seek(0)
        try:
            first_line = self.csv_file.readline()
        except UnicodeDecodeError:
            self._close()
            raise UsageError(f"CSVLogger cannot append to {self.filename}: it is not UTF-8 "
                             "text") from None
        self.csv_file.seek(0, os.SEEK_END)
        return bool(first_line)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]
        with write_errors_named(self.filename):  # a full disk, say
            if self.writer is None:
                self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch", *self.keys],
                                             delimiter=self.sep)
                if self.append_header:
                    self.writer.writeheader()
            self.writer.writerow({"epoch": epoch, **{key: _field(logs.get(key, "NA"))
                                                     for key in self.keys}})
            self.csv_file.flush()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self) -> None:
        self.writer = None
        if self.csv_file is not None and not self.csv_file.closed:
            with write_errors_named(self.filename):
                self.csv_file.close()


def _field(value):
    """A figure as Keras writes it: a string or a number as it is, any other iterable (an
    array's values, say) as ``"[a, b, ...]"`` in quotes."""
    if isinstance(value, str) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value
    if isinstance(value, collections.abc.Iterable):
        return f'"[{", ".join(map(str, value))}]"'
    return value
