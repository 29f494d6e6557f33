"""Small helpers for users' data."""

from __future__ import annotations

import numpy as np

from dnn.errors import UsageError


def to_categorical(labels, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """One-hot ``(N, num_classes)`` host array from integer labels ``(N,)``."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"to_categorical wants integer labels (N,), not {labels.dtype} "
                         f"{labels.shape}")
    num_classes = int(labels.max(initial=-1)) + 1 if num_classes is None else num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"labels must lie in [0, {num_classes})")
    one_hot = np.zeros((labels.shape[0], num_classes), dtype)
    one_hot[np.arange(labels.shape[0]), labels] = 1
    return one_hot
