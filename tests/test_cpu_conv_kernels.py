"""The cpu backend's C window kernels (im2col, col2im, max pooling and its gradient) against the
generic kernels of dnn/backends/base.py, byte for byte: over every small geometry (kernels and
strides of 1 to 3, "valid" and "same", images taller, wider and smaller than the window), one
channel and several, float32 and float64, on ties, zeros of both signs, NaN, infinities and
subnormals; the order in which the gradients add; the batch split across threads; the arrays
the C kernels leave to the generic ones; and the C functions' refusals."""

import itertools
import threading
import tracemalloc

import numpy as np
import pytest

from dnn.backends import cpu as cpu_module
from dnn.backends.cpu import C_KERNELS, PARALLEL_MIN_SIZE, CpuBackend
from dnn.backends.windows import PADDINGS, Window
from tests.conftest import awkward, awkward_images, needs_extension

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and inf, on purpose

DTYPES = [np.float32, np.float64]
KERNELS = ["im2col", "col2im", "max_pool", "max_pool_backward"]
# Every small geometry: windows of 1 to 3 rows and columns, strides of 1 to 3, on images
# taller than wide, wider than tall, square, and smaller than some windows.
GEOMETRIES = [(image, kernel, strides)
              for image in [(7, 5), (4, 6), (6, 6), (2, 3)]
              for kernel in itertools.product(range(1, 4), repeat=2)
              for strides in itertools.product(range(1, 4), repeat=2)]


class Counting:
    """The C extension, counting the calls of each window kernel (to tell that a backend used
    it; from any thread)."""

    def __init__(self, module):
        self._module = module
        self._lock = threading.Lock()
        self.calls = dict.fromkeys(KERNELS, 0)

    def __getattr__(self, name):
        function = getattr(self._module, name)
        if name not in self.calls:
            return function

        def counted(*args):
            with self._lock:
                self.calls[name] += 1
            return function(*args)
        return counted


def c_backend() -> CpuBackend:
    """A cpu backend whose C extension counts its window kernels' calls."""
    backend = CpuBackend()
    backend.c_kernels = Counting(C_KERNELS)
    return backend


def relu_images(rng, shape, dtype):
    """What a relu layer hands a pooling layer: about half the values +0.0, the others > 0,
    some of them equal."""
    values = np.maximum(rng.integers(-3, 4, size=shape) * rng.choice([1.0, 0.5], size=shape),
                        0)
    return values.astype(dtype)


def cols_shape(window, n, c):
    return (n, *window.output, *window.kernel, c)


def image_shape(window, n, c):
    return (n, window.rows.length, window.columns.length, c)


def pooled_shape(window, n, c):
    return (n, *window.output, c)


def run(name, backend, window, inputs) -> list:
    """The results of ``backend``'s kernel ``name`` on ``inputs`` (made by :func:`inputs_of`),
    in new arrays filled with garbage first (every element must be written)."""
    def garbage(shape, dtype):
        return np.full(shape, 7, dtype)

    if name == "im2col":
        x, fill = inputs
        n, c = x.shape[0], x.shape[-1]
        return [backend.im2col(x, window, garbage(cols_shape(window, n, c), x.dtype), fill)]
    if name == "col2im":
        (grad_cols,) = inputs
        n, c = grad_cols.shape[0], grad_cols.shape[-1]
        return [backend.col2im(grad_cols, window,
                               garbage(image_shape(window, n, c), grad_cols.dtype))]
    if name == "max_pool":
        (x,) = inputs
        shape = pooled_shape(window, x.shape[0], x.shape[-1])
        out, argmax = garbage(shape, x.dtype), garbage(shape, np.int32)
        return [backend.max_pool(x, window, out, argmax), argmax]
    grad, argmax = inputs
    n, c = grad.shape[0], grad.shape[-1]
    return [backend.max_pool_backward(grad, argmax, window,
                                      garbage(image_shape(window, n, c), grad.dtype))]


