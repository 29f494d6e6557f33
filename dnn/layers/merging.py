"""Merge layers (Keras' ``keras.layers.merging``): Add, Subtract, Multiply, Average, Maximum,
Minimum, Concatenate and Dot, which join the outputs of several layers into one (a residual
block's ``Add()([x, y])``), and Keras' functions of them (``add([x, y])``,
``concatenate(...)``).

A merge layer takes a list of batches, each ``(n, *shape)``: its ``forward`` is given the list
and its ``backward`` returns one input gradient per input, in order (the model copies an
array it is given for two inputs before either's layer may overwrite it).  Shapes are a
sample's, as everywhere; ``input_shape`` is the list of its inputs' shapes.  The elementwise
merges broadcast their inputs as Keras does: the shapes lined up from the last axis (an input
of fewer axes taken as of size 1 on the first ones), a size 1 stretched to the others'
(``multiply([x, scale])`` with ``x`` ``(h, w, c)`` and ``scale`` ``(1, 1, c)`` or ``(c,)``);
each such input's gradient is summed over the axes it was stretched along.
"""

from __future__ import annotations

import numbers

from dnn.callbacks.arguments import check_flag
from dnn.errors import UsageError
from dnn.layers.base import Layer, check_keras_only


class Merge(Layer):
    """What the merge layers share: the inputs' checks, their broadcast shape and the
    reduction of a gradient to each input's shape.  A subclass gives ``forward`` and
    ``backward`` (and ``merge_shape`` where its output is not the elementwise one);
    ``exact_inputs`` is the number of inputs it takes where that is fixed (Subtract's two)."""

    takes_several = True
    exact_inputs = None

    def __init__(self, name=None, trainable=True, **keras_only):
        check_keras_only(type(self).__name__, keras_only)
        super().__init__(name, trainable=trainable)

    def compute_output_shape(self, input_shape):
        shapes = _shapes(input_shape)
        kind = type(self).__name__
        if not shapes:
            raise UsageError(f"{self.name} ({kind}) merges a list of inputs: call it on a "
                             f"list, {kind}()([x, y]), in a functional model (keras.Model"
                             f"(inputs, outputs)); in a Sequential each layer takes one input")
        if self.exact_inputs is not None and len(shapes) != self.exact_inputs:
            raise UsageError(f"{self.name} ({kind}) takes exactly {self.exact_inputs} inputs, "
                             f"not {len(shapes)}")
        return self.merge_shape(shapes)

    def merge_shape(self, shapes: list) -> tuple:
        """The output's sample shape from the inputs' (elementwise: their broadcast shape)."""
        rank = max(len(shape) for shape in shapes)
        lined_up = [_lined_up(shape, rank) for shape in shapes]
        if any(len(set(sizes) - {1}) > 1 for sizes in zip(*lined_up)):
            raise UsageError(f"{self.name} ({type(self).__name__}) merges inputs of one shape, "
                             "or of shapes that broadcast (lined up from the last axis, a "
                             f"size 1 stretched to the others'), not "
                             f"{', '.join(map(str, shapes))}")
        return tuple(next(iter(set(sizes) - {1}), 1) for sizes in zip(*lined_up))

    def _lined_up(self, index: int, x):
        """Input ``index``'s batch ``x`` with the output's number of axes (a view)."""
        shape = _lined_up(self.input_shape[index], len(self.output_shape))
        return x if x.ndim == len(shape) + 1 else self.xp.reshape(x, (x.shape[0], *shape))

    def _output(self, inputs):
        """The layer's output buffer for ``inputs``' rows, holding the first input."""
        out = self._buffers("output", (inputs[0].shape[0], *self.output_shape), inputs[0].dtype)
        out[...] = self._lined_up(0, inputs[0])
        return out

    def _for_input(self, index: int, grad):
        """``grad`` (of the output's shape) summed to input ``index``'s shape over the axes it
        was stretched along, in a buffer of the layer's; ``grad`` itself where it has that
        shape."""
        shape = tuple(self.input_shape[index])
        if shape == tuple(self.output_shape):
            return grad
        lined_up = _lined_up(shape, len(self.output_shape))
        axes = tuple(axis + 1 for axis, (size, out) in
                     enumerate(zip(lined_up, self.output_shape)) if size != out)
        into = self._buffers(f"grad_{index}", (grad.shape[0], *lined_up), grad.dtype)
        into[...] = self.xp.sum(grad, axis=axes, keepdims=True)
        return self.xp.reshape(into, (grad.shape[0], *shape))

    def get_config(self) -> dict:
        return self._config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _lined_up(shape, rank: int) -> tuple:
    """``shape`` with ``rank`` axes, sizes 1 before it (Keras' broadcasting)."""
    return (1,) * (rank - len(shape)) + tuple(shape)


