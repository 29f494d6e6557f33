"""Checkpoints: an ``.npz`` of host arrays plus the architecture and optimizer as JSON.

Layout: ``weight_<i>`` for every weight in :meth:`Sequential.get_weights` order,
``state_<i>_<key>`` for the optimizer state of trained weight ``i`` (the model's ``params``),
and ``meta``, a 0-d string array holding ``{"format": "dnn-checkpoint", "version": 1, "model":
..., "input_shape": [...], "optimizer": ...}``; ``input_shape``, one sample's, is left out
where the first layer is a Dense on flat inputs (its kernel's rows say it, as in the files of
older dnn versions) and for a model of several inputs (its Inputs say theirs).
Written to a temporary file and renamed; read with ``allow_pickle=False`` onto any backend.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from dnn import backends, layers, losses, metrics, optimizers, plugins
from dnn.errors import (ArgumentTypeError, CheckpointError, DivergenceError, UnknownLayerError,
                        UsageError)
from dnn.layers.graph import computing, graph_of_config, input_count
from dnn.saving.fileio import atomic_write, write_errors_named
from dnn.saving.npz_reader import NpzReader
from dnn.utils import check_seed, element_count, is_int_at_least, user_stacklevel

FORMAT = "dnn-checkpoint"
VERSION = 1
MEMBER = re.compile(r"meta|weight_\d+|state_\d+_\w+")  # the members a checkpoint holds
MAX_META_CHARS = 1 << 18
MAX_INPUT_AXES = 8  # more than any array library's images have


def describe(config: dict) -> str:
    """``"512 relu -> dropout -> 10 softmax (float32)"`` for a model config."""
    layers_of = " -> ".join(f"{layer['units']} {layer['activation']}"
                            if layer.get("class") == "Dense"
                            else str(layer.get("class", "?")).lower()
                            for layer in config["layers"])
    return f"{layers_of} ({config['dtype']})"


def save(model, path) -> None:
    """Write ``model`` (built), its compiled loss, metrics and optimizer with its state to
    ``path`` atomically (a model compiled without an optimizer, or not compiled, is saved
    without them: :meth:`Sequential.save_weights`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"save needs a file name, not {type(path).__name__}")
    if not model.built:
        raise UsageError("the model has no weights yet to save: call it on data or build() it")
    layers.check_loadable(model._layers)  # a file that no load could read is not written
    arrays = {f"weight_{i}": weight for i, weight in enumerate(model.get_weights())}
    optimizer = model.optimizer
    meta = {
        "format": FORMAT, "version": VERSION, "model": model.get_config(),
        **_compile_state(model.heads_in_loss_order),
        "optimizer": None,
        # where training stands: resuming goes on with the next epoch and the next shuffle
        "epochs_done": model.epochs_done, "shuffle_state": model.rng.bit_generator.state,
    }
    if model._input_count == 1 and (len(model.sample_shape) > 1 or not model.stack
                                    or not isinstance(model.stack[0], layers.Dense)):
        meta["input_shape"] = list(model.sample_shape)  # where the first kernel does not say it
    if optimizer is not None:
        for i, state in enumerate(optimizer.states):
            for key, value in state.items():
                arrays[_state_member(i, key)] = model.backend.to_numpy(value)
        meta["optimizer"] = {"name": plugins.name_of("optimizer", type(optimizer)),
                             "config": optimizer.get_config(),
                             "iterations": int(optimizer.iterations)}
    _refuse_diverged(arrays, path)
    try:
        meta_json = json.dumps(meta, default=_json_scalar)
    except (TypeError, ValueError) as error:  # a plugin's hyper-parameter JSON cannot hold
        raise UsageError(f"cannot save {path}: the optimizer's hyper-parameters "
                         f"{meta['optimizer']['config']} must be numbers, strings, booleans or "
                         f"None ({error})") from None
    if len(meta_json) > MAX_META_CHARS:
        raise UsageError(f"cannot save {path}: the model's description takes "
                         f"{len(meta_json):,} characters, more than a checkpoint holds "
                         f"({MAX_META_CHARS:,}): give its layers shorter names")
    with atomic_write(path) as file, write_errors_named(path):  # a full disk, say
        np.savez(file, meta=np.asarray(meta_json), **arrays)


