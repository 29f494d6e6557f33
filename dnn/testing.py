"""The conformance kit for plugin authors (what ``check_estimator`` is to scikit-learn).

``check_optimizer(cls)``, ``check_backend(cls)`` and ``check_dataset(cls)`` check a plugin
against its contract and, for optimizers and backends, against the cpu backend on every available
backend; ``check_layer(layer, input_shape)`` checks a layer of one's own (its output shape, its
backward pass against finite differences, its config).  Each raises AssertionError with a message that says what is wrong; the ``*_results``
functions return one :class:`CheckResult` per backend instead (``dnn check`` prints them as a
table).  The pieces a backend is checked with are public, for a plugin's own tests:

- :func:`assert_kernels_match_cpu`: every kernel from identical inputs, to rounding
  (:data:`TOLERANCE`);
- :func:`assert_layers_match_cpu`: each activation's Dense layer forward and backward, each
  image layer's (Conv2D, the pooling layers, BatchNormalization in training), each sequence
  layer's (Conv1D, the 1-D poolings, Embedding), and each loss, from identical weights and
  inputs, to rounding; the image kernels (im2col, col2im, max pooling), batch
  normalization's sums per channel and Embedding's scatter_add_rows are among the kernels;
- :func:`record_training` and :func:`assert_training_matches`: a training run compared with
  the cpu backend's step by step in its losses and per parameter in aggregate
  (:data:`TRAINING_TOLERANCE`).

Why training is compared in aggregate: two correct backends sum a product in different orders,
so a pre-activation that is exactly 0 on one can be 1e-8 on the other.  relu's mask then differs
for that sample and unit, and RMSprop, which divides each gradient element by its running size,
turns the tiny difference in that unit's gradient into a step as large as any other: after a few
steps some weights differ by a good part of the learning rate, on correct hardware.  Such a flip
touches a few units' columns, so it moves the loss a little and the weights little *in
aggregate*; a wrong formula (a wrong sign, a missing ``1/n``, an epsilon outside the square
root) moves every step and every weight.  The tolerances are set between the two: a simulated
backend that flips the relu of every pre-activation within 1e-4 of zero (some 100 times more flips
than float32 rounding causes) passes, and each of those planted errors fails by five times the
margin (tests/test_equivalence.py runs both).
"""

from __future__ import annotations

import inspect
import reprlib
import warnings
from dataclasses import dataclass

import numpy as np

from dnn import activations, backends, losses as losses_module, plugins
from dnn.backends.base import Availability, Backend
from dnn.callbacks import Callback
from dnn.datasets import contract_problem
from dnn.errors import BackendUnavailableError, OptimizerError, UsageError
from dnn.backends.windows import Window
from dnn.layers import (AveragePooling1D, AveragePooling2D, BatchNormalization, Conv1D, Conv2D,
                        Dense, Embedding, GlobalAveragePooling1D, GlobalAveragePooling2D,
                        GlobalMaxPooling1D, GlobalMaxPooling2D, Layer, MaxPooling1D,
                        MaxPooling2D, from_config)
from dnn.models import Sequential
from dnn.optimizers import SGD, Adam, Optimizer, RMSprop
from dnn.replay import EagerReplayBackend, ReplayBackend
from dnn.saving.registry import custom_object_scope
from dnn.trainers.step import GraphFallbackWarning
from dnn.utils import to_categorical

# One kernel or layer from identical inputs: the backends agree to rounding.
TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-7), "float64": dict(rtol=1e-10, atol=1e-12)}


@dataclass(frozen=True)
class TrainingTolerance:
    """How far a training run may stray from the cpu backend's (see the module docstring)."""

    loss_rtol: float  # each step's loss, relative
    weight_share: float  # |w - w_cpu| per parameter, as a share of |w_cpu - w_start|


TRAINING_TOLERANCE = {"float32": TrainingTolerance(loss_rtol=5e-4, weight_share=0.1),
                      "float64": TrainingTolerance(loss_rtol=1e-9, weight_share=1e-6)}


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


@dataclass(frozen=True)
class TrainingRun:
    """A training run's record: each step's summed loss, and the weights (host arrays, in
    ``get_weights`` order) before the first step and after the last."""

    losses: np.ndarray
    start: list
    end: list


