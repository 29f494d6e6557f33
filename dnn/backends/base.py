"""The Backend base class: every kernel written once over the array namespace ``self.xp``.

Shapes used in the docstrings: ``n`` samples in a batch, ``i`` inputs of a layer, ``o`` its
outputs, ``k`` classes; for images (channels-last) ``h, w, c`` an input's height, width and
channels, ``kh, kw`` a window's, ``oh, ow`` the output's (:mod:`dnn.backends.windows`); ``m``
the rows of a batch of any shape ``(n, ..., c)`` seen as ``(m, c)`` (batch normalization's sums
per channel).  A backend subclass overrides a kernel only where it is measurably faster
(in-place NumPy ufuncs and C for ``cpu``, CUDA kernels for ``gpu``) and must give the same
numbers as the generic version here (to rounding where it adds a sum in another order); the
cross-backend tests pin them together.

Who owns what: a kernel writes its results into arrays the caller allocated and owns (``out``,
``grad_kernel``, ...; a layer keeps them from batch to batch, see :mod:`dnn.layers`) or, where
it says so, in place into one of its arguments.  It returns nothing else that it will write
again: its own temporaries never leave it.  The one piece of state a kernel keeps between two
calls is a layer's :class:`InputColumns`, which the layer owns and hands to its forward and
backward kernels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnn.backends.windows import Span, Window

Array = Any  # an array of the backend's own type
ONE_HOT_ELEMENTS = 2**22  # the largest one-hot block of the generic scatter_add_rows


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, why and how to fix it (``reason``); for an
    available backend ``reason`` may note how it runs (``dnn plugins`` shows it)."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


class InputColumns:
    """A layer's record of which columns of its input batch its backend kept in the last
    forward product: a backend may leave out the columns that are zero in the whole batch
    (they add nothing to ``x @ kernel`` and make their rows of the kernel's gradient zero).

    The layer owns one and hands it to the forward and the backward kernel of the same batch;
    the forward kernel sets ``kept`` (the ``(k,)`` increasing indices of the kept columns, or
    None when it multiplied them all) and ``packed`` (``x[:, kept]``, ``(n, k)``), and may keep
    the arrays behind them from batch to batch in ``buffers`` (a :class:`dnn.buffers.Buffers`
    it makes on first use).  Backends that never leave columns out ignore it.
    """

    def __init__(self):
        self.kept = None
        self.packed = None
        self.buffers = None


def _outputs(top: Span, left: Span) -> tuple:
    """The index of :meth:`Backend.im2col`'s ``(n, oh, ow, kh, kw, c)`` entries that window
    offset ``(top.offset, left.offset)`` fills from the image."""
    return (slice(None), slice(top.out_start, top.out_stop),
            slice(left.out_start, left.out_stop), top.offset, left.offset, slice(None))


def _inputs(window: Window, top: Span, left: Span) -> tuple:
    """The index of the ``(n, h, w, c)`` inputs that window offset ``(top.offset,
    left.offset)`` reads, one per output of :func:`_outputs`."""
    rows, columns = window.rows.stride, window.columns.stride
    return (slice(None), slice(top.in_start, top.in_start + (top.count - 1) * rows + 1, rows),
            slice(left.in_start, left.in_start + (left.count - 1) * columns + 1, columns),
            slice(None))


class Backend:
    """A place to compute: an array namespace plus the few hot kernels of training."""

    name: str = "base"
    xp: Any = None

    @classmethod
    def is_available(cls) -> Availability:
        return Availability(True)

    # -- host <-> device ---------------------------------------------------------------
    def asarray(self, host_array, dtype=None) -> Array:
        """Move a host array (or Python scalar) to this backend, optionally casting."""
        return self.xp.asarray(host_array, dtype=self.dtype(dtype) if dtype else None)

    def to_numpy(self, array) -> np.ndarray:
        """A host NumPy copy of a backend array (it shares no memory with ``array``)."""
        return np.array(array, copy=True)

    def empty(self, shape, dtype) -> Array:
        """A new uninitialised array of ``shape`` and ``dtype`` (a name such as
        ``"float32"``, a NumPy dtype, or the backend's own dtype object) on this backend."""
        if isinstance(dtype, (str, np.dtype, type)):
            dtype = self.dtype(dtype)
        return self.xp.empty(tuple(shape), dtype=dtype)

    def buffer(self, shape, dtype) -> Array:
        """A new uninitialised array, as :meth:`empty` makes one, to keep from step to step
        (a :class:`dnn.buffers.Buffers` array): a backend that captures steps makes it outside
        the memory a captured step's temporaries take."""
        return self.empty(shape, dtype)

    def synchronize(self) -> None:
        """Wait until queued work has finished (a no-op on synchronous backends)."""

    def overflow_silenced(self):
        """A context in which overflow and invalid operations give inf and NaN without a
        warning: ``fit`` trains in it and reports a loss that is not finite as one
        :class:`dnn.errors.DivergenceError` instead.  No-op by default."""
        return contextlib.nullcontext()

    def captures_steps(self) -> bool:
        """True when :meth:`capture` may capture training steps here (then values that change
        from step to step, such as Adam's step size, are kept in device arrays)."""
        return False

    def capture(self, step):
        """A captured ``step`` (a function of no arguments that reads and writes only arrays
        that outlive it, see :mod:`dnn.trainers.step`) with a ``replay()`` method, or None where this
        backend runs steps eagerly (the default).  Raises :class:`dnn.errors.CaptureError`
        when the step cannot be captured; the caller then runs it eagerly."""
        return None

    def graph_kernels(self):
        """A context in which kernels run as they do inside a captured step, so that eager
        steps compare bit for bit with replays.  No-op by default."""
        return contextlib.nullcontext()

    def warmed_up(self) -> bool:
        """Whether the last step run with :meth:`graph_kernels` took no new memory for the
        temporaries of the next capture: a capture from where it left that memory then finds
        every block it asks for.  (A warm-up from empty memory cannot tell: the blocks a run
        finds free are not those it found as it made them.)  True by default."""
        return True

    def dtype(self, name):
        """The backend's dtype object for a name such as ``"float32"``."""
        return getattr(self.xp, str(np.dtype(name)))

    def is_own_array(self, array) -> bool:
        """True when ``array`` is an array of this backend (and not, say, a NumPy array)."""
        return type(array) is type(self.xp.asarray(0))

    # -- data ----------------------------------------------------------------------------
    def take_rows(self, data: Array, indices: Array, out: Array) -> Array:
        """``out = data[indices]``: rows of ``(N, ...)`` ``data`` gathered by ``(n,)`` integer
        indices into ``out`` ``(n, ...)``; returns ``out``."""
        out[...] = self.xp.take(data, indices, axis=0)
        return out

    def scatter_add_rows(self, rows: Array, indices: Array, out: Array) -> Array:
        """``out[indices[k]] += rows[k]`` for every ``k`` (an index met twice adds both):
        ``rows`` ``(m, d)``, integer ``indices`` ``(m,)``, ``out`` ``(V, d)``; returns
        ``out``.  Here as products of one-hot blocks (the array API has no scatter), at most
        :data:`ONE_HOT_ELEMENTS` of them at a time: ``m * V * d`` multiply-adds, in the same
        order every time (no atomics), which a large vocabulary ``V`` makes slow; the cpu
        backend scatters."""
        xp = self.xp
        vocabulary = xp.arange(out.shape[0], dtype=indices.dtype)
        count = rows.shape[0]
        step = max(1, ONE_HOT_ELEMENTS // out.shape[0])
        for start in range(0, count, step):
            block = slice(start, min(start + step, count))
            picks = xp.astype(xp.expand_dims(indices[block], axis=1) == vocabulary,
                              out.dtype)  # (rows, V)
            out += self._matmul(xp.matrix_transpose(picks), rows[block, ...])
        return out

    def _matmul(self, a: Array, b: Array) -> Array:
        """``a @ b`` of matrices ``(m, k)`` and ``(k, n)``, a new array."""
        return self.xp.matmul(a, b)

    # -- dense layers ----------------------------------------------------------------------
    def dense_forward(self, x: Array, kernel: Array, bias: Array, out: Array,
                      columns: InputColumns | None = None) -> Array:
        """``out = x @ kernel + bias``: ``(n, i) @ (i, o) + (o,)`` into ``out`` ``(n, o)``;
        returns ``out``.  ``columns``, the layer's, records the columns of ``x`` a backend left
        out of the product (all zero in the batch), for :meth:`dense_backward`."""
        out[...] = self.xp.matmul(x, kernel) + bias
        return out

    def dense_backward(self, x: Array, grad_z: Array, kernel: Array, grad_kernel: Array,
                       grad_bias: Array, grad_x: Array | None = None,
                       columns: InputColumns | None = None) -> None:
        """The gradients of ``z = x @ kernel + bias`` given ``dL/dz`` ``(n, o)``, written into
        ``grad_kernel`` ``(i, o)``, ``grad_bias`` ``(o,)`` and, unless it is None (the first
        layer), ``grad_x`` ``(n, i)``.  ``columns`` is what :meth:`dense_forward` recorded for
        this ``x``."""
        xp = self.xp
        grad_kernel[...] = xp.matmul(xp.matrix_transpose(x), grad_z)
        grad_bias[...] = xp.sum(grad_z, axis=0)
        if grad_x is not None:
            grad_x[...] = xp.matmul(grad_z, xp.matrix_transpose(kernel))

    def dense_relu_forward(self, x: Array, kernel: Array, bias: Array, out: Array,
                           columns: InputColumns | None = None) -> Array:
        """``out = relu(x @ kernel + bias)``, ``(n, i) -> (n, o)``: the hidden layer of the
        classic network; a backend may add the bias and take the relu in one pass."""
        return self.relu(self.dense_forward(x, kernel, bias, out, columns))

    def batch_matmul(self, a: Array, b: Array, out: Array) -> Array:
        """``out`` ``(n, p, q)``: the matrix product of each ``a`` ``(n, p, k)`` with its
        ``b`` ``(n, k, q)`` (the Dot layer's products)."""
        out[...] = self.xp.matmul(a, b)
        return out

    # -- windows: convolution and pooling, channels-last -----------------------------------
    def im2col(self, x: Array, window: Window, cols: Array, fill=0.0) -> Array:
        """The inputs each window covers: ``x`` ``(n, h, w, c)`` into ``cols``
        ``(n, oh, ow, kh, kw, c)`` (what ``cols.reshape(n * oh * ow, kh * kw * c)`` multiplies
        with a ``(kh * kw * c, filters)`` kernel), ``fill`` where a window reaches past the
        image; returns ``cols``."""
        if window.padded:
            cols[...] = fill
        for top in window.rows.spans():
            for left in window.columns.spans():
                if top.count and left.count:
                    cols[_outputs(top, left)] = x[_inputs(window, top, left)]
        return cols

    def col2im(self, grad_cols: Array, window: Window, grad_x: Array) -> Array:
        """The gradient of :meth:`im2col`: each ``(n, oh, ow, kh, kw, c)`` entry of
        ``grad_cols`` added into the ``(n, h, w, c)`` input it was taken from, window offsets
        in order (row offset, then column offset), onto zeros; returns ``grad_x``."""
        grad_x[...] = 0
        for top in window.rows.spans():
            for left in window.columns.spans():
                if top.count and left.count:
                    inputs = _inputs(window, top, left)
                    grad_x[inputs] = grad_x[inputs] + grad_cols[_outputs(top, left)]
        return grad_x

    def max_pool(self, x: Array, window: Window, out: Array, argmax: Array) -> Array:
        """Max pooling: ``out`` ``(n, oh, ow, c)`` the largest input of each window of ``x``
        ``(n, h, w, c)`` and ``argmax`` (int32, same shape) the first window cell
        ``i * kw + j`` holding it, row-major (a NaN wins, as the first).  Cells past the image
        read as -inf: one wins only a window whose inputs are all -inf, and the gradient of
        that window is then dropped.  Returns ``out``."""
        xp = self.xp
        n, c = x.shape[0], x.shape[-1]
        cols = self.im2col(x, window, self.empty((n, *window.output, *window.kernel, c),
                                                 x.dtype), fill=-np.inf)
        flat = xp.reshape(cols, (n, *window.output, window.cells, c))
        argmax[...] = xp.astype(xp.argmax(flat, axis=3), argmax.dtype)
        out[...] = xp.max(flat, axis=3)
        return out

    def max_pool_backward(self, grad: Array, argmax: Array, window: Window,
                          grad_x: Array) -> Array:
        """The gradient of :meth:`max_pool`: each of ``grad`` ``(n, oh, ow, c)`` added into
        the input its window's ``argmax`` cell read, ``grad_x`` ``(n, h, w, c)`` zeros
        elsewhere (window offsets in order, as :meth:`col2im` adds); returns ``grad_x``."""
        xp = self.xp
        n, oh, ow, c = grad.shape
        cells = xp.reshape(xp.arange(window.cells, dtype=argmax.dtype), (1, 1, 1, -1, 1))
        chosen = xp.expand_dims(argmax, axis=3) == cells
        routed = xp.where(chosen, xp.expand_dims(grad, axis=3), xp.zeros((), dtype=grad.dtype))
        return self.col2im(xp.reshape(routed, (n, oh, ow, *window.kernel, c)), window, grad_x)

    # -- batch normalization: sums per channel over a batch's rows --------------------------
    def channel_sums(self, x: Array, out: Array, mean: Array | None = None) -> Array:
        """The sums per channel of ``x`` ``(m, c)`` (a channels-last batch as rows: every
        value of one channel in a column) into ``out`` ``(c,)``: ``sum_m x[m, c]``, or given
        ``mean`` ``(c,)`` the sum of squares about it, ``sum_m (x[m, c] - mean[c]) ** 2``;
        zeros for no rows.  Returns ``out``.  A backend may add the rows in another order:
        the sums then agree to rounding."""
        terms = x
        if mean is not None:
            centered = x - mean
            terms = centered * centered
        out[...] = self.xp.sum(terms, axis=0)
        return out

    def channel_gradient_sums(self, grad: Array, normalized: Array, out: Array) -> Array:
        """The sums per channel that batch normalization's gradients are made of, over ``(m,
        c)`` rows as :meth:`channel_sums` takes them, into ``out`` ``(2 * c,)``: ``out[:c]``
        the sums of ``grad`` (``dL/dout``), ``out[c:]`` those of ``grad * normalized`` (the
        normalized inputs).  Returns ``out``."""
        xp, channels = self.xp, grad.shape[1]
        out[:channels] = xp.sum(grad, axis=0)
        out[channels:] = xp.sum(grad * normalized, axis=0)
        return out

    # -- activations ---------------------------------------------------------------------------
    def relu(self, z: Array) -> Array:
        """``z = max(z, 0)`` in place, NaN kept; returns ``z``."""
        xp = self.xp
        z[...] = xp.maximum(z, xp.zeros_like(z))
        return z

    def relu_backward(self, grad: Array, out: Array) -> Array:
        """``grad = grad * (out > 0)`` in place: the gradient through relu given its output
        ``out`` (a NaN output counts as a dead unit); returns ``grad``."""
        xp = self.xp
        grad[...] = xp.where(out > 0, grad, xp.zeros_like(grad))
        return grad

    def softmax_crossentropy(self, logits: Array, targets: Array, grad: Array) -> Array:
        """Softmax cross-entropy from ``(n, k)`` logits and one-hot targets, computed stably.

        Returns the 0-d sum over the batch of ``-sum(targets * log_softmax(logits))`` and
        writes into ``grad`` ``(n, k)`` the gradient of the batch *mean* with respect to the
        logits, ``(softmax(logits) - targets) / n``.
        """
        xp = self.xp
        n = logits.shape[0]
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = xp.sum(exp, axis=1, keepdims=True)
        loss_sum = xp.sum(xp.log(total)) - xp.sum(targets * shifted)
        grad[...] = (exp / total - targets) / n
        return loss_sum

    # -- metrics -------------------------------------------------------------------------------
    def correct_count(self, output: Array, targets: Array, threshold: float = 0.5):
        """The number of samples whose predicted class matches the target, as a 0-d integer
        array (or a Python int, where a backend counts on the host).

        ``output`` is ``(n, k)`` (probabilities or logits: the argmax is the same); ``targets``
        are one-hot ``(n, k)`` or labels ``(n,)``.  With ``k == 1`` the prediction is
        ``output > threshold`` (0.5 for a probability, 0 for a logit).
        """
        xp = self.xp
        if output.shape[1] == 1:
            predicted = xp.astype(output[:, 0] > threshold, targets.dtype)
            labels = xp.reshape(targets, (-1,))
        else:
            predicted = xp.argmax(output, axis=1)
            labels = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
        return xp.sum(xp.astype(predicted == xp.astype(labels, predicted.dtype), xp.int64))

    # -- optimizer updates ---------------------------------------------------------------------
    def fused_update(self, name: str):
        """A fused kernel of the optimizer update called ``name``, or None (the default): the
        optimizer then runs its own formula over ``xp``, the reference a kernel is tested
        against.  The built-in names and their arguments (state arrays in place, None for an
        absent one; hyper-parameters as 0-d arrays of the backend in the parameter's dtype, the
        optimizer's own, which a captured step must read on the device, or Python numbers):

        - ``"sgd"``: ``(param, grad, velocity, learning_rate, momentum, nesterov)``
        - ``"rmsprop"``: ``(param, grad, mean_square, mean_grad, momentum_buffer,
          learning_rate, rho, momentum, epsilon)``
        - ``"adam"``: ``(param, grad, m, v, step_size, beta_1, beta_2, epsilon)``

        The kernel returns True when it took the step, False when it cannot take these arrays
        (their dtype, say, or a variant it leaves to the formula).
        """
        return None
