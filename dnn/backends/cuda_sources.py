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
agree to rounding.  The window kernels of convolution and pooling (``dnn_im2col`` and the
rest) work a thread per element they write and gather what it needs, adding in the generic
kernel's order: the same bits (but for the sign of a zero max pooled from 0.0 and -0.0, which
NumPy's max leaves to the order of its SIMD reduction).  Batch normalization's sums per channel
add a column's rows in chunks, then the chunks (no atomics): always the same
order, so the same bits from call to call, and NumPy's sums to rounding.  The gpu backend
compiles them with ``--fmad=false``, the harness with ``-ffp-contract=off``: no multiply-add is
contracted into a differently rounded FMA.
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


# The geometry of a window kernel (dnn.backends.windows.Window over (n, height, width, channels)
# inputs), as the gpu backend passes it: integers, one value for every thread.
WINDOW_PARAMS = ("int64 height, int64 width, int64 channels, int64 out_height, int64 out_width, "
                 "int64 kernel_height, int64 kernel_width, int64 stride_rows, int64 stride_cols, "
                 "int64 pad_top, int64 pad_left")

# The body of a kernel that writes a thread per input element (n, h, w, c): 0, plus a term
# for each window that reads that input, row offset then column offset ascending (the generic
# col2im's order); the term sees ``window`` (its index over (n, oh, ow)), ``row``, ``column``
# and ``channel``.
_WINDOWS_READING_THE_INPUT = """
        ptrdiff_t rest = i;
        const ptrdiff_t channel = rest % channels; rest /= channels;
        const ptrdiff_t in_x = rest % width; rest /= width;
        const ptrdiff_t in_y = rest % height;
        const ptrdiff_t sample = rest / height;
        T total = (T)0;
        for (ptrdiff_t row = 0; row < kernel_height; ++row) {{
            const ptrdiff_t from_y = in_y + pad_top - row;
            if (from_y < 0 || from_y % stride_rows != 0 || from_y / stride_rows >= out_height)
                continue;
            for (ptrdiff_t column = 0; column < kernel_width; ++column) {{
                const ptrdiff_t from_x = in_x + pad_left - column;
                if (from_x < 0 || from_x % stride_cols != 0 || from_x / stride_cols >= out_width)
                    continue;
                const ptrdiff_t window = (sample * out_height + from_y / stride_rows) * out_width
                                         + from_x / stride_cols;{term}
            }}
        }}
        grad_x = total;
        """

