"""Datasets, found through the ``dnn.datasets`` entry points."""

from dnn import plugins
from dnn.datasets.base import Dataset, IdxDataset, cache_dir, contract_problem
from dnn.errors import DataError, DnnError, PluginLoadError

__all__ = ["Dataset", "IdxDataset", "cache_dir", "contract_problem", "get", "load_checked",
           "mnist", "plugin_class"]


def get(name: str) -> Dataset:
    """An instance of the dataset registered as ``name``; a :class:`PluginLoadError` naming
    the plugin when it is not a dataset class or its constructor raises."""
    cls = plugin_class(name)
    try:
        return cls()
    except plugins.PLUGIN_FAILURES as error:
        raise PluginLoadError(plugins.failure(plugins.find("dataset", name).origin, "to start",
                                              error)) from error


def plugin_class(name: str) -> type:
    """The dataset class (one with ``load``) registered as ``name``; a
    :class:`PluginLoadError` naming the plugin when it is something else."""
    return plugins.load_class("dataset", name, lambda cls: callable(getattr(cls, "load", None)),
                              "a dataset class with load(data_dir=None)")


def load_checked(name: str, data_dir=None):
    """``get(name).load(data_dir)``, held to the dataset contract: a plugin that raises
    something other than dnn's own errors (an OSError included), or returns what breaks the
    contract, is a one-line :class:`DataError` naming the plugin."""
    dataset = get(name)
    origin = plugins.find("dataset", name).origin
    try:
        splits = dataset.load(data_dir)
    except DnnError:
        raise
    except plugins.PLUGIN_FAILURES as error:
        raise DataError(plugins.failure(origin, "", error)) from error
    problem = contract_problem(splits)
    if problem:
        raise DataError(f"{origin} broke the dataset contract: {problem}")
    return splits


from dnn.datasets import mnist  # noqa: E402  (Keras' datasets.mnist.load_data)
