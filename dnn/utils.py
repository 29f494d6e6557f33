"""Small helpers for users' data and for checking what users pass."""

from __future__ import annotations

import inspect
import math
import numbers
import os
import random
import reprlib
import sys

import numpy as np

from dnn.errors import ArgumentTypeError, NotInitialisedError, OutOfMemoryError, UsageError
# Keras has these in keras.utils as well as in keras.saving
from dnn.saving.registry import (custom_object_scope, get_custom_objects,  # noqa: F401
                                 get_registered_name, get_registered_object,
                                 register_keras_serializable)


def to_categorical(labels, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """One-hot ``(N, num_classes)`` host array from integer labels ``(N,)`` or ``(N, 1)`` of
    any integer type (the uint8 labels of ``mnist.load_data()`` included)."""
    labels = real_array(labels, "to_categorical labels")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"to_categorical wants integer labels (N,), not {labels.dtype} "
                         f"{labels.shape}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    elif not is_int_at_least(num_classes, 1):
        raise UsageError(f"num_classes must be a positive integer, not {num_classes!r}")
    check_label_range(labels, num_classes)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"to_categorical dtype must be a NumPy dtype such as "
                                f"'float32', not {dtype!r}") from None
    try:
        one_hot = np.zeros((labels.shape[0], num_classes), dtype)
    except MemoryError:
        raise OutOfMemoryError(f"to_categorical: {labels.shape[0]:,} labels of "
                               f"{num_classes:,} classes need more memory than this machine "
                               "gives (num_classes is the largest label + 1)") from None
    one_hot[np.arange(labels.shape[0]), labels] = 1
    return one_hot


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0) -> np.ndarray:
    """Keras' ``pad_sequences``: a host array ``(len(sequences), maxlen, *item shape)`` of
    ``sequences`` (lists or arrays of numbers, such as a text's word indices, or of items of
    one shape), each cut to ``maxlen`` (the longest one's length by default) by dropping
    values at its start (``truncating="pre"``) or end (``"post"``), and padded with
    ``value`` before it (``padding="pre"``) or after it (``"post"``)."""
    for what, where in (("padding", padding), ("truncating", truncating)):
        if where not in ("pre", "post"):
            raise UsageError(f"pad_sequences {what} must be 'pre' or 'post', not {where!r}")
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise UsageError(f"pad_sequences takes a list of sequences, not "
                         f"{type(sequences).__name__}")
    for index, sequence in enumerate(sequences):
        if isinstance(sequence, (str, bytes)) or not hasattr(sequence, "__len__"):
            raise UsageError(f"pad_sequences takes a list of sequences; item {index} is "
                             f"{reprlib.repr(sequence)}")
    if maxlen is None:
        maxlen = max((len(sequence) for sequence in sequences), default=0)
    elif not is_int_at_least(maxlen, 1):
        raise UsageError(f"pad_sequences maxlen must be a positive integer, not {maxlen!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"pad_sequences dtype must be a NumPy dtype such as 'int32', "
                                f"not {dtype!r}") from None
    if isinstance(value, str) and dtype.kind not in "OSU":
        raise UsageError(f"pad_sequences value {value!r} is a string: give dtype=object, not "
                         f"{dtype}")
    item_shape = next((np.shape(sequence)[1:] for sequence in sequences if len(sequence)), ())
    try:
        padded = np.full((len(sequences), maxlen, *item_shape), value, dtype=dtype)
    except MemoryError:
        raise OutOfMemoryError(f"pad_sequences: {len(sequences):,} sequences of {maxlen:,} "
                               "need more memory than this machine gives") from None
    except (TypeError, ValueError):
        raise UsageError(f"pad_sequences value {value!r} is not a {dtype} number") from None
    for index, sequence in enumerate(sequences):
        if not len(sequence):
            continue
        kept = sequence[-maxlen:] if truncating == "pre" else sequence[:maxlen]
        try:
            kept = np.asarray(kept, dtype=dtype)
        except (TypeError, ValueError):
            raise UsageError(f"pad_sequences: sequence {index} holds values that are not "
                             f"{dtype} numbers, or items of different shapes") from None
        if kept.shape[1:] != item_shape:
            raise UsageError(f"pad_sequences: the items of sequence {index} have shape "
                             f"{kept.shape[1:]}, those of the first {item_shape}")
        if padding == "post":
            padded[index, :len(kept)] = kept
        else:
            padded[index, maxlen - len(kept):] = kept
    return padded


def one_hot(xp, labels, classes: int, dtype):
    """One-hot ``(n, classes)`` rows of ``dtype`` from integer ``labels`` ``(n,)``, with the
    array namespace ``xp`` (on the device, for losses and metrics)."""
    columns = xp.arange(classes, dtype=labels.dtype)
    return xp.astype(xp.reshape(labels, (-1, 1)) == columns, dtype)


