"""dnn: one set of layer, loss, gradient and optimizer code for NumPy (CPU) and CuPy (GPU).

Keras' top-level names are here (``dnn.Sequential``, ``dnn.layers``, ``dnn.callbacks``,
``dnn.load_model``, ``dnn.datasets.mnist.load_data``, ...), imported on first use, so that the
command line starts fast and a Ctrl-C while it starts is still one line.
"""

import importlib
from importlib import metadata as _metadata

from dnn.plugins import DISTRIBUTION as _DISTRIBUTION

try:
    __version__ = _metadata.version(_DISTRIBUTION)
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_SUBMODULES = ("backends", "callbacks", "datasets", "distributed", "errors", "layers", "losses",
               "metrics",
               "models", "optimizers", "regularizers", "saving", "testing", "trainers", "utils")
_NAMES = {"Sequential": "dnn.models", "load_model": "dnn.models", "Input": "dnn.layers",
          "use_backend": "dnn.backends", "get_backend": "dnn.backends",
          "current_backend": "dnn.backends"}

__all__ = ["Sequential", "Input", "load_model", "callbacks", "datasets", "layers", "losses",
           "metrics", "models", "optimizers", "regularizers", "utils", "use_backend",
           "get_backend", "current_backend"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"dnn.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'dnn' has no attribute {name!r}")
