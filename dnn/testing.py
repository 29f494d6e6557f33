"""The conformance kit for plugin authors (what ``check_estimator`` is to scikit-learn).

``check_optimizer(cls)``, ``check_backend(cls)`` and ``check_dataset(cls)`` check a plugin
against its contract and, for optimizers and backends, against the cpu backend: the same seed
and the same steps must give the same losses and weights on every available backend, within
float32 tolerance.  Each raises AssertionError with a message that says what is wrong; the
``*_results`` functions return one :class:`CheckResult` per backend instead (``dnn check``
prints them as a table).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from dnn import backends, plugins
from dnn.backends.base import Availability, Backend
from dnn.datasets import contract_problem
from dnn.errors import BackendUnavailableError, OptimizerError
from dnn.layers import Dense
from dnn.model import Sequential
from dnn.optimizers import SGD, Adam, Optimizer, RMSprop
from dnn.utils import to_categorical

TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


@dataclass(frozen=True)
class CheckResult:
    backend: str
    status: str  # "pass", "fail" or "unavailable"
    detail: str = ""


def _toy_problem(dtype):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=48)
    centres = rng.normal(scale=2.0, size=(3, 10))
    x = (centres[labels] + rng.normal(size=(48, 10))).astype(dtype)
    return x, to_categorical(labels, 3, dtype)


def train_toy(backend, optimizer: Optimizer, dtype="float32", epochs=2):
    """A small relu/softmax network trained from seed 0: returns ``(losses, weights)``."""
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                       dtype=dtype, seed=0, backend=backend)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _toy_problem(dtype)
    history = model.fit(x, y, epochs=epochs, batch_size=16)
    for param in model.params + [a for s in model.optimizer.states for a in s.values()]:
        assert model.backend.is_own_array(param), (
            f"a parameter or state array became {type(param).__name__}, not the "
            f"{model.backend.name} backend's array type")
        assert param.dtype == model.backend.dtype(dtype), (
            f"{dtype} training produced a {param.dtype} array")
    return history.history["loss"], model.get_weights()


def _compare(name: str, reference, actual, dtype) -> None:
    ref_losses, ref_weights = reference
    losses, weights = actual
    assert np.all(np.isfinite(losses)), f"{name}: non-finite losses {losses}"
    np.testing.assert_allclose(losses, ref_losses, **TOLERANCE[dtype],
                               err_msg=f"{name}: {dtype} losses differ from the cpu backend's")
    for index, (w, ref) in enumerate(zip(weights, ref_weights)):
        np.testing.assert_allclose(
            w, ref, **TOLERANCE[dtype],
            err_msg=f"{name}: {dtype} weight {index} differs from the cpu backend's")


def _available_backends(names=None):
    """(name, Backend instance or None, status and reason when None) for each of ``names``
    (default: every installed backend): a backend that cannot run here is "unavailable", a
    plugin that is broken (fails to load or to start) a "fail"."""
    found = []
    for name in names or plugins.names("backend"):
        try:
            found.append((name, backends.get_backend(name), None))
        except BackendUnavailableError as error:
            found.append((name, None, ("unavailable", str(error))))
        except Exception as error:
            found.append((name, None, ("fail", str(error))))
    return found


def one_line(error: BaseException) -> str:
    """A failed check in one line: its first, or for NumPy's ``assert_allclose`` (whose first
    line is only "Not equal to tolerance ...") the line that says what differs, then that."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Not equal to tolerance") and len(lines) > 1:
        return f"{lines[1]} ({lines[0][0].lower()}{lines[0][1:]})"
    return lines[0]


def _run(check, backend_entries) -> list[CheckResult]:
    results = []
    for name, backend, problem in backend_entries:
        if backend is None:
            results.append(CheckResult(name, *problem))
            continue
        try:
            check(backend)
        except AssertionError as error:
            results.append(CheckResult(name, "fail", one_line(error)))
        except Exception as error:
            results.append(CheckResult(name, "fail", f"{type(error).__name__}: {error}"))
        else:
            results.append(CheckResult(name, "pass"))
    return results


def _raise_failures(what: str, results: list[CheckResult]) -> None:
    failures = [f"{r.backend}: {r.detail}" for r in results if r.status == "fail"]
    if failures:
        raise AssertionError(f"{what} failed its checks:\n" + "\n".join(failures))


