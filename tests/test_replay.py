"""The training step captured once and replayed (dnn.step), on a CPU backend that replays as a
CUDA graph does (dnn/replay.py): the same bits as eager training, and the bugs a graph
turns into silent wrong answers caught by the replays' self-check, which then falls back to the
eager step."""

import contextlib
import warnings

import numpy as np
import pytest

import dnn
import dnn.trainers.trainer
from dnn.trainers import step as step_module
from dnn.backends.gpu import GpuBackend
from dnn.layers import Dense
from dnn.optimizers import SGD
from dnn.replay import EagerReplayBackend, ReplayBackend
from dnn.trainers.step import GraphFallbackWarning, ReplayedStep, TrainingStep
from dnn.testing import LowerTheRateEachBatch
from dnn.utils import to_categorical
from tests import test_merging


def train(backend, optimizer="rmsprop", sparse=False, epochs=3, callbacks=()):
    """``(history, weights)`` of a small network trained on ``backend`` from seed 0, 200
    samples in batches of 32 (six full batches and a partial one an epoch)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    labels = rng.integers(0, 3, size=200)
    model = dnn.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=backend)
    loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    history = model.fit(x, labels if sparse else to_categorical(labels, 3), epochs=epochs,
                        batch_size=32, callbacks=list(callbacks))
    return history.history, model.get_weights()


def assert_same_run(ours, reference):
    assert ours[0] == reference[0]
    for mine, theirs in zip(ours[1], reference[1]):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("optimizer, sparse", [
    ("rmsprop", False), ("rmsprop", True), (lambda: SGD(momentum=0.9, nesterov=True), False),
    ("adam", False)], ids=["rmsprop", "rmsprop-labels", "sgd-nesterov", "adam"])
def test_replayed_training_is_eager_training_bit_for_bit(optimizer, sparse):
    """Adam's step size changes every step: it reaches the captured step through a device
    array written before each run, not as a number frozen at capture time."""
    make = optimizer if callable(optimizer) else (lambda: optimizer)
    backend = ReplayBackend()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(backend, make(), sparse)
    assert backend.replays == 3 * 6 - 1  # every full batch but the first, a warm-up
    assert_same_run(replayed, train(EagerReplayBackend(), make(), sparse))


def test_dropout_draws_anew_in_every_replay_as_in_every_eager_step():
    """Its counter lives on the device: a replayed step advances it as the eager one does."""
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(200, 12)).astype(np.float32), rng.integers(0, 3, size=200)
    runs = []
    for backend in (ReplayBackend(), EagerReplayBackend()):
        model = dnn.Sequential([Dense(16, activation="relu"), dnn.layers.Dropout(0.5),
                                Dense(3, activation="softmax")], seed=0, backend=backend)
        model.compile(loss="sparse_categorical_crossentropy")
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphFallbackWarning)
            history = model.fit(x, labels, batch_size=32, epochs=3, verbose=0)
        runs.append((history.history, model.get_weights()))
    assert_same_run(*runs)


# -- the bugs a graph makes silent, planted -----------------------------------------------------
class RebindsTotals(TrainingStep):
    """Adds the batch loss into a new array bound to the name (allocates its output anew):
    replays keep adding into the array made at capture time from the one before it."""

    def __call__(self):
        trainer = self.trainer
        x = trainer.gather("x_batch", self.data.x, self.indices)
        y = trainer.gather("y_batch", self.data.y, self.indices)
        loss_sum, _ = trainer.compute_gradients(x, y)
        trainer.apply_gradients()
        trainer._loss_total = trainer._loss_total + loss_sum


class ReadsIndicesOnTheHost(TrainingStep):
    """Copies the batch's indices to a host array before gathering: replays keep gathering
    the batch of the capture (a stale batch)."""

    def __call__(self):
        indices = self.indices
        self.indices = self.trainer.backend.asarray(np.array(indices.view(np.ndarray)))
        try:
            super().__call__()
        finally:
            self.indices = indices


class TakesTheRateOnTheHost(SGD):
    """An optimizer plugin that takes its learning rate as a host number (from its config):
    replays keep the rate of the capture while a callback lowers it after every batch
    (``self.learning_rate``, on the device, follows)."""

    def update(self, param, grad, state):
        param -= self.get_config()["learning_rate"] * grad



class ReadsTheGradientOnTheHost(SGD):
    """An optimizer plugin that reads a value on the host: it cannot be captured."""

    def update(self, param, grad, state):
        if float(self.xp.max(self.xp.abs(grad))) > 0:
            param -= self.learning_rate * grad


PLANTED = {  # name: (TrainingStep class, optimizer, what the fallback warning says)
    "allocates its output anew": (RebindsTotals, "rmsprop", "differs from the eager step"),
    "reads a stale batch": (ReadsIndicesOnTheHost, "rmsprop", "differs from the eager step"),
    "bakes in a host number": (TrainingStep, lambda: TakesTheRateOnTheHost(0.1),
                               "replay 2 differs from the eager step"),
    "reads on the host": (TrainingStep, lambda: ReadsTheGradientOnTheHost(0.1),
                          "capturing it failed: a value was read on the host"),
}


def planted_runs(monkeypatch, name):
    """``(replayed run, eager run)`` with the planted bug ``name``, the learning rate lowered
    after every batch."""
    step_class, optimizer = PLANTED[name][:2]
    make = optimizer if callable(optimizer) else (lambda: optimizer)
    monkeypatch.setattr(dnn.trainers.trainer, "TrainingStep", step_class)
    return tuple(train(backend, make(), callbacks=[LowerTheRateEachBatch()])
                 for backend in (ReplayBackend(), EagerReplayBackend()))


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_the_self_check_catches_each_planted_bug_and_falls_back_to_the_same_bits(
        monkeypatch, name):
    with pytest.warns(GraphFallbackWarning, match=PLANTED[name][2]):
        replayed, eager = planted_runs(monkeypatch, name)
    assert_same_run(replayed, eager)


@pytest.mark.parametrize("name", sorted(set(PLANTED) - {"reads on the host"}))
def test_without_the_self_check_each_planted_bug_gives_a_wrong_answer(monkeypatch, name):
    """What a CUDA graph would do with these bugs: train on, silently wrong (a value read on
    the host cannot even be captured, so it needs no check)."""
    monkeypatch.setattr(ReplayedStep, "CHECKED_REPLAYS", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed, eager = planted_runs(monkeypatch, name)
    differs = replayed[0]["loss"] != eager[0]["loss"] or any(
        not np.array_equal(mine, theirs) for mine, theirs in zip(replayed[1], eager[1]))
    assert differs


def test_a_backend_without_capture_runs_every_step_eagerly_without_a_warning(cpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        history, _ = train(cpu)
    assert history["loss"][-1] < history["loss"][0]


def test_the_step_module_names_its_warning_for_users():
    assert issubclass(step_module.GraphFallbackWarning, UserWarning)


@pytest.mark.gpu
@pytest.mark.skipif(not GpuBackend.is_available(),
                    reason=f"backend gpu: {GpuBackend.is_available().reason}")
@pytest.mark.parametrize("optimizer, sparse", [("rmsprop", False), ("rmsprop", True),
                                               ("adam", False)])
def test_on_the_gpu_the_graph_trains_as_the_eager_step(monkeypatch, optimizer, sparse):
    """On a real GPU: no fallback, and the losses of eager training (DNN_GPU_GRAPHS=0, whose
    products are CuPy's) to rounding."""
    from dnn import backends

    gpu = backends.get_backend("gpu")
    monkeypatch.setenv("DNN_GPU_GRAPHS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(gpu, optimizer, sparse)
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    eager = train(gpu, optimizer, sparse)
    np.testing.assert_allclose(replayed[0]["loss"], eager[0]["loss"], rtol=1e-5)


def test_after_a_replayed_fit_train_on_batch_takes_adams_current_step_size():
    """fit keeps Adam's step size in a device array while it replays; afterwards a step
    outside fit must not read the last one fit wrote there."""
    x = np.random.default_rng(1).normal(size=(64, 12)).astype(np.float32)
    y = to_categorical(np.arange(64) % 3, 3)
    runs = []
    for backend in (ReplayBackend(), EagerReplayBackend()):
        model = dnn.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16)
        runs.append([model.train_on_batch(x, y) for _ in range(3)] + model.get_weights())
    for ours, theirs in zip(*runs):
        np.testing.assert_array_equal(ours, theirs)


# -- the capture machinery's own failures: the eager step, one warning, never an error ----------
class FailsAt(ReplayBackend):
    """A replaying backend whose capture machinery raises, as a GPU stack may, at one
    ``stage``: entering the kernels of a captured step for the warm-up (cuBLAS not found), or
    for the eager step a replay is checked against (a cuBLAS status error), the capture, or a
    replay."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage, self.kernel_entries = stage, 0

    @contextlib.contextmanager
    def graph_kernels(self):
        self.kernel_entries += 1
        if self.stage == "warm-up" or (self.stage == "check" and self.kernel_entries == 3):
            raise ValueError("cuBLAS status 13 (planted)")
        yield

    def capture(self, step):
        if self.stage == "capture":
            raise RuntimeError("cudaErrorStreamCaptureUnsupported (planted)")
        graph = super().capture(step)
        if self.stage == "replay":
            graph.replay = lambda: (_ for _ in ()).throw(OSError("launch failed (planted)"))
        return graph


@pytest.mark.parametrize("stage, reason", [
    ("warm-up", "its warm-up failed: ValueError: cuBLAS status 13"),
    ("capture", "capturing it failed: RuntimeError: cudaErrorStreamCaptureUnsupported"),
    ("check", "the eager step it is checked against failed: ValueError"),
    ("replay", "replaying it failed: OSError: launch failed")])
def test_a_failure_of_the_capture_machinery_falls_back_to_the_same_bits(stage, reason):
    """Nothing in the capture path ends a fit: one warning says why, and the run is the eager
    run bit for bit (the state before the failed stage is restored)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replayed = train(FailsAt(stage), "adam")
    fallbacks = [str(w.message) for w in caught if w.category is GraphFallbackWarning]
    assert len(fallbacks) == 1 and reason in fallbacks[0], fallbacks
    assert_same_run(replayed, train(EagerReplayBackend(), "adam"))


# -- hyper-parameters that change during fit reach the replays ---------------------------------
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam", lambda: SGD(0.1, momentum=0.9)],
                         ids=["rmsprop", "adam", "sgd-momentum"])
