"""``dnn train --plot``: loss and accuracy per epoch, train and test (matplotlib, optional)."""

from __future__ import annotations

from dnn.errors import DnnError
from dnn.saving.fileio import atomic_write

INSTALL_HINT = "pip install 'dnn-framework[plot]'"


def require_matplotlib():
    """The pyplot module, or a DnnError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        raise DnnError(f"--plot needs matplotlib: {INSTALL_HINT}") from None
    return pyplot


def plot_history(history: dict, path, title: str = "Training", epochs=None) -> None:
    """Two panels (loss, accuracy) of ``history`` (``{"loss": [...], "test_loss": [...],
    ...}``, one value per epoch) written as a PNG to ``path``, under ``title``; ``epochs``
    numbers the values (1, 2, ... by default; a resumed run's go on from where it started)."""
    pyplot = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history["loss"]) + 1) if epochs is None else epochs)
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    figure.suptitle(title)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation"), ("test_", "test")):
            if f"{prefix}{metric}" in history:
                axis.plot(epochs, history[f"{prefix}{metric}"], marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        axis.set_title(f"{metric} per epoch")
        axis.legend()
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    pyplot.close(figure)
