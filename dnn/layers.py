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

Training (Keras' ``trainable``, and weight regularizers, :mod:`dnn.regularizers`):

- ``layer.trainable`` (True by default, settable at any time) says whether the model hands the
  layer's ``params`` to the optimizer; a frozen layer's ``backward`` still runs (the layers
  before it need its input gradient).  ``trainable_weights``, ``non_trainable_weights`` and
  ``weights`` list its ``params`` as Keras does.
- ``layer.regularization_loss()`` is the summed penalty of the layer's regularized trainable
  weights, a 0-d array of the backend, or None when there is none (a frozen layer has none,
  as in Keras); the model adds it to the batch's mean loss.
- ``layer.add_regularization_gradients()`` adds each penalty's gradient into the weight's
  gradient in ``grads``, in place; the model calls it after ``backward``, before the
  optimizer's update.
- Both compute with the backend's array namespace on the layer's own arrays and read nothing
  on the host, so that a captured training step replays them.  ``trainable`` and the
  regularizers' factors are read in Python: a step captured before ``trainable`` changes
  keeps the old value, so the model captures its steps anew after a change.
- A layer says which regularizer each of its ``params`` has with
  :meth:`Layer.param_regularizers` (none by default); the two methods above need nothing
  else.
"""

from __future__ import annotations

import math

import numpy as np

from dnn import activations, initializers, regularizers
from dnn.backends.base import InputColumns
from dnn.buffers import Buffers
from dnn.errors import UsageError
from dnn.optimizers.schedules import array_namespace
from dnn.utils import as_shape, checked_weights, element_count, is_int_at_least

MAX_UNITS = 2**31 - 1  # past this no array library indexes a layer's outputs


def _declared_features(input_shape, input_dim, layer: str) -> int | None:
    """The number of input features a first layer declares (Keras' ``input_shape`` without
    the batch size, flattened, or ``input_dim``), or None."""
    if input_shape is not None and input_dim is not None:
        raise UsageError(f"{layer}: give input_shape or input_dim, not both")
    if input_dim is not None:
        input_shape = (input_dim,)
    if input_shape is None:
        return None
    features = element_count(as_shape(input_shape))
    if features is None:
        raise UsageError(f"{layer}: input_shape must be positive sizes such as (784,), not "
                         f"{input_shape!r}")
    return features


class Layer:
    """The protocol of a layer in :class:`dnn.Sequential` (see the module docstring for who
    owns which array).  A subclass sets ``output_dim`` (known from its arguments or from
    ``build``) and implements the methods below; ``activation`` is the Activation a loss may
    take the logits of, or None; ``input_dim``, the number of input features a first layer
    declares (Keras' ``input_shape``), or None."""

    activation = None
    output_dim: int | None = None
    _trainable = True  # also for a subclass that does not call Layer.__init__
    _made: dict = {}  # layers made so far, by kind: Keras' default names dense, dense_1, ...

    def __init__(self, name=None, input_dim=None, trainable=True):
        kind = type(self).__name__.lower()
        self._given_name = name
        if name is None:
            count = Layer._made.get(kind, 0)
            name = kind if count == 0 else f"{kind}_{count}"
        Layer._made[kind] = Layer._made.get(kind, 0) + 1
        self.name = str(name)
        self.input_dim = input_dim
        self.params: list = []
        self.grads: list = []
        self.needs_input_grad = True  # the model turns it off for its first layer
        self.in_model = False  # set by the one Sequential that holds it
        self.built = False
        self.trainable = trainable

    @property
    def trainable(self) -> bool:
        """Whether the model trains the layer's ``params`` (Keras' flag; see the module
        docstring)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        self._trainable = bool(value)

    @property
    def trainable_weights(self) -> list:
        """``params`` when ``trainable``, else none (arrays of the backend)."""
        return list(self.params) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        """``params`` when frozen, else none (arrays of the backend)."""
        return [] if self.trainable else list(self.params)

    @property
    def weights(self) -> list:
        """Every parameter, trainable or not: ``params`` (arrays of the backend)."""
        return list(self.params)

    def build(self, input_dim: int, backend, rng: np.random.Generator, dtype) -> int:
        """Create the parameters for ``input_dim`` input features on ``backend`` (drawing any
        random ones on the host from ``rng``); returns the number of output features."""
        raise NotImplementedError

    def param_shapes(self, input_dim: int) -> tuple[list, int]:
        """``(shapes of params, output_dim)`` for ``input_dim`` input features, without
        making anything (checkpoints check a file against them before reading it)."""
        raise NotImplementedError

    def forward(self, x, logits: bool = False, training: bool = False):
        """``(n, input_dim) -> (n, output_dim)``; with ``logits`` the activation is left out
        (for a loss that takes the logits of ``activation``); ``training`` is on in ``fit``
        (a Dropout layer drops units only then)."""
        raise NotImplementedError

    def backward(self, grad, logits: bool = False):
        """Given ``dL/doutput`` (``dL/dlogits`` with ``logits``), ``(n, output_dim)``, write
        ``grads`` and return ``dL/dx`` ``(n, input_dim)``, or None when
        ``needs_input_grad`` is off."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """``{"class": name, ...}``: the arguments that rebuild the layer (checkpoints)."""
        raise NotImplementedError

    def step_state(self) -> list:
        """Arrays of the backend, besides ``params``, that a training step changes and the
        next one reads (a counter, say): none by default."""
        return []

    def param_regularizers(self) -> list:
        """A :class:`dnn.regularizers.Regularizer` or None for each of ``params``, in order
        (a shorter list leaves the rest unregularized): none by default."""
        return []

    def _regularized(self) -> list:
        """``(param, grad, regularizer)`` of each regularized weight; none when frozen."""
        if not self.trainable:
            return []
        return [(param, grad, regularizer) for param, grad, regularizer
                in zip(self.params, self.grads, self.param_regularizers())
                if regularizer is not None]

    def regularization_loss(self):
        """The summed penalty of the regularized trainable weights, a 0-d array of the
        backend, or None when there is none."""
        penalties = [regularizer(param) for param, _, regularizer in self._regularized()]
        if not penalties:
            return None
        total = penalties[0]
        for penalty in penalties[1:]:
            total = total + penalty
        return array_namespace(penalties[0]).asarray(total)  # NumPy makes 0-d sums scalars

    def add_regularization_gradients(self) -> None:
        """Add each regularized trainable weight's penalty gradient into its ``grads`` array,
        in place (after ``backward``)."""
        for param, grad, regularizer in self._regularized():
            grad += regularizer.gradient(param)

    def get_weights(self) -> list:
        """Host copies of the layer's parameters."""
        return [self._backend.to_numpy(param) for param in self.params]

    def set_weights(self, weights) -> None:
        """Load host arrays of the parameters' shapes, in place."""
        dtype = self._backend.to_numpy(self.params[0]).dtype if self.params else np.float32
        values = checked_weights(weights, [param.shape for param in self.params], dtype,
                                 f"{self.name} weight")
        for param, value in zip(self.params, values):
            param[...] = self._backend.asarray(value)

    def _config(self, cls: str, **values) -> dict:
        """``values`` with the class and, if the user gave one, the name, and
        ``trainable: False`` for a frozen layer."""
        config = {"class": cls, **values}
        if self._given_name is not None:
            config["name"] = self._given_name
        if not self.trainable:
            config["trainable"] = False
        return config


class Dense(Layer):
    """``a = activation(x @ kernel + bias)``: ``(n, i) -> (n, units)``.

    ``kernel`` is ``(i, units)``, ``bias`` ``(units,)`` (none with ``use_bias=False``), drawn
    by Keras' initializers (``"glorot_uniform"`` and ``"zeros"`` by default); ``i`` is inferred
    from the first input, or declared by a first layer as Keras' ``input_shape=(784,)`` or
    ``input_dim=784``.  ``kernel_regularizer`` and ``bias_regularizer`` (anything
    :func:`dnn.regularizers.get` takes) add their penalties to the loss; Keras'
    ``activity_regularizer`` is not supported yet.  ``input_columns`` is the layer's record of
    which input columns its backend kept in the last forward product (the cpu backend leaves
    out the columns that are zero in the whole batch), read by the backward pass of the same
    batch.
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 input_shape=None, input_dim=None, name=None, trainable=True):
        if not is_int_at_least(units, 1) or units > MAX_UNITS:
            raise UsageError(f"Dense units must be an integer from 1 to {MAX_UNITS:,}, not "
                             f"{units!r}")
        if activity_regularizer is not None:
            raise UsageError("Dense: activity_regularizer is not supported yet; regularize "
                             "the weights with kernel_regularizer or bias_regularizer")
        super().__init__(name, _declared_features(input_shape, input_dim, "Dense"), trainable)
        self.units = self.output_dim = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.check(kernel_initializer)
        self.bias_initializer = initializers.check(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
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
        """``(units,)``, an array of the model's backend (None before ``build``, or without
        a bias)."""
        return self.params[1] if len(self.params) > 1 else None

    def build(self, input_dim, backend, rng, dtype) -> int:
        """Draw the weights on the host with ``rng``, move them to ``backend``, and allocate
        their gradients."""
        self._backend, self._buffers = backend, Buffers(backend)
        shapes, _ = self.param_shapes(input_dim)
        names = (self.kernel_initializer, self.bias_initializer)
        self.params = [backend.asarray(initializers.draw(name, rng, shape, dtype))
                       for name, shape in zip(names, shapes)]
        self.grads = [backend.empty(param.shape, dtype) for param in self.params]
        # Without a bias the kernels still add one: zeros, with a gradient no one reads.
        self._zero_bias = None if self.use_bias else backend.asarray(np.zeros(self.units, dtype))
        self.built = True
        return self.units

    def param_shapes(self, input_dim):
        shapes = [(input_dim, self.units)] + ([(self.units,)] if self.use_bias else [])
        return shapes, self.units

    def param_regularizers(self) -> list:
        return [self.kernel_regularizer] + ([self.bias_regularizer] if self.use_bias else [])

    def _kernel_and_bias(self):
        return self.params[0], self.params[1] if self.use_bias else self._zero_bias

    def forward(self, x, logits=False, training=False):
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
        grad_bias = (self.grads[1] if self.use_bias else
                     self._buffers("unused_grad_bias", (self.units,), x.dtype))
        backend.dense_backward(x, grad_z, self.params[0], self.grads[0], grad_bias, grad_x,
                               self.input_columns)
        return grad_x

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("use_bias", self.use_bias, True),
            ("kernel_initializer", self.kernel_initializer, "glorot_uniform"),
            ("bias_initializer", self.bias_initializer, "zeros"),
            ("kernel_regularizer", regularizers.serialize(self.kernel_regularizer), None),
            ("bias_regularizer", regularizers.serialize(self.bias_regularizer), None))
            if value != default}
        return self._config("Dense", units=self.units, activation=self.activation.name,
                            **options)

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"


class _Passthrough(Layer):
    """A layer without parameters whose output has its input's features."""

    def build(self, input_dim, backend, rng, dtype) -> int:
        self._backend, self._buffers = backend, Buffers(backend)
        self.output_dim = input_dim
        self.built = True
        return input_dim

    def param_shapes(self, input_dim):
        return [], input_dim

    def forward(self, x, logits=False, training=False):
        return x

    def backward(self, grad, logits=False):
        return grad if self.needs_input_grad else None


class Input(_Passthrough):
    """Keras' ``Input(shape=(784,))``: declares the model's input features; passes the
    inputs on unchanged."""

    def __init__(self, shape, name=None):
        super().__init__(name, _declared_features(shape, None, "Input"))
        self.shape = as_shape(shape)

    def get_config(self) -> dict:
        return self._config("Input", shape=list(self.shape))

    def __repr__(self) -> str:
        return f"Input(shape={self.shape})"


class Flatten(_Passthrough):
    """Keras' ``Flatten()``: inputs ``(n, ...)`` as ``(n, features)``.  The model flattens
    its inputs already, so this layer only passes them on (and may declare their shape)."""

    def __init__(self, input_shape=None, name=None, trainable=True):
        super().__init__(name, _declared_features(input_shape, None, "Flatten"), trainable)

    def get_config(self) -> dict:
        return self._config("Flatten")

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


class Dropout(_Passthrough):
    """Keras' inverted dropout: in ``fit``, each unit of the input is zeroed with probability
    ``rate`` and the others scaled by ``1 / (1 - rate)``; outside ``fit`` it passes the inputs
    on.  For one seed (the model's, or ``seed``) every backend drops the same units."""

    def __init__(self, rate: float, seed=None, name=None, trainable=True):
        super().__init__(name, trainable=trainable)
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise UsageError(f"Dropout rate must be a number in [0, 1), not {rate!r}")
        if seed is not None and not is_int_at_least(seed, 0):
            raise UsageError(f"Dropout seed must be a non-negative integer, not {seed!r}")
        self.rate, self.seed = float(rate), seed
        self._mask = None

    def build(self, input_dim, backend, rng, dtype) -> int:
        xp = backend.xp
        seed = int(rng.integers(1 << 32)) if self.seed is None else self.seed % (1 << 32)
        self._seed = xp.asarray(seed, dtype=xp.uint32)
        self._step = xp.zeros((), dtype=xp.uint32)  # counts the training passes, on the device
        self._threshold = round(self.rate * (1 << 24))
        self._index_shapes = set()  # the shapes whose element indices are in their buffer
        return super().build(input_dim, backend, rng, dtype)

    def forward(self, x, logits=False, training=False):
        if not training or self.rate == 0:
            self._mask = None
            return x
        xp = self._backend.xp
        index = self._buffers("index", x.shape, xp.uint32)
        if x.shape not in self._index_shapes:
            index[...] = xp.reshape(xp.arange(math.prod(x.shape), dtype=xp.uint32), x.shape)
            self._index_shapes.add(x.shape)
        self._step += 1
        hashed = _lowbias32(index * GOLDEN + self._step * STEP_MIX + self._seed)
        mask = self._buffers("mask", x.shape, x.dtype)
        mask[...] = xp.astype((hashed >> 8) >= self._threshold, x.dtype) / (1 - self.rate)
        out = self._buffers("output", x.shape, x.dtype)
        out[...] = x * mask
        self._mask = mask
        return out

    def step_state(self) -> list:
        return [self._step]

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        if self._mask is not None:
            grad[...] = grad * self._mask
        return grad

    def get_config(self) -> dict:
        return self._config("Dropout", rate=self.rate,
                            **({} if self.seed is None else {"seed": self.seed}))

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"


class Activation(_Passthrough):
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
        return self._config("Activation", activation=self.activation.name)

    def __repr__(self) -> str:
        return f"Activation({self.activation.name!r})"


class Reshape(_Passthrough):
    """Keras' ``Reshape(target_shape)``: inputs ``(n, ...)`` as ``(n, *target_shape)``, where
    one size of ``target_shape`` may be -1 (inferred from the others).  The model holds every
    batch flattened, as ``(n, features)``, so this layer only checks, when it is built, that
    ``target_shape`` holds its input's features (a UsageError naming both shapes if not), and
    passes the inputs on unchanged."""

    def __init__(self, target_shape, name=None, trainable=True):
        super().__init__(name, trainable=trainable)
        shape = as_shape(target_shape)
        if (not shape or not all(is_int_at_least(size, -1) and size != 0 for size in shape)
                or shape.count(-1) > 1):
            raise UsageError(f"Reshape target_shape must be positive sizes with at most one "
                             f"-1, such as (28, 28) or (-1, 4), not {target_shape!r}")
        self.target_shape = tuple(int(size) for size in shape)

    def build(self, input_dim, backend, rng, dtype) -> int:
        known = math.prod(size for size in self.target_shape if size != -1)
        inferred = -1 in self.target_shape
        if input_dim % known if inferred else input_dim != known:
            why = (f"{input_dim} features are not a multiple of {known}" if inferred else
                   f"it holds {known} features, not {input_dim}")
            raise UsageError(f"Reshape cannot give inputs of shape ({input_dim},) the shape "
                             f"{self.target_shape}: {why}")
        return super().build(input_dim, backend, rng, dtype)

    def get_config(self) -> dict:
        return self._config("Reshape", target_shape=list(self.target_shape))

    def __repr__(self) -> str:
        return f"Reshape({self.target_shape})"


LAYERS = {cls.__name__: cls for cls in (Activation, Dense, Dropout, Flatten, Input, Reshape)}


def from_config(config: dict):
    """A layer from its :meth:`Layer.get_config` dict (as stored in checkpoints)."""
    config = dict(config)
    cls = LAYERS.get(config.pop("class", None))
    if cls is None:
        raise UsageError(f"unknown layer class in {config!r}")
    trainable = config.pop("trainable", True)  # every layer has the flag, Input included
    layer = cls(**config)
    layer.trainable = trainable
    return layer
