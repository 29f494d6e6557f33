"""The gpu backend's CUDA kernels, compiled by the host C compiler (tests/cuda_harness.py) and run
through the gpu backend's own code against the generic kernels, in float32 and float64, on
NaN, inf, -0.0, subnormals, ties and empty batches: CI has no GPU, and this is how a typo or a
wrong formula in a kernel string is found there."""

import numpy as np
import pytest

from dnn.backends import gpu
from dnn.backends.cuda_sources import ELEMENTWISE, ElementwiseSource
from dnn.optimizers import SGD, Adam, RMSprop
from dnn.testing import optimizer_steps
from tests.conftest import GenericNumpy, awkward
from tests.cuda_harness import (CompileError, HostCudaBackend, build_library, c_file,
                                compile_kernels)

pytestmark = [
    pytest.mark.skipif(not HostCudaBackend.is_available(),
                       reason=f"{HostCudaBackend.is_available().reason}"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # NaN and inf, on purpose
]

DTYPES = [np.float32, np.float64]
ROWS = [0, 1, 37]  # an empty batch, one row, and more than a vector's width


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
    "dnn_softmax_xent_rows": lambda b, rows, dtype, rng: softmax_crossentropy(
        b, *logits_and_targets(rows, dtype, rng)),
    "dnn_correct_rows": lambda b, rows, dtype, rng: [np.asarray(b.correct_count(
        *logits_and_targets(rows, dtype, rng)))],
}
# Kernels that reduce a row in order where NumPy sums pairwise, and call exp and log: the C
# library's, not NumPy's.  The rest compute exactly NumPy's expression, to the bit.
ROUNDED = {"dnn_softmax_xent_rows"}


def test_every_kernel_source_has_a_case():
    assert set(CASES) == set(ELEMENTWISE)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_the_generic_kernel(name, dtype, rows):
    kernel = compile_kernels()[name]
    calls = kernel.calls
    ours = CASES[name](HostCudaBackend(), rows, dtype, np.random.default_rng(7))
    assert kernel.calls > calls, f"the case for {name} never called it"
    expected = CASES[name](GenericNumpy(), rows, dtype, np.random.default_rng(7))
    for index, (mine, reference) in enumerate(zip(ours, expected)):
        mine, reference = np.asarray(mine), np.asarray(reference)
        assert mine.dtype == reference.dtype and mine.shape == reference.shape
        if name in ROUNDED:
            eps = np.finfo(dtype).eps
            np.testing.assert_allclose(mine, reference, rtol=16 * eps, atol=4 * eps,
                                       err_msg=f"{name} array {index}")
        else:
            np.testing.assert_array_equal(mine, reference, err_msg=f"{name} array {index}")
    if rows == 37 and name in ("dnn_softmax_xent_rows", "dnn_relu"):
        assert np.isnan(ours[-1]).any(), "the awkward inputs lost their NaN"


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
], ids=["typo", "writes-input", "syntax"])
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
