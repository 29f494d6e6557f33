"""Keras' metrics (dnn.metrics): each against its formula in plain NumPy on every backend that
runs here (the gpu backend's code on the host and on the CuPy stand-in too), labels and one-hot
alike, weighted; their names as Keras 3 logs them; and their updates, in place, replayed as a
captured step (a CUDA graph) replays them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dnn import backends, losses
from dnn import metrics
from dnn.activations import Sigmoid, Softmax
from dnn.backends.gpu import GpuBackend
from dnn.errors import ArgumentTypeError, UsageError
from dnn.replay import ReplayBackend, record_into
from tests.conftest import GenericNumpy
from tests.cuda_harness import HostCudaBackend

STANDIN = Path(__file__).resolve().parent / "standin"
CCE = losses.get("categorical_crossentropy")
SPARSE = losses.get("sparse_categorical_crossentropy")
needs_host_kernels = pytest.mark.skipif(
    not HostCudaBackend.is_available(), reason=f"host-cuda: {HostCudaBackend.is_available()}")


@pytest.fixture
def standin_cupy(monkeypatch):
    """The CuPy stand-in (tests/standin), imported afresh (no cuBLAS: no product here)."""
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [name for name in sys.modules if name.split(".")[0] == "cupy"]:
        monkeypatch.delitem(sys.modules, name)
    import cupy

    yield cupy
    for name in [name for name in sys.modules if name.split(".")[0] == "cupy"]:
        del sys.modules[name]
    record_into(None)  # a capture a failed test left open records nothing more


@pytest.fixture(params=["cpu", "generic", pytest.param("host-cuda", marks=needs_host_kernels),
                        pytest.param("gpu-standin", marks=needs_host_kernels), "replay",
                        "strict"])
def backend(request):
    """Each backend the metrics run on here: cpu (its C count), the generic kernels on NumPy,
    the gpu backend's code with its CUDA kernels compiled for the host (on NumPy, and on the
    CuPy stand-in), the replaying NumPy, and array-api-strict."""
    if request.param == "gpu-standin":
        request.getfixturevalue("standin_cupy")
        return GpuBackend()
    if request.param in ("cpu", "strict"):
        availability = backends.availability(request.param)
        if not availability:
            pytest.skip(f"backend {request.param}: {availability.reason}")
        return backends.get_backend(request.param)
    return {"generic": GenericNumpy, "host-cuda": HostCudaBackend,
            "replay": ReplayBackend}[request.param]()


# -- the formulas, in plain NumPy, row by row where Keras' wording is -------------------------
def top_k(y_true, y_pred, k):
    """Keras' NumPy backend: the label's output is at least the k-th largest."""
    kth = np.sort(y_pred, axis=1)[:, -min(k, y_pred.shape[1])]
    return (y_pred[np.arange(len(y_true)), y_true] >= kth).astype(float)


REFERENCES = {  # (labels (n,), one-hot or binary targets (n, k), y_pred (n, k)) -> (n,)
    "CategoricalAccuracy": lambda labels, y, p: (np.argmax(p, 1) == labels).astype(float),
    "SparseCategoricalAccuracy": lambda labels, y, p: (np.argmax(p, 1) == labels) * 1.0,
    "TopKCategoricalAccuracy": lambda labels, y, p: top_k(labels, p, 5),
    "SparseTopKCategoricalAccuracy": lambda labels, y, p: top_k(labels, p, 2),
    "BinaryAccuracy": lambda labels, y, p: ((p > 0.5) * 1.0 == y).mean(axis=1),
    "Accuracy": lambda labels, y, p: (p == y).mean(axis=1),
    "MeanAbsoluteError": lambda labels, y, p: np.abs(y - p).mean(axis=1),
    "MeanSquaredError": lambda labels, y, p: ((y - p) ** 2).mean(axis=1),
}
MAKE = {"SparseTopKCategoricalAccuracy": lambda: metrics.SparseTopKCategoricalAccuracy(k=2)}


def make(name):
    return MAKE.get(name, getattr(metrics, name))()


def batch(rng, n, k):
    """``(labels, targets, y_pred)``: quantized probabilities (ties in most rows, exact
    0.5s and exact hits for the exact metrics); with ``k == 1`` yes/no targets."""
    y_pred = (rng.integers(0, 5, size=(n, k)) / 4).astype(np.float32)
    labels = rng.integers(0, k, size=n) if k > 1 else rng.integers(0, 2, size=n)
    targets = np.eye(k, dtype=np.float32)[labels] if k > 1 else labels[:, None] * np.float32(1)
    return labels, targets, y_pred


def weighted_mean(values, weights):
    return float(np.sum(values * weights) / np.sum(weights)) if np.sum(weights) else 0.0


def run(backend, metric, batches, activation=None, dtype="float32"):
    """The metric's result over ``batches`` of host ``(y_true, y_pred, weights or None)``."""
    metric.build(backend, dtype, activation)
    arrays = metric.variables
    for y_true, y_pred, weights in batches:
        metric.update_state(backend.asarray(y_true), backend.asarray(y_pred),
                            None if weights is None else backend.asarray(weights))
    assert [a is b for a, b in zip(metric.variables, arrays)] == [True, True]
    assert metric.total is arrays[0] and metric.count is arrays[1]
    return metric.result()


