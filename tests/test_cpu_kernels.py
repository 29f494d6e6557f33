"""The cpu backend's two implementations of each elementwise kernel, the fused C extension and
the NumPy in-place ufuncs, against the generic kernels, bit for bit; and the extension's
refusal of arrays it cannot take."""

import numpy as np
import pytest

from dnn.backends.cpu import C_KERNELS, PARALLEL_MIN_SIZE, CpuBackend
from dnn.optimizers import RMSprop
from dnn.testing import OPTIMIZER_VARIANTS, optimizer_steps
from tests.conftest import awkward, needs_extension

# The awkward inputs overflow and make NaN on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# Above the size at which the NumPy path splits an update across threads, and with a row length
# that leaves a remainder after every vector width.
SHAPE = (PARALLEL_MIN_SIZE // 251 + 1, 251)


def implementations(generic):
    """(name, backend) for the generic reference, the NumPy kernels and, if built, the C ones."""
    found = [("generic", generic), ("numpy", CpuBackend(c_kernels=False))]
    if C_KERNELS is not None:
        found.append(("fused", CpuBackend()))
    return found


def assert_same_bits(results: dict) -> None:
    """Every implementation's arrays equal the generic ones, NaN for NaN and sign of zero too."""
    reference = results.pop("generic")
    for name, arrays in results.items():
        for index, (ours, expected) in enumerate(zip(arrays, reference)):
            assert ours.dtype == np.float32
            np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32),
                                          err_msg=f"{name} kernel, array {index}")


VARIANTS = {**OPTIMIZER_VARIANTS, "RMSprop centered": lambda: RMSprop(centered=True),
            "RMSprop momentum": lambda: RMSprop(momentum=0.5)}


def awkward_state(key):
    """A state array to start from; squared-gradient averages are non-negative, as training
    keeps them."""
    rng = np.random.default_rng(len(key))
    return awkward(rng, SHAPE, positive=key in ("mean_square", "v"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_optimizer_updates_match_the_optimizers_formula_bit_for_bit(generic, variant):
    rng = np.random.default_rng(3)
    param, grads = awkward(rng, SHAPE), [awkward(rng, SHAPE) for _ in range(3)]
    results = {}
    for label, backend in implementations(generic):
        arrays = optimizer_steps(backend, VARIANTS[variant](), param, grads, awkward_state)
        results[label] = list(arrays.values())
    assert_same_bits(results)


def test_dense_relu_forward_matches_the_generic_kernel_bit_for_bit(generic):
    rng = np.random.default_rng(4)
    x, kernel = awkward(rng, (128, 97)), rng.normal(size=(97, 515)).astype(np.float32)
    bias = awkward(rng, (515,))
    results = {label: [backend.dense_relu_forward(x, kernel, bias,
                                                  np.empty((128, 515), np.float32))]
               for label, backend in implementations(generic)}
    assert np.isnan(results["generic"][0]).any() and (results["generic"][0] == 0).any()
    assert_same_bits(results)


def test_relu_backward_matches_the_generic_kernel_bit_for_bit(generic):
    rng = np.random.default_rng(5)
    grad, out = awkward(rng, SHAPE), awkward(rng, SHAPE)  # NaN outputs count as dead units
    results = {label: [backend.relu_backward(grad.copy(), out)]
               for label, backend in implementations(generic)}
    assert_same_bits(results)


@pytest.mark.parametrize("units", [515, 1])  # rows added in order; one column: pairwise
def test_bias_gradient_sums_in_numpys_order_bit_for_bit(generic, units):
    rng = np.random.default_rng(10)
    x, grad_z = awkward(rng, (128, 97)), rng.normal(size=(128, units)).astype(np.float32)
    grad_z *= rng.choice([1e-6, 1.0, 1e6], size=grad_z.shape)  # big and small: order matters
    grad_z[rng.random(grad_z.shape) < 0.1] = -0.0
    kernel = rng.normal(size=(97, units)).astype(np.float32)
    results = {}
    for label, backend in implementations(generic):
        grads = [np.empty_like(kernel), np.empty(units, np.float32), np.empty_like(x)]
        backend.dense_backward(x, grad_z, kernel, *grads)
        results[label] = grads
    assert_same_bits(results)


@pytest.mark.parametrize("values", ["finite", "awkward"])
@pytest.mark.parametrize("classes", [1, 2, 7, 8, 9, 10, 130, 300])  # NumPy's pairwise cases
def test_softmax_crossentropy_matches_the_generic_kernel_bit_for_bit(generic, classes, values):
    rng = np.random.default_rng(11)
    if values == "finite":
        logits = (rng.normal(size=(96, classes)) * 30).astype(np.float32)
        logits[rng.random(logits.shape) < 0.1] = -0.0
    else:
        logits = awkward(rng, (96, classes))
    targets = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=96)]
    results = {}
    for label, backend in implementations(generic):
        grad = np.empty_like(logits)
        results[label] = [np.asarray(backend.softmax_crossentropy(logits, targets, grad)), grad]
    if values == "finite" and classes > 1:
        assert np.isfinite(results["generic"][0]) and results["generic"][0] > 0
    assert_same_bits(results)


