"""The ``gpu`` backend: CuPy on a CUDA device, with CUDA elementwise kernels.

CuPy is optional: without it (or without a CUDA device) this module still imports and
:meth:`GpuBackend.is_available` says why and how to fix it.  Each kernel computes the same
expression, in the same order, as the generic kernel in :mod:`dnn.backends.base` or the
optimizer's formula (the softmax cross-entropy and accuracy kernels work a row per thread, so
the loss is summed row by row first; the window kernels of convolution and pooling work a thread
per element they write, gathering, with no atomics; batch normalization's sums per channel add
chunks of rows, then chunks of those sums, also without atomics: NumPy's sums to rounding, the
same bits from call to call); their CUDA source is in :mod:`dnn.backends.cuda_sources`, which the test
suite also compiles with the host C compiler, and the cross-backend tests pin them to the cpu
backend.  On a GPU this network is small enough that kernel launches, not arithmetic, set the
pace: the kernels exist to launch fewer.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from dnn.backends.base import Availability, Backend
from dnn.backends.cuda_sources import ELEMENTWISE
from dnn.errors import UsageError

INSTALL_HINT = "install CuPy with: pip install 'dnn-framework[gpu-cuda13]' (or [gpu-cuda12])"


def _import_cupy():
    """The ``cupy`` module, or None when it cannot be imported."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA installation raising at import
        return None
    return cupy


GRAPHS_SWITCH = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


def graphs_switched_on() -> bool:
    """Whether ``$DNN_GPU_GRAPHS`` (unset or empty: on) lets the gpu backend capture its
    steps; a UsageError naming it for a value that is neither on nor off."""
    value = os.environ.get("DNN_GPU_GRAPHS", "").strip().lower() or "1"
    if value not in GRAPHS_SWITCH:
        raise UsageError(f"DNN_GPU_GRAPHS must be 1 or 0 (or true/false, yes/no, on/off), "
                         f"not {os.environ['DNN_GPU_GRAPHS']!r}")
    return GRAPHS_SWITCH[value]


CHUNK_ROWS = 32  # rows a thread of the sums per channel adds (a chunk)


