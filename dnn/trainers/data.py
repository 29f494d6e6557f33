"""Host data checked and moved to a model's backend: inputs, targets, sample weights.

Every check runs on the host, once per call of ``fit``/``evaluate``/``predict`` (or once per
batch for data that comes in batches), and names what is wrong in one line; what passes moves
to the backend in the form the step reads: inputs ``(N, *sample_shape)`` in the model's dtype,
targets one-hot or ``(N, k)`` in the model's dtype (integer labels ``(N,)`` for a sparse loss),
sample weights ``(N,)`` in the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dnn import backends
from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import check_label_range, is_number, real_array


def refuse_dict(value, what: str) -> None:
    """A UsageError where ``value`` (the ``what``: inputs, targets, ...) is a dict: named
    inputs or outputs, of a model of several."""
    if isinstance(value, dict):
        raise UsageError(f"{what} are a dict (named {what}, of a model of several): dnn's "
                         f"models take one array of {what}")


def host_array(array, what: str, backend=None) -> np.ndarray:
    """``array`` (the ``what``: inputs, targets, ...) as a NumPy array of real numbers; an
    array of ``backend`` (a CuPy one, which refuses ``np.asarray``) comes through its
    ``to_numpy``.  A layer or a model given as data (``keras.Input(...)``, as a model called on
    one would take it) is refused, naming it."""
    from dnn.layers.base import Layer  # the layers import this module
    from dnn.models.functional import SymbolicTensor, no_values
    from dnn.trainers.trainer import Trainer

    if isinstance(array, (Layer, Trainer)):
        kind = "keras.Input" if type(array).__name__ == "Input" else type(array).__name__
        raise UsageError(f"{what} are a {kind} ({array.name}), not data: a model called on "
                         "keras.Input(...), as a layer of another, is not supported; call "
                         "layers on it, then keras.Model(inputs, outputs)")
    if isinstance(array, SymbolicTensor):
        raise UsageError(f"{what}: {no_values(array)}")
    refuse_dict(array, what)
    backend = backend or backends.current_backend()
    if not isinstance(array, np.ndarray) and backend.is_own_array(array):
        array = backend.to_numpy(array)
    return real_array(array, what)


def device_inputs(model, x, prefix: str = ""):
    """``x`` ``(N, ...)`` checked and moved to the model's backend as ``(N, *sample_shape)``
    (flat samples ``(N, 784)`` for a model of ``(28, 28, 1)`` images, images without their one
    channel, and any samples for a model of flat inputs are reshaped; samples of another
    layout are refused), building the model on its first data; ``prefix`` (such as
    ``"validation "``) names them in errors."""
    x = host_array(x, f"{prefix}inputs", model.backend)
    if x.ndim < 2 or x.shape[0] == 0:
        raise UsageError(f"{prefix}inputs must be a non-empty batch (N, features...), not "
                         f"{x.shape}")
    if not model.built:
        model.build(x.shape[1:])
    shape, expected = x.shape[1:], model.sample_shape
    if shape != expected:
        features = math.prod(shape)
        if features != model.input_dim:
            raise UsageError(f"{prefix}inputs have {features} features; the model expects "
                             f"{model.input_dim}" + ("" if len(expected) == 1 else
                                                     f" (samples of shape {expected})"))
        # flat samples, or images without their one channel: the same values in order
        if not (len(expected) == 1 or len(shape) == 1 or shape + (1,) == expected):
            raise UsageError(f"{prefix}inputs are samples of shape {shape}; the model expects "
                             f"{expected} (channels last: reorder the axes of the data)")
        x = x.reshape(x.shape[0], *expected)
    return model.backend.asarray(x.astype(model.dtype, copy=False))


def host_targets(model, y, count: int, prefix: str = "") -> np.ndarray:
    """``y`` checked against the compiled loss and the model's outputs, on the host: integer
    labels ``(count,)`` for a sparse loss (given as Keras takes them too: ``(count, 1)``, or
    floats that are whole numbers), else ``(count, units)``."""
    y = host_array(y, f"{prefix}targets", model.backend)
    if y.ndim == 0:
        raise UsageError(f"{prefix}targets must be an array (N, ...), not one number")
    if y.shape[0] != count:
        raise UsageError(f"{count} {prefix}inputs but {y.shape[0]} {prefix}targets")
    last = model.stack[-1]
    if len(last.output_shape) > 1:
        raise UsageError(f"the last layer, {last.name}, gives each sample an output of shape "
                         f"{last.output_shape}; dnn's losses take one vector a sample: end the "
                         "model with Flatten() or GlobalAveragePooling2D() and a Dense layer")
    units = last.output_dim
    loss = model.loss
    if loss.sparse:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        floats = y.ndim == 1 and np.issubdtype(y.dtype, np.floating)
        if floats and not np.isfinite(y).all():
            raise UsageError(f"{prefix}targets hold NaN or infinite labels")
        if floats and not (y == np.round(y)).all():
            raise UsageError(f"{loss.name} wants labels that are whole numbers (class "
                             f"indices); {prefix}targets hold fractions")
        if y.ndim != 1 or not (floats or np.issubdtype(y.dtype, np.integer)):
            raise UsageError(f"{loss.name} wants integer labels (N,), not {y.dtype} {y.shape}")
        # else another class; checked before a cast, which 1e20 would overflow
        check_label_range(y, units, f" for a model with {units} outputs")
        return y.astype(np.int64, copy=False)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and units > 1:
        raise UsageError(f"{loss.name} wants one-hot targets (N, {units}); use "
                         "dnn.utils.to_categorical or sparse_categorical_crossentropy")
    y = y.reshape(count, -1)
    if y.shape[1] != units:
        raise UsageError(f"{prefix}targets have {y.shape[1]} columns; the model outputs {units}")
    return y.astype(model.dtype, copy=False)


def host_sample_weight(model, sample_weight, class_weight, y: np.ndarray,
                       prefix: str = "") -> np.ndarray | None:
    """Keras' per-sample weights ``(N,)`` in the model's dtype, from ``sample_weight`` (a
    ``(N,)`` or ``(N, 1)`` array of finite numbers >= 0) or ``class_weight`` (``{class index:
    weight}``, a sample weighing as its target's class; classes left out weigh 1), or None
    when neither is given.  ``y`` are the host targets :func:`host_targets` checked."""
    if sample_weight is not None and class_weight is not None:
        raise UsageError("give sample_weight or class_weight, not both (as in Keras)")
    if class_weight is not None:
        return _class_sample_weight(model, class_weight, y)
    if sample_weight is None:
        return None
    weights = host_array(sample_weight, f"{prefix}sample weights", model.backend)
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.shape != (y.shape[0],):
        raise UsageError(f"{prefix}sample weights must be one number per sample, "
                         f"({y.shape[0]},), not {weights.shape}")
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise UsageError(f"{prefix}sample weights must be finite numbers >= 0")
    return weights.astype(model.dtype)


def _class_sample_weight(model, class_weight, y: np.ndarray) -> np.ndarray:
    """Each sample's weight from its class, as Keras' ``class_weight``: the argmax of a
    one-hot target, the rounded value of a single-unit one, or the label itself."""
    if not isinstance(class_weight, Mapping):
        raise ArgumentTypeError(f"class_weight must be a dict {{class index: weight}}, not "
                                f"{type(class_weight).__name__}")
    units = model.stack[-1].output_dim
    table = np.ones(max(units, 2), model.dtype)
    for key, weight in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) \
                or not 0 <= key < table.size:
            raise UsageError(f"class_weight key {key!r} is not a class index of a model with "
                             f"{units} outputs")
        if not (isinstance(weight, (int, float, np.number)) and np.isfinite(weight)
                and weight >= 0):
            raise UsageError(f"class_weight of class {key} must be a finite number >= 0, not "
                             f"{weight!r}")
        table[key] = weight
    if y.ndim == 1:
        classes = y
    elif y.shape[1] == 1:
        classes = np.clip(np.round(y[:, 0]), 0, 1).astype(np.int64)
    else:
        classes = np.argmax(y, axis=1)
    return table[classes]


class DeviceData:
    """One data set on the device, in the form a step reads: inputs ``x``
    ``(N, *sample_shape)``, targets ``y`` (see the module docstring) and ``sample_weight``
    ``(N,)`` or None."""

    def __init__(self, x, y, sample_weight=None):
        self.x, self.y, self.sample_weight = x, y, sample_weight

    @property
    def count(self) -> int:
        return self.x.shape[0]

    @classmethod
    def from_host(cls, model, x, y, sample_weight=None, class_weight=None, prefix: str = ""):
        """``(x, y)`` and their weights checked on the host and moved to the model's backend
        once; ``prefix`` names them in errors."""
        x_device = device_inputs(model, x, prefix)
        y_host = host_targets(model, y, x_device.shape[0], prefix)
        weights = host_sample_weight(model, sample_weight, class_weight, y_host, prefix)
        backend = model.backend
        return cls(x_device, backend.asarray(y_host),
                   None if weights is None else backend.asarray(weights))

    @classmethod
    def from_host_inputs(cls, model, x, prefix: str = ""):
        """Inputs alone (``predict``), checked and moved to the model's backend."""
        return cls(device_inputs(model, x, prefix), None)

    def split(self, share) -> tuple[DeviceData, DeviceData]:
        """``(kept, validation)``: the last ``share`` of the samples split off (Keras'
        ``validation_split``)."""
        if not (is_number(share) and 0 <= share < 1):
            raise UsageError(f"validation_split must be a number in [0, 1), not {share!r}")
        count = self.count
        kept = count - int(count * share)
        if kept == count or kept == 0:
            raise UsageError(f"validation_split {share} of {count} samples leaves "
                             f"{'no validation' if kept == count else 'no training'} sample")
        return self.rows(0, kept), self.rows(kept, count)

    def rows(self, start: int, stop: int) -> DeviceData:
        """Rows ``start:stop`` (views: no copy)."""
        weights = self.sample_weight
        return DeviceData(self.x[start:stop, ...], self.y[start:stop, ...],
                          None if weights is None else weights[start:stop])
