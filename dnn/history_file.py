"""The ``--history`` JSON file (its schema is fixed by the design): the run's names, one record
per epoch and the final test figures, rewritten after every epoch."""

from __future__ import annotations

import json

from dnn.callbacks import Callback
from dnn.saving.fileio import atomic_write


def earlier_epochs(path, epochs_done: int) -> list:
    """The records of the first ``epochs_done`` epochs in the history file at ``path``, for a
    resumed run to go on from; none when the file is missing, is not such a file (of another
    shape, not JSON, nested past what Python reads) or holds other epochs."""
    try:
        with open(path) as file:
            epochs = json.load(file).get("epochs", [])
    except (OSError, ValueError, AttributeError, RecursionError):
        return []
    if not isinstance(epochs, list):
        return []
    records = epochs[:epochs_done]
    if [record.get("epoch") if isinstance(record, dict) else None
            for record in records] != list(range(1, epochs_done + 1)):
        return []
    return records


class HistoryFile(Callback):
    """Rewrites the history JSON at ``path`` after every completed epoch: ``{"backend",
    "optimizer", "dataset", "epochs": [{"epoch": 1, "loss", "accuracy", "test_loss",
    "test_accuracy", "seconds"}, ...], "test": {"loss", "accuracy"}}``, its ``test`` being the
    last epoch's test figures (:meth:`write` records those of a run of no epochs).  A run that is
    interrupted or diverges keeps the epochs it finished; ``epochs`` continues the records of
    an earlier run (a resumed one)."""

    writes_files = True  # data-parallel: rank 0 alone

    def __init__(self, path, backend: str, optimizer: str, dataset: str, epochs=()):
        super().__init__()
        self.path, self.names = path, (backend, optimizer, dataset)
        self.epochs = list(epochs)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, "loss": logs["loss"],
                            "accuracy": logs["accuracy"], "test_loss": logs["test_loss"],
                            "test_accuracy": logs["test_accuracy"],
                            "seconds": self.model.history.seconds[-1]})
        self.write((logs["test_loss"], logs["test_accuracy"]))

    def write(self, test_results) -> None:
        backend, optimizer, dataset = self.names
        record = {"backend": backend, "optimizer": optimizer, "dataset": dataset,
                  "epochs": self.epochs,
                  "test": {"loss": test_results[0], "accuracy": test_results[1]}}
        with atomic_write(self.path, "w") as file:
            json.dump(record, file, indent=2)
