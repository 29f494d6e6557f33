"""Checkpoints: an ``.npz`` of host arrays plus the architecture and optimizer as JSON.

Layout: ``weight_<i>`` for every parameter in :meth:`Sequential.get_weights` order,
``state_<i>_<key>`` for the optimizer state of parameter ``i``, and ``meta``, a 0-d string
array holding ``{"format": "dnn-checkpoint", "version": 1, "model": ..., "optimizer": ...}``.
Written to a temporary file and renamed; read with ``allow_pickle=False`` onto any backend.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from dnn import optimizers, plugins
from dnn.callbacks import Callback
from dnn.errors import CheckpointError, UsageError
from dnn.fileio import atomic_write
from dnn.model import Sequential, dense_classifier
from dnn.utils import is_int_at_least

FORMAT = "dnn-checkpoint"
VERSION = 1


def save(model: Sequential, path) -> None:
    """Write ``model`` (built, compiled with an optimizer) and its optimizer state to ``path``
    atomically."""
    optimizer = model.optimizer
    if optimizer is None:
        raise UsageError("a checkpoint holds the optimizer too: compile() the model with one "
                         "before saving it")
    arrays = {f"weight_{i}": weight for i, weight in enumerate(model.get_weights())}
    for i, state in enumerate(optimizer.states):
        for key, value in state.items():
            arrays[f"state_{i}_{key}"] = model.backend.to_numpy(value)
    meta = {
        "format": FORMAT, "version": VERSION, "model": model.get_config(),
        "loss": model.loss.name, "metrics": list(model.metrics),
        "optimizer": {"name": plugins.name_of("optimizer", type(optimizer)),
                      "config": optimizer.get_config(), "iterations": optimizer.iterations},
    }
    try:
        meta_json = json.dumps(meta, default=_json_scalar)
    except (TypeError, ValueError) as error:  # a plugin's hyper-parameter JSON cannot hold
        raise UsageError(f"cannot save {path}: the optimizer's hyper-parameters "
                         f"{optimizer.get_config()} must be numbers, strings, booleans or None "
                         f"({error})") from None
    with atomic_write(path) as file:
        np.savez(file, meta=np.asarray(meta_json), **arrays)


def _json_scalar(value):
    """A NumPy scalar (say ``np.float32(0.9)`` as a hyper-parameter) as the Python number."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _read(path: Path) -> tuple[dict, dict]:
    """The checkpoint's metadata and arrays; CheckpointError for anything else."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else
                              f"checkpoint {path} is not a file")
    if not zipfile.is_zipfile(path):  # else np.load tries it as a pickle and says so
        raise CheckpointError(f"{path} is not a dnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile) or "meta" not in archive.files:
                raise CheckpointError(f"{path} is not a dnn checkpoint")
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a dnn checkpoint ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {meta.get('version')} checkpoint; this dnn "
                              f"reads version {VERSION}")
    return meta, arrays


def load(path, backend=None, seed=None, *, with_optimizer=True) -> Sequential:
    """The model saved at ``path``, built and compiled on ``backend`` (default: current),
    with its optimizer state, ready to evaluate or to go on training (``seed`` seeds the
    shuffle order from here on).  ``with_optimizer=False`` leaves the optimizer out: the model
    can evaluate and predict, and loads where the optimizer's plugin is not installed."""
    path = Path(path)
    meta, arrays = _read(path)
    try:
        model = Sequential.from_config(meta["model"], backend=backend, seed=seed)
        optimizer = _optimizer(path, meta["optimizer"]) if with_optimizer else None
        model.compile(optimizer=optimizer, loss=meta["loss"], metrics=meta["metrics"])
        weights = [arrays[f"weight_{i}"]
                   for i in range(sum(name.startswith("weight_") for name in arrays))]
        model.build(weights[0].shape[0])
        model.set_weights(weights)
        if optimizer is not None:
            _restore_state(path, model, arrays, meta["optimizer"]["iterations"])
    except (KeyError, TypeError, IndexError, ValueError) as error:  # UsageError included
        raise CheckpointError(f"{path} is damaged or does not match its architecture "
                              f"({type(error).__name__}: {error})") from None
    return model


def _optimizer(path: Path, spec: dict):
    """The saved optimizer, from its plugin name and hyper-parameters."""
    if spec["name"] not in plugins.names("optimizer"):
        installed = ", ".join(plugins.names("optimizer"))
        raise CheckpointError(f"{path} was trained with the optimizer {spec['name']!r}, which "
                              f"is not installed here (installed: {installed}); install its "
                              "plugin to go on training it")
    return optimizers.get(spec["name"], **spec["config"])


def _restore_state(path: Path, model: Sequential, arrays: dict, iterations) -> None:
    """Put the saved optimizer state and step count into ``model.optimizer``, whose fresh
    state (from ``init_state``) gives each array's shape and dtype: a plugin's state need not
    have its parameter's."""
    if not is_int_at_least(iterations, 0):
        raise CheckpointError(f"{path} is damaged: the optimizer's step count is "
                              f"{iterations!r}")
    optimizer, xp = model.optimizer, model.backend.xp
    for i, state in enumerate(optimizer.states):
        for key, fresh in state.items():
            saved = arrays[f"state_{i}_{key}"]
            if saved.shape != tuple(fresh.shape):
                raise CheckpointError(f"{path} is damaged: the optimizer's {key} for weight "
                                      f"{i} has shape {saved.shape}, not {tuple(fresh.shape)}")
            state[key] = xp.astype(model.backend.asarray(saved), fresh.dtype)
    optimizer.iterations = iterations


def describe(config: dict) -> str:
    """``"512 relu -> 10 softmax (float32)"`` for a model config."""
    layers = " -> ".join(f"{layer['units']} {layer['activation']}" for layer in config["layers"])
    return f"{layers} ({config['dtype']})"


def check_architecture(model: Sequential, path, classes: int, *, hidden=None,
                       dtype=None) -> None:
    """Refuse (CheckpointError) a model loaded from ``path`` that is not the
    :func:`dense_classifier` of ``hidden`` units and ``dtype`` over ``classes``; either left
    out (None) is the saved model's own."""
    if hidden is None and dtype is None:
        return
    wanted = dense_classifier(hidden or [layer.units for layer in model.layers[:-1]], classes,
                              dtype=dtype or model.dtype).get_config()
    if wanted != model.get_config():
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


class SaveEachEpoch(Callback):
    """Saves the model after every completed epoch, so that a later divergence keeps the last
    good checkpoint."""

    def __init__(self, path):
        self.path = path

    def on_train_begin(self, model, epochs, steps_per_epoch):
        self.model = model

    def on_epoch_end(self, epoch, logs):
        save(self.model, self.path)