@pytest.mark.parametrize("name", REFERENCES)
def test_each_metric_is_its_formula_for_labels_and_one_hot_weighted_or_not(backend, name):
    rng = np.random.default_rng(abs(hash(name)) % 1000)
    for k in (1, 3, 7):
        parts = [batch(rng, n, k) for n in (16, 9)]
        weights = [rng.choice([0.0, 0.5, 2.0], size=len(p[0])).astype(np.float32)
                   for p in parts]
        yes_no = k == 1 and name in ("BinaryAccuracy", "Accuracy", "MeanAbsoluteError",
                                     "MeanSquaredError")
        if k == 1 and not yes_no:  # one class: every label is 0
            parts = [(0 * labels, np.ones_like(y), p) for labels, y, p in parts]
        values = np.concatenate([REFERENCES[name](*part) for part in parts])
        forms = [[(y, p) for _, y, p in parts],  # one-hot (or yes/no) targets
                 [(y[:, 0] if yes_no else labels, p) for labels, y, p in parts]]  # labels
        for form in forms:
            plain = run(backend, make(name), [(y, p, None) for y, p in form])
            assert plain == pytest.approx(values.mean(), rel=1e-5), (k, form[0][0].shape)
            weighted = run(backend, make(name), [(y, p, w) for (y, p), w in zip(form, weights)])
            assert weighted == pytest.approx(weighted_mean(values, np.concatenate(weights)),
                                             rel=1e-5), (k, form[0][0].shape)


def test_ties_count_for_the_first_class_and_in_the_top_k(backend):
    y_pred = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.3, 0.3, 0.3]], np.float32)
    labels = np.array([1, 1, 2])
    assert run(backend, metrics.SparseCategoricalAccuracy(), [(labels, y_pred, None)]) == 1 / 3
    top_1 = metrics.SparseTopKCategoricalAccuracy(k=1)
    assert run(backend, top_1, [(labels, y_pred, None)]) == 1.0
    every = metrics.TopKCategoricalAccuracy(k=3)  # k as large as the classes, or larger
    assert run(backend, every, [(np.eye(3)[labels], y_pred, None)]) == 1.0
    assert run(backend, metrics.TopKCategoricalAccuracy(), [(labels, y_pred, None)]) == 1.0


def test_a_nan_output_at_the_label_is_never_in_the_top_k(backend):
    y_pred = np.array([[np.nan, 0.1, 0.2], [0.5, np.nan, 0.1]], np.float32)
    top_2 = metrics.SparseTopKCategoricalAccuracy(k=2)
    assert run(backend, top_2, [(np.array([0, 0]), y_pred, None)]) == 0.5


def test_all_weights_zero_give_zero(backend):
    labels, targets, y_pred = batch(np.random.default_rng(1), 8, 3)
    for metric in (metrics.CategoricalAccuracy(), metrics.MeanSquaredError()):
        assert run(backend, metric, [(targets, y_pred, np.zeros(8, np.float32))]) == 0.0


