"""Core layers (Keras' ``keras.layers.core`` and friends): Dense, Input, Flatten, Dropout,
Activation, Reshape.  Each writes its forward pass and its backward pass (the chain rule) once,
over the backend's kernels and array namespace; :mod:`dnn.layers.base` says who owns which
array."""

from __future__ import annotations

import math
import warnings

import numpy as np

from dnn import activations
from dnn.backends.base import InputColumns
from dnn.errors import UsageError
from dnn.layers.base import KernelLayer, Layer, Passthrough, check_keras_only, declared_shape
from dnn.layers.symbolic import MergedByOperators
from dnn.utils import as_shape, is_int_at_least, is_number, user_stacklevel


class FlattenedInputsWarning(UserWarning):
    """A Dense layer takes inputs of several axes flattened, where Keras applies it to the
    last axis alone."""


class Dense(KernelLayer):
    """``a = activation(x @ kernel + bias)``: ``(n, i) -> (n, units)``.

    ``kernel`` is ``(i, units)``, ``bias`` ``(units,)`` (none with ``use_bias=False``), drawn
    by Keras' initializers (``"glorot_uniform"`` and ``"zeros"`` by default); ``i`` is inferred
    from the first input, or declared by a first layer as Keras' ``input_shape=(784,)`` or
    ``input_dim=784``.  Inputs of more axes, ``(n, *shape)``, are taken flattened, as
    ``(n, i)`` with ``i`` their features (Keras would apply the layer to the last axis alone;
    a ``Flatten()`` before says it explicitly).  ``kernel_regularizer`` and
    ``bias_regularizer`` (anything :func:`dnn.regularizers.get` takes) add their penalties to
    the loss; Keras' ``activity_regularizer`` is not supported yet.  ``input_columns`` is the
    layer's record of which input columns its backend kept in the last forward product (the
    cpu backend leaves out the columns that are zero in the whole batch), read by the
    backward pass of the same batch.
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 input_shape=None, input_dim=None, name=None, trainable=True,
                 **keras_only):
        check_keras_only("Dense", keras_only)
        super().__init__(units, "units", activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer,
                         input_shape=declared_shape(input_shape, input_dim, "Dense"), name=name,
                         trainable=trainable)
        self.output_shape = (self.units,)  # known before the inputs are
        self.input_columns = InputColumns()
        self._input = self._output = self._batch_shape = None

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def kernel_shape(self, input_shape):
        return (math.prod(input_shape), self.units)

    def build(self, input_shape):
        if len(input_shape) > 1:
            warnings.warn(f"{self.name} takes its inputs of shape {tuple(input_shape)} "
                          f"flattened, as {math.prod(input_shape)} features (Keras would apply "
                          "it to their last axis alone): put a Flatten() before it to say so",
                          FlattenedInputsWarning, stacklevel=user_stacklevel())
        super().build(input_shape)

    def forward(self, x, logits=False, training=False):
        self._batch_shape = x.shape
        if x.ndim != 2:
            x = self._backend.xp.reshape(x, (x.shape[0], -1))
        kernel, bias = self._kernel_and_bias()
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
        backend.dense_backward(x, grad_z, self.params[0], self.grads[0], self._grad_bias(),
                               grad_x, self.input_columns)
        if grad_x is None or grad_x.shape == self._batch_shape:
            return grad_x
        return backend.xp.reshape(grad_x, self._batch_shape)

    def get_config(self) -> dict:
        return self._config(units=self.units, activation=self.activation.name,
                            **self._kernel_options())

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"


class Input(Passthrough, MergedByOperators):
    """Keras' ``Input(shape=(784,))`` or ``Input(shape=(28, 28, 1))``: declares the shape of
    the model's input samples; passes the inputs on unchanged.  Named ``input_layer``, as
    Keras names its InputLayer."""

    name_prefix = "input_layer"
    # Keras' other arguments, taken at their defaults only
    KERAS_ONLY = {"batch_size": None, "dtype": None, "sparse": False, "tensor": None,
                  "optional": False}

    def __init__(self, shape=None, name=None, batch_shape=None, **keras_only):
        if keras_only.get("sparse", False) is None:  # Keras' default: not sparse
            del keras_only["sparse"]
        if _is_integer_type(keras_only.get("dtype")):  # indices, as an Embedding takes them:
            del keras_only["dtype"]  # they reach it in the model's dtype, checked exact
        check_keras_only("Input", keras_only, self.KERAS_ONLY)
        if (shape is None) == (batch_shape is None):
            raise UsageError("Input takes shape=(...) (a sample's), or batch_shape=(None, ...)"
                             ", one of them")
        if batch_shape is not None:
            batch = as_shape(batch_shape)
            if len(batch) < 2 or batch[0] is not None:
                raise UsageError(f"Input batch_shape must be (None, *sample shape), not "
                                 f"{batch_shape!r}: the batch size comes from the data")
            shape = batch[1:]
        super().__init__(name, declared_shape(shape, None, "Input"))
        self.shape = (None, *self.declared_input_shape)  # Keras': the batch size first
        self.ndim = len(self.shape)

    def get_config(self) -> dict:
        return self._config(shape=list(self.declared_input_shape))

    def __repr__(self) -> str:
        return f"Input(shape={self.declared_input_shape})"


class _Reshaping(Layer):
    """A layer that gives a batch ``(n, *input_shape)`` the shape ``(n, *output_shape)``, as
    a view, and its gradient the input's shape again."""

    def forward(self, x, logits=False, training=False):
        return self._backend.xp.reshape(x, (x.shape[0], *self.output_shape))

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        return self._backend.xp.reshape(grad, (grad.shape[0], *self.input_shape))


