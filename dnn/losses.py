"""Losses: a batch's summed loss and the gradient of the batch *mean* loss.

``output`` is the last layer's ``(n, k)`` output; ``targets`` are one-hot ``(n, k)`` (or
integer ``(n,)`` labels for the sparse loss).  :meth:`Loss.compute` returns ``loss_sum``, a 0-d
array on the backend (summed so that epochs can accumulate it on the device), and writes
``dL/doutput`` of the mean loss into ``grad`` ``(n, k)``, an array the caller owns.  With
Keras' ``sample_weight`` ``(n,)`` the loss is ``sum(w_i * loss_i)`` and the gradient that of
``sum(w_i * loss_i) / n`` (Keras' "sum over batch size" reduction).

A loss implements :meth:`Loss.per_sample` (the ``(n,)`` losses, over ``xp``) and
:meth:`Loss.sum_and_gradient` (the sum and the gradient, where a backend may fuse them).
"""

from __future__ import annotations

from dnn.activations import Linear, Sigmoid, Softmax
from dnn.errors import ArgumentTypeError, UsageError
from dnn.utils import one_hot

PROBABILITY_FLOOR = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps]


class Loss:
    """A loss; ``from_logits=True`` (Keras' argument) says the model outputs logits, its last
    layer having no activation."""

    name = "loss"
    sparse = False  # integer labels instead of one-hot targets
    logits_of = ()  # the activations whose logits this loss takes instead of their output

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def takes_logits_of(self, activation) -> bool:
        """True when, after ``activation`` (None for a layer without one), this loss takes the
        last layer's pre-activation (the logits) instead of its output."""
        if self.from_logits:
            return activation is None or isinstance(activation, Linear)
        return isinstance(activation, self.logits_of)

    def get_config(self) -> dict:
        """The arguments that rebuild the loss (checkpoints)."""
        return {"from_logits": True} if self.from_logits else {}

    def compute(self, backend, output, targets, grad, logits: bool = False,
                sample_weight=None):
        """The batch's (weighted) summed loss, 0-d; its gradient into ``grad``."""
        loss_sum = self.sum_and_gradient(backend, output, targets, grad, logits)
        if sample_weight is None:
            return loss_sum
        xp = backend.xp
        grad[...] = grad * xp.reshape(sample_weight, (-1, 1))
        return xp.sum(self.per_sample(backend, output, targets, logits) * sample_weight)

    def per_sample(self, backend, output, targets, logits: bool = False):
        """Each sample's loss, ``(n,)``."""
        raise NotImplementedError

    def sum_and_gradient(self, backend, output, targets, grad, logits: bool = False):
        """The 0-d sum of :meth:`per_sample`, and the gradient of the batch mean into
        ``grad``."""
        raise NotImplementedError

    def dense_targets(self, backend, targets, classes: int, dtype):
        """``targets`` (device) as floats of ``dtype`` (the backend's dtype object) in the
        form the loss computes with fastest, which it also takes: one-hot rows for a sparse
        loss (``fit`` converts its labels once); as they are by default."""
        return targets


