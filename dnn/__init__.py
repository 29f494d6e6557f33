"""dnn: one set of layer, loss, gradient and optimizer code for NumPy (CPU) and CuPy (GPU)."""

from importlib import metadata as _metadata

from dnn import layers
from dnn.backends import current_backend, get_backend, use_backend
from dnn.model import Sequential
from dnn.plugins import DISTRIBUTION as _DISTRIBUTION

try:
    __version__ = _metadata.version(_DISTRIBUTION)
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

__all__ = ["Sequential", "layers", "use_backend", "get_backend", "current_backend"]