def test_a_learning_rate_changed_during_fit_reaches_the_replayed_step(optimizer):
    """A callback lowers the rate after every batch: the replayed run follows it bit for bit
    as the eager run does, without a fallback, and differs from a run at a constant rate."""
    make = optimizer if callable(optimizer) else (lambda: optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(ReplayBackend(), make(), callbacks=[LowerTheRateEachBatch()])
    eager = train(EagerReplayBackend(), make(), callbacks=[LowerTheRateEachBatch()])
    assert_same_run(replayed, eager)
    assert replayed[0]["loss"] != train(ReplayBackend(), make())[0]["loss"]


def test_the_optimizer_keeps_its_step_count_and_hyperparameters_on_the_device():
    """Always (not only while fit replays): a 0-d int64 step count and 0-d arrays of the
    weights' dtype, written in place, so a captured step reads what a callback set."""
    backend = ReplayBackend()
    model = dnn.Sequential([Dense(3, activation="softmax")], seed=0, backend=backend)
    model.compile(optimizer=dnn.optimizers.RMSprop(learning_rate=0.01, rho=0.8), loss="mse")
    model.build(4)
    optimizer = model.optimizer
    rate, count = optimizer.learning_rate, optimizer.iterations
    assert backend.is_own_array(rate) and rate.shape == () and rate.dtype == np.float32
    assert backend.is_own_array(count) and count.dtype == np.int64 and int(count) == 0
    optimizer.learning_rate = 0.5
    assert optimizer.learning_rate is rate and float(rate) == 0.5
    assert optimizer.get_config()["learning_rate"] == 0.5 and optimizer.get_config()["rho"] == 0.8
    model.train_on_batch(np.ones((2, 4), np.float32), np.eye(3, dtype=np.float32)[:2])
    assert optimizer.iterations is count and int(count) == 1
    with pytest.raises(dnn.errors.UsageError, match="learning_rate must be a finite number"):
        optimizer.learning_rate = float("nan")


def test_an_optimizer_built_again_keeps_its_hyperparameters_on_the_device():
    """One optimizer compiled into a second model (built twice): each float hyper-parameter
    is still a device array written in place, and its config still the numbers given."""
    backend = ReplayBackend()
    optimizer = dnn.optimizers.Adam(beta_1=0.8)
    for units in (3, 5):
        model = dnn.Sequential([Dense(units, activation="softmax")], seed=0, backend=backend)
        model.compile(optimizer=optimizer, loss="mse")
        model.build(4)
    beta_1 = optimizer.beta_1
    assert backend.is_own_array(beta_1) and optimizer.get_config()["beta_1"] == 0.8
    optimizer.beta_1 = 0.7
    assert optimizer.beta_1 is beta_1 and float(beta_1) == np.float32(0.7)


def test_a_schedule_is_given_when_the_optimizer_is_made_not_once_it_is_built():
    model = dnn.Sequential([Dense(3, activation="softmax")], seed=0, backend=ReplayBackend())
    model.compile(optimizer="sgd", loss="mse")
    model.build(4)
    schedule = dnn.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    with pytest.raises(dnn.errors.UsageError, match="give a learning-rate schedule when"):
        model.optimizer.learning_rate = schedule


class ScalesByAnIntegerSetting(SGD):
    """A plugin with a setting whose default is an int: it stays a host number, which a
    captured step bakes in."""

    def __init__(self, learning_rate=0.1, decay=0):
        super().__init__(learning_rate=learning_rate)
        self.decay = decay

    def update(self, param, grad, state):
        param -= self.learning_rate * (1 - self.decay) * grad


class SetsASettingFromEpoch(dnn.callbacks.Callback):
    """Sets the optimizer's ``name`` to ``value`` at the start of every epoch from the
    second on (a change once, then the same value again)."""

    def __init__(self, name, value):
        super().__init__()
        self.name, self.value = name, value

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= 1:
            setattr(self.model.optimizer, self.name, self.value)


class CountsCaptures(ReplayBackend):
    captures = 0

    def capture(self, step):
        self.captures += 1
        return super().capture(step)


@pytest.mark.parametrize("optimizer, name, value", [
    (ScalesByAnIntegerSetting, "decay", 0.5),
    (lambda: SGD(0.05, momentum=0.9), "nesterov", True)], ids=["integer-default", "bool"])
def test_a_host_setting_changed_during_fit_has_the_step_captured_again(optimizer, name, value):
    """A setting that is no device array (an int or bool default) changed by a callback: the
    graph that baked in the old value is dropped and the step captured (and checked) again,
    once per change, so the replayed run is the eager one bit for bit."""
    backend = CountsCaptures()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(backend, optimizer(), callbacks=[SetsASettingFromEpoch(name, value)])
    assert backend.captures == 2  # at the start, and once after the change (not after a
    # setting given its value again)
    eager = train(EagerReplayBackend(), optimizer(), callbacks=[SetsASettingFromEpoch(name,
                                                                                      value)])
    assert_same_run(replayed, eager)
    assert replayed[0]["loss"] != train(EagerReplayBackend(), optimizer())[0]["loss"]


class FreezesThenThaws(dnn.callbacks.Callback):
    """Freezes the first layer at the start of the second epoch and makes it trainable
    again at the third's, or, with ``regularizer``, scales its kernel's L2 factor at each."""

    def __init__(self, regularizer=False):
        super().__init__()
        self.regularizer = regularizer

    def on_epoch_begin(self, epoch, logs=None):
        first = self.model.layers[0]
        if self.regularizer and epoch:
            first.param_regularizers()[0].l2 *= 10
        elif epoch:
            first.trainable = epoch != 1


@pytest.mark.parametrize("regularizer", [False, True], ids=["trainable", "regularizer"])
def test_a_layer_frozen_or_regularized_otherwise_during_fit_has_the_step_captured_again(
        regularizer):
    """``trainable`` and a regularizer's factors are read on the host: a graph captured
    before a callback changed one would train on as before; the step is captured again at
    each change, and the run is the eager one bit for bit."""
    def run(backend):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 12)).astype(np.float32)
        y = to_categorical(rng.integers(0, 3, size=200), 3)
        model = dnn.Sequential([Dense(16, activation="relu", kernel_regularizer="l2"),
                                Dense(3, activation="softmax")], seed=0, backend=backend)
        model.compile("rmsprop", "categorical_crossentropy")
        weights = []
        model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[
            FreezesThenThaws(regularizer),
            dnn.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()[0]))])
        return model.history.history, weights

    backend = CountsCaptures()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        history, weights = run(backend)
    assert backend.captures == 3
    reference, expected = run(EagerReplayBackend())
    assert history == reference
    assert all(mine.tobytes() == theirs.tobytes() for mine, theirs in zip(weights, expected))
    assert np.array_equal(weights[0], weights[1]) != regularizer  # frozen in the second epoch