class CategoricalCrossentropy(Loss):
    """``-sum(t * log q)`` per sample, ``q`` the outputs ``p`` scaled to sum to 1 (``q = p /
    sum(p)``, as Keras scales them: outputs that are not a softmax's are no probabilities),
    clipped to ``[eps, 1 - eps]``.  Its gradient is ``(g - sum(g * q)) / (sum(p) n)`` with
    ``g = -t / q``.  After a softmax it takes the logits: computed with the softmax
    (log-sum-exp), its gradient is ``(softmax - t) / n``."""

    name = "categorical_crossentropy"
    logits_of = (Softmax,)

    def per_sample(self, backend, output, targets, logits=False):
        xp = backend.xp
        if logits:
            shifted = output - xp.max(output, axis=1, keepdims=True)
            return (xp.log(xp.sum(xp.exp(shifted), axis=1))
                    - xp.sum(targets * shifted, axis=1))
        scaled = output / xp.sum(output, axis=1, keepdims=True)
        clipped = xp.clip(scaled, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return -xp.sum(targets * xp.log(clipped), axis=1)

    def sum_and_gradient(self, backend, output, targets, grad, logits=False):
        if logits:  # the backend's fused kernel
            return backend.softmax_crossentropy(output, targets, grad)
        xp = backend.xp
        total = xp.sum(output, axis=1, keepdims=True)
        scaled = output / total
        g = -targets / xp.clip(scaled, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        grad[...] = (g - xp.sum(g * scaled, axis=1, keepdims=True)) / (total * output.shape[0])
        return xp.sum(self.per_sample(backend, output, targets))


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer labels ``(n,)`` in ``[0, k)``."""

    name = "sparse_categorical_crossentropy"
    sparse = True

    def per_sample(self, backend, output, targets, logits=False):
        one_hot = self.dense_targets(backend, targets, output.shape[1], output.dtype)
        return super().per_sample(backend, output, one_hot, logits)

    def sum_and_gradient(self, backend, output, targets, grad, logits=False):
        one_hot = self.dense_targets(backend, targets, output.shape[1], output.dtype)
        return super().sum_and_gradient(backend, output, one_hot, grad, logits)

    def dense_targets(self, backend, targets, classes, dtype):
        """One-hot ``(n, classes)`` rows of ``dtype`` (the backend's dtype object) from
        ``(n,)`` labels (one-hot rows stay as they are)."""
        if targets.ndim == 2:
            return targets
        return one_hot(backend.xp, targets, classes, dtype)


class MeanSquaredError(Loss):
    """``mean((p - t)**2)`` over the ``k`` outputs of each sample."""

    name = "mean_squared_error"

    def per_sample(self, backend, output, targets, logits=False):
        error = output - targets
        return backend.xp.sum(error * error, axis=1) / output.shape[1]

    def sum_and_gradient(self, backend, output, targets, grad, logits=False):
        n, k = output.shape
        grad[...] = (output - targets) * (2 / (n * k))
        return backend.xp.sum(self.per_sample(backend, output, targets))


class BinaryCrossentropy(Loss):
    """``-(t log p + (1 - t) log(1 - p))``, averaged over the ``k`` outputs of each sample
    (yes/no outputs, one or several).  After a sigmoid it takes the logits ``z``:
    ``max(z, 0) - z t + log(1 + exp(-|z|))``, stable for any ``z``, with the gradient
    ``(sigmoid(z) - t) / (n k)``."""

    name = "binary_crossentropy"
    logits_of = (Sigmoid,)

    def per_sample(self, backend, output, targets, logits=False):
        xp = backend.xp
        if logits:
            terms = (xp.maximum(output, xp.zeros_like(output)) - output * targets
                     + xp.log1p(xp.exp(-xp.abs(output))))
            return xp.sum(terms, axis=1) / output.shape[1]
        clipped = xp.clip(output, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        terms = targets * xp.log(clipped) + (1 - targets) * xp.log(1 - clipped)
        return -xp.sum(terms, axis=1) / output.shape[1]

    def sum_and_gradient(self, backend, output, targets, grad, logits=False):
        xp = backend.xp
        n, k = output.shape
        if logits:
            grad[...] = output
            Sigmoid().forward(backend, grad)  # the probabilities, as the activation makes them
            grad[...] = (grad - targets) / (n * k)
        else:
            clipped = xp.clip(output, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
            grad[...] = ((clipped - targets) / (clipped * (1 - clipped))) / (n * k)
        return xp.sum(self.per_sample(backend, output, targets, logits))


LOSSES = {cls.name: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                    BinaryCrossentropy, MeanSquaredError)}
LOSSES["mse"] = MeanSquaredError


def get(loss, **options) -> Loss:
    """A Loss from a name (and its ``options``, such as ``from_logits``) or an instance."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise ArgumentTypeError(f"loss must be a name or a Loss, not {type(loss).__name__}")
    if loss not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    return LOSSES[loss](**options)