def _shapes(input_shape) -> list | None:
    """``input_shape`` as a list of sample shapes (tuples), or None where it is one shape."""
    if not isinstance(input_shape, (list, tuple)) or not all(
            isinstance(shape, (list, tuple)) for shape in input_shape):
        return None
    return [tuple(shape) for shape in input_shape]


class Add(Merge):
    """Keras' ``Add()([x1, x2, ...])``: their elementwise sum."""

    def forward(self, inputs, logits=False, training=False):
        out = self._output(inputs)
        for index in range(1, len(inputs)):
            out += self._lined_up(index, inputs[index])
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        return [self._for_input(index, grad) for index in range(len(self.input_shape))]


class Subtract(Merge):
    """Keras' ``Subtract()([x1, x2])``: ``x1 - x2``."""

    exact_inputs = 2

    def forward(self, inputs, logits=False, training=False):
        out = self._output(inputs)
        out -= self._lined_up(1, inputs[1])
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        negative = self._buffers("negative_grad", grad.shape, grad.dtype)
        negative[...] = grad
        negative *= -1.0
        return [self._for_input(0, grad), self._for_input(1, negative)]


class Multiply(Merge):
    """Keras' ``Multiply()([x1, x2, ...])``: their elementwise product; each input's gradient
    is the output gradient times the other inputs."""

    def __init__(self, name=None, trainable=True, **keras_only):
        super().__init__(name, trainable, **keras_only)
        self._inputs = None

    def forward(self, inputs, logits=False, training=False):
        self._inputs = [self._lined_up(index, x) for index, x in enumerate(inputs)]
        out = self._output(inputs)
        for x in self._inputs[1:]:
            out *= x
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grads = []
        for index in range(len(self._inputs)):
            product = self._buffers(f"product_{index}", grad.shape, grad.dtype)
            product[...] = grad
            for other, x in enumerate(self._inputs):
                if other != index:
                    product *= x
            grads.append(self._for_input(index, product))
        return grads


class Average(Merge):
    """Keras' ``Average()([x1, x2, ...])``: their elementwise mean."""

    def forward(self, inputs, logits=False, training=False):
        out = self._output(inputs)
        for index in range(1, len(inputs)):
            out += self._lined_up(index, inputs[index])
        out /= float(len(inputs))
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grad /= float(len(self.input_shape))
        return [self._for_input(index, grad) for index in range(len(self.input_shape))]


class Maximum(Merge):
    """Keras' ``Maximum()([x1, x2, ...])``: their elementwise maximum; each element's
    gradient goes to the input that holds it, the first of equal ones (as MaxPooling2D's)."""

    pick = "maximum"  # the array namespace's function that picks an element of two

    def __init__(self, name=None, trainable=True, **keras_only):
        super().__init__(name, trainable, **keras_only)
        self._inputs = self._output_of_forward = None

    def forward(self, inputs, logits=False, training=False):
        self._inputs = [self._lined_up(index, x) for index, x in enumerate(inputs)]
        out = self._output_of_forward = self._output(inputs)
        for x in self._inputs[1:]:
            out[...] = getattr(self.xp, self.pick)(out, x)
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp = self.xp
        claimed = self._buffers("claimed", grad.shape, xp.bool)  # by an input before
        claimed[...] = False
        zeros = self._buffers("zeros", grad.shape, grad.dtype)
        zeros[...] = 0
        grads = []
        for index, x in enumerate(self._inputs):
            holds = self._buffers(f"holds_{index}", grad.shape, xp.bool)
            holds[...] = xp.logical_and(xp.equal(x, self._output_of_forward),
                                        xp.logical_not(claimed))
            claimed[...] = xp.logical_or(claimed, holds)
            part = self._buffers(f"part_{index}", grad.shape, grad.dtype)
            part[...] = xp.where(holds, grad, zeros)
            grads.append(self._for_input(index, part))
        return grads