def test_correct_count_matches_the_generic_kernel(generic):
    rng = np.random.default_rng(12)
    targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=500)]
    output = awkward(rng, (500, 10)) * 1e-4 + targets  # mostly right; NaN, inf mixed in
    output[:20] = 1.0  # ties: the first index wins
    counts = {label: int(backend.correct_count(output, targets))
              for label, backend in implementations(generic)}
    assert 250 < counts["generic"] < 500
    assert set(counts.values()) == {counts["generic"]}, counts


@needs_extension
def test_nonzero_columns_counts_nan_inf_and_subnormals_but_not_signed_zeros():
    rng = np.random.default_rng(13)
    x = awkward(rng, (40, 251))
    x[:, ::3] = 0.0
    x[::2, ::6] = -0.0
    x[5, 3], x[7, 6], x[9, 9] = np.nan, -np.inf, -1e-40  # in otherwise zero columns
    columns = np.empty(251, np.int64)
    count = C_KERNELS.nonzero_columns(x, columns)
    expected = np.flatnonzero(x.any(axis=0))
    assert 0 < len(expected) < 251 and {3, 6, 9} <= set(expected)
    np.testing.assert_array_equal(columns[:count], expected)


@needs_extension
def test_take_columns_and_scatter_rows_match_numpy_indexing():
    rng = np.random.default_rng(14)
    x = awkward(rng, (40, 251))
    columns = np.flatnonzero(rng.random(251) < 0.6)
    packed = np.empty((40, len(columns)), np.float32)
    C_KERNELS.take_columns(x, columns, packed)
    np.testing.assert_array_equal(packed.view(np.uint32), x[:, columns].view(np.uint32))
    out = np.full((251, 40), np.nan, np.float32)
    C_KERNELS.scatter_rows(packed.T.copy(), columns, out)
    expected = np.zeros_like(out)
    expected[columns] = packed.T
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


@needs_extension
def test_add_rows_adds_as_numpys_add_at_bit_for_bit():
    """An Embedding's gradient: rows named several times add in order."""
    rng = np.random.default_rng(15)
    source, rows = awkward(rng, (300, 17)), rng.integers(-23, 23, size=300)
    start = awkward(rng, (23, 17))
    out, expected = start.copy(), start.copy()
    C_KERNELS.add_rows(source, rows, out)
    np.add.at(expected, rows, source)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


_shared = np.zeros(4, np.float32)  # memory seen both as float32 and as int64 indices


@needs_extension
@pytest.mark.parametrize("call, message", [
    (lambda k: k.nonzero_columns(np.zeros((4, 3), np.float32), np.zeros(3, np.int32)),
     "columns must be a 1-D int64 array"),
    (lambda k: k.nonzero_columns(np.zeros((4, 3), np.float32), np.zeros(4, np.int64)),
     "columns has 4 elements, expected 3"),
    (lambda k: k.take_columns(np.zeros((4, 3), np.float32), np.array([0, 3]),
                              np.zeros((4, 2), np.float32)),
     r"columns must be increasing indices below 3 \(entry 1 is 3\)"),
    (lambda k: k.take_columns(np.zeros((4, 3), np.float32), np.array([0, 2]),
                              np.zeros((4, 3), np.float32)),
     r"out has shape \(4, 3\), expected \(4, 2\)"),
    (lambda k: k.scatter_rows(np.zeros((2, 3), np.float32), np.array([1, 1]),
                              np.zeros((4, 3), np.float32)),
     r"rows must be increasing indices below 4 \(entry 1 is 1\)"),
    (lambda k: k.scatter_rows(np.zeros((2, 3), np.float32), np.array([-1, 1]),
                              np.zeros((4, 3), np.float32)),
     r"rows must be increasing indices below 4 \(entry 0 is -1\)"),
    (lambda k: k.scatter_rows(np.zeros((2, 3), np.float32), np.array([0, 1]),
                              np.zeros((4, 2), np.float32)),
     r"source \(2, 3\) needs 2 row indices and out of 3 columns, not 2 and 2"),
    (lambda k: k.take_columns(np.zeros((4, 3), np.float32), _shared[:2].view(np.int64),
                              _shared[:4].reshape(2, 2)),
     "columns and out must not overlap"),
    (lambda k: k.add_rows(np.zeros((2, 3), np.float32), np.array([1, 4]),
                          np.zeros((4, 3), np.float32)),
     r"rows must be indices from -4 to 3 \(entry 1 is 4\)"),
    (lambda k: k.add_rows(np.zeros((2, 3), np.float32), np.array([-5, 0]),
                          np.zeros((4, 3), np.float32)),
     r"rows must be indices from -4 to 3 \(entry 0 is -5\)"),
    (lambda k: k.add_rows(np.zeros((2, 3), np.float32), np.array([1]),
                          np.zeros((4, 3), np.float32)),
     r"source \(2, 3\) needs 2 row indices and out of 3 columns, not 1 and 3"),
], ids=["int32", "length", "column-range", "out-shape", "repeated-row", "negative-row",
        "out-width", "indices-overlap-out", "add-row-range", "add-row-below", "add-rows-count"])