@pytest.mark.parametrize("activation, k", [(Softmax(), 4), (Sigmoid(), 1), (Sigmoid(), 3)])
def test_given_logits_each_metric_is_what_it_is_on_the_probabilities(backend, activation, k):
    rng = np.random.default_rng(k)
    logits = (rng.integers(-8, 9, size=(24, k)) / 4).astype(np.float32)  # exact zeros, ties
    probabilities = activation.forward(backends.get_backend("cpu"), logits.copy())
    labels = rng.integers(0, 2, size=24) if k == 1 else rng.integers(0, k, size=24)
    targets = np.eye(k, dtype=np.float32)[labels] if k > 1 else labels[:, None] * np.float32(1)
    weights = rng.random(24).astype(np.float32)
    makers = [*(lambda name=name: make(name) for name in REFERENCES),
              lambda: metrics.BinaryAccuracy(threshold=0.3)]
    for make_metric in makers:
        expected = run(backend, make_metric(), [(targets, probabilities, weights)])
        given_logits = run(backend, make_metric(), [(targets, logits, weights)], activation)
        assert given_logits == pytest.approx(expected, rel=1e-5), make_metric()


def test_unweighted_accuracies_count_with_the_backends_kernel(monkeypatch):
    cpu = backends.get_backend("cpu")
    calls = []
    counted = cpu.correct_count
    monkeypatch.setattr(cpu, "correct_count", lambda *a: calls.append(a) or counted(*a))
    labels, targets, y_pred = batch(np.random.default_rng(2), 32, 5)
    for metric in (metrics.CategoricalAccuracy(), metrics.SparseCategoricalAccuracy()):
        run(cpu, metric, [(targets, y_pred, None), (labels, y_pred, None)])
    _, yes_no, one_unit = batch(np.random.default_rng(3), 32, 1)
    run(cpu, metrics.BinaryAccuracy(), [(yes_no, one_unit, None)])
    assert len(calls) == 5
    run(cpu, metrics.CategoricalAccuracy(), [(targets, y_pred, np.ones(32, np.float32))])
    assert len(calls) == 5  # weighted: the formula


def capture(backend, update):
    """``update`` captured as a training step is: the function that replays it."""
    if isinstance(backend, ReplayBackend):
        return backend.capture(update).replay
    stream = backend._cupy.cuda.Stream(non_blocking=True)  # a CUDA graph, on the stand-in
    with stream:
        stream.begin_capture()
        try:
            update()
        finally:
            graph = stream.end_capture()
    return lambda: graph.launch(stream)


@pytest.mark.parametrize("where", ["replay", pytest.param("gpu-standin",
                                                          marks=needs_host_kernels)])
@pytest.mark.parametrize("name", REFERENCES)
def test_a_replayed_update_writes_the_same_arrays_and_reads_nothing_on_the_host(request, where,
                                                                                 name):
    """Captured as a step is (where a host read or a host-to-device copy is refused), then
    replayed on new batches written into the same input arrays: each replay adds its batch,
    weighted, from the logits of a softmax."""
    if where == "gpu-standin":
        request.getfixturevalue("standin_cupy")
    backend = GpuBackend() if where == "gpu-standin" else ReplayBackend()
    rng = np.random.default_rng(4)
    metric, expected = make(name), make(name)
    metric.build(backend, "float32", Softmax())
    expected.build(backends.get_backend("cpu"), "float32", Softmax())
    labels, targets, y_pred = batch(rng, 12, 4)
    inputs = [backend.asarray(a) for a in (labels, y_pred, np.ones(12, np.float32))]
    replay = capture(backend, lambda: metric.update_state(*inputs))
    total, count = metric.variables
    metric.reset_state()
    for _ in range(3):
        labels, targets, y_pred = batch(rng, 12, 4)
        weights = rng.random(12).astype(np.float32)
        for array, value in zip(inputs, (labels, y_pred, weights)):
            array[...] = backend.asarray(value)
        replay()
        expected.update_state(labels, y_pred, weights)
    assert metric.total is total and metric.count is count
    assert metric.result() == pytest.approx(expected.result(), rel=1e-5)
    assert metric.backend.to_numpy(count) == pytest.approx(float(expected.count), rel=1e-6)


def test_reset_zeroes_in_place_and_totals_take_the_dtype(backend):
    metric = metrics.MeanAbsoluteError()
    assert run(backend, metric, [(np.ones((4, 2)), np.zeros((4, 2)), None)],
               dtype="float64") == 1.0
    total = metric.total
    metric.reset_state()
    assert metric.total is total and metric.result() == 0.0
    assert backend.to_numpy(total).dtype == np.float64
    own = metrics.MeanSquaredError(dtype="float64")
    own.build(backend, "float32")
    assert backend.to_numpy(own.count).dtype == np.float64