class _StepLosses(Callback):
    """Each step's summed loss, from the epoch's running mean that ``fit`` reports."""

    def __init__(self, samples: int, batch_size: int):
        super().__init__()
        self.samples, self.batch_size = samples, batch_size
        self.epoch_totals: list[list] = []

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.epoch_totals.append([0.0])
        seen = min((batch + 1) * self.batch_size, self.samples)
        self.epoch_totals[-1].append(logs["loss"] * seen)

    def losses(self) -> np.ndarray:
        return np.concatenate([np.diff(totals) for totals in self.epoch_totals])


def record_training(model: Sequential, x, y, epochs: int, batch_size: int,
                    callbacks=()) -> TrainingRun:
    """Train the compiled ``model`` on host ``x`` ``(N, *sample_shape)`` and ``y`` with
    ``fit`` (and ``callbacks``) and record the run."""
    if not model.built:
        model.build(x.shape[1:])
    start = model.get_weights()
    steps = _StepLosses(x.shape[0], batch_size)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=[steps, *callbacks],
              verbose=0)
    return TrainingRun(steps.losses(), start, model.get_weights())


def assert_training_matches(name: str, reference: TrainingRun, actual: TrainingRun,
                            dtype) -> None:
    """Assert that ``actual`` started from ``reference``'s weights, that its losses agree step
    by step, and that each of its parameters ended within :data:`TRAINING_TOLERANCE` of
    ``reference``'s, measured against how far training moved it."""
    dtype = str(np.dtype(dtype))
    tolerance = TRAINING_TOLERANCE[dtype]
    for index, (ours, theirs) in enumerate(zip(actual.start, reference.start)):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: {dtype} weight {index} "
                                      "starts elsewhere than on the cpu backend")
    assert np.all(np.isfinite(actual.losses)), f"{name}: non-finite losses {actual.losses}"
    np.testing.assert_allclose(actual.losses, reference.losses, rtol=tolerance.loss_rtol,
                               err_msg=f"{name}: {dtype} step losses differ from the cpu "
                               "backend's")
    for index, (ours, theirs, start) in enumerate(zip(actual.end, reference.end,
                                                      reference.start)):
        moved = np.linalg.norm(theirs.astype(np.float64) - start)
        apart = np.linalg.norm(ours.astype(np.float64) - theirs)
        assert apart <= tolerance.weight_share * moved, (
            f"{name}: {dtype} weight {index} ended {apart:.3g} from the cpu backend's, "
            f"{apart / moved if moved else np.inf:.1%} of the {moved:.3g} that training moved "
            f"it (at most {tolerance.weight_share:.0%})")


def train_toy(backend, optimizer: Optimizer, dtype="float32", epochs=2,
              callbacks=()) -> TrainingRun:
    """A small relu/softmax network trained from seed 0 (6 steps, with ``callbacks``), its
    arrays held to ``backend``'s type and ``dtype``."""
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                       dtype=dtype, seed=0, backend=backend)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _toy_problem(dtype)
    run = record_training(model, x, y, epochs=epochs, batch_size=16, callbacks=callbacks)
    for param in model.params + [a for s in model.optimizer.states for a in s.values()]:
        assert model.backend.is_own_array(param), (
            f"a parameter or state array became {type(param).__name__}, not the "
            f"{model.backend.name} backend's array type")
        assert param.dtype == model.backend.dtype(dtype), (
            f"{dtype} training produced a {param.dtype} array")
    return run


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
        except plugins.PLUGIN_FAILURES as error:
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
        except plugins.PLUGIN_FAILURES as error:
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


class LowerTheRateEachBatch(Callback):
    """Lowers the learning rate by 30% after every batch, as a schedule or a callback may: a
    plugin's tests can train with it to see that its update follows the rate."""

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        optimizer.learning_rate = optimizer.get_config()["learning_rate"] * 0.7


