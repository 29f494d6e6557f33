"""Layers, Keras' ``keras.layers``: one module per family, as Keras lays them out.

- :mod:`dnn.layers.base`: the protocol every layer follows (:class:`Layer`, who owns which
  array, shapes, weights, regularization);
- :mod:`dnn.layers.core`: Dense, Input, Flatten, Dropout, Activation, Reshape;
- :mod:`dnn.layers.convolutional`: Conv2D, Conv1D;
- :mod:`dnn.layers.pooling`: MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
  GlobalMaxPooling2D, and over sequences MaxPooling1D, AveragePooling1D,
  GlobalAveragePooling1D, GlobalMaxPooling1D;
- :mod:`dnn.layers.embedding`: Embedding;
- :mod:`dnn.layers.normalization`: BatchNormalization;
- :mod:`dnn.layers.merging`: Add, Subtract, Multiply, Average, Maximum, Minimum,
  Concatenate, Dot (and Keras' functions of them, ``add``, ``concatenate``, ``dot``, ...),
  which join several layers' outputs in a functional model.

Keras' aliases are there too: ``Convolution2D``, ``Convolution1D``, ``MaxPool2D``,
``AvgPool2D``, ``GlobalAvgPool2D``, ``GlobalMaxPool2D``, ``MaxPool1D``, ``AvgPool1D``,
``GlobalAvgPool1D``, ``GlobalMaxPool1D``.
"""

from __future__ import annotations

import json
import reprlib

from dnn.errors import UnknownLayerError, UsageError
from dnn.layers.base import Layer, is_dnns_own, reserve_names
from dnn.layers.convolutional import Conv1D, Conv2D
from dnn.layers.core import Activation, Dense, Dropout, Flatten, Input, Reshape
from dnn.layers.embedding import Embedding
from dnn.layers.merging import (Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply,
                                Subtract, add, average, concatenate, dot, maximum, minimum,
                                multiply, subtract)
from dnn.layers.normalization import BatchNormalization
from dnn.layers.pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D,
                                GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
                                MaxPooling1D, MaxPooling2D)
from dnn.saving.registry import (custom_object_scope, get_registered_object,
                                 registered_under_class_name)

Convolution2D, Convolution1D = Conv2D, Conv1D
MaxPool1D, AvgPool1D = MaxPooling1D, AveragePooling1D
MaxPool2D, AvgPool2D, GlobalAvgPool2D = MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
GlobalAvgPool1D, GlobalMaxPool1D = GlobalAveragePooling1D, GlobalMaxPooling1D

__all__ = ["Layer", "Activation", "Add", "Average", "AveragePooling1D", "AveragePooling2D",
           "AvgPool1D", "AvgPool2D", "BatchNormalization", "Concatenate", "Conv1D", "Conv2D",
           "Convolution1D", "Convolution2D", "Dense", "Dot", "Dropout", "Embedding", "Flatten",
           "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAvgPool1D",
           "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPooling1D",
           "GlobalMaxPooling2D", "Input", "MaxPool1D", "MaxPool2D", "MaxPooling1D",
           "MaxPooling2D", "Maximum", "Minimum", "Multiply", "Reshape", "Subtract", "add",
           "average", "check_loadable", "check_remade", "concatenate", "dot", "from_config",
           "from_configs", "maximum", "minimum", "multiply", "subtract", "without_names"]

LAYERS = {cls.__name__: cls for cls in (
    Activation, Add, Average, AveragePooling1D, AveragePooling2D, BatchNormalization,
    Concatenate, Conv1D, Conv2D, Dense, Dot, Dropout, Embedding, Flatten,
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
    Input, Maximum, MaxPooling1D, MaxPooling2D, Minimum, Multiply, Reshape, Subtract)}


def from_config(config: dict):
    """A layer from its :meth:`Layer.get_config` dict (as stored in checkpoints): the class its
    ``"class"`` names is looked up among the classes of one's own first
    (:func:`dnn.saving.get_registered_object`), then among dnn's, then, for a file saved
    before its class was registered, by class name among the registered ones; the rest of the
    dict goes to the class' ``from_config``."""
    if not isinstance(config, dict):
        raise UsageError(f"a layer config is a dict such as {{'class': 'Dense', 'units': 10}}, "
                         f"not {reprlib.repr(config)}")
    config = dict(config)
    kind = config.pop("class", None)
    if not isinstance(kind, str):
        raise UsageError(f"a layer config names its class: {{'class': 'Dense', ...}}, not "
                         f"{kind!r}")
    cls = (get_registered_object(kind) or LAYERS.get(kind)
           or registered_under_class_name(kind))
    if cls is None:
        raise UnknownLayerError(
            f"unknown layer class {kind!r}: give load_model custom_objects={{"
            f"{kind.rpartition('>')[2]!r}: {kind.rpartition('>')[2]}}}, or register the "
            "class with @dnn.saving.register_keras_serializable()")
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise UnknownLayerError(f"custom object {kind!r} is {cls!r}, not a subclass of "
                                "dnn.layers.Layer")
    trainable = config.pop("trainable", True)  # every layer has the flag, Input included
    try:
        layer = cls.from_config(config)
    except TypeError as error:
        raise UsageError(f"{kind} cannot be made from its config {config}: {error}") from None
    layer.trainable = trainable
    return layer


def from_configs(configs: list) -> list:
    """The layers of a model config's ``"layers"`` list, each by :func:`from_config`, in
    order; a layer saved without a name (by an older dnn) is given a default one that none
    of the others has."""
    reserve_names([config.get("name") for config in configs if isinstance(config, dict)])
    return [from_config(config) for config in configs]


def check_loadable(layers: list) -> None:
    """Refuse (UsageError) the layers of one model where a file of their architecture could
    not be loaded: two of one name (a layer renamed after it joined the model), or a layer
    of one's own that its config cannot make again (:func:`check_remade`)."""
    seen = set()
    for layer in layers:
        if layer.name in seen:
            raise UsageError(f"the model has two layers named {layer.name!r}: layer names "
                             "must be unique (rename one)")
        seen.add(layer.name)
    for layer in layers:
        check_remade(layer)


def without_names(config: dict) -> dict:
    """A model's config (``get_config()``'s dict) less its layers' names: what two models of
    the same layers, named otherwise, have alike (the ranks of a data-parallel run and the
    command line compare these)."""
    return {**config, "layers": [{key: value for key, value in layer.items() if key != "name"}
                                 for layer in config["layers"]]}


def check_remade(layer: Layer) -> None:
    """Refuse (UsageError naming it) a layer of one's own that its config cannot make again
    (a subclass whose ``__init__`` differs from the ``get_config`` it inherits, say), before a
    file that no load could read is written: the layer is made from its config by its own
    class, not built, and the default names go on as if it had not been."""
    if is_dnns_own(type(layer)):
        return
    config = layer.get_config()
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{layer.name} ({type(layer).__name__}): its get_config() must give "
                         f"numbers, text, lists and dicts of them ({error})") from None
    made = dict(Layer._made)
    try:
        with custom_object_scope({config["class"]: type(layer)}):
            from_config(config)
    except UsageError as error:
        raise UsageError(f"{layer.name}: {error}; give {type(layer).__name__} a get_config "
                         "that returns the arguments of its __init__") from None
    finally:
        Layer._made.clear()
        Layer._made.update(made)
