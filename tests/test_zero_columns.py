"""The cpu backend leaves the columns of a batch that are zero in every row out of its products
(a third of an MNIST batch's pixels): the results must be those of the full products, and the
two implementations (C extension and NumPy) must agree bit for bit."""

import numpy as np
import pytest

import dnn
from dnn.backends import cpu as cpu_module
from dnn.backends.cpu import FUSED_KERNELS, SKIP_MIN_KERNEL_SIZE, CpuBackend
from dnn.layers import Dense
from dnn.utils import to_categorical
from tests.conftest import needs_extension, numerical_gradient

WIDTH, UNITS = 300, SKIP_MIN_KERNEL_SIZE // 300 + 1  # a kernel just big enough to skip for


def implementations():
    """``(name, backend)`` pytest params: the NumPy kernels and, if built, the C ones."""
    found = [pytest.param("numpy", CpuBackend(fused=False), id="numpy")]
    if FUSED_KERNELS is not None:
        found.append(pytest.param("fused", CpuBackend(), id="fused"))
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


def used_scratch(backend, rng, kernel, grad_z):
    """A layer's scratch whose buffers hold the results of a batch with no zero column, so
    that a kernel leaving rows unwritten shows."""
    scratch = {}
    x = rng.random((grad_z.shape[0], WIDTH)).astype(kernel.dtype) + 1.0
    backend.dense_forward(x, kernel, np.zeros(kernel.shape[1], kernel.dtype), scratch)
    assert scratch["nonzero_input"] is None
    assert np.all(backend.dense_backward(x, grad_z, kernel, False, scratch)[1] != 0)
    return scratch


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
    scratch = used_scratch(backend, rng, kernel, grad_z)
    z = backend.dense_relu_forward(x, kernel, bias, scratch).copy()
    _, grad_kernel, grad_bias = backend.dense_backward(x, grad_z, kernel, False, scratch)

    assert scratch["nonzero_input"] is not None, "the zero columns were not left out"
    np.testing.assert_array_equal(scratch["nonzero_input"][1], nonzero)
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
    for backend in (CpuBackend(fused=False), CpuBackend()):
        scratch = {}
        z = backend.dense_forward(x, kernel, bias, scratch).copy()
        grad_kernel = backend.dense_backward(x, grad_z, kernel, False, scratch)[1]
        results.append((z, grad_kernel.copy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("name, backend", implementations())
def test_batches_with_few_zero_columns_use_the_full_product(name, backend):
    rng = np.random.default_rng(2)
    x, _ = batch(rng, zero_share=0.1)
    kernel, bias, _ = layer_inputs(rng)
    scratch = {}
    z = backend.dense_forward(x, kernel, bias, scratch)
    assert scratch["nonzero_input"] is None
    np.testing.assert_array_equal(z, np.matmul(x, kernel) + bias)


@pytest.mark.parametrize("name, backend", implementations())
def test_an_all_zero_batch_gives_the_bias_and_a_zero_gradient(name, backend):
    rng = np.random.default_rng(3)
    kernel, bias, grad_z = layer_inputs(rng)
    x = np.zeros((64, WIDTH), np.float32)
    scratch = used_scratch(backend, rng, kernel, grad_z)
    z = backend.dense_forward(x, kernel, bias, scratch).copy()
    grad_kernel = backend.dense_backward(x, grad_z, kernel, False, scratch)[1]
    assert len(scratch["nonzero_input"][1]) == 0
    np.testing.assert_array_equal(z, np.broadcast_to(bias, z.shape))
    assert np.all(grad_kernel == 0)


@pytest.mark.parametrize("name, backend", implementations())
def test_a_backward_pass_on_another_input_uses_that_input(name, backend):
    """The columns kept by a forward pass belong to its input, not to the next one's."""
    rng = np.random.default_rng(4)
    x, _ = batch(rng, zero_share=0.4)
    other, _ = batch(rng, zero_share=0.4)
    kernel, bias, grad_z = layer_inputs(rng)
    scratch = {}
    backend.dense_forward(x, kernel, bias, scratch)
    grad_kernel = backend.dense_backward(other, grad_z, kernel, False, scratch)[1]
    np.testing.assert_allclose(grad_kernel, other.T.astype(np.float64) @ grad_z, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("name, backend", implementations())
def test_gradients_with_zero_columns_left_out_match_finite_differences(name, backend,
                                                                       monkeypatch):
    monkeypatch.setattr(cpu_module, "SKIP_MIN_KERNEL_SIZE", 1)  # a layer small enough to probe
    rng = np.random.default_rng(5)
    layer = Dense(3, activation="tanh")
    layer.build(6, backend, rng, np.float64)
    x = rng.normal(size=(5, 6))
    x[:, [1, 4]] = 0.0
    upstream = rng.normal(size=(5, 3))

    def objective():
        return float(np.sum(upstream * layer.forward(x)))

    layer.forward(x)
    assert layer._scratch["nonzero_input"] is not None
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
    for backend in (CpuBackend(fused=False), CpuBackend()):
        model = dnn.Sequential([Dense(UNITS, activation="relu"), Dense(4, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=64)
        assert model.layers[0]._scratch["nonzero_input"] is not None
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights):
        np.testing.assert_array_equal(ours, theirs)
