"""Keras' metrics: the classes, their names for ``compile(metrics=[...])``, and Keras' stateless
functions.

A metric is Keras' weighted mean of a value per sample, kept as two 0-d arrays on the model's
device, ``total`` (the sum of ``weight * value``) and ``count`` (the sum of the weights), that a
training step updates in place, so that a captured step (a CUDA graph, see
:mod:`dnn.trainers.step`) replays the update batch after batch and an epoch reads the result
once.  The protocol, on :class:`Metric`:

- ``metric.build(backend, dtype, activation=None)``: allocate ``total`` and ``count``, zeros
  of ``dtype`` (the model's float dtype; a metric made with ``dtype=`` keeps its own) on
  ``backend``.  ``activation`` None says :meth:`~Metric.update_state` will be given
  probabilities (the model's output).  Where the loss takes the logits of the last layer, pass
  that layer's activation and the logits instead: the argmax and top-k metrics read the logits
  of any activation that keeps the order of a row (softmax, sigmoid, tanh, linear), binary
  accuracy those of a sigmoid (cut at the logit of its threshold: 0 for 0.5), and the others
  apply the activation to a copy.  ``metric.variables`` is ``[total, count]``, the arrays a
  step writes (for its snapshots).
- ``metric.update_state(y_true, y_pred, sample_weight=None)``: add a batch, arrays of the
  backend: ``y_pred`` ``(n, k)``; ``y_true`` integer labels ``(n,)`` or float targets
  ``(n, k)`` (labels and their one-hot rows give the same result in every metric; with one
  output, ``(n,)`` targets are its column);
  ``sample_weight`` None or floats ``(n,)``.  It adds ``sum(w * value)`` to ``total`` and
  ``sum(w)`` to ``count`` (``n`` without weights) with device operations only, writing into
  the same two arrays every time: no value is read on the host.  Unweighted accuracies count
  with ``Backend.correct_count`` (fused on the gpu backend).
- ``metric.result()``: ``total / count`` read from the device, a Python float (0.0 while
  ``count`` is 0, as Keras' ``divide_no_nan``).
- ``metric.reset_state()``: zero both, in place.

:func:`check` turns ``compile``'s ``metrics`` into Metric objects, each named by the key Keras 3
reports it under in the logs and History: a string keeps its spelling (``"mae"`` logs as
``mae``, ``MeanAbsoluteError()`` as ``mean_absolute_error``), and ``"accuracy"`` (or ``"acc"``,
in any case) becomes :class:`BinaryAccuracy` for a model with one output unit, else
:class:`SparseCategoricalAccuracy` when the loss takes integer labels, else
:class:`CategoricalAccuracy`, named as written.  :func:`serialize` and :func:`deserialize`
turn a Metric into Keras' JSON-able ``{"class_name": ..., "config": ...}`` and back.
"""

from __future__ import annotations

from dnn.errors import ArgumentTypeError, UsageError
from dnn.metrics.classes import (Accuracy, BinaryAccuracy, CategoricalAccuracy,
                                 MeanAbsoluteError, MeanSquaredError, Metric,
                                 SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
                                 TopKCategoricalAccuracy)
from dnn.metrics.formulas import (binary_accuracy, categorical_accuracy, mean_absolute_error,
                                  mean_squared_error, sparse_categorical_accuracy,
                                  sparse_top_k_categorical_accuracy, top_k_categorical_accuracy)

__all__ = ["Metric", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
           "SparseTopKCategoricalAccuracy", "MeanAbsoluteError", "MeanSquaredError",
           "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
           "mean_absolute_error", "mean_squared_error", "get", "check", "serialize",
           "deserialize"]

ACCURACY = ("accuracy", "acc")  # resolved by the loss and the output units, in any case
CLASSES = (BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
           TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, MeanAbsoluteError,
           MeanSquaredError)
# Keras' names: each class's default name and its own, and the short forms.
NAMES = {**{cls.default_name: cls for cls in CLASSES}, "mae": MeanAbsoluteError,
         "mse": MeanSquaredError}
NAMES.update({key.upper(): NAMES[key] for key in ("mae", "mse")})
NAMES.update({cls.__name__: cls for cls in CLASSES})
FUNCTIONS = {binary_accuracy: BinaryAccuracy, categorical_accuracy: CategoricalAccuracy,
             sparse_categorical_accuracy: SparseCategoricalAccuracy,
             top_k_categorical_accuracy: TopKCategoricalAccuracy,
             sparse_top_k_categorical_accuracy: SparseTopKCategoricalAccuracy,
             mean_absolute_error: MeanAbsoluteError, mean_squared_error: MeanSquaredError}
CONFIG_CLASSES = {cls.__name__: cls for cls in (Accuracy, *CLASSES)}


def get(identifier, loss, units: int) -> Metric:
    """The Metric for ``identifier``: a name (``"accuracy"`` resolved for ``loss``, a
    :class:`dnn.losses.Loss`, and the model's ``units`` outputs), a Metric (itself), a Metric
    class, one of this module's functions, or Keras' ``{"class_name": ..., "config": ...}``."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        return _named(identifier, loss, units)
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    for function, cls in FUNCTIONS.items():
        if identifier is function:
            return cls(name=function.__name__)
    raise ArgumentTypeError(f"a metric must be a name or a dnn.metrics.Metric, not "
                            f"{type(identifier).__name__}")


def _named(name: str, loss, units: int) -> Metric:
    if name.lower() in ACCURACY:
        if units == 1:
            return BinaryAccuracy(name=name)
        return (SparseCategoricalAccuracy if loss.sparse else CategoricalAccuracy)(name=name)
    if name not in NAMES:
        known = [*ACCURACY, *(key for key in NAMES if key.islower())]
        raise UsageError(f"unknown metric {name!r}; known: {', '.join(known)} (or a class "
                         "name, such as CategoricalAccuracy)")
    return NAMES[name](name=name)


def serialize(metric: Metric) -> dict:
    """Keras' ``{"class_name": ..., "config": ...}`` of ``metric`` (JSON-able), which
    :func:`deserialize` makes again."""
    return {"class_name": type(metric).__name__, "config": metric.get_config()}


def deserialize(identifier: dict) -> Metric:
    """The Metric of :func:`serialize`'s dict."""
    name = identifier.get("class_name")
    if name not in CONFIG_CLASSES:
        raise UsageError(f"unknown metric class {name!r}; known: {', '.join(CONFIG_CLASSES)}")
    try:
        return CONFIG_CLASSES[name].from_config(identifier.get("config", {}))
    except TypeError as error:  # an argument the class does not take
        raise ArgumentTypeError(f"metric config of {name}: {error}") from None


def check(metrics, loss, units: int) -> tuple:
    """``compile``'s ``metrics`` as Metric objects (see :func:`get`; one alone counts as a
    list of one); a name met twice is numbered in the logs (``accuracy_1``), as in Keras."""
    if isinstance(metrics, (str, Metric)):
        metrics = (metrics,)
    if isinstance(metrics, dict):
        raise ArgumentTypeError("metrics must be a list of names, not dict (compile keys "
                                "the lists of the outputs by their names)")
    try:
        metrics = tuple(metrics or ())
    except TypeError:
        raise ArgumentTypeError(f"metrics must be a list of names, not "
                                f"{type(metrics).__name__}") from None
    return tuple(get(metric, loss, units) for metric in metrics)
