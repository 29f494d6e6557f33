"""Losses: a batch's summed loss and the gradient of the batch *mean* loss.

``output`` is the last layer's ``(n, k)`` output; ``targets`` are one-hot ``(n, k)`` (or
integer ``(n,)`` labels for the sparse loss).  :meth:`Loss.compute` returns
``(loss_sum, grad)``: a 0-d array on the backend (summed so that epochs can accumulate it on the
device) and ``dL/doutput`` of the mean loss, ``(n, k)``.
"""

from __future__ import annotations

from dnn.activations import Softmax
from dnn.errors import UsageError

PROBABILITY_FLOOR = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps]


class Loss:
    name = "loss"
    sparse = False  # integer labels instead of one-hot targets

    def fuses_with(self, activation) -> bool:
        """True when this loss takes the last layer's pre-activation (logits) instead."""
        return False

    def compute(self, backend, output, targets, scratch, logits: bool = False):
        raise NotImplementedError


class CategoricalCrossentropy(Loss):
    """``-sum(t * log p)`` per sample.  After a softmax it is fused: computed from the logits
    (log-sum-exp) and its gradient is ``(p - t) / n``."""

    name = "categorical_crossentropy"

    def fuses_with(self, activation) -> bool:
        return isinstance(activation, Softmax)

    def compute(self, backend, output, targets, scratch, logits=False):
        if logits:
            return backend.softmax_crossentropy(output, targets, scratch)
        xp = backend.xp
        n = output.shape[0]
        clipped = xp.clip(output, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        loss_sum = -xp.sum(targets * xp.log(clipped))
        return loss_sum, -(targets / clipped) / n


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer labels ``(n,)`` in ``[0, k)``."""

    name = "sparse_categorical_crossentropy"
    sparse = True

    def compute(self, backend, output, targets, scratch, logits=False):
        xp = backend.xp
        classes = xp.arange(output.shape[1], dtype=targets.dtype)
        one_hot = xp.astype(xp.reshape(targets, (-1, 1)) == classes, output.dtype)
        return super().compute(backend, output, one_hot, scratch, logits)


class MeanSquaredError(Loss):
    """``mean((p - t)**2)`` over the ``k`` outputs of each sample."""

    name = "mean_squared_error"

    def compute(self, backend, output, targets, scratch, logits=False):
        xp = backend.xp
        n, k = output.shape
        error = output - targets
        loss_sum = xp.sum(error * error) / k
        return loss_sum, error * (2 / (n * k))


LOSSES = {cls.name: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                    MeanSquaredError)}
LOSSES["mse"] = MeanSquaredError


def get(loss) -> Loss:
    """A Loss from a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    return LOSSES[loss]()
