"""Each metric's formula, written once over an array namespace ``xp``, and Keras' stateless
metric functions, which run the same formulas on NumPy.

Shapes: ``n`` samples, ``k`` outputs (classes).  ``y_pred`` is ``(n, k)`` floats; ``y_true``
is integer labels ``(n,)`` (or Keras' ``(n, 1)`` labels where ``k > 1``) or targets ``(n, k)``
(one-hot for the class metrics).  A formula returns a value per sample ``(n,)`` or per output
``(n, k)`` (booleans for matches); :func:`per_sample` turns either into the ``(n,)`` floats a
metric averages, as Keras does (the mean over the outputs of a sample).

Labels and their one-hot form give the same values everywhere: the class metrics read one-hot
targets through their argmax (the first largest), the others read labels as one-hot rows.
"""

from __future__ import annotations

import numpy as np

from dnn.utils import one_hot


def class_labels(xp, y_true, classes: int):
    """``(n,)`` labels from labels ``(n,)`` or ``(n, 1)``, or from one-hot ``(n, classes)``
    rows (their argmax: with one class, ``(n, 1)`` targets are one-hot rows too)."""
    if y_true.ndim == 2 and y_true.shape[1] == classes:
        return xp.argmax(y_true, axis=1)
    return xp.reshape(y_true, (-1,))


def dense_targets(xp, y_true, y_pred):
    """``(n, k)`` targets like ``y_pred``: targets as they are, labels ``(n,)`` as one-hot
    rows of ``y_pred``'s dtype (with ``k == 1``, ``(n,)`` targets are the one column)."""
    if y_true.ndim == 2:
        return y_true
    classes = y_pred.shape[1]
    if classes == 1:
        return xp.reshape(y_true, (-1, 1))
    return one_hot(xp, y_true, classes, y_pred.dtype)


def categorical_matches(xp, y_true, y_pred):
    """``(n,)``: the argmax of ``y_pred`` is the label (as ``Backend.correct_count``
    counts)."""
    predicted = xp.argmax(y_pred, axis=1)
    return predicted == xp.astype(class_labels(xp, y_true, y_pred.shape[1]), predicted.dtype)


def top_k_matches(xp, y_true, y_pred, k: int):
    """``(n,)``: fewer than ``k`` outputs are larger than the label's (ties with it count
    in its favour, and a NaN label output is never in the top ``k``, as in Keras on JAX)."""
    classes = y_pred.shape[1]
    labels = class_labels(xp, y_true, classes)
    is_label = xp.reshape(labels, (-1, 1)) == xp.arange(classes, dtype=labels.dtype)
    at_label = xp.sum(xp.where(is_label, y_pred, xp.zeros_like(y_pred)), axis=1, keepdims=True)
    at_label = xp.where(xp.isnan(at_label), xp.full_like(at_label, -xp.inf), at_label)
    return xp.sum(xp.astype(y_pred > at_label, xp.int64), axis=1) < k


def binary_matches(xp, y_true, y_pred, threshold: float):
    """``(n, k)``: ``y_pred > threshold`` is the target (exactly, as Keras compares)."""
    y_true = dense_targets(xp, y_true, y_pred)
    return xp.astype(y_pred > threshold, y_true.dtype) == y_true


def exact_matches(xp, y_true, y_pred):
    """``(n, k)``: ``y_pred`` equals the target (Keras' ``Accuracy``)."""
    return xp.astype(dense_targets(xp, y_true, y_pred), y_pred.dtype) == y_pred


def absolute_errors(xp, y_true, y_pred):
    """``(n, k)``: ``|y_true - y_pred|``."""
    return xp.abs(xp.astype(dense_targets(xp, y_true, y_pred), y_pred.dtype) - y_pred)


def squared_errors(xp, y_true, y_pred):
    """``(n, k)``: ``(y_true - y_pred)**2``."""
    error = xp.astype(dense_targets(xp, y_true, y_pred), y_pred.dtype) - y_pred
    return error * error


def per_sample(xp, values, dtype):
    """``(n,)`` floats of ``dtype`` from a formula's ``(n,)`` or ``(n, k)`` values (the mean
    over the outputs of each sample)."""
    values = xp.astype(values, dtype)
    return values if values.ndim == 1 else xp.mean(values, axis=1)


# -- Keras' stateless functions, on NumPy ------------------------------------------------------
def _on_host(formula, y_true, y_pred, *options) -> np.ndarray:
    """``formula``'s ``(n,)`` per-sample values of host arrays (anything ``np.asarray`` takes;
    ``y_pred`` ``(n, k)``, or ``(n,)`` as one column), floats of ``y_pred``'s dtype or
    float32."""
    y_pred = np.asarray(y_pred)
    if y_pred.dtype.kind != "f":
        y_pred = y_pred.astype(np.float32)  # Keras' floatx
    if y_pred.ndim == 1:
        y_pred = y_pred.reshape(-1, 1)
    return per_sample(np, formula(np, np.asarray(y_true), y_pred, *options), y_pred.dtype)


def categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """``(n,)``: 1 where the argmax of ``y_pred`` ``(n, k)`` is the class of ``y_true``
    (one-hot ``(n, k)``, or labels), else 0."""
    return _on_host(categorical_matches, y_true, y_pred)


def sparse_categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """``(n,)``: 1 where the argmax of ``y_pred`` ``(n, k)`` is the label ``y_true`` (``(n,)``
    or ``(n, 1)``; one-hot rows are read as their argmax), else 0."""
    return _on_host(categorical_matches, y_true, y_pred)


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """``(n,)``: the share of the outputs of each sample where ``y_pred > threshold`` is the
    target ``y_true`` ``(n, k)``."""
    return _on_host(binary_matches, y_true, y_pred, threshold)


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """``(n,)``: 1 where the class of one-hot ``y_true`` ``(n, k)`` (or labels) is among the
    ``k`` largest outputs of ``y_pred`` (ties with it counting in its favour), else 0."""
    return _on_host(top_k_matches, y_true, y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """:func:`top_k_categorical_accuracy` of labels ``y_true`` ``(n,)``."""
    return _on_host(top_k_matches, y_true, y_pred, k)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    """``(n,)``: the mean of ``|y_true - y_pred|`` over the outputs of each sample."""
    return _on_host(absolute_errors, y_true, y_pred)


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    """``(n,)``: the mean of ``(y_true - y_pred)**2`` over the outputs of each sample."""
    return _on_host(squared_errors, y_true, y_pred)
