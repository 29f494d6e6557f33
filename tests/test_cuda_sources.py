"""The gpu backend's CUDA kernels, compiled by the host C compiler (tests/cuda_harness.py) and run
through the gpu backend's own code against the generic kernels, in float32 and float64, on
NaN, inf, -0.0, subnormals, ties and empty batches (the window kernels of convolution and
pooling also over every small geometry; batch normalization's sums per channel over batches
of every size, each chunk of rows, to the bit on sums that are exact and to rounding on any):
CI has no GPU, and this is how a typo or a wrong formula in a kernel string is found there.
Every output of every kernel is checked, the per-row values a row kernel writes and the
partial sums of each chunk that the backend adds up included, and an error planted in each
output in turn proves it."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from dnn.backends import gpu
from dnn.backends.cuda_sources import ELEMENTWISE, ElementwiseSource
from dnn.backends.windows import PADDINGS, Window
from dnn.optimizers import SGD, Adam, RMSprop
from dnn.testing import optimizer_steps
from tests.conftest import GenericNumpy, awkward, awkward_images
from tests.cuda_harness import (CompileError, HostCudaBackend, build_library, c_file,
                                compile_kernels, host_kernels, parse_params)

pytestmark = [
    pytest.mark.skipif(not HostCudaBackend.is_available(),
                       reason=f"{HostCudaBackend.is_available().reason}"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # NaN and inf, on purpose
]

DTYPES = [np.float32, np.float64]
ROWS = [0, 1, 37]  # an empty batch, one row, and more than a vector's width
SEED = 7  # of the inputs of every case


def hidden_layer(rows, dtype, rng):
    return (awkward(rng, (rows, 9), dtype=dtype), rng.normal(size=(9, 23)).astype(dtype),
            awkward(rng, (23,), dtype=dtype))


def run_optimizer(make):
    """Three steps of the optimizer ``make()`` on (rows, 11) awkward parameters, from awkward
    state (squared-gradient averages >= 0)."""
    def case(backend, rows, dtype, rng):
        param, grads = awkward(rng, (rows, 11), dtype=dtype), [
            awkward(rng, (rows, 11), dtype=dtype) for _ in range(3)]
        starts = {key: awkward(rng, (rows, 11), positive=key in ("mean_square", "v"),
                               dtype=dtype) for key in ("m", "v", "mean_square")}
        return list(optimizer_steps(backend, make(), param, grads, starts.__getitem__).values())
    return case


def logits_and_targets(rows, dtype, rng, classes=10):
    """Logits with a tie row, a NaN, an infinity and a row far from 0; one-hot targets."""
    logits = (rng.normal(size=(rows, classes)) * 5).astype(dtype)
    special = [(0, slice(None), 1.0), (1, 2 % classes, np.nan), (2, 3 % classes, np.inf),
               (3, slice(None), None)]
    for row, column, value in special:
        if row < rows:
            logits[row, column] = logits[row, column] + 1e4 if value is None else value
    targets = np.eye(classes, dtype=dtype)[rng.integers(0, classes, size=rows)]
    return logits, targets


def softmax_crossentropy(backend, logits, targets) -> list:
    """``[loss_sum, grad]`` of ``backend``'s softmax cross-entropy kernel."""
    grad = np.empty_like(logits)
    return [backend.softmax_crossentropy(logits, targets, grad), grad]


def correct_count(backend, output, targets) -> list:
    """``[count]`` of ``backend``'s accuracy kernel, as an array."""
    return [np.asarray(backend.correct_count(output, targets))]


# The kernels that work a row per thread and write a value per row that the gpu backend sums
# (so that a wrong row can hide in the sum, or behind a NaN row): kernel name ->
# (inputs(rows, dtype, rng): the batch's arrays, call(backend, *inputs): the backend's results,
# {output parameter: the index of the result that sums it over the rows}).
ROW_KERNELS = {
    "dnn_softmax_xent_rows": (logits_and_targets, softmax_crossentropy, {"row_loss": 0}),
    "dnn_correct_rows": (logits_and_targets, correct_count, {"correct": 0}),
}


