"""The ``gpu`` backend: CuPy on a CUDA device, with fused elementwise kernels.

CuPy is optional: without it (or without a CUDA device) this module still imports and
:meth:`GpuBackend.is_available` says why and how to fix it.  Each fused kernel computes the same
expression, in the same order, as the generic kernel in :mod:`dnn.backends.base` (the softmax
cross-entropy and accuracy kernels work a row per thread, so the loss is summed row by row
first); they are compiled with ``--fmad=false`` so that no multiply-add is contracted into a
differently rounded FMA, and the cross-backend tests pin them to the cpu backend.  On a GPU
this network is small enough that kernel launches, not arithmetic, set the pace: the fused
kernels exist to launch fewer.
"""

from __future__ import annotations

import functools

import numpy as np

from dnn.backends.base import Availability, Backend

INSTALL_HINT = "install CuPy with: pip install 'dnn-framework[gpu-cuda13]' (or [gpu-cuda12])"


def _import_cupy():
    """The ``cupy`` module, or None when it cannot be imported."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA installation raising at import
        return None
    return cupy


def _array_namespace(cupy):
    """CuPy's array-API namespace: ``array_api_compat.cupy`` when present, else CuPy itself
    (CuPy 14 follows the standard in its main namespace)."""
    try:
        import array_api_compat.cupy as namespace
    except ImportError:
        return cupy
    return namespace


@functools.cache
def _kernels():
    """Compile-on-first-use fused kernels (the caching ElementwiseKernel objects)."""
    import cupy

    def kernel(inputs, outputs, body, name):
        return cupy.ElementwiseKernel(inputs, outputs, body, name, options=("--fmad=false",),
                                      no_return=True)

    return {
        "bias_add": kernel("T bias", "T z", "z = z + bias", "dnn_bias_add"),
        # maximum(x, 0) as NumPy computes it: NaN stays NaN (x != x holds only for NaN).
        "relu": kernel("T x", "T z", "z = (x > (T)0 || x != x) ? x : (T)0", "dnn_relu"),
        "bias_relu": kernel("T bias", "T z",
                            "T v = z + bias; z = (v > (T)0 || v != v) ? v : (T)0",
                            "dnn_bias_relu"),
        "relu_backward": kernel("T out", "T grad", "grad = out > (T)0 ? grad : (T)0",
                                "dnn_relu_backward"),
        "rmsprop": kernel(
            "T grad, T lr, T rho, T one_minus_rho, T eps", "T param, T ms",
            "ms = ms * rho + one_minus_rho * (grad * grad);"
            "param = param - (lr * grad) / sqrt(ms + eps)",
            "dnn_rmsprop"),
        "adam": kernel(
            "T grad, T alpha, T one_minus_beta_1, T one_minus_beta_2, T eps",
            "T param, T m, T v",
            "m = m + (grad - m) * one_minus_beta_1;"
            "v = v + (grad * grad - v) * one_minus_beta_2;"
            "param = param - (alpha * m) / (sqrt(v) + eps)",
            "dnn_adam"),
        "sgd": kernel("T grad, T lr", "T param", "param = param - lr * grad", "dnn_sgd"),
        # One thread per row i of (n, k) logits: the generic softmax cross-entropy's dozen
        # launches in one.  grad = (exp / total - targets) / n; row_loss = log(total) -
        # sum(targets * shifted); a NaN logit makes the row max, and so the row, NaN.
        "softmax_xent_rows": kernel(
            "raw T logits, raw T targets, int64 classes, T n", "T row_loss, raw T grad",
            """
            const ptrdiff_t start = i * classes;
            T top = logits[start];
            for (ptrdiff_t j = 1; j < classes; ++j) {
                const T value = logits[start + j];
                top = (value > top || value != value) ? value : top;
            }
            T total = 0, target_logits = 0;
            for (ptrdiff_t j = 0; j < classes; ++j) {
                const T shifted = logits[start + j] - top;
                grad[start + j] = exp(shifted);
                total += grad[start + j];
                target_logits += targets[start + j] * shifted;
            }
            for (ptrdiff_t j = 0; j < classes; ++j)
                grad[start + j] = (grad[start + j] / total - targets[start + j]) / n;
            row_loss = log(total) - target_logits;
            """,
            "dnn_softmax_xent_rows"),
        # One thread per row: 1 where argmax(output) == argmax(targets), with numpy.argmax's
        # rule (the first largest value, or the first NaN).
        "correct_rows": kernel(
            "raw T output, raw T targets, int64 classes", "int64 correct",
            """
            const ptrdiff_t start = i * classes;
            ptrdiff_t predicted = 0, label = 0;
            for (ptrdiff_t j = 1; j < classes; ++j) {
                const T best = output[start + predicted], value = output[start + j];
                if (best == best && (value > best || value != value)) predicted = j;
                const T best_target = targets[start + label], target = targets[start + j];
                if (best_target == best_target && (target > best_target || target != target))
                    label = j;
            }
            correct = predicted == label;
            """,
            "dnn_correct_rows"),
    }


class GpuBackend(Backend):
    """CuPy on the current CUDA device."""

    name = "gpu"

    def __init__(self):
        availability = self.is_available()
        if not availability:
            raise RuntimeError(f"gpu backend unavailable: {availability.reason}")
        import cupy

        self._cupy = cupy
        self.xp = _array_namespace(cupy)

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
        """A Python number as a scalar of ``like``'s dtype, for the typed kernel arguments."""
        return like.dtype.type(value)

    def dense_forward(self, x, kernel, bias, scratch):
        z = self._cupy.matmul(x, kernel)
        _kernels()["bias_add"](bias, z)
        return z

    def dense_relu_forward(self, x, kernel, bias, scratch):
        z = self._cupy.matmul(x, kernel)
        _kernels()["bias_relu"](bias, z)
        return z

    def relu(self, z, scratch):
        _kernels()["relu"](z, z)
        return z

    def relu_backward(self, grad_out, out, scratch):
        _kernels()["relu_backward"](out, grad_out)
        return grad_out

    def softmax_crossentropy(self, logits, targets, scratch):
        cupy = self._cupy
        logits, targets = cupy.ascontiguousarray(logits), cupy.ascontiguousarray(targets)
        rows, classes = logits.shape
        grad = cupy.empty_like(logits)
        row_loss = cupy.empty(rows, dtype=logits.dtype)
        _kernels()["softmax_xent_rows"](logits, targets, classes, self._scalar(rows, logits),
                                        row_loss, grad)
        return cupy.sum(row_loss), grad

    def correct_count(self, output, targets):
        if targets.ndim != 2 or targets.shape != output.shape or output.shape[1] == 1:
            return super().correct_count(output, targets)  # labels, or one output unit
        cupy = self._cupy
        correct = cupy.empty(output.shape[0], dtype=cupy.int64)
        _kernels()["correct_rows"](cupy.ascontiguousarray(output),
                                   cupy.ascontiguousarray(targets), output.shape[1], correct)
        return cupy.sum(correct)

    def sgd_update(self, param, grad, velocity, learning_rate, momentum, nesterov):
        if velocity is not None:  # the momentum variants stay generic
            return super().sgd_update(param, grad, velocity, learning_rate, momentum, nesterov)
        _kernels()["sgd"](grad, self._scalar(learning_rate, param), param)
        return None

    def rmsprop_update(self, param, grad, mean_square, mean_grad, momentum_buffer,
                       learning_rate, rho, momentum, epsilon):
        if mean_grad is not None or momentum_buffer is not None:  # variants stay generic
            return super().rmsprop_update(param, grad, mean_square, mean_grad, momentum_buffer,
                                          learning_rate, rho, momentum, epsilon)
        s = functools.partial(self._scalar, like=param)
        _kernels()["rmsprop"](grad, s(learning_rate), s(rho), s(1 - rho), s(epsilon),
                              param, mean_square)
        return None

    def adam_update(self, param, grad, m, v, alpha, beta_1, beta_2, epsilon):
        s = functools.partial(self._scalar, like=param)
        _kernels()["adam"](grad, s(alpha), s(1 - beta_1), s(1 - beta_2), s(epsilon), param, m, v)