def real_array(value, what: str) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (booleans, integers or floats), else a
    UsageError naming it as ``what``."""
    try:
        array = np.asarray(value)
    except ValueError:  # NumPy 2 refuses ragged nested lists
        raise UsageError(f"{what}: not a rectangular array (rows of different "
                         "lengths?)") from None
    except (TypeError, RuntimeError) as error:  # a GPU array, a tensor that needs a grad
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{what}: a {type(value).__name__} NumPy cannot read "
                         f"({reason})") from None
    if array.dtype.kind not in "biuf":  # not complex, strings or Python objects
        raise UsageError(f"{what} must be real numbers, not {array.dtype}")
    return array


def checked_weights(weights, shapes: list, dtype, what: str = "weight") -> list[np.ndarray]:
    """``weights`` (a list of arrays, for ``set_weights``) checked against ``shapes`` and
    converted to ``dtype``: as many, each rectangular, real, of its shape, and within the
    dtype's range (2.0**200 does not fit a float32: it would be stored as inf)."""
    try:
        weights = list(weights)
    except TypeError:
        raise ArgumentTypeError(f"set_weights takes a list of arrays, not "
                                f"{type(weights).__name__}") from None
    if len(weights) != len(shapes):
        raise UsageError(f"set_weights got {len(weights)} arrays; there are {len(shapes)} "
                         f"{what}s")
    checked = []
    for index, (shape, value) in enumerate(zip(shapes, weights)):
        value = real_array(value, f"{what} {index}")
        if value.shape != tuple(shape):
            raise UsageError(f"{what} {index} has shape {value.shape}; the model's is "
                             f"{tuple(shape)}")
        with np.errstate(over="ignore", invalid="ignore"):
            converted = value.astype(dtype)
        overflowed = np.isinf(converted) & np.isfinite(value)
        if overflowed.any():
            raise UsageError(f"{what} {index} holds {value[overflowed].flat[0].item()!r}, beyond the "
                             f"range of {np.dtype(dtype)}")
        checked.append(converted)
    return checked


def check_label_range(labels: np.ndarray, num_classes: int, context: str = "") -> None:
    """Raise a UsageError unless every integer label ``(N,)`` lies in ``[0, num_classes)``
    (``context`` is added after the range, e.g. " for a model with 3 outputs")."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"labels must lie in [0, {num_classes}){context}, not "
                         f"[{labels.min()}, {labels.max()}]")


def is_number(value) -> bool:
    """A real number (NumPy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int_at_least(value, minimum: int) -> bool:
    """``value`` is an integer (Python's or NumPy's, not a bool) no smaller than ``minimum``."""
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and value >= minimum)


def check_seed(seed) -> None:
    """Refuse a seed that is neither None nor a non-negative integer."""
    if seed is not None and not is_int_at_least(seed, 0):
        raise UsageError(f"seed must be a non-negative integer or None, not {seed!r}")


def as_shape(value) -> tuple:
    """``value`` as a shape: a tuple or list as a tuple, anything else as one axis."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def element_count(shape: tuple) -> int | None:
    """The number of elements of ``shape``; None unless it has an axis and every size is a
    positive integer."""
    if not shape or not all(is_int_at_least(size, 1) for size in shape):
        return None
    return math.prod(shape)


_model_seeds = None  # set by set_random_seed: where models made without a seed take theirs


def set_random_seed(seed) -> None:
    """Keras' ``utils.set_random_seed``: seed Python's ``random``, NumPy's global generator
    and the models made afterwards without a ``seed`` of their own (each takes the next seed
    of one stream), so that a script gives the same result at every run."""
    global _model_seeds
    if not is_int_at_least(seed, 0) or seed >= 2**32:
        raise UsageError(f"seed must be an integer from 0 to 2**32 - 1, not {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    _model_seeds = np.random.SeedSequence(seed)


def model_rng(seed) -> np.random.Generator:
    """The random generator of a model made with ``seed``; for None, the next seed of
    :func:`set_random_seed`'s stream, or fresh entropy before any call of it."""
    if seed is None and _model_seeds is not None:
        seed = _model_seeds.spawn(1)[0]
    return np.random.default_rng(seed)


class PyDataset:
    """Keras' base class for a dataset of batches: a subclass defines ``__len__`` (the number of
    batches) and ``__getitem__(index)`` (batch ``index`` as ``(x, y)`` or ``(x, y,
    sample_weight)``), and may define ``on_epoch_end``; ``fit``, ``evaluate`` and ``predict``
    take it as ``x``.  Keras' ``workers``, ``use_multiprocessing`` and ``max_queue_size`` are
    accepted and ignored: batches are read in order, in this process."""

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        self.workers, self.use_multiprocessing = workers, use_multiprocessing
        self.max_queue_size = max_queue_size

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        """Called after each epoch (shuffle your data here, as in Keras)."""


Sequence = PyDataset  # Keras' older name


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn``, called where this is called, that points at
    the first frame outside dnn's package: the user's line, however deep in dnn the warning
    is raised."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def missing_attribute(instance, name: str, initialised: bool):
    """What ``__getattr__`` answers for ``name``, not found on ``instance`` (a model or a
    layer): where a property of its class raised an AttributeError (which Python hides
    behind ``__getattr__``), that error again; where ``__init__`` never ran (a subclass's
    ``__init__`` without ``super().__init__()``, ``initialised`` False), a UsageError saying
    so; else an AttributeError naming it."""
    if not name.startswith("__"):
        found = inspect.getattr_static(type(instance), name, None)
        if hasattr(found, "__get__"):
            return found.__get__(instance, type(instance))  # raises what the property raises
        if not initialised:
            raise NotInitialisedError(f"{type(instance).__name__} was not initialised: its "
                                      "__init__ must call super().__init__(...)")
    raise AttributeError(f"{type(instance).__name__!r} object has no attribute {name!r}")