def row_case(name):
    """The case of row kernel ``name``: its call on a batch of its inputs."""
    inputs, call, _ = ROW_KERNELS[name]
    return lambda b, rows, dtype, rng: call(b, *inputs(rows, dtype, rng))


# The windows of the cases of the window kernels: 3x2 cells, strides 2 and 1, "same" padding
# (a row above and below a 7x5 image, a column to its right), 3 channels.
CASE_WINDOW = Window.of((7, 5), (3, 2), (2, 1), "same")
CASE_CHANNELS = 3


def im2col_case(backend, window, images, fill):
    n, c = images.shape[0], images.shape[-1]
    return [backend.im2col(images, window,
                           np.empty((n, *window.output, *window.kernel, c), images.dtype), fill)]


def col2im_case(backend, window, grad_cols):
    n, c = grad_cols.shape[0], grad_cols.shape[-1]
    return [backend.col2im(grad_cols, window,
                           np.empty((n, window.rows.length, window.columns.length, c),
                                    grad_cols.dtype))]


def max_pool_case(backend, window, images):
    shape = (images.shape[0], *window.output, images.shape[-1])
    out, argmax = np.empty(shape, images.dtype), np.empty(shape, np.int32)
    return [backend.max_pool(images, window, out, argmax), argmax]


def max_pool_backward_case(backend, window, grad, argmax):
    n, c = grad.shape[0], grad.shape[-1]
    return [backend.max_pool_backward(grad, argmax, window,
                                      np.empty((n, window.rows.length, window.columns.length,
                                                c), grad.dtype))]


def window_inputs(name, window, rows, channels, dtype, rng) -> tuple:
    """The arrays the case of window kernel ``name`` gives it, after the window: images,
    and the fill (0 or -inf) for im2col; the windows' gradient for col2im; a gradient and
    argmax cells drawn from all of a window's (the padding's too) for max_pool_backward."""
    images = (rows, window.rows.length, window.columns.length, channels)
    pooled = (rows, *window.output, channels)
    if name == "dnn_im2col":
        return awkward_images(rng, images, dtype), rng.choice([0.0, -np.inf])
    if name == "dnn_col2im":
        return (awkward(rng, (rows, *window.output, *window.kernel, channels), dtype=dtype),)
    if name == "dnn_max_pool":
        return (awkward_images(rng, images, dtype),)
    return (awkward(rng, pooled, dtype=dtype),
            rng.integers(0, window.cells, size=pooled).astype(np.int32))


WINDOW_CALLS = {"dnn_im2col": im2col_case, "dnn_col2im": col2im_case,
                "dnn_max_pool": max_pool_case, "dnn_max_pool_backward": max_pool_backward_case}


def window_case(name):
    """The case of window kernel ``name``: its call on a batch of ``rows`` images of
    :data:`CASE_WINDOW`."""
    return lambda b, rows, dtype, rng: WINDOW_CALLS[name](
        b, CASE_WINDOW, *window_inputs(name, CASE_WINDOW, rows, CASE_CHANNELS, dtype, rng))


def summable(rng, shape, dtype):
    """Quarters in [-8, 8], and in every column but the first zeros, -0.0, infinities of
    both signs and NaN mixed in: every sum, of them and of their products and squares about
    quarters, is exact in float32 (up to 1000 rows), so that the sums per channel, chunk by
    chunk, come out with NumPy's bits in any order."""
    values = (rng.integers(-32, 33, size=shape) / 4).astype(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)
    picked = rng.random(shape) < 0.2
    picked[..., 0] = False
    values[picked] = rng.choice(specials, size=int(picked.sum()))
    return values


def channel_sums_case(backend, x) -> list:
    return [backend.channel_sums(x, np.empty(x.shape[1], x.dtype))]


def channel_squares_case(backend, x, mean) -> list:
    return [backend.channel_sums(x, np.empty(x.shape[1], x.dtype), mean=mean)]


def channel_gradient_sums_case(backend, grad, normalized) -> list:
    return [backend.channel_gradient_sums(grad, normalized,
                                          np.empty(2 * grad.shape[1], grad.dtype))]


