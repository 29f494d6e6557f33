"""The ``--history`` JSON file (its schema is fixed by the design): the run's names, one record
per epoch and the final test figures, rewritten after every epoch."""

from __future__ import annotations

import json

from dnn.callbacks import Callback, History
from dnn.fileio import atomic_write


def history_record(backend: str, optimizer: str, dataset: str, history: History,
                   test_results) -> dict:
    """``{"backend", "optimizer", "dataset", "epochs": [{"epoch": 1, "loss", "accuracy",
    "test_loss", "test_accuracy", "seconds"}, ...], "test": {"loss", "accuracy"}}`` from the
    logs of epochs validated on the test set and ``test_results`` ``(loss, accuracy)``."""
    epochs = [{"epoch": number, "loss": logs["loss"], "accuracy": logs["accuracy"],
               "test_loss": logs["val_loss"], "test_accuracy": logs["val_accuracy"],
               "seconds": logs["seconds"]}
              for number, logs in enumerate(history.epochs, start=1)]
    return {"backend": backend, "optimizer": optimizer, "dataset": dataset, "epochs": epochs,
            "test": {"loss": test_results[0], "accuracy": test_results[1]}}


class HistoryFile(Callback):
    """Rewrites the history JSON at ``path`` after every completed epoch, its ``test`` being
    that epoch's test metrics, so that a run that is interrupted or diverges keeps the epochs
    it finished; :meth:`write` records the final test figures."""

    def __init__(self, path, backend: str, optimizer: str, dataset: str):
        self.path, self.names = path, (backend, optimizer, dataset)
        self.history = History()

    def on_epoch_end(self, epoch, logs):
        self.history.append(logs)
        self.write((logs["val_loss"], logs["val_accuracy"]))

    def write(self, test_results) -> None:
        record = history_record(*self.names, self.history, test_results)
        with atomic_write(self.path, "w") as file:
            json.dump(record, file, indent=2)