def assert_update_replays(cls) -> None:
    """Assert that ``cls()``'s update is right in a step captured once and replayed, as the gpu
    backend runs it (:mod:`dnn.replay` replays on the CPU as a CUDA graph does): with the
    learning rate lowered after every batch, the replayed run falls back to no eager step and
    equals the eager run bit for bit, which differs from a run at a constant rate."""
    name = cls.__name__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replayed = train_toy(ReplayBackend(), cls(), callbacks=[LowerTheRateEachBatch()])
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, GraphFallbackWarning)]
    assert not fallbacks, (
        f"{name}'s step is wrong when captured and replayed, as the gpu backend runs it "
        f"({fallbacks[0]}): read the hyper-parameters and iterations as the device arrays "
        "they are, never on the host, and keep no number of your own from step to step")
    eager = train_toy(EagerReplayBackend(), cls(), callbacks=[LowerTheRateEachBatch()])
    for ours, theirs in zip([replayed.losses, *replayed.end], [eager.losses, *eager.end]):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: the replayed step "
                                      "differs from the eager one")
    constant = train_toy(EagerReplayBackend(), cls())
    assert not np.array_equal(constant.losses, eager.losses), (
        f"{name} ignores a learning rate changed during training: read self.learning_rate "
        "in update(), not a copy of it made earlier")


class _StateAtStart(Callback):
    """The optimizer's state arrays as ``fit`` starts (after the optimizer is built):
    ``{(weight index, key): (the array, a host copy)}``."""

    def on_train_begin(self, logs=None):
        self.arrays = {(index, key): (array, self.model.backend.to_numpy(array).copy())
                       for index, state in enumerate(self.model.optimizer.states)
                       for key, array in state.items()}


def assert_state_updated_in_place(cls) -> None:
    """Assert that ``cls()``'s update writes each state array in place: after a short training
    every array of its state is still the one ``init_state`` made (a new array bound to the
    key is what a captured step never sees) and holds other values than at the start (else
    ``update`` computed the new state into a local name, ``m = b1 * m + ...``, and lost it:
    momentum silently gone)."""
    name, watch = cls.__name__, _StateAtStart()
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")], seed=0,
                       backend=backends.get_backend("cpu"))
    model.compile(optimizer=cls(), loss="categorical_crossentropy")
    x, y = _toy_problem("float32")
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[watch], verbose=0)
    for (index, key), (array, start) in watch.arrays.items():
        now = model.optimizer.states[index][key]
        assert now is array, (
            f"{name}.update() bound a new array to state[{key!r}]: write into the state in "
            f"place (state[{key!r}][...] = ...), as a captured step reads only the arrays "
            "init_state made")
        assert not np.array_equal(model.backend.to_numpy(now), start), (
            f"{name}.update() never changed state[{key!r}] (weight {index}) in 6 steps: a new "
            f"value assigned to a local name is lost; write it in place ({key}[...] = ...)")


def optimizer_results(cls, backend_names=None) -> list[CheckResult]:
    """Check ``cls`` against the cpu backend on ``backend_names`` (default: every installed
    backend)."""
    try:
        _check_optimizer_contract(cls)
        cpu = backends.get_backend("cpu")
        references = {dtype: train_toy(cpu, cls(), dtype) for dtype in TOLERANCE}
        assert_state_updated_in_place(cls)
        assert_update_replays(cls)
    except AssertionError:
        raise
    except OptimizerError as error:  # it names the plugin and what failed
        raise AssertionError(f"{error} (on cpu)") from error
    except plugins.PLUGIN_FAILURES as error:  # the plugin's own code raised: a failed check
        raise AssertionError(f"{cls.__name__} raised {type(error).__name__} on cpu: "
                             f"{error}") from error
    for dtype, reference in references.items():
        losses = reference.losses
        assert np.all(np.isfinite(losses)), f"{dtype} losses are not finite on cpu: {losses}"
        first_epoch, second_epoch = np.array_split(losses, 2)
        if not second_epoch.mean() < first_epoch.mean():
            raise AssertionError(f"{cls.__name__} with its defaults did not lower the loss on "
                                 f"cpu ({losses})")

    def check(backend):
        for dtype, reference in references.items():
            assert_training_matches(cls.__name__, reference, train_toy(backend, cls(), dtype),
                                    dtype)

    return _run(check, _available_backends(backend_names))


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


# Each built-in optimizer and each of its variants, checked update by update.
OPTIMIZER_VARIANTS = {
    "SGD": lambda: SGD(learning_rate=0.01),
    "SGD momentum": lambda: SGD(learning_rate=0.01, momentum=0.9),
    "SGD Nesterov": lambda: SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
    "RMSprop": RMSprop,
    "RMSprop centered momentum": lambda: RMSprop(rho=0.8, momentum=0.5, centered=True),
    "Adam": lambda: Adam(learning_rate=2e-3),
    "Adam AMSGrad": lambda: Adam(learning_rate=2e-3, amsgrad=True),
}


