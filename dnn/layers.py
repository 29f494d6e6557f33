"""Layers.  Each writes its forward pass and its backward pass (the chain rule) once, over the
backend's kernels and array namespace."""

from __future__ import annotations

import numpy as np

from dnn import activations
from dnn.errors import UsageError
from dnn.utils import is_int_at_least


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """Host ``(fan_in, fan_out)`` kernel drawn from U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


class Dense:
    """``a = activation(x @ kernel + bias)``: ``(n, i) -> (n, units)``.

    ``kernel`` is ``(i, units)`` (Glorot-uniform), ``bias`` ``(units,)`` (zeros), as in Keras;
    ``i`` is inferred from the first input.
    """

    def __init__(self, units: int, activation=None):
        if not is_int_at_least(units, 1):
            raise UsageError(f"Dense units must be a positive integer, not {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.kernel = None
        self.bias = None
        self.grads: list = []
        self.needs_input_grad = True  # the model turns it off for its first layer
        self.in_model = False  # set by the one Sequential that holds it
        self._backend = None
        self._scratch: dict = {}
        self._input = None
        self._output = None

    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def params(self) -> list:
        """``[kernel (i, units), bias (units,)]``, arrays of the model's backend."""
        return [self.kernel, self.bias]

    def build(self, input_dim: int, backend, rng: np.random.Generator, dtype) -> None:
        """Create the weights on the host with ``rng`` and move them to ``backend``."""
        self._backend = backend
        self.kernel = backend.asarray(glorot_uniform(rng, input_dim, self.units, dtype))
        self.bias = backend.asarray(np.zeros(self.units, dtype))

    def forward(self, x, logits: bool = False):
        """``(n, i) -> (n, units)``; with ``logits`` the activation is left out (for a loss
        that fuses it, such as softmax with cross-entropy)."""
        self._input = x
        if logits:
            self._output = self._backend.dense_forward(x, self.kernel, self.bias, self._scratch)
        else:
            self._output = self.activation.dense_forward(self._backend, x, self.kernel,
                                                         self.bias, self._scratch)
        return self._output

    def backward(self, grad, logits: bool = False):
        """Given ``dL/da`` (or ``dL/dz`` with ``logits``), ``(n, units)``: store the weight
        gradients in ``grads`` and return ``dL/dx`` ``(n, i)``, or None for the first layer."""
        backend = self._backend
        grad_z = grad if logits else self.activation.backward(backend, grad, self._output,
                                                              self._scratch)
        grad_x, grad_kernel, grad_bias = backend.dense_backward(
            self._input, grad_z, self.kernel, self.needs_input_grad, self._scratch)
        self.grads = [grad_kernel, grad_bias]
        return grad_x

    def get_config(self) -> dict:
        return {"class": "Dense", "units": self.units, "activation": self.activation.name}

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"


LAYERS = {"Dense": Dense}


def from_config(config: dict):
    """A layer from its :meth:`get_config` dict (as stored in checkpoints)."""
    config = dict(config)
    cls = LAYERS.get(config.pop("class", None))
    if cls is None:
        raise UsageError(f"unknown layer class in {config!r}")
    return cls(**config)