def _state_member(index: int, key: str) -> str:
    """The checkpoint member holding the optimizer's state ``key`` for weight ``index``."""
    return f"state_{index}_{key}"


def _state_of_member(name: str) -> tuple[str, str] | None:
    """``(weight index, key)`` of a member :func:`_state_member` names, else None."""
    parts = name.split("_", 2)
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "state" else None


def _refuse_diverged(arrays: dict, path) -> None:
    """A DivergenceError, before anything is written, where one of ``arrays`` (a checkpoint's
    members by name: weights and optimizer state) holds NaN or infinite values, which
    :func:`load` would refuse."""
    for name, array in arrays.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            state = _state_of_member(name)
            if state is not None:
                what = f"optimizer's {state[1]} for weight {state[0]}"
            else:
                what = f"weight {name.removeprefix('weight_')}"
            raise DivergenceError(f"the model's {what} holds NaN or infinite values (its "
                                  f"training diverged): not saved to {os.fspath(path)}")


def _json_scalar(value):
    """A NumPy scalar (say ``np.float32(0.9)`` as a hyper-parameter) as the Python number."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _open(path) -> NpzReader:
    """The checkpoint at ``path`` opened, its directory checked; CheckpointError for anything
    that is not a file of the checkpoint's members."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"a checkpoint path must be a file name, not "
                                f"{type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else
                              f"checkpoint {path} is not a file")
    return NpzReader(path, MEMBER.fullmatch)


def _meta(archive: NpzReader) -> dict:
    """The checkpoint's metadata: a JSON string of at most MAX_META_CHARS characters."""
    path = archive.path
    if "meta" not in archive.names:
        raise CheckpointError(f"{path} is not a dnn checkpoint (it has no meta member)")
    shape, dtype = archive.header("meta")
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * MAX_META_CHARS:
        raise CheckpointError(f"{path} is not a dnn checkpoint (its meta member is {dtype} "
                              f"{shape}, not a JSON string of at most {MAX_META_CHARS:,} "
                              "characters)")
    try:
        meta = json.loads(str(archive.array("meta")))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not a dnn checkpoint (its meta member is not JSON "
                              f"dnn can read: {type(error).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {meta.get('version')} checkpoint; this dnn "
                              f"reads version {VERSION}")
    return meta


def load(path, model_class, backend=None, seed=None, *, with_optimizer=True, compile=True):
    """The model saved at ``path``, made by ``model_class.of_saved_layers``
    (:class:`dnn.Sequential`'s, given by :func:`dnn.models.load_model`: a Sequential, or the
    functional Model it was saved as) built and compiled on ``backend`` (default: current),
    with its optimizer state and the epochs it trained, ready to evaluate or to go on training
    where it stopped (the shuffle order goes on as it would have, unless ``seed`` seeds it
    anew).  ``with_optimizer=False`` leaves the optimizer out: the model can evaluate and
    predict, and loads where the optimizer's plugin is not installed; ``compile=False`` leaves
    the loss and metrics out too (Keras' uncompiled model).

    Nothing is allocated before it is checked: the zip directory against the bytes of the
    file, then the metadata, then every weight's header against the architecture, then the
    weights themselves, read; only then is the model made and built (at once, where its first
    layer declares its inputs)."""
    backend = backends.resolve(backend)  # an unknown backend or a bad seed is not the file's
    check_seed(seed)
    with _open(path) as archive:
        meta = _meta(archive)
        path = archive.path
        with _damage_reported(path):
            config = meta["model"]
            made = _layers_of(config)
            stack = computing(made)
            graph = graph_of_config(config, made)
            weights = _read_weights(archive, lambda shapes: graph.weight_shapes(stack, shapes),
                                    _input_shapes(path, meta, made),
                                    describe(_architecture(config, made)))
            model = model_class.of_saved_layers(made, config, backend=backend, seed=seed)
            spec = meta["optimizer"] if with_optimizer and compile else None
            if meta["loss"] is not None and compile:
                model.compile(optimizer=None if spec is None else _optimizer(path, spec),
                              **_compile_arguments(meta))
            _restore(archive, model, meta, spec is not None, weights)
            _restore_progress(path, model, meta, seed)
    return model


