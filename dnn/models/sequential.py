"""The Sequential model: a stack of layers, its weights and its configuration.

Training (``compile``, ``fit``, ``evaluate``, ``predict``) comes from
:class:`dnn.trainers.Trainer`, as Keras 3's ``Model`` inherits its ``Trainer``; saving from
:mod:`dnn.saving` (which never imports the models back).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import warnings

import numpy as np

from dnn import backends, host_settings, layers as layers_module
from dnn.buffers import Buffers
from dnn.callbacks.arguments import check_flag
from dnn.errors import ArgumentTypeError, OutOfMemoryError, UsageError
from dnn.layers.graph import LayerGraph, computing, graph_of_config, input_count
from dnn.saving import checkpoint
from dnn.saving.registry import custom_object_scope
from dnn.trainers.data import device_inputs
from dnn.trainers.trainer import Trainer
from dnn.utils import (as_shape, check_seed, checked_weights, element_count,
                       missing_attribute, model_rng, user_stacklevel)


def _sample_shape(input_shape) -> tuple:
    """The shape of one input sample from ``input_shape``: a number of features, a sample
    shape such as ``(28, 28, 1)``, or Keras' shape with the batch size first, as None
    (``(None, 784)``)."""
    shape = as_shape(input_shape)
    if shape and shape[0] is None:
        shape = shape[1:]
    if element_count(shape) is None:
        raise UsageError(f"input shape must be a positive number of features, a shape such as "
                         f"(28, 28, 1) or (None, features), not {input_shape!r}")
    return tuple(int(size) for size in shape)


def _sample_shapes(input_shape, inputs: int) -> tuple:
    """The sample shape of each of a model's ``inputs`` inputs from ``input_shape``: one
    input's as :func:`_sample_shape` takes it, or a list of one per input (a model of
    several)."""
    if inputs == 1:
        return (_sample_shape(input_shape),)
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != inputs:
        raise UsageError(f"the model has {inputs} inputs: its input shape is a list of "
                         f"{inputs} shapes, one per input, not {input_shape!r}")
    return tuple(_sample_shape(shape) for shape in input_shape)


def _float_dtype(dtype) -> np.dtype:
    """float32 or float64 from a name or a NumPy type; UsageError for anything else (None,
    which NumPy reads as float64, included)."""
    try:
        found = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):  # not a dtype at all
        found = None
    if found not in (np.float32, np.float64):
        raise UsageError(f"dtype must be float32 or float64, not {dtype!r}")
    return found


# What Keras' subclassing API overrides to compute or train otherwise; dnn runs its own
KERAS_OVERRIDES = ("call", "train_step", "test_step", "predict_step", "compute_loss")
# Keras' public methods a subclass may override, calling super() (a config is dnn's own)
OVERRIDABLE = frozenset({"compile", "fit", "evaluate", "predict", "train_on_batch",
                         "test_on_batch", "predict_on_batch", "summary", "save",
                         "save_weights", "load_weights", "get_weights", "set_weights",
                         "count_params", "get_layer", "build", "add", "pop"})


def _refuse_keras_overrides(model_class: type) -> None:
    """UsageError where ``model_class`` (a user's subclass of a model) defines one of Keras'
    methods a subclass overrides to change what the model computes or how it trains, or a
    method or property of a name dnn's models have themselves, but for Keras' public ones
    (:data:`OVERRIDABLE`): a helper called ``apply_gradients``, ``forward`` or ``metrics``
    would replace what training uses, a ``get_config`` of one's own what saving writes."""
    own = [cls for cls in model_class.__mro__ if not cls.__module__.startswith("dnn.")
           and cls is not object]
    if not own:
        return
    dnns = {name for cls in model_class.__mro__ if cls.__module__.startswith("dnn.")
            for name in vars(cls) if not name.startswith("__")} | _instance_names()
    for cls in own:
        for name, value in vars(cls).items():
            if name in KERAS_OVERRIDES:
                raise UsageError(f"{model_class.__name__} defines {name}(): a model of one's "
                                 "own computing or training otherwise (Keras' subclassing "
                                 "API) is not supported; use Sequential or keras.Model(inputs, "
                                 "outputs), with layers and callbacks of your own")
            if (name in dnns and name not in OVERRIDABLE
                    and (callable(value) or hasattr(value, "__get__"))):
                raise UsageError(f"{model_class.__name__} defines {name}, which dnn's models "
                                 "have themselves (fit or saving would use yours): give yours "
                                 "another name")


@functools.cache
def _instance_names() -> frozenset:
    """The attributes a model's ``__init__`` sets (``metrics``, ``optimizer``, ...)."""
    return frozenset(vars(Sequential()))


class Sequential(Trainer):
    """A stack of layers trained with backpropagation.

    ``trainable=False`` makes it frozen (``model.trainable``).  ``dtype`` is the dtype of
    weights and activations (float32 by default; float64 for gradient checks).  ``seed``
    seeds the host NumPy Generator that draws the initial weights and the shuffle order, so
    one seed gives the same run on every backend.  ``backend`` (a name or an
    instance) defaults to the current backend when the weights are built.  Layers come as a
    list, or one at a time with :meth:`add` (Keras' two styles build the same model).
    """

    _graph = None  # the LayerGraph of a functional model's layers that make no chain
    _inputs_by_name = False  # whether a functional model's Inputs came as a dict
    _outputs_by_name = False  # whether a functional model's outputs came as a dict
    _given_output_keys = ()  # the names keying a functional model's outputs
    _functional = False  # whether a layer may take several outputs (a merge layer)

    def __init__(self, layers=(), *, trainable=True, dtype="float32", seed=None, backend=None,
                 name=None):
        _refuse_keras_overrides(type(self))
        check_flag("the model's", "trainable", trainable)  # before its layers are taken
        super().__init__()
        if isinstance(layers, layers_module.Layer):
            raise UsageError("Sequential takes a list of layers: Sequential([Dense(...), ...])")
        self._layers = []
        self._stack = None  # the layers that compute, once read
        try:
            layers = list(layers or ())  # None: no layers yet, as in Keras
        except TypeError:
            raise ArgumentTypeError(f"Sequential takes a list of layers, not "
                                    f"{type(layers).__name__}") from None
        self.dtype = _float_dtype(dtype)
        check_seed(seed)
        self.seed = seed
        self.rng = model_rng(seed)
        self.name = "sequential" if name is None else str(name)
        self.backend = backends.resolve(backend) if backend is not None else None
        self.sample_shapes = None  # the shape of a sample of each input, known once built
        self._frozen = False  # model.trainable = False: no layer trains
        self._buffers = None  # the batches and the loss gradient, once built
        try:
            for layer in layers:
                self.add(layer)
        except BaseException:  # the layers taken so far are free for another model again
            for layer in self._layers:
                layer.in_model = False
            raise
        if not trainable:
            self.trainable = False

    @property
    def _input_count(self) -> int:
        """How many inputs the model takes: its graph's (a functional model may take
        several; a chain takes one)."""
        return 1 if self._graph is None else self._graph.inputs

    def __getattr__(self, name: str):
        """Only for an attribute not found (:func:`dnn.utils.missing_attribute`)."""
        return missing_attribute(self, name, initialised="_layers" in vars(self))

    # -- layers ------------------------------------------------------------------------------
    @property
    def stack(self) -> tuple:
        """The layers that compute, in order: the ``Input`` (or a functional model's Inputs)
        first only declares the inputs and is none of them (a tuple, kept until a layer is
        added or popped: the passes read it at every step)."""
        if self._stack is None:
            self._stack = tuple(computing(self._layers))
        return self._stack

    @property
    def graph(self) -> LayerGraph:
        """Which outputs each layer of :attr:`stack` takes
        (:class:`dnn.layers.graph.LayerGraph`): a chain, or a functional model's graph."""
        return self._graph if self._graph is not None else LayerGraph.chain(len(self.stack))

    @property
    def layers(self) -> list:
        """The model's layers, as Keras lists a Sequential's: :attr:`stack`, so that
        ``layers[0]`` is the first layer that computes."""
        return list(self.stack)

    @property
    def trainable(self) -> bool:
        """Keras' ``model.trainable``: setting it False freezes the model, from the next
        training step on: every layer is made non-trainable, and none trains while the model
        is frozen, not even one made trainable again since (as in Keras); True makes every
        layer trainable again.  It reads False while the model is frozen or while it has
        layers that compute and none is trainable (a frozen model saves and loads frozen)."""
        return not self._frozen and (any(layer.trainable for layer in self.stack)
                                     or not self.stack)

    @trainable.setter
    def trainable(self, value) -> None:
        check_flag("the model's", "trainable", value)
        if self._frozen == value:
            host_settings.changed()  # a captured step reads which layers train on the host
        self._frozen = not value
        for layer in self._layers:
            layer.trainable = value

    def _trained_layers(self) -> list:
        """The layers whose weights the optimizer trains: the trainable ones that compute,
        none while the model is frozen."""
        return [] if self._frozen else [layer for layer in self.stack if layer.trainable]

    def add(self, layer) -> None:
        """Append ``layer``, a :class:`dnn.layers.Layer` that is in no model yet (its weights
        are this model's).  A first layer that declares its inputs (``input_shape=``, or an
        ``Input``) builds the model at once, as in Keras; a layer added to a built model is
        built at once on the output of the one before."""
        if not isinstance(layer, layers_module.Layer):
            raise UsageError(f"layers must be dnn.layers.Layer instances (Dense, ...), not "
                             f"{type(layer).__name__}")
        if layer.in_model:
            raise UsageError(f"{layer!r} is already in a model; a layer holds the weights of one "
                             "place in one model: make a new layer for each place")
        if any(other.name == layer.name for other in self._layers):
            raise UsageError(f"the model already has a layer named {layer.name!r}: layer names "
                             "must be unique")
        if layer.takes_several and not self._functional:
            raise UsageError(f"{layer.name} ({type(layer).__name__}) merges a list of inputs: "
                             "call it on a list of layer outputs in a functional model "
                             "(keras.Model(inputs, outputs)); in a Sequential each layer "
                             "takes one input")
        if (isinstance(layer, layers_module.Input)
                and len(self._layers) >= self._input_count):
            raise UsageError(f"an Input declares the model's inputs: it goes first, not after "
                             f"{self._layers[-1].name}")
        layer.in_model = True
        self._layers.append(layer)
        self._stack = None
        try:
            if self.built:
                self._build_layers(len(self.stack) - 1)
            elif len(self._layers) == self._input_count and all(
                    first.declared_input_shape is not None for first in self._layers):
                declared = [first.declared_input_shape for first in self._layers]
                self.build(declared if self._input_count > 1 else declared[0])
            self._layers_changed()
        except BaseException:  # a layer that cannot take its inputs: the model as it was
            self._layers.pop()
            self._stack = None
            layer.in_model = False
            if not self.built:
                self.sample_shapes = None
            raise

    def pop(self):
        """Remove and return the last layer (its weights go with it), as Keras' ``pop``."""
        if not self._layers:
            raise UsageError("pop() on a model without layers")
        layer = self._layers.pop()
        self._stack = None
        layer.in_model = False
        if not self._layers:
            self._buffers, self.sample_shapes = None, None
        self._layers_changed()
        return layer

    def _layers_changed(self) -> None:
        """After :meth:`add` or :meth:`pop` on a compiled model: whether the loss takes the
        logits of the new last layer, and on a built model the optimizer (and totals) made
        again for the new weights, as a Keras model is compiled again."""
        if not self.compiled or not self._layers:
            return
        self._outputs_changed()
        if self.built:
            self._build_training_state()

    def get_layer(self, name=None, index=None):
        """The layer called ``name``, or at position ``index`` (Keras' ``get_layer``)."""
        if (name is None) == (index is None):
            raise UsageError("get_layer takes a name or an index, one of them")
        if index is not None:
            if (not isinstance(index, numbers.Integral) or isinstance(index, bool)
                    or not -len(self.layers) <= index < len(self.layers)):
                raise UsageError(f"no layer at index {index!r}: the model has "
                                 f"{len(self.layers)}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(repr(layer.name) for layer in self.layers) or "none"
        raise UsageError(f"no layer named {name!r}; the model's layers: {known}")

    # -- building ------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        """True once :meth:`build` made the weights (by the first data, or declared)."""
        return self._buffers is not None

    @property
    def sample_shape(self):
        """The shape of one input sample, such as ``(28, 28, 1)`` (a list of one per input
        for a model of several; None until built)."""
        if self.sample_shapes is None:
            return None
        return self.sample_shapes[0] if self._input_count == 1 else list(self.sample_shapes)

    @property
    def input_shape(self):
        """Keras' ``input_shape``: ``(None, *sample_shape)``, the batch size first as None (a
        list of one per input for a model of several; None until built)."""
        if self.sample_shapes is None:
            return None
        shapes = [(None, *shape) for shape in self.sample_shapes]
        return shapes[0] if self._input_count == 1 else shapes

    @property
    def output_shape(self):
        """Keras' ``output_shape``: ``(None, *the last layer's output shape)``, the input's of
        a model of its Input alone, a list of one per output for a model of several (None
        until built)."""
        if self.sample_shapes is None:
            return None
        if not self.stack:
            return (None, *self.sample_shapes[0])
        shapes = [(None, *layer.output_shape) for layer in self.output_layers]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_layers(self) -> list:
        """The layers that give the model's outputs: its last (a functional model's of
        several outputs, in their order)."""
        stack, graph = self.stack, self.graph
        return [stack[graph.layer_of(node)] for node in graph.outputs] if stack else []

    @property
    def output_names(self) -> list:
        """Keras' ``output_names``: the names of :attr:`output_layers`."""
        return [layer.name for layer in self.output_layers]

    @property
    def _output_keys(self) -> list:
        """The names that key each output's targets, loss, metrics and figures: the keys
        of a functional model's outputs given as a dict, else :attr:`output_names`."""
        if self._outputs_by_name:
            return list(self._given_output_keys)
        return self.output_names

    @property
    def input_dim(self) -> int | None:
        """The number of features of one input sample (the product of ``sample_shape``; of
        all inputs together for a model of several), known once built."""
        if self.sample_shapes is None:
            return None
        return sum(math.prod(shape) for shape in self.sample_shapes)

    def build(self, input_shape) -> None:
        """Create the weights on the model's backend for inputs of ``input_shape``: a number
        of features, the shape of one sample such as ``(28, 28, 1)``, or Keras' shape with the
        batch size first, as None (``(None, 784)``); for a model of several inputs, a list of
        one such shape per input.  On a model built already it changes nothing, as in Keras
        (other shapes are refused: the weights are for the samples it was built for)."""
        if not self._layers:
            raise UsageError("the model has no layers to build")
        shapes = _sample_shapes(input_shape, self._input_count)
        if self.built:
            if shapes != self.sample_shapes:
                given = shapes[0] if self._input_count == 1 else list(shapes)
                raise UsageError(f"the model is built for samples of shape "
                                 f"{self.sample_shape}; build() was given {given}: make a new "
                                 "model for other samples")
            return
        if self.backend is None:
            self.backend = backends.current_backend()
        self.sample_shapes = shapes
        try:
            for layer, shape in zip(self._layers[:input_count(self._layers)], shapes):
                layer.build_on(shape, self.backend, self.rng, self.dtype)  # passes them on
            self._build_layers(0)
        except BaseException:  # layers that cannot take these samples: still unbuilt
            self.sample_shapes = None
            raise
        self._buffers = Buffers(self.backend)  # and the model is built
        if self.compiled:
            self._build_training_state()

    def _build_layers(self, first: int) -> None:
        """Build the layers of :attr:`stack` from index ``first`` on, each on the outputs
        :attr:`graph` gives it."""
        graph, stack = self.graph, self.stack
        has_input = len(stack) < len(self._layers)
        shapes = [*self.sample_shapes, *(layer.output_shape for layer in stack[:first])]
        try:
            for index in range(first, len(stack)):
                layer = stack[index]
                input_shape = graph.taken(layer, index, shapes)
                if layer.takes_model_inputs and any(source >= graph.inputs
                                                    for source in graph.inbound[index]):
                    raise UsageError(f"{layer.name} ({type(layer).__name__}) takes the "
                                     "model's inputs (indices, checked before they move), "
                                     "not another layer's output: put it first")
                declared = layer.declared_input_shape
                if ((index > 0 or has_input) and declared is not None
                        and tuple(declared) != tuple(input_shape)):
                    # Keras takes only the first layer's input_shape and ignores the others'
                    warnings.warn(f"{layer.name} declares input_shape {tuple(declared)}, but "
                                  f"the layer before it gives {tuple(input_shape)}: only the "
                                  "first layer's input_shape counts", UserWarning,
                                  stacklevel=user_stacklevel())
                if not layer.keep_call_build(input_shape, self.backend, self.dtype):
                    layer.build_on(input_shape, self.backend, self.rng, self.dtype)
                shapes.append(layer.output_shape)
        except MemoryError:
            shapes = graph.node_shapes(stack, self.sample_shapes)
            sizes = " -> ".join(f"{math.prod(shape):,}" for shape in shapes)
            try:
                size = (sum(math.prod(shape) for shape in graph.weight_shapes(
                    stack, self.sample_shapes)) * self.dtype.itemsize)
            except MemoryError:  # a layer of one's own, whose shapes come from building it
                raise OutOfMemoryError(f"the weights of a {sizes} model need more memory "
                                       "than this machine gives") from None
            raise OutOfMemoryError(f"the weights of a {sizes} model need {size:,} bytes: more "
                                   "memory than this machine gives") from None
        # A layer's input gradient is needed only where a layer before it has weights: where
        # a layer it takes has weights or needs its own input gradient (the model's inputs
        # need none).
        for index in range(first, len(stack)):
            taken = [stack[graph.layer_of(source)] for source in graph.inbound[index]
                     if source >= graph.inputs]
            stack[index].needs_input_grad = any(layer.needs_input_grad or bool(layer.weights)
                                                for layer in taken)

    @property
    def params(self) -> list:
        """Every weight the optimizer trains, layer by layer (device arrays; a frozen layer's
        too: the model hands only the trainable ones to each update)."""
        return [param for layer in self.stack for param in layer.params]

    @property
    def trainable_weights(self) -> list:
        return [param for layer in self._trained_layers() for param in layer.params]

    @property
    def non_trainable_weights(self) -> list:
        if self._frozen:  # every weight, a layer's made trainable again too
            return self.weights
        return [weight for layer in self.stack for weight in layer.non_trainable_weights]

    @property
    def weights(self) -> list:
        """Every weight, trained or not, in :meth:`get_weights` order (device arrays)."""
        return [weight for layer in self.stack for weight in layer.weights]

    def _require_built(self) -> None:
        if not self.built:
            raise UsageError("the model has no weights yet: call it on data or build() it")

    # -- weights ---------------------------------------------------------------------------
    def count_params(self) -> int:
        """The number of weights, trainable or not (the model must be built)."""
        self._require_built()
        return sum(math.prod(weight.shape) for weight in self.weights)

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of every weight, Keras order: per layer, its trained weights (a Dense
        kernel ``(in, out)``, its bias), then its others (moving statistics)."""
        self._require_built()
        return [self.backend.to_numpy(weight) for weight in self.weights]

    def set_weights(self, weights) -> None:
        """Load host arrays in :meth:`get_weights` order (the model must be built)."""
        if not self.built:
            raise UsageError("build the model (call it on data, or build(input_shape)) before "
                             "set_weights")
        own = self.weights
        values = checked_weights(weights, [weight.shape for weight in own], self.dtype)
        start = 0
        for layer in self._layers:  # every layer's values checked before any is written
            layer.check_weight_values(values[start:start + len(layer.weights)])
            start += len(layer.weights)
        for weight, value in zip(own, values):  # in place: the optimizer's state stays theirs
            weight[...] = self.backend.asarray(value)

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """``model(x)``: the outputs of :meth:`predict`, as host arrays.  ``training=True``
        runs the layers as ``fit`` does, on ``x`` as one batch (Keras' ``model(x,
        training=True)``): Dropout drops units and BatchNormalization normalizes with the
        batch's statistics and moves its own."""
        from dnn.models.functional import is_symbolic  # a subclass of this module's

        if is_symbolic(x):
            raise UsageError(f"{self.name} was called on {x.name}: a model called on "
                             "keras.Input or on a layer's output, as a layer of another model, "
                             "is not supported; call its layers on it instead")
        if not training:
            return self.predict(x, verbose=0)
        inputs = device_inputs(self, x)
        return self._as_given(self.host_outputs(self.forward(inputs, training=True)))

    # -- saving --------------------------------------------------------------------------
    def __reduce__(self):
        """Pickling and ``copy.deepcopy``: a built model through its checkpoint (architecture,
        weights, compile state, optimizer state, epochs and shuffle state), on its backend;
        one not built through its config (a compiled one is refused: its compile state
        needs the weights).  A subclass of one's own is refused: it would come back as
        dnn's class, without its own methods."""
        if not type(self).__module__.startswith("dnn."):
            raise UsageError(f"copying or pickling a {type(self).__name__} (a subclass of a "
                             "model) is not supported: save it, and make it again from its "
                             "class with load_weights")
        if self.built:
            return checkpoint.from_bytes, (checkpoint.to_bytes(self), Sequential,
                                           self.backend.name)
        if self.compiled:
            raise UsageError("copying or pickling a compiled model needs it built: call it on "
                             "data or build() it first")
        return Sequential.from_config, (self.get_config(),)

    def save(self, path) -> None:
        """Save the model, its architecture and optimizer state to ``path`` (``.npz``,
        written atomically; :func:`dnn.load_model` reads it back)."""
        checkpoint.save(self, path)

    def save_weights(self, path) -> None:
        """Save the weights and the optimizer's state to ``path`` (a checkpoint, written
        atomically), for :meth:`load_weights` of a model of the same architecture."""
        checkpoint.save(self, path)

    def load_weights(self, path) -> None:
        """Load the weights (and, where this model has the same optimizer, its state and the
        epochs trained) that :meth:`save_weights` or :meth:`save` wrote, in place; the file's
        architecture must be this model's."""
        checkpoint.load_into(self, path)

    # -- description -------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None) -> None:
        """Print each layer with its output shape and number of parameters (and with
        ``show_trainable`` whether it is trainable), and the totals, trainable and not, as
        Keras' ``summary``; the counts need the input size, known once the model is built.
        ``print_fn`` prints each line (``print`` by default).  Keras' ``line_length`` and
        ``positions`` (the columns fit their contents here) and ``expand_nested`` (no model
        holds another) change nothing; a ``layer_range`` is refused."""
        if layer_range is not None:
            raise UsageError("summary's layer_range is not supported: the summary lists every "
                             "layer")
        if callable(line_length):  # summary(print_fn), as dnn took it before Keras' order
            print_fn, line_length = line_length, None
        print_fn = print if print_fn is None else print_fn
        connected = self._connections()
        rows = [("Layer", "Output shape", "Params", *(("Trainable",) if show_trainable else ()),
                 *(("Connected to",) if connected else ()))]
        for layer in self.layers:
            count = (sum(math.prod(weight.shape) for weight in layer.weights) if self.built
                     else None)
            shape = "?" if layer.output_shape is None else str((None, *layer.output_shape))
            rows.append((f"{layer.name} ({type(layer).__name__})", shape,
                         "?" if count is None else f"{count:,}",
                         *(("Y" if layer.trainable else "N",) if show_trainable else ()),
                         *((connected.get(id(layer), "-"),) if connected else ())))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        print_fn(f'Model: "{self.name}"')
        for name, shape, count, *others in rows:
            print_fn(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {count:>{widths[2]}}"
                     + "".join(f"  {other:<{width}}"
                               for other, width in zip(others, widths[3:])).rstrip())
        if not self.built:
            print_fn("Total params: unknown until the model is built (by its first data, or "
                     "build(input_shape))")
            return
        trainable = sum(math.prod(param.shape) for param in self.trainable_weights)
        total = self.count_params()
        size = total * self.dtype.itemsize / 2**20
        print_fn(f"Total params: {total:,} ({self.dtype}, {size:.2f} MiB)")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")

    def _taken_names(self) -> list:
        """For each layer of :attr:`stack`, the names of the layers whose outputs it takes,
        its Inputs' for the model's inputs (a functional model's, which starts with its
        Inputs)."""
        names = [layer.name for layer in self._layers]  # its Inputs first: nodes 0, 1, ...
        return [[names[source] for source in sources] for sources in self.graph.inbound]

    def _connections(self) -> dict:
        """For a model whose layers make no chain, the names of the layers each one takes
        (by the layer's id; Keras' "Connected to"), else none."""
        if self._graph is None:
            return {}
        return {id(layer): ", ".join(taken)
                for layer, taken in zip(self.stack, self._taken_names())}

    def get_config(self) -> dict:
        config = {"dtype": str(self.dtype), "layers": [layer.get_config()
                                                      for layer in self._layers]}
        if self.name != "sequential":
            config["name"] = self.name
        if self._frozen:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None, **kwargs) -> "Sequential":
        """A new model (not built) from :meth:`get_config`'s dict; ``custom_objects`` as for
        :func:`dnn.models.load_model`; ``kwargs`` go to :class:`Sequential` (``backend``,
        ``seed``).  A functional model's config gives one (:meth:`of_saved_layers`)."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise UsageError("a model config is a dict with a list of layers")
        with custom_object_scope(custom_objects):
            made = layers_module.from_configs(config["layers"])
        return cls.of_saved_layers(made, config, **kwargs)

    @classmethod
    def of_saved_layers(cls, made: list, config: dict, **kwargs) -> "Sequential":
        """The model of ``config`` (:meth:`get_config`'s dict) from its layers ``made``, in no
        model yet: a functional :class:`dnn.models.Model` where it was saved as one, else
        this class's; ``kwargs`` go to it.  A model saved frozen comes back frozen, its layers
        as they were saved (one made trainable again while frozen too)."""
        options = {"dtype": config.get("dtype", "float32"), **kwargs}
        if "name" in config:
            options["name"] = config["name"]
        trainable = config.get("trainable", True)
        check_flag("a model config's", "trainable", trainable)
        if config.get("functional"):
            from dnn.models.functional import Model  # a subclass of this one

            by_name = config.get("inputs_by_name", False)
            check_flag("a model config's", "inputs_by_name", by_name)
            model = Model.of_graph(made, graph_of_config(config, made),
                                   config.get("output_names"), **options)
            model._inputs_by_name = by_name
        else:
            model = cls(made, **options)
        model._frozen = not trainable
        return model

    def to_json(self, **kwargs) -> str:
        """The architecture as JSON (Keras' ``to_json``; ``kwargs`` go to ``json.dumps``),
        for :func:`dnn.models.model_from_json`."""
        layers_module.check_loadable(self._layers)  # JSON model_from_json could not read
        return json.dumps({"class_name": self.json_class_name, "config": self.get_config()},
                          **kwargs)

    json_class_name = "Sequential"  # in to_json, as Keras names the model's class
