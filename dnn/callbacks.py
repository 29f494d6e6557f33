"""Callbacks, as in Keras: hooks into :meth:`dnn.Sequential.fit` with Keras' names and arguments
(epochs and batches counted from 0), the :class:`History` that ``fit`` returns,
:class:`EarlyStopping`, :class:`ModelCheckpoint`, the learning-rate callbacks
:class:`LearningRateScheduler` and :class:`ReduceLROnPlateau`, and the two printers behind
``fit(verbose=...)``: a live bar on a terminal, two lines per epoch otherwise.

A batch's ``logs`` hold the epoch's running mean loss (and accuracy); they are read from the
device only when looked at, so a callback that ignores them costs no synchronisation.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Mapping

import numpy as np

from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import is_number

REFRESH_SECONDS = 0.25  # each refresh reads the running loss from the device: keep them rare
BAR_WIDTH = 30


class Callback:
    """Override the hooks you need.  ``self.model`` is the model being trained and
    ``self.params`` ``{"epochs", "steps", "verbose"}``, both set before ``on_train_begin``.
    ``on_train_end`` is called however ``fit`` ends (an error or Ctrl-C included)."""

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class BatchLogs(Mapping):
    """A batch's logs: ``read()`` (the device's running means) called on first look only."""

    def __init__(self, read):
        self._read, self._values = read, None

    def _loaded(self) -> dict:
        if self._values is None:
            self._values = self._read()
        return self._values

    def __getitem__(self, key):
        return self._loaded()[key]

    def __iter__(self):
        return iter(self._loaded())

    def __len__(self):
        return len(self._loaded())


class History(Callback):
    """What ``fit`` returns: ``history["loss"]`` and friends, one value per epoch, and
    ``epoch``, the epochs' indices; ``seconds`` holds each epoch's training time (without
    its validation)."""

    def __init__(self):
        super().__init__()
        self.history: dict = {}
        self.epoch: list = []
        self.seconds: list = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class _Monitor(Callback):
    """A callback that watches one figure of the epoch logs for its best value."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise UsageError(f"mode must be 'auto', 'min' or 'max', not {mode!r}")
        self.monitor, self.min_delta = monitor, abs(min_delta)
        self.lower_is_better = mode == "min" or (mode == "auto" and "acc" not in monitor)
        self._forget_best()

    def _forget_best(self) -> None:
        """Start over: the next value seen is an improvement."""
        self.best = math.inf if self.lower_is_better else -math.inf

    def _improved(self, logs) -> bool:
        if self.monitor not in (logs or {}):
            raise UsageError(f"{type(self).__name__} watches {self.monitor!r}, which the logs "
                             f"do not have (they have {', '.join(logs or {}) or 'nothing'})")
        value = logs[self.monitor]
        better = (value < self.best - self.min_delta if self.lower_is_better
                  else value > self.best + self.min_delta)
        if better:
            self.best = value
        return better


class EarlyStopping(_Monitor):
    """Stop training once ``monitor`` has not improved by ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights``, go back to the weights of its best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.verbose = verbose
        self.stopped_epoch, self.best_epoch, self._waited, self._best_weights = 0, 0, 0, None

    def on_train_begin(self, logs=None):
        self._forget_best()
        self._waited, self._best_weights, self.stopped_epoch = 0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        if self._improved(logs):
            self.best_epoch, self._waited = epoch, 0
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
            return
        self._waited += 1
        if self._waited >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self._best_weights is not None:
                self.model.set_weights(self._best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping (best {self.monitor} "
                      f"{self.best:.4f} at epoch {self.best_epoch + 1})")


class ModelCheckpoint(_Monitor):
    """Save the model to ``filepath`` (which may name ``{epoch}`` and the logs' figures, as
    ``"model-{epoch:02d}-{val_loss:.2f}.npz"``) after every epoch, or with ``save_best_only``
    only when ``monitor`` improved.  Writes are atomic: a file is complete or absent."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 verbose=0):
        super().__init__(monitor, mode)
        self.filepath, self.save_best_only, self.verbose = str(filepath), save_best_only, verbose

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only and not self._improved(logs):
            return
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the model to {path}")


