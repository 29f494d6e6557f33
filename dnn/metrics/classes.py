"""The metric classes: Keras' weighted means of a formula of :mod:`dnn.metrics.formulas`, kept
in 0-d device arrays that a captured training step updates in place (the protocol is in
:mod:`dnn.metrics`)."""

from __future__ import annotations

import math

import numpy as np

from dnn.activations import Linear, Sigmoid, Softmax, Tanh
from dnn.errors import ArgumentTypeError, UsageError
from dnn.metrics import formulas

# Activations that keep the order of a row's outputs: its argmax and top k are the logits'.
ORDER_KEEPING = (Linear, Sigmoid, Softmax, Tanh)


class Metric:
    """The weighted mean of a formula's per-sample values, ``total / count`` (0 while
    ``count`` is 0), as Keras' ``MeanMetricWrapper``.  ``name`` is its key in the logs;
    ``dtype`` that of its totals (None: the one :meth:`build` is given)."""

    default_name = "metric"

    def __init__(self, name: str | None = None, dtype=None):
        if name is None:
            name = self.default_name
        if not isinstance(name, str) or not name:
            raise ArgumentTypeError(f"a metric's name must be a non-empty string, not "
                                    f"{name!r}")
        self.name, self.dtype = name, None if dtype is None else _float_dtype(dtype)
        self.backend = self.total = self.count = None
        self.activation = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def get_config(self) -> dict:
        """The arguments that make this metric again (Keras' ``get_config``)."""
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)

    # -- the protocol ---------------------------------------------------------------------------
    def build(self, backend, dtype, activation=None) -> None:
        """Allocate ``total`` and ``count``, zero 0-d arrays of ``backend`` in ``self.dtype``
        or else ``dtype``.  ``activation`` is None when :meth:`update_state` will be given
        probabilities, else the activation (a :class:`dnn.activations.Activation`) that turns
        the ``y_pred`` it will be given, the logits, into them."""
        xp = backend.xp
        dtype = backend.dtype(self.dtype or dtype)
        self.backend, self.activation = backend, activation
        self.total = xp.zeros((), dtype=dtype)
        self.count = xp.zeros((), dtype=dtype)

    @property
    def variables(self) -> list:
        """The arrays :meth:`update_state` writes (in place): ``[total, count]``."""
        return [self.total, self.count]

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: ``y_pred`` ``(n, k)`` and ``y_true`` labels ``(n,)`` or targets
        ``(n, k)``, arrays of the backend; ``sample_weight`` None or ``(n,)`` floats.  Adds
        ``sum(w * value)`` to ``total`` and ``sum(w)`` to ``count`` (``n`` without weights),
        in place, by device operations only."""
        xp = self._built_xp()
        y_pred = self._predictions(y_pred)
        if sample_weight is None:
            self._add(self._sum(xp, y_true, y_pred), y_pred.shape[0])
            return
        values = self._per_sample(xp, y_true, y_pred)
        weights = xp.astype(xp.reshape(sample_weight, (-1,)), values.dtype)
        self._add(xp.sum(values * weights), xp.sum(weights))

    def result(self) -> float:
        """``total / count`` read from the device (0.0 while ``count`` is 0)."""
        self._built_xp()
        count = float(self.count)
        return float(self.total) / count if count else 0.0

    def reset_state(self) -> None:
        """Zero ``total`` and ``count`` in place."""
        self._built_xp()
        self.total[...] = 0
        self.count[...] = 0

    # -- for subclasses ------------------------------------------------------------------------
    def values(self, xp, y_true, y_pred):
        """The formula's ``(n,)`` or ``(n, k)`` values for a batch: of probabilities
        ``y_pred``, or of logits where :meth:`reads_logits` says it takes them."""
        raise NotImplementedError

    def reads_logits(self, activation) -> bool:
        """True when :meth:`values` takes the logits of ``activation`` as they are (giving
        what it gives on the activation's output); else it is given that output."""
        return False

    def _sum(self, xp, y_true, y_pred):
        """The 0-d sum of the batch's per-sample values (a backend's fused count, where there
        is one)."""
        return xp.sum(self._per_sample(xp, y_true, y_pred))

    # -- helpers -------------------------------------------------------------------------------
    def _built_xp(self):
        if self.backend is None:
            raise UsageError(f"metric {self.name!r} is not built: build(backend, dtype) it "
                             "first")
        return self.backend.xp

    def _predictions(self, y_pred):
        """What :meth:`values` reads: ``y_pred`` as given, or the probabilities of its logits
        (in a new array, made by a device operation)."""
        if self.activation is None or self.reads_logits(self.activation):
            return y_pred
        return self.activation.forward(self.backend, y_pred * 1)

    def _per_sample(self, xp, y_true, y_pred):
        return formulas.per_sample(xp, self.values(xp, y_true, y_pred), self.total.dtype)

    def _add(self, total, count) -> None:
        """``total`` and ``count`` (0-d arrays or Python ints) added in place."""
        xp = self.backend.xp
        for into, value in ((self.total, total), (self.count, count)):
            into[...] = into + (value if isinstance(value, int) else xp.astype(value,
                                                                                into.dtype))


def _float_dtype(dtype) -> str:
    """``"float32"`` or ``"float64"`` from any NumPy spelling of them."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise UsageError(f"a metric's dtype must be float32 or float64, not {dtype!r}")
    return name


class _ClassAccuracy(Metric):
    """Whether the argmax of ``y_pred`` is the class of ``y_true``: labels or one-hot, read
    alike; a model's logits after a softmax (or any activation keeping the order) alike."""

    def values(self, xp, y_true, y_pred):
        return formulas.categorical_matches(xp, y_true, y_pred)

    def reads_logits(self, activation) -> bool:
        return isinstance(activation, ORDER_KEEPING)

    def _sum(self, xp, y_true, y_pred):
        if y_pred.shape[1] == 1:  # always right; Backend.correct_count would threshold
            return super()._sum(xp, y_true, y_pred)
        if y_true.ndim == 2 and y_true.shape[1] != y_pred.shape[1]:
            y_true = xp.reshape(y_true, (-1,))  # Keras' (n, 1) labels
        return self.backend.correct_count(y_pred, y_true)


class CategoricalAccuracy(_ClassAccuracy):
    """How often the argmax of ``y_pred`` is the class of one-hot ``y_true`` (or labels)."""

    default_name = "categorical_accuracy"


class SparseCategoricalAccuracy(_ClassAccuracy):
    """How often the argmax of ``y_pred`` is the label ``y_true`` (or one-hot's argmax)."""

    default_name = "sparse_categorical_accuracy"


class BinaryAccuracy(Metric):
    """How often ``y_pred > threshold`` is the target, averaged over the outputs of each
    sample; given a sigmoid's logits, it compares them with the logit of ``threshold``."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype=None, threshold: float = 0.5):
        super().__init__(name, dtype)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ArgumentTypeError(f"threshold must be a number, not "
                                    f"{type(threshold).__name__}")
        self.threshold = float(threshold)

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}

    def reads_logits(self, activation) -> bool:
        return isinstance(activation, Sigmoid)

    def values(self, xp, y_true, y_pred):
        return formulas.binary_matches(xp, y_true, y_pred, self._cut())

    def _cut(self) -> float:
        """The threshold on what :meth:`values` reads: a probability, or a sigmoid's logit."""
        if not self.reads_logits(self.activation):
            return self.threshold
        if not 0 < self.threshold < 1:
            return -math.inf if self.threshold <= 0 else math.inf
        return math.log(self.threshold / (1 - self.threshold))

    def _sum(self, xp, y_true, y_pred):
        if y_pred.shape[1] == 1:
            return self.backend.correct_count(y_pred, y_true, self._cut())
        return super()._sum(xp, y_true, y_pred)


class _TopK(Metric):
    """Whether the class of ``y_true`` (labels or one-hot) is among the ``k`` largest outputs
    (ties with it counting in its favour)."""

    def __init__(self, k: int = 5, name: str | None = None, dtype=None):
        super().__init__(name, dtype)
        if isinstance(k, bool) or not isinstance(k, int):
            raise ArgumentTypeError(f"k must be an integer, not {type(k).__name__}")
        if k < 1:
            raise UsageError(f"k must be at least 1, not {k}")
        self.k = k

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k}

    def reads_logits(self, activation) -> bool:
        return isinstance(activation, ORDER_KEEPING)

    def values(self, xp, y_true, y_pred):
        return formulas.top_k_matches(xp, y_true, y_pred, self.k)


class TopKCategoricalAccuracy(_TopK):
    """How often the class of one-hot ``y_true`` is among the ``k`` largest outputs."""

    default_name = "top_k_categorical_accuracy"


class SparseTopKCategoricalAccuracy(_TopK):
    """How often the label ``y_true`` is among the ``k`` largest outputs."""

    default_name = "sparse_top_k_categorical_accuracy"


class Accuracy(Metric):
    """How often ``y_pred`` equals the target exactly, averaged over the outputs of each
    sample (Keras' ``Accuracy``: for classes, use ``CategoricalAccuracy``)."""

    default_name = "accuracy"

    def values(self, xp, y_true, y_pred):
        return formulas.exact_matches(xp, y_true, y_pred)


class MeanAbsoluteError(Metric):
    """The mean of ``|y_true - y_pred|`` over the outputs of each sample."""

    default_name = "mean_absolute_error"

    def values(self, xp, y_true, y_pred):
        return formulas.absolute_errors(xp, y_true, y_pred)


class MeanSquaredError(Metric):
    """The mean of ``(y_true - y_pred)**2`` over the outputs of each sample."""

    default_name = "mean_squared_error"

    def values(self, xp, y_true, y_pred):
        return formulas.squared_errors(xp, y_true, y_pred)