def rows_and_means(rows, dtype, rng, channels=5) -> tuple:
    """``((x (rows, channels),), (mean (channels,),))``: summable rows, and quarters for a
    mean, the last infinite."""
    mean = (rng.integers(-32, 33, size=channels) / 4).astype(dtype)
    mean[-1] = np.inf
    return (summable(rng, (rows, channels), dtype),), (mean,)


# The first stage of the sums per channel: kernel name -> (inputs(rows, dtype, rng):
# ((the (rows, c) arrays), (the (c,) arrays)), call(backend, *arrays): the backend's results),
# its output ``partial`` (chunks, width) the sums of each chunk of rows (gpu.channel_chunks),
# which the second stage (dnn_sum_chunks) adds up (so that a wrong chunk can hide in the sum,
# or behind a NaN one).
CHUNK_KERNELS = {
    "dnn_chunk_sums": (lambda rows, dtype, rng: ((summable(rng, (rows, 5), dtype),), ()),
                       channel_sums_case),
    "dnn_chunk_squares": (rows_and_means, channel_squares_case),
    "dnn_chunk_gradient_sums": (lambda rows, dtype, rng: (
        (summable(rng, (rows, 5), dtype), summable(rng, (rows, 5), dtype)), ()),
                                channel_gradient_sums_case),
}


def chunk_case(name):
    """The case of stage-1 kernel ``name``: its backend call on its inputs."""
    inputs, call = CHUNK_KERNELS[name]
    return lambda b, rows, dtype, rng: call(b, *itertools.chain(*inputs(rows, dtype, rng)))


# kernel name: case(backend, rows, dtype, rng) -> host arrays; each case calls that kernel
CASES = {
    "dnn_bias_add": lambda b, rows, dtype, rng: [
        b.dense_forward(*hidden_layer(rows, dtype, rng), np.empty((rows, 23), dtype))],
    "dnn_bias_relu": lambda b, rows, dtype, rng: [
        b.dense_relu_forward(*hidden_layer(rows, dtype, rng), np.empty((rows, 23), dtype))],
    "dnn_relu": lambda b, rows, dtype, rng: [b.relu(awkward(rng, (rows, 13), dtype=dtype))],
    "dnn_relu_backward": lambda b, rows, dtype, rng: [b.relu_backward(
        awkward(rng, (rows, 13), dtype=dtype), awkward(rng, (rows, 13), dtype=dtype))],
    "dnn_sgd": run_optimizer(lambda: SGD(learning_rate=0.01)),
    "dnn_rmsprop": run_optimizer(RMSprop),
    "dnn_adam": run_optimizer(lambda: Adam(learning_rate=2e-3)),
    **{name: row_case(name) for name in ROW_KERNELS},
    **{name: window_case(name) for name in WINDOW_CALLS},
    **{name: chunk_case(name) for name in CHUNK_KERNELS},
    "dnn_sum_chunks": chunk_case("dnn_chunk_gradient_sums"),
}
# Kernels that reduce a row in order where NumPy sums pairwise, and call exp and log: the C
# library's, not NumPy's.  The rest compute exactly NumPy's expression, to the bit.
ROUNDED = {"dnn_softmax_xent_rows"}
# Max pooling's largest value where a window's largest is 0.0 and -0.0 both: the kernel takes
# the first (the argmax cell's), NumPy's max whichever the order of its SIMD reduction leaves
# (for the same windows, it differs with the count of cells, the channels and the dtype).
# Every other bit, and every bit of every other kernel, is the generic kernel's.
SIGNED_ZEROS = {"dnn_max_pool"}


def run_case(kernels, name, dtype, rows) -> tuple:
    """``(results, outputs)``: the results of the case of kernel ``name`` through the gpu
    backend's code on ``kernels``, and the output arrays of that kernel's latest call there,
    by parameter name."""
    kernel = kernels[name]
    calls = kernel.calls
    results = CASES[name](HostCudaBackend(kernels), rows, dtype, np.random.default_rng(SEED))
    assert kernel.calls > calls, f"the case for {name} never called it"
    return results, dict(kernel.outputs)