# -- names, as Keras 3 logs them -----------------------------------------------------------------
@pytest.mark.parametrize("identifier, loss, units, cls, name", [
    ("accuracy", CCE, 10, metrics.CategoricalAccuracy, "accuracy"),
    ("accuracy", SPARSE, 10, metrics.SparseCategoricalAccuracy, "accuracy"),
    ("accuracy", losses.get("binary_crossentropy"), 1, metrics.BinaryAccuracy, "accuracy"),
    ("acc", CCE, 10, metrics.CategoricalAccuracy, "acc"),
    ("ACC", SPARSE, 1, metrics.BinaryAccuracy, "ACC"),
    ("Accuracy", CCE, 3, metrics.CategoricalAccuracy, "Accuracy"),
    ("mae", CCE, 3, metrics.MeanAbsoluteError, "mae"),
    ("MSE", CCE, 3, metrics.MeanSquaredError, "MSE"),
    ("mean_squared_error", CCE, 3, metrics.MeanSquaredError, "mean_squared_error"),
    ("binary_accuracy", CCE, 3, metrics.BinaryAccuracy, "binary_accuracy"),
    ("sparse_top_k_categorical_accuracy", SPARSE, 9, metrics.SparseTopKCategoricalAccuracy,
     "sparse_top_k_categorical_accuracy"),
    ("TopKCategoricalAccuracy", CCE, 9, metrics.TopKCategoricalAccuracy,
     "TopKCategoricalAccuracy"),
    (metrics.MeanAbsoluteError(), CCE, 3, metrics.MeanAbsoluteError, "mean_absolute_error"),
    (metrics.Accuracy, CCE, 3, metrics.Accuracy, "accuracy"),
    (metrics.top_k_categorical_accuracy, CCE, 9, metrics.TopKCategoricalAccuracy,
     "top_k_categorical_accuracy"),
    ({"class_name": "BinaryAccuracy", "config": {"name": "yes", "threshold": 0.7}}, CCE, 1,
     metrics.BinaryAccuracy, "yes"),
])
def test_names_resolve_as_in_keras_3(identifier, loss, units, cls, name):
    metric = metrics.get(identifier, loss, units)
    assert type(metric) is cls and metric.name == name
    if isinstance(identifier, metrics.Metric):
        assert metric is identifier


def test_defaults_and_configs_are_keras():
    assert metrics.get("top_k_categorical_accuracy", CCE, 9).k == 5
    assert metrics.get("binary_accuracy", CCE, 1).threshold == 0.5
    for metric in (metrics.TopKCategoricalAccuracy(k=3, name="top3"),
                   metrics.BinaryAccuracy(threshold=0.2, dtype=np.float64),
                   metrics.get("accuracy", SPARSE, 4), metrics.Accuracy()):
        again = metrics.deserialize(json.loads(json.dumps(metrics.serialize(metric))))
        assert type(again) is type(metric) and again.get_config() == metric.get_config()
        assert metrics.get(metrics.serialize(metric), CCE, 1).get_config() == again.get_config()
    assert metrics.serialize(metrics.get("acc", SPARSE, 4)) == {
        "class_name": "SparseCategoricalAccuracy", "config": {"name": "acc", "dtype": None}}


def test_check_makes_a_tuple_of_metrics():
    assert metrics.check(None, CCE, 3) == () and metrics.check([], CCE, 3) == ()
    (one,) = metrics.check("acc", CCE, 3)
    assert one.name == "acc"
    names = [m.name for m in metrics.check(["accuracy", "mae", metrics.MeanAbsoluteError()],
                                           SPARSE, 3)]
    assert names == ["accuracy", "mae", "mean_absolute_error"]


