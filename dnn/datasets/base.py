"""Datasets: classes with ``load(data_dir=None)`` returning host NumPy arrays
``(x_train, y_train), (x_test, y_test)``: images float32 in [0, 1], labels int64.

:class:`IdxDataset` is the machinery for image datasets shipped as four IDX files (MNIST,
Fashion-MNIST, ...): a subclass only names its files, checksums, mirrors and image shape.
Files are looked for in ``data_dir`` (or ``$DNN_DATA_DIR``), then in the user cache directory
(``$DNN_CACHE_DIR`` or the platform's); only missing files are downloaded, into the cache.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from dnn.datasets.download import download
from dnn.datasets.idx import read_idx
from dnn.errors import DataError, UsageError
from dnn.saving.fileio import check_writable

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


class Dataset:
    """The dataset contract: a ``name`` and ``load``."""

    name = "dataset"

    def load(self, data_dir=None):
        raise NotImplementedError


def contract_problem(splits) -> str | None:
    """What breaks the dataset contract in ``splits``, a ``load()`` result, or None when it
    keeps it: ``(x_train, y_train), (x_test, y_test)`` of host NumPy arrays, float32 images in
    [0, 1] (so neither NaN nor infinite) of one shape, integer labels ``(N,)`` from 0."""
    if not (isinstance(splits, tuple) and len(splits) == 2):
        return "load() must return ((x_train, y_train), (x_test, y_test))"
    for split, pair in zip(("train", "test"), splits):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return f"the {split} split must be a pair (images, labels)"
        x, y = pair
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            return f"the {split} images and labels must be host NumPy arrays"
        if x.dtype != np.float32:
            return f"the {split} images are {x.dtype}, not float32"
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            return f"the {split} labels must be integers (N,), not {y.dtype} {y.shape}"
        if x.ndim < 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            return (f"the {split} split has images of shape {x.shape} and {y.shape[0]} labels; "
                    "it needs (N, ...) images and N > 0 labels")
        low, high = float(x.min()), float(x.max())  # NaN, where any, in both
        if not (math.isfinite(low) and math.isfinite(high)):
            return f"the {split} images hold NaN or infinite values"
        if low < 0 or high > 1:
            return f"the {split} images are not in [0, 1]"
        if y.min() < 0:
            return f"the {split} labels must be >= 0"
    if splits[0][0].shape[1:] != splits[1][0].shape[1:]:
        return (f"the train images have shape {splits[0][0].shape[1:]} and the test images "
                f"{splits[1][0].shape[1:]}")
    return None


def folder_problem(path) -> str | None:
    """Why ``path`` is not a folder ("does not exist", "is a file, not a folder", "is not a
    folder": a device such as ``/dev/zero``), or None when it is one."""
    if os.path.isdir(path):
        return None
    if not os.path.exists(path):
        return "does not exist"
    return "is a file, not a folder" if os.path.isfile(path) else "is not a folder"


def _data_folder(data_dir):
    """``data_dir``, else ``$DNN_DATA_DIR``, else None; a UsageError naming it (as
    ``$DNN_DATA_DIR`` where it is that, as the command line passes it on) when it is not a
    folder, rather than files looked for "in" ``/dev/zero`` or a typo, then downloaded."""
    data_dir = data_dir or os.environ.get("DNN_DATA_DIR")
    problem = folder_problem(data_dir) if data_dir else None
    if problem:
        source = ("$DNN_DATA_DIR" if str(data_dir) == os.environ.get("DNN_DATA_DIR")
                  else "data_dir")
        raise UsageError(f"{source} {data_dir} {problem}")
    return data_dir


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$DNN_CACHE_DIR`` or the platform's user cache."""
    if os.environ.get("DNN_CACHE_DIR"):
        return Path(os.environ["DNN_CACHE_DIR"])
    import platformdirs  # only here, so local files load even where it is missing

    return Path(platformdirs.user_cache_dir("dnn"))


class IdxDataset(Dataset):
    """An image classification dataset of four IDX files.

    Subclasses set ``name``, ``files`` (role -> ``(file name, md5 of that file as published)``
    for the roles in ``ROLES``), ``mirrors`` (base URLs tried in order), ``image_shape``,
    ``num_classes`` and ``sizes`` (``{"train": N, "test": M}``), and may set ``class_counts``
    (``{"train": (n_0, n_1, ...), "test": (...)}``, the images per class).  Datasets that
    share file names (MNIST and Fashion-MNIST do) tell each other's files apart by those
    counts: the published checksums cannot, since a recompressed copy has other bytes.
    """

    files: dict = {}
    mirrors: tuple = ()
    image_shape = (28, 28)
    num_classes = 10
    sizes: dict = {}
    class_counts: dict = {}

    def load(self, data_dir=None):
        splits = []
        for images, labels in self.load_raw(data_dir):
            x = images.astype(np.float32)
            x /= 255  # in place: no second float copy of the images
            splits.append((x, labels.astype(np.int64)))
        return tuple(splits)

    def load_raw(self, data_dir=None):
        """The train and test splits as their files hold them: ``(images, labels)``, images
        ``(N, *image_shape)`` and labels ``(N,)`` in the files' type (uint8 for MNIST),
        read-only, checked as :meth:`load` checks them."""
        data_dir = _data_folder(data_dir)
        paths = {role: self.locate(role, data_dir) for role in ROLES}
        return self._split("train", paths), self._split("test", paths)

    def _split(self, split: str, paths: dict):
        count = self.sizes[split]
        images = read_idx(paths[f"{split}_images"], (count, *self.image_shape))
        if images.dtype.kind == "f" and not np.isfinite(images).all():  # an IDX of floats
            raise DataError(f"{paths[f'{split}_images']} holds NaN or infinite values, which "
                            "no image has")
        labels = read_idx(paths[f"{split}_labels"], (count,))
        if labels.max(initial=0) >= self.num_classes:
            raise DataError(f"{paths[f'{split}_labels']} has labels outside 0.."
                            f"{self.num_classes - 1}")
        expected = self.class_counts.get(split)
        if expected is not None:
            counts = np.bincount(labels, minlength=self.num_classes).tolist()
            if counts != list(expected):
                raise DataError(f"{paths[f'{split}_labels']} counts {counts} images per class, "
                                f"not {self.name}'s {list(expected)}: another dataset's files? "
                                "Keep each dataset in its own folder")
        return images, labels

    def max_file_bytes(self, role: str) -> int:
        """The most a file of ``role`` can hold: its IDX header and data (from ``sizes`` and
        ``image_shape``), plus what gzip adds to data it cannot compress."""
        split, kind = role.split("_")
        shape = (self.sizes[split], *self.image_shape) if kind == "images" else (
            self.sizes[split],)
        raw = 4 + 4 * len(shape) + int(np.prod(shape, dtype=object))
        return raw + raw // 100 + 1024

    def _folders(self, data_dir):
        """The folders searched, in order: ``data_dir`` if given, then the cache folder (where
        downloads go), asked for only when the files are not in ``data_dir``."""
        if data_dir:
            yield Path(data_dir)
        yield cache_dir() / self.name

    def locate(self, role: str, data_dir=None) -> Path:
        """The path of a role's file: found locally (gzip or raw), else downloaded."""
        filename, md5 = self.files[role]
        folders = []
        for folder in self._folders(data_dir):
            folders.append(folder)
            for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
                if candidate.is_file():
                    return candidate
        destination = folders[-1] / filename
        try:
            check_writable(destination, f"the {self.name} cache")
        except UsageError as error:  # say so once, not once per mirror
            raise DataError(f"{error}; put {filename} (gzip or raw IDX) in the folder given "
                            "as --data-dir ($DNN_DATA_DIR), or set $DNN_CACHE_DIR to a folder "
                            "you can write") from None
        try:
            download([mirror + filename for mirror in self.mirrors], destination, md5,
                     self.max_file_bytes(role))
        except DataError as error:
            where = " or ".join(str(folder) for folder in folders)
            raise DataError(f"{error}. Put {filename} (gzip or raw IDX) in {where}") from None
        return destination
