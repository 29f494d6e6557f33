"""Which outputs each layer of a model takes: a chain (each layer the output of the one before,
a Sequential), or the graph a functional model's layer calls made (a residual block's
``Add([x, Dense(64)(x)])`` takes two).

The nodes are the model's inputs (node ``i`` the ``i``-th of its ``inputs``: one, node 0,
but for a functional model of several ``keras.Input``) and the output of each layer that
computes, in order (node ``inputs + k`` is the output of the ``k``-th): a layer takes only
nodes before its own.  The model's outputs are the last layer's, or for a functional model of
several outputs the nodes its ``outputs`` lists (the last layer's among them).  Shapes are a
sample's, without the batch axis.
"""

from __future__ import annotations

import functools
import numbers
import reprlib

from dnn.errors import UsageError
from dnn.layers.core import Input


class LayerGraph:
    """``inbound[k]``: the nodes the ``k``-th layer that computes takes, in the order it takes
    them (one for most layers, several for a merge layer such as ``Add``), of a model of
    ``inputs`` inputs and of ``outputs`` (nodes, each once, the last one's among them; the
    last node alone by default).  Every layer's output that is no model output is taken by
    some layer (an input may be taken by none: Keras keeps such an input); ``uses[node]``
    counts how many times."""

    def __init__(self, inbound, inputs: int = 1, outputs=None):
        self.inbound = tuple(tuple(sources) for sources in inbound)
        self.inputs = inputs
        last = inputs + len(self.inbound) - 1
        self.outputs = (last,) if outputs is None else tuple(outputs)
        uses = [0] * (inputs + len(self.inbound))
        for index, sources in enumerate(self.inbound):
            if not sources:
                raise UsageError(f"layer {index + 1} of the model's graph takes no inputs")
            for source in sources:
                if (not isinstance(source, numbers.Integral) or isinstance(source, bool)
                        or not 0 <= source < inputs + index):
                    raise UsageError(f"layer {index + 1} of the model's graph takes node "
                                     f"{reprlib.repr(source)}: a layer takes one of the "
                                     f"model's inputs (0 to {inputs - 1}) or the output of a "
                                     f"layer before it ({inputs}, {inputs + 1}, ...)")
                uses[source] += 1
        for node in self.outputs:
            if (not isinstance(node, numbers.Integral) or isinstance(node, bool)
                    or not inputs <= node <= last):
                raise UsageError(f"the model's graph has an output {reprlib.repr(node)}: its "
                                 f"outputs are outputs of its layers ({inputs} to {last})")
        if len(set(self.outputs)) != len(self.outputs) or last not in self.outputs:
            raise UsageError(f"the model's graph lists outputs {list(self.outputs)}: each "
                             f"once, the last layer's ({last}) among them")
        unused = [node for node in range(inputs, len(uses))
                  if uses[node] == 0 and node not in self.outputs]
        if unused:
            raise UsageError(f"node {unused[0]} of the model's graph is taken by no layer: "
                             "every output of a layer but the model's outputs goes on to a "
                             "layer")
        self.uses = tuple(uses)

    @classmethod
    @functools.lru_cache(maxsize=64)
    def chain(cls, length: int) -> "LayerGraph":
        """The graph of ``length`` layers, each taking the output of the one before (made
        without the checks, which a chain passes, as a model grows by one layer at a
        time)."""
        graph = cls.__new__(cls)
        graph.inbound = tuple((index,) for index in range(length))
        graph.inputs = 1
        graph.outputs = (length,)
        graph.uses = (1,) * length + (0,)
        return graph

    @property
    def is_chain(self) -> bool:
        return self.inputs == 1 and len(self.outputs) == 1 and all(sources == (index,)
                                        for index, sources in enumerate(self.inbound))

    def layer_of(self, node: int) -> int:
        """The index of the layer whose output ``node`` (not one of the model's inputs) is."""
        return node - self.inputs

    def taken(self, layer, index: int, nodes: list):
        """What the ``index``-th layer, ``layer``, is given of ``nodes`` (one value per node
        so far: arrays, or shapes): a list for a layer that takes several inputs, else the
        one."""
        sources = self.inbound[index]
        if layer.takes_several:
            return [nodes[source] for source in sources]
        if len(sources) != 1:
            raise UsageError(f"{layer.name} takes one input, but the model's graph gives it "
                             f"{len(sources)}")
        return nodes[sources[0]]

    def node_shapes(self, layers: list, sample_shapes: tuple) -> list:
        """The sample shape of every node, for inputs of ``sample_shapes`` (one per input;
        the layers' ``compute_output_shape``, nothing built)."""
        shapes = [tuple(shape) for shape in sample_shapes]
        for index, layer in enumerate(layers):
            shapes.append(tuple(layer.compute_output_shape(self.taken(layer, index, shapes))))
        return shapes

    def weight_shapes(self, layers: list, sample_shapes: tuple) -> list:
        """The shape of every weight of ``layers`` (the ones that compute, in order) on inputs
        of ``sample_shapes`` (one per input), in :meth:`Sequential.get_weights` order, without
        making them."""
        shapes, found = [tuple(shape) for shape in sample_shapes], []
        for index, layer in enumerate(layers):
            weights, output_shape = layer.param_shapes(self.taken(layer, index, shapes))
            found += weights
            shapes.append(tuple(output_shape))
        return found

    def get_config(self) -> list:
        """The ``"inbound"`` of a model's config (its ``"outputs"`` are :attr:`outputs`)."""
        return [list(sources) for sources in self.inbound]


def input_count(layers: list) -> int:
    """How many ``Input`` layers a model's ``layers`` start with: those declare its inputs."""
    count = 0
    while count < len(layers) and isinstance(layers[count], Input):
        count += 1
    return count


def computing(layers: list) -> list:
    """The layers of a model that compute: all but the Inputs first, which only declare the
    inputs."""
    return list(layers[input_count(layers):])


def graph_of_config(config: dict, made: list) -> LayerGraph:
    """The graph of a model's config (:meth:`Sequential.get_config`), whose layers ``made``
    (its Inputs first, if any) it joins: its ``"inbound"`` lists (and ``"outputs"``, where a
    model has several), or a chain where it has none."""
    layers, inputs = computing(made), max(1, input_count(made))
    inbound = config.get("inbound")
    if inbound is None:
        if inputs != 1:
            raise UsageError(f"a model config of {inputs} inputs must list the inputs of each "
                             "of its layers (inbound)")
        return LayerGraph.chain(len(layers))
    if not isinstance(inbound, list) or len(inbound) != len(layers):
        raise UsageError(f"a model config's inbound must list the inputs of each of its "
                         f"{len(layers)} layers (after any Input), not {inbound!r:.80}")
    if not all(isinstance(sources, list) for sources in inbound):
        raise UsageError("a model config's inbound lists a list of nodes for each layer")
    outputs = config.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise UsageError(f"a model config's outputs must list nodes, not {outputs!r:.80}")
    return LayerGraph(inbound, inputs, outputs)