def generic_rows(name, output, dtype, rows) -> list:
    """What ``output`` of row kernel ``name`` holds for each row of its case: the generic
    kernels' result for that row alone."""
    inputs, call, sums = ROW_KERNELS[name]
    batch = inputs(rows, dtype, np.random.default_rng(SEED))
    return [np.asarray(call(GenericNumpy(), *(array[row:row + 1] for array in batch))[sums[output]])
            for row in range(rows)]


def generic_chunks(name, dtype, rows) -> np.ndarray:
    """What the output ``partial`` of stage-1 kernel ``name`` holds for its case: the generic
    kernel's sums of each chunk of rows alone, ``(chunks, width)``."""
    inputs, call = CHUNK_KERNELS[name]
    row_arrays, channel_arrays = inputs(rows, dtype, np.random.default_rng(SEED))
    chunk_rows = gpu.CHUNK_ROWS
    sums = [call(GenericNumpy(), *(array[start:start + chunk_rows] for array in row_arrays),
                 *channel_arrays)[0] for start in range(0, rows, chunk_rows)]
    width = call(GenericNumpy(), *(array[:0] for array in row_arrays), *channel_arrays)[0].size
    return np.stack(sums) if sums else np.empty((0, width), dtype)


def assert_same(name, what, mine, reference) -> None:
    """``mine`` is ``reference``: the same dtype and shape, and the same values, to rounding
    for a :data:`ROUNDED` kernel, to the bit (NaN where NaN) for the rest."""
    mine, reference = np.asarray(mine), np.asarray(reference)
    assert (mine.dtype, mine.shape) == (reference.dtype, reference.shape), (
        f"{name} {what}: {mine.dtype} {mine.shape}, not {reference.dtype} {reference.shape}")
    if name in ROUNDED:
        eps = np.finfo(mine.dtype).eps
        np.testing.assert_allclose(mine, reference, rtol=16 * eps, atol=4 * eps,
                                   err_msg=f"{name} {what}")
    else:
        np.testing.assert_array_equal(mine, reference, err_msg=f"{name} {what}")
        assert comparable_bits(mine, name) == comparable_bits(reference, name), (
            f"{name} {what}: equal values, but not the same bits (the sign of a zero)")


def comparable_bits(array, name) -> bytes:
    """The bytes of ``array`` with every NaN as one NaN (CUDA and the host may carry
    another payload) and, for a :data:`SIGNED_ZEROS` kernel, every zero as 0.0."""
    array = np.array(array, copy=True)
    if array.dtype.kind == "f":
        array[np.isnan(array)] = np.nan
        if name in SIGNED_ZEROS:
            array[array == 0] = 0
    return array.tobytes()


def assert_kernel_matches_generic(kernels, name, dtype, rows) -> list:
    """Every output kernel ``name`` of ``kernels`` writes in its case matches the generic
    kernels: the gpu backend's results, which hold the kernel's outputs, and, row by row (chunk
    by chunk), each output the backend sums (a wrong row would hide in the sum, and a NaN row
    hides them all).
    An output that is neither, one no comparison would see, fails the check.  Returns the
    backend's results."""
    ours, outputs = run_case(kernels, name, dtype, rows)
    expected = CASES[name](GenericNumpy(), rows, dtype, np.random.default_rng(SEED))
    for index, (mine, reference) in enumerate(zip(ours, expected, strict=True)):
        assert_same(name, f"result {index}", mine, reference)
    summed = ROW_KERNELS[name][2] if name in ROW_KERNELS else {}
    for output, array in outputs.items():
        if output in summed:
            rows_alone = generic_rows(name, output, dtype, rows)
            assert_same(name, output, array,
                        np.stack(rows_alone) if rows_alone else np.empty(0, array.dtype))
        elif name in CHUNK_KERNELS:
            assert_same(name, output, array, generic_chunks(name, dtype, rows))
        else:
            assert array.size == 0 or any(
                isinstance(result, np.ndarray) and np.shares_memory(array, result)
                for result in ours), (f"{name} output {output} is not among the case's results "
                                      "and not in ROW_KERNELS: nothing compares it")
    return ours


def test_every_kernel_source_has_a_case():
    assert set(CASES) == set(ELEMENTWISE)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_the_generic_kernel(name, dtype, rows):
    ours = assert_kernel_matches_generic(compile_kernels(), name, dtype, rows)
    if rows == 37 and name in ("dnn_softmax_xent_rows", "dnn_relu"):
        assert np.isnan(ours[-1]).any(), "the awkward inputs lost their NaN"