# -- optimizers ------------------------------------------------------------------------------
def _check_optimizer_contract(cls) -> None:
    assert inspect.isclass(cls) and issubclass(cls, Optimizer), (
        f"{cls!r} must be a subclass of dnn.optimizers.Optimizer")
    parameters = inspect.signature(cls).parameters
    assert "learning_rate" in parameters, "__init__ must take learning_rate (the CLI's --lr)"
    for name, parameter in parameters.items():
        assert parameter.default is not inspect.Parameter.empty, (
            f"__init__ argument {name!r} needs a default so that cls() works")
    instance = cls()
    config = instance.get_config()
    assert set(config) == set(parameters), (
        f"store each __init__ argument as an attribute of the same name; missing: "
        f"{sorted(set(parameters) - set(config))}")
    cls(**config)  # hyper-parameters round-trip (checkpoints rely on it)


def optimizer_results(cls, backend_names=None) -> list[CheckResult]:
    """Check ``cls`` against the cpu backend on ``backend_names`` (default: every installed
    backend)."""
    try:
        _check_optimizer_contract(cls)
        cpu = backends.get_backend("cpu")
        references = {dtype: train_toy(cpu, cls(), dtype) for dtype in TOLERANCE}
    except AssertionError:
        raise
    except OptimizerError as error:  # it names the plugin and what failed
        raise AssertionError(f"{error} (on cpu)") from error
    except Exception as error:  # the plugin's own code raised: say so, as a failed check
        raise AssertionError(f"{cls.__name__} raised {type(error).__name__} on cpu: "
                             f"{error}") from error
    for dtype, (losses, weights) in references.items():
        assert np.all(np.isfinite(losses)), f"{dtype} losses are not finite on cpu: {losses}"
        if not losses[-1] < losses[0]:
            _assert_updates_in_place(cls, cpu)
            raise AssertionError(f"{cls.__name__} with its defaults did not lower the loss on "
                                 f"cpu ({losses})")

    def check(backend):
        for dtype, reference in references.items():
            _compare(cls.__name__, reference, train_toy(backend, cls(), dtype), dtype)

    return _run(check, _available_backends(backend_names))


def _assert_updates_in_place(cls, backend) -> None:
    """Fail with a hint when one step of ``cls`` leaves every parameter as it was: the usual
    cause is ``param = param - step``, which rebinds the name instead of writing the array."""
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")], seed=0,
                       backend=backend)
    model.compile(optimizer=cls(), loss="categorical_crossentropy")
    x, y = _toy_problem("float32")
    model.build(x.shape[1])
    before = model.get_weights()
    model.train_on_batch(x, y)
    assert any(not np.array_equal(b, a) for b, a in zip(before, model.get_weights())), (
        f"{cls.__name__}.update() left every parameter as it was: change param in place "
        "(param -= step), not by assigning a new array to the name")


def check_optimizer(cls) -> None:
    """Raise AssertionError unless optimizer class ``cls`` keeps the contract and matches the
    cpu backend on every available backend."""
    _raise_failures(cls.__name__, optimizer_results(cls))


# -- backends --------------------------------------------------------------------------------
def assert_matches_cpu(backend: Backend, what: str, ours, reference: np.ndarray,
                       dtype: str) -> None:
    """Assert that ``ours`` (a result on ``backend``) is an array of that backend, in
    ``dtype``, and equal to the host array ``reference`` (the cpu backend's result) within
    :data:`TOLERANCE`."""
    assert backend.is_own_array(ours), f"{what} left the {backend.name} backend"
    ours_host = backend.to_numpy(ours)
    assert ours_host.dtype == np.dtype(dtype), f"{what} returned {ours_host.dtype}, not {dtype}"
    np.testing.assert_allclose(ours_host, reference, **TOLERANCE[dtype],
                               err_msg=f"{what} ({dtype}) on {backend.name} differs from cpu")


