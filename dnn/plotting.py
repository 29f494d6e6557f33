"""``dnn train --plot``: loss and accuracy per epoch, train and test (matplotlib, optional)."""

from __future__ import annotations

from dnn.errors import DnnError
from dnn.fileio import atomic_write

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


def plot_history(history, path) -> None:
    """Two panels (loss, accuracy) of ``history`` written as a PNG to ``path``."""
    pyplot = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history.epochs) + 1)
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "test")):
            if key in history.history:
                axis.plot(epochs, history.history[key], marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    pyplot.close(figure)