def planted(source: ElementwiseSource, output) -> ElementwiseSource:
    """``source`` with a statement after its body that adds 1 to its output ``output`` (a
    parsed parameter): to the thread's element of a plain output, to element ``i`` of a raw
    one (a row kernel's raw output has at least an element per row)."""
    target = f"{output.name}[i]" if output.raw else output.name
    return dataclasses.replace(source, body=f"{source.body};\n{target} = {target} + 1")


# (kernel, output parameter): every output of every kernel, as its source declares it today.
OUTPUTS = [(name, param.name) for name, source in sorted(ELEMENTWISE.items())
           for param in parse_params(source) if param.output]


@pytest.mark.parametrize("name, output", OUTPUTS)
def test_an_error_planted_in_any_output_fails_the_check(tmp_path, name, output):
    """An error in any one output of a kernel is caught: with 1 added to that output, the
    output differs from the true kernel's, and the check fails, in float32 and float64, for a
    batch of one row and of many.  (The true kernels pass: the test above.)"""
    source = ELEMENTWISE[name]
    [param] = [param for param in parse_params(source) if param.output and param.name == output]
    kernels = {**compile_kernels(), **host_kernels([planted(source, param)], tmp_path)}
    for dtype in DTYPES:
        for rows in filter(None, ROWS):
            _, true_outputs = run_case(compile_kernels(), name, dtype, rows)
            _, planted_outputs = run_case(kernels, name, dtype, rows)
            assert not np.array_equal(planted_outputs[output], true_outputs[output],
                                      equal_nan=True), f"the planted error left {output} as it was"
            with pytest.raises(AssertionError):
                assert_kernel_matches_generic(kernels, name, dtype, rows)


# Every small geometry: kernels of 1 to 3 rows and columns, strides of 1 to 3, on images
# taller than wide, wider than tall, and smaller than some kernels (no "valid" window then).
GEOMETRIES = [(image, kernel, strides)
              for image in [(7, 5), (4, 6), (2, 3)]
              for kernel in itertools.product(range(1, 4), repeat=2)
              for strides in itertools.product(range(1, 4), repeat=2)]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(WINDOW_CALLS))
def test_window_kernels_match_the_generic_kernels_over_every_small_geometry(name, dtype,
                                                                            padding):
    """Each window kernel through the gpu backend's code, to the bit, for every geometry of
    :data:`GEOMETRIES`, one channel and three, on ties, NaN, infinities and signed zeros."""
    kernels = compile_kernels()
    rng = np.random.default_rng(SEED)
    for (image, kernel, strides), channels in itertools.product(GEOMETRIES, [1, 3]):
        window = Window.of(image, kernel, strides, padding)
        inputs = window_inputs(name, window, 5, channels, dtype, rng)
        calls = kernels[name].calls
        ours = WINDOW_CALLS[name](HostCudaBackend(kernels), window, *inputs)
        assert kernels[name].calls == calls + 1, f"{name} was not called for {window}"
        expected = WINDOW_CALLS[name](GenericNumpy(), window, *inputs)
        for index, (mine, reference) in enumerate(zip(ours, expected, strict=True)):
            assert_same(name, f"result {index} for {window}, {channels} channels", mine,
                        reference)


