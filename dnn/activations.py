"""Activation functions: forward from the pre-activation ``z``, backward from the output ``a``.

All arrays are ``(n, o)``.  ``backward(grad_a, a)`` returns ``dL/dz`` given ``dL/da`` and the
forward output ``a`` (every activation here has a derivative expressible through its output).
"""

from __future__ import annotations

from dnn.errors import UsageError


class Activation:
    name = "activation"

    def forward(self, backend, z, scratch):
        raise NotImplementedError

    def dense_forward(self, backend, x, kernel, bias, scratch):
        """``activation(x @ kernel + bias)``, ``(n, i) -> (n, o)``; overridden by an activation
        for which the backend has a fused kernel."""
        return self.forward(backend, backend.dense_forward(x, kernel, bias, scratch), scratch)

    def backward(self, backend, grad_a, a, scratch):
        raise NotImplementedError


class Linear(Activation):
    name = "linear"

    def forward(self, backend, z, scratch):
        return z

    def backward(self, backend, grad_a, a, scratch):
        return grad_a


class ReLU(Activation):
    name = "relu"

    def forward(self, backend, z, scratch):
        return backend.relu(z, scratch)

    def dense_forward(self, backend, x, kernel, bias, scratch):
        return backend.dense_relu_forward(x, kernel, bias, scratch)

    def backward(self, backend, grad_a, a, scratch):
        return backend.relu_backward(grad_a, a, scratch)


class Sigmoid(Activation):
    """``1 / (1 + exp(-z))``, computed as ``(1 + tanh(z/2)) / 2`` so that no exp overflows."""

    name = "sigmoid"

    def forward(self, backend, z, scratch):
        return (backend.xp.tanh(z * 0.5) + 1) * 0.5

    def backward(self, backend, grad_a, a, scratch):
        return grad_a * a * (1 - a)


class Tanh(Activation):
    name = "tanh"

    def forward(self, backend, z, scratch):
        return backend.xp.tanh(z)

    def backward(self, backend, grad_a, a, scratch):
        return grad_a * (1 - a * a)


class Softmax(Activation):
    """Row-wise softmax over the last axis, shifted by the row maximum for stability."""

    name = "softmax"

    def forward(self, backend, z, scratch):
        xp = backend.xp
        exp = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return exp / xp.sum(exp, axis=1, keepdims=True)

    def backward(self, backend, grad_a, a, scratch):
        xp = backend.xp
        return a * (grad_a - xp.sum(grad_a * a, axis=1, keepdims=True))


ACTIVATIONS = {cls.name: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Softmax)}


def get(activation) -> Activation:
    """An Activation from a name (None means linear) or an instance."""
    if isinstance(activation, Activation):
        return activation
    name = "linear" if activation is None else activation
    if name not in ACTIVATIONS:
        raise UsageError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