@pytest.mark.parametrize("call, error, message", [
    (lambda: metrics.check(["f1"], CCE, 3), UsageError,
     r"^unknown metric 'f1'; known: accuracy, acc, binary_accuracy, categorical_accuracy, .*, "
     r"mae, mse \(or a class name, such as CategoricalAccuracy\)$"),
    (lambda: metrics.check("Mae", CCE, 3), UsageError, "^unknown metric 'Mae'"),
    (lambda: metrics.check(5, CCE, 3), ArgumentTypeError,
     "^metrics must be a list of names, not int$"),
    (lambda: metrics.check({"out": "acc"}, CCE, 3), ArgumentTypeError, "not dict"),
    (lambda: metrics.check(["acc", None], CCE, 3), ArgumentTypeError,
     "^a metric must be a name or a dnn.metrics.Metric, not NoneType$"),
    (lambda: metrics.check([len], CCE, 3), ArgumentTypeError, "not builtin_function"),
    (lambda: metrics.get({"class_name": "F1Score"}, CCE, 3), UsageError,
     "^unknown metric class 'F1Score'; known: Accuracy, BinaryAccuracy"),
    (lambda: metrics.get({"class_name": "Accuracy", "config": {"k": 2}}, CCE, 3),
     ArgumentTypeError, "^metric config of Accuracy: .*'k'"),
    (lambda: metrics.TopKCategoricalAccuracy(k=0), UsageError, "^k must be at least 1, not 0$"),
    (lambda: metrics.TopKCategoricalAccuracy(k=2.0), ArgumentTypeError,
     "^k must be an integer, not float$"),
    (lambda: metrics.BinaryAccuracy(threshold="0.5"), ArgumentTypeError,
     "^threshold must be a number, not str$"),
    (lambda: metrics.MeanSquaredError(name=""), ArgumentTypeError, "non-empty string"),
    (lambda: metrics.MeanSquaredError(dtype="int32"), UsageError,
     "^a metric's dtype must be float32 or float64, not 'int32'$"),
    (lambda: metrics.MeanSquaredError(dtype="bogus"), UsageError, "not 'bogus'$"),
    (lambda: metrics.MeanSquaredError().update_state(np.ones(2), np.ones((2, 1))), UsageError,
     r"^metric 'mean_squared_error' is not built: build\(backend, dtype\) it first$"),
])
def test_bad_metrics_are_one_line_errors(call, error, message):
    with pytest.raises(error, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


# -- Keras' stateless functions, and its documented examples ------------------------------------
def test_the_functions_take_and_give_numpy_arrays():
    rng = np.random.default_rng(5)
    labels, targets, y_pred = batch(rng, 10, 6)
    cases = [(metrics.categorical_accuracy, targets, "CategoricalAccuracy"),
             (metrics.sparse_categorical_accuracy, labels, "SparseCategoricalAccuracy"),
             (metrics.binary_accuracy, targets, "BinaryAccuracy"),
             (metrics.top_k_categorical_accuracy, targets, "TopKCategoricalAccuracy"),
             (metrics.mean_absolute_error, targets, "MeanAbsoluteError"),
             (metrics.mean_squared_error, targets, "MeanSquaredError")]
    for function, y_true, name in cases:
        values = function(y_true, y_pred)
        assert isinstance(values, np.ndarray) and values.shape == (10,)
        np.testing.assert_allclose(values, REFERENCES[name](labels, targets, y_pred), rtol=1e-6)
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(labels, y_pred, 2),
                                  top_k(labels, y_pred, 2))
    np.testing.assert_array_equal(metrics.binary_accuracy([1, 0], [0.8, 0.3]), [1.0, 1.0])


@pytest.mark.parametrize("metric, y_true, y_pred, weights, plain, weighted", [
    (metrics.Accuracy(), [[1], [2], [3], [4]], [[0], [2], [3], [4]], [1, 1, 0, 0], 0.75, 0.5),
    (metrics.BinaryAccuracy(), [[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], [1, 0, 0, 1],
     0.75, 0.5),
    (metrics.CategoricalAccuracy(), [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]],
     [0.7, 0.3], 0.5, 0.3),
    (metrics.SparseCategoricalAccuracy(), [[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]],
     [0.7, 0.3], 0.5, 0.3),
    (metrics.TopKCategoricalAccuracy(k=1), [[0, 0, 1], [0, 1, 0]],
     [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], [0.7, 0.3], 0.5, 0.3),
    (metrics.SparseTopKCategoricalAccuracy(k=1), [2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]],
     [0.7, 0.3], 0.5, 0.3),
    (metrics.MeanAbsoluteError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], [1, 0], 0.25, 0.5),
    (metrics.MeanSquaredError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], [1, 1], 0.25, 0.25),
], ids=lambda value: type(value).__name__ if isinstance(value, metrics.Metric) else None)
def test_kerass_documented_examples(metric, y_true, y_pred, weights, plain, weighted):
    cpu = backends.get_backend("cpu")
    y_true, y_pred = np.array(y_true), np.array(y_pred, np.float32)
    assert run(cpu, metric, [(y_true, y_pred, None)]) == pytest.approx(plain)
    metric.reset_state()
    metric.update_state(y_true, y_pred, np.array(weights, np.float32))
    assert metric.result() == pytest.approx(weighted)
