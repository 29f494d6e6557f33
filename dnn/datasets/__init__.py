"""Datasets, found through the ``dnn.datasets`` entry points."""

from dnn import plugins
from dnn.datasets.base import Dataset, IdxDataset, cache_dir, contract_problem
from dnn.errors import DataError, DnnError

__all__ = ["Dataset", "IdxDataset", "cache_dir", "contract_problem", "get", "load_checked"]


def get(name: str) -> Dataset:
    """An instance of the dataset registered as ``name``."""
    return plugins.load("dataset", name)()


def load_checked(name: str, data_dir=None):
    """``get(name).load(data_dir)``, held to the dataset contract: a plugin that raises
    something other than dnn's own errors (or an OSError), or returns what breaks the
    contract, is a one-line :class:`DataError` naming the plugin."""
    dataset = get(name)
    origin = plugins.find("dataset", name).origin
    try:
        splits = dataset.load(data_dir)
    except (DnnError, OSError):
        raise
    except Exception as error:
        raise DataError(f"{origin} failed: {type(error).__name__}: {error}") from error
    problem = contract_problem(splits)
    if problem:
        raise DataError(f"{origin} broke the dataset contract: {problem}")
    return splits
