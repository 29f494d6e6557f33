"""The network the command line trains, and the checks of a checkpoint given to it."""

from __future__ import annotations

import numpy as np

from dnn import layers
from dnn.errors import CheckpointError, UsageError
from dnn.models.sequential import Sequential, describe


def dense_classifier(hidden, classes: int, **kwargs) -> Sequential:
    """Hidden relu layers of ``hidden`` units each, then a softmax over ``classes``: the
    network the command line trains; ``kwargs`` go to :class:`Sequential`."""
    return Sequential([*(layers.Dense(units, activation="relu") for units in hidden),
                       layers.Dense(classes, activation="softmax")], **kwargs)


def check_architecture(model: Sequential, path, classes: int, *, hidden=None,
                       dtype=None) -> None:
    """Refuse (CheckpointError) a model loaded from ``path`` that is not the
    :func:`dense_classifier` of ``hidden`` units and ``dtype`` over ``classes``; either left
    out (None) is the saved model's own."""
    if hidden is None and dtype is None:
        return
    wanted = dense_classifier(hidden or [layer.units for layer in model.layers[:-1]], classes,
                              dtype=dtype or model.dtype).get_config()
    if wanted["layers"] != model.get_config()["layers"] or wanted["dtype"] != str(model.dtype):
        raise CheckpointError(f"{path} holds a model {describe(model.get_config())}, not "
                              f"{describe(wanted)}")


def check_fits(model: Sequential, path, dataset_name: str, x, classes: int) -> None:
    """Refuse (UsageError) a model loaded from ``path`` whose input or output size is not the
    dataset's (``x``: its ``(N, ...)`` inputs), naming both, before it meets the data."""
    features = int(np.prod(x.shape[1:]))
    takes, outputs = model.input_dim, model.layers[-1].output_dim
    if (takes, outputs) != (features, classes):
        raise UsageError(f"{path} takes {takes} features and has {outputs} classes; "
                         f"{dataset_name} has {features} features and {classes} classes")