def inputs_of(name, window, n, c, dtype, rng, relu=False) -> tuple:
    """The arrays kernel ``name`` takes after the window: images and a fill (0 or -inf) for
    im2col; awkward window gradients for col2im; images for max_pool; for max_pool_backward a
    gradient and argmax cells drawn from all of a window's, and one past either end."""
    make = relu_images if relu else awkward_images
    if name == "im2col":
        return make(rng, image_shape(window, n, c), dtype), float(rng.choice([0.0, -np.inf]))
    if name == "col2im":
        return (awkward(rng, cols_shape(window, n, c), dtype=dtype),)
    if name == "max_pool":
        return (make(rng, image_shape(window, n, c), dtype),)
    pooled = pooled_shape(window, n, c)
    return (awkward(rng, pooled, dtype=dtype),
            rng.integers(-1, window.cells + 1, size=pooled).astype(np.int32))


def assert_same_bytes(ours, expected, what) -> None:
    assert (ours.dtype, ours.shape) == (expected.dtype, expected.shape), what
    np.testing.assert_array_equal(ours, expected, err_msg=what)
    assert ours.tobytes() == expected.tobytes(), f"{what}: equal values, other bits"


def assert_matches_generic(name, backend, generic, window, inputs, what) -> None:
    ours = run(name, backend, window, inputs)
    expected = run(name, generic, window, inputs)
    for index, (mine, reference) in enumerate(zip(ours, expected, strict=True)):
        assert_same_bytes(mine, reference, f"{name} result {index}, {what}")


@needs_extension
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", KERNELS)
def test_window_kernels_match_the_generic_kernels_over_every_small_geometry(generic, name,
                                                                            dtype, padding):
    backend, rng = c_backend(), np.random.default_rng(1)
    for (image, kernel, strides), channels, relu in itertools.product(GEOMETRIES, [1, 3],
                                                                      [False, True]):
        window = Window.of(image, kernel, strides, padding)
        inputs = inputs_of(name, window, 3, channels, dtype, rng, relu)
        calls = backend.c_kernels.calls[name]
        assert_matches_generic(name, backend, generic, window, inputs,
                               f"{window}, {channels} channels, relu {relu}")
        assert backend.c_kernels.calls[name] == calls + 1, f"{name}: no C call for {window}"


@needs_extension
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numpy_kernels_of_the_backend_are_the_generic_ones(generic, dtype):
    """Without the extension (c_kernels=False) the backend runs the generic kernels."""
    backend, rng = CpuBackend(c_kernels=False), np.random.default_rng(2)
    window = Window.of((7, 5), (3, 2), (2, 1), "same")
    for name in KERNELS:
        assert_matches_generic(name, backend, generic, window,
                               inputs_of(name, window, 4, 3, dtype, rng), "numpy")


