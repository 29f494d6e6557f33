"""Stop training once a figure stops improving."""

from __future__ import annotations

from dnn.callbacks.monitor_callback import MonitorCallback


class EarlyStopping(MonitorCallback):
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
