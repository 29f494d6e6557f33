"""The training step captured once and replayed (dnn.step), on a CPU backend that replays as a
CUDA graph does (dnn/replay.py): the same bits as eager training, and the bugs a graph
turns into silent wrong answers caught by the replays' self-check, which then falls back to the
eager step."""

import warnings

import numpy as np
import pytest

import dnn
from dnn import step as step_module
from dnn.backends.gpu import GpuBackend
from dnn.layers import Dense
from dnn.optimizers import SGD
from dnn.step import GraphFallbackWarning, ReplayedStep, TrainingStep
from dnn.utils import to_categorical
from dnn.replay import ReplayBackend


class EagerReplayBackend(ReplayBackend):
    """The same arrays and kernels, never captured: the reference."""

    name = "replay-eager"

    def captures_steps(self):
        return False

    def capture(self, step):
        return None


def train(backend, optimizer="rmsprop", sparse=False, epochs=3):
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
                        batch_size=32)
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
        model = self.model
        x = model._gather("x_batch", self.x_data, self.indices)
        y = model._gather("y_batch", self.y_data, self.indices)
        loss_sum, output = model._train_step(x, y, self.loss)
        self.totals.loss = self.totals.loss + loss_sum
        self.totals.correct += model.backend.correct_count(output, y)


class ReadsIndicesOnTheHost(TrainingStep):
    """Copies the batch's indices to a host array before gathering: replays keep gathering
    the batch of the capture (a stale batch)."""

    def __call__(self):
        indices = self.indices
        self.indices = self.model.backend.asarray(np.array(indices.view(np.ndarray)))
        try:
            super().__call__()
        finally:
            self.indices = indices


class DecaysWithTheStepCount(SGD):
    """An optimizer plugin that reads ``self.iterations``, a host number, in its update:
    replays keep the count of the capture."""

    def update(self, param, grad, state):
        param -= (self.learning_rate / self.iterations) * grad


class ReadsTheGradientOnTheHost(SGD):
    """An optimizer plugin that reads a value on the host: it cannot be captured."""

    def update(self, param, grad, state):
        if float(self.xp.max(self.xp.abs(grad))) > 0:
            param -= self.learning_rate * grad


PLANTED = {  # name: (TrainingStep class, optimizer, what the fallback warning says)
    "allocates its output anew": (RebindsTotals, "rmsprop", "differs from the eager step"),
    "reads a stale batch": (ReadsIndicesOnTheHost, "rmsprop", "differs from the eager step"),
    "bakes in a host number": (TrainingStep, lambda: DecaysWithTheStepCount(0.1),
                               "replay 2 differs from the eager step"),
    "reads on the host": (TrainingStep, lambda: ReadsTheGradientOnTheHost(0.1),
                          "capturing it failed: a value was read on the host"),
}


def planted_runs(monkeypatch, name):
    """``(replayed run, eager run)`` with the planted bug ``name``."""
    step_class, optimizer = PLANTED[name][:2]
    make = optimizer if callable(optimizer) else (lambda: optimizer)
    monkeypatch.setattr(dnn.model, "TrainingStep", step_class)
    return train(ReplayBackend(), make()), train(EagerReplayBackend(), make())


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