def optimizer_steps(backend: Backend, optimizer: Optimizer, param: np.ndarray, grads,
                    initial_state=None) -> dict:
    """``param`` and its state, on ``backend``, after ``optimizer`` took one step there for
    each host gradient in ``grads``, by name (``"param"`` and the state's keys);
    ``initial_state(key)`` gives a state array's host start (default: init_state's)."""
    device_param = backend.asarray(param.copy())
    optimizer.build([device_param], backend)
    state = optimizer.states[0]
    if initial_state is not None:
        for key in state:
            state[key] = backend.asarray(initial_state(key).copy())
    for grad in grads:
        optimizer.apply_gradients([device_param], [backend.asarray(grad.copy())])
    return {"param": device_param, **state}


def assert_kernels_match_cpu(backend: Backend, dtype: str) -> None:
    """Assert that each of ``backend``'s kernels, given the inputs the cpu backend is given,
    returns the cpu backend's result to rounding (:data:`TOLERANCE`), as its own arrays."""
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

    def into(what, b, shape, kernel):
        """Run ``kernel(out)`` with a new ``out`` on ``b``; it must write there."""
        out = b.empty(shape, dtype)
        assert kernel(out) is out, (f"kernel {what} on {b.name} returned another array than "
                                    "the out it was given")
        return out

    for what in ("dense_forward", "dense_relu_forward"):
        z = {b.name: into(what, b, (6, 4), lambda out, b=b: getattr(b, what)(
            on(b, "x"), on(b, "kernel"), on(b, "bias"), out)) for b in (backend, cpu)}
        same(what, z[backend.name], z["cpu"])
    for a_shape, b_shape in (((6, 1, 5), (6, 5, 1)), ((6, 3, 5), (6, 5, 2))):
        left, right = (rng.normal(size=shape).astype(dtype) for shape in (a_shape, b_shape))
        products = {b.name: into("batch_matmul", b, (6, a_shape[1], b_shape[2]),
                                 lambda out, b=b: b.batch_matmul(b.asarray(left),
                                                                 b.asarray(right), out))
                    for b in (backend, cpu)}
        same(f"batch_matmul {a_shape} @ {b_shape}", products[backend.name], products["cpu"])
    rows, picked = rng.normal(size=(9, 4)).astype(dtype), np.array([2, 0, 2, 5, 2, 0, 1, 5, 3])
    start = rng.normal(size=(6, 4)).astype(dtype)  # added to, as an Embedding's zeros are
    sums = {}
    for b in (backend, cpu):
        sums[b.name] = b.asarray(start.copy())
        assert b.scatter_add_rows(b.asarray(rows), b.asarray(picked),
                                  sums[b.name]) is sums[b.name], (
            f"kernel scatter_add_rows on {b.name} returned another array than the out it was "
            "given")
    same("scatter_add_rows", sums[backend.name], sums["cpu"])
    grads = {}
    for b in (backend, cpu):
        grads[b.name] = [b.empty(shape, dtype) for shape in ((6, 5), (5, 4), (4,))]
        grad_x, grad_kernel, grad_bias = grads[b.name]
        b.dense_backward(on(b, "x"), on(b, "grad"), on(b, "kernel"), grad_kernel, grad_bias,
                         grad_x)
    for index, what in enumerate(("grad_x", "grad_kernel", "grad_bias")):
        same(f"dense_backward {what}", grads[backend.name][index], grads["cpu"][index])
    relu = {b.name: b.relu(on(b, "grad")) for b in (backend, cpu)}
    same("relu", relu[backend.name], relu["cpu"])
    back = {b.name: b.relu_backward(on(b, "grad"), b.relu(on(b, "grad"))) for b in (backend, cpu)}
    same("relu_backward", back[backend.name], back["cpu"])
    loss, loss_grad = {}, {}
    for b in (backend, cpu):
        loss_grad[b.name] = b.empty((6, 4), dtype)
        loss[b.name] = b.softmax_crossentropy(on(b, "grad"), b.asarray(targets), loss_grad[b.name])
    same("softmax_crossentropy loss", loss[backend.name], loss["cpu"])
    same("softmax_crossentropy grad", loss_grad[backend.name], loss_grad["cpu"])
    counts = {b.name: int(b.to_numpy(b.correct_count(on(b, "grad"), b.asarray(targets))))
              for b in (backend, cpu)}
    assert counts[backend.name] == counts["cpu"], f"kernel correct_count ({dtype}): {counts}"
    _assert_window_kernels_match_cpu(backend, cpu, dtype)
    _assert_channel_sums_match_cpu(backend, cpu, dtype)
    _assert_updates_match_cpu(backend, cpu, dtype)


