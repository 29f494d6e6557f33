"""The cpu backend leaves the columns of a batch that are zero in every row out of its products
(a third of an MNIST batch's pixels): the results must be those of the full products, and the
two implementations (C extension and NumPy) must agree bit for bit."""

import numpy as np
import pytest

import dnn
from dnn.backends import cpu as cpu_module
from dnn.backends.base import InputColumns
from dnn.backends.cpu import C_KERNELS, SKIP_MIN_KERNEL_SIZE, CpuBackend
from dnn.layers import Dense
from dnn.utils import to_categorical
from dnn.testing import numerical_gradient
from tests.conftest import needs_extension

WIDTH, UNITS = 300, SKIP_MIN_KERNEL_SIZE // 300 + 1  # a kernel just big enough to skip for


def implementations():
    """``(name, backend)`` pytest params: the NumPy kernels and, if built, the C ones."""
    found = [pytest.param("numpy", CpuBackend(c_kernels=False), id="numpy")]
    if C_KERNELS is not None:
        found.append(pytest.param("c", CpuBackend(), id="c"))
    return found


def batch(rng, zero_share, rows=64):
    """``(rows, WIDTH)`` mostly-zero values with ``zero_share`` of the columns zero in every
    row, some of them as -0.0; returns the batch and the indices of its non-zero columns."""
    x = (rng.random((rows, WIDTH)) * (rng.random((rows, WIDTH)) < 0.3)).astype(np.float32)
    x[0] = 1.0  # every column non-zero somewhere, until zeroed below
    zero = rng.permutation(WIDTH)[:int(zero_share * WIDTH)]
    x[:, zero] = 0.0
    x[::3, zero[::2]] = -0.0
    return x, np.setdiff1d(np.arange(WIDTH), zero)


def forward_backward(backend, x, kernel, bias, grad_z, columns, outs=None, relu=False):
    """A dense layer's forward then backward kernels on ``x``, with its ``columns`` record;
    into ``outs`` ``(z, grad_kernel, grad_bias)`` (new arrays by default), returned."""
    z, grad_kernel, grad_bias = outs or (np.empty((x.shape[0], kernel.shape[1]), kernel.dtype),
                                         np.empty_like(kernel), np.empty_like(bias))
    forward = backend.dense_relu_forward if relu else backend.dense_forward
    forward(x, kernel, bias, z, columns)
    backend.dense_backward(x, grad_z, kernel, grad_kernel, grad_bias, None, columns)
    return z, grad_kernel, grad_bias


def used_buffers(backend, rng, kernel, grad_z):
    """A layer's columns record and output buffers, holding the results of a batch with no
    zero column, so that a kernel leaving rows unwritten shows."""
    columns = InputColumns()
    x = rng.random((grad_z.shape[0], WIDTH)).astype(kernel.dtype) + 1.0
    outs = forward_backward(backend, x, kernel, np.zeros(kernel.shape[1], kernel.dtype), grad_z,
                            columns)
    assert columns.kept is None
    assert np.all(outs[1] != 0)
    return columns, outs


def layer_inputs(rng):
    """float32 ``kernel (WIDTH, UNITS)``, ``bias (UNITS,)`` and ``grad_z (64, UNITS)``."""
    kernel, bias, grad_z = (rng.normal(size=shape).astype(np.float32)
                            for shape in ((WIDTH, UNITS), (UNITS,), (64, UNITS)))
    return kernel, bias, grad_z


@pytest.mark.parametrize("name, backend", implementations())
def test_products_leave_out_zero_columns_and_match_the_full_products(name, backend):
    rng = np.random.default_rng(0)
    x, nonzero = batch(rng, zero_share=0.4)
    kernel, bias, grad_z = layer_inputs(rng)
    columns, outs = used_buffers(backend, rng, kernel, grad_z)
    z, grad_kernel, grad_bias = forward_backward(backend, x, kernel, bias, grad_z, columns, outs,
                                                 relu=True)

    assert columns.kept is not None, "the zero columns were not left out"
    np.testing.assert_array_equal(columns.kept, nonzero)
    np.testing.assert_allclose(z, np.maximum(x @ kernel + bias, 0), rtol=1e-5, atol=1e-4)
    full = x.T.astype(np.float64) @ grad_z
    np.testing.assert_allclose(grad_kernel, full, rtol=1e-4, atol=1e-4)
    zero_rows = np.setdiff1d(np.arange(WIDTH), nonzero)
    assert np.all(grad_kernel[zero_rows] == 0)
    np.testing.assert_allclose(grad_bias, grad_z.sum(axis=0), rtol=1e-5, atol=1e-5)


