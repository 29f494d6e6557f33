"""Save the model after its epochs, or every so many batches."""

from __future__ import annotations

import math
import string

from dnn.callbacks.arguments import check_flag, check_path
from dnn.callbacks.monitor_callback import MonitorCallback
from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import is_int_at_least, is_number


class ModelCheckpoint(MonitorCallback):
    """Save the model to ``filepath`` (which may name ``{epoch}``, ``{batch}`` with an integer
    ``save_freq``, and the logs' figures, as ``"model-{epoch:02d}-{val_loss:.2f}.npz"``) after
    every epoch (``save_freq="epoch"``) or every ``save_freq`` training batches, or with
    ``save_best_only`` only when ``monitor`` improved on the best so far (or on
    ``initial_value_threshold``).  ``save_weights_only`` writes with ``save_weights``.  Keras'
    arguments; the file is dnn's checkpoint whatever its extension.  Writes are atomic: a file
    is complete or absent.  A ``filepath`` that is no such template (an unmatched brace, a
    field with no name or a number for a name, as ``{}`` or ``{0}``) is refused at once; one
    naming a figure the logs lack, when it is filled in."""

    writes_files = True

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__(monitor, mode)
        self.filepath = check_path("ModelCheckpoint", "filepath", filepath)
        _check_template(self.filepath)
        check_flag("ModelCheckpoint", "save_best_only", save_best_only)
        check_flag("ModelCheckpoint", "save_weights_only", save_weights_only)
        if save_freq != "epoch" and not is_int_at_least(save_freq, 1):
            raise ArgumentTypeError(f"ModelCheckpoint save_freq must be 'epoch' or a number of "
                                    f"batches >= 1, not {save_freq!r}")
        if save_freq != "epoch":  # a batch's logs: no validation figures
            wanted = [*([monitor] if save_best_only else []),
                      *(name for name, _ in _fields(self.filepath))]
            late = next((name for name in wanted if name.startswith("val_")), None)
            if late is not None:
                raise UsageError(f"ModelCheckpoint with save_freq={save_freq} saves on a "
                                 f"batch's logs, which have no {late!r} (validation comes at "
                                 f"an epoch's end): use a training figure such as 'loss', or "
                                 f"save_freq='epoch'")
        if initial_value_threshold is not None:
            if not is_number(initial_value_threshold) or math.isnan(initial_value_threshold):
                raise ArgumentTypeError(f"ModelCheckpoint initial_value_threshold must be a "
                                        f"number, not {initial_value_threshold!r}")
            self.best = float(initial_value_threshold)
        self.verbose, self.save_best_only = verbose, save_best_only
        self.save_weights_only, self.save_freq = save_weights_only, save_freq
        self._batches_since_saving = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_saving += 1
        if self._batches_since_saving >= self.save_freq:
            self._batches_since_saving = 0
            self._save(logs, epoch=self._epoch + 1, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(logs, epoch=epoch + 1)

    def _save(self, logs, **counts) -> None:
        """Save where ``save_best_only`` allows, to ``filepath`` filled in with ``counts`` and
        ``logs``."""
        if self.save_best_only and not self._improved(logs):
            return
        values = {**counts, **dict(logs or {})}
        try:
            path = self.filepath.format(**values)
        except (KeyError, IndexError) as error:
            raise UsageError(f"ModelCheckpoint filepath {self.filepath!r} names {error}, which "
                             f"it is not given (it has {', '.join(values)})") from None
        except ValueError as error:
            raise UsageError(f"ModelCheckpoint filepath {self.filepath!r}: {error}") from None
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {counts['epoch']}: saved the model to {path}")


def _check_template(filepath: str) -> None:
    """A UsageError naming ``filepath`` unless ``str.format`` can fill it in by names alone:
    its braces matched, each field (those in format specs too) a name, with no attribute or
    index (``{epoch.real}``, ``{loss[0]}``), and a conversion ``!r``, ``!s`` or ``!a`` if
    any."""
    try:
        fields = list(_fields(filepath))
    except ValueError as error:  # "expected '}' before end of string", say
        raise UsageError(f"ModelCheckpoint filepath {filepath!r}: {error}") from None
    for name, conversion in fields:
        if not name or name.isdigit() or any(mark in name for mark in ".["):
            raise UsageError(f"ModelCheckpoint filepath {filepath!r}: {{{name}}} is not the "
                             "name of a figure; name one, as {epoch} or {val_loss:.2f}")
        if conversion not in (None, "r", "s", "a"):
            raise UsageError(f"ModelCheckpoint filepath {filepath!r}: unknown conversion "
                             f"!{conversion} (use !r, !s or !a)")


def _fields(template: str):
    """The name and the conversion of each field of ``template``, those in its format specs
    (``{loss:.{digits}f}``) too; ValueError when ``template`` is malformed."""
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None:
            yield name, conversion
            yield from _fields(spec)