# Windows the image kernels are checked on: (image, kernel, strides, padding), one that fits
# and one padded, overlapping and strided unevenly.
WINDOWS = [((6, 5), (2, 2), (2, 2), "valid"), ((7, 6), (3, 2), (2, 1), "same")]


def _assert_window_kernels_match_cpu(backend: Backend, cpu: Backend, dtype: str) -> None:
    """im2col, col2im, max_pool and its gradient on images (3, h, w, 2) with ties (a third
    of the inputs 0, as after relu, and a third at the largest value) agree with the cpu
    backend's; the argmax exactly."""
    rng = np.random.default_rng(5)
    for image, kernel, strides, padding in WINDOWS:
        window = Window.of(image, kernel, strides, padding)
        x = np.clip(rng.normal(size=(3, *image, 2)), -0.4, 0.3).astype(dtype) + 0.4
        cols_shape = (3, *window.output, *window.kernel, 2)
        grad_cols = rng.normal(size=cols_shape).astype(dtype)
        grad = rng.normal(size=(3, *window.output, 2)).astype(dtype)
        results = {}
        for b in (backend, cpu):
            cols = b.im2col(b.asarray(x), window, b.empty(cols_shape, dtype))
            summed = b.col2im(b.asarray(grad_cols), window, b.empty(x.shape, dtype))
            out, argmax = b.empty(grad.shape, dtype), b.empty(grad.shape, "int32")
            b.max_pool(b.asarray(x), window, out, argmax)
            routed = b.max_pool_backward(b.asarray(grad), argmax, window,
                                         b.empty(x.shape, dtype))
            results[b.name] = [cols, summed, out, routed, argmax]
        ours, reference = results[backend.name], results["cpu"]
        for what, mine, theirs in zip(("im2col", "col2im", "max_pool", "max_pool_backward"),
                                      ours, reference):
            assert_matches_cpu(backend, f"kernel {what} {window.kernel} {padding}", mine,
                               cpu.to_numpy(theirs), dtype)
        np.testing.assert_array_equal(backend.to_numpy(ours[-1]), reference[-1],
                                      err_msg=f"kernel max_pool argmax {window.kernel} "
                                              f"{padding} ({dtype})")


# Batches the sums per channel are checked on, as (m, c) rows: images (3, 7, 6, 2), one row,
# none (a rank's share of a last batch may have none).
CHANNEL_ROWS = [(126, 2), (1, 3), (0, 2)]
CHANNEL_SUMS = ("channel_sums", "channel_sums about a mean", "channel_gradient_sums")


def _assert_channel_sums_match_cpu(backend: Backend, cpu: Backend, dtype: str) -> None:
    """Batch normalization's sums per channel (of the rows, of their squares about a mean,
    and of a gradient and its products with the normalized rows), on values around 1 and 2
    (sums well away from 0, where rounding is relative), agree with the cpu backend's and
    are written into the ``out`` given."""
    rng = np.random.default_rng(8)
    for shape in CHANNEL_ROWS:
        channels = shape[1]
        x, grad, normalized = ((rng.normal(size=shape) + centre).astype(dtype)
                               for centre in (2, 1, 1))
        mean = rng.normal(size=channels).astype(dtype)
        results = {}
        for b in (backend, cpu):
            outs = [b.empty((width,), dtype) for width in (channels, channels, 2 * channels)]
            returned = [b.channel_sums(b.asarray(x), outs[0]),
                        b.channel_sums(b.asarray(x), outs[1], mean=b.asarray(mean)),
                        b.channel_gradient_sums(b.asarray(grad), b.asarray(normalized),
                                                outs[2])]
            for what, out, result in zip(CHANNEL_SUMS, outs, returned):
                assert result is out, (f"kernel {what} on {b.name} returned another array "
                                       "than the out it was given")
            results[b.name] = outs
        for what, ours, theirs in zip(CHANNEL_SUMS, results[backend.name], results["cpu"]):
            assert_matches_cpu(backend, f"kernel {what} of {shape[0]} rows", ours,
                               cpu.to_numpy(theirs), dtype)