@needs_extension
def test_both_implementations_leave_out_columns_alike_bit_for_bit():
    rng = np.random.default_rng(1)
    x, _ = batch(rng, zero_share=0.4)
    kernel, bias, grad_z = layer_inputs(rng)
    results = []
    for backend in (CpuBackend(c_kernels=False), CpuBackend()):
        z, grad_kernel, _ = forward_backward(backend, x, kernel, bias, grad_z, InputColumns())
        results.append((z, grad_kernel))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("name, backend", implementations())
def test_batches_with_few_zero_columns_use_the_full_product(name, backend):
    rng = np.random.default_rng(2)
    x, _ = batch(rng, zero_share=0.1)
    kernel, bias, _ = layer_inputs(rng)
    columns = InputColumns()
    z = backend.dense_forward(x, kernel, bias, np.empty((64, UNITS), np.float32), columns)
    assert columns.kept is None
    np.testing.assert_array_equal(z, np.matmul(x, kernel) + bias)


@pytest.mark.parametrize("name, backend", implementations())
def test_an_all_zero_batch_gives_the_bias_and_a_zero_gradient(name, backend):
    rng = np.random.default_rng(3)
    kernel, bias, grad_z = layer_inputs(rng)
    x = np.zeros((64, WIDTH), np.float32)
    columns, outs = used_buffers(backend, rng, kernel, grad_z)
    z, grad_kernel, _ = forward_backward(backend, x, kernel, bias, grad_z, columns, outs)
    assert len(columns.kept) == 0
    np.testing.assert_array_equal(z, np.broadcast_to(bias, z.shape))
    assert np.all(grad_kernel == 0)


@pytest.mark.parametrize("name, backend", implementations())
def test_each_layer_keeps_its_own_record_of_the_columns(name, backend):
    """Two layers on one backend, their forward passes before their backward passes: each
    backward pass reads the columns its own forward pass kept."""
    rng = np.random.default_rng(4)
    x, _ = batch(rng, zero_share=0.4)
    other, _ = batch(rng, zero_share=0.4)
    kernel, bias, grad_z = layer_inputs(rng)
    first, second = (Dense(UNITS, activation="relu") for _ in range(2))
    for layer in (first, second):
        layer.build_on((WIDTH,), backend, np.random.default_rng(7), np.float32)
        layer.needs_input_grad = False
    first.forward(x)
    second.forward(other)
    for layer, inputs in ((first, x), (second, other)):
        assert layer.input_columns.kept is not None
        alive = np.maximum(inputs @ layer.kernel + layer.bias, 0) > 0
        layer.backward(grad_z.copy())
        np.testing.assert_allclose(layer.grads[0], inputs.T.astype(np.float64) @ (grad_z * alive),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, backend", implementations())
def test_gradients_with_zero_columns_left_out_match_finite_differences(name, backend,
                                                                       monkeypatch):
    monkeypatch.setattr(cpu_module, "SKIP_MIN_KERNEL_SIZE", 1)  # a layer small enough to probe
    rng = np.random.default_rng(5)
    layer = Dense(3, activation="tanh")
    layer.build_on((6,), backend, rng, np.float64)
    x = rng.normal(size=(5, 6))
    x[:, [1, 4]] = 0.0
    upstream = rng.normal(size=(5, 3))

    def objective():
        return float(np.sum(upstream * layer.forward(x)))

    layer.forward(x)
    assert layer.input_columns.kept is not None
    layer.backward(upstream.copy())
    grad_kernel = layer.grads[0].copy()
    np.testing.assert_allclose(grad_kernel, numerical_gradient(objective, layer.kernel),
                               rtol=1e-6, atol=1e-8)


@needs_extension
def test_training_with_zero_columns_gives_the_same_weights_with_and_without_the_extension():
    rng = np.random.default_rng(6)
    x, _ = batch(rng, zero_share=0.35, rows=320)
    y = to_categorical(rng.integers(0, 4, size=320), 4)
    weights = []
    for backend in (CpuBackend(c_kernels=False), CpuBackend()):
        model = dnn.Sequential([Dense(UNITS, activation="relu"), Dense(4, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=64)
        assert model.layers[0].input_columns.kept is not None
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights):
        np.testing.assert_array_equal(ours, theirs)
