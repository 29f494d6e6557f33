"""The layer protocol: what :class:`dnn.Sequential` needs of a layer, and the setup every layer
shares (names, weights and their gradients, shapes, regularization, ``trainable``).

Shapes are a sample's, without the batch axis, as Keras' ``input_shape``: ``(784,)`` for a
flat image, ``(28, 28, 1)`` for one channels-last; a batch is ``(n, *shape)``.

Who owns which array:

- a layer makes its weights in ``build`` with :meth:`Layer.add_weight` (they live as long as
  the layer and are changed in place: trained ones by the optimizer, moving statistics by the
  layer itself); the gradient of each trained weight (``grads``, same order as ``params``),
  its output and its input gradient live in its own :class:`dnn.buffers.Buffers`;
- ``forward`` returns the layer's output, which the model reads only until the layer's next
  ``forward`` (a built-in layer writes it into its own buffer: fixed arrays in, fixed arrays
  out, what a GPU can capture and replay); it never writes into its inputs, which other
  layers of a graph may take too;
- ``backward`` writes ``grads`` and returns the input gradient, read only until its next
  ``backward``; it may overwrite the ``grad`` it is given (the next layer's input gradient,
  or the model's loss gradient, which no one reads afterwards);
- a layer that takes several inputs (a merge layer, ``takes_several`` True) is given a list of
  them (of batches in ``forward``, of sample shapes in ``build`` and
  ``compute_output_shape``), and its ``backward`` returns a list of their gradients.

The model checks what each layer gives it: an output or an input gradient that is not an
array of the model's backend, rows, dtype and declared shape is a UsageError naming the layer.

Training (Keras' ``trainable``, and weight regularizers, :mod:`dnn.regularizers`):

- ``params`` are the weights the optimizer trains (each with its gradient in ``grads``);
  ``state_weights`` the ones a layer updates itself in training (BatchNormalization's moving
  statistics).  ``weights`` lists both, Keras' order: what ``get_weights`` returns and
  checkpoints hold.
- ``layer.trainable`` (True by default, settable at any time) says whether the model hands the
  layer's ``params`` to the optimizer (none while the model itself is frozen,
  ``model.trainable = False``); a frozen layer's ``backward`` still runs (the layers before it
  need its input gradient).
- ``layer.regularization_loss()`` is the summed penalty of the layer's regularized trainable
  weights, a 0-d array of the backend, or None when there is none (a frozen layer has none,
  as in Keras); the model adds those of the layers it trains to the batch's mean loss.
- ``layer.add_regularization_gradients()`` adds each penalty's gradient into the weight's
  gradient in ``grads``, in place; the model calls it after ``backward``, before the
  optimizer's update.
- Both compute with the backend's array namespace on the layer's own arrays and read nothing
  on the host, so that a captured training step replays them.  ``trainable`` and the
  regularizers' factors are read in Python: a step captured before one changes keeps the old
  value, so a change is counted (:mod:`dnn.host_settings`) and the model captures its steps
  anew.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import re
import reprlib
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from dnn import activations, host_settings, initializers, regularizers
from dnn.backends import current_backend, get_backend
from dnn.buffers import Buffers
from dnn.errors import ArgumentTypeError, OutOfMemoryError, UsageError
from dnn.optimizers.schedules import array_namespace
from dnn.saving.registry import get_registered_name
from dnn.utils import (as_shape, checked_weights, element_count, is_int_at_least,
                       missing_attribute, model_rng, user_stacklevel)

MAX_UNITS = 2**31 - 1  # past this no array library indexes a layer's outputs


def snake_case(name: str) -> str:
    """A class name as Keras names its instances: ``BatchNormalization`` ->
    ``batch_normalization``, ``MaxPooling2D`` -> ``max_pooling2d`` (Keras' ``to_snake_case``)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# Keras arguments dnn does not support yet, each with the value that asks for nothing: a
# layer takes them so that a Keras script that gives that value runs, and refuses any other.
KERAS_ONLY = {"kernel_constraint": None, "bias_constraint": None, "gamma_regularizer": None,
              "beta_regularizer": None, "gamma_constraint": None, "beta_constraint": None,
              "dtype": None}


def check_keras_only(layer: str, arguments: dict, keras_only: dict = KERAS_ONLY) -> None:
    """Refuse (UsageError naming it) an argument of ``arguments`` that is not one of
    ``keras_only`` (Keras' arguments dnn takes only at their defaults, given there), or that
    is one but asks for something dnn does not do yet."""
    for name, value in arguments.items():
        if name not in keras_only:
            raise UsageError(f"{layer} has no argument {name!r}")
        if value is not keras_only[name] and value != keras_only[name]:
            what = ("the model's dtype (Sequential(dtype=...)) is every layer's"
                    if name == "dtype" else f"leave it {keras_only[name]}")
            raise UsageError(f"{layer}: {name} is not supported yet; {what}")


def declared_shape(input_shape, input_dim, layer: str) -> tuple | None:
    """The sample shape a first layer declares (Keras' ``input_shape`` without the batch
    size, or ``input_dim`` as ``(input_dim,)``), or None; UsageError naming ``layer`` for
    anything but positive sizes."""
    if input_shape is not None and input_dim is not None:
        raise UsageError(f"{layer}: give input_shape or input_dim, not both")
    if input_dim is not None:
        input_shape = (input_dim,)
    if input_shape is None:
        return None
    shape = as_shape(input_shape)
    if element_count(shape) is None:
        raise UsageError(f"{layer}: input_shape must be positive sizes such as (784,) or "
                         f"(28, 28, 1), not {input_shape!r}")
    return tuple(int(size) for size in shape)


@dataclass(frozen=True)
class WeightSpec:
    """One weight a layer makes in ``build``: its attribute ``name`` (``kernel``), ``shape``,
    the :mod:`dnn.initializers` name that draws it, whether the optimizer trains it, and its
    :class:`dnn.regularizers.Regularizer` (or None)."""

    name: str
    shape: tuple
    initializer: str
    trainable: bool = True
    regularizer: object = None


class Layer:
    """The protocol of a layer in :class:`dnn.Sequential` (see the module docstring).

    A subclass gives ``compute_output_shape`` (the default keeps the input's shape) and, if it
    has weights, ``weight_specs`` (what the default ``build`` makes, in order, and what
    checkpoints check a file against); ``forward``, ``backward`` and ``get_config``.  A layer
    that makes its weights itself overrides ``build`` and calls :meth:`add_weight`.

    ``activation`` is the Activation a loss may take the logits of, or None;
    ``declared_input_shape``, the sample shape a first layer declares (Keras'
    ``input_shape``), or None; ``input_shape`` and ``output_shape`` are known once built.
    """

    activation = None
    takes_several = False  # a merge layer (Add, Concatenate) takes a list of inputs
    takes_model_inputs = False  # a layer whose inputs are the model's alone (Embedding)
    # The index of the training batch's first row in the global batch (data-parallel: this
    # rank's share), set by the model before each training pass, so that what a layer draws
    # per row (Dropout's masks) follows the row and not the rank.
    first_row = 0
    global_rows = None  # the rows of that global batch (None: the batch is all of them)
    ranks = None  # during a data-parallel training pass: the communicator of its sums
    name_prefix = None  # the default names' stem, if not the class name in snake case
    _trainable = True  # also for a subclass that does not call Layer.__init__
    _made: dict = {}  # the next default name's number, by kind: Keras' dense, dense_1, ...

    def __new__(cls, *args, **kwargs):
        """A new layer, with the arguments it is made with kept for the default
        :meth:`get_config` (as Keras 3 keeps them): by name, NumPy numbers as Python's; those
        given by position alone (``*args``, positional-only) cannot be given back by name,
        and are noted in ``_unnamed``."""
        layer = super().__new__(cls)
        signature = inspect.signature(cls)
        try:
            arguments = signature.bind(*args, **kwargs).arguments
        except TypeError:  # __init__ says what is wrong; a copy is made without arguments
            arguments = {}
        layer._arguments, layer._unnamed = {}, []
        for name, value in arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                layer._arguments.update(value)
            elif kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                layer._unnamed.append(name)
            else:
                layer._arguments[name] = value
        layer._arguments = {name: value.item() if isinstance(value, np.generic) else value
                            for name, value in layer._arguments.items()}
        return layer

    def __init__(self, name=None, input_shape=None, trainable=True):
        if name is not None and not isinstance(name, str):
            raise UsageError(f"a layer's name must be a string, not {reprlib.repr(name)}")
        kind = self.name_prefix or snake_case(type(self).__name__)
        self._given_name = name
        if name is None:
            count = Layer._made.get(kind, 0)
            name = kind if count == 0 else f"{kind}_{count}"
        reserve_names([name], kind)
        self.name = name
        self.declared_input_shape = input_shape
        self.input_shape = self.output_shape = None
        self.params: list = []
        self.grads: list = []
        self.state_weights: list = []
        self._regularizers: list = []
        self._names: dict = {}  # id of a weight -> the name it was made with
        self.needs_input_grad = True  # the model turns it off for its first layer
        self.in_model = False  # set by the one Sequential that holds it
        self.built = False
        self.trainable = trainable
        self._backend = self._buffers = self._rng = self._dtype = None

    def __getattr__(self, name: str):
        """Only for an attribute not found (:func:`dnn.utils.missing_attribute`)."""
        return missing_attribute(self, name, initialised="params" in vars(self))

    @property
    def trainable(self) -> bool:
        """Whether the model trains the layer's ``params`` (Keras' flag; see the module
        docstring)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        if not (isinstance(value, (bool, np.bool_))
                or isinstance(value, numbers.Integral) and value in (0, 1)):  # as bool() reads
            raise ArgumentTypeError(f"{getattr(self, 'name', type(self).__name__)} trainable "
                                    f"must be True or False, not {reprlib.repr(value)}")
        if bool(value) != self._trainable and getattr(self, "in_model", False):
            host_settings.changed()  # a captured step of its model reads it on the host
        self._trainable = bool(value)

    @property
    def trainable_weights(self) -> list:
        """``params`` when ``trainable``, else none (arrays of the backend)."""
        return list(self.params) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        """``state_weights``, and ``params`` too when frozen (arrays of the backend)."""
        return ([] if self.trainable else list(self.params)) + list(self.state_weights)

    @property
    def weights(self) -> list:
        """Every weight, trained or not: ``params`` then ``state_weights`` (arrays of the
        backend), the order of :meth:`get_weights`."""
        return [*self.params, *self.state_weights]

    @property
    def backend(self):
        """The :class:`dnn.backends.Backend` the layer is built on (None before)."""
        return self._backend

    @property
    def xp(self):
        """The array namespace of the layer's backend (NumPy, CuPy, ...), once built: what a
        layer computes its passes with."""
        if self._backend is None:
            raise UsageError(f"{self.name} is not built yet: it has no backend")
        return self._backend.xp

    @property
    def output_features(self) -> int | None:
        """The number of features of one output sample (the product of ``output_shape``),
        known once built."""
        return None if self.output_shape is None else math.prod(self.output_shape)

    # -- shapes and building -------------------------------------------------------------
    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The sample shape of the output for inputs of sample shape ``input_shape`` (the
        input's by default); UsageError naming the layer where it cannot take them."""
        return tuple(input_shape)

    def weight_specs(self, input_shape: tuple) -> list[WeightSpec]:
        """The weights the layer makes for inputs of ``input_shape``, in :attr:`weights`
        order: none by default."""
        return []

    def param_shapes(self, input_shape: tuple) -> tuple[list, tuple]:
        """``(shapes of weights, output shape)`` for inputs of ``input_shape`` (checkpoints
        check a file against them before reading it): from :meth:`weight_specs`, without making
        anything, for dnn's own layers (they make exactly those); for a class of one's own,
        which may make any in its ``build``, from a copy of it built on the host."""
        input_shape = self._taken_shape(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        if not is_dnns_own(type(self)):
            built = copy.copy(self)
            built.build_on(input_shape, get_backend("cpu"), np.random.default_rng(0),
                           np.float32)
            return [tuple(weight.shape) for weight in built.weights], output_shape
        return [spec.shape for spec in self.weight_specs(input_shape)], output_shape

    def _taken_shape(self, input_shape):
        """``input_shape`` as the layer takes it: a tuple, or for a layer that takes several
        inputs a list of them (as Keras gives a merge layer)."""
        if self.takes_several:
            return [tuple(shape) for shape in input_shape]
        return tuple(input_shape)

    def build_on(self, input_shape: tuple, backend, rng: np.random.Generator, dtype) -> tuple:
        """Make the layer for inputs of ``input_shape`` on ``backend`` (drawing any random
        weights on the host from ``rng``, in ``dtype``): what the model calls.  Returns the
        output shape."""
        input_shape = self._taken_shape(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self._backend, self._buffers, self._rng, self._dtype = (
            backend, Buffers(backend), rng, np.dtype(dtype))
        self.params, self.grads, self.state_weights, self._regularizers = [], [], [], []
        self._names, self._built_by_call = {}, False
        self.build(input_shape)
        self.input_shape, self.output_shape = input_shape, output_shape
        self.built = True
        return output_shape

    def build(self, input_shape: tuple) -> None:
        """Make the weights for inputs of ``input_shape`` (Keras' ``build``): by default
        those of :meth:`weight_specs`, each with :meth:`add_weight`."""
        for spec in self.weight_specs(input_shape):
            self.add_weight(spec.shape, spec.initializer, spec.trainable, spec.regularizer,
                            spec.name)

    def add_weight(self, shape, initializer="zeros", trainable: bool = True,
                   regularizer=None, name=None):
        """A new weight of ``shape`` drawn by ``initializer`` (a :mod:`dnn.initializers`
        name) from the model's seeded generator, in the model's dtype, on its backend; a
        trained one (in ``params``, its gradient buffer in ``grads``) or one the layer updates
        itself (in ``state_weights``), called ``name`` (``kernel``: TensorBoard shows
        ``sequential/dense/kernel``; ``weight_<index>`` by default).  Called from ``build``;
        returns the weight."""
        if self._backend is None:
            raise UsageError(f"{self.name}.add_weight was called before the layer is built "
                             "(from __init__?): dnn makes a layer's weights in its "
                             "build(input_shape), on the model's backend and dtype")
        shape = tuple(int(size) for size in shape)
        if math.prod(shape) * self._dtype.itemsize > sys.maxsize:  # past what NumPy can index
            raise OutOfMemoryError(f"{self.name}: a weight of shape {shape} needs more memory "
                                   "than any machine has")
        host = initializers.draw(initializers.check(initializer), self._rng, shape,
                                 self._dtype)
        weight = self._backend.asarray(host)
        if trainable:
            self.params.append(weight)
            self.grads.append(self._backend.empty(shape, self._dtype))
            self._regularizers.append(regularizer)
        else:
            self.state_weights.append(weight)
        self._names[id(weight)] = name
        return weight

    def weight_name(self, weight) -> str:
        """The name ``weight`` (one of :attr:`weights`) was made with, else
        ``weight_<index>`` (its place in :attr:`weights`)."""
        index = next(index for index, own in enumerate(self.weights) if own is weight)
        return getattr(self, "_names", {}).get(id(weight)) or f"weight_{index}"

    # -- a call on a batch (Keras' layer(x)) -------------------------------------------------
    def __call__(self, inputs, training: bool | None = None, **keras_only):
        """Keras' ``layer(x)``: the layer's output for the batch ``inputs`` ``(n,
        *input_shape)`` (host or backend arrays; a merge layer takes a list of them), as a
        new host array ``(n, *output_shape)``; ``training`` True runs it as ``fit`` does
        (Dropout drops units, BatchNormalization uses the batch's statistics and moves its
        own).  A layer not built yet is built for the batch's sample shape (its
        ``input_shape``, if declared), on the current backend
        (:func:`dnn.backends.use_backend`, cpu by default), its weights drawn in float32 from
        the stream of :func:`dnn.utils.set_random_seed`; a model that holds it later keeps
        them where it builds it alike (:meth:`keep_call_build`).
        On a ``keras.Input``, or on what such a call gave, it computes nothing and gives a
        :class:`dnn.models.functional.SymbolicTensor` for ``keras.Model(inputs, outputs)``
        (Keras' functional API), and takes no ``training``: the model runs its layers as
        ``fit``, ``evaluate`` and ``predict`` ask."""
        from dnn.models.functional import call_on_symbolic, is_symbolic
        from dnn.trainers.data import host_array  # the trainers import the layers

        if keras_only:
            raise UsageError(f"{self.name} was called with {', '.join(sorted(keras_only))}: "
                             "dnn's layers take a batch and training= alone")
        if training is not None and not isinstance(training, (bool, np.bool_)):
            raise UsageError(f"{self.name}'s training must be True or False, not "
                             f"{reprlib.repr(training)}")
        several = isinstance(inputs, (list, tuple))
        if is_symbolic(inputs) or (several and any(is_symbolic(item) for item in inputs)):
            if training is not None:
                raise UsageError(f"{self.name} was called on keras.Input with training="
                                 f"{training}: dnn's models run every layer as fit, evaluate "
                                 "and predict ask (training=True in fit alone)")
            return call_on_symbolic(self, inputs)
        if self.takes_several != several or (several and not inputs):
            if self.takes_several:
                raise UsageError(f"{self.name} merges a list of batches, "
                                 f"{type(self).__name__}()([x1, x2])")
            if any(np.ndim(item) >= 2 for item in inputs):
                raise UsageError(f"{self.name} was called on a list of {len(inputs)} inputs: "
                                 "a layer takes one (merge layers, such as Add or "
                                 "Concatenate, take several)")
        backend = self._backend or current_backend()
        batches = [host_array(item, f"{self.name}'s inputs", backend)
                   for item in (inputs if self.takes_several else [inputs])]
        for x in batches:
            if x.ndim < 2 or x.shape[0] == 0:
                raise UsageError(f"{self.name}'s inputs must be a non-empty batch (n, *sample "
                                 f"shape), not of shape {x.shape}")
            if x.shape[0] != batches[0].shape[0]:
                raise UsageError(f"{self.name}'s inputs must be batches of as many rows, not "
                                 f"of shapes {', '.join(str(x.shape) for x in batches)}")
        shapes = [x.shape[1:] for x in batches]
        shape = shapes if self.takes_several else shapes[0]
        expected = self.input_shape if self.built else self.declared_input_shape
        if expected is not None and _sample_shapes(shape) != _sample_shapes(expected):
            raise UsageError(f"{self.name} is {'built' if self.built else 'declared'} for "
                             f"samples of shape {_sample_shapes(expected)}, not "
                             f"{_sample_shapes(shape)}")
        if not self.built:
            self._build_for_call(shape, backend)
        device = [backend.asarray(x.astype(self._dtype, copy=False)) for x in batches]
        output = self.forward(device if self.takes_several else device[0],
                              training=bool(training))
        return backend.to_numpy(output)  # a copy: the output buffer is the layer's

    def _build_for_call(self, input_shape: tuple, backend) -> None:
        """Build the layer as its first call does (:meth:`__call__`); a weight too large for
        the machine is an OutOfMemoryError naming the layer."""
        try:
            self.build_on(input_shape, backend, model_rng(None), np.float32)
        except MemoryError:
            self.built, self._backend = False, None
            raise OutOfMemoryError(f"{self.name}: its weights for samples of shape "
                                   f"{input_shape} need more memory than this machine "
                                   "gives") from None
        self._built_by_call = True

    def keep_call_build(self, input_shape: tuple, backend, dtype) -> bool:
        """For a model building the layer: True where a call built it (not a model) for
        samples of ``input_shape`` on ``backend`` in ``dtype``, whose weights the model then
        keeps, as Keras keeps those of a layer built before it joins a model; from then on
        the model builds it.  A call's build of another shape, backend or dtype is given up,
        with a warning: the model draws the weights anew."""
        if not getattr(self, "_built_by_call", False):
            return False
        self._built_by_call = False
        if (self._backend is backend
                and _sample_shapes(self.input_shape) == _sample_shapes(input_shape)
                and self._dtype == np.dtype(dtype)):
            return True
        if not self.weights:  # nothing drawn to lose
            return False
        warnings.warn(f"{self.name} was built by a call for samples of shape "
                      f"{self.input_shape} ({self._dtype}, {self._backend.name} backend); the "
                      f"model builds it for {tuple(input_shape)} ({np.dtype(dtype)}, "
                      f"{backend.name} backend), drawing its weights anew", UserWarning,
                      stacklevel=user_stacklevel())
        return False

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x, logits: bool = False, training: bool = False):
        """``(n, *input_shape) -> (n, *output_shape)``; with ``logits`` the activation is
        left out (for a loss that takes the logits of ``activation``); ``training`` is on in
        ``fit`` (Dropout drops units, BatchNormalization uses the batch's statistics)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(self, x, "
                                  "logits=False, training=False)")

    def backward(self, grad, logits: bool = False):
        """Given ``dL/doutput`` (``dL/dlogits`` with ``logits``), ``(n, *output_shape)``,
        write ``grads`` and return ``dL/dx`` ``(n, *input_shape)``, or None when
        ``needs_input_grad`` is off."""
        raise NotImplementedError(f"{type(self).__name__} must implement backward(self, grad, "
                                  "logits=False) to be trained")

    def get_config(self) -> dict:
        """``{"class": name, ...}``: the arguments that rebuild the layer (checkpoints, JSON).
        The default, as Keras 3's, gives the class (:func:`dnn.saving.get_registered_name`),
        the name, ``trainable``, and the arguments the layer was made with, those a JSON
        file can hold as they are (numbers, strings, lists, ...); a layer that keeps another
        (an object, an array) returns it itself, ``{**super().get_config(), "init":
        name_of(self.init)}``, and without such a ``get_config`` is refused, naming it."""
        given = self._saved_arguments()
        unsaved = [*getattr(self, "_unnamed", []),
                   *(name for name, value in given.items() if not _json_able(value))]
        if type(self).get_config is Layer.get_config and unsaved:
            kind, name = type(self).__name__, unsaved[0]
            if name in given:
                raise UsageError(f"{kind}'s argument {name}={reprlib.repr(given[name])} cannot "
                                 f"be saved as it is: give {kind} a get_config that returns it "
                                 f"as numbers or text, {{**super().get_config(), {name!r}: ...}}")
            raise UsageError(f"{kind}'s argument {name} is given by position alone: give {kind} "
                             f"a get_config that returns it and a from_config that passes it")
        return self._config()  # with the arguments JSON holds, for a class of one's own

    def _saved_arguments(self) -> dict:
        """The arguments the layer was made with, by name, but those every layer has (name,
        input_shape, trainable: :meth:`_config` writes them)."""
        return {name: value for name, value in getattr(self, "_arguments", {}).items()
                if name not in ("name", "input_shape", "trainable")}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """The layer :meth:`get_config`'s dict describes, less its ``"class"`` and
        ``trainable`` (:func:`dnn.layers.from_config` handles those): ``cls(**config)``; a
        class of one's own whose ``__init__`` takes no ``name`` is given it afterwards."""
        parameters = inspect.signature(cls).parameters.values()
        if "name" in config and not any(
                parameter.name == "name" or parameter.kind is inspect.Parameter.VAR_KEYWORD
                for parameter in parameters):
            config = dict(config)
            name = config.pop("name")
            layer = cls(**config)
            layer.name = layer._given_name = name
            return layer
        return cls(**config)

    def step_state(self) -> list:
        """Arrays of the backend, besides ``params``, that a training step changes and the
        next one reads: ``state_weights`` by default (a layer adds counters and the like)."""
        return list(self.state_weights)

    # -- regularization ------------------------------------------------------------------
    def param_regularizers(self) -> list:
        """A :class:`dnn.regularizers.Regularizer` or None for each of ``params``, in order:
        those given to :meth:`add_weight`."""
        return list(self._regularizers)

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

    # -- weights on the host ---------------------------------------------------------------
    def count_params(self) -> int:
        """The number of the layer's weights' elements, trained or not (once built)."""
        if not self.built:
            raise UsageError(f"{self.name} has no weights yet: build the model first")
        return sum(math.prod(weight.shape) for weight in self.weights)

    def get_weights(self) -> list:
        """Host copies of the layer's :attr:`weights`."""
        return [self._backend.to_numpy(weight) for weight in self.weights]

    def set_weights(self, weights) -> None:
        """Load host arrays of the :attr:`weights`' shapes, in place."""
        own = self.weights
        dtype = self._backend.to_numpy(own[0]).dtype if own else np.float32
        values = checked_weights(weights, [weight.shape for weight in own], dtype,
                                 f"{self.name} weight")
        self.check_weight_values(values)
        for weight, value in zip(own, values):
            weight[...] = self._backend.asarray(value)

    def check_input_values(self, x: np.ndarray, what: str) -> None:
        """Refuse (UsageError naming ``what``) host data ``x`` ``(N, *input_shape)`` for one
        of the model's inputs that this layer takes, whose values it cannot take; any by
        default (an Embedding takes only indices of its embeddings)."""

    def check_weight_values(self, values: list) -> None:
        """Refuse (UsageError naming the layer) host arrays for :attr:`weights`, in that order
        and of their shapes, that the layer cannot hold; none by default (BatchNormalization
        refuses a negative moving variance).  Called before any weight is written."""

    def _config(self, **values) -> dict:
        """``values`` with the class (the name configs give it,
        :func:`dnn.saving.get_registered_name`: a subclass of a built-in layer is its own
        class, never taken for the built-in), the layer's name (as Keras 3 saves it), and
        ``trainable: False`` for a frozen layer."""
        config = {"class": get_registered_name(type(self)), **values}
        if not is_dnns_own(type(self)):
            # a class of one's own keeps the arguments of its __init__ that a get_config it
            # inherits (from Dense, say) does not know
            for name, value in self._saved_arguments().items():
                if name not in config and _json_able(value):
                    config[name] = value
        config["name"] = self.name
        if not self.trainable:
            config["trainable"] = False
        return config


def reserve_names(names, kind: str | None = None) -> None:
    """Never give by default a name of ``names`` that has a default name's form (``dense``,
    ``dense_3``): the next default name of that kind (of ``kind`` alone, where given) is
    numbered past it, as a loaded model's layers keep the names they had."""
    for name in names:
        found = re.fullmatch(r"(.+?)(?:_(\d{1,12}))?", name) if isinstance(name, str) else None
        if found and (kind is None or found.group(1) == kind):
            stem, number = found.group(1), int(found.group(2) or 0)
            Layer._made[stem] = max(Layer._made.get(stem, 0), number + 1)


def _sample_shapes(shape) -> tuple:
    """A sample shape, or a merge layer's list of them, as tuples (to compare them)."""
    return tuple(_sample_shapes(item) if isinstance(item, (list, tuple)) else int(item)
                 for item in shape)


def is_dnns_own(cls) -> bool:
    """Whether layer class ``cls`` is one of dnn's own (a subclass of one of them, written
    elsewhere, is not): such a layer makes exactly its ``weight_specs``, and its
    ``get_config`` makes it again, as dnn's tests check."""
    return cls.__module__.startswith("dnn.layers.")


def _json_able(value) -> bool:
    """Whether a JSON file holds ``value`` as it is (a number, a string, a list of them...)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class KernelLayer(Layer):
    """A layer of ``activation(inputs . kernel + bias)`` over ``units`` outputs (Dense's
    units, Conv2D's filters): the arguments, weights and config options they share.  A
    subclass gives the kernel's shape for its inputs (:meth:`kernel_shape`); ``count_name``
    names ``units`` in errors."""

    def __init__(self, units, count_name: str, *, activation, use_bias, kernel_initializer,
                 bias_initializer, kernel_regularizer, bias_regularizer, activity_regularizer,
                 input_shape, name, trainable):
        kind = type(self).__name__
        if not is_int_at_least(units, 1) or units > MAX_UNITS:
            raise UsageError(f"{kind} {count_name} must be an integer from 1 to "
                             f"{MAX_UNITS:,}, not {units!r}")
        if activity_regularizer is not None:
            raise UsageError(f"{kind}: activity_regularizer is not supported yet; regularize "
                             "the weights with kernel_regularizer or bias_regularizer")
        super().__init__(name, input_shape, trainable)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.check(kernel_initializer)
        self.bias_initializer = initializers.check(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self._zero_bias = None

    @property
    def kernel(self):
        """The kernel, :meth:`kernel_shape` (Dense's ``(i, units)``, Conv2D's
        ``(kh, kw, c, filters)``), an array of the model's backend (None before ``build``)."""
        return self.params[0] if self.params else None

    @property
    def bias(self):
        """``(units,)``, an array of the model's backend (None before ``build``, or without
        a bias)."""
        return self.params[1] if len(self.params) > 1 else None

    def kernel_shape(self, input_shape: tuple) -> tuple:
        """The kernel's shape for inputs of sample shape ``input_shape``."""
        raise NotImplementedError

    def weight_specs(self, input_shape):
        kernel = WeightSpec("kernel", self.kernel_shape(input_shape), self.kernel_initializer,
                            regularizer=self.kernel_regularizer)
        bias = WeightSpec("bias", (self.units,), self.bias_initializer,
                          regularizer=self.bias_regularizer)
        return [kernel, bias] if self.use_bias else [kernel]

    def build(self, input_shape):
        super().build(input_shape)
        # Without a bias the kernels still add one: zeros, with a gradient no one reads.
        self._zero_bias = (None if self.use_bias else
                           self._backend.asarray(np.zeros(self.units, self._dtype)))

    def _kernel_and_bias(self):
        return self.params[0], self.params[1] if self.use_bias else self._zero_bias

    def _grad_bias(self):
        """Where the bias' gradient goes: its ``grads`` array, or without a bias a buffer no
        one reads."""
        if self.use_bias:
            return self.grads[1]
        return self._buffers("unused_grad_bias", (self.units,), self._dtype)

    def _kernel_options(self) -> dict:
        """The config entries of the shared arguments that differ from Keras' defaults."""
        return {key: value for key, value, default in (
            ("use_bias", self.use_bias, True),
            ("kernel_initializer", self.kernel_initializer, "glorot_uniform"),
            ("bias_initializer", self.bias_initializer, "zeros"),
            ("kernel_regularizer", regularizers.serialize(self.kernel_regularizer), None),
            ("bias_regularizer", regularizers.serialize(self.bias_regularizer), None))
            if value != default}


class Passthrough(Layer):
    """A layer without weights whose output is its input (subclasses change either)."""

    def forward(self, x, logits=False, training=False):
        return x

    def backward(self, grad, logits=False):
        return grad if self.needs_input_grad else None