class Minimum(Maximum):
    """Keras' ``Minimum()([x1, x2, ...])``: their elementwise minimum, its gradient as
    :class:`Maximum`'s."""

    pick = "minimum"


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


class Dot(Merge):
    """Keras' ``Dot(axes, normalize=False)([x1, x2])``: each sample of ``x1`` dotted with
    the sample of ``x2`` along one axis of each (``axes``, an int for both or a pair, counted
    as Keras counts them: the batch axis 0, -1 the last).  Samples of one or two axes:
    ``(n, d)`` and ``(n, d)`` give ``(n, 1)`` (two towers' similarity); ``(n, a, d)`` and
    ``(n, b, d)`` with ``axes=2`` give ``(n, a, b)``: the axes left of ``x1``, then of
    ``x2``.  ``normalize=True`` divides each input by its L2 norm along its axis first (by
    ``EPSILON`` where the norm is smaller), making the product their cosine similarity, as
    Keras does.  The products are the backend's ``batch_matmul``."""

    exact_inputs = 2
    EPSILON = 1e-7  # Keras' backend.epsilon(): the smallest norm normalize divides by

    def __init__(self, axes, normalize=False, name=None, trainable=True, **keras_only):
        pair = axes if isinstance(axes, (list, tuple)) else (axes, axes)
        if len(pair) != 2 or not all(isinstance(axis, numbers.Integral)
                                     and not isinstance(axis, bool) for axis in pair):
            raise UsageError(f"Dot's axes must be an integer or a pair of integers, not "
                             f"{axes!r}")
        check_flag("Dot", "normalize", normalize)
        super().__init__(name, trainable, **keras_only)
        self.axes = [int(axis) for axis in axes] if isinstance(axes, (list, tuple)) else int(axes)
        self.normalize = normalize
        self._sample_axes = None  # the axis of each input within a sample, once built
        self._operands = self._norms = None  # of the last forward

    def _axes_of(self, shapes: list) -> tuple:
        """The summed axis of each input within its sample shape (0 its first)."""
        pair = self.axes if isinstance(self.axes, list) else [self.axes] * 2
        found = []
        for axis, shape in zip(pair, shapes):
            batch_rank = len(shape) + 1
            if not -batch_rank <= axis < batch_rank:
                raise UsageError(f"{self.name} (Dot) cannot sum along axis {axis}: inputs of "
                                 f"shape {(None, *shape)} have no such axis")
            if axis % batch_rank == 0:
                raise UsageError(f"{self.name} (Dot) cannot sum along axis {axis} of inputs "
                                 f"of shape {(None, *shape)}: it sums along an axis other "
                                 "than the batch's (0)")
            found.append(axis % batch_rank - 1)
        return tuple(found)

    def merge_shape(self, shapes):
        if any(not 1 <= len(shape) <= 2 for shape in shapes):
            raise UsageError(f"{self.name} (Dot) takes samples of one or two axes, not "
                             f"{', '.join(str((None, *shape)) for shape in shapes)}")
        first, second = self._axes_of(shapes)
        if shapes[0][first] != shapes[1][second]:
            raise UsageError(f"{self.name} (Dot) sums along axes of one size, not "
                             f"{shapes[0][first]} (axis {first + 1} of "
                             f"{(None, *shapes[0])}) and {shapes[1][second]} (axis "
                             f"{second + 1} of {(None, *shapes[1])})")
        left = shapes[0][:first] + shapes[0][first + 1:]
        right = shapes[1][:second] + shapes[1][second + 1:]
        return left + right or (1,)

    def build(self, input_shape):
        self._sample_axes = self._axes_of(_shapes(input_shape))

    def _as_products(self, x, y):
        """``(a, b)``: views of ``x`` ``(n, p, k)`` and ``y`` ``(n, k, q)`` whose batch of
        matrix products is the output (``k`` the summed axis)."""
        (first, second), xp = self._sample_axes, self.xp
        a = (xp.reshape(x, (x.shape[0], 1, x.shape[1])) if x.ndim == 2
             else x if first == 1 else xp.matrix_transpose(x))
        b = (xp.reshape(y, (y.shape[0], y.shape[1], 1)) if y.ndim == 2
             else y if second == 0 else xp.matrix_transpose(y))
        return a, b

    def _normalized(self, index: int, x):
        """``(unit, (inverse, above))``: input ``index``'s batch ``x`` over its L2 norm
        along its axis (in a buffer), the inverse norms (at most ``1 / EPSILON``) and 1 where
        the norm was at least ``EPSILON``, else 0 (kept for the backward pass)."""
        xp, axis = self.xp, self._sample_axes[index] + 1
        squares = xp.sum(x * x, axis=axis, keepdims=True)
        above = self._buffers(f"above_epsilon_{index}", squares.shape, x.dtype)
        above[...] = xp.astype(squares >= self.EPSILON ** 2, x.dtype)
        inverse = self._buffers(f"inverse_norm_{index}", squares.shape, x.dtype)
        inverse[...] = 1.0 / xp.sqrt(xp.maximum(squares, self.EPSILON ** 2))
        unit = self._buffers(f"unit_{index}", x.shape, x.dtype)
        unit[...] = x * inverse
        return unit, (inverse, above)

    def forward(self, inputs, logits=False, training=False):
        x, y = inputs
        if self.normalize:
            (x, norms_x), (y, norms_y) = self._normalized(0, x), self._normalized(1, y)
            self._norms = norms_x, norms_y
        self._operands = x, y
        a, b = self._as_products(x, y)
        out = self._buffers("output", (a.shape[0], a.shape[1], b.shape[2]), x.dtype)
        self._backend.batch_matmul(a, b, out)
        return self.xp.reshape(out, (x.shape[0], *self.output_shape))

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp, (x, y) = self.xp, self._operands
        a, b = self._as_products(x, y)
        grad = xp.reshape(grad, (grad.shape[0], a.shape[1], b.shape[2]))
        grad_a = self._buffers("grad_products_0", a.shape, grad.dtype)
        self._backend.batch_matmul(grad, xp.matrix_transpose(b), grad_a)
        grad_b = self._buffers("grad_products_1", b.shape, grad.dtype)
        self._backend.batch_matmul(xp.matrix_transpose(a), grad, grad_b)
        grads = []
        for index, (operand, of_products) in enumerate(((x, grad_a), (y, grad_b))):
            into = self._buffers(f"grad_{index}", operand.shape, grad.dtype)
            # the inverse of _as_products' view: the summed axis last in a, first in b
            kept_as_is = self._sample_axes[index] == (1 if index == 0 else 0)
            into[...] = (xp.reshape(of_products, operand.shape) if operand.ndim == 2
                         else of_products if kept_as_is else xp.matrix_transpose(of_products))
            if self.normalize:
                self._through_norm(index, into)
            grads.append(into)
        return grads

    def _through_norm(self, index: int, grad) -> None:
        """``grad``, input ``index``'s gradient of its normalized batch, made in place the
        gradient of the batch itself: ``(grad - unit * sum(grad * unit)) / norm`` along the
        axis (``grad / EPSILON`` where the norm was below it: the division was by that)."""
        xp, axis = self.xp, self._sample_axes[index] + 1
        unit, (inverse, above) = self._operands[index], self._norms[index]
        along = xp.sum(grad * unit, axis=axis, keepdims=True)
        along *= above  # a norm below EPSILON: a constant divisor
        grad -= unit * along
        grad *= inverse

    def get_config(self) -> dict:
        return self._config(axes=self.axes, **({"normalize": True} if self.normalize else {}))

    def __repr__(self) -> str:
        return f"Dot(axes={self.axes!r}, normalize={self.normalize})"


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


def maximum(inputs, **options):
    """``Maximum(**options)(inputs)``, Keras' ``keras.layers.maximum``."""
    return Maximum(**options)(inputs)


def minimum(inputs, **options):
    """``Minimum(**options)(inputs)``, Keras' ``keras.layers.minimum``."""
    return Minimum(**options)(inputs)


def dot(inputs, axes=-1, normalize=False, **options):
    """``Dot(axes, normalize, **options)(inputs)``, Keras' ``keras.layers.dot``."""
    return Dot(axes, normalize, **options)(inputs)


def concatenate(inputs, axis=-1, **options):
    """``Concatenate(axis, **options)(inputs)``, Keras' ``keras.layers.concatenate``."""
    return Concatenate(axis, **options)(inputs)


__all__ = ["Add", "Average", "Concatenate", "Dot", "Maximum", "Merge", "Minimum", "Multiply",
           "Subtract", "add", "average", "concatenate", "dot", "maximum", "minimum",
           "multiply", "subtract"]
