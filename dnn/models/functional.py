"""Keras' functional API: ``inputs = keras.Input(shape=(784,))``, layers called on it and on
what such calls gave (``x = layers.Dense(64)(inputs)``, a residual block's
``layers.Add()([x, layers.Dense(64)(x)])``), then ``keras.Model(inputs=inputs, outputs=x)``.
A layer called on a ``keras.Input``, or on what such a call gave, computes nothing: it gives a
:class:`SymbolicTensor`, the layer's call on its inputs and the shape of its outputs.  The
model is a :class:`dnn.models.Sequential` whose layers are those calls in an order where each
layer comes after the ones it takes, joined by their :class:`dnn.layers.graph.LayerGraph`: it
trains, saves and loads as one (a chain of layers is the Sequential of its layers).

A model has one input or several (``keras.Model(inputs=[a, b], outputs=...)``, or a dict of
the Inputs keyed by their names: its data a list of arrays in the Inputs' order, or a dict
keyed by their names) and one output or several (a list, or a dict keyed by names: each
output has its loss, metrics and targets, :mod:`dnn.trainers.heads`); a layer called twice (a
shared layer) is refused with one line saying so.
"""

from __future__ import annotations

import reprlib

from dnn.callbacks.arguments import check_flag
from dnn.errors import UsageError
from dnn.layers import Input, Layer
from dnn.layers.graph import LayerGraph
from dnn.layers.symbolic import MergedByOperators
from dnn.models.sequential import Sequential

