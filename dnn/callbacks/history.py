"""The :class:`History` that ``fit`` returns."""

from __future__ import annotations

from dnn.callbacks.callback import Callback


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
