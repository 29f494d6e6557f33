"""Keras' functional API where the layers make a chain: ``inputs = keras.Input(shape=(784,))``,
each layer called on the output of the one before (``x = layers.Dense(64)(inputs)``), then
``keras.Model(inputs=inputs, outputs=x)``.  A layer called on a ``keras.Input``, or on what
such a call gave, computes nothing: it gives a :class:`SymbolicTensor`, the chain of layers
from that Input to it and the shape of its outputs.  The model of a chain is the
:class:`dnn.models.Sequential` of its layers, and trains, saves and loads as one.

Graphs that are no chain (several inputs or outputs, a layer whose output two layers take and
a merge such as ``Add`` joins again, a layer used twice) are refused with one line saying so:
dnn has no layers that take several inputs.
"""

from __future__ import annotations

from dnn.callbacks.arguments import check_flag
from dnn.errors import UsageError
from dnn.layers import Input, Layer
from dnn.models.sequential import Sequential

CHAINS_ONLY = ("dnn's functional models are chains: one keras.Input, each layer called on the "
               "output of the one before, one output")


class SymbolicTensor:
    """Keras' ``KerasTensor``: what a layer called on a ``keras.Input`` (or on another
    SymbolicTensor) gives.  ``layers`` is the chain from that Input (first) to the layer that
    gave it (last); ``shape`` is ``(None, *sample shape)`` of its outputs, the batch size
    first as Keras gives it.  It holds no values."""

    def __init__(self, layers: tuple, sample_shape: tuple):
        self.layers, self.sample_shape = layers, tuple(sample_shape)

    @property
    def shape(self) -> tuple:
        return (None, *self.sample_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        return self.layers[-1].name

    def __array__(self, *args, **kwargs):
        raise UsageError(no_values(self))

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


def call_on_symbolic(layer: Layer, inputs) -> SymbolicTensor:
    """``layer(inputs)`` on a ``keras.Input`` or a :class:`SymbolicTensor`: the chain one
    layer longer, with the shape of the layer's outputs (nothing is built or computed).  A
    layer already in the chain or in a model, or declared or built for other samples, is
    refused."""
    if isinstance(inputs, Input):
        chain, sample_shape = (inputs,), tuple(inputs.declared_input_shape)
    else:
        chain, sample_shape = inputs.layers, inputs.sample_shape
    if any(other is layer for other in chain):
        raise UsageError(f"{layer.name} is called twice in one chain: {CHAINS_ONLY} (make a "
                         "new layer for each place)")
    if layer.in_model:
        raise UsageError(f"{layer.name} is already in a model; a layer holds the weights of "
                         "one place in one model: make a new layer for each place")
    expected = layer.input_shape if layer.built else layer.declared_input_shape
    if expected is not None and tuple(expected) != sample_shape:
        raise UsageError(f"{layer.name} is {'built' if layer.built else 'declared'} for samples "
                         f"of shape {tuple(expected)}, but {chain[-1].name} gives "
                         f"{sample_shape}")
    return SymbolicTensor((*chain, layer), layer.compute_output_shape(sample_shape))


def _one(value, what: str):
    """``value``, or the one item of a list or tuple of one (as Keras takes them)."""
    if isinstance(value, dict):
        raise UsageError(f"Model's {what} are a dict: named inputs and outputs are for models "
                         f"of several; {CHAINS_ONLY}")
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise UsageError(f"Model got {len(value)} {what}: {CHAINS_ONLY}")
        value = value[0]
    return value


def chain_layers(inputs, outputs) -> list:
    """The layers of the chain from ``inputs`` (a ``keras.Input``) to ``outputs`` (a
    :class:`SymbolicTensor` made from it), the Input first; UsageError for anything else."""
    inputs, outputs = _one(inputs, "inputs"), _one(outputs, "outputs")
    if not isinstance(inputs, Input):
        raise UsageError(f"Model's inputs must be a keras.Input(shape=...), not "
                         f"{type(inputs).__name__}")
    if not isinstance(outputs, SymbolicTensor):
        raise UsageError(f"Model's outputs must be what calling layers on its keras.Input "
                         f"gave, not {type(outputs).__name__}")
    if outputs.layers[0] is not inputs:
        raise UsageError(f"Model's outputs come from {outputs.layers[0].name}, not from its "
                         f"inputs {inputs.name}: {CHAINS_ONLY}")
    for layer in outputs.layers:
        if layer.in_model:
            raise UsageError(f"{layer.name} is already in a model: dnn's models share no "
                             "layers or inputs; call new layers on a new keras.Input")
    return list(outputs.layers)


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
    """Keras' ``keras.Model(inputs=inputs, outputs=outputs)`` for a chain of layers (module
    docstring): the Sequential of that chain, named ``name`` ("functional" by default), its
    ``layers`` listing its Input first as Keras lists a functional model's; ``trainable``
    False freezes it; ``dtype``, ``seed`` and ``backend`` as for :class:`Sequential`.  It
    saves, loads, and goes through ``to_json``, as a functional model.  A subclass of Model
    that computes or trains otherwise (Keras' subclassing API: its own ``call``,
    ``train_step``, ...) is not supported."""

    json_class_name = "Functional"

    def __init__(self, inputs=None, outputs=None, name=None, *, trainable=True,
                 dtype="float32", seed=None, backend=None):
        if inputs is None or outputs is None:
            raise UsageError("Model takes inputs= and outputs= (a keras.Input and what calling "
                             "layers on it gave); a subclass of Model with a call() of its own "
                             "is not supported: use keras.Sequential")
        check_flag("Model", "trainable", trainable)  # before its layers are taken
        super().__init__(chain_layers(inputs, outputs), dtype=dtype, seed=seed,
                         backend=backend, name="functional" if name is None else name)
        if trainable is not True:
            self.trainable = trainable

    @classmethod
    def of_chain(cls, made: list, **options) -> "Model":
        """The model of the layers ``made`` (in no model yet), a ``keras.Input`` first, each
        called on the output of the one before; ``options`` go to :class:`Model`."""
        if not made or not isinstance(made[0], Input):
            raise UsageError("a functional model's layers start with its keras.Input")
        outputs = made[0]
        for layer in made[1:]:
            outputs = layer(outputs)
        return cls(made[0], outputs, **options)

    @classmethod
    def of_saved_layers(cls, made: list, config: dict, **kwargs) -> "Model":
        """As :meth:`Sequential.of_saved_layers`, always a Model (of a Sequential's config
        too, where it starts with its Input)."""
        return super().of_saved_layers(made, {**config, "functional": True}, **kwargs)

    @property
    def layers(self) -> list:
        return list(self._layers)

    def get_config(self) -> dict:
        return {**super().get_config(), "name": self.name, "functional": True}
