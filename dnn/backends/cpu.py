"""The ``cpu`` backend: NumPy, with float32 kernels in C and in-place NumPy kernels that write
into the caller's arrays.

Every override computes the same expression, in the same order of operations, as the generic
kernel in :mod:`dnn.backends.base` (or the optimizer's formula), so both give the same bits; it
only avoids temporaries and passes over memory.  The C kernels (``dnn.backends._cpu_kernels``,
built at install time) do each elementwise update in one pass, and the softmax cross-entropy,
its gradient and the accuracy count in a few calls instead of a dozen NumPy ones; where the
extension could not be built (no C compiler), or for float64, the same arithmetic runs as NumPy
ufuncs.

One override does less arithmetic than the generic kernel instead of the same: the products of a
large layer leave out the input columns that are zero in the whole batch (a third of an MNIST
batch's pixels), which add nothing to them.  The kernel's gradient is then the same (its rows
for those columns are zero), and the forward product equal to rounding (BLAS adds the remaining
terms in other blocks).  The one difference: where a left-out column meets an infinite or NaN
weight or gradient, the full product would turn ``0 * inf`` into NaN, and here the term is
absent; a run that has such values has diverged already, and its loss says so.

The window kernels of convolution and pooling (``im2col``, ``col2im``, ``max_pool`` and its
gradient) run in C for C-contiguous float32 and float64 arrays, a large batch split across the
cores as the NumPy updates are (:meth:`CpuBackend._in_parts`; about 1.5 times as fast alone on
the 2-core VM, as fast inside a training step, where they wait on memory), and give the generic
kernels' bits: they copy what those copy, and add into each input in
the same order (window offset by window offset) onto zeros.  Max pooling reduces a window's cells
in order with numpy.maximum's rule on x86, as NumPy does over a non-contiguous axis (windows of
several channels); where NumPy's reduction takes another order (one channel: a contiguous axis,
SIMD lanes combined; other CPUs) only a NaN or zeros of both signs tying can come out with other
bits, and the C kernel counts those windows and leaves such a batch to the generic kernel.
"""

from __future__ import annotations

import concurrent.futures
import platform
import threading

import numpy as np

from dnn.backends.base import Availability, Backend
from dnn.buffers import Buffers
from dnn.distributed.threads import process_threads

try:
    from dnn.backends import _cpu_kernels as C_KERNELS
except ImportError:  # installed without a C compiler
    C_KERNELS = None


FLOAT32 = np.dtype(np.float32)
WINDOW_FLOATS = (FLOAT32, np.dtype(np.float64))  # the dtypes of the C window kernels
INT32 = np.dtype(np.int32)

# numpy.maximum on x86 (SSE2, AVX2 and AVX-512 alike): the first operand if it is NaN, else the
# larger, the second on a tie; the C max_pool reduces each window so, which is NumPy's own
# reduction of windows of several channels on these CPUs (see the module's docstring).
MAXIMUM_IS_X86S = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}