class Flatten(_Reshaping):
    """Keras' ``Flatten()``: inputs ``(n, *shape)`` as ``(n, features)`` (a view of them; its
    backward pass gives the gradient the inputs' shape again)."""

    def __init__(self, input_shape=None, name=None, trainable=True):
        super().__init__(name, declared_shape(input_shape, None, "Flatten"), trainable)

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def get_config(self) -> dict:
        return self._config()

    def __repr__(self) -> str:
        return "Flatten()"


# Dropout's counter-based generator: a 32-bit hash (Wellons' lowbias32) of each element's
# index, the layer's seed and a step counter, computed with the backend's uint32 arithmetic,
# so that every backend drops the same units without a host-to-device copy, and a captured
# step (whose counter lives on the device) draws anew at each replay.
GOLDEN, STEP_MIX = 0x9E3779B1, 0x85EBCA77


def _lowbias32(h):
    h = h ^ (h >> 16)
    h = h * 0x7FEB352D
    h = h ^ (h >> 15)
    h = h * 0x846CA68B
    return h ^ (h >> 16)


class Dropout(Passthrough):
    """Keras' inverted dropout: in ``fit``, each unit of the input is zeroed with probability
    ``rate`` and the others scaled by ``1 / (1 - rate)``; outside ``fit`` it passes the inputs
    on.  For one seed (the model's, or ``seed``) every backend drops the same units, and the
    units of a row depend on its place in the global batch (:attr:`Layer.first_row`), so that
    N ranks drop what one process would."""

    def __init__(self, rate: float, seed=None, name=None, trainable=True):
        super().__init__(name, trainable=trainable)
        if not (is_number(rate) and 0 <= rate < 1):
            raise UsageError(f"Dropout rate must be a number in [0, 1), not {rate!r}")
        if seed is not None and not is_int_at_least(seed, 0):
            raise UsageError(f"Dropout seed must be a non-negative integer, not {seed!r}")
        self.rate, self.seed = float(rate), seed
        self._mask = None

    def build(self, input_shape):
        xp = self._backend.xp
        seed = (int(self._rng.integers(1 << 32)) if self.seed is None else
                self.seed % (1 << 32))
        self._seed = xp.asarray(seed, dtype=xp.uint32)
        self._step = xp.zeros((), dtype=xp.uint32)  # counts the training passes, on the device
        self._threshold = round(self.rate * (1 << 24))
        self._indexed = set()  # (shape, first row) of the element indices in their buffer

    def forward(self, x, logits=False, training=False):
        if not training or self.rate == 0:
            self._mask = None
            return x
        xp = self._backend.xp
        # each element's index in the global batch, mod 2**32, computed once per shape and row
        index = self._buffers(f"index from row {self.first_row}", x.shape, xp.uint32)
        if (x.shape, self.first_row) not in self._indexed:
            start = self.first_row * math.prod(x.shape[1:]) % (1 << 32)
            index[...] = xp.reshape(xp.arange(math.prod(x.shape), dtype=xp.uint32), x.shape)
            index[...] = index + xp.asarray(start, dtype=xp.uint32)
            self._indexed.add((x.shape, self.first_row))
        self._step += 1
        hashed = _lowbias32(index * GOLDEN + self._step * STEP_MIX + self._seed)
        mask = self._buffers("mask", x.shape, x.dtype)
        mask[...] = xp.astype((hashed >> 8) >= self._threshold, x.dtype) / (1 - self.rate)
        out = self._buffers("output", x.shape, x.dtype)
        out[...] = x * mask
        self._mask = mask
        return out

    def step_state(self) -> list:
        """The step counter, and the seed: drawn at build where none is given, it is part of
        the state every rank starts from (rank 0's), so that the ranks drop alike."""
        return [*super().step_state(), self._step, self._seed]

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        if self._mask is not None:
            grad[...] = grad * self._mask
        return grad

    def get_config(self) -> dict:
        return self._config(rate=self.rate,
                            **({} if self.seed is None else {"seed": self.seed}))

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"


