"""Optimizers, found through the ``dnn.optimizers`` entry points.  See
:class:`dnn.optimizers.base.Optimizer` for the plugin contract."""

from __future__ import annotations

from dnn import plugins
from dnn.errors import ArgumentTypeError, DnnError, PluginLoadError, UsageError
from dnn.optimizers import schedules
from dnn.optimizers.base import Optimizer
from dnn.optimizers.builtin import SGD, Adam, RMSprop

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "schedules", "get", "plugin_class"]


def get(optimizer, **hyperparameters) -> Optimizer:
    """An Optimizer from an instance, or from a registered name and its hyper-parameters."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise UsageError(f"optimizer must be a name or an instance, not the class "
                         f"{optimizer.__name__}: call it, {optimizer.__name__}()")
    if not isinstance(optimizer, str):
        raise ArgumentTypeError(f"optimizer must be a name or an Optimizer, not "
                                f"{type(optimizer).__name__}")
    if optimizer not in plugins.names("optimizer") and optimizer.lower() in plugins.names(
            "optimizer"):
        optimizer = optimizer.lower()  # Keras' class names: "Adam", "RMSprop", "SGD"
    cls = plugin_class(optimizer)
    try:
        instance = cls(**hyperparameters)
    except TypeError as error:
        raise UsageError(f"optimizer {optimizer!r}: {error}") from error
    except (DnnError, MemoryError):
        raise
    except plugins.PLUGIN_FAILURES as error:  # the plugin's own __init__ failed
        raise PluginLoadError(plugins.failure(plugins.find("optimizer", optimizer).origin,
                                              "to start", error)) from error
    lost = sorted(set(hyperparameters) - set(instance.get_config()))
    if lost:  # checkpoints and --resume would go on without them
        raise PluginLoadError(f"{instance._origin()} keeps no attribute {lost[0]}, so the "
                              f"{lost[0]} given is lost: store each __init__ argument as an "
                              "attribute of the same name")
    return instance


def plugin_class(name: str) -> type:
    """The Optimizer subclass registered as ``name``; a :class:`PluginLoadError` naming the
    plugin when it is something else."""
    return plugins.load_class("optimizer", name, lambda cls: issubclass(cls, Optimizer),
                              "a dnn.optimizers.Optimizer subclass")