def _log_learning_rate(model, logs) -> None:
    """Put the optimizer's learning rate in the epoch's ``logs``, as Keras does."""
    if logs is not None:
        logs["learning_rate"] = float(model.optimizer.learning_rate)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch to what ``schedule``
    returns for it, as Keras does; the rate is added to the epoch's logs as
    ``"learning_rate"``.

    Args:
        schedule: a function of the epoch's index (an int, from 0) and the current learning
            rate (a float) that returns the epoch's learning rate (a float), or a function of
            the epoch's index alone.
        verbose: int, 0 quiet, 1 a line each epoch with the rate it sets.

    Example: keep the rate for ten epochs, then decay it exponentially::

        def scheduler(epoch, lr):
            return lr if epoch < 10 else lr * math.exp(-0.1)

        model.fit(x, y, epochs=15, callbacks=[LearningRateScheduler(scheduler)])
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ArgumentTypeError(f"LearningRateScheduler schedule must be a function of the "
                                    f"epoch (and the learning rate), not {schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        self._takes_rate = _takes_two_arguments(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if self._takes_rate:
            learning_rate = self.schedule(epoch, float(optimizer.learning_rate))
        else:
            learning_rate = self.schedule(epoch)
        if not is_number(learning_rate):
            raise ArgumentTypeError(f"The output of the `schedule` function should be a float. "
                                    f"Got: {learning_rate!r}")
        optimizer.learning_rate = float(learning_rate)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        _log_learning_rate(self.model, logs)


def _takes_two_arguments(function) -> bool:
    """Whether ``function`` can be called with the epoch and the learning rate (Keras' newer
    form of a schedule) rather than with the epoch alone."""
    try:
        inspect.signature(function).bind(0, 0.0)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some built-in functions): try the newer form
        return True
    return True


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` once ``monitor`` has not improved for
    ``patience`` epochs, as Keras does; the rate of each epoch is added to its logs as
    ``"learning_rate"``.

    Args:
        monitor: str, the figure of the epoch logs to watch (one they lack is a
            :class:`UsageError`, as for :class:`EarlyStopping`).
        factor: float in [0, 1), ``new_lr = lr * factor``.
        patience: int, the epochs without improvement after which the rate is reduced.
        verbose: int, 0 quiet, 1 a line for each reduction.
        mode: ``"auto"``, ``"min"`` or ``"max"``: whether ``monitor`` improves by falling or
            rising (``"auto"``: rising for an accuracy, falling otherwise).
        min_delta: float, the least change that counts as an improvement.
        cooldown: int, the epochs after a reduction before epochs without improvement count
            again.
        min_lr: float, the rate is never reduced below it.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if not is_number(factor):
            raise ArgumentTypeError(f"ReduceLROnPlateau factor must be a number, not {factor!r}")
        if not 0 <= factor < 1:
            raise UsageError(f"ReduceLROnPlateau does not support a factor >= 1.0 or below 0. "
                             f"Received factor={factor}")
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter, self.wait = 0, 0

    def on_train_begin(self, logs=None):
        self._forget_best()
        self.cooldown_counter, self.wait = 0, 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        _log_learning_rate(self.model, logs)
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(logs):
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, epoch) -> bool:
        """Reduce the optimizer's rate unless it is at ``min_lr`` (compared in float32, as
        Keras does); True when it did."""
        optimizer = self.model.optimizer
        old_lr = float(optimizer.learning_rate)
        if not old_lr > float(np.float32(self.min_lr)):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        optimizer.learning_rate = new_lr
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                  f"{new_lr}.")
        return True


class EvaluateEachEpoch(Callback):
    """After every epoch, the model's loss and metrics on ``(x, y)`` (host arrays, moved to
    the device once), added to the epoch's logs as ``prefix`` + name (the command line's
    ``test_loss``, say), for the callbacks after it to see."""

    def __init__(self, x, y, prefix: str = "test_", batch_size: int = 1024):
        super().__init__()
        self.x, self.y, self.prefix, self.batch_size = x, y, prefix, batch_size

    def on_train_begin(self, logs=None):
        self._data = self.model._device_data(self.x, self.y,
                                             prefix=self.prefix.replace("_", " "))

    def on_epoch_end(self, epoch, logs=None):
        results = self.model._evaluate_device(*self._data, batch_size=self.batch_size)
        logs.update({f"{self.prefix}{key}": value for key, value in results.items()})


def figures(logs) -> str:
    """``"loss: 0.2587 - accuracy: 0.9250"`` for ``{"loss": ..., "accuracy": ...}``."""
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


def _then_figures(logs) -> str:
    """``" - "`` and the figures of ``logs``, to follow a progress line; empty for none."""
    return f" - {figures(logs)}" if logs else ""


def _duration(seconds: float) -> str:
    """Keras' ``"3s"`` or ``"1:02"``, tenths below ten seconds."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}:{seconds % 60:02d}"


class _Printer(Callback):
    """What both printers share: the stream, the epoch's clock and its closing line."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._write(f"Epoch {epoch + 1}/{self.params['epochs']}\n")
        self.started = time.perf_counter()

    def _summary(self, logs) -> str:
        steps, spent = self.params["steps"], time.perf_counter() - self.started
        return (f"{steps}/{steps} - {_duration(spent)} {1000 * spent / max(steps, 1):.0f}ms/step"
                + _then_figures(logs))


class EpochLines(_Printer):
    """Two lines per epoch, as Keras' ``verbose=2``: ``Epoch 2/5`` and its summary."""

    def on_epoch_end(self, epoch, logs=None):
        self._write(self._summary(logs) + "\n")


class ProgressBar(_Printer):
    """Keras' bar: ``Epoch 2/5``, then ``312/469 [=====>....] - ETA: 3.2s - loss: ...``
    redrawn in place, ending as the epoch's summary on the same line."""

    def on_train_begin(self, logs=None):
        self.drawn = None  # the line on screen, while a bar is open

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.drawn, self.last_refresh = None, None

    def on_train_batch_end(self, batch, logs=None):
        step, steps, now = batch + 1, self.params["steps"], time.perf_counter()
        if step == steps or (self.last_refresh is not None
                             and now - self.last_refresh < REFRESH_SECONDS):
            return  # the last step's line is the epoch's summary, after its validation
        self.last_refresh = now
        done = int(BAR_WIDTH * step / steps)
        bar = "=" * max(done - 1, 0) + (">" if done else "") + "." * (BAR_WIDTH - done)
        eta = (now - self.started) / step * (steps - step)
        self._draw(f"{step}/{steps} [{bar}] - ETA: {_duration(eta)}{_then_figures(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        summary = self._summary(logs)
        steps = self.params["steps"]
        self._draw(summary.replace(f"{steps}/{steps}", f"{steps}/{steps} [{'=' * BAR_WIDTH}]",
                                   1))
        self._end_line()

    def on_train_end(self, logs=None):
        self._end_line()  # when fit raised mid-epoch: the error gets a line of its own

    def _draw(self, text: str) -> None:
        self._write("\r" + text.ljust(len(self.drawn or "")))
        self.drawn = text

    def _end_line(self) -> None:
        if self.drawn is not None:
            self._write("\n")
            self.drawn = None


def callback_list(callbacks) -> list:
    """``callbacks`` (None, one Callback, or an iterable of them) as a list; UsageError for
    anything else."""
    if callbacks is None or isinstance(callbacks, Callback):
        return [] if callbacks is None else [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise UsageError(f"callbacks must be a list of dnn.callbacks.Callback instances, not "
                         f"{type(callbacks).__name__}") from None
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise UsageError(f"callbacks must be dnn.callbacks.Callback instances, not "
                             f"{type(callback).__name__}")
    return callbacks


__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau", "EvaluateEachEpoch", "EpochLines", "ProgressBar", "BatchLogs"]
