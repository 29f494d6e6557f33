"""dnn: one set of layer, loss, gradient and optimizer code for NumPy (CPU) and CuPy (GPU)."""

from importlib import metadata as _metadata

from dnn import callbacks, datasets, layers, losses, models, optimizers, utils
from dnn.backends import current_backend, get_backend, use_backend
from dnn.datasets import mnist as _mnist  # noqa: F401  (keras.datasets.mnist.load_data)
from dnn.model import Sequential
from dnn.models import load_model
from dnn.plugins import DISTRIBUTION as _DISTRIBUTION

try:
    __version__ = _metadata.version(_DISTRIBUTION)
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

__all__ = ["Sequential", "load_model", "callbacks", "datasets", "layers", "losses", "models",
           "optimizers", "utils", "use_backend", "get_backend", "current_backend"]
