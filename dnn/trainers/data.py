"""Host data checked and moved to a model's backend: inputs, targets, sample weights.

Every check runs on the host, once per call of ``fit``/``evaluate``/``predict`` (or once per
batch for data that comes in batches), and names what is wrong in one line; what passes moves
to the backend in the form the step reads: inputs ``(N, *sample_shape)`` in the model's dtype
(a tuple of one such array per input, for a model of several: :func:`each_array`), targets
one-hot or ``(N, k)`` in the model's dtype (integer labels ``(N,)`` for a sparse loss), sample
weights ``(N,)`` in the model's dtype.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping

import numpy as np

from dnn import backends
from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import check_label_range, is_number, real_array


def is_pydataset(x) -> bool:
    """Whether ``x`` has what a ``keras.utils.PyDataset`` has: ``len()`` and ``[i]``."""
    return hasattr(x, "__getitem__") and hasattr(x, "__len__")


def _read_for_ever(value) -> bool:
    """Whether NumPy would read ``value`` for ever, or use it up: an iterator, a generator,
    or a PyDataset-style object (``len()`` and ``[i]``, which answers any index) that is no
    sequence of its own (a ``range``, a ``deque`` or an ``array.array`` is data)."""
    if isinstance(value, (np.ndarray, list, tuple, str, bytes, Mapping)):
        return False
    return hasattr(value, "__next__") or (is_pydataset(value)
                                          and not hasattr(value, "__iter__"))


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
    if _read_for_ever(array):
        raise UsageError(f"{what} are a {type(array).__name__}, a source of batches: give it "
                         "as x itself, its batches holding the arrays of every input")
    if isinstance(array, Mapping):
        raise UsageError(f"{what} are a dict: give an array (a dict names the inputs, or "
                         "the outputs, of a model, as x or y itself)")
    backend = backend or backends.current_backend()
    if not isinstance(array, np.ndarray) and backend.is_own_array(array):
        array = backend.to_numpy(array)
    return real_array(array, what)


def each_array(x) -> tuple:
    """The arrays of device inputs (or targets, or outputs) ``x``: a model of several inputs
    takes a tuple (or a list) of them, one per input in the order of its Inputs (one of
    several outputs one per output); a model of one its one array."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def arrays_like(x, arrays):
    """``arrays`` (one per input, or output) in the form of ``x``: a tuple for a model of
    several, else the one array."""
    arrays = tuple(arrays)
    return arrays if isinstance(x, (tuple, list)) else arrays[0]


def map_arrays(function, data):
    """``function`` of each array of ``data`` (:func:`each_array`), in its form; None for
    None."""
    return None if data is None else arrays_like(data, map(function, each_array(data)))


def _the_array_of(value, is_the_data):
    """``value``, or the one array of a list or tuple of one (as Keras takes the data of a
    model's one input or output) where ``is_the_data(array)`` says that array holds every
    sample (else the list is of one sample: one number, one row, one image)."""
    if (isinstance(value, (list, tuple)) and len(value) == 1
            and hasattr(value[0], "shape") and getattr(value[0], "ndim", 0) >= 1
            and is_the_data(value[0])):
        return value[0]
    return value


def _holds_batches_of(model):
    """Whether an array is a batch of samples for the model's one input: of two axes or
    more, each sample of the features the input takes (of two axes or more, where the model
    is not built yet)."""
    if model.sample_shapes is None:
        return lambda array: array.ndim >= 2
    features = math.prod(model.sample_shapes[0])
    return lambda array: array.ndim >= 2 and math.prod(array.shape[1:]) == features


def _given_inputs(model, x, prefix: str) -> list[tuple[str, object]]:
    """``(what, value)`` of each of the model's inputs from ``x``: a model of several takes
    a list or tuple of one value per input, in the order of its Inputs, or a dict keyed by
    their names; a model of one its value, or a list or tuple of that one array, or a dict of
    its Input's name (as Keras takes them)."""
    from dnn.layers.core import Input  # the layers import this module

    count = model._input_count
    names = [layer.name for layer in model._layers[:count] if isinstance(layer, Input)]
    if isinstance(x, Mapping):
        if len(names) != count:
            raise UsageError(f"{prefix}inputs are a dict, but the model's inputs have no "
                             "names (it has no keras.Input): give an array")
        values = _keyed_values(x, names, f"{prefix}inputs", "input")
    elif count > 1:
        if model._inputs_by_name and isinstance(x, (list, tuple)):
            raise UsageError(f"the model's inputs came as a dict: give {prefix}inputs as a "
                             f"dict keyed by their names ({', '.join(names)}), as Keras takes "
                             "them, not a list")
        if not isinstance(x, (list, tuple)) or len(x) != count:
            given = (f"a {type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple))
                     else type(x).__name__)
            raise UsageError(f"the model takes {count} inputs ({', '.join(names)}): give "
                             f"{prefix}inputs as a list of {count} arrays, in that order, or a "
                             f"dict keyed by their names, not {given}")
        values = list(x)
    else:
        values = [_the_array_of(x, _holds_batches_of(model))]
    if count == 1:
        return [(f"{prefix}inputs", values[0])]
    return [(f"{prefix}inputs {name!r}", value) for name, value in zip(names, values)]