def _assert_updates_match_cpu(backend: Backend, cpu: Backend, dtype: str) -> None:
    """Three steps of each optimizer variant, on gradients from 1e-6 to 10 (small enough for
    epsilon to count), agree with the cpu backend's."""
    rng = np.random.default_rng(2)
    param = rng.normal(size=(7, 9)).astype(dtype)
    grads = [(rng.normal(size=param.shape) * 10.0 ** rng.integers(-6, 2, size=param.shape))
             .astype(dtype) for _ in range(3)]
    for name, make in OPTIMIZER_VARIANTS.items():
        ours = optimizer_steps(backend, make(), param, grads)
        reference = optimizer_steps(cpu, make(), param, grads)
        for key, array in ours.items():
            assert_matches_cpu(backend, f"{name} update: {key} (after 3 steps)", array,
                               cpu.to_numpy(reference[key]), dtype)


def assert_layers_match_cpu(backend: Backend, dtype: str) -> None:
    """Assert that a Dense layer with each activation, and each loss, gives the cpu backend's
    forward and backward results from the same weights and inputs, to rounding."""
    cpu = backends.get_backend("cpu")
    rng = np.random.default_rng(3)
    x, grad = (rng.normal(size=shape).astype(dtype) for shape in ((6, 5), (6, 4)))
    for activation in sorted(activations.ACTIVATIONS):
        results = {}
        for b in (backend, cpu):
            layer = Dense(4, activation=activation)
            layer.build_on((5,), b, np.random.default_rng(4), dtype)
            output = layer.forward(b.asarray(x.copy()))
            grad_x = layer.backward(b.asarray(grad.copy()))
            results[b.name] = [output, grad_x, *layer.grads]
        for what, ours, reference in zip(("forward", "grad_x", "grad_kernel", "grad_bias"),
                                         results[backend.name], results["cpu"]):
            assert_matches_cpu(backend, f"Dense {activation} {what}", ours,
                               cpu.to_numpy(reference), dtype)
    _assert_image_layers_match_cpu(backend, cpu, dtype)
    labels = rng.integers(0, 4, size=6)
    softmax = activations.get("softmax")
    probabilities = softmax.forward(cpu, grad.copy())
    for name in sorted(losses_module.LOSSES):
        loss = losses_module.get(name)
        targets = labels if loss.sparse else to_categorical(labels, 4, dtype)
        for logits in (False, True) if loss.takes_logits_of(softmax) else (False,):
            output = grad if logits else probabilities
            results = {}
            for b in (backend, cpu):
                gradient = b.empty((6, 4), dtype)
                total = loss.compute(b, b.asarray(output.copy()), b.asarray(targets), gradient,
                                     logits=logits)
                results[b.name] = (total, gradient)
            what = f"{name}{' from logits' if logits else ''}"
            for part, ours, reference in zip(("loss", "gradient"), results[backend.name],
                                             results["cpu"]):
                assert_matches_cpu(backend, f"{what} {part}", ours, cpu.to_numpy(reference),
                                   dtype)


IMAGE_LAYERS = {"Conv2D": lambda: Conv2D(3, 3, strides=2, padding="same", activation="relu"),
                "MaxPooling2D": lambda: MaxPooling2D(2), "AveragePooling2D": AveragePooling2D,
                "GlobalAveragePooling2D": GlobalAveragePooling2D,
                "GlobalMaxPooling2D": GlobalMaxPooling2D,
                "BatchNormalization": BatchNormalization}
SEQUENCE_LAYERS = {"Conv1D": lambda: Conv1D(3, 2, strides=2, padding="same", activation="relu"),
                   "MaxPooling1D": lambda: MaxPooling1D(2),
                   "AveragePooling1D": lambda: AveragePooling1D(3, 1, padding="same"),
                   "GlobalAveragePooling1D": GlobalAveragePooling1D,
                   "GlobalMaxPooling1D": GlobalMaxPooling1D}