def test_max_pool_takes_the_first_largest_cell_and_a_nan_over_it():
    """Ties go to the first cell in row-major order, a NaN wins (the first of them), and a
    window of -inf only picks its first cell, the padding's if that comes first, as the
    generic kernel does (its padding reads -inf): that window's gradient goes nowhere."""
    window = Window.of((3, 3), (3, 3), (2, 2), "same")  # one row and column of padding around
    inf, nan = np.inf, np.nan
    cases = [  # images, argmax, out, grad_x of ones
        ([[1, 5, 5], [5, 1, 2], [0, 3, 3]], [[5, 3], [1, 3]], [[5, 5], [5, 3]],
         [[0, 2, 0], [1, 0, 0], [0, 1, 0]]),
        ([[-inf, -inf, nan], [-inf, -inf, nan], [2, nan, 7]], [[0, 4], [5, 1]],
         [[-inf, nan], [nan, nan]], [[0, 0, 1], [0, 0, 1], [0, 1, 0]]),
    ]
    for values, argmax, out, grad_x in cases:
        images = np.array(values, np.float32).reshape(1, 3, 3, 1)
        ours = max_pool_case(HostCudaBackend(), window, images)
        np.testing.assert_array_equal(ours[1][0, :, :, 0], argmax)
        np.testing.assert_array_equal(ours[0][0, :, :, 0], out)
        for mine, reference in zip(ours, max_pool_case(GenericNumpy(), window, images)):
            assert_same("dnn_max_pool", "result", mine, reference)
        ones = np.ones((1, 2, 2, 1), np.float32)
        backward = max_pool_backward_case(HostCudaBackend(), window, ones, ours[1])[0]
        np.testing.assert_array_equal(backward[0, :, :, 0], grad_x)
        assert_same("dnn_max_pool_backward", "result", backward,
                    max_pool_backward_case(GenericNumpy(), window, ones, ours[1])[0])


def test_the_window_kernels_leave_to_the_generic_kernels_arrays_they_cannot_take():
    """An output that is not C-contiguous, images of another dtype than the windows', an
    argmax that is not int32: the generic kernels, with their results; strided inputs are
    copied for the kernel."""
    kernels = compile_kernels()
    backend, generic = HostCudaBackend(kernels), GenericNumpy()
    window, rng = CASE_WINDOW, np.random.default_rng(SEED)
    images = awkward_images(rng, (4, 7, 5, 3), np.float64)
    cols_shape = (4, *window.output, *window.kernel, 3)
    pooled = (4, *window.output, 3)
    refused = [  # (the kernel left out, the call)
        ("dnn_im2col", lambda b: b.im2col(images, window, np.empty(cols_shape[::-1]).T)),
        ("dnn_im2col", lambda b: b.im2col(images.astype(np.float32), window,
                                          np.empty(cols_shape))),
        ("dnn_max_pool", lambda b: b.max_pool(images, window, np.empty(pooled),
                                              np.empty(pooled, np.int64))),
        ("dnn_max_pool_backward", lambda b: b.max_pool_backward(
            np.ones(pooled), np.zeros(pooled, np.int64), window, np.empty(images.shape))),
        ("dnn_col2im", lambda b: b.col2im(np.ones(cols_shape), window,
                                          np.empty(images.shape[::-1]).T)),
    ]
    for name, call in refused:
        calls = kernels[name].calls
        np.testing.assert_array_equal(call(backend), call(generic))
        assert kernels[name].calls == calls, f"{name} took arrays it cannot"
    calls = {name: kernels[name].calls for name in WINDOW_CALLS}
    strided = np.ascontiguousarray(np.repeat(images, 2, axis=2))[:, :, ::2]
    assert not strided.flags.c_contiguous
    ours = im2col_case(backend, window, strided, 0.0)
    assert kernels["dnn_im2col"].calls == calls["dnn_im2col"] + 1
    assert_same("dnn_im2col", "strided", ours[0], im2col_case(generic, window, strided, 0.0)[0])


# Batches as rows (m, c) for the sums per channel: none, one, a row per chunk, chunks of
# rows that do not divide them (37 = 5 chunks of 7 and one of 2), one channel (a contiguous
# column, which NumPy sums pairwise), more rows than a float32 sum of them all can hold
# exactly where the values are not quarters.
# 1025 rows and more: partial sums of more than a chunk's rows, summed again (40000: twice)
CHANNEL_SHAPES = [(0, 1), (0, 4), (1, 1), (1, 3), (2, 3), (7, 1), (36, 2), (37, 5), (64, 3),
                  (130, 4), (1000, 1), (1000, 3), (1025, 2), (40000, 3)]


