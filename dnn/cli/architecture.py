"""The network the command line trains, and the checks of a checkpoint given to it."""

from __future__ import annotations

import numpy as np

from dnn import layers
from dnn.errors import CheckpointError, UsageError
from dnn.models import Sequential
from dnn.saving.checkpoint import describe


def dense_classifier(hidden, classes: int, **kwargs) -> Sequential:
    """Hidden relu layers of ``hidden`` units each, then a softmax over ``classes``: the
    network the command line trains; ``kwargs`` go to :class:`Sequential`."""
    return Sequential([*(layers.Dense(units, activation="relu") for units in hidden),
                       layers.Dense(classes, activation="softmax")], **kwargs)


def check_architecture(model: Sequential, path, classes: int, *, hidden=None,
                       dtype=None) -> None:
    """Refuse (CheckpointError) a model loaded from ``path`` whose layers are not the
    :func:`dense_classifier` of ``hidden`` units over ``classes``, or whose dtype is not
    ``dtype``; either left out (None) is the saved model's own, whatever its layers are."""
    saved = layers.without_names(model.get_config())
    wanted = {"layers": saved["layers"], "dtype": saved["dtype"]}
    if hidden is not None:
        wanted["layers"] = layers.without_names(
            dense_classifier(hidden, classes).get_config())["layers"]
    if dtype is not None:
        wanted["dtype"] = str(np.dtype(dtype))
    if (wanted["layers"], wanted["dtype"]) != (saved["layers"], saved["dtype"]):
        raise CheckpointError(f"{path} holds a model {describe(saved)}, not "
                              f"{describe(wanted)}")


def check_fits(model: Sequential, path, dataset_name: str, x, classes: int) -> None:
    """Refuse (UsageError) a model loaded from ``path`` whose input or output size is not the
    dataset's (``x``: its ``(N, ...)`` inputs), naming both, before it meets the data."""
    if not model.stack:
        raise CheckpointError(f"{path} holds a model of its Input alone: no layer computes "
                              "its outputs")
    if model._input_count > 1:
        raise UsageError(f"{path} holds a model of {model._input_count} inputs; a dataset "
                         "gives one: train and evaluate it in Python, with its inputs as a list")
    if len(model.output_layers) > 1:
        raise UsageError(f"{path} holds a model of {len(model.output_layers)} outputs; a "
                         "dataset gives one label a sample: train and evaluate it in Python, "
                         "with its targets as a list")
    features = int(np.prod(x.shape[1:]))
    takes, outputs = model.input_dim, model.output_layers[0].output_features
    if (takes, outputs) != (features, classes):
        raise UsageError(f"{path} takes {takes} features and has {outputs} classes; "
                         f"{dataset_name} has {features} features and {classes} classes "
                         "(name the dataset it was trained on with --dataset)")
