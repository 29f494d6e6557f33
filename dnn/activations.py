"""Activation functions: forward from the pre-activation ``z``, backward from the output ``a``.

All arrays are ``(n, o)``, and both passes work in place on the layer's arrays: ``forward(z)``
overwrites ``z`` with ``a``, ``backward(grad_a, a)`` overwrites ``grad_a`` with ``dL/dz`` (every
activation here has a derivative expressible through its output).
"""

from __future__ import annotations

from dnn.errors import ArgumentTypeError, UsageError


class Activation:
    name = "activation"

    def forward(self, backend, z):
        """``z = activation(z)`` in place; returns ``z``."""
        raise NotImplementedError

    def dense_forward(self, backend, x, kernel, bias, out, columns=None):
        """``out = activation(x @ kernel + bias)``, ``(n, i) -> (n, o)``; overridden by an
        activation for which the backend has a kernel doing both."""
        return self.forward(backend, backend.dense_forward(x, kernel, bias, out, columns))

    def backward(self, backend, grad, a):
        """``grad = dL/dz`` in place, from ``grad`` = ``dL/da`` and the output ``a``; returns
        ``grad``."""
        raise NotImplementedError


class Linear(Activation):
    name = "linear"

    def forward(self, backend, z):
        return z

    def backward(self, backend, grad, a):
        return grad


class ReLU(Activation):
    name = "relu"

    def forward(self, backend, z):
        return backend.relu(z)

    def dense_forward(self, backend, x, kernel, bias, out, columns=None):
        return backend.dense_relu_forward(x, kernel, bias, out, columns)

    def backward(self, backend, grad, a):
        return backend.relu_backward(grad, a)


class Sigmoid(Activation):
    """``1 / (1 + exp(-z))``, computed as ``(1 + tanh(z/2)) / 2`` so that no exp overflows."""

    name = "sigmoid"

    def forward(self, backend, z):
        z[...] = (backend.xp.tanh(z * 0.5) + 1) * 0.5
        return z

    def backward(self, backend, grad, a):
        grad[...] = grad * a * (1 - a)
        return grad


class Tanh(Activation):
    name = "tanh"

    def forward(self, backend, z):
        z[...] = backend.xp.tanh(z)
        return z

    def backward(self, backend, grad, a):
        grad[...] = grad * (1 - a * a)
        return grad


class Softmax(Activation):
    """Row-wise softmax over the last axis, shifted by the row maximum for stability."""

    name = "softmax"

    def forward(self, backend, z):
        xp = backend.xp
        exp = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
        z[...] = exp / xp.sum(exp, axis=-1, keepdims=True)
        return z

    def backward(self, backend, grad, a):
        xp = backend.xp
        grad[...] = a * (grad - xp.sum(grad * a, axis=-1, keepdims=True))
        return grad


ACTIVATIONS = {cls.name: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Softmax)}


def get(activation) -> Activation:
    """An Activation from a name (None means linear) or an instance."""
    if isinstance(activation, Activation):
        return activation
    if activation is not None and not isinstance(activation, str):
        raise ArgumentTypeError(f"activation must be a name or an Activation, not "
                                f"{type(activation).__name__}")
    name = "linear" if activation is None else activation
    if name not in ACTIVATIONS:
        raise UsageError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
