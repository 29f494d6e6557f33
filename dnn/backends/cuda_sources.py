"""The CUDA C source of every kernel the gpu backend compiles, written once, as data.

Two readers take the same strings: the gpu backend hands each one to ``cupy.ElementwiseKernel``,
and the test suite compiles the very same text with the host C compiler (tests/cuda_harness.py)
and runs it against the generic kernels of :class:`dnn.backends.base.Backend`, so that CI, which
has no GPU, finds a typo or a wrong formula in a kernel before anyone is lent a GPU.

A kernel is an :class:`ElementwiseSource`, the arguments of ``cupy.ElementwiseKernel``:

- ``in_params`` and ``out_params``: comma-separated ``TYPE NAME`` or ``raw TYPE NAME``; ``TYPE``
  is ``T`` (the kernel's float type, float32 or float64) or a NumPy type name (``int64``).
  A plain parameter is one element per thread (or one scalar for all), a ``raw`` one the whole
  C-contiguous array, indexed by flat offset.
- ``body``: the code for the thread of element ``i`` (a ``ptrdiff_t``).  To compile as both CUDA
  C++ and C99, it uses only their common ground: arithmetic, comparisons, ``(T)`` casts,
  ``ptrdiff_t`` and the type-generic ``exp``, ``log`` and ``sqrt`` (CUDA overloads them; the
  harness includes ``tgmath.h``).  A kernel whose threads cooperate (shared memory, atomics)
  cannot be checked this way and has no place here.

Every kernel computes the same expression, in the same order, as the generic kernel it replaces;
row-per-thread kernels (``*_rows``) reduce a row in order where NumPy may sum pairwise, so they
agree to rounding.  The gpu backend compiles them with ``--fmad=false``, the harness with
``-ffp-contract=off``: no multiply-add is contracted into a differently rounded FMA.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ElementwiseSource:
    """One elementwise CUDA kernel: ``cupy.ElementwiseKernel(in_params, out_params, body,
    name)``."""

    name: str
    in_params: str
    out_params: str
    body: str


ELEMENTWISE = {source.name: source for source in (
    ElementwiseSource("dnn_bias_add", "T bias", "T z", "z = z + bias"),
    # maximum(x, 0) as NumPy computes it: NaN stays NaN (x != x holds only for NaN).
    ElementwiseSource("dnn_relu", "T x", "T z", "z = (x > (T)0 || x != x) ? x : (T)0"),
    ElementwiseSource("dnn_bias_relu", "T bias", "T z",
                      "T v = z + bias; z = (v > (T)0 || v != v) ? v : (T)0"),
    ElementwiseSource("dnn_relu_backward", "T out", "T grad", "grad = out > (T)0 ? grad : (T)0"),
    # Hyper-parameters arrive as 0-d arrays of T (the optimizer's, on the device); 1 - rho is
    # computed in T, as the optimizer's formula computes it.
    ElementwiseSource(
        "dnn_rmsprop", "T grad, T lr, T rho, T eps", "T param, T ms",
        "ms = ms * rho + ((T)1 - rho) * (grad * grad);"
        "param = param - (lr * grad) / sqrt(ms + eps)"),
    ElementwiseSource(
        "dnn_adam", "T grad, T step_size, T beta_1, T beta_2, T eps", "T param, T m, T v",
        "m = m + (grad - m) * ((T)1 - beta_1);"
        "v = v + (grad * grad - v) * ((T)1 - beta_2);"
        "param = param - (step_size * m) / (sqrt(v) + eps)"),
    ElementwiseSource("dnn_sgd", "T grad, T lr", "T param", "param = param - lr * grad"),
    # One thread per row i of (n, k) logits: the generic softmax cross-entropy's dozen launches
    # in one.  grad = (exp / total - targets) / n; row_loss = log(total) - sum(targets *
    # shifted); a NaN logit makes the row max, and so the row, NaN.
    ElementwiseSource(
        "dnn_softmax_xent_rows", "raw T logits, raw T targets, int64 classes, T n",
        "T row_loss, raw T grad",
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
        """),
    # One thread per row: 1 where argmax(output) == argmax(targets), with numpy.argmax's rule
    # (the first largest value, or the first NaN).
    ElementwiseSource(
        "dnn_correct_rows", "raw T output, raw T targets, int64 classes", "int64 correct",
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
        """),
)}