def to_bytes(model) -> bytes:
    """The checkpoint :func:`save` writes of ``model``, as bytes (pickling a model)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "model.npz")
        save(model, path)
        return path.read_bytes()


def from_bytes(data: bytes, model_class, backend):
    """The model of the checkpoint ``data`` (:func:`to_bytes`) on ``backend`` (a name), as
    :func:`load` makes it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "model.npz")
        path.write_bytes(data)
        return load(path, model_class, backend=backend)


def load_into(model, path) -> None:
    """Load the weights saved at ``path`` into ``model`` (built here if it is not yet), which
    must have the file's architecture; the optimizer's state and the epochs trained too where
    the model has the optimizer the file was saved with."""
    with _open(path) as archive:
        meta = _meta(archive)
        path = archive.path
        with _damage_reported(path):
            made = _layers_of(meta["model"])
            saved = _architecture(meta["model"], made)
            ours = model.get_config()
            _check_same_layers(path, saved["layers"], ours["layers"])
            joined = graph_of_config(meta["model"], made)
            if (joined.inputs, joined.inbound) != (model.graph.inputs, model.graph.inbound):
                raise CheckpointError(f"{path} holds another model: its layers are joined as "
                                      f"{_joined(joined)}, this model's as "
                                      f"{_joined(model.graph)}")
            declared = model.sample_shapes or _input_shapes(path, meta, model._layers)
            weights = _read_weights(archive, lambda shapes: model.graph.weight_shapes(
                model.stack, shapes), declared, describe(ours))
            spec = meta["optimizer"]
            same_optimizer = (spec is not None and model.optimizer is not None
                              and spec["name"] == plugins.name_of("optimizer",
                                                                  type(model.optimizer)))
            _restore(archive, model, meta, same_optimizer, weights)
            if same_optimizer:
                _restore_progress(path, model, meta, seed=None)


def _check_same_layers(path, saved: list, ours: list) -> None:
    """Refuse (CheckpointError naming the first difference) layers of another kind or other
    arguments than the file's; whether a layer is trainable, its name and an Input (rather
    than a first layer's ``input_shape``) do not count, as the weights do not depend on them."""
    def essential(configs):
        return [{key: value for key, value in config.items() if key not in ("name", "trainable")}
                for config in configs if config.get("class") != "Input"]

    mine, theirs = essential(saved), essential(ours)
    for index, (file_layer, model_layer) in enumerate(zip(mine, theirs)):
        if file_layer != model_layer:
            raise CheckpointError(f"{path} holds another model: its layer {index + 1} (after "
                                  f"any Input) is {file_layer}, this model's {model_layer}")
    if len(mine) != len(theirs):
        raise CheckpointError(f"{path} holds a model of {len(mine)} layers (after any Input); "
                              f"this model has {len(theirs)}")


def _joined(graph) -> str:
    """How a model's layers take each other's outputs, in words."""
    return "a chain" if graph.is_chain else f"the graph {graph.get_config()}"


