"""Save the model after its epochs."""

from __future__ import annotations

from dnn.callbacks.monitor_callback import MonitorCallback


class ModelCheckpoint(MonitorCallback):
    """Save the model to ``filepath`` (which may name ``{epoch}`` and the logs' figures, as
    ``"model-{epoch:02d}-{val_loss:.2f}.npz"``) after every epoch, or with ``save_best_only``
    only when ``monitor`` improved.  Writes are atomic: a file is complete or absent."""

    writes_files = True

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