def _assert_image_layers_match_cpu(backend: Backend, cpu: Backend, dtype: str) -> None:
    """Each image layer's training forward pass and backward pass on images (4, 6, 5, 2) (a
    third of them at the largest value: ties for max pooling), each sequence layer's on
    those numbers as sequences (4, 6, 10), and an Embedding's on indices (4, 6): its
    outputs, input gradient, weights' gradients and moving statistics, then its inference
    forward pass, as on cpu."""
    rng = np.random.default_rng(6)
    images = np.clip(rng.normal(size=(4, 6, 5, 2)), -2, 0.4).astype(dtype)  # ties at the top
    indices = rng.integers(0, 7, size=(4, 6)).astype(dtype)  # as the model hands them on
    for layers, x in ((IMAGE_LAYERS, images), (SEQUENCE_LAYERS, images.reshape(4, 6, 10)),
                      ({"Embedding": lambda: Embedding(7, 3)}, indices)):
        for name, make in layers.items():
            results, grad = {}, None
            for b in (backend, cpu):
                layer = make()
                layer.build_on(x.shape[1:], b, np.random.default_rng(7), dtype)
                output = layer.forward(b.asarray(x.copy()), training=True)
                if grad is None:
                    grad = rng.normal(size=output.shape).astype(dtype)
                grad_x = layer.backward(b.asarray(grad.copy()))
                trained = [output, grad_x, *layer.grads, *layer.state_weights]
                inference = layer.forward(b.asarray(x.copy()))  # after the step, as evaluate
                results[b.name] = [inference, *trained]
            for index, (ours, reference) in enumerate(zip(results[backend.name],
                                                          results["cpu"])):
                what = (("inference", "forward", "grad_x")[index] if index < 3
                        else f"weight {index - 3}")
                if ours is None and reference is None:  # no input gradient: an Embedding's
                    continue
                assert_matches_cpu(backend, f"{name} {what}", ours, cpu.to_numpy(reference),
                                   dtype)


def assert_training_matches_cpu(backend: Backend, dtype: str) -> None:
    """Assert that the toy network trains on ``backend`` as on cpu with SGD (momentum),
    RMSprop and Adam: the same step losses and, in aggregate, the same weights."""
    cpu = backends.get_backend("cpu")
    for make in (lambda: SGD(learning_rate=0.1, momentum=0.9), RMSprop, Adam):
        assert_training_matches(f"{backend.name} {type(make()).__name__}",
                                train_toy(cpu, make(), dtype), train_toy(backend, make(), dtype),
                                dtype)


def backend_results(cls) -> list[CheckResult]:
    """Check backend class ``cls`` (its kernels, layers and short training runs) against
    cpu."""
    assert inspect.isclass(cls) and issubclass(cls, Backend), (
        f"{cls!r} must be a subclass of dnn.backends.Backend")
    assert isinstance(cls.name, str) and cls.name != Backend.name, "set the class attribute name"
    availability = cls.is_available()
    assert isinstance(availability, Availability), (
        "is_available() must return dnn.backends.Availability(available, reason)")
    if not availability:
        return [CheckResult(cls.name, "unavailable", availability.reason)]

    def check(backend):
        for dtype in TOLERANCE:
            assert_kernels_match_cpu(backend, dtype)
            assert_layers_match_cpu(backend, dtype)
            assert_training_matches_cpu(backend, dtype)

    try:
        backend = cls()
    except plugins.PLUGIN_FAILURES as error:  # its constructor: worded as get_backend words it
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
    name = getattr(dataset, "name", None)
    assert isinstance(name, str) and name, (f"set the class attribute name to a string (the "
                                            f"entry point's name), not {name!r}")
    problem = contract_problem(dataset.load(data_dir))
    assert problem is None, problem