class _damage_reported:
    """Turns what a damaged file makes the model code raise into one CheckpointError."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, UnknownLayerError):
            return False  # not damage: a class of the user's own that was not made known
        if kind is not None and issubclass(kind, (KeyError, TypeError, IndexError, ValueError)):
            raise CheckpointError(f"{self.path} is damaged or does not match its architecture "
                                  f"({kind.__name__}: {error})") from None
        if kind is not None and issubclass(kind, MemoryError):
            raise CheckpointError(f"{self.path} describes a model too large for this "
                                  "machine's memory") from None
        return False


def _layers_of(config: dict) -> list:
    """The layers of the architecture ``config`` (:meth:`Sequential.get_config`'s dict), made
    but in no model yet, so that nothing is built before the file is checked against them."""
    return layers.from_configs(config["layers"])


def _architecture(config: dict, made: list) -> dict:
    """``config`` as the model's ``get_config()`` would give it, from its layers ``made``
    (for :func:`describe`)."""
    return {"dtype": str(config.get("dtype", "float32")),
            "layers": [layer.get_config() for layer in made]}


def _input_shapes(path, meta: dict, made: list) -> tuple | None:
    """The shape of one sample of each input of the saved model (whose layers ``made``
    begin with an Input per input, or with one that computes): those the Inputs, or the
    first layer, declare, else the file's ``input_shape``, else None (the first weight's rows
    then say it)."""
    inputs = input_count(made)
    if inputs > 1:
        return tuple(tuple(layer.declared_input_shape) for layer in made[:inputs])
    declared = made[0].declared_input_shape if made else None
    shape = meta.get("input_shape")
    if declared is not None or shape is None:
        return None if declared is None else (tuple(declared),)
    if (not isinstance(shape, list) or len(shape) > MAX_INPUT_AXES
            or element_count(tuple(shape)) is None):
        raise CheckpointError(f"{path} is damaged: its input shape is {shape!r}")
    return (tuple(shape),)


def _read_weights(archive: NpzReader, param_shapes, input_shapes, architecture: str) -> list:
    """Every weight in the file, read: their shapes are ``param_shapes(shapes)`` for the
    ``input_shapes`` (one sample's of each input) of the ``architecture`` (its description),
    or where that is None for the first weight's rows; each header must agree before any
    data is read.  What a model then allocates is bounded by the bytes the file really
    holds, not by what it claims."""
    shapes = _weight_shapes(archive, param_shapes, input_shapes, architecture)
    return [_weight(archive, index, shape) for index, shape in enumerate(shapes)]


def _restore(archive: NpzReader, model, meta: dict, with_optimizer: bool,
             weights: list) -> None:
    """``weights`` (read by :func:`_read_weights`) into ``model``, built first if need be,
    and the optimizer's state when ``with_optimizer``."""
    if not model.built:
        declared = _input_shapes(archive.path, meta, model.stack)  # of its one input
        model.build(declared[0] if declared else weights[0].shape[0])
    model.set_weights(weights)
    if with_optimizer:
        spec = meta["optimizer"]
        _restore_state(archive, model, spec["iterations"],
                       settings_differ=spec["config"] != model.optimizer.get_config())


def _compile_state(heads: list) -> dict:
    """The metadata of a model compiled with ``heads`` (none: not compiled; several: in the
    order of their losses): ``loss`` (a name), ``loss_options``, ``metrics`` and
    ``weighted_metrics`` (lists) for a model of one output; for a model of several, each a
    dict keyed by the outputs' names (as compile takes them), and ``loss_weights`` too."""
    if not heads:
        return {"loss": None, "loss_options": {}, "metrics": [], "weighted_metrics": []}
    state = [{"loss": head.loss.name, "loss_options": head.loss.get_config(),
              "metrics": [metrics.serialize(m) for m in head.metrics],
              "weighted_metrics": [metrics.serialize(m) for m in head.weighted_metrics],
              "loss_weights": head.weight} for head in heads]
    if len(heads) == 1:
        return {key: value for key, value in state[0].items() if key != "loss_weights"}
    return {key: {head.name: item[key] for head, item in zip(heads, state)}
            for key in state[0]}


def _compile_arguments(meta: dict) -> dict:
    """compile's loss, metrics and weighted_metrics (and loss_weights, for a model of several
    outputs) from the metadata :func:`_compile_state` wrote."""
    loss, options = meta["loss"], meta.get("loss_options", {})
    if not isinstance(loss, dict):
        return {"loss": losses.get(loss, **options), "metrics": _metrics(meta.get("metrics", [])),
                "weighted_metrics": _metrics(meta.get("weighted_metrics", []))}
    return {"loss": {name: losses.get(value, **options[name]) for name, value in loss.items()},
            "loss_weights": meta["loss_weights"],
            **{key: {name: _metrics(value) for name, value in meta[key].items()}
               for key in ("metrics", "weighted_metrics")}}


def _metrics(serialized: list) -> list:
    return [metrics.deserialize(item) for item in serialized]


def _weight_shapes(archive: NpzReader, param_shapes, input_shapes, architecture: str) -> list:
    """The shape of every weight, ``param_shapes(shapes)`` for the sample shape of each
    input, ``input_shapes``, or else the first weight's rows; each weight's header must agree
    before anything is allocated."""
    path = archive.path
    count = sum(name.startswith("weight_") for name in archive.names)
    if input_shapes is None:
        first = archive.header("weight_0")[0] if "weight_0" in archive.names else ()
        if len(first) != 2:
            raise CheckpointError(f"{path} is damaged: its first weight has shape {first}, "
                                  "not (inputs, units)")
        input_shapes = ((first[0],),)
    shapes = param_shapes(input_shapes)
    if count != len(shapes) or any(f"weight_{i}" not in archive.names for i in range(count)):
        raise CheckpointError(f"{path} is damaged: it holds {count} weights; its "
                              f"architecture has {len(shapes)}")
    for index, shape in enumerate(shapes):
        found, dtype = archive.header(f"weight_{index}")
        if found != shape:
            raise CheckpointError(f"{path} is damaged: weight {index} has shape {found}; its "
                                  f"architecture {architecture} needs {shape}")
        if dtype.kind not in "biuf":
            raise CheckpointError(f"{path} is damaged: weight {index} must be real numbers, "
                                  f"not {dtype}")
    return shapes


def _weight(archive: NpzReader, index: int, shape: tuple) -> np.ndarray:
    weight = archive.array(f"weight_{index}", shape)
    if not np.isfinite(weight).all():
        raise CheckpointError(f"{archive.path} holds NaN or infinite values in weight {index}: "
                              "the model it saved had diverged")
    return weight


def _optimizer(path: Path, spec: dict):
    """The saved optimizer, from its plugin name and hyper-parameters."""
    if spec["name"] not in plugins.names("optimizer"):
        installed = ", ".join(plugins.names("optimizer"))
        raise CheckpointError(f"{path} was trained with the optimizer {spec['name']!r}, which "
                              f"is not installed here (installed: {installed}); install its "
                              "plugin to go on training it")
    return optimizers.get(spec["name"], **spec["config"])


def _restore_progress(path, model, meta: dict, seed) -> None:
    """The epochs done and, unless ``seed`` asks for a new one, the shuffle order's state
    (both absent from checkpoints of older dnn versions: then 0 and ``seed``'s)."""
    epochs_done = meta.get("epochs_done", 0)
    if not is_int_at_least(epochs_done, 0):
        raise CheckpointError(f"{path} is damaged: its epoch count is {epochs_done!r}")
    model.epochs_done = epochs_done
    if seed is None and "shuffle_state" in meta:
        model.rng.bit_generator.state = meta["shuffle_state"]


def _restore_state(archive: NpzReader, model, iterations, settings_differ: bool) -> None:
    """Put the saved optimizer state and step count into ``model.optimizer``, whose fresh
    state (from ``init_state``) gives each array's shape and dtype: a plugin's state need not
    have its parameter's.  A state array the optimizer does not have is refused; but where
    ``settings_differ`` (the optimizer is the file's kind made with other settings) and its
    state has other arrays, the state is left as it is, with a warning."""
    path = archive.path
    if not is_int_at_least(iterations, 0):
        raise CheckpointError(f"{path} is damaged: the optimizer's step count is "
                              f"{iterations!r}")
    optimizer, xp = model.optimizer, model.backend.xp
    saved_kinds = {state[1] for state in map(_state_of_member, archive.names) if state}
    our_kinds = {key for state in optimizer.states for key in state}
    if saved_kinds != our_kinds and settings_differ:  # made with other settings (amsgrad)
        warnings.warn(f"{path} holds {type(optimizer).__name__} state of other settings "
                      f"({', '.join(sorted(saved_kinds)) or 'none'}; this optimizer keeps "
                      f"{', '.join(sorted(our_kinds)) or 'none'}): the weights are loaded, the "
                      "optimizer's state starts afresh", UserWarning,
                      stacklevel=user_stacklevel())
        return
    wanted = {_state_member(i, key) for i, state in enumerate(optimizer.states) for key in state}
    extra = sorted(name for name in archive.names
                   if name.startswith("state_") and name not in wanted)
    if extra:
        raise CheckpointError(f"{path} is damaged: it holds optimizer state {extra[0]} that "
                              f"{type(optimizer).__name__} does not have")
    for i, state in enumerate(optimizer.states):
        for key, fresh in state.items():
            name = _state_member(i, key)
            shape = archive.header(name)[0]
            if shape != tuple(fresh.shape):
                raise CheckpointError(f"{path} is damaged: the optimizer's {key} for weight "
                                      f"{i} has shape {shape}, not {tuple(fresh.shape)}")
            saved = archive.array(name, shape)
            if saved.dtype.kind in "fc" and not np.isfinite(saved).all():
                raise CheckpointError(f"{path} holds NaN or infinite values in the optimizer's "
                                      f"{key} for weight {i}: the model it saved had diverged")
            state[key] = xp.astype(model.backend.asarray(saved), fresh.dtype)
    optimizer.iterations = iterations