def channel_kernel_calls(backend, x, mean, grad) -> dict:
    """The three sums per channel of ``x``, about ``mean``, and of ``grad`` with ``x`` as the
    normalized values, on ``backend``, by kernel."""
    return {"dnn_chunk_sums": channel_sums_case(backend, x),
            "dnn_chunk_squares": channel_squares_case(backend, x, mean),
            "dnn_chunk_gradient_sums": channel_gradient_sums_case(backend, grad, x)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", CHANNEL_SHAPES, ids=str)
def test_channel_sums_are_the_generic_kernels_on_batches_of_any_size(shape, dtype):
    """To the bit where every sum is exact (quarters, zeros of both signs, infinities, NaN):
    every row counted once, in its channel, whatever the chunks."""
    kernels = compile_kernels()
    rng = np.random.default_rng(SEED)
    x, grad = summable(rng, shape, dtype), summable(rng, shape, dtype)
    mean = (rng.integers(-32, 33, size=shape[1]) / 4).astype(dtype)
    calls = kernels["dnn_sum_chunks"].calls
    ours = channel_kernel_calls(HostCudaBackend(kernels), x, mean, grad)
    assert kernels["dnn_sum_chunks"].calls == calls + 3
    expected = channel_kernel_calls(GenericNumpy(), x, mean, grad)
    for name, results in ours.items():
        assert_same(name, f"{shape}", results[0], expected[name][0])


def exact_sums(terms: np.ndarray) -> tuple:
    """``(sums, sums of magnitudes)`` per column of ``terms`` ``(m, width)``, each the exact
    sum rounded once (float64)."""
    columns = terms.astype(np.float64).T
    return (np.array([math.fsum(column) for column in columns]),
            np.array([math.fsum(np.abs(column)) for column in columns]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(37, 5), (1000, 1), (4099, 3), (40000, 2)], ids=str)
def test_channel_sums_are_exact_sums_to_the_rounding_of_their_additions(shape, dtype):
    """On values of several scales that cancel: within (chunk_rows + chunks) roundings of
    each term's size of the exact sums of the generic kernels' terms (a lost or doubled row
    is a whole term off)."""
    rng = np.random.default_rng(SEED)
    x, grad = ((rng.normal(size=shape) * rng.choice([1e-3, 1.0, 1e3], size=shape))
               .astype(dtype) for _ in range(2))
    mean = rng.normal(size=shape[1]).astype(dtype)
    ours = channel_kernel_calls(HostCudaBackend(), x, mean, grad)
    terms = {"dnn_chunk_sums": x, "dnn_chunk_squares": (x - mean) * (x - mean),
             "dnn_chunk_gradient_sums": np.concatenate([grad, grad * x], axis=1)}
    for name, results in ours.items():
        exact, magnitudes = exact_sums(terms[name])
        bound = chained_additions(shape[0]) * np.finfo(dtype).eps * magnitudes
        assert np.all(np.abs(results[0] - exact) <= bound), name


def chained_additions(rows: int) -> int:
    """The most additions a term of a sum of ``rows`` rows goes through: a chunk's at each
    level of partial sums, then the last stage's."""
    additions = 0
    while rows > gpu.CHUNK_ROWS:
        additions, rows = additions + gpu.CHUNK_ROWS, gpu.channel_chunks(rows)
    return additions + rows


def test_channel_chunks_split_the_rows_into_chunks_none_of_them_empty():
    for rows in [*range(200), 4099, 10 ** 6 + 1]:
        chunks, chunk_rows = gpu.channel_chunks(rows), gpu.CHUNK_ROWS
        assert (chunks - 1) * chunk_rows < rows <= chunks * chunk_rows or rows == chunks == 0


def test_the_channel_kernels_leave_to_the_generic_kernels_arrays_they_cannot_take():
    """An output that is not C-contiguous, rows that are not 2-D, a mean or normalized values
    of another dtype or shape: the generic kernels, with their results; rows that are not
    C-contiguous are copied for the kernels."""
    kernels = compile_kernels()
    backend, generic = HostCudaBackend(kernels), GenericNumpy()
    rng = np.random.default_rng(SEED)
    x, grad = rng.normal(size=(2, 9, 4)), rng.normal(size=(18, 4))
    refused = [  # (the first-stage kernel left out, the call)
        ("dnn_chunk_sums", lambda b: b.channel_sums(x[0], np.empty(8)[::2])),
        ("dnn_chunk_sums", lambda b: b.channel_sums(x, np.empty(4))),
        ("dnn_chunk_squares", lambda b: b.channel_sums(x[0], np.empty(4),
                                                       mean=np.zeros(4, np.float32))),
        ("dnn_chunk_squares", lambda b: b.channel_sums(x[0], np.empty(4), mean=np.zeros(1))),
        ("dnn_chunk_gradient_sums", lambda b: b.channel_gradient_sums(
            grad, grad[:9], np.empty(8))),
        ("dnn_chunk_gradient_sums", lambda b: b.channel_gradient_sums(
            grad, grad.astype(np.float32), np.empty(8))),
    ]
    for name, call in refused:
        calls = kernels[name].calls
        try:
            expected = call(generic)
        except ValueError:  # shapes the generic kernel cannot take either
            with pytest.raises(ValueError):
                call(backend)
        else:
            np.testing.assert_array_equal(call(backend), expected)
        assert kernels[name].calls == calls, f"{name} took arrays it cannot"
    strided = grad[:, ::2]
    assert not strided.flags.c_contiguous
    calls = kernels["dnn_chunk_gradient_sums"].calls
    ours = channel_gradient_sums_case(backend, strided, strided)
    assert kernels["dnn_chunk_gradient_sums"].calls == calls + 1
    np.testing.assert_allclose(ours[0], channel_gradient_sums_case(generic, strided, strided)[0],
                               rtol=1e-14)


@pytest.mark.parametrize("classes", [1, 2, 3, 10])
def test_softmax_rows_kernel_handles_any_class_count(classes):
    rng = np.random.default_rng(8)
    logits, targets = logits_and_targets(20, np.float32, rng, classes)
    ours = softmax_crossentropy(HostCudaBackend(), logits.copy(), targets)
    expected = softmax_crossentropy(GenericNumpy(), logits.copy(), targets)
    for mine, reference in zip(ours, expected):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)