def device_inputs(model, x, prefix: str = ""):
    """``x`` checked and moved to the model's backend as ``(N, *sample_shape)``, a tuple of
    one such array per input for a model of several (:func:`_given_inputs` says how each is
    given), building the model on its first data; ``prefix`` (such as ``"validation "``)
    names them in errors."""
    given = _given_inputs(model, x, prefix)
    arrays = [host_array(value, what, model.backend) for what, value in given]
    for (what, _), array in zip(given, arrays):
        if array.ndim < 2 or array.shape[0] == 0:
            raise UsageError(f"{what} must be a non-empty batch (N, features...), not "
                             f"{array.shape}")
    for (what, _), array in zip(given[1:], arrays[1:]):
        if array.shape[0] != arrays[0].shape[0]:
            raise UsageError(f"{given[0][0]} have {arrays[0].shape[0]} samples, but {what} "
                             f"have {array.shape[0]}: every input has one row per sample")
    if not model.built:
        model.build(arrays[0].shape[1:])
    graph = model.graph
    for layer, sources in zip(model.stack, graph.inbound):  # the layers that take an input
        for source in sources:
            if source < graph.inputs:
                layer.check_input_values(arrays[source], given[source][0])
    moved = [_device_input(model, array, what, expected)
             for (what, _), array, expected in zip(given, arrays, model.sample_shapes)]
    return tuple(moved) if model._input_count > 1 else moved[0]


def _device_input(model, x: np.ndarray, what: str, expected: tuple):
    """One input's host array ``x`` ``(N, ...)`` (the ``what``) moved to the model's backend
    as ``(N, *expected)``: flat samples ``(N, 784)`` for a model of ``(28, 28, 1)`` images,
    images without their one channel, and any samples for an input of flat samples are
    reshaped; samples of another layout are refused."""
    shape = x.shape[1:]
    if shape != expected:
        features = math.prod(shape)
        if features != math.prod(expected):
            raise UsageError(f"{what} have {features} features; the model expects "
                             f"{math.prod(expected)}" + ("" if len(expected) == 1 else
                                                         f" (samples of shape {expected})"))
        # flat samples, or images without their one channel: the same values in order
        if not (len(expected) == 1 or len(shape) == 1 or shape + (1,) == expected):
            raise UsageError(f"{what} are samples of shape {shape}; the model expects "
                             f"{expected} (channels last: reorder the axes of the data)")
        x = x.reshape(x.shape[0], *expected)
    return model.backend.asarray(x.astype(model.dtype, copy=False))


def refuse_unknown_keys(mapping, names: list, what: str, kind: str) -> None:
    """Refuse (UsageError) a key of ``mapping`` (the ``what``) that is none of ``names``,
    the model's ``kind``s (input, output)."""
    unknown = [key for key in mapping if key not in names]
    if unknown:
        raise UsageError(f"{what} name {reprlib.repr(unknown[0])}, which is none of the "
                         f"model's {kind}s ({', '.join(names)})")


def _keyed_values(mapping, names: list, what: str, kind: str) -> list:
    """The values of ``mapping`` (the ``what``) under each of ``names``, the model's
    ``kind``s (input, output), in their order: a key that names none, or a name left out,
    refused."""
    refuse_unknown_keys(mapping, names, what, kind)
    missing = [name for name in names if name not in mapping]
    if missing:
        raise UsageError(f"{what} have no {missing[0]!r}: give every {kind} of the model "
                         f"({', '.join(names)})")
    return [mapping[name] for name in names]


