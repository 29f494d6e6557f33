"""Layers, Keras' ``keras.layers``: one module per family, as Keras lays them out.

- :mod:`dnn.layers.base`: the protocol every layer follows (:class:`Layer`, who owns which
  array, shapes, weights, regularization);
- :mod:`dnn.layers.core`: Dense, Input, Flatten, Dropout, Activation, Reshape;
- :mod:`dnn.layers.convolutional`: Conv2D;
- :mod:`dnn.layers.pooling`: MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D;
- :mod:`dnn.layers.normalization`: BatchNormalization.

Keras' aliases are there too: ``Convolution2D``, ``MaxPool2D``, ``AvgPool2D``,
``GlobalAvgPool2D``.
"""

from __future__ import annotations

from dnn.errors import UsageError
from dnn.layers.base import Layer, weight_shapes
from dnn.layers.convolutional import Conv2D
from dnn.layers.core import Activation, Dense, Dropout, Flatten, Input, Reshape
from dnn.layers.normalization import BatchNormalization
from dnn.layers.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D

Convolution2D = Conv2D
MaxPool2D, AvgPool2D, GlobalAvgPool2D = MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D

__all__ = ["Layer", "Activation", "AveragePooling2D", "AvgPool2D", "BatchNormalization",
           "Conv2D", "Convolution2D", "Dense", "Dropout", "Flatten", "GlobalAveragePooling2D",
           "GlobalAvgPool2D", "Input", "MaxPool2D", "MaxPooling2D", "Reshape", "from_config",
           "weight_shapes"]

LAYERS = {cls.__name__: cls for cls in (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, Input, MaxPooling2D, Reshape)}


def from_config(config: dict):
    """A layer from its :meth:`Layer.get_config` dict (as stored in checkpoints)."""
    config = dict(config)
    cls = LAYERS.get(config.pop("class", None))
    if cls is None:
        raise UsageError(f"unknown layer class in {config!r}")
    trainable = config.pop("trainable", True)  # every layer has the flag, Input included
    layer = cls(**config)
    layer.trainable = trainable
    return layer