def test_column_kernels_refuse_indices_and_shapes_they_cannot_take(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(C_KERNELS)


@needs_extension
@pytest.mark.parametrize("call, error, message", [
    (lambda k: k.subtract_row_max(np.zeros(4, np.float32), np.zeros(4, np.float32)),
     ValueError, "logits must be 2-D"),
    (lambda k: k.softmax_crossentropy_grad(*[np.zeros((4, 3), np.float32)] * 4,
                                           np.zeros(3, np.float32)),
     ValueError, "grad and exp must not overlap"),
    (lambda k: k.softmax_crossentropy_grad(*[np.zeros((4, 3), np.float32) for _ in range(4)],
                                           np.zeros(3, np.float32)),
     ValueError, "total has 3 elements, expected 4"),
    (lambda k: k.column_sum(np.zeros((4, 3), np.float32), np.zeros(4, np.float32)),
     ValueError, "out has 4 elements, expected 3"),
    (lambda k: k.count_correct(np.zeros((4, 3)), np.zeros((4, 3))),
     TypeError, "output must be a float32 array"),
], ids=["1-D", "overlap", "total-length", "out-length", "float64"])
def test_loss_and_metric_kernels_refuse_arrays_they_cannot_take(call, error, message):
    with pytest.raises(error, match=message):
        call(C_KERNELS)


@pytest.mark.parametrize("layout", ["float64", "strided"])
def test_arrays_the_extension_cannot_take_are_computed_by_numpy_alike(generic, layout):
    rng = np.random.default_rng(6)
    dtype = np.float64 if layout == "float64" else np.float32
    start, grad = rng.normal(size=(40, 60)).astype(dtype), rng.normal(size=(40, 30)).astype(dtype)
    results = []
    for backend in (CpuBackend(), generic):
        whole = start.copy()
        param = whole[:, ::2] if layout == "strided" else whole[:, :30].copy()
        before = param.copy()
        optimizer = RMSprop()
        optimizer.build([param], backend)
        optimizer.apply_gradients([param], [grad])
        assert not np.array_equal(param, before)
        results.append(param)
    np.testing.assert_array_equal(results[0], results[1])


def test_a_gradient_of_another_shape_is_refused_even_with_as_many_elements(generic):
    for backend in (CpuBackend(), generic):
        param = np.ones((40, 30), np.float32)
        optimizer = RMSprop()
        optimizer.build([param], backend)
        with pytest.raises(ValueError, match="broadcast"):
            optimizer.update(param, np.ones((30, 40), np.float32), optimizer.states[0])


def _sgd_args(param=None, grad=None, velocity=None):
    return (np.zeros(4, np.float32) if param is None else param,
            np.zeros(4, np.float32) if grad is None else grad, velocity, 0.1, 0.9, False)


@needs_extension
@pytest.mark.parametrize("args, error, message", [
    (_sgd_args(param=np.zeros(4)), TypeError, "param must be a float32 array"),
    (_sgd_args(grad=np.zeros(8, np.float32)[::2]), TypeError, "grad must be a C-contiguous"),
    (_sgd_args(grad=np.zeros(5, np.float32)), ValueError, "grad has 5 elements, expected 4"),
    (_sgd_args(velocity="velocity"), TypeError,
     "velocity must be a C-contiguous, writable float32 array"),
], ids=["float64", "strided", "length", "not-an-array"])
def test_sgd_kernel_refuses_arrays_it_cannot_take(args, error, message):
    param = args[0]
    before = param.copy()
    with pytest.raises(error, match=message):
        C_KERNELS.sgd(*args)
    np.testing.assert_array_equal(param, before)


@needs_extension
def test_fused_kernels_refuse_read_only_and_overlapping_arrays():
    param = np.ones(8, np.float32)
    read_only = np.ones(8, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(TypeError, match="param must be a C-contiguous, writable float32"):
        C_KERNELS.adam(read_only, param, np.zeros(8, np.float32), np.zeros(8, np.float32),
                           1e-3, 0.1, 0.001, 1e-7)
    with pytest.raises(ValueError, match="param and mean_square must not overlap"):
        C_KERNELS.rmsprop(param, np.ones(8, np.float32), param, None, None,
                              1e-3, 0.9, 0.1, 0.0, 1e-7)
    buffer = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="grad and out must not overlap"):
        C_KERNELS.relu_backward(buffer[:8], buffer[4:])
    with pytest.raises(ValueError, match="bias has 3 elements, which does not divide z's 8"):
        C_KERNELS.bias_relu(param, np.zeros(3, np.float32))
    np.testing.assert_array_equal(param, np.ones(8, np.float32))


def test_training_with_and_without_the_extension_gives_the_same_weights():
    import dnn
    from dnn.layers import Dense

    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 20)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=300)]
    weights = []
    for backend in (CpuBackend(), CpuBackend(c_kernels=False)):
        model = dnn.Sequential([Dense(16, activation="relu"), Dense(4, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=32)
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights):
        np.testing.assert_array_equal(ours, theirs)