class SetsWithoutChanging(dnn.callbacks.Callback):
    """At every batch: gives the first layer's regularizer its factor again (an equal float),
    and makes a frozen layer that is in no model."""

    def on_train_batch_begin(self, batch, logs=None):
        regularizer = self.model.layers[0].param_regularizers()[0]
        regularizer.l2 = regularizer.l2 * 1.0
        Dense(2, trainable=False)


def test_a_setting_given_its_value_again_or_a_layer_in_no_model_captures_nothing_anew():
    backend = CountsCaptures()
    rng = np.random.default_rng(0)
    model = dnn.Sequential([Dense(16, activation="relu", kernel_regularizer="l2"),
                            Dense(3, activation="softmax")], seed=0, backend=backend)
    model.compile("rmsprop", "categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        model.fit(rng.normal(size=(200, 12)).astype(np.float32),
                  to_categorical(rng.integers(0, 3, size=200), 3), epochs=2, batch_size=32,
                  verbose=0, callbacks=[SetsWithoutChanging()])
    assert backend.captures == 1 and backend.replays == 2 * 6 - 1  # but the warm-up


class WarmsUpIn(CountsCaptures):
    """A backend whose capture memory is warm after ``runs`` warm-ups (None: never); each
    warm-up asks once."""

    def __init__(self, runs):
        super().__init__()
        self.runs, self.warm_ups = runs, 0

    def warmed_up(self) -> bool:
        self.warm_ups += 1
        return self.runs is not None and self.warm_ups >= self.runs