# -- batch normalization's sums per channel (Backend.channel_sums, channel_gradient_sums) over
# (m, c) rows, in stages with no atomics, so that a sum comes out with the same bits every
# time (a captured step's replays are the eager step's).  Stage 1 (dnn_chunk_*): a thread per
# element (chunk, column) of (chunks, width) partial sums, adding the terms of its column over
# the chunk's rows in order, from 0 as NumPy's sum does; a chunk is chunk_rows rows (the last
# fewer), chunks = ceil(rows / chunk_rows).  While the partial sums are more rows than a chunk,
# dnn_chunk_sums sums them again by chunks (gpu.GpuBackend._sum_in_chunks).  Last
# (dnn_sum_chunks): a thread per column, adding its chunks in order.  {width} is the columns of
# the partial sums; {term} adds the term of row ``row`` (at ``at`` in the rows) to ``total``.
CHUNK_PARAMS = "int64 rows, int64 channels, int64 chunk_rows"
_CHUNK_OF_ROWS = """
        const ptrdiff_t width = {width};
        const ptrdiff_t column = i % width, channel = column % channels;
        const ptrdiff_t first = (i / width) * chunk_rows;
        const ptrdiff_t stop = first + chunk_rows < rows ? first + chunk_rows : rows;
        T total = (T)0;
        for (ptrdiff_t row = first; row < stop; ++row) {{
            const ptrdiff_t at = row * channels + channel;
            {term}
        }}
        partial = total;
        """

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
    # -- windows (dnn.backends.windows), channels-last.  The geometry is WINDOW_PARAMS; output
    # (out_y, out_x) at window offset (row, column) reads input (out_y * stride_rows + row -
    # pad_top, out_x * stride_cols + column - pad_left), padding where that is outside the
    # image.  A thread per element of what the kernel writes, gathering what it needs: no two
    # threads write one element, and each adds in the generic kernel's order.
    # im2col: a thread per element of cols (n, oh, ow, kh, kw, c), fill where it is padding.
    ElementwiseSource(
        "dnn_im2col", f"raw T x, {WINDOW_PARAMS}, T fill", "T cols",
        """
        ptrdiff_t rest = i;
        const ptrdiff_t channel = rest % channels; rest /= channels;
        const ptrdiff_t column = rest % kernel_width; rest /= kernel_width;
        const ptrdiff_t row = rest % kernel_height; rest /= kernel_height;
        const ptrdiff_t out_x = rest % out_width; rest /= out_width;
        const ptrdiff_t out_y = rest % out_height;
        const ptrdiff_t sample = rest / out_height;
        const ptrdiff_t in_y = out_y * stride_rows + row - pad_top;
        const ptrdiff_t in_x = out_x * stride_cols + column - pad_left;
        cols = (in_y >= 0 && in_y < height && in_x >= 0 && in_x < width)
            ? x[((sample * height + in_y) * width + in_x) * channels + channel] : fill;
        """),
    # col2im: a thread per element of grad_x (n, h, w, c): 0, plus each entry of grad_cols
    # (n, oh, ow, kh, kw, c) taken from that input, row offset then column offset ascending.
    ElementwiseSource(
        "dnn_col2im", f"raw T grad_cols, {WINDOW_PARAMS}", "T grad_x",
        _WINDOWS_READING_THE_INPUT.format(term="""
                total = total + grad_cols[((window * kernel_height + row) * kernel_width
                                           + column) * channels + channel];""")),
    # max_pool: a thread per output (n, oh, ow, c): the window's cells in row-major order,
    # padding read as `lowest` (-inf, as the generic kernel's im2col fills it), the first
    # largest (or the first NaN, numpy.argmax's rule) taken: its value and its cell (a window
    # of -inf only takes its first cell, padding or not, as the generic kernel does).
    ElementwiseSource(
        "dnn_max_pool", f"raw T x, {WINDOW_PARAMS}, T lowest", "T out, int32 argmax",
        """
        ptrdiff_t rest = i;
        const ptrdiff_t channel = rest % channels; rest /= channels;
        const ptrdiff_t out_x = rest % out_width; rest /= out_width;
        const ptrdiff_t out_y = rest % out_height;
        const ptrdiff_t sample = rest / out_height;
        T best = lowest;
        ptrdiff_t best_cell = 0;
        for (ptrdiff_t row = 0; row < kernel_height; ++row) {
            const ptrdiff_t in_y = out_y * stride_rows + row - pad_top;
            for (ptrdiff_t column = 0; column < kernel_width; ++column) {
                const ptrdiff_t in_x = out_x * stride_cols + column - pad_left;
                const T value = (in_y >= 0 && in_y < height && in_x >= 0 && in_x < width)
                    ? x[((sample * height + in_y) * width + in_x) * channels + channel]
                    : lowest;
                const ptrdiff_t cell = row * kernel_width + column;
                if (cell == 0 || (best == best && (value > best || value != value))) {
                    best = value;
                    best_cell = cell;
                }
            }
        }
        out = best;
        argmax = (int)best_cell;  // a cell of one window
        """),
    # max_pool_backward: a thread per element of grad_x (n, h, w, c): 0, plus for each window
    # that reads this input (row offset then column offset ascending) its grad where its
    # argmax is this cell, else 0, as the generic kernel routes them to col2im.
    ElementwiseSource(
        "dnn_max_pool_backward", f"raw T grad, raw int32 argmax, {WINDOW_PARAMS}",
        "T grad_x",
        _WINDOWS_READING_THE_INPUT.format(term="""
                const ptrdiff_t at = window * channels + channel;
                const int chosen = argmax[at] == row * kernel_width + column;
                total = total + (chosen ? grad[at] : (T)0);""")),
    # -- batch normalization's sums per channel, stage 1 (CHUNK_PARAMS, _CHUNK_OF_ROWS).
    # chunk_sums: the sums of x (m, c) per chunk, (chunks, c).
    ElementwiseSource(
        "dnn_chunk_sums", f"raw T x, {CHUNK_PARAMS}", "T partial",
        _CHUNK_OF_ROWS.format(width="channels", term="total = total + x[at];")),
    # chunk_squares: the sums of (x - mean)**2 per chunk, (chunks, c), mean (c,).
    ElementwiseSource(
        "dnn_chunk_squares", f"raw T x, raw T mean, {CHUNK_PARAMS}", "T partial",
        _CHUNK_OF_ROWS.format(width="channels", term=(
            "const T centered = x[at] - mean[channel]; total = total + centered * centered;"))),
    # chunk_gradient_sums: per chunk, (chunks, 2c), the sums of grad (m, c) in the first c
    # columns, those of grad * normalized (m, c) in the last c.
    ElementwiseSource(
        "dnn_chunk_gradient_sums", f"raw T grad, raw T normalized, {CHUNK_PARAMS}",
        "T partial",
        _CHUNK_OF_ROWS.format(width="2 * channels", term=(
            "total = total + (column < channels ? grad[at] : grad[at] * normalized[at]);"))),
    # sum_chunks, the last stage: out (width,), each column of partial (chunks, width) summed
    # in order.
    ElementwiseSource(
        "dnn_sum_chunks", "raw T partial, int64 chunks, int64 width", "T out",
        """
        T total = (T)0;
        for (ptrdiff_t chunk = 0; chunk < chunks; ++chunk)
            total = total + partial[chunk * width + i];
        out = total;
        """),
)}
