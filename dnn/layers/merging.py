"""Merge layers (Keras' ``keras.layers.merging``): Add, Subtract, Multiply, Average and
Concatenate, which join the outputs of several layers into one (a residual block's
``Add()([x, y])``), and Keras' functions of them (``add([x, y])``, ``concatenate(...)``).

A merge layer takes a list of batches, each ``(n, *shape)``: its ``forward`` is given the list
and its ``backward`` returns one input gradient per input, in order, each in an array of its
own (a layer before it may overwrite the gradient it is given).  Shapes are a sample's, as
everywhere; ``input_shape`` is the list of its inputs' shapes.
"""

from __future__ import annotations

import numbers

from dnn.errors import UsageError
from dnn.layers.base import Layer, check_keras_only


class Merge(Layer):
    """What the merge layers share: the inputs' checks and the buffers of the input
    gradients.  A subclass gives ``merge_shape`` (the output's shape from the inputs', checked),
    ``forward`` and ``backward``; ``exact_inputs`` is the number of inputs it takes where that
    is fixed (Subtract's two)."""

    takes_several = True
    exact_inputs = None

    def __init__(self, name=None, trainable=True, **keras_only):
        check_keras_only(type(self).__name__, keras_only)
        super().__init__(name, trainable=trainable)
        self._inputs = None

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape)
        kind = type(self).__name__
        if shapes is None or len(shapes) < 2:
            raise UsageError(f"{self.name} ({kind}) merges a list of at least two inputs: call "
                             f"it on one, {kind}()([x, y]), in a functional model (keras.Model"
                             f"(inputs, outputs)); in a Sequential each layer takes one input")
        if self.exact_inputs is not None and len(shapes) != self.exact_inputs:
            raise UsageError(f"{self.name} ({kind}) takes exactly {self.exact_inputs} inputs, "
                             f"not {len(shapes)}")
        return self.merge_shape(shapes)

    def merge_shape(self, shapes: list) -> tuple:
        """The output's sample shape from the inputs' (an elementwise merge: all alike)."""
        if any(shape != shapes[0] for shape in shapes):
            raise UsageError(f"{self.name} ({type(self).__name__}) merges inputs of one shape, "
                             f"not {', '.join(map(str, shapes))}")
        return shapes[0]

    def _input_grads(self, grad) -> list:
        """One array per input for its gradient, of ``grad``'s shape and dtype (the first is
        ``grad`` itself, which this layer may overwrite)."""
        return [grad, *(self._buffers(f"grad_{index}", grad.shape, grad.dtype)
                        for index in range(1, len(self.input_shape)))]

    def get_config(self) -> dict:
        return self._config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _shapes(input_shape) -> list | None:
    """``input_shape`` as a list of sample shapes (tuples), or None where it is one shape."""
    if not isinstance(input_shape, (list, tuple)) or not all(
            isinstance(shape, (list, tuple)) for shape in input_shape):
        return None
    return [tuple(shape) for shape in input_shape]


class Add(Merge):
    """Keras' ``Add()([x1, x2, ...])``: their elementwise sum (inputs of one shape)."""

    def forward(self, inputs, logits=False, training=False):
        out = self._buffers("output", inputs[0].shape, inputs[0].dtype)
        out[...] = inputs[0]
        for x in inputs[1:]:
            out += x
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grads = self._input_grads(grad)
        for copy in grads[1:]:
            copy[...] = grad
        return grads


class Subtract(Merge):
    """Keras' ``Subtract()([x1, x2])``: ``x1 - x2`` (two inputs of one shape)."""

    exact_inputs = 2

    def forward(self, inputs, logits=False, training=False):
        out = self._buffers("output", inputs[0].shape, inputs[0].dtype)
        out[...] = inputs[0]
        out -= inputs[1]
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grads = self._input_grads(grad)
        grads[1][...] = grad
        grads[1] *= -1.0
        return grads


class Multiply(Merge):
    """Keras' ``Multiply()([x1, x2, ...])``: their elementwise product (inputs of one
    shape); each input's gradient is the output gradient times the other inputs."""

    def forward(self, inputs, logits=False, training=False):
        self._inputs = list(inputs)
        out = self._buffers("output", inputs[0].shape, inputs[0].dtype)
        out[...] = inputs[0]
        for x in inputs[1:]:
            out *= x
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        inputs = self._inputs
        grads = [self._buffers(f"grad_{index}", grad.shape, grad.dtype)
                 for index in range(len(inputs))]
        for index, into in enumerate(grads):
            into[...] = grad
            for other, x in enumerate(inputs):
                if other != index:
                    into *= x
        return grads