def _per_output(model, value, what: str) -> list:
    """``value`` (the ``what``: targets, sample weights) of each output of a model of
    several: a list or tuple of one per output in their order, or a dict keyed by their
    names (a model whose outputs came as a dict takes a dict, as Keras does)."""
    keys = model._output_keys
    if isinstance(value, Mapping):
        return _keyed_values(value, keys, what, "output")
    if model._outputs_by_name and isinstance(value, (list, tuple)):
        raise UsageError(f"the model's outputs came as a dict: give {what} as a dict keyed "
                         f"by their names ({', '.join(keys)}), not a list")
    if not isinstance(value, (list, tuple)) or len(value) != len(keys):
        given = (f"a {type(value).__name__} of {len(value)}" if isinstance(value, (list, tuple))
                 else type(value).__name__)
        raise UsageError(f"the model has {len(keys)} outputs ({', '.join(keys)}): give {what} "
                         f"as a list of {len(keys)} arrays, in that order, or a dict keyed by "
                         f"their names, not {given}")
    return list(value)


def host_targets(model, y, count: int, prefix: str = ""):
    """``y`` checked against the compiled loss and the model's output, on the host (a tuple
    of one per output for a model of several, given as :func:`_per_output` says): integer
    labels ``(count,)`` for a sparse loss (given as Keras takes them too: ``(count, 1)``, or
    floats that are whole numbers), else ``(count, units)``."""
    what = f"{prefix}targets"
    if len(model.heads) == 1:
        if isinstance(y, Mapping):  # keyed by the output's name
            y = _per_output(model, y, what)[0]
        return _output_targets(model, model.heads[0].loss, model.output_layers[0], y, count,
                               what, prefix)
    return tuple(_output_targets(model, head.loss, layer, value, count, f"{what} {key!r}",
                                 prefix)
                 for head, layer, key, value in zip(model.heads, model.output_layers,
                                                    model._output_keys,
                                                    _per_output(model, y, what)))


def _output_targets(model, loss, layer, y, count: int, what: str, prefix: str) -> np.ndarray:
    """The targets ``y`` (the ``what``) of the output of ``layer``, trained on ``loss``
    (:func:`host_targets`)."""
    if y is None:
        raise UsageError(f"{what} are None: give an array (N, ...)")
    y = host_array(_the_array_of(y, lambda array: array.shape[0] == count), what,
                   model.backend)
    if y.ndim == 0:
        raise UsageError(f"{what} must be an array (N, ...), not one number")
    if y.shape[0] != count:
        raise UsageError(f"{count} {prefix}inputs but {y.shape[0]} {what}")
    several = len(model.heads) > 1
    if len(layer.output_shape) > 1:
        pooling = "GlobalAveragePooling1D" if len(layer.output_shape) == 2 else \
            "GlobalAveragePooling2D"
        raise UsageError(f"the {'output' if several else 'last'} layer, {layer.name}, gives "
                         f"each sample an output of shape "
                         f"{layer.output_shape}; dnn's losses take one vector a sample: end the "
                         f"model with Flatten() or {pooling}() and a Dense layer")
    units = layer.output_features
    if loss.sparse:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        floats = y.ndim == 1 and np.issubdtype(y.dtype, np.floating)
        if floats and not np.isfinite(y).all():
            raise UsageError(f"{what} hold NaN or infinite labels")
        if floats and not (y == np.round(y)).all():
            raise UsageError(f"{loss.name} wants labels that are whole numbers (class "
                             f"indices); {what} hold fractions")
        if y.ndim != 1 or not (floats or np.issubdtype(y.dtype, np.integer)):
            raise UsageError(f"{loss.name} wants integer labels (N,), not {y.dtype} {y.shape}")
        # else another class; checked before a cast, which 1e20 would overflow
        check_label_range(y, units, f" for {layer.name}'s {units} outputs" if several
                          else f" for a model with {units} outputs")
        return y.astype(np.int64, copy=False)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and units > 1:
        raise UsageError(f"{loss.name} wants one-hot {what} (N, {units}); use "
                         "dnn.utils.to_categorical or sparse_categorical_crossentropy")
    y = y.reshape(count, -1)
    if y.shape[1] != units:
        raise UsageError(f"{what} have {y.shape[1]} columns; the model outputs {units}"
                         + (f" there ({layer.name})" if several else ""))
    return y.astype(model.dtype, copy=False)


