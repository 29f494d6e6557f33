"""Stream each epoch's figures to a CSV file, as Keras' ``CSVLogger`` writes it."""

from __future__ import annotations

import collections.abc
import csv
import os

import numpy as np

from dnn.callbacks.arguments import check_flag, check_path
from dnn.callbacks.callback import Callback
from dnn.errors import ArgumentTypeError, UsageError


class CSVLogger(Callback):
    """Write one row per epoch to the CSV file ``filename``, as Keras does: the header
    ``epoch`` and the figures of the first epoch's logs in alphabetical order, then each
    epoch's index (from 0) and figures; a figure an epoch lacks is ``NA``.  When the first
    epoch has no ``val_`` figure, a ``val_`` column is added for each figure (which stays
    ``NA`` unless later epochs bring it).  Lines end in ``\\r\\n`` (the csv module's default,
    and what Keras writes on Linux).

    Each row is written and flushed as its epoch ends, so an interrupted run keeps the rows
    of the epochs it finished.

    Args:
        filename: the CSV file's path, e.g. ``"run/log.csv"``; its folder must exist.
        separator: the one character between the fields.
        append: True to add to the file if it exists (without a second header when it has
            one), for a resumed run; False to overwrite it.

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
        self.append_header = not (self.append and self._has_header())
        self.csv_file = self._open("a" if self.append else "w")
        self.keys = None

    def _has_header(self) -> bool:
        """Whether the file exists and has a first line."""
        if not os.path.exists(self.filename):
            return False
        with self._open("r") as file:
            return bool(file.readline())

    def _open(self, mode: str):
        try:
            return open(self.filename, mode, newline="", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"CSVLogger cannot open {self.filename}: "
                             f"{error.strerror or error}") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]
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
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None


def _field(value):
    """A figure as Keras writes it: a string or a number as it is, any other iterable (an
    array's values, say) as ``"[a, b, ...]"`` in quotes."""
    if isinstance(value, str) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value
    if isinstance(value, collections.abc.Iterable):
        return f'"[{", ".join(map(str, value))}]"'
    return value