def channel_chunks(rows: int) -> int:
    """How many chunks the channel-sum kernels split ``rows`` rows into (stage 1 of
    :mod:`dnn.backends.cuda_sources`' sums per channel): :data:`CHUNK_ROWS` rows a chunk, the
    last fewer, so that the threads are many and each adds few values whatever the batch; no
    chunk for no rows."""
    return -(-rows // CHUNK_ROWS)


def _compile(cupy) -> dict:
    """Every kernel of :mod:`dnn.backends.cuda_sources` as a ``cupy.ElementwiseKernel``, by
    name (each is compiled on its first call, once per dtype)."""
    return {name: cupy.ElementwiseKernel(source.in_params, source.out_params, source.body, name,
                                         options=("--fmad=false",), no_return=True)
            for name, source in ELEMENTWISE.items()}


class GpuBackend(Backend):
    """CuPy on the current CUDA device."""

    name = "gpu"

    def __init__(self):
        availability = self.is_available()
        if not availability:
            raise RuntimeError(f"gpu backend unavailable: {availability.reason}")
        import cupy

        # xp is CuPy itself, which has every function dnn calls on xp (matrix_transpose
        # since CuPy 14.1), never array_api_compat.cupy: its sign and clip end in boolean-mask
        # assignment, for which CuPy reads the mask's count on the host, refused while a CUDA
        # graph is captured (no step with an L1 regularizer or a loss on probabilities could
        # be).  CuPy's own are one kernel each.
        self._use(cupy, cupy, _compile(cupy))

    def _use(self, cupy, xp, kernels: dict) -> None:
        """Run on ``cupy`` (the module, or a stand-in with the part of its API used here) with
        array namespace ``xp`` and ``kernels`` ({name in :mod:`dnn.backends.cuda_sources`: a
        callable taking the arguments as ``cupy.ElementwiseKernel`` does})."""
        self._cupy = cupy
        self.xp = xp
        self._kernels = kernels
        self._gemm = self._cupy_gemm  # products; cuBLAS through ctypes in captured steps
        self._graphs = None  # the CUDA graph machinery, made on first use

    def _cupy_gemm(self, a, b, out):
        return self._cupy.matmul(a, b, out=out)

    # -- captured steps (dnn.trainers.step) -------------------------------------------------------------
    def captures_steps(self) -> bool:
        """True unless ``DNN_GPU_GRAPHS`` is ``0`` (or ``false``, ``no``, ``off``): full
        training batches then replay a captured CUDA graph of the step."""
        return graphs_switched_on()

    def capture(self, step):
        if not self.captures_steps():
            return None
        return self._graph_machinery().capture(step)

    def graph_kernels(self):
        """The kernels of a captured step (:meth:`CudaGraphs.kernels`); raises
        :class:`dnn.errors.CaptureError` when the machinery cannot be made (no cuBLAS), which
        :mod:`dnn.trainers.step` answers by running eagerly."""
        if not self.captures_steps():
            return contextlib.nullcontext()
        return self._graph_machinery().kernels()

    def warmed_up(self) -> bool:
        return self._graphs is None or not self._graphs.pool_grew

    def buffer(self, shape, dtype):
        """A new array kept from step to step, made outside the pool of the next capture
        where it is made in a captured step's warm-up (:meth:`CudaGraphs.allocating_outside`)."""
        if self._graphs is None:
            return self.empty(shape, dtype)
        with self._graphs.allocating_outside():
            return self.empty(shape, dtype)

    def _graph_machinery(self):
        if self._graphs is None:
            from dnn.backends.cuda_graphs import CudaGraphs

            self._graphs = CudaGraphs(self, self._cupy)
        return self._graphs

    @classmethod
    def is_available(cls) -> Availability:
        cupy = _import_cupy()
        if cupy is None:
            return Availability(False, f"CuPy is not installed; {INSTALL_HINT}")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # CUDARuntimeError when no driver is loaded
            return Availability(False, f"no CUDA device ({error}); check the NVIDIA driver")
        if count == 0:
            return Availability(False, "no CUDA device found; check the NVIDIA driver")
        return Availability(True)

    def asarray(self, host_array, dtype=None):
        return self._cupy.asarray(host_array, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        return self._cupy.asnumpy(array)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def is_own_array(self, array) -> bool:
        return isinstance(array, self._cupy.ndarray)

    def _scalar(self, value, like):
        """A hyper-parameter as a kernel argument of ``like``'s dtype: the optimizer's 0-d
        device array as it is (a captured step reads its current value), a Python number as
        a scalar of that dtype."""
        return value if self.is_own_array(value) else like.dtype.type(value)

    def take_rows(self, data, indices, out):
        return self._cupy.take(data, indices, axis=0, out=out)

    def dense_forward(self, x, kernel, bias, out, columns=None):
        self._gemm(x, kernel, out)
        self._kernels["dnn_bias_add"](bias, out)
        return out

    def dense_relu_forward(self, x, kernel, bias, out, columns=None):
        self._gemm(x, kernel, out)
        self._kernels["dnn_bias_relu"](bias, out)
        return out

    def dense_backward(self, x, grad_z, kernel, grad_kernel, grad_bias, grad_x=None,
                       columns=None):
        self._gemm(x.T, grad_z, grad_kernel)
        self._cupy.sum(grad_z, axis=0, out=grad_bias)
        if grad_x is not None:
            self._gemm(grad_z, kernel.T, grad_x)

    def _matmul(self, a, b):
        """As the base class's, through the backend's cuBLAS (CuPy's matmul calls cuBLAS
        through its own handle, refused while a step is captured)."""
        out = self._cupy.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        self._gemm(a, b, out)
        return out

    def batch_matmul(self, a, b, out):
        """As the base class's, without CuPy's matmul, which calls cuBLAS through CuPy's own
        handle (refused while a step is captured): elementwise, every term at once where
        ``a`` or ``b`` is a batch of vectors (as many terms as the other holds numbers),
        else the ``k`` outer products added one after the other (no more memory than
        ``out``)."""
        cupy = self._cupy
        if a.shape[1] == 1 or b.shape[2] == 1:
            return cupy.sum(a[:, :, :, None] * b[:, None], axis=2, out=out)
        out[...] = 0
        for index in range(a.shape[2]):
            out += a[:, :, index, None] * b[:, None, index, :]
        return out

    # -- windows: convolution and pooling ------------------------------------------------
    def _window_geometry(self, window, shape) -> tuple:
        """``WINDOW_PARAMS`` of :mod:`dnn.backends.cuda_sources` for ``window`` over images of
        ``shape`` ``(n, h, w, c)``: Python integers, as the kernels' int64 scalars."""
        rows, columns = window.rows, window.columns
        return (rows.length, columns.length, shape[-1], rows.out, columns.out, rows.size,
                columns.size, rows.stride, columns.stride, rows.pad_before,
                columns.pad_before)

    def _window_kernel_takes(self, window, images, windows, cells: bool, outputs,
                             argmax=None) -> bool:
        """Whether a window kernel can take these arrays, all of this backend: ``images``
        ``(n, h, w, c)`` and ``windows``, ``(n, oh, ow, kh, kw, c)`` with ``cells`` else
        ``(n, oh, ow, c)``, of the shapes ``window`` gives them and of one float dtype,
        ``argmax`` (if given) int32 ``(n, oh, ow, c)``, and ``outputs`` (those the kernel
        writes) C-contiguous.  Where they are not, the generic kernel takes them (and raises
        where they do not fit)."""
        arrays = [array for array in (images, windows, argmax) if array is not None]
        if not all(self.is_own_array(array) for array in arrays) or images.ndim != 4:
            return False
        n, c = images.shape[0], images.shape[3]
        pooled = (n, *window.output, c)
        expected = [(n, window.rows.length, window.columns.length, c),
                    (n, *window.output, *window.kernel, c) if cells else pooled]
        if argmax is not None:
            if argmax.dtype != np.int32:
                return False
            expected.append(pooled)
        return (all(array.shape == shape for array, shape in zip(arrays, expected))
                and images.dtype == windows.dtype and images.dtype.kind == "f"
                and all(output.flags.c_contiguous for output in outputs))

    def im2col(self, x, window, cols, fill=0.0):
        if not self._window_kernel_takes(window, x, cols, True, [cols]):
            return super().im2col(x, window, cols, fill)
        self._kernels["dnn_im2col"](self._cupy.ascontiguousarray(x),
                                    *self._window_geometry(window, x.shape),
                                    self._scalar(fill, cols), cols)
        return cols

    def col2im(self, grad_cols, window, grad_x):
        if not self._window_kernel_takes(window, grad_x, grad_cols, True, [grad_x]):
            return super().col2im(grad_cols, window, grad_x)
        self._kernels["dnn_col2im"](self._cupy.ascontiguousarray(grad_cols),
                                    *self._window_geometry(window, grad_x.shape), grad_x)
        return grad_x

    def max_pool(self, x, window, out, argmax):
        if not self._window_kernel_takes(window, x, out, False, [out, argmax], argmax):
            return super().max_pool(x, window, out, argmax)
        self._kernels["dnn_max_pool"](self._cupy.ascontiguousarray(x),
                                      *self._window_geometry(window, x.shape),
                                      self._scalar(-np.inf, out), out, argmax)
        return out

    def max_pool_backward(self, grad, argmax, window, grad_x):
        if not self._window_kernel_takes(window, grad_x, grad, False, [grad_x], argmax):
            return super().max_pool_backward(grad, argmax, window, grad_x)
        cupy = self._cupy
        self._kernels["dnn_max_pool_backward"](cupy.ascontiguousarray(grad),
                                               cupy.ascontiguousarray(argmax),
                                               *self._window_geometry(window, grad_x.shape),
                                               grad_x)
        return grad_x

    # -- batch normalization: sums per channel, in stages -------------------------------------
    def _channel_kernels_take(self, *specs) -> bool:
        """Whether the channel-sum kernels can take the arrays of ``specs``, ``(array,
        shape)`` pairs, the rows ``(m, c)`` first and the output last: each of this backend,
        of its shape and of the rows' float dtype, the output C-contiguous (the inputs are
        made so for the kernels).  The generic kernel takes any others (and raises where they
        do not fit)."""
        rows, out = specs[0][0], specs[-1][0]
        return (all(self.is_own_array(array) and array.shape == shape
                    and array.dtype == rows.dtype for array, shape in specs)
                and rows.dtype.kind == "f" and out.flags.c_contiguous)

    def _sum_in_chunks(self, stage: str, inputs: list, out) -> None:
        """Stage-1 kernel ``stage`` on ``inputs`` (``(m, c)`` rows first, then any ``(c,)``)
        into partial sums ``(chunks, width)`` (:func:`channel_chunks`); those summed again by
        chunks of their rows while they are more than a chunk; then their columns added chunk
        by chunk into ``out`` ``(width,)``.  Always the same order for a shape."""
        cupy, width = self._cupy, out.shape[0]
        rows, channels = inputs[0].shape
        partial = cupy.empty((channel_chunks(rows), width), out.dtype)
        self._kernels[stage](*map(cupy.ascontiguousarray, inputs), rows, channels, CHUNK_ROWS,
                             partial)
        while partial.shape[0] > CHUNK_ROWS:
            sums = partial
            partial = cupy.empty((channel_chunks(sums.shape[0]), width), out.dtype)
            self._kernels["dnn_chunk_sums"](sums, sums.shape[0], width, CHUNK_ROWS, partial)
        self._kernels["dnn_sum_chunks"](partial, partial.shape[0], width, out)

    def channel_sums(self, x, out, mean=None):
        channels = x.shape[-1]
        means = [] if mean is None else [(mean, (channels,))]
        if x.ndim != 2 or not self._channel_kernels_take((x, x.shape), *means,
                                                         (out, (channels,))):
            return super().channel_sums(x, out, mean)
        if mean is None:
            self._sum_in_chunks("dnn_chunk_sums", [x], out)
        else:
            self._sum_in_chunks("dnn_chunk_squares", [x, mean], out)
        return out

    def channel_gradient_sums(self, grad, normalized, out):
        if grad.ndim != 2 or not self._channel_kernels_take(
                (grad, grad.shape), (normalized, grad.shape), (out, (2 * grad.shape[1],))):
            return super().channel_gradient_sums(grad, normalized, out)
        self._sum_in_chunks("dnn_chunk_gradient_sums", [grad, normalized], out)
        return out

    def relu(self, z):
        self._kernels["dnn_relu"](z, z)
        return z

    def relu_backward(self, grad, out):
        self._kernels["dnn_relu_backward"](out, grad)
        return grad

    def softmax_crossentropy(self, logits, targets, grad):
        if not grad.flags.c_contiguous:  # the kernel writes it row by row
            return super().softmax_crossentropy(logits, targets, grad)
        cupy = self._cupy
        logits, targets = cupy.ascontiguousarray(logits), cupy.ascontiguousarray(targets)
        rows, classes = logits.shape
        row_loss = cupy.empty(rows, dtype=logits.dtype)
        self._kernels["dnn_softmax_xent_rows"](logits, targets, classes,
                                               self._scalar(rows, logits), row_loss, grad)
        return cupy.sum(row_loss)

    def correct_count(self, output, targets, threshold=0.5):
        if targets.ndim != 2 or targets.shape != output.shape or output.shape[1] == 1:
            return super().correct_count(output, targets, threshold)  # labels, or one unit
        cupy = self._cupy
        correct = cupy.empty(output.shape[0], dtype=cupy.int64)
        self._kernels["dnn_correct_rows"](cupy.ascontiguousarray(output),
                                          cupy.ascontiguousarray(targets), output.shape[1],
                                          correct)
        return cupy.sum(correct)

    def fused_update(self, name):
        """The plain variants of the built-in updates as one CUDA kernel each; momentum and
        centering are left to the optimizer's formula."""
        return {"sgd": self._sgd, "rmsprop": self._rmsprop, "adam": self._adam}.get(name)

    def _sgd(self, param, grad, velocity, learning_rate, momentum, nesterov) -> bool:
        if velocity is not None:
            return False
        self._kernels["dnn_sgd"](grad, self._scalar(learning_rate, param), param)
        return True

    def _rmsprop(self, param, grad, mean_square, mean_grad, momentum_buffer, learning_rate,
                 rho, momentum, epsilon) -> bool:
        if mean_grad is not None or momentum_buffer is not None:
            return False
        s = functools.partial(self._scalar, like=param)
        self._kernels["dnn_rmsprop"](grad, s(learning_rate), s(rho), s(epsilon), param,
                                     mean_square)
        return True

    def _adam(self, param, grad, m, v, step_size, beta_1, beta_2, epsilon) -> bool:
        s = functools.partial(self._scalar, like=param)
        self._kernels["dnn_adam"](grad, s(step_size), s(beta_1), s(beta_2), s(epsilon), param,
                                  m, v)
        return True
