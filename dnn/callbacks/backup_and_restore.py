"""Back up the training state after each epoch; a fit that was interrupted resumes from it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from dnn.callbacks.arguments import check_flag, check_path
from dnn.callbacks.callback import Callback
from dnn.errors import CheckpointError, UsageError
from dnn.saving.fileio import atomic_write, write_errors_named
from dnn.utils import is_int_at_least


class BackupAndRestore(Callback):
    """Keras' ``BackupAndRestore``: back up the training state (the weights, the optimizer's
    state and the number of epochs done) in ``backup_dir`` at the end of every epoch, each
    backup replacing the last; at the start of ``fit``, restore it, so that a fit that was
    interrupted (an error, Ctrl-C, a killed process) resumes, run again with the same model
    and arguments, from its last completed epoch.  The backup is deleted once a fit ends
    normally (all its epochs, or a callback's stop), and kept when it ends by an error.

    The files are Keras' (``latest.weights.npz``, written by ``model.save_weights``, and
    ``training_metadata.json``, ``{"epoch": ..., "batch": ...}``), each written atomically;
    only they, their ``.bkp`` copies and ``backup_dir`` once empty are ever deleted.

    Args:
        backup_dir: the folder of the backup (made if missing); give each run its own.
        save_freq: ``"epoch"`` to back up at the end of every epoch, or an integer N to back
            up every N batches (a restore then resumes at the start of the epoch that was
            under way, from the weights of its last backup, as Keras does).
        double_checkpoint: keep the backup before the last as well (``.bkp`` files), and
            restore it when the last cannot be read.
        delete_checkpoint: delete the backup when a fit ends normally.

    Example::

        backup = BackupAndRestore("/tmp/backup")
        model.fit(x, y, epochs=10, callbacks=[backup])  # interrupted in epoch 4 (from 0)
        model.fit(x, y, epochs=10, callbacks=[backup])  # runs epochs 4 to 9

    Data-parallel, it runs on rank 0 alone (``writes_files``); its restore reaches the other
    ranks with rank 0's state.
    """

    writes_files = True

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False,
                 delete_checkpoint=True):
        super().__init__()
        if backup_dir is None or backup_dir == "":
            raise UsageError("Empty `backup_dir` argument passed")
        self.backup_dir = check_path("BackupAndRestore", "backup_dir", backup_dir)
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise UsageError(f"BackupAndRestore backup_dir {self.backup_dir} is a file, not a "
                             "folder")
        if save_freq != "epoch" and not is_int_at_least(save_freq, 1):
            raise UsageError(f"Invalid value for argument `save_freq`. Received: "
                             f"save_freq={save_freq!r}. Expected either 'epoch' or a positive "
                             "integer.")
        check_flag("BackupAndRestore", "double_checkpoint", double_checkpoint)
        check_flag("BackupAndRestore", "delete_checkpoint", delete_checkpoint)
        self.save_freq, self.double_checkpoint = save_freq, double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._weights_path = os.path.join(self.backup_dir, "latest.weights.npz")
        self._training_metadata_path = os.path.join(self.backup_dir, "training_metadata.json")
        self._prev_weights_path = f"{self._weights_path}.bkp"
        self._prev_training_metadata_path = f"{self._training_metadata_path}.bkp"
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0  # epochs done, as the last backup records them
        self._in_epoch = False  # an epoch has begun and not ended

    def on_train_begin(self, logs=None):
        self._in_epoch = False
        try:
            self._load_model()
        except (OSError, CheckpointError):
            if not os.path.exists(self._prev_weights_path):
                raise
            _copy(self._prev_weights_path, self._weights_path)
            if os.path.exists(self._prev_training_metadata_path):
                _copy(self._prev_training_metadata_path, self._training_metadata_path)
            elif os.path.exists(self._training_metadata_path):
                os.remove(self._training_metadata_path)
            self._load_model()

    def _load_model(self) -> None:
        """Restore the backup, if any: the weights in place, and the epoch to resume from as
        ``model._initial_epoch``, which ``fit`` reads after ``on_train_begin``."""
        if not self.model.built:
            raise UsageError("To use the BackupAndRestore callback, the model must be built "
                             "before fit() starts: build() it, or give its first layer "
                             "input_shape")
        if os.path.exists(self._weights_path):
            self.model.load_weights(self._weights_path)
        if os.path.exists(self._training_metadata_path):
            self._current_epoch = self._read_epoch()
            self.model._initial_epoch = self._current_epoch

    def _read_epoch(self) -> int:
        """The epochs done that the metadata file records; CheckpointError if it is damaged."""
        path = self._training_metadata_path
        try:
            with open(path, encoding="utf-8") as file:
                epoch = json.load(file)["epoch"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path} is damaged: {error}") from None
        if not is_int_at_least(epoch, 0):
            raise CheckpointError(f"{path} is damaged: its epoch is {epoch!r}")
        return epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._in_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save_model()
        self._in_epoch = False

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model()

    def _should_save_on_batch(self, batch: int) -> bool:
        """Count the batch; True when ``save_freq`` batches were seen since the last backup."""
        if self.save_freq == "epoch":
            return False
        if batch <= self._last_batch_seen:  # a new epoch
            add_batches = batch + 1
        else:
            add_batches = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add_batches
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _save_model(self) -> None:
        """Back up the weights and the epochs done (the last backup first copied to the
        ``.bkp`` files with ``double_checkpoint``)."""
        with write_errors_named(self.backup_dir):  # a folder that cannot be made
            os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path, previous in ((self._weights_path, self._prev_weights_path),
                                   (self._training_metadata_path,
                                    self._prev_training_metadata_path)):
                if os.path.exists(path):
                    _copy(path, previous)
        self.model.save_weights(self._weights_path)
        with atomic_write(self._training_metadata_path, "w") as file:
            file.write(json.dumps({"epoch": self._current_epoch,
                                   "batch": self._last_batch_seen}))

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and self._ended_normally():
            for path in (self._weights_path, self._training_metadata_path,
                         self._prev_weights_path, self._prev_training_metadata_path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            with contextlib.suppress(OSError):  # kept when anything else is in it
                os.rmdir(self.backup_dir)

    def _ended_normally(self) -> bool:
        """Whether ``fit`` ended at an epoch's end, its last or one a callback stopped at,
        rather than by an error (``on_train_end`` is called either way)."""
        finished = self._current_epoch >= self.params.get("epochs", 0)
        return not self._in_epoch and (finished or getattr(self.model, "stop_training", False))


def _copy(source: str, target: str) -> None:
    """Copy the file ``source`` over ``target``, atomically."""
    with open(source, "rb") as original, atomic_write(target) as copy:
        shutil.copyfileobj(original, copy)