class Average(Merge):
    """Keras' ``Average()([x1, x2, ...])``: their elementwise mean (inputs of one shape)."""

    def forward(self, inputs, logits=False, training=False):
        out = self._buffers("output", inputs[0].shape, inputs[0].dtype)
        out[...] = inputs[0]
        for x in inputs[1:]:
            out += x
        out /= float(len(inputs))
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grad /= float(len(self.input_shape))
        grads = self._input_grads(grad)
        for copy in grads[1:]:
            copy[...] = grad
        return grads


class Concatenate(Merge):
    """Keras' ``Concatenate(axis=-1)([x1, x2, ...])``: the inputs side by side along
    ``axis`` (counted as Keras counts it, the batch axis 0, so -1 is the last; inputs alike
    but along it)."""

    def __init__(self, axis=-1, name=None, trainable=True, **keras_only):
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise UsageError(f"Concatenate's axis must be an integer, not {axis!r}")
        super().__init__(name, trainable, **keras_only)
        self.axis = int(axis)
        self._slices = None

    def merge_shape(self, shapes):
        rank = len(shapes[0])
        axis = self.axis + rank + 1 if self.axis < 0 else self.axis
        if any(len(shape) != rank for shape in shapes) or not 1 <= axis <= rank:
            raise UsageError(f"{self.name} (Concatenate) cannot join inputs of shapes "
                             f"{', '.join(str((None, *shape)) for shape in shapes)} along "
                             f"axis {self.axis}: they need as many axes, and an axis other "
                             "than the batch's (0)")
        along = axis - 1
        if any(shape[:along] + shape[along + 1:] != shapes[0][:along] + shapes[0][along + 1:]
               for shape in shapes):
            raise UsageError(f"{self.name} (Concatenate) joins inputs alike but along axis "
                             f"{self.axis}, not {', '.join(map(str, shapes))}")
        return (*shapes[0][:along], sum(shape[along] for shape in shapes),
                *shapes[0][along + 1:])

    def build(self, input_shape):
        """Where each input goes along the axis: a batch's index of its part."""
        shapes = _shapes(input_shape)
        along = self.axis + len(shapes[0]) if self.axis < 0 else self.axis - 1
        self._slices, start = [], 0
        for shape in shapes:
            part = slice(start, start + shape[along])
            self._slices.append((slice(None),) * (along + 1) + (part,))
            start = part.stop

    def forward(self, inputs, logits=False, training=False):
        n = inputs[0].shape[0]
        out = self._buffers("output", (n, *self.output_shape), inputs[0].dtype)
        for x, index in zip(inputs, self._slices):
            out[index] = x
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grads = []
        for position, (shape, index) in enumerate(zip(self.input_shape, self._slices)):
            into = self._buffers(f"grad_{position}", (grad.shape[0], *shape), grad.dtype)
            into[...] = grad[index]
            grads.append(into)
        return grads

    def get_config(self) -> dict:
        return self._config(**({} if self.axis == -1 else {"axis": self.axis}))

    def __repr__(self) -> str:
        return f"Concatenate(axis={self.axis})"


def add(inputs, **options):
    """``Add(**options)(inputs)``, Keras' ``keras.layers.add``."""
    return Add(**options)(inputs)


def subtract(inputs, **options):
    """``Subtract(**options)(inputs)``, Keras' ``keras.layers.subtract``."""
    return Subtract(**options)(inputs)


def multiply(inputs, **options):
    """``Multiply(**options)(inputs)``, Keras' ``keras.layers.multiply``."""
    return Multiply(**options)(inputs)


def average(inputs, **options):
    """``Average(**options)(inputs)``, Keras' ``keras.layers.average``."""
    return Average(**options)(inputs)


def concatenate(inputs, axis=-1, **options):
    """``Concatenate(axis, **options)(inputs)``, Keras' ``keras.layers.concatenate``."""
    return Concatenate(axis, **options)(inputs)


__all__ = ["Add", "Average", "Concatenate", "Merge", "Multiply", "Subtract", "add", "average",
           "concatenate", "multiply", "subtract"]
