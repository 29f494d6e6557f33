"""Keras' ``keras.models``: :class:`Sequential`, :class:`Model` (the functional API: chains
and graphs of layers), :func:`load_model`, :func:`model_from_json`, :func:`clone_model`."""

from __future__ import annotations

import json

from dnn.errors import ArgumentTypeError, UsageError
from dnn.layers.base import check_keras_only
from dnn.models.functional import Model
from dnn.models.sequential import Sequential
from dnn.callbacks.arguments import check_flag
from dnn.saving import checkpoint
from dnn.saving.registry import custom_object_scope

__all__ = ["Model", "Sequential", "load_model", "model_from_json", "clone_model"]


def load_model(path, custom_objects=None, compile=True, safe_mode=True, *, backend=None,
               seed=None, with_optimizer=True) -> Sequential:
    """The model saved by ``model.save(path)``, with its optimizer, on ``backend`` (default:
    the current one), ready to go on training where it stopped (its shuffle order too, unless
    ``seed`` seeds it anew).  Keras' arguments: ``custom_objects`` names the classes of one's
    own layers (``{"PReLU": PReLU}``; or register them,
    :func:`dnn.saving.register_keras_serializable`); ``compile=False`` gives the model
    uncompiled; ``safe_mode`` changes nothing, as a checkpoint holds no code to run.
    ``with_optimizer=False`` leaves the optimizer out (the model evaluates and predicts, and
    loads where the optimizer's plugin is not installed)."""
    if isinstance(custom_objects, str):  # load_model(path, "cpu"), before Keras' arguments
        raise ArgumentTypeError(f"load_model's second argument is custom_objects (a dict); "
                                f"name the backend: load_model(path, backend={custom_objects!r})")
    check_flag("load_model", "compile", compile)
    check_flag("load_model", "safe_mode", safe_mode)
    with custom_object_scope(custom_objects):
        return checkpoint.load(path, Sequential, backend=backend, seed=seed,
                               with_optimizer=with_optimizer, compile=compile)


def model_from_json(json_string, custom_objects=None, *, backend=None) -> Sequential:
    """A new model (fresh weights, not compiled) of the architecture ``Sequential.to_json``
    wrote; ``custom_objects`` as for :func:`load_model`."""
    if not isinstance(json_string, (str, bytes)):
        raise ArgumentTypeError(f"model_from_json takes a JSON string, not "
                                f"{type(json_string).__name__}")
    try:
        description = json.loads(json_string)
    except ValueError as error:
        raise UsageError(f"model_from_json: not JSON ({error})") from None
    except RecursionError:
        raise UsageError("model_from_json: JSON nested deeper than any model's") from None
    if (not isinstance(description, dict)
            or description.get("class_name") not in (Sequential.json_class_name,
                                                      Model.json_class_name)):
        raise UsageError("model_from_json reads what a model's to_json() writes: "
                         '{"class_name": "Sequential" (or "Functional"), "config": ...}')
    return Sequential.from_config(description.get("config"), custom_objects, backend=backend)


# Keras' clone_model arguments, taken at their defaults only
CLONE_MODEL_DEFAULTS = {"input_tensors": None, "clone_function": None, "call_function": None,
                        "recursive": False}


def clone_model(model: Sequential, **keras_only) -> Sequential:
    """A new model of ``model``'s architecture with freshly drawn weights (Keras'
    ``clone_model``: not compiled, weights not copied), built where ``model`` is built; its
    layers of one's own are made by their own classes, registered or not.  Keras' other
    arguments are taken at their defaults only."""
    check_keras_only("clone_model", keras_only, CLONE_MODEL_DEFAULTS)
    if not isinstance(model, Sequential):
        raise ArgumentTypeError(f"clone_model takes a Sequential, not {type(model).__name__}")
    config = model.get_config()
    own = {layer["class"]: type(made) for layer, made in zip(config["layers"], model._layers)}
    clone = Sequential.from_config(config, own, backend=model.backend)
    if model.built:
        clone.build(model.sample_shape)
    return clone
