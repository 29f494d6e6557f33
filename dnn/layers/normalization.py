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
    moving statistics stand in.  Weights, Keras' order: ``gamma`` (with ``scale``), ``beta``
    (with ``center``), trained; ``moving_mean``, ``moving_variance``, updated by the layer
    (``state_weights``: in checkpoints and in a captured step's state).
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 input_shape=None, name=None, trainable=True, **keras_only):
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

    def _reduced_axes(self, x) -> tuple:
        return tuple(range(x.ndim - 1))

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        axes = self._reduced_axes(x)
        if training and self.trainable:
            mean = xp.mean(x, axis=axes)
            centered = x - mean
            variance = xp.mean(centered * centered, axis=axes)
            self.moving_mean[...] = self.moving_mean * self.momentum + mean * (1 - self.momentum)
            self.moving_variance[...] = (self.moving_variance * self.momentum
                                         + variance * (1 - self.momentum))
        else:
            centered, variance = x - self.moving_mean, self.moving_variance
        inverse_std = self._buffers("inverse_std", variance.shape, x.dtype)
        inverse_std[...] = 1 / xp.sqrt(variance + self.epsilon)
        normalized = self._buffers("normalized", x.shape, x.dtype)
        normalized[...] = centered * inverse_std
        out = self._buffers("output", x.shape, x.dtype)
        out[...] = normalized * self.gamma + self.beta
        self._normalized, self._inverse_std = normalized, inverse_std
        self._batch_statistics = training and self.trainable
        return out

    def backward(self, grad, logits=False):
        xp = self._backend.xp
        axes = self._reduced_axes(grad)
        normalized = self._normalized
        trained = iter(self.grads)
        if self.scale:
            next(trained)[...] = xp.sum(grad * normalized, axis=axes)
        if self.center:
            next(trained)[...] = xp.sum(grad, axis=axes)
        if not self.needs_input_grad:
            return None
        grad_normalized = grad * self.gamma
        grad_x = self._buffers("grad_x", grad.shape, grad.dtype)
        if self._batch_statistics:  # the mean and variance depend on x too
            grad_x[...] = self._inverse_std * (
                grad_normalized - xp.mean(grad_normalized, axis=axes)
                - normalized * xp.mean(grad_normalized * normalized, axis=axes))
        else:
            grad_x[...] = grad_normalized * self._inverse_std
        return grad_x

    def get_config(self) -> dict:
        defaults = {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}
        values = {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                  "scale": self.scale}
        options = {key: value for key, value in values.items() if value != defaults[key]}
        options.update({f"{name}_initializer": value for name, value in self.initializers.items()
                        if value != ("ones" if "gamma" in name or "variance" in name
                                     else "zeros")})
        return self._config("BatchNormalization", **options)

    def __repr__(self) -> str:
        return f"BatchNormalization(momentum={self.momentum}, epsilon={self.epsilon})"