def test_correct_rows_kernel_breaks_ties_and_nan_as_numpy_argmax():
    output = np.array([[1, 1, 0], [0, 2, 2], [np.nan, 5, 1], [3, np.nan, np.nan]], np.float32)
    targets = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float32)
    assert int(HostCudaBackend().correct_count(output, targets)) == 3  # rows 0, 2 and 3


def test_the_gpu_backend_compiles_exactly_these_sources(monkeypatch):
    """The strings the harness compiles are the ones handed to CuPy: no second copy."""
    compiled = []

    class FakeCupy:
        @staticmethod
        def ElementwiseKernel(*args, **kwargs):  # noqa: N802 (CuPy's name)
            compiled.append((args, kwargs))
            return args[3]

    kernels = gpu._compile(FakeCupy)
    assert set(kernels) == set(ELEMENTWISE)
    for args, kwargs in compiled:
        source = ELEMENTWISE[args[3]]
        assert args == (source.in_params, source.out_params, source.body, source.name)
        assert "--fmad=false" in kwargs["options"] and kwargs["no_return"]


@pytest.mark.parametrize("body, complaint", [
    ("z = sqrtt(x)", "sqrtt"),              # a misspelt function
    ("x = (T)0; z = x", "read-only"),       # writing to an input, which CUDA refuses too
    ("z = x +", "expected expression"),     # a syntax error
    ("const int at = i; z = x", "conversion"),  # an index narrowed to 32 bits
    ("z = x * 0.5", "conversion"),          # a float kernel computing in double
    ("z = (x * 0.5 > 1.0) ? x : -x", "double-promotion"),  # in double, never narrowed
], ids=["typo", "writes-input", "syntax", "int-index", "double-in-float", "double-compare"])
def test_a_broken_kernel_source_fails_to_compile_naming_the_kernel(tmp_path, body, complaint):
    broken = ElementwiseSource("dnn_broken", "T x", "T z", body)
    with pytest.raises(CompileError, match=complaint) as error:
        build_library([broken], np.float32, tmp_path)
    assert "dnn_broken" in str(error.value)


def test_the_c_file_holds_each_kernel_body_verbatim():
    text = c_file(ELEMENTWISE.values(), np.float64)
    assert "typedef double T;" in text
    for source in ELEMENTWISE.values():
        assert source.body in text
