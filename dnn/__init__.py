"""dnn: one set of layer, loss, gradient and optimizer code for NumPy (CPU) and CuPy (GPU).

Keras' top-level names are here (``dnn.Sequential``, ``dnn.layers``, ``dnn.callbacks``,
``dnn.load_model``, ``dnn.datasets.mnist.load_data``, ...), imported on first use, so that the
command line starts fast and a Ctrl-C while it starts is still one line.  ``dnn.__version__``
too: reading the installed distribution's metadata searches ``sys.path``, so it is read when
first asked for, not at every ``import dnn``.
"""

import importlib

_SUBMODULES = ("backends", "callbacks", "datasets", "distributed", "errors", "layers", "losses",
               "metrics",
               "models", "optimizers", "regularizers", "saving", "testing", "trainers", "utils")
_NAMES = {"Sequential": "dnn.models", "Model": "dnn.models", "load_model": "dnn.models",
          "Input": "dnn.layers",
          "use_backend": "dnn.backends", "get_backend": "dnn.backends",
          "current_backend": "dnn.backends"}

__all__ = ["Sequential", "Model", "Input", "load_model", "callbacks", "datasets", "layers",
           "losses", "metrics", "models", "optimizers", "regularizers", "utils", "use_backend",
           "get_backend", "current_backend"]


def _installed_version() -> str:
    """The version of the installed distribution, or ``"unknown"`` in a source tree that was
    never installed."""
    from importlib import metadata

    from dnn.plugins import DISTRIBUTION

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def __getattr__(name: str):
    """A submodule, a Keras top-level name or ``__version__``, imported (and kept) on first
    use (PEP 562)."""
    if name == "__version__":
        globals()[name] = version = _installed_version()  # read once
        return version
    if name in _SUBMODULES:
        return importlib.import_module(f"dnn.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'dnn' has no attribute {name!r}")