@needs_extension
def test_max_pool_takes_the_first_largest_cell_and_the_first_nan():
    """Ties go to the first cell in row-major order, and a NaN wins (the first of them); the
    gradient goes to that cell's input."""
    window = Window.of((3, 3), (2, 2), (2, 2), "same")  # pads a row and a column after
    backend = c_backend()
    x = np.array([[1, 2, 5], [2, 1, 5], [7, 7, 7]], np.float32).reshape(1, 3, 3, 1)
    x = np.repeat(x, 2, axis=3)  # two channels: the C kernel's own reduction, no fallback
    x[0, 0, 0] = -np.inf
    out, argmax = run("max_pool", backend, window, (x,))
    np.testing.assert_array_equal(argmax[0, :, :, 0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(out[0, :, :, 0], [[2, 5], [7, 7]])
    x[0, 2, 1] = np.nan
    x[0, 2, 2] = -np.inf
    x[0, 0:2, 2] = [[-np.inf], [np.nan]]  # (rows, channels)
    out, argmax = run("max_pool", backend, window, (x,))
    np.testing.assert_array_equal(argmax[0, :, :, 0], [[1, 2], [1, 0]])
    np.testing.assert_array_equal(out[0, :, :, 0], [[2, np.nan], [np.nan, -np.inf]])
    assert backend.c_kernels.calls["max_pool"] == 2
    (grad_x,) = run("max_pool_backward", backend, window, (np.ones_like(out), argmax))
    np.testing.assert_array_equal(grad_x[0, :, :, 0], [[0, 1, 0], [0, 0, 1], [0, 1, 1]])


@needs_extension
def test_a_window_of_minus_infinity_picks_its_first_cell_even_where_that_is_padding():
    """The generic kernel's padding reads -inf: a window of -inf alone takes its cell 0, the
    padding's where that comes first, and its gradient then goes nowhere."""
    window = Window.of((3, 3), (3, 3), (2, 2), "same")  # pads a row and a column before
    backend = c_backend()
    x = np.full((1, 3, 3, 2), -np.inf, np.float32)
    out, argmax = run("max_pool", backend, window, (x,))
    np.testing.assert_array_equal(out, np.full((1, 2, 2, 2), -np.inf))
    np.testing.assert_array_equal(argmax, np.zeros((1, 2, 2, 2)))
    (grad_x,) = run("max_pool_backward", backend, window, (np.ones_like(out), argmax))
    expected = np.zeros((1, 3, 3, 2))
    expected[0, 1, 1] = 1  # only window (1, 1) starts inside the image
    np.testing.assert_array_equal(grad_x, expected)
    assert backend.c_kernels.calls == {"im2col": 0, "col2im": 0, "max_pool": 1,
                                       "max_pool_backward": 1}


@needs_extension
@pytest.mark.parametrize("channels", [1, 2])
def test_max_pool_keeps_numpys_bits_where_zeros_of_both_signs_tie_and_for_nan(generic,
                                                                               channels):
    """A window whose largest value is 0.0 and -0.0 both, or that holds NaN with other bits
    than NumPy's: numpy.max's bits, in one channel too (a contiguous reduction, whose order
    of SIMD lanes the C kernel does not follow: it counts those windows and leaves the batch
    to the generic kernel)."""
    window = Window.of((3, 3), (3, 3), (1, 1), "valid")  # one window of 9 cells
    backend = c_backend()
    payload = np.array([0x7FF8000000000001, 0xFFF8000000000002], np.uint64).view(np.float64)
    for cells in ([0.0, -1.0, -0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                  [-0.0, 0.0, -0.0, -0.0, 0.0, 0.0, -1.0, -0.0, 0.0],
                  [1.0, payload[0], 2.0, payload[1], 0.0, 0.0, 0.0, 0.0, 0.0]):
        for dtype in DTYPES:
            x = np.repeat(np.array(cells).astype(dtype).reshape(1, 3, 3, 1), channels, axis=3)
            assert_matches_generic("max_pool", backend, generic, window, (x,),
                                   f"{cells}, {np.dtype(dtype).name}, {channels} channels")


@needs_extension
def test_max_pool_counts_the_windows_whose_bits_depend_on_the_order_of_reduction():
    x = np.array([[0.0, -0.0], [-1.0, 5.0],  # no: 5 wins
                  [0.0, -0.0], [-1.0, -2.0],  # yes: zeros of both signs tie
                  [np.nan, 1.0], [2.0, 3.0],  # yes: NaN
                  [0.0, 0.0], [-1.0, -0.5]], np.float32)  # no: +0.0 only
    x = x.reshape(1, 8, 2, 1)
    out, argmax = np.empty((1, 4, 1, 1), np.float32), np.empty((1, 4, 1, 1), np.int32)
    assert C_KERNELS.max_pool(x, out, argmax, 2, 2, 2, 2, 0, 0, True) == 2
    assert C_KERNELS.max_pool(x, out, argmax, 2, 2, 2, 2, 0, 0, False) == 0
    np.testing.assert_array_equal(argmax.ravel(), [3, 0, 0, 0])
    # numpy.maximum's rule on x86, cell after cell: the later of zeros that tie
    assert np.signbit(out.ravel()[1]) and not np.signbit(out.ravel()[3])


@needs_extension
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_gradients_add_into_each_input_in_increasing_window_offset(generic, dtype):
    """1 + 1e20 - 1e20 is 0 in that order and 1 in the reverse one: an input read by three
    windows (as cells j = 0, 1, 2) gets its terms in increasing j, as the generic kernel adds
    them."""
    window = Window.of((1, 5), (1, 3), (1, 1), "valid")  # input 2 is in all 3 windows
    grad_cols = np.zeros(cols_shape(window, 1, 1), dtype)
    terms = {0: 1.0, 1: 1e20, 2: -1e20}  # cell j -> its term; window 2 - j reads input 2
    for j, term in terms.items():
        grad_cols[0, 0, 2 - j, 0, j, 0] = term
    (grad_x,) = run("col2im", c_backend(), window, (grad_cols,))
    assert grad_x[0, 0, 2, 0] == 0.0
    assert_matches_generic("col2im", c_backend(), generic, window, (grad_cols,), "order")
    # the same through max pooling's gradient: every window's argmax at input 2
    grad = np.array([terms[2], terms[1], terms[0]], dtype).reshape(1, 1, 3, 1)
    argmax = np.array([2, 1, 0], np.int32).reshape(1, 1, 3, 1)
    (grad_x,) = run("max_pool_backward", c_backend(), window, (grad, argmax))
    assert grad_x[0, 0, 2, 0] == 0.0
    assert_matches_generic("max_pool_backward", c_backend(), generic, window, (grad, argmax),
                           "order")


@needs_extension
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("name", KERNELS)
def test_a_large_batch_split_across_threads_gives_the_same_bytes(generic, name, parts):
    backend, rng = c_backend(), np.random.default_rng(3)
    backend._parts = parts  # blocks of the batch, whatever this machine's cores
    window = Window.of((13, 11), (3, 3), (2, 1), "same")
    n = 2 * PARALLEL_MIN_SIZE // (window.rows.length * window.columns.length * 8) + parts
    inputs = inputs_of(name, window, n, 8, np.float32, rng)
    assert max(array.size for array in inputs if isinstance(array, np.ndarray)) \
        >= PARALLEL_MIN_SIZE
    assert_matches_generic(name, backend, generic, window, inputs, f"{parts} parts")
    assert backend.c_kernels.calls[name] == parts


@needs_extension
def test_max_pool_allocates_no_windows():
    """The generic max_pool copies every window (kh * kw times the images); the C one
    allocates next to nothing."""
    backend, rng = CpuBackend(), np.random.default_rng(4)
    window = Window.of((26, 26), (3, 3), (1, 1), "same")
    x = rng.random(image_shape(window, 16, 8), dtype=np.float32)
    out = np.empty(pooled_shape(window, 16, 8), np.float32)
    argmax = np.empty(out.shape, np.int32)
    backend.max_pool(x, window, out, argmax)  # the thread pool, once
    tracemalloc.start()
    try:
        backend.max_pool(x, window, out, argmax)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes // 4


def _refused_cases(window):
    """Calls the C window kernels cannot take: kernel name -> list of (label, inputs, outputs)
    for :func:`test_arrays_the_c_kernels_cannot_take_get_the_generic_kernels_answer`."""
    rng = np.random.default_rng(5)
    x = awkward_images(rng, image_shape(window, 4, 3), np.float64)
    cols = cols_shape(window, 4, 3)
    pooled = pooled_shape(window, 4, 3)
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    grad_cols = awkward(rng, cols, dtype=np.float64)
    grad = awkward(rng, pooled, dtype=np.float64)
    argmax = rng.integers(0, window.cells, size=pooled).astype(np.int32)
    return {
        "im2col": [
            ("strided images", lambda b: b.im2col(strided, window, np.empty(cols))),
            ("Fortran-order cols", lambda b: b.im2col(x, window, np.empty(cols[::-1]).T)),
            ("float32 images, float64 cols",
             lambda b: b.im2col(x.astype(np.float32), window, np.empty(cols))),
            ("float16", lambda b: b.im2col(x.astype(np.float16), window,
                                           np.empty(cols, np.float16))),
        ],
        "col2im": [
            ("strided grad_cols", lambda b: b.col2im(
                np.repeat(grad_cols, 2, axis=5)[..., ::2], window, np.empty(x.shape))),
            ("Fortran-order grad_x",
             lambda b: b.col2im(grad_cols, window, np.empty(x.shape[::-1]).T)),
        ],
        "max_pool": [
            ("int64 argmax",
             lambda b: b.max_pool(x, window, np.empty(pooled), np.empty(pooled, np.int64))),
            ("strided images",
             lambda b: b.max_pool(strided, window, np.empty(pooled), np.empty(pooled, np.int32))),
            ("float32 out", lambda b: b.max_pool(x, window, np.empty(pooled, np.float32),
                                                 np.empty(pooled, np.int32))),
        ],
        "max_pool_backward": [
            ("int64 argmax", lambda b: b.max_pool_backward(grad, argmax.astype(np.int64),
                                                           window, np.empty(x.shape))),
            ("big-endian grad", lambda b: b.max_pool_backward(grad.astype(">f8"), argmax,
                                                              window, np.empty(x.shape))),
        ],
    }


@needs_extension
@pytest.mark.parametrize("name", KERNELS)
def test_arrays_the_c_kernels_cannot_take_get_the_generic_kernels_answer(generic, name):
    window = Window.of((7, 5), (3, 2), (2, 1), "same")
    for label, call in _refused_cases(window)[name]:
        backend = c_backend()
        ours, expected = call(backend), call(generic)
        assert_same_bytes(np.asarray(ours), np.asarray(expected), f"{name}, {label}")
        # (the generic max_pool and max_pool_backward may call the C im2col and col2im)
        assert backend.c_kernels.calls[name] == 0, f"{name}, {label}"


def test_without_the_extension_the_backend_uses_the_generic_kernels(generic, monkeypatch):
    """Where the extension was not built (C_KERNELS None) the kernels are the generic ones."""
    monkeypatch.setattr(cpu_module, "C_KERNELS", None)
    backend, rng = CpuBackend(), np.random.default_rng(6)
    assert backend.c_kernels is None
    window = Window.of((6, 7), (2, 3), (1, 2), "valid")
    for name in KERNELS:
        assert_matches_generic(name, backend, generic, window,
                               inputs_of(name, window, 2, 3, np.float32, rng), "no extension")


F32 = np.float32


@needs_extension
@pytest.mark.parametrize("call, error, message", [
    (lambda k: k.im2col(np.zeros((1, 4, 4, 2), F32), np.zeros((1, 2, 2, 3, 3, 2)), 1, 1, 0, 0,
                        0.0), TypeError, "cols must have the dtype of the other arrays"),
    (lambda k: k.im2col(np.zeros((1, 4, 4, 2), F32), np.zeros((1, 2, 2, 3, 3, 1), F32), 1, 1,
                        0, 0, 0.0), ValueError, "cols does not have the shape"),
    (lambda k: k.im2col(np.zeros((4, 4, 2), F32), np.zeros((1, 2, 2, 3, 3, 2), F32), 1, 1, 0,
                        0, 0.0), ValueError, "x must be 4-D, not 3-D"),
    (lambda k: k.im2col(np.zeros((1, 4, 4, 2), F32), np.zeros((1, 2, 2, 3, 3, 2), F32), 0, 1,
                        0, 0, 0.0), ValueError, "strides 0x1"),
    (lambda k: k.col2im(np.zeros((1, 2, 2, 3, 3, 2), F32), np.zeros((1, 4, 4, 2), F32)[..., ::2],
                        1, 1, 0, 0), TypeError, "grad_x must be a C-contiguous, writable"),
    (lambda k: k.max_pool(np.zeros((1, 4, 4, 2), F32), np.zeros((1, 2, 2, 2), F32),
                          np.zeros((1, 2, 2, 2), np.int64), 2, 2, 2, 2, 0, 0, False),
     TypeError, "argmax must be an int32 array"),
    (lambda k: k.max_pool(np.zeros((1, 4, 4, 2), F32), np.zeros((1, 2, 2, 2), F32),
                          np.zeros((1, 2, 3, 2), np.int32), 2, 2, 2, 2, 0, 0, False),
     ValueError, "argmax does not have the shape"),
    (lambda k: k.max_pool_backward(np.zeros((1, 2, 2, 2), F32), np.zeros((1, 2, 2, 2), np.int32),
                                   np.zeros((1, 4, 4, 2), F32), 0, 2, 2, 2, 0, 0),
     ValueError, "cells 0x2"),
], ids=["dtypes", "channels", "3-D", "stride-0", "strided-out", "int64-argmax", "argmax-shape",
        "no-cells"])
def test_window_kernels_refuse_arrays_they_cannot_take(call, error, message):
    with pytest.raises(error, match=message):
        call(C_KERNELS)


@needs_extension
def test_window_kernels_refuse_outputs_that_share_memory_with_inputs():
    memory = np.zeros(1 * 4 * 4 * 2 + 1 * 2 * 2 * 3 * 3 * 2, F32)
    x, cols = memory[:32].reshape(1, 4, 4, 2), memory[:72].reshape(1, 2, 2, 3, 3, 2)
    with pytest.raises(ValueError, match="x and cols must not overlap"):
        C_KERNELS.im2col(x, cols, 1, 1, 0, 0, 0.0)
    with pytest.raises(ValueError, match="grad_cols and grad_x must not overlap"):
        C_KERNELS.col2im(cols, x, 1, 1, 0, 0)
    read_only = np.zeros((1, 4, 4, 2), F32)
    read_only.flags.writeable = False
    with pytest.raises(TypeError, match="grad_x must be a C-contiguous, writable"):
        C_KERNELS.col2im(np.zeros((1, 2, 2, 3, 3, 2), F32), read_only, 1, 1, 0, 0)


def test_a_convnet_trains_to_the_same_weights_with_and_without_the_extension():
    import dnn
    from dnn.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D

    rng = np.random.default_rng(8)
    x = rng.random((40, 9, 8, 2), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=40)]
    weights = []
    for backend in (CpuBackend(), CpuBackend(c_kernels=False)):
        model = dnn.Sequential([Input(shape=(9, 8, 2)),
                                Conv2D(4, 3, padding="same", activation="relu"),
                                MaxPooling2D(2),
                                Conv2D(5, (2, 3), strides=(1, 2), activation="relu"),
                                MaxPooling2D(3, strides=1, padding="same"),
                                Flatten(), Dense(3, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights, strict=True):
        assert_same_bytes(ours, theirs, "weights")


@needs_extension
def test_where_numpys_maximum_is_not_x86s_every_window_is_checked(generic, monkeypatch):
    """On other CPUs (numpy.maximum of zeros that tie, and of NaN, may differ there) the C
    max_pool counts the windows whose bits depend on the order of reduction for any number of
    channels, and leaves those batches to the generic kernel: NumPy's bits either way."""
    monkeypatch.setattr(cpu_module, "MAXIMUM_IS_X86S", False)
    backend, rng = c_backend(), np.random.default_rng(9)
    for (image, kernel, strides), padding in itertools.product(GEOMETRIES[::7], PADDINGS):
        window = Window.of(image, kernel, strides, padding)
        inputs = inputs_of("max_pool", window, 3, 3, np.float32, rng)
        assert_matches_generic("max_pool", backend, generic, window, inputs, f"{window}")
    assert backend.c_kernels.calls["max_pool"] == len(GEOMETRIES[::7]) * len(PADDINGS)
