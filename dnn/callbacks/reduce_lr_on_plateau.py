"""Lower the learning rate once a figure stops improving."""

from __future__ import annotations

import numpy as np

from dnn.callbacks.learning_rate_scheduler import log_learning_rate
from dnn.callbacks.monitor_callback import MonitorCallback
from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import is_number


class ReduceLROnPlateau(MonitorCallback):
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
        log_learning_rate(self.model, logs)
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
