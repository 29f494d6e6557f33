"""Datasets, found through the ``dnn.datasets`` entry points."""

from dnn import plugins
from dnn.datasets.base import Dataset, IdxDataset, cache_dir

__all__ = ["Dataset", "IdxDataset", "cache_dir", "get"]


def get(name: str) -> Dataset:
    """An instance of the dataset registered as ``name``."""
    return plugins.load("dataset", name)()
