"""The command line's test figures, computed after every epoch."""

from __future__ import annotations

from dnn.callbacks.callback import Callback


class EvaluateEachEpoch(Callback):
    """After every epoch, the model's loss and metrics on ``(x, y)`` (host arrays, moved to
    the device once), added to the epoch's logs as ``prefix`` + name (the command line's
    ``test_loss``, say), for the callbacks after it to see."""

    def __init__(self, x, y, prefix: str = "test_", batch_size: int = 1024):
        super().__init__()
        self.x, self.y, self.prefix, self.batch_size = x, y, prefix, batch_size

    def on_train_begin(self, logs=None):
        from dnn.trainers.epoch_iterator import batches_of

        self._batches = batches_of(self.model, self.x, self.y, batch_size=self.batch_size,
                                   prefix=self.prefix.replace("_", " "))

    def on_epoch_end(self, epoch, logs=None):
        results = self.model.evaluate_batches(self._batches)
        logs.update({f"{self.prefix}{key}": value for key, value in results.items()})
