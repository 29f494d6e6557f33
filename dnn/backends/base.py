"""The Backend base class: every kernel written once over the array namespace ``self.xp``.

Shapes used in the docstrings: ``n`` samples in a batch, ``i`` inputs of a layer, ``o`` its
outputs, ``k`` classes.  A backend subclass overrides a kernel only where it is measurably faster
(in-place NumPy ufuncs for ``cpu``, fused CuPy kernels for ``gpu``) and must return the same
numbers as the generic version here; the cross-backend tests pin them together.

``scratch`` arguments are dicts owned by the caller (one per layer) in which a backend may keep
reusable buffers between calls.  The generic kernels ignore them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any  # an array of the backend's own type


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, why and how to fix it (``reason``); for an
    available backend ``reason`` may note how it runs (``dnn plugins`` shows it)."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


class Backend:
    """A place to compute: an array namespace plus the few hot kernels of training."""

    name: str = "base"
    xp: Any = None

    @classmethod
    def is_available(cls) -> Availability:
        return Availability(True)

    # -- host <-> device ---------------------------------------------------------------
    def asarray(self, host_array, dtype=None) -> Array:
        """Move a host array (or Python scalar) to this backend, optionally casting."""
        return self.xp.asarray(host_array, dtype=self.dtype(dtype) if dtype else None)

    def to_numpy(self, array) -> np.ndarray:
        """Copy a backend array to a host NumPy array."""
        return np.asarray(array)

    def synchronize(self) -> None:
        """Wait until queued work has finished (a no-op on synchronous backends)."""

    def overflow_silenced(self):
        """A context in which overflow and invalid operations give inf and NaN without a
        warning: ``fit`` trains in it and reports a loss that is not finite as one
        :class:`dnn.errors.DivergenceError` instead.  No-op by default."""
        return contextlib.nullcontext()

    def dtype(self, name):
        """The backend's dtype object for a name such as ``"float32"``."""
        return getattr(self.xp, str(np.dtype(name)))

    def is_own_array(self, array) -> bool:
        """True when ``array`` is an array of this backend (and not, say, a NumPy array)."""
        return type(array) is type(self.xp.asarray(0))

    # -- data ----------------------------------------------------------------------------
    def take_rows(self, data: Array, indices: Array, scratch: dict) -> Array:
        """Rows ``data[indices]``: ``(N, ...)`` gathered by ``(n,)`` integer indices."""
        return self.xp.take(data, indices, axis=0)

    # -- dense layers ----------------------------------------------------------------------
    def dense_forward(self, x: Array, kernel: Array, bias: Array, scratch: dict) -> Array:
        """``x @ kernel + bias``: ``(n, i) @ (i, o) + (o,) -> (n, o)``."""
        return self.xp.matmul(x, kernel) + bias

    def dense_backward(self, x: Array, grad_z: Array, kernel: Array, need_input_grad: bool,
                       scratch: dict):
        """Gradients of ``z = x @ kernel + bias`` given ``dL/dz`` of shape ``(n, o)``.

        Returns ``(grad_x (n, i) or None, grad_kernel (i, o), grad_bias (o,))``.
        """
        xp = self.xp
        grad_kernel = xp.matmul(xp.matrix_transpose(x), grad_z)
        grad_bias = xp.sum(grad_z, axis=0)
        grad_x = xp.matmul(grad_z, xp.matrix_transpose(kernel)) if need_input_grad else None
        return grad_x, grad_kernel, grad_bias

    def dense_relu_forward(self, x: Array, kernel: Array, bias: Array, scratch: dict) -> Array:
        """``relu(x @ kernel + bias)``: ``(n, i) -> (n, o)``, the hidden layer of the classic
        network; a backend may fuse the bias and the relu into one pass."""
        return self.relu(self.dense_forward(x, kernel, bias, scratch), scratch)

    # -- activations ---------------------------------------------------------------------------
    def relu(self, z: Array, scratch: dict) -> Array:
        """``max(z, 0)`` elementwise; ``z`` may be overwritten by an override."""
        return self.xp.maximum(z, self.xp.zeros_like(z))

    def relu_backward(self, grad_out: Array, out: Array, scratch: dict) -> Array:
        """``grad_out * (out > 0)``: the gradient through relu given its output."""
        xp = self.xp
        return xp.where(out > 0, grad_out, xp.zeros_like(grad_out))

    def softmax_crossentropy(self, logits: Array, targets: Array, scratch: dict):
        """Softmax cross-entropy from logits, computed stably.

        ``logits`` and one-hot ``targets`` are ``(n, k)``.  Returns ``(loss_sum, grad)``: the
        0-d sum over the batch of ``-sum(targets * log_softmax(logits))`` and the gradient of the
        batch *mean* with respect to the logits, ``(softmax(logits) - targets) / n``.
        """
        xp = self.xp
        n = logits.shape[0]
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = xp.sum(exp, axis=1, keepdims=True)
        loss_sum = xp.sum(xp.log(total)) - xp.sum(targets * shifted)
        grad = (exp / total - targets) / n
        return loss_sum, grad

    # -- metrics -------------------------------------------------------------------------------
    def correct_count(self, output: Array, targets: Array):
        """The number of samples whose predicted class matches the target, as a 0-d integer
        array (or a Python int, where a backend counts on the host).

        ``output`` is ``(n, k)`` (probabilities or logits: the argmax is the same); ``targets``
        are one-hot ``(n, k)`` or labels ``(n,)``.  With ``k == 1`` the prediction is
        ``output > 0.5``.
        """
        xp = self.xp
        if output.shape[1] == 1:
            predicted = xp.astype(output[:, 0] > 0.5, targets.dtype)
            labels = xp.reshape(targets, (-1,))
        else:
            predicted = xp.argmax(output, axis=1)
            labels = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
        return xp.sum(xp.astype(predicted == xp.astype(labels, predicted.dtype), xp.int64))

    # -- optimizer updates ---------------------------------------------------------------------
    def fused_update(self, name: str):
        """A fused kernel of the optimizer update called ``name``, or None (the default): the
        optimizer then runs its own formula over ``xp``, the reference a kernel is tested
        against.  The built-in names and their arguments (state arrays in place, None for an
        absent one; hyper-parameters as Python numbers):

        - ``"sgd"``: ``(param, grad, velocity, learning_rate, momentum, nesterov)``
        - ``"rmsprop"``: ``(param, grad, mean_square, mean_grad, momentum_buffer,
          learning_rate, rho, momentum, epsilon)``
        - ``"adam"``: ``(param, grad, m, v, alpha, beta_1, beta_2, epsilon)``

        The kernel returns True when it took the step, False when it cannot take these arrays
        (their dtype, say, or a variant it leaves to the formula).
        """
        return None