# NumPy optimizer updates of parameters at least this large are split across the CPU cores
# (ufuncs run on one core and release the GIL), into at most MAX_PARTS blocks and no more than
# this process's share of the cores (dnn.distributed.threads.process_threads: all of them in a
# plain run, cores / local ranks under mpiexec); smaller ones are not worth a thread hand-off.
# The C kernels run on one core: one pass is faster than the hand-off (docs/benchmarks.md).
PARALLEL_MIN_SIZE = 1 << 16
MAX_PARTS = 4

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

    def __init__(self, c_kernels: bool = True):
        """``c_kernels=False`` runs NumPy ufuncs only, even where the C extension is built."""
        self.c_kernels = C_KERNELS if c_kernels else None
        self._thread_local = threading.local()  # per-thread temporaries for optimizer updates
        self._parts = None  # blocks per update, known at the first (the ranks are known then)
        self._pool = None

    @classmethod
    def is_available(cls) -> Availability:
        if C_KERNELS is None:
            return Availability(True, "NumPy kernels only: the C extension "
                                      "dnn.backends._cpu_kernels was not built (reinstall "
                                      "dnn-framework with a C compiler for faster training)")
        return Availability(True, "float32 kernels in C (the extension is built)")

    def _c_kernels_take(self, *arrays) -> bool:
        """True when the C kernels can take ``arrays`` (None entries are ignored): the
        extension is built and the arrays are C-contiguous float32 of one shape."""
        if self.c_kernels is None:
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

    def _in_parts(self, kernel, arrays: tuple, *scalars) -> list:
        """Run ``kernel(*arrays, *scalars)`` on row blocks of ``arrays`` (``(rows, ...)`` each,
        split alike along the first axis, the parameter first for an update; None entries
        pass through), one block per core of this process's share (at most
        :data:`MAX_PARTS`), when the largest array is large; returns the kernel's results,
        one per block."""
        first = arrays[0]
        if self._parts is None:
            self._parts = min(process_threads(), MAX_PARTS)
        size = max(a.size for a in arrays if a is not None)
        if self._parts == 1 or size < PARALLEL_MIN_SIZE or first.shape[0] < self._parts:
            return [kernel(*arrays, *scalars)]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._parts - 1,
                                                               thread_name_prefix="dnn-cpu")
        bounds = np.linspace(0, first.shape[0], self._parts + 1).astype(int)
        blocks = [[None if a is None else a[start:stop] for a in arrays]
                  for start, stop in zip(bounds[:-1], bounds[1:])]
        futures = [self._pool.submit(kernel, *block, *scalars) for block in blocks[1:]]
        results = [kernel(*blocks[0], *scalars)]
        return results + [future.result() for future in futures]

    def _window_kernels_take(self, *specs) -> bool:
        """True when the C window kernels can take the arrays of ``specs``, ``(array, shape,
        dtype, written)`` each: the extension has them, each array is a C-contiguous NumPy
        array of that shape and dtype (float32 or float64 for the images and windows, int32
        for argmax), writeable if ``written``."""
        if self.c_kernels is None or not hasattr(self.c_kernels, "max_pool_backward"):
            return False
        for array, shape, dtype, written in specs:
            if (not isinstance(array, np.ndarray) or array.dtype != dtype
                    or array.shape != shape or not array.flags.c_contiguous
                    or (written and not array.flags.writeable)):
                return False
        return True

    @staticmethod
    def _window_shapes(x, window):
        """``(images, pooled)``: the shapes of ``x`` ``(n, h, w, c)`` as the window expects
        them and of the outputs ``(n, oh, ow, c)``; None when ``x`` is not 4-D or not of
        float32 or float64."""
        if getattr(x, "ndim", None) != 4 or x.dtype not in WINDOW_FLOATS:
            return None
        n, c = x.shape[0], x.shape[3]
        return (n, window.rows.length, window.columns.length, c), (n, *window.output, c)

    @staticmethod
    def _geometry(window) -> tuple:
        """``(sh, sw, top, left)``: the window's strides and the padding before its image."""
        return (window.rows.stride, window.columns.stride, window.rows.pad_before,
                window.columns.pad_before)

    def asarray(self, host_array, dtype=None) -> np.ndarray:
        return np.asarray(host_array, dtype=dtype)

    def overflow_silenced(self):
        return np.errstate(over="ignore", invalid="ignore")

    def is_own_array(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def take_rows(self, data, indices, out):
        # mode="clip" writes straight into out; the default "raise" buffers a second copy.
        return np.take(data, indices, axis=0, out=out, mode="clip")

    def scatter_add_rows(self, rows, indices, out):
        if (self._c_kernels_take(rows) and self._c_kernels_take(out) and indices.ndim == 1
                and indices.dtype == np.int64 and indices.flags.c_contiguous
                and rows.shape == (indices.shape[0], *out.shape[1:]) and out.ndim == 2):
            self.c_kernels.add_rows(rows, indices, out)
        else:
            np.add.at(out, indices, rows)
        return out

    def _temporary(self, role: str, shape, dtype) -> np.ndarray:
        """The calling thread's scratch array for ``role``: valid until that thread's next
        call of a kernel that uses ``role``, and never returned by one."""
        temporaries = getattr(self._thread_local, "buffers", None)
        if temporaries is None:
            temporaries = self._thread_local.buffers = Buffers(self)
        return temporaries(role, shape, dtype)

    def _temporary_like(self, role: str, like: np.ndarray) -> np.ndarray:
        return self._temporary(role, like.shape, like.dtype)

    def _keep_nonzero_columns(self, x, kernel, columns) -> None:
        """Record in ``columns`` the columns of ``x`` ``(n, i)`` that are not all zero, and
        ``x`` packed to them, when leaving the others out of the products with ``kernel``
        pays (see SKIP_MIN_ZERO_SHARE); else record that every column is kept."""
        columns.kept = columns.packed = None
        if (kernel.size < SKIP_MIN_KERNEL_SIZE or x.dtype != kernel.dtype
                or not x.flags.c_contiguous):
            return
        rows, width = x.shape
        if columns.buffers is None:
            columns.buffers = Buffers(self)
        kept = columns.buffers("kept", (width,), np.int64)
        c_kernels = self._c_kernels_take(x)
        if c_kernels:
            count = self.c_kernels.nonzero_columns(x, kept)
        else:
            nonzero = np.flatnonzero(x.any(axis=0))
            count = len(nonzero)
            kept[:count] = nonzero
        if count > (1 - SKIP_MIN_ZERO_SHARE) * width:
            return
        # A view of the first n*k elements: contiguous, whatever k the batch has.
        packed = columns.buffers("packed", x.shape, x.dtype).reshape(-1)[:rows * count]
        columns.kept, columns.packed = kept[:count], packed.reshape(rows, count)
        if c_kernels:
            self.c_kernels.take_columns(x, columns.kept, columns.packed)
        else:
            np.take(x, columns.kept, axis=1, out=columns.packed, mode="clip")

    def _scatter_rows(self, source, rows, out):
        """``out[rows] = source`` and every other row of ``out`` zero (``rows`` increasing)."""
        if self._c_kernels_take(source) and self._c_kernels_take(out):
            self.c_kernels.scatter_rows(source, rows, out)
            return
        out.fill(0)
        out[rows] = source

    def _product(self, x, kernel, out, columns):
        """``out = x @ kernel`` ``(n, o)``, leaving out the columns of ``x`` that are zero in
        the whole batch when that pays and the layer gave its ``columns`` to record them in."""
        if columns is None:
            return np.matmul(x, kernel, out=out)
        self._keep_nonzero_columns(x, kernel, columns)
        if columns.kept is None:
            return np.matmul(x, kernel, out=out)
        kept_rows = self._temporary("kept_rows", kernel.shape, kernel.dtype)[:len(columns.kept)]
        np.take(kernel, columns.kept, axis=0, out=kept_rows, mode="clip")
        return np.matmul(columns.packed, kept_rows, out=out)

    def dense_forward(self, x, kernel, bias, out, columns=None):
        self._product(x, kernel, out, columns)
        out += bias
        return out

    def dense_backward(self, x, grad_z, kernel, grad_kernel, grad_bias, grad_x=None,
                       columns=None):
        if columns is None or columns.kept is None:
            np.matmul(x.T, grad_z, out=grad_kernel)
        else:  # over the columns the forward pass kept (the other rows are zero)
            kept_rows = self._temporary("grad_kept_rows", kernel.shape, kernel.dtype)
            kept_rows = np.matmul(columns.packed.T, grad_z, out=kept_rows[:len(columns.kept)])
            self._scatter_rows(kept_rows, columns.kept, grad_kernel)
        if self._c_kernels_take(grad_z) and self._c_kernels_take(grad_bias):
            self.c_kernels.column_sum(grad_z, grad_bias)
        else:
            np.sum(grad_z, axis=0, out=grad_bias)
        if grad_x is not None:
            np.matmul(grad_z, kernel.T, out=grad_x)

    def dense_relu_forward(self, x, kernel, bias, out, columns=None):
        if not (self._c_kernels_take(bias) and self._c_kernels_take(out)):
            return super().dense_relu_forward(x, kernel, bias, out, columns)
        self._product(x, kernel, out, columns)
        self.c_kernels.bias_relu(out, bias)
        return out

    def im2col(self, x, window, cols, fill=0.0):
        shapes = self._window_shapes(x, window)
        if shapes is None or not self._window_kernels_take(
                (x, shapes[0], x.dtype, False),
                (cols, (*shapes[1][:3], *window.kernel, shapes[0][3]), x.dtype, True)):
            return super().im2col(x, window, cols, fill)
        self._in_parts(self.c_kernels.im2col, (x, cols), *self._geometry(window), float(fill))
        return cols

    def col2im(self, grad_cols, window, grad_x):
        shapes = self._window_shapes(grad_x, window)
        if shapes is None or not self._window_kernels_take(
                (grad_cols, (*shapes[1][:3], *window.kernel, shapes[0][3]), grad_x.dtype, False),
                (grad_x, shapes[0], grad_x.dtype, True)):
            return super().col2im(grad_cols, window, grad_x)
        self._in_parts(self.c_kernels.col2im, (grad_cols, grad_x), *self._geometry(window))
        return grad_x

    def max_pool(self, x, window, out, argmax):
        shapes = self._window_shapes(x, window)
        if shapes is None or not self._window_kernels_take(
                (x, shapes[0], x.dtype, False), (out, shapes[1], x.dtype, True),
                (argmax, shapes[1], INT32, True)):
            return super().max_pool(x, window, out, argmax)
        # NumPy's order of reduction is the kernel's for windows of several channels on x86;
        # elsewhere the kernel counts the windows whose bits depend on the order.
        check = not (MAXIMUM_IS_X86S and shapes[0][3] > 1)
        if any(self._in_parts(self.c_kernels.max_pool, (x, out, argmax), *window.kernel,
                              *self._geometry(window), check)):
            return super().max_pool(x, window, out, argmax)
        return out

    def max_pool_backward(self, grad, argmax, window, grad_x):
        shapes = self._window_shapes(grad_x, window)
        if shapes is None or not self._window_kernels_take(
                (grad, shapes[1], grad_x.dtype, False), (argmax, shapes[1], INT32, False),
                (grad_x, shapes[0], grad_x.dtype, True)):
            return super().max_pool_backward(grad, argmax, window, grad_x)
        self._in_parts(self.c_kernels.max_pool_backward, (grad, argmax, grad_x), *window.kernel,
                       *self._geometry(window))
        return grad_x

    def relu(self, z):
        return np.maximum(z, 0, out=z)

    def relu_backward(self, grad, out):
        if self._c_kernels_take(grad, out):
            self.c_kernels.relu_backward(grad, out)
            return grad
        dead = self._temporary("relu_dead", out.shape, np.bool_)
        np.logical_not(np.greater(out, 0, out=dead), out=dead)  # not "<= 0": NaN counts as dead
        np.copyto(grad, 0, where=dead)
        return grad

    def softmax_crossentropy(self, logits, targets, grad):
        if not self._c_kernels_take(logits, targets, grad):
            return super().softmax_crossentropy(logits, targets, grad)
        kernels = self.c_kernels
        shifted = self._temporary("shifted", logits.shape, np.float32)
        kernels.subtract_row_max(logits, shifted)
        exp = np.exp(shifted, out=self._temporary("exp", logits.shape, np.float32))
        total = self._temporary("total", logits.shape[:1], np.float32)
        target_logit_sum = kernels.softmax_crossentropy_grad(grad, exp, targets, shifted, total)
        return np.sum(np.log(total, out=total)) - np.float32(target_logit_sum)

    def correct_count(self, output, targets, threshold=0.5):
        if output.ndim == 2 and output.shape[1] > 1 and self._c_kernels_take(output, targets):
            return self.c_kernels.count_correct(output, targets)
        return super().correct_count(output, targets, threshold)

    def fused_update(self, name):
        """Every built-in update, in place: in one C pass for float32, else as NumPy in-place
        ufuncs on row blocks, one per core (5.8 times the speed of the optimizer's own formula
        in float64 on a 784x512 kernel, 1.5 times in float32 without the C extension:
        docs/benchmarks.md)."""
        return {"sgd": self._sgd, "rmsprop": self._rmsprop, "adam": self._adam}.get(name)

    def _sgd(self, param, grad, velocity, learning_rate, momentum, nesterov) -> bool:
        if self._c_kernels_take(param, grad, velocity):
            self.c_kernels.sgd(param, grad, velocity, learning_rate, momentum, nesterov)
        else:
            self._in_parts(self._sgd_block, (param, grad, velocity), learning_rate, momentum,
                           nesterov)
        return True

    def _sgd_block(self, param, grad, velocity, learning_rate, momentum, nesterov):
        step = np.multiply(grad, learning_rate, out=self._temporary_like("update_0", grad))
        if velocity is None:
            param -= step
            return
        velocity *= momentum
        velocity -= step
        if nesterov:
            ahead = np.multiply(velocity, momentum, out=self._temporary_like("update_1", grad))
            ahead -= step
            param += ahead
        else:
            param += velocity

    def _rmsprop(self, param, grad, mean_square, mean_grad, momentum_buffer, learning_rate,
                 rho, momentum, epsilon) -> bool:
        if self._c_kernels_take(param, grad, mean_square, mean_grad, momentum_buffer):
            self.c_kernels.rmsprop(param, grad, mean_square, mean_grad, momentum_buffer,
                                       learning_rate, rho, 1 - rho, momentum, epsilon)
        else:
            self._in_parts(self._rmsprop_block,
                           (param, grad, mean_square, mean_grad, momentum_buffer),
                           learning_rate, rho, momentum, epsilon)
        return True

    def _rmsprop_block(self, param, grad, mean_square, mean_grad, momentum_buffer,
                       learning_rate, rho, momentum, epsilon):
        square = np.multiply(grad, grad, out=self._temporary_like("update_0", grad))
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
        step = np.multiply(grad, learning_rate, out=self._temporary_like("update_1", grad))
        step /= denominator
        if momentum_buffer is not None:
            momentum_buffer *= momentum
            momentum_buffer += step
            step = momentum_buffer
        param -= step

    def _adam(self, param, grad, m, v, step_size, beta_1, beta_2, epsilon) -> bool:
        if self._c_kernels_take(param, grad, m, v):
            self.c_kernels.adam(param, grad, m, v, step_size, 1 - beta_1, 1 - beta_2, epsilon)
        else:
            self._in_parts(self._adam_block, (param, grad, m, v), step_size, beta_1, beta_2,
                           epsilon)
        return True

    def _adam_block(self, param, grad, m, v, step_size, beta_1, beta_2, epsilon):
        delta = np.subtract(grad, m, out=self._temporary_like("update_0", grad))
        delta *= 1 - beta_1
        m += delta
        np.multiply(grad, grad, out=delta)
        delta -= v
        delta *= 1 - beta_2
        v += delta
        denominator = np.sqrt(v, out=delta)
        denominator += epsilon
        step = np.multiply(m, step_size, out=self._temporary_like("update_1", grad))
        step /= denominator
        param -= step
