"""Normalization layers (Keras' ``keras.layers.normalization``): BatchNormalization."""

from __future__ import annotations

import math

import numpy as np

from dnn import initializers
from dnn.errors import UsageError
from dnn.layers.base import Layer, WeightSpec, check_keras_only, declared_shape
from dnn.utils import is_number


class BatchNormalization(Layer):
    """Keras' ``BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, center=True,
    scale=True)`` over the last axis (the channels of images, the features of flat inputs):
    ``(n, ..., c) -> (n, ..., c)``, ``out = (x - mean) / sqrt(variance + epsilon) * gamma +
    beta`` per channel.

    In ``fit`` (``training``) ``mean`` and ``variance`` are the batch's, over every axis but
    the last (the variance divides by the count, not count - 1, as Keras'), and the moving
    statistics follow them: ``moving = moving * momentum + batch * (1 - momentum)``; outside
    ``fit``, and in ``fit`` for a layer whose ``trainable`` is off (as Keras 3 does), the
    moving statistics stand in.  With ``synchronized`` (Keras' argument) and several ranks
    (:mod:`dnn.distributed`), the batch's statistics, and the gradient's terms through them,
    are the global batch's, summed over the ranks (two sums a forward pass, one a backward
    one), so that N ranks train as one process does; without it each rank's share is
    normalized with its own (a rank whose share has no rows leaves its moving statistics
    alone, as one process never sees an empty batch).  Weights, Keras' order: ``gamma``
    (with ``scale``), ``beta`` (with ``center``), trained; ``moving_mean``,
    ``moving_variance``, updated by the layer (``state_weights``: in checkpoints and in a
    captured step's state).
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 synchronized=False, input_shape=None, name=None, trainable=True,
                 **keras_only):
        check_keras_only("BatchNormalization", keras_only)
        super().__init__(name, declared_shape(input_shape, None, "BatchNormalization"),
                         trainable)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise UsageError(f"BatchNormalization axis must be an integer, not {axis!r}")
        if not (is_number(momentum) and 0 <= momentum < 1):
            raise UsageError(f"BatchNormalization momentum must be a number in [0, 1), not "
                             f"{momentum!r}")
        if not (is_number(epsilon) and 0 < epsilon < math.inf):
            raise UsageError(f"BatchNormalization epsilon must be a positive number, not "
                             f"{epsilon!r}")
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.synchronized = bool(synchronized)
        self.initializers = {name: initializers.check(value) for name, value in (
            ("beta", beta_initializer), ("gamma", gamma_initializer),
            ("moving_mean", moving_mean_initializer),
            ("moving_variance", moving_variance_initializer))}
        self._normalized = self._inverse_std = None

    def compute_output_shape(self, input_shape):
        if self.axis not in (-1, len(input_shape)):
            raise UsageError(f"{self.name} (BatchNormalization): only the last axis (-1) can "
                             f"be normalized yet, not axis {self.axis} of inputs of shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape)

    def weight_specs(self, input_shape):
        channels = (input_shape[-1],)
        trained = [("gamma", self.scale), ("beta", self.center)]
        specs = [WeightSpec(name, channels, self.initializers[name])
                 for name, wanted in trained if wanted]
        return specs + [WeightSpec(name, channels, self.initializers[name], trainable=False)
                        for name in ("moving_mean", "moving_variance")]

    def build(self, input_shape):
        super().build(input_shape)
        weights = dict(zip([spec.name for spec in self.weight_specs(input_shape)],
                           self.weights))
        # Without scale or center the formulas still multiply and add: by 1 and 0.
        channels = input_shape[-1]
        self.gamma = weights.get("gamma", self._backend.asarray(np.ones(channels, self._dtype)))
        self.beta = weights.get("beta", self._backend.asarray(np.zeros(channels, self._dtype)))
        self.moving_mean, self.moving_variance = (weights["moving_mean"],
                                                  weights["moving_variance"])

    def check_weight_values(self, values):
        variance = values[-1]  # the moving variance: the last of weight_specs
        if (variance < 0).any():
            raise UsageError(f"{self.name}: a moving variance must be >= 0, not "
                             f"{float(variance.min())!r} (no data has a negative variance)")

    def _as_rows(self, x):
        """``x`` ``(n, ..., c)`` as the ``(m, c)`` rows the backend's channel sums take (a
        view of a C-contiguous ``x``)."""
        return self._backend.xp.reshape(x, (math.prod(x.shape[:-1]), x.shape[-1]))

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        self._ranks = self.ranks if self.synchronized else None
        # a share of no rows (a rank past the rows of a last batch) has no statistics of its
        # own: it normalizes with the moving ones and leaves them alone (synchronized, the
        # global batch's are every rank's)
        batch_statistics = (training and self.trainable
                            and (x.shape[0] > 0 or self._ranks is not None))
        if batch_statistics:
            mean, variance = self._batch_moments(x)
            self.moving_mean[...] = self.moving_mean * self.momentum + mean * (1 - self.momentum)
            self.moving_variance[...] = (self.moving_variance * self.momentum
                                         + variance * (1 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        inverse_std = self._buffers("inverse_std", variance.shape, x.dtype)
        inverse_std[...] = 1 / xp.sqrt(variance + self.epsilon)
        normalized = self._buffers("normalized", x.shape, x.dtype)
        normalized[...] = (x - mean) * inverse_std
        out = self._buffers("output", x.shape, x.dtype)
        out[...] = normalized * self.gamma + self.beta
        self._normalized, self._inverse_std = normalized, inverse_std
        self._batch_statistics = batch_statistics
        return out

    def _batch_moments(self, x) -> tuple:
        """``(mean, variance)`` ``(c,)`` of the batch ``x`` ``(n, ..., c)`` per channel: of
        this rank's share, or with ``synchronized`` of the whole global batch (sums over the
        ranks); keeps the count of values per channel they are taken over (an int, or the
        global batch's as a ``(1,)`` array)."""
        backend, rows = self._backend, self._as_rows(x)
        channels = rows.shape[1]
        sums = self._buffers("sums", (channels + 1,), x.dtype)  # and the count of values
        backend.channel_sums(rows, sums[:channels])
        self._count = rows.shape[0]
        if self._ranks is not None:
            sums[channels:] = self._count
            self._ranks.all_reduce(sums, backend)
            self._count = sums[channels:]
        mean = sums[:channels] / self._count
        squares = backend.channel_sums(rows, self._buffers("squares", (channels,), x.dtype),
                                       mean=mean)
        if self._ranks is not None:
            self._ranks.all_reduce(squares, backend)
        return mean, squares / self._count

    def _gradient_means(self, sums, samples: int) -> tuple:
        """The means of ``dL/dnormalized`` (``grad * gamma``) and of it times ``normalized``
        per channel, from this share's ``sums`` ``(2 * c,)`` of ``grad`` and ``grad *
        normalized`` (:meth:`Backend.channel_gradient_sums`, overwritten), over the values the
        batch statistics were taken of: this share's, or with ``synchronized`` the global
        batch's, each rank's gradient (that of its share's mean loss, ``samples`` rows of the
        global batch's) weighted by its share of the rows, as the model sums the weights'
        gradients, and given back in this share's units."""
        if self._ranks is not None:
            total = self.global_rows or samples
            sums *= samples / total
            self._ranks.all_reduce(sums, self._backend)
            sums *= total / samples if samples else 0.0
        channels = self.gamma.shape[0]
        return (self.gamma * sums[:channels] / self._count,
                self.gamma * sums[channels:] / self._count)

    def backward(self, grad, logits=False):
        normalized = self._normalized
        channels = grad.shape[-1]
        sums = self._backend.channel_gradient_sums(
            self._as_rows(grad), self._as_rows(normalized),
            self._buffers("gradient_sums", (2 * channels,), grad.dtype))
        trained = iter(self.grads)
        if self.scale:
            next(trained)[...] = sums[channels:]
        if self.center:
            next(trained)[...] = sums[:channels]
        if not self.needs_input_grad:
            return None
        grad_normalized = grad * self.gamma
        grad_x = self._buffers("grad_x", grad.shape, grad.dtype)
        if self._batch_statistics:  # the mean and variance depend on x too
            mean, mean_times_normalized = self._gradient_means(sums, grad.shape[0])
            grad_x[...] = self._inverse_std * (grad_normalized - mean
                                               - normalized * mean_times_normalized)
        else:
            grad_x[...] = grad_normalized * self._inverse_std
        return grad_x

    def get_config(self) -> dict:
        defaults = {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True,
                    "synchronized": False}
        values = {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                  "scale": self.scale, "synchronized": self.synchronized}
        options = {key: value for key, value in values.items() if value != defaults[key]}
        options.update({f"{name}_initializer": value for name, value in self.initializers.items()
                        if value != ("ones" if "gamma" in name or "variance" in name
                                     else "zeros")})
        return self._config(**options)

    def __repr__(self) -> str:
        return f"BatchNormalization(momentum={self.momentum}, epsilon={self.epsilon})"