class SymbolicTensor(MergedByOperators):
    """Keras' ``KerasTensor``: what ``layer`` called on ``inputs`` gave (a tuple of a
    ``keras.Input`` or SymbolicTensors: one, or several for a merge layer).  ``shape`` is
    ``(None, *sample shape)`` of its outputs, the batch size first as Keras gives it.  It holds
    no values."""

    def __init__(self, layer: Layer, inputs: tuple, sample_shape: tuple):
        self.layer, self.inputs, self.sample_shape = layer, tuple(inputs), tuple(sample_shape)

    @property
    def shape(self) -> tuple:
        return (None, *self.sample_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        return self.layer.name

    def __array__(self, *args, **kwargs):
        raise UsageError(no_values(self))

    def __bool__(self):
        raise UsageError(f"the output of {self.name} called on keras.Input is used as True or "
                         "False: it holds no values, it describes a model")

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={self.shape}, name={self.name}>"


def no_values(symbolic: SymbolicTensor) -> str:
    """The error of ``symbolic`` used as data."""
    return (f"the output of {symbolic.name} called on keras.Input has no values: it describes "
            "a model; give it to keras.Model(inputs, outputs), then call the model on data")


def is_symbolic(value) -> bool:
    """Whether ``value`` is what a layer is called on to describe a model: a ``keras.Input``
    or a :class:`SymbolicTensor`."""
    return isinstance(value, (Input, SymbolicTensor))


def _shape_of(value) -> tuple:
    """The sample shape of a keras.Input or of a layer call's outputs."""
    return (tuple(value.declared_input_shape) if isinstance(value, Input)
            else value.sample_shape)


def _inputs_of(call) -> tuple:
    """What a layer call (a SymbolicTensor) took; nothing for a keras.Input."""
    return call.inputs if isinstance(call, SymbolicTensor) else ()


def _layer_of(call) -> Layer:
    """The layer of a layer call (a SymbolicTensor), or the keras.Input itself."""
    return call.layer if isinstance(call, SymbolicTensor) else call


def _calls(values: list):
    """Every layer call that ``values`` (keras.Inputs or SymbolicTensors) come from, they
    included, each once, in the order a depth first walk from each of them in turn meets
    them (the inputs of each in order): an iterator of keras.Inputs and SymbolicTensors."""
    seen = set()
    for start in values:
        pending = [start]
        while pending:
            value = pending.pop()
            if id(value) not in seen:
                seen.add(id(value))
                yield value
                pending.extend(reversed(_inputs_of(value)))


def call_on_symbolic(layer: Layer, inputs) -> SymbolicTensor:
    """``layer(inputs)`` on a ``keras.Input`` or a :class:`SymbolicTensor` (a list of them
    for a merge layer): a new SymbolicTensor, with the shape of the layer's outputs (nothing
    is built or computed).  A layer in a model, or declared or built for other samples, or
    given data beside symbolic inputs, is refused (a layer called twice, when the model is
    made: :func:`graph_layers`)."""
    several = isinstance(inputs, (list, tuple))
    taken = list(inputs) if several else [inputs]
    if not all(is_symbolic(item) for item in taken):
        raise UsageError(f"{layer.name} was called on a list mixing outputs of layer calls "
                         "(or keras.Input) with data: give it layer outputs alone")
    if layer.takes_several and not several:
        raise UsageError(f"{layer.name} ({type(layer).__name__}) merges a list of inputs: "
                         f"call it on a list, {type(layer).__name__}()([x, y])")
    if layer.in_model:
        raise UsageError(f"{layer.name} is already in a model; a layer holds the weights of "
                         "one place in one model: make a new layer for each place")
    shapes = [_shape_of(item) for item in taken]
    shape = shapes if several else shapes[0]
    expected = layer.input_shape if layer.built else layer.declared_input_shape
    if expected is not None and not layer.takes_several and tuple(expected) != shape:
        raise UsageError(f"{layer.name} is {'built' if layer.built else 'declared'} for samples "
                         f"of shape {tuple(expected)}, but {taken[0].name} gives {shape}")
    if several and not layer.takes_several:
        raise UsageError(f"{layer.name} was called on a list of {len(taken)} inputs: a layer "
                         "takes one (merge layers, such as Add or Concatenate, take several)")
    return SymbolicTensor(layer, taken, layer.compute_output_shape(shape))


def _model_inputs(inputs) -> list:
    """Model's ``inputs``: a keras.Input, a list or tuple of them (each once), or a dict of
    them keyed by their names, taken in the order of its keys sorted (as Keras 3 flattens a
    dict)."""
    if isinstance(inputs, dict):
        for key, item in inputs.items():
            if not isinstance(item, Input) or key != item.name:
                raise UsageError(f"Model's inputs dict holds {reprlib.repr(item)} under "
                                 f"{reprlib.repr(key)}: a dict of inputs keys each "
                                 "keras.Input by its name (keras.Input(..., name=key)), which "
                                 "also keys its data")
        inputs = [inputs[key] for key in sorted(inputs)]
    return _each_once(inputs, "inputs", Input, "keras.Input(shape=...)s")


def _each_once(given, kind: str, item_type: type, what: str) -> list:
    """Model's ``inputs`` or ``outputs`` (the ``kind``) as a list: one ``item_type``, or a
    list or tuple of them, each once (``what`` to give, in the errors)."""
    given = list(given) if isinstance(given, (list, tuple)) else [given]
    if not given:
        raise UsageError(f"Model's {kind} are an empty list: give {what}")
    for item in given:
        if not isinstance(item, item_type):
            raise UsageError(f"Model's {kind} must be {what}, not {type(item).__name__}")
        if sum(other is item for other in given) > 1:
            raise UsageError(f"Model's {kind} list {item.name} twice")
    return given


def _model_outputs(outputs) -> tuple[list, list | None]:
    """``(outputs, names)`` of Model's ``outputs``: what calling layers on its inputs gave,
    one, a list or tuple of them (each once), or a dict of them (taken in the order of its
    keys sorted, as Keras 3 flattens a dict; the keys name them, else None: their layers'
    names do)."""
    names = None
    if isinstance(outputs, dict):
        if not all(isinstance(key, str) and key for key in outputs):
            raise UsageError(f"Model's outputs dict has keys {reprlib.repr(list(outputs))}: "
                             "key each output by a name (a string), which also keys its "
                             "targets, loss and metrics")
        names = sorted(outputs)
        outputs = [outputs[key] for key in names]
    return (_each_once(outputs, "outputs", SymbolicTensor,
                       "what calling layers on its keras.Input gave"), names)


def graph_layers(inputs, outputs) -> tuple[list, LayerGraph, list, list]:
    """``(layers, graph, listed, output_names)`` of the model from ``inputs`` (a
    ``keras.Input``, or a list or dict of them) to ``outputs`` (a :class:`SymbolicTensor`
    made from them, or a list or dict of them): ``layers`` the Inputs first, in the order
    given, then each layer call after those it takes; the graph joins the layers after the
    Inputs (one the outputs do not come from taken by none, as Keras keeps it) and names the
    outputs' nodes; ``listed`` are all of them in the order Keras lists
    them (where a model of several inputs has its Inputs among the other layers);
    ``output_names`` name the outputs (their layers', or the keys of a dict).  UsageError for
    anything else."""
    inputs = _model_inputs(inputs)
    outputs, names = _model_outputs(outputs)
    calls = _in_kerass_order(outputs, inputs)
    found = [call for call in calls if isinstance(call, Input)]
    others = [call for call in found if not any(call is given for given in inputs)]
    if others:
        raise UsageError(f"Model's outputs come from {others[0].name}, which is not among its "
                         f"inputs ({', '.join(given.name for given in inputs)})")
    seen = set()
    for call in calls:
        layer = _layer_of(call)
        if id(layer) in seen:
            raise UsageError(f"{layer.name} is called twice in one model: shared layers are "
                             "not supported (make a new layer for each place)")
        seen.add(id(layer))
        if layer.in_model:
            raise UsageError(f"{layer.name} is already in a model: dnn's models share no "
                             "layers or inputs; call new layers on a new keras.Input")
    made = [*inputs, *(call.layer for call in calls if isinstance(call, SymbolicTensor))]
    node = {id(layer): index for index, layer in enumerate(made)}  # each layer called once
    inbound = [[node[id(_layer_of(item))] for item in call.inputs]
               for call in calls if isinstance(call, SymbolicTensor)]
    graph = LayerGraph(inbound, len(inputs), [node[id(output.layer)] for output in outputs])
    return (made, graph, [_layer_of(call) for call in calls],
            names or [output.name for output in outputs])


def _in_kerass_order(outputs: list, inputs: list) -> list:
    """The keras.Input and the layer calls that ``outputs`` come from, and the model's
    ``inputs`` they do not come from, in the order Keras 3 lists a functional model's layers
    (``keras.src.ops.function.map_graph``): the farthest from an output first (by the
    longest path to any), calls as far from one in the order a depth first walk from each
    output in turn meets them (the inputs in order); each call comes after those it takes;
    an input the outputs do not come from is as far as an output, before the outputs."""
    walk = list(_calls(outputs))
    met = {id(call) for call in walk}
    walk = [*(given for given in inputs if id(given) not in met), *walk]
    depth = {}
    for call in reversed(_inputs_first(outputs)):  # each after every call that takes it
        for item in _inputs_of(call):
            depth[id(item)] = max(depth.get(id(item), 0), depth.get(id(call), 0) + 1)
    return sorted(walk, key=lambda call: -depth.get(id(call), 0))  # stable: ties as met


def _inputs_first(outputs: list) -> list:
    """The calls ``outputs`` come from, each after the calls it takes."""
    done, order, pending = set(), [], list(reversed(outputs))
    while pending:
        call = pending[-1]
        if id(call) in done:
            pending.pop()
            continue
        missing = [item for item in _inputs_of(call) if id(item) not in done]
        if missing:
            pending.extend(reversed(missing))
            continue
        pending.pop()
        done.add(id(call))
        order.append(call)
    return order


class _EverySequentialIsAModel(type):
    """``isinstance(model, Model)`` and ``issubclass(Sequential, Model)`` hold, as in Keras
    (whose Sequential is a Model), for a loaded Sequential too."""

    def __instancecheck__(cls, instance) -> bool:
        if cls is Model:
            return isinstance(instance, Sequential)
        return super().__instancecheck__(instance)

    def __subclasscheck__(cls, subclass) -> bool:
        if cls is Model:
            return issubclass(subclass, Sequential)
        return super().__subclasscheck__(subclass)


class Model(Sequential, metaclass=_EverySequentialIsAModel):
    """Keras' ``keras.Model(inputs=inputs, outputs=outputs)`` (module docstring): the
    Sequential of the layers called from ``inputs`` to ``outputs``, joined by their graph,
    named ``name`` ("functional" by default), its ``layers`` listed as Keras lists a
    functional model's (:attr:`layers`); ``trainable`` False freezes it; ``dtype``, ``seed`` and
    ``backend`` as for :class:`Sequential`.  It saves, loads, and goes through ``to_json``,
    as a functional model.  A subclass of Model that computes or trains otherwise (Keras'
    subclassing API: its own ``call``, ``train_step``, ...) is not supported."""

    json_class_name = "Functional"
    _functional = True

    def __init__(self, inputs=None, outputs=None, name=None, *, trainable=True,
                 dtype="float32", seed=None, backend=None):
        if inputs is None or outputs is None:
            raise UsageError("Model takes inputs= and outputs= (keras.Input(s) and what calling "
                             "layers on them gave); a subclass of Model with a call() of its own "
                             "is not supported: use keras.Sequential")
        check_flag("Model", "trainable", trainable)  # before its layers are taken
        made, graph, self._listed, output_names = graph_layers(inputs, outputs)
        self._inputs_by_name = isinstance(inputs, dict)  # then its data is a dict too
        self._given_output_keys = tuple(output_names)
        self._outputs_by_name = isinstance(outputs, dict)
        self._graph = None if graph.is_chain else graph  # before add() takes the layers
        super().__init__(made, trainable=trainable, dtype=dtype, seed=seed, backend=backend,
                         name="functional" if name is None else name)

    @classmethod
    def of_graph(cls, made: list, graph: LayerGraph, output_names=None, **options) -> "Model":
        """The model of the layers ``made`` (in no model yet), its ``graph.inputs``
        keras.Inputs first, each other after them called on what ``graph`` says it takes;
        its outputs the graph's, as a dict keyed by ``output_names`` where given (a list of
        one name per output), else a list (the one output, for one); ``options`` go to
        :class:`Model`."""
        inputs = made[:graph.inputs]
        if not made or not all(isinstance(layer, Input) for layer in inputs):
            raise UsageError("a functional model's layers start with its keras.Input(s)")
        if len(graph.inbound) != len(made) - graph.inputs:
            raise UsageError(f"a functional model's graph joins {len(graph.inbound)} layers, "
                             f"not its {len(made) - graph.inputs}")
        nodes = list(inputs)
        for index, layer in enumerate(made[graph.inputs:]):
            nodes.append(layer(graph.taken(layer, index, nodes)))
        outputs = [nodes[node] for node in graph.outputs]
        if output_names is not None:
            if (not isinstance(output_names, list) or len(output_names) != len(outputs)
                    or len(set(map(repr, output_names))) != len(outputs)):
                raise UsageError(f"a functional model's config names its {len(outputs)} "
                                 f"outputs {reprlib.repr(output_names)}: a list of one "
                                 "name each, each name once")
            outputs = dict(zip(output_names, outputs))
        model = cls(inputs if graph.inputs > 1 else inputs[0],
                    outputs if len(outputs) > 1 or output_names is not None else outputs[0],
                    **options)
        if list(model.stack) != made[graph.inputs:] or model.graph.outputs != graph.outputs:
            for layer in made:  # free for another model again
                layer.in_model = False
            raise UsageError("a functional model's config lists its layers (or outputs) in "
                             "another order than its graph's: Keras', each layer after the "
                             "layers it takes, the outputs' names sorted")
        return model

    @classmethod
    def of_saved_layers(cls, made: list, config: dict, **kwargs) -> "Model":
        """As :meth:`Sequential.of_saved_layers`, always a Model (of a Sequential's config
        too, where it starts with its Input)."""
        return super().of_saved_layers(made, {**config, "functional": True}, **kwargs)

    @property
    def layers(self) -> list:
        """Every layer, its keras.Input(s) too, in the order Keras 3 lists them: the farthest
        from the output first (a model of one input starts with its Input; one of several
        has each Input among the layers as far from the output as it is)."""
        return list(self._listed if self._input_count > 1 else self._layers)

    def add(self, layer) -> None:
        """As :meth:`Sequential.add`, for a model of a chain of layers (a graph has no
        last place to add one: call the layer on its output and make a new Model)."""
        if self._graph is not None and len(self.stack) == len(self._graph.inbound):
            raise UsageError("add() on a functional model whose layers make no chain: call "
                             "the layer on the model's output and make a new keras.Model")
        super().add(layer)

    def pop(self):
        """As :meth:`Sequential.pop`, for a model of a chain of layers."""
        if self._graph is not None:
            raise UsageError("pop() on a functional model whose layers make no chain: make "
                             "a new keras.Model of the layers you keep")
        return super().pop()

    def get_config(self) -> dict:
        config = {**super().get_config(), "name": self.name, "functional": True}
        if self._inputs_by_name:
            config["inputs_by_name"] = True
        if self._graph is not None:
            config["inbound"] = self._graph.get_config()
            if len(self._graph.outputs) > 1:
                config["outputs"] = list(self._graph.outputs)
        if self._outputs_by_name:
            config["output_names"] = list(self._given_output_keys)
        return config