@pytest.mark.parametrize("runs, warm_ups", [(1, 1), (2, 2), (None, ReplayedStep.WARM_UPS_AT_MOST)])
def test_the_step_is_warmed_up_until_its_capture_would_take_no_new_memory(runs, warm_ups):
    """A warm-up that still took new memory for the capture is followed by another, up to
    a bound (then the capture may take some, which CUDA allows); the replayed run is the
    eager one bit for bit."""
    backend = WarmsUpIn(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(backend)
    assert backend.captures == 1 and backend.warm_ups == warm_ups
    assert backend.replays == 3 * 6 - warm_ups  # every full batch but the warm-ups
    assert_same_run(replayed, train(EagerReplayBackend()))


class CountsItsSteps(SGD):
    """A plugin that keeps a host number of its own from step to step, in a setting of its
    ``__init__`` (against the plugin contract)."""

    def __init__(self, learning_rate=0.1, calls=0):
        super().__init__(learning_rate=learning_rate)
        self.calls = calls

    def begin_step(self):
        self.calls += 1


def test_a_step_that_changes_a_host_setting_itself_runs_eagerly_with_a_warning():
    """It would need a capture at every step: after its warm-up it runs eagerly, once warned,
    and trains as the eager run does."""
    backend = CountsCaptures()
    with pytest.warns(GraphFallbackWarning, match="its run changes a setting it reads on the "
                                                  "host") as caught:
        replayed = train(backend, CountsItsSteps())
    assert len([w for w in caught if issubclass(w.category, GraphFallbackWarning)]) == 1
    assert backend.captures == 0 and backend.replays == 0
    assert_same_run(replayed, train(EagerReplayBackend(), CountsItsSteps()))


class RebindsTheParameter(SGD):
    def update(self, param, grad, state):
        param = param - self.learning_rate * grad  # noqa: F841 (the planted bug)


def test_a_plugin_breaking_its_contract_is_an_error_on_a_capturing_backend_too():
    """The warm-up's contract check is the user's to see, not a capture failure."""
    with pytest.raises(dnn.errors.OptimizerError, match="left every parameter as it was"):
        train(ReplayBackend(), RebindsTheParameter(0.1))


@pytest.mark.parametrize("model", test_merging.GRAPH_MODELS)
def test_a_model_whose_layers_make_a_graph_replays_as_its_eager_steps_bit_for_bit(model):
    """Outputs taken by several layers get their gradients summed in the model's buffers;
    Maximum's and Minimum's picks are masks, and Dot's terms and norms arrays, in buffers
    of their own; each input's rows are gathered into a buffer of its own: a replay
    computes them into the same arrays."""
    make, data, loss = test_merging.GRAPH_MODELS[model]
    (x, y), replaying = data(rows=200), ReplayBackend()
    replayed = test_merging.residual_run(replaying, x, y, make, loss)
    assert replaying.replays == 3 * 6 - 1
    assert_same_run(replayed, test_merging.residual_run(EagerReplayBackend(), x, y, make, loss))
