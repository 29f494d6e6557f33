"""Layers.  Each writes its forward pass and its backward pass (the chain rule) once, over the
backend's kernels and array namespace.

:class:`Layer` is what :class:`dnn.Sequential` trains; who owns which array:

- a layer allocates its parameters in ``build`` (they live as long as the layer and are changed
  in place by the optimizer), and its gradients (``grads``, same order as ``params``), its
  output and its input gradient in its own :class:`dnn.buffers.Buffers`;
- ``forward`` returns the layer's output, which the model reads only until the layer's next
  ``forward`` (a built-in layer writes it into its own buffer: fixed arrays in, fixed arrays
  out, what a GPU can capture and replay);
- ``backward`` writes ``grads`` and returns the input gradient, read only until its next
  ``backward``; it may overwrite the ``grad`` it is given (the next layer's input gradient,
  or the model's loss gradient, which no one reads afterwards).
"""

from __future__ import annotations

import numpy as np

from dnn import activations
from dnn.backends.base import InputColumns
from dnn.buffers import Buffers
from dnn.errors import UsageError
from dnn.utils import is_int_at_least


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """Host ``(fan_in, fan_out)`` kernel drawn from U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


MAX_UNITS = 2**31 - 1  # past this no array library indexes a layer's outputs


class Layer:
    """The protocol of a layer in :class:`dnn.Sequential` (see the module docstring for who
    owns which array).  A subclass sets ``output_dim`` (known from its arguments or from
    ``build``) and implements the methods below; ``activation`` is the Activation a loss may
    take the logits of, or None."""

    activation = None
    output_dim: int | None = None

    def __init__(self):
        self.params: list = []
        self.grads: list = []
        self.needs_input_grad = True  # the model turns it off for its first layer
        self.in_model = False  # set by the one Sequential that holds it

    @property
    def built(self) -> bool:
        return bool(self.params)

    def build(self, input_dim: int, backend, rng: np.random.Generator, dtype) -> int:
        """Create the parameters for ``input_dim`` input features on ``backend`` (drawing any
        random ones on the host from ``rng``); returns the number of output features."""
        raise NotImplementedError

    def param_shapes(self, input_dim: int) -> tuple[list, int]:
        """``(shapes of params, output_dim)`` for ``input_dim`` input features, without
        making anything (checkpoints check a file against them before reading it)."""
        raise NotImplementedError

    def forward(self, x, logits: bool = False):
        """``(n, input_dim) -> (n, output_dim)``; with ``logits`` the activation is left out
        (for a loss that takes the logits of ``activation``)."""
        raise NotImplementedError

    def backward(self, grad, logits: bool = False):
        """Given ``dL/doutput`` (``dL/dlogits`` with ``logits``), ``(n, output_dim)``, write
        ``grads`` and return ``dL/dx`` ``(n, input_dim)``, or None when
        ``needs_input_grad`` is off."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """``{"class": name, ...}``: the arguments that rebuild the layer (checkpoints)."""
        raise NotImplementedError


class Dense(Layer):
    """``a = activation(x @ kernel + bias)``: ``(n, i) -> (n, units)``.

    ``kernel`` is ``(i, units)`` (Glorot-uniform), ``bias`` ``(units,)`` (zeros), as in Keras;
    ``i`` is inferred from the first input.  ``input_columns`` is the layer's record of which
    input columns its backend kept in the last forward product (the cpu backend leaves out the
    columns that are zero in the whole batch), read by the backward pass of the same batch.
    """

    def __init__(self, units: int, activation=None):
        super().__init__()
        if not is_int_at_least(units, 1) or units > MAX_UNITS:
            raise UsageError(f"Dense units must be an integer from 1 to {MAX_UNITS:,}, not "
                             f"{units!r}")
        self.units = self.output_dim = int(units)
        self.activation = activations.get(activation)
        self.input_columns = InputColumns()
        self._backend = None
        self._buffers = None
        self._input = None
        self._output = None

    @property
    def kernel(self):
        """``(i, units)``, an array of the model's backend (None before ``build``)."""
        return self.params[0] if self.params else None

    @property
    def bias(self):
        """``(units,)``, an array of the model's backend (None before ``build``)."""
        return self.params[1] if self.params else None

    def build(self, input_dim, backend, rng, dtype) -> int:
        """Draw the kernel on the host with ``rng``, move it and the zero bias to
        ``backend``, and allocate their gradients."""
        self._backend, self._buffers = backend, Buffers(backend)
        self.params = [backend.asarray(glorot_uniform(rng, input_dim, self.units, dtype)),
                       backend.asarray(np.zeros(self.units, dtype))]
        self.grads = [backend.empty(param.shape, dtype) for param in self.params]
        return self.units

    def param_shapes(self, input_dim):
        return [(input_dim, self.units), (self.units,)], self.units

    def forward(self, x, logits=False):
        kernel, bias = self.params
        out = self._buffers("output", (x.shape[0], self.units), kernel.dtype)
        if logits:
            self._backend.dense_forward(x, kernel, bias, out, self.input_columns)
        else:
            self.activation.dense_forward(self._backend, x, kernel, bias, out,
                                          self.input_columns)
        self._input, self._output = x, out
        return out

    def backward(self, grad, logits=False):
        backend, x = self._backend, self._input
        grad_z = grad if logits else self.activation.backward(backend, grad, self._output)
        grad_x = (self._buffers("grad_x", x.shape, x.dtype) if self.needs_input_grad
                  else None)
        backend.dense_backward(x, grad_z, self.params[0], *self.grads, grad_x,
                               self.input_columns)
        return grad_x

    def get_config(self) -> dict:
        return {"class": "Dense", "units": self.units, "activation": self.activation.name}

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"


LAYERS = {"Dense": Dense}


def from_config(config: dict):
    """A layer from its :meth:`Layer.get_config` dict (as stored in checkpoints)."""
    config = dict(config)
    cls = LAYERS.get(config.pop("class", None))
    if cls is None:
        raise UsageError(f"unknown layer class in {config!r}")
    return cls(**config)