def host_sample_weight(model, sample_weight, class_weight, y, prefix: str = ""):
    """Keras' per-sample weights ``(N,)`` in the model's dtype, from ``sample_weight`` (a
    ``(N,)`` or ``(N, 1)`` array of finite numbers >= 0; for a model of several outputs,
    one for all of them, or a list or dict of one per output, None for an unweighted one:
    a tuple of them) or
    ``class_weight`` (``{class index: weight}``, a sample weighing as its target's class;
    classes left out weigh 1; a model of one output), or None when neither is given.  ``y``
    are the host targets :func:`host_targets` checked."""
    if sample_weight is not None and class_weight is not None:
        raise UsageError("give sample_weight or class_weight, not both (as in Keras)")
    several = len(model.heads) > 1
    if class_weight is not None:
        if several:
            raise UsageError("class_weight weighs the classes of a model of one output (as "
                             "in Keras): give sample_weight, one array per output")
        return _class_sample_weight(model, class_weight, y)
    if sample_weight is None:
        return None
    count, what = each_array(y)[0].shape[0], f"{prefix}sample weights"
    if not several and isinstance(sample_weight, Mapping):  # keyed by the output's name
        sample_weight = _per_output(model, sample_weight, what)[0]
    if several and isinstance(sample_weight, (list, tuple, Mapping)):
        given = _per_output(model, sample_weight, what)
        if all(value is None for value in given):
            return None
        return tuple(np.ones(count, model.dtype) if value is None  # unweighted, as in Keras
                     else _checked_weights(model, value, count, f"{what} {key!r}")
                     for key, value in zip(model._output_keys, given))
    return _checked_weights(model, sample_weight, count, what)


def _checked_weights(model, sample_weight, count: int, what: str) -> np.ndarray:
    """``sample_weight`` (the ``what``) as ``(count,)`` finite numbers >= 0 of the model's
    dtype."""
    weights = host_array(_the_array_of(sample_weight, lambda array: array.shape[0] == count),
                         what, model.backend)
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.shape != (count,):
        raise UsageError(f"{what} must be one number per sample, ({count},), not "
                         f"{weights.shape}")
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise UsageError(f"{what} must be finite numbers >= 0")
    return weights.astype(model.dtype)


def _class_sample_weight(model, class_weight, y: np.ndarray) -> np.ndarray:
    """Each sample's weight from its class, as Keras' ``class_weight``: the argmax of a
    one-hot target, the rounded value of a single-unit one, or the label itself."""
    if not isinstance(class_weight, Mapping):
        raise ArgumentTypeError(f"class_weight must be a dict {{class index: weight}}, not "
                                f"{type(class_weight).__name__}")
    units = model.output_layers[0].output_features
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
    ``(N, *sample_shape)`` (a tuple of them, one per input, for a model of several),
    targets ``y`` (see the module docstring; a tuple of one per output for a model of
    several) and ``sample_weight`` ``(N,)`` (or a tuple of one per output) or None."""

    def __init__(self, x, y, sample_weight=None):
        self.x, self.y, self.sample_weight = x, y, sample_weight

    def arrays(self) -> tuple:
        """Every array: the inputs', the targets', the sample weights' (where given)."""
        return tuple(array for data in (self.x, self.y, self.sample_weight)
                     if data is not None for array in each_array(data))

    @property
    def count(self) -> int:
        return each_array(self.x)[0].shape[0]

    @classmethod
    def from_host(cls, model, x, y, sample_weight=None, class_weight=None, prefix: str = ""):
        """``(x, y)`` and their weights checked on the host and moved to the model's backend
        once; ``prefix`` names them in errors."""
        x_device = device_inputs(model, x, prefix)
        y_host = host_targets(model, y, each_array(x_device)[0].shape[0], prefix)
        weights = host_sample_weight(model, sample_weight, class_weight, y_host, prefix)
        backend = model.backend
        return cls(x_device, map_arrays(backend.asarray, y_host),
                   map_arrays(backend.asarray, weights))

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
        kept = math.floor(count * (1 - share))  # as Keras 3 splits
        if kept == count or kept == 0:
            raise UsageError(f"validation_split {share} of {count} samples leaves "
                             f"{'no validation' if kept == count else 'no training'} sample")
        return self.rows(0, kept), self.rows(kept, count)

    def rows(self, start: int, stop: int) -> DeviceData:
        """Rows ``start:stop`` (views: no copy)."""
        def rows_of(array):
            return array[start:stop, ...]
        return DeviceData(*(map_arrays(rows_of, data)
                            for data in (self.x, self.y, self.sample_weight)))