class Activation(Passthrough):
    """Keras' ``Activation(activation)``: ``a = activation(x)``, ``(n, f) -> (n, f)``, for any
    name :func:`dnn.activations.get` knows.  As the last layer its activation is one a loss
    may take the logits of, as a Dense layer's: ``forward`` with ``logits`` then leaves it out
    (its output is ``x``), and ``backward`` with ``logits`` is given ``dL/dx`` itself.  Either
    way the output is written into the layer's own buffer, never into its input."""

    def __init__(self, activation, name=None, trainable=True):
        super().__init__(name, trainable=trainable)
        self.activation = activations.get(activation)
        self._output = None

    def forward(self, x, logits=False, training=False):
        out = self._output = self._buffers("output", x.shape, x.dtype)
        out[...] = x
        return out if logits else self.activation.forward(self._backend, out)

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        return grad if logits else self.activation.backward(self._backend, grad, self._output)

    def get_config(self) -> dict:
        return self._config(activation=self.activation.name)

    def __repr__(self) -> str:
        return f"Activation({self.activation.name!r})"


class Reshape(_Reshaping):
    """Keras' ``Reshape(target_shape)``: inputs ``(n, *shape)`` as ``(n, *target_shape)``,
    where one size of ``target_shape`` may be -1 (inferred from the others); a UsageError
    naming both shapes when ``target_shape`` cannot hold the inputs' features."""

    def __init__(self, target_shape, name=None, trainable=True):
        super().__init__(name, trainable=trainable)
        shape = as_shape(target_shape)
        if (not shape or not all(is_int_at_least(size, -1) and size != 0 for size in shape)
                or shape.count(-1) > 1):
            raise UsageError(f"Reshape target_shape must be positive sizes with at most one "
                             f"-1, such as (28, 28) or (-1, 4), not {target_shape!r}")
        self.target_shape = tuple(int(size) for size in shape)

    def compute_output_shape(self, input_shape):
        features = math.prod(input_shape)
        known = math.prod(size for size in self.target_shape if size != -1)
        inferred = -1 in self.target_shape
        if features % known if inferred else features != known:
            why = (f"{features} features are not a multiple of {known}" if inferred else
                   f"it holds {known} features, not {features}")
            raise UsageError(f"Reshape cannot give inputs of shape {tuple(input_shape)} the "
                             f"shape {self.target_shape}: {why}")
        return tuple(features // known if size == -1 else size for size in self.target_shape)

    def get_config(self) -> dict:
        return self._config(target_shape=list(self.target_shape))

    def __repr__(self) -> str:
        return f"Reshape({self.target_shape})"


def _is_integer_type(dtype) -> bool:
    """Whether ``dtype`` (a name, a NumPy type, anything) names an integer type."""
    try:
        return dtype is not None and np.dtype(dtype).kind in "iu"
    except TypeError:
        return False
