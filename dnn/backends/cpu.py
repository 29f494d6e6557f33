"""The ``cpu`` backend: NumPy, with fused float32 kernels in C and in-place kernels that reuse
preallocated buffers.

Every override computes the same expression, in the same order of operations, as the generic
kernel in :mod:`dnn.backends.base`, so both give the same bits; it only avoids temporaries and
passes over memory.  The fused kernels (``dnn.backends._cpu_kernels``, built from C at install
time) do each elementwise update in one pass, and the softmax cross-entropy, its gradient and
the accuracy count in a few calls instead of a dozen NumPy ones; where the extension could not
be built (no C compiler), or for float64, the same arithmetic runs as NumPy ufuncs.

One override does less arithmetic than the generic kernel instead of the same: the products of a
large layer leave out the input columns that are zero in the whole batch (a third of an MNIST
batch's pixels), which add nothing to them.  The kernel's gradient is then the same (its rows
for those columns are zero), and the forward product equal to rounding (BLAS adds the remaining
terms in other blocks).  The one difference: where a left-out column meets an infinite or NaN
weight or gradient, the full product would turn ``0 * inf`` into NaN, and here the term is
absent; a run that has such values has diverged already, and its loss says so.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from dnn.backends.base import Availability, Backend

try:
    from dnn.backends import _cpu_kernels as FUSED_KERNELS
except ImportError:  # installed without a C compiler
    FUSED_KERNELS = None


def _buffer(scratch: dict, key: str, shape, dtype) -> np.ndarray:
    """A reusable array in ``scratch`` for ``key``, one per shape and dtype (a training run
    needs two batch sizes: the full one and the last, smaller one)."""
    slot = (key, tuple(shape), np.dtype(dtype))
    array = scratch.get(slot)
    if array is None:
        array = scratch[slot] = np.empty(shape, dtype)
    return array


FLOAT32 = np.dtype(np.float32)

# NumPy optimizer updates of parameters at least this large are split across the CPU cores
# (ufuncs run on one core and release the GIL); smaller ones are not worth a thread hand-off.
# The fused kernels run on one core: one pass is faster than the hand-off (docs/benchmarks.md).
PARALLEL_MIN_SIZE = 1 << 16

# A column of a batch that is zero in every row adds nothing to ``x @ kernel`` and makes its row
# of the kernel's gradient zero (the pixels at an MNIST digit's edge: a third of a batch's).
# Products with a kernel of at least SKIP_MIN_KERNEL_SIZE elements leave those columns out
# when at least SKIP_MIN_ZERO_SHARE of them are zero; below that, gathering the kept rows of the
# kernel and scattering the gradient's costs more than it saves (docs/benchmarks.md).
SKIP_MIN_KERNEL_SIZE = 1 << 16
SKIP_MIN_ZERO_SHARE = 0.25


class CpuBackend(Backend):
    """NumPy on the host CPU."""

    name = "cpu"
    xp = np

    def __init__(self, fused: bool = True):
        """``fused=False`` runs NumPy ufuncs only, even where the C extension is built."""
        self.fused_kernels = FUSED_KERNELS if fused else None
        self._thread_local = threading.local()  # per-thread temporaries for optimizer updates
        self._parts = max(1, min(os.cpu_count() or 1, 4))
        self._pool = None

    @classmethod
    def is_available(cls) -> Availability:
        if FUSED_KERNELS is None:
            return Availability(True, "NumPy kernels only: the C extension "
                                      "dnn.backends._cpu_kernels was not built (reinstall "
                                      "dnn-framework with a C compiler for faster training)")
        return Availability(True, "fused float32 kernels (C extension)")

    def _fusable(self, *arrays) -> bool:
        """True when the fused elementwise kernels can take ``arrays`` (None entries are
        ignored): the extension is built and the arrays are C-contiguous float32 of one shape."""
        if self.fused_kernels is None:
            return False
        shape = None
        for array in arrays:
            if array is None:
                continue
            # Comparing with the dtype instance takes half the time of comparing with np.float32.
            if array.dtype != FLOAT32 or not array.flags.c_contiguous:
                return False
            if shape is None:
                shape = array.shape
            elif array.shape != shape:
                return False
        return True

    def _in_parts(self, kernel, arrays: tuple, *scalars) -> None:
        """Run ``kernel(*arrays, *scalars)`` on row blocks of ``arrays`` (the parameter first;
        None entries pass through), one block per core, when the parameter is large."""
        param = arrays[0]
        if self._parts == 1 or param.size < PARALLEL_MIN_SIZE or param.shape[0] < self._parts:
            kernel(*arrays, *scalars)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._parts - 1,
                                                               thread_name_prefix="dnn-cpu")
        bounds = np.linspace(0, param.shape[0], self._parts + 1).astype(int)
        blocks = [[None if a is None else a[start:stop] for a in arrays]
                  for start, stop in zip(bounds[:-1], bounds[1:])]
        futures = [self._pool.submit(kernel, *block, *scalars) for block in blocks[1:]]
        kernel(*blocks[0], *scalars)
        for future in futures:
            future.result()

    def asarray(self, host_array, dtype=None) -> np.ndarray:
        return np.asarray(host_array, dtype=dtype)

    def overflow_silenced(self):
        return np.errstate(over="ignore", invalid="ignore")

    def is_own_array(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def take_rows(self, data, indices, scratch):
        out = _buffer(scratch, "rows", (len(indices),) + data.shape[1:], data.dtype)
        # mode="clip" writes straight into out; the default "raise" buffers a second copy.
        return np.take(data, indices, axis=0, out=out, mode="clip")

    def _nonzero_columns(self, x, kernel, scratch):
        """``(columns (k,), packed (n, k))``: the indices of the columns of ``x`` ``(n, i)`` that
        are not all zero and ``x[:, columns]``, when leaving the others out of the products
        with ``kernel`` pays (see SKIP_MIN_ZERO_SHARE); else None."""
        if (kernel.size < SKIP_MIN_KERNEL_SIZE or x.dtype != kernel.dtype
                or not x.flags.c_contiguous):
            return None
        rows, width = x.shape
        columns = _buffer(scratch, "columns", (width,), np.int64)
        fused = self._fusable(x)
        if fused:
            count = self.fused_kernels.nonzero_columns(x, columns)
        else:
            nonzero = np.flatnonzero(x.any(axis=0))
            count = len(nonzero)
            columns[:count] = nonzero
        if count > (1 - SKIP_MIN_ZERO_SHARE) * width:
            return None
        columns = columns[:count]
        # A view of the first n*k elements: contiguous, whatever k the batch has.
        packed = _buffer(scratch, "packed", x.shape, x.dtype).reshape(-1)[:rows * count]
        packed = packed.reshape(rows, count)
        if fused:
            self.fused_kernels.take_columns(x, columns, packed)
        else:
            np.take(x, columns, axis=1, out=packed, mode="clip")
        return columns, packed

    def _scatter_rows(self, source, rows, out):
        """``out[rows] = source`` and every other row of ``out`` zero (``rows`` increasing)."""
        if self._fusable(source) and self._fusable(out):
            self.fused_kernels.scatter_rows(source, rows, out)
            return
        out.fill(0)
        out[rows] = source

    def _product(self, x, kernel, scratch):
        """``x @ kernel`` ``(n, o)`` into the layer's reusable buffer, leaving out the columns
        of ``x`` that are zero in the whole batch when that pays; ``scratch["nonzero_input"]``
        keeps what the backward pass needs to do the same."""
        z = _buffer(scratch, "z", (x.shape[0], kernel.shape[1]), kernel.dtype)
        nonzero = self._nonzero_columns(x, kernel, scratch)
        scratch["nonzero_input"] = None if nonzero is None else (x, *nonzero)
        if nonzero is None:
            return np.matmul(x, kernel, out=z)
        columns, packed = nonzero
        kept_rows = _buffer(scratch, "kept_rows", kernel.shape, kernel.dtype)[:len(columns)]
        np.take(kernel, columns, axis=0, out=kept_rows, mode="clip")
        return np.matmul(packed, kept_rows, out=z)

    def _kernel_gradient(self, x, grad_z, kernel, scratch):
        """``x.T @ grad_z`` ``(i, o)``; over the columns the forward pass kept, if it left
        some out (the other rows are zero)."""
        grad_kernel = _buffer(scratch, "grad_kernel", kernel.shape, kernel.dtype)
        nonzero = scratch.get("nonzero_input")
        if nonzero is None or nonzero[0] is not x:
            return np.matmul(x.T, grad_z, out=grad_kernel)
        _, columns, packed = nonzero
        kept_rows = _buffer(scratch, "grad_kept_rows", kernel.shape, kernel.dtype)
        kept_rows = np.matmul(packed.T, grad_z, out=kept_rows[:len(columns)])
        self._scatter_rows(kept_rows, columns, grad_kernel)
        return grad_kernel

    def dense_forward(self, x, kernel, bias, scratch):
        z = self._product(x, kernel, scratch)
        z += bias
        return z

    def dense_backward(self, x, grad_z, kernel, need_input_grad, scratch):
        grad_kernel = self._kernel_gradient(x, grad_z, kernel, scratch)
        grad_bias = _buffer(scratch, "grad_bias", kernel.shape[1:], kernel.dtype)
        if self._fusable(grad_z) and grad_bias.dtype == FLOAT32:
            self.fused_kernels.column_sum(grad_z, grad_bias)
        else:
            np.sum(grad_z, axis=0, out=grad_bias)
        grad_x = None
        if need_input_grad:
            grad_x = _buffer(scratch, "grad_x", x.shape, kernel.dtype)
            np.matmul(grad_z, kernel.T, out=grad_x)
        return grad_x, grad_kernel, grad_bias

    def dense_relu_forward(self, x, kernel, bias, scratch):
        if not (self._fusable(bias) and kernel.dtype == np.float32):
            return super().dense_relu_forward(x, kernel, bias, scratch)
        z = self._product(x, kernel, scratch)
        self.fused_kernels.bias_relu(z, bias)
        return z

    def relu(self, z, scratch):
        return np.maximum(z, 0, out=z)

    def relu_backward(self, grad_out, out, scratch):
        if self._fusable(grad_out, out):
            self.fused_kernels.relu_backward(grad_out, out)
            return grad_out
        dead = _buffer(scratch, "relu_dead", out.shape, np.bool_)
        np.logical_not(np.greater(out, 0, out=dead), out=dead)  # not "<= 0": NaN counts as dead
        np.copyto(grad_out, 0, where=dead)
        return grad_out

    def softmax_crossentropy(self, logits, targets, scratch):
        if not self._fusable(logits, targets):
            return super().softmax_crossentropy(logits, targets, scratch)
        kernels = self.fused_kernels
        shifted = _buffer(scratch, "shifted", logits.shape, np.float32)
        kernels.subtract_row_max(logits, shifted)
        exp = np.exp(shifted, out=_buffer(scratch, "exp", logits.shape, np.float32))
        total = _buffer(scratch, "total", logits.shape[:1], np.float32)
        grad = _buffer(scratch, "softmax_grad", logits.shape, np.float32)
        target_logit_sum = kernels.softmax_crossentropy_grad(grad, exp, targets, shifted, total)
        return np.sum(np.log(total, out=total)) - np.float32(target_logit_sum), grad

    def correct_count(self, output, targets):
        if output.ndim == 2 and output.shape[1] > 1 and self._fusable(output, targets):
            return self.fused_kernels.count_correct(output, targets)
        return super().correct_count(output, targets)

    def _temporary(self, index: int, like: np.ndarray) -> np.ndarray:
        """The calling thread's ``index``-th scratch array shaped like ``like``; valid until
        that thread's next call."""
        temporaries = self._thread_local.__dict__.setdefault("buffers", {})
        return _buffer(temporaries, str(index), like.shape, like.dtype)

    def fused_update(self, name):
        """Every built-in update, in place: in one C pass for float32, else as NumPy in-place
        ufuncs on row blocks, one per core (5.8 times the speed of the optimizer's own formula
        in float64 on a 784x512 kernel, 1.5 times in float32 without the C extension:
        docs/benchmarks.md)."""
        return {"sgd": self._sgd, "rmsprop": self._rmsprop, "adam": self._adam}.get(name)

    def _sgd(self, param, grad, velocity, learning_rate, momentum, nesterov) -> bool:
        if self._fusable(param, grad, velocity):
            self.fused_kernels.sgd(param, grad, velocity, learning_rate, momentum, nesterov)
        else:
            self._in_parts(self._sgd_block, (param, grad, velocity), learning_rate, momentum,
                           nesterov)
        return True

    def _sgd_block(self, param, grad, velocity, learning_rate, momentum, nesterov):
        step = np.multiply(grad, learning_rate, out=self._temporary(0, grad))
        if velocity is None:
            param -= step
            return
        velocity *= momentum
        velocity -= step
        if nesterov:
            ahead = np.multiply(velocity, momentum, out=self._temporary(1, grad))
            ahead -= step
            param += ahead
        else:
            param += velocity

    def _rmsprop(self, param, grad, mean_square, mean_grad, momentum_buffer, learning_rate,
                 rho, momentum, epsilon) -> bool:
        if self._fusable(param, grad, mean_square, mean_grad, momentum_buffer):
            self.fused_kernels.rmsprop(param, grad, mean_square, mean_grad, momentum_buffer,
                                       learning_rate, rho, 1 - rho, momentum, epsilon)
        else:
            self._in_parts(self._rmsprop_block,
                           (param, grad, mean_square, mean_grad, momentum_buffer),
                           learning_rate, rho, momentum, epsilon)
        return True

    def _rmsprop_block(self, param, grad, mean_square, mean_grad, momentum_buffer,
                       learning_rate, rho, momentum, epsilon):
        square = np.multiply(grad, grad, out=self._temporary(0, grad))
        square *= 1 - rho
        mean_square *= rho
        mean_square += square
        denominator = square  # reuse the buffer
        if mean_grad is None:
            np.add(mean_square, epsilon, out=denominator)
        else:
            mean_grad *= rho
            np.multiply(grad, 1 - rho, out=denominator)
            mean_grad += denominator
            np.multiply(mean_grad, mean_grad, out=denominator)
            np.subtract(mean_square, denominator, out=denominator)
            denominator += epsilon
        np.sqrt(denominator, out=denominator)
        step = np.multiply(grad, learning_rate, out=self._temporary(1, grad))
        step /= denominator
        if momentum_buffer is not None:
            momentum_buffer *= momentum
            momentum_buffer += step
            step = momentum_buffer
        param -= step

    def _adam(self, param, grad, m, v, alpha, beta_1, beta_2, epsilon) -> bool:
        if self._fusable(param, grad, m, v):
            self.fused_kernels.adam(param, grad, m, v, alpha, 1 - beta_1, 1 - beta_2, epsilon)
        else:
            self._in_parts(self._adam_block, (param, grad, m, v), alpha, beta_1, beta_2, epsilon)
        return True

    def _adam_block(self, param, grad, m, v, alpha, beta_1, beta_2, epsilon):
        delta = np.subtract(grad, m, out=self._temporary(0, grad))
        delta *= 1 - beta_1
        m += delta
        np.multiply(grad, grad, out=delta)
        delta -= v
        delta *= 1 - beta_2
        v += delta
        denominator = np.sqrt(v, out=delta)
        denominator += epsilon
        step = np.multiply(m, alpha, out=self._temporary(1, grad))
        step /= denominator
        param -= step
