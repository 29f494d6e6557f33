"""The ``gpu`` backend: CuPy on a CUDA device, with fused elementwise kernels.

CuPy is optional: without it (or without a CUDA device) this module still imports and
:meth:`GpuBackend.is_available` says why and how to fix it.  Each fused kernel computes the same
expression, in the same order, as the generic kernel in :mod:`dnn.backends.base`; they are
compiled with ``--fmad=false`` so that no multiply-add is contracted into a differently rounded
FMA, and the cross-backend tests pin the two together.
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
        # (exp / total - targets) / n, with exp = exp(logits - max) and total per row.
        "softmax_xent_grad": kernel("T exp, T total, T targets, T n", "T grad",
                                    "grad = (exp / total - targets) / n",
                                    "dnn_softmax_xent_grad"),
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
        shifted = logits - cupy.max(logits, axis=1, keepdims=True)
        exp = cupy.exp(shifted)
        total = cupy.sum(exp, axis=1, keepdims=True)
        loss_sum = cupy.sum(cupy.log(total)) - cupy.sum(targets * shifted)
        grad = cupy.empty_like(logits)
        _kernels()["softmax_xent_grad"](exp, total, targets,
                                        self._scalar(logits.shape[0], logits), grad)
        return loss_sum, grad

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