def numerical_gradient(f, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``f()`` with respect to ``x`` (changed in
    place, then restored): an array of ``x``'s shape."""
    grad = np.zeros_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + step
        plus = f()
        flat[i] = original - step
        minus = f()
        flat[i] = original
        out[i] = (plus - minus) / (2 * step)
    return grad


def _assert_gradient_close(what: str, ours: np.ndarray, numerical: np.ndarray) -> None:
    """AssertionError naming ``what`` and its worst element unless ``ours`` is ``numerical``
    to finite differences' accuracy in float64."""
    if ours is None or np.shape(ours) != numerical.shape:
        raise AssertionError(f"{what} has shape {None if ours is None else np.shape(ours)}, "
                             f"not {numerical.shape}")
    ours = np.asarray(ours)
    error = np.abs(ours - numerical) - (1e-7 + 1e-5 * np.abs(numerical))
    if not (error <= 0).all():
        worst = np.unravel_index(int(np.nanargmax(np.where(np.isnan(error), np.inf, error))),
                                 error.shape)
        raise AssertionError(f"{what} at {tuple(int(i) for i in worst)} is "
                             f"{float(ours[worst]):.10g}; finite differences give "
                             f"{float(numerical[worst]):.10g}")


def check_layer(layer: Layer, input_shape, *, batch: int = 3, training: bool = False,
                seed: int = 0) -> None:
    """Check a layer of one's own, as made for a model (``check_layer(PReLU(0.3), (5,))``; a
    layer that takes several inputs, ``takes_several``, with a list of their shapes,
    ``check_layer(Join(), [(5,), (5,)])``): its ``get_config`` makes the same layer again;
    built for samples of ``input_shape`` (keep it small) on the cpu backend in float64, its
    output has ``compute_output_shape``'s shape and its ``backward`` (with ``training`` as
    given to ``forward``) writes each weight's gradient and returns the input gradient (one
    per input) of ``sum(g * forward(x))`` as central finite differences give them, for a
    batch of ``batch`` normal samples ``x`` and normal ``g``.  Raises AssertionError saying
    what is wrong; ``layer`` itself is left as it was (a copy made from its config is
    checked)."""
    config = layer.get_config()
    with custom_object_scope({config.get("class", ""): type(layer)}):
        try:
            made = from_config(config)
        except UsageError as error:
            raise AssertionError(f"the layer cannot be made again from its get_config(): "
                                 f"{error}") from None
    assert made.get_config() == config, (
        f"{type(layer).__name__}.get_config() gives {config}, but the layer made from it gives "
        f"{made.get_config()}: return every argument of __init__")
    cpu = backends.get_backend("cpu")
    rng = np.random.default_rng(seed)
    several = isinstance(input_shape, list) and all(
        isinstance(shape, (list, tuple)) for shape in input_shape)
    if several != made.takes_several:
        raise AssertionError(f"{type(layer).__name__} takes "
                             + ("several inputs: give check_layer a list of their shapes"
                                if made.takes_several else "one input: give check_layer its "
                                "sample shape, a tuple"))
    input_shape = made._taken_shape(input_shape)
    shapes = input_shape if several else [input_shape]
    made.build_on(input_shape, cpu, rng, "float64")
    made.needs_input_grad = True
    xs = [rng.normal(size=(batch, *shape)) for shape in shapes]

    def inputs(batches):
        return batches if made.takes_several else batches[0]

    output = np.asarray(made.forward(inputs([x.copy() for x in xs]), training=training))
    expected = (batch, *made.compute_output_shape(input_shape))
    assert output.shape == expected, (f"forward gives {output.shape}; compute_output_shape says "
                                      f"{expected}")
    g = rng.normal(size=expected)
    given = made.backward(g.copy())
    if made.takes_several:
        assert isinstance(given, (list, tuple)), (
            f"backward returns {reprlib.repr(given)}, not a list of one input gradient per "
            "input")
    input_grads = [None if grad is None else np.array(grad)
                   for grad in (given if made.takes_several else [given])]
    grads = [np.array(grad) for grad in made.grads]

    def loss() -> float:
        return float(np.sum(g * made.forward(inputs(xs), training=training)))

    assert len(input_grads) == len(xs), (f"backward returns {len(input_grads)} input "
                                         f"gradients for {len(xs)} inputs")
    for index, (x, grad_x) in enumerate(zip(xs, input_grads)):
        what = (f"the gradient of input {index} (what backward returns at [{index}])"
                if made.takes_several else "the input gradient (what backward returns)")
        _assert_gradient_close(what, grad_x, numerical_gradient(loss, x))
    for index, (param, grad) in enumerate(zip(made.params, grads)):
        name = made.weight_name(param)
        _assert_gradient_close(f"the gradient of weight {index} ({name}) in grads[{index}]",
                               grad, numerical_gradient(loss, param))