def _check_backend_kernels(backend: Backend, dtype: str) -> None:
    cpu = backends.get_backend("cpu")
    rng = np.random.default_rng(1)
    host = {name: rng.normal(size=shape).astype(dtype) for name, shape in
            {"x": (6, 5), "kernel": (5, 4), "bias": (4,), "grad": (6, 4)}.items()}
    targets = to_categorical(rng.integers(0, 4, size=6), 4, dtype)

    def on(b, name):
        return b.asarray(host[name].copy())

    def same(what, ours, reference):
        assert_matches_cpu(backend, f"kernel {what}", ours, cpu.to_numpy(reference), dtype)

    np.testing.assert_array_equal(backend.to_numpy(on(backend, "x")), host["x"],
                                  err_msg="asarray then to_numpy changed the data")
    assert backend.is_own_array(on(backend, "x")), "is_own_array(asarray(...)) is False"
    z = {b.name: b.dense_forward(on(b, "x"), on(b, "kernel"), on(b, "bias"), {})
         for b in (backend, cpu)}
    same("dense_forward", z[backend.name], z["cpu"])
    hidden = {b.name: b.dense_relu_forward(on(b, "x"), on(b, "kernel"), on(b, "bias"), {})
              for b in (backend, cpu)}
    same("dense_relu_forward", hidden[backend.name], hidden["cpu"])
    grads = {b.name: b.dense_backward(on(b, "x"), on(b, "grad"), on(b, "kernel"), True, {})
             for b in (backend, cpu)}
    for index, what in enumerate(("grad_x", "grad_kernel", "grad_bias")):
        same(f"dense_backward {what}", grads[backend.name][index], grads["cpu"][index])
    relu = {b.name: b.relu(on(b, "grad"), {}) for b in (backend, cpu)}
    same("relu", relu[backend.name], relu["cpu"])
    back = {b.name: b.relu_backward(on(b, "grad"), b.relu(on(b, "grad"), {}), {})
            for b in (backend, cpu)}
    same("relu_backward", back[backend.name], back["cpu"])
    loss = {b.name: b.softmax_crossentropy(on(b, "grad"), b.asarray(targets), {})
            for b in (backend, cpu)}
    same("softmax_crossentropy loss", loss[backend.name][0], loss["cpu"][0])
    same("softmax_crossentropy grad", loss[backend.name][1], loss["cpu"][1])
    counts = {b.name: int(b.to_numpy(b.correct_count(on(b, "grad"), b.asarray(targets))))
              for b in (backend, cpu)}
    assert counts[backend.name] == counts["cpu"], f"kernel correct_count ({dtype}): {counts}"


def backend_results(cls) -> list[CheckResult]:
    """Check backend class ``cls`` (its kernels and a short training run) against cpu."""
    assert inspect.isclass(cls) and issubclass(cls, Backend), (
        f"{cls!r} must be a subclass of dnn.backends.Backend")
    assert isinstance(cls.name, str) and cls.name != Backend.name, "set the class attribute name"
    availability = cls.is_available()
    assert isinstance(availability, Availability), (
        "is_available() must return dnn.backends.Availability(available, reason)")
    if not availability:
        return [CheckResult(cls.name, "unavailable", availability.reason)]
    cpu = backends.get_backend("cpu")

    def check(backend):
        for dtype in TOLERANCE:
            _check_backend_kernels(backend, dtype)
            for make in (lambda: SGD(learning_rate=0.1, momentum=0.9), RMSprop, Adam):
                _compare(f"{cls.name} {type(make()).__name__}", train_toy(cpu, make(), dtype),
                         train_toy(backend, make(), dtype), dtype)

    try:
        backend = cls()
    except Exception as error:  # the plugin's own constructor, worded as get_backend words it
        return [CheckResult(cls.name, "fail",
                            plugins.failure(plugins.origin_of("backend", cls), "to start",
                                            error))]
    return _run(check, [(cls.name, backend, None)])


def check_backend(cls) -> None:
    """Raise AssertionError unless backend class ``cls`` matches the cpu backend."""
    _raise_failures(cls.__name__, backend_results(cls))


# -- datasets --------------------------------------------------------------------------------
def check_dataset(cls, data_dir=None) -> None:
    """Raise AssertionError unless ``cls().load(data_dir)`` returns
    ``(x_train, y_train), (x_test, y_test)``: float32 images in [0, 1], integer labels."""
    dataset = cls()
    assert isinstance(getattr(dataset, "name", None), str), "set the class attribute name"
    problem = contract_problem(dataset.load(data_dir))
    assert problem is None, problem
