"""Optimizers, found through the ``dnn.optimizers`` entry points.  See
:class:`dnn.optimizers.base.Optimizer` for the plugin contract."""

from __future__ import annotations

from dnn import plugins
from dnn.errors import DnnError, PluginLoadError, UsageError
from dnn.optimizers.base import Optimizer
from dnn.optimizers.builtin import SGD, Adam, RMSprop

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "get"]


def get(optimizer, **hyperparameters) -> Optimizer:
    """An Optimizer from an instance, or from a registered name and its hyper-parameters."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise UsageError(f"optimizer must be a name or an instance, not the class "
                         f"{optimizer.__name__}: call it, {optimizer.__name__}()")
    cls = plugins.load("optimizer", optimizer)
    try:
        instance = cls(**hyperparameters)
    except TypeError as error:
        raise UsageError(f"optimizer {optimizer!r}: {error}") from error
    except (DnnError, MemoryError):
        raise
    except Exception as error:  # the plugin's own __init__ failed
        raise PluginLoadError(f"{plugins.find('optimizer', optimizer).origin} failed to start: "
                              f"{type(error).__name__}: {error}") from error
    if not isinstance(instance, Optimizer):
        raise UsageError(f"optimizer plugin {optimizer!r} is not a dnn.optimizers.Optimizer")
    return instance
