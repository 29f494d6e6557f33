"""dnn.callbacks.TensorBoard: the event files read back with TensorBoard's own reader and
served by the real ``tensorboard`` server, against History and the backend's gradients, on
the cpu backend and through the gpu stand-in."""

import errno
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings

import numpy as np
import pytest

import dnn
from dnn import backends
from dnn.backends.gpu import GpuBackend
from dnn.callbacks import (BatchLogs, Callback, LambdaCallback, LearningRateScheduler,
                           TensorBoard)
from dnn.errors import ArgumentTypeError, DnnError, FileWriteError, UsageError
from dnn.layers import BatchNormalization, Dense, Dropout
from dnn.saving import fileio
from dnn.trainers.step import GraphFallbackWarning
from dnn.trainers.trainer import Trainer
from dnn.utils import to_categorical
from tests import test_gpu_standin as standin

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                reason="the tensorboard package is not installed: "
                                       "pip install 'dnn-framework[tensorboard]'")

# the gpu stand-in's fixtures (CuPy's stand-in over a stub cuBLAS), as its own tests use them
site, cupy = standin.site, standin.cupy

EPOCHS = 3
STEPS = 5  # batches an epoch: 150 training samples in batches of 32, the last of 22
LAYERS = ("hidden", "output")


@pytest.fixture(params=["cpu", pytest.param("gpu stand-in", marks=standin.pytestmark)])
def backend(request):
    """The cpu backend, and the gpu backend on CuPy's stand-in (its steps captured and
    replayed): the conftest's ``backend``, with the stand-in."""
    if request.param == "cpu":
        return backends.get_backend("cpu")
    request.getfixturevalue("cupy")
    return GpuBackend()


def graph_launches(backend) -> int:
    """The CUDA graphs launched so far on CuPy's stand-in; 0 on the cpu backend."""
    return sys.modules["cupy"].cuda.graph.launches if isinstance(backend, GpuBackend) else 0


def data():
    """``(x, y)``: 200 samples of 12 features in 3 classes, one-hot."""
    rng = np.random.default_rng(0)
    return (rng.normal(size=(200, 12)).astype(np.float32),
            to_categorical(rng.integers(0, 3, size=200), 3))


def train(backend, callbacks=(), epochs=EPOCHS, optimizer="rmsprop"):
    """``(model, history)`` of a small network trained from seed 0 with a validation split:
    of the 200 samples of :func:`data`, 150 train in batches of 32."""
    x, y = data()
    model = dnn.Sequential([Dense(16, activation="relu", name=LAYERS[0]),
                            Dense(3, activation="softmax", name=LAYERS[1])],
                           seed=0, backend=backend)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.25,
                        callbacks=list(callbacks), verbose=0)
    return model, history


def events(folder):
    """TensorBoard's own reader (the server's) over the event files of one run."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def tags(accumulator, plugin: str) -> set:
    """The tags of ``plugin`` (``scalars``, ``histograms``): what its dashboard shows."""
    try:
        return set(accumulator.PluginTagToContent(plugin))
    except KeyError:  # nothing of that plugin in the run
        return set()


def series(accumulator, tag: str) -> list:
    """``[(step, value), ...]`` of a tag: a scalar's float32, a histogram's buckets ``(k, 3)``
    (left edge, right edge, count)."""
    from tensorboard.util import tensor_util

    return [(event.step, tensor_util.make_ndarray(event.tensor_proto))
            for event in accumulator.Tensors(tag)]


def assert_scalars(accumulator, tag: str, steps, values) -> None:
    """The scalar ``tag`` holds ``values`` at ``steps``, as float32 (TensorBoard's)."""
    read = series(accumulator, tag)
    assert [step for step, _ in read] == list(steps), tag
    assert [float(value) for _, value in read] == [float(np.float32(v)) for v in values], tag


def paths(model) -> dict:
    """``{"sequential/hidden/kernel": (layer index, weight index), ...}``: Keras 3's
    ``weight.path`` of the Dense weights of :func:`train`'s model."""
    return {f"sequential/{layer.name}/{name}": (i, j) for i, layer in enumerate(model.layers)
            for j, name in enumerate(("kernel", "bias"))}


# -- figures, weights and gradients ------------------------------------------------------------
def test_epoch_figures_are_historys_in_keras_runs_and_names(tmp_path):
    _, history = train("cpu", [TensorBoard(tmp_path)])
    figures, epochs = history.history, range(EPOCHS)
    train_run, validation = events(tmp_path / "train"), events(tmp_path / "validation")
    assert tags(train_run, "scalars") == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert tags(validation, "scalars") == {"epoch_loss", "epoch_accuracy",
                                           "evaluation_loss_vs_iterations",
                                           "evaluation_accuracy_vs_iterations"}
    for name in ("loss", "accuracy"):
        assert_scalars(train_run, f"epoch_{name}", epochs, figures[name])
        assert_scalars(validation, f"epoch_{name}", epochs, figures[f"val_{name}"])
        iterations = [STEPS * (epoch + 1) for epoch in epochs]
        assert_scalars(validation, f"evaluation_{name}_vs_iterations", iterations,
                       figures[f"val_{name}"])
    assert_scalars(train_run, "epoch_learning_rate", epochs, [0.001] * EPOCHS)
    assert tags(train_run, "histograms") == set()
    assert not (tmp_path / "test").exists()


def test_the_learning_rate_is_the_optimizers_of_each_epoch(tmp_path):
    schedule = LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1))
    train("cpu", [schedule, TensorBoard(tmp_path)])
    assert_scalars(events(tmp_path / "train"), "epoch_learning_rate", range(EPOCHS),
                   [0.01, 0.005, 0.01 / 3])


class RatesAtBatchEnd(Callback):
    """The optimizer's learning rate read from the device at the end of every batch of the fit
    (after the TensorBoard callback's hook when listed after it): ``rates[g]`` for the fit's
    batch ``g``, from 1."""

    def on_train_begin(self, logs=None):
        self.rates = {}

    def on_train_batch_end(self, batch, logs=None):
        self.rates[len(self.rates) + 1] = float(self.model.optimizer.learning_rate)


def test_batch_learning_rate_steps_where_a_schedule_changes_it(tmp_path):
    """Besides the batches written (every 4th), at the first, and where the schedule changes
    the rate (step 8, the tenth batch), with the old rate at the batch before: the values the
    schedule gives the batches' steps, and the optimizer holds."""
    schedule = dnn.optimizers.schedules.PiecewiseConstantDecay([8], [0.01, 0.002])
    seen = RatesAtBatchEnd()
    train("cpu", [TensorBoard(tmp_path, update_freq=4), seen],
          optimizer=dnn.optimizers.RMSprop(learning_rate=schedule))
    run = events(tmp_path / "train")
    steps = [1, 4, 8, 9, 10, 12]
    assert_scalars(run, "batch_learning_rate", steps, [0.01] * 4 + [0.002] * 2)
    assert_scalars(run, "batch_learning_rate", steps, [schedule(step - 1) for step in steps])
    assert_scalars(run, "batch_learning_rate", steps, [seen.rates[step] for step in steps])
    assert_scalars(run, "epoch_learning_rate", range(EPOCHS), [0.01, 0.002, 0.002])


def test_batch_learning_rate_steps_where_a_callback_changes_it(tmp_path):
    """A rate a callback sets at each epoch's start: the change shows at the epoch's first
    batch, the old rate at the batch before."""
    schedule = LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1))
    train("cpu", [schedule, TensorBoard(tmp_path, update_freq=4)])
    run = events(tmp_path / "train")
    assert_scalars(run, "batch_learning_rate", [1, 4, 5, 6, 8, 10, 11, 12],
                   [0.01] * 3 + [0.005] * 3 + [0.01 / 3] * 2)


def test_a_constant_rate_is_written_with_the_batch_figures_and_every_epoch(tmp_path):
    """Keras' epoch_learning_rate every epoch (a flat line), and batch_learning_rate at the
    first batch and with every batch's figures written, no more."""
    train("cpu", [TensorBoard(tmp_path, update_freq=3)])
    run = events(tmp_path / "train")
    steps = [1, *range(3, STEPS * EPOCHS + 1, 3)]
    assert_scalars(run, "batch_learning_rate", steps, [0.001] * len(steps))
    assert_scalars(run, "epoch_learning_rate", range(EPOCHS), [0.001] * EPOCHS)
    assert [step for step, _ in series(run, "batch_loss")] == steps[1:]


def test_batch_learning_rate_of_every_step_is_computed_on_the_host(tmp_path, backend,
                                                                   monkeypatch):
    """A schedule that changes the rate every step, no batch figures due (update_freq beyond
    the run): a point every batch, the rate the optimizer used, with no read of the device in
    the callback's batch hooks (counted on the gpu stand-in) and the steps still captured."""
    schedule = dnn.optimizers.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.5)
    board, seen = TensorBoard(tmp_path, update_freq=1000), RatesAtBatchEnd()
    reads, hooks = [], []
    if isinstance(backend, GpuBackend):
        ndarray = sys.modules["cupy"].ndarray
        get = ndarray.get
        monkeypatch.setattr(ndarray, "get", lambda self, *args, **kwargs:
                            reads.append(bool(hooks)) or get(self, *args, **kwargs))
    for name in ("on_train_batch_begin", "on_train_batch_end"):
        def hook(batch, logs=None, method=getattr(board, name)):
            hooks.append(True)
            try:
                method(batch, logs=logs)
            finally:
                hooks.pop()
        monkeypatch.setattr(board, name, hook)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        train(backend, [board, seen], optimizer=dnn.optimizers.RMSprop(learning_rate=schedule))
    assert (graph_launches(backend) > 0) == isinstance(backend, GpuBackend)
    assert (len(reads) > 0) == isinstance(backend, GpuBackend)  # the counter counts
    assert True not in reads  # none in the TensorBoard callback's batch hooks
    read = series(events(tmp_path / "train"), "batch_learning_rate")
    steps = range(1, STEPS * EPOCHS + 1)
    assert [step for step, _ in read] == list(steps)
    np.testing.assert_allclose([float(value) for _, value in read],
                               [seen.rates[step] for step in steps], rtol=1e-6)
    np.testing.assert_allclose([float(value) for _, value in read],
                               [schedule(step - 1) for step in steps], rtol=1e-6)
    assert len(set(seen.rates.values())) == len(steps)  # a new rate every step


def test_the_callback_says_it_writes_files():
    """What tells the data-parallel fit to run it on rank 0 alone."""
    assert TensorBoard.writes_files is True


def test_weight_histograms_every_n_epochs_count_every_weight(tmp_path):
    model, _ = train("cpu", [TensorBoard(tmp_path, histogram_freq=2)])
    run = events(tmp_path / "train")
    assert tags(run, "histograms") == {f"{path}/histogram" for path in paths(model)}
    for path, (i, j) in paths(model).items():
        read = series(run, f"{path}/histogram")
        assert [step for step, _ in read] == [0, 2]
        weights = model.layers[i].get_weights()[j]  # the last histogram's: epoch 2 ended fit
        buckets = read[-1][1]
        assert buckets[:, 2].sum() == weights.size
        assert (buckets[0, 0], buckets[-1, 1]) == (weights.min(), weights.max())


def test_histograms_are_keras_3s_tags_for_every_weight_trained_or_not(tmp_path):
    """Keras 3's tags (``weight.path`` + ``/histogram``, the model's name first) for every
    weight of every layer: BatchNormalization's moving statistics too, which no gradient
    moves; the gradient figures under the same paths, for the trained weights alone (real
    Keras 3 writes these histogram tags for the same model: ``sequential/dense/kernel``,
    ``sequential/batch_normalization/moving_mean``, ...)."""
    rng = np.random.default_rng(0)
    model = dnn.Sequential([Dense(8, activation="relu", name="dense"),
                            BatchNormalization(name="batch_normalization"),
                            Dropout(0.1, name="dropout"),
                            Dense(2, activation="softmax", name="dense_1")], seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(rng.normal(size=(20, 3)), to_categorical(rng.integers(0, 2, 20), 2), verbose=0,
              epochs=2, callbacks=[TensorBoard(tmp_path, histogram_freq=1, gradient_freq=1)])
    run = events(tmp_path / "train")
    weights = {"dense": ("kernel", "bias"), "dense_1": ("kernel", "bias"),
               "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance")}
    every = [f"sequential/{layer}/{name}" for layer, names in weights.items() for name in names]
    trained = [path for path in every if not path.endswith(("moving_mean", "moving_variance"))]
    assert tags(run, "histograms") == ({f"{path}/histogram" for path in every}
                                       | {f"{path}/gradient_histogram" for path in trained})
    assert tags(run, "scalars") - {"epoch_loss", "epoch_learning_rate"} == {
        f"{path}/{signal}" for path in trained for signal in ("gradient_norm", "update_ratio")}
    layer = model.layers[1]
    for name, weight in zip(("moving_mean", "moving_variance"), layer.state_weights):
        read = series(run, f"sequential/batch_normalization/{name}/histogram")
        assert [step for step, _ in read] == [0, 1]
        host = model.backend.to_numpy(weight)
        assert read[-1][1][:, 2].sum() == host.size
        assert (read[-1][1][0, 0], read[-1][1][-1, 1]) == (host.min(), host.max())


def test_the_model_name_leads_the_weight_tags(tmp_path):
    rng = np.random.default_rng(0)
    model = dnn.Sequential([Dense(2, activation="softmax", name="out")], name="net", seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(rng.normal(size=(8, 3)), to_categorical(rng.integers(0, 2, 8), 2), verbose=0,
              callbacks=[TensorBoard(tmp_path, histogram_freq=1, gradient_freq=1)])
    run = events(tmp_path / "train")
    assert tags(run, "histograms") == {"net/out/kernel/histogram", "net/out/bias/histogram",
                                       "net/out/kernel/gradient_histogram",
                                       "net/out/bias/gradient_histogram"}
    assert "net/out/kernel/gradient_norm" in tags(run, "scalars")


class KeepWeightsBeforeTheLastStep(Callback):
    """Keeps host copies of the weights before each epoch's last step, in ``weights``."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == STEPS - 1:
            self.weights = self.model.get_weights()


def test_gradient_figures_are_the_backends_gradients_of_the_last_step(tmp_path, backend):
    """Gradient norms from the layers' ``grads``, the update ratio from the weights before the
    last step (kept by a callback of the test's own); on the gpu stand-in the steps stay
    captured, and training is the same as without the callback."""
    before = KeepWeightsBeforeTheLastStep()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        model, history = train(backend, [TensorBoard(tmp_path, gradient_freq=2), before])
        launches = graph_launches(backend)
        _, reference = train(backend)
    assert history.history == reference.history
    assert graph_launches(backend) == 2 * launches
    assert (launches > 0) == isinstance(backend, GpuBackend)
    run = events(tmp_path / "train")
    signals = ("gradient_norm", "update_ratio")
    assert tags(run, "scalars") - {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} == {
        f"{path}/{signal}" for path in paths(model) for signal in signals}
    assert tags(run, "histograms") == {f"{path}/gradient_histogram" for path in paths(model)}
    weights = model.get_weights()
    for path, (i, j) in paths(model).items():
        gradient = backend.to_numpy(model.layers[i].grads[j])
        old = before.weights[2 * i + j]
        norm = series(run, f"{path}/gradient_norm")
        ratio = series(run, f"{path}/update_ratio")
        histogram = series(run, f"{path}/gradient_histogram")
        assert [step for step, _ in norm] == [step for step, _ in ratio] == [0, 2]
        np.testing.assert_allclose(norm[-1][1], np.linalg.norm(gradient.astype(np.float64)),
                                   rtol=1e-6)
        np.testing.assert_allclose(ratio[-1][1], np.linalg.norm(weights[2 * i + j] - old)
                                   / np.linalg.norm(old), rtol=1e-5)
        assert histogram[-1][1][:, 2].sum() == gradient.size


def test_a_frozen_layer_has_weight_histograms_but_no_gradient_figures(tmp_path):
    rng = np.random.default_rng(0)
    model = dnn.Sequential([Dense(4, activation="relu", name="frozen", trainable=False),
                            Dense(2, activation="softmax", name="trained")], seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(rng.normal(size=(20, 3)), to_categorical(rng.integers(0, 2, 20), 2), verbose=0,
              callbacks=[TensorBoard(tmp_path, histogram_freq=1, gradient_freq=1)])
    run = events(tmp_path / "train")
    histograms, scalars = tags(run, "histograms"), tags(run, "scalars")
    assert {tag for tag in histograms | scalars if tag.startswith("sequential/frozen/")} == {
        "sequential/frozen/kernel/histogram", "sequential/frozen/bias/histogram"}
    assert {"sequential/trained/kernel/gradient_histogram",
            "sequential/trained/kernel/gradient_norm",
            "sequential/trained/kernel/update_ratio"} <= histograms | scalars


def keras_summaries(folder) -> list:
    """``[(step, summary value), ...]`` of the tag ``keras`` in the event files of a run, as
    written (TensorBoard's reader, without the migrations its server applies)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    found = []
    for name in sorted(os.listdir(folder)):
        for record in RawEventFileLoader(os.path.join(folder, name)).Load():
            event = Event.FromString(record)
            found += [(event.step, value) for value in event.summary.value
                      if value.tag == "keras"]
    return found


def test_write_graph_writes_the_model_as_keras_model_summary_does(tmp_path):
    """Keras' ``keras_model_summary("keras", model, step=0)``: in the train run at step 0,
    one string tensor, the plugin ``graph_keras_model`` (version b"1"), which TensorBoard's
    server draws as the run's conceptual graph; the text is the model's config laid out as
    Keras' ``to_json`` lays it out."""
    from tensorboard.compat.proto import types_pb2

    model, _ = train("cpu", [TensorBoard(tmp_path)])
    (step, value), = keras_summaries(tmp_path / "train")
    assert step == 0
    assert value.metadata.plugin_data.plugin_name == "graph_keras_model"
    assert value.metadata.plugin_data.content == b"1"
    assert value.tensor.dtype == types_pb2.DT_STRING
    assert list(value.tensor.tensor_shape.dim) == []  # a scalar
    (text,) = value.tensor.string_val
    layout = json.loads(text)
    assert layout["class_name"] == "Sequential" and layout["config"]["name"] == model.name
    ours = model.get_config()["layers"]
    assert [(layer["class_name"], layer["config"]["name"]) for layer in
            layout["config"]["layers"]] == [(config["class"], layer.name)
                                            for config, layer in zip(ours, model.layers)]
    assert layout["config"]["layers"][0]["config"]["units"] == ours[0]["units"]
    assert tags(events(tmp_path / "train"), "graph_keras_model") == {"keras"}
    assert not keras_summaries(tmp_path / "validation")


def test_without_write_graph_no_model_is_written(tmp_path):
    train("cpu", [TensorBoard(tmp_path, write_graph=False)], epochs=1)
    assert keras_summaries(tmp_path / "train") == []


def test_a_model_that_cannot_be_written_as_json_warns_and_trains(tmp_path, monkeypatch):
    """As in Keras: a warning, no ``keras`` tag, and the rest of the run written."""
    def fails(self, **kwargs):
        raise NotImplementedError("a layer without get_config")

    monkeypatch.setattr(dnn.Sequential, "get_config", fails)
    with pytest.warns(UserWarning, match=r"no model graph: the model failed to serialize as "
                                         r"JSON \(a layer without get_config\)"):
        train("cpu", [TensorBoard(tmp_path)], epochs=1)
    assert keras_summaries(tmp_path / "train") == []
    assert [step for step, _ in series(events(tmp_path / "train"), "epoch_loss")] == [0]


def test_batch_figures_every_n_batches_are_the_batch_logs(tmp_path):
    """At Keras' steps (batches trained in the fit, from 1), the batch's running means."""
    seen = {}
    count = LambdaCallback(on_train_batch_end=lambda batch, logs: seen.update(
        {len(seen) + 1: logs["loss"]}))
    train("cpu", [TensorBoard(tmp_path, update_freq=3, write_steps_per_second=True), count])
    run = events(tmp_path / "train")
    steps = range(3, STEPS * EPOCHS + 1, 3)
    assert_scalars(run, "batch_loss", steps, [seen[step] for step in steps])
    assert [step for step, _ in series(run, "batch_accuracy")] == list(steps)
    for tag in ("batch_steps_per_second", "epoch_steps_per_second"):
        assert all(value > 0 for _, value in series(run, tag))


def test_without_batch_figures_no_batch_logs_are_read(tmp_path, monkeypatch):
    """Weights and gradients every epoch, yet the device's figures are read once an epoch
    (and once a validation), as without the callback."""
    reads = []
    results = Trainer._results
    monkeypatch.setattr(Trainer, "_results",
                        lambda model, rows: reads.append(rows) or results(model, rows))
    train("cpu")
    without = len(reads)
    train("cpu", [TensorBoard(tmp_path, histogram_freq=1, gradient_freq=1)])
    assert len(reads) == 2 * without == 4 * EPOCHS
    board = TensorBoard(tmp_path / "unused")
    board.on_train_batch_end(0, logs=BatchLogs(lambda: pytest.fail("batch logs read")))


def test_each_epoch_is_on_disk_when_it_ends(tmp_path):
    """Read back while the run goes on, by a callback after it: a crash loses at most the
    epoch it was in."""
    seen = []

    def read_back(epoch, logs):
        seen.append([step for step, _ in series(events(tmp_path / "train"), "epoch_loss")])

    train("cpu", [TensorBoard(tmp_path), LambdaCallback(on_epoch_end=read_back)])
    assert seen == [[0], [0, 1], [0, 1, 2]]


def test_the_test_figures_of_dnn_train_are_a_run_of_their_own(tmp_path):
    board = TensorBoard(tmp_path)
    board.set_model(train("cpu", epochs=1)[0])
    board.on_train_begin()
    board.on_epoch_end(0, {"loss": 0.5, "test_loss": 0.25, "test_accuracy": 0.75})
    board.on_train_end()
    test = events(tmp_path / "test")
    assert_scalars(test, "epoch_loss", [0], [0.25])
    assert_scalars(test, "epoch_accuracy", [0], [0.75])


def test_an_evaluation_outside_fit_is_on_disk_in_the_validation_run_at_once(tmp_path):
    model, _ = train("cpu", epochs=1)
    board = TensorBoard(tmp_path)  # held: its files stay open
    loss, accuracy = model.evaluate(*data(), callbacks=[board], verbose=0)
    validation = events(tmp_path / "validation")
    assert_scalars(validation, "evaluation_loss_vs_iterations", [STEPS], [loss])
    assert_scalars(validation, "evaluation_accuracy_vs_iterations", [STEPS], [accuracy])


# -- arguments -------------------------------------------------------------------------------
def test_keras_arguments_that_do_nothing_here_warn_once_naming_them(tmp_path):
    with pytest.warns(UserWarning) as caught:
        TensorBoard(tmp_path, write_images=True, profile_batch=(2, 4), embeddings_freq=1,
                    embeddings_metadata="labels.tsv")
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "TensorBoard ignores write_images=True, profile_batch=(2, 4), embeddings_freq=1, "
        "embeddings_metadata='labels.tsv': dnn writes no weight images, profiling, the "
        "embedding projector")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        board = TensorBoard(tmp_path, write_graph=False, update_freq="batch")
    assert (board.write_graph, board.update_freq) == (False, 1)


@pytest.mark.parametrize("arguments, error, message", [
    ({"update_freq": 0}, UsageError, "update_freq must be 'epoch', 'batch' or a positive"),
    ({"update_freq": "step"}, UsageError, "update_freq"),
    ({"histogram_freq": -1}, UsageError, "histogram_freq must be an integer >= 0"),
    ({"gradient_freq": True}, UsageError, "gradient_freq must be an integer >= 0"),
    ({"write_steps_per_second": "yes"}, ArgumentTypeError, "write_steps_per_second must be"),
    ({"log_dir": 3}, ArgumentTypeError, "log_dir must be a path")])
def test_wrong_arguments_are_one_line_errors(tmp_path, arguments, error, message):
    with pytest.raises(error, match=re.escape(message)):
        TensorBoard(**{"log_dir": tmp_path, **arguments})


def test_without_tensorboard_the_error_names_the_extra(tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    with pytest.raises(DnnError) as raised:
        TensorBoard(tmp_path)
    assert str(raised.value) == ("the TensorBoard callback needs the tensorboard package: "
                                 "pip install 'dnn-framework[tensorboard]'")


# -- a log folder that cannot be written -----------------------------------------------------
@pytest.mark.parametrize("where", ["logs", "logs/deeper"])
def test_a_file_where_the_log_folder_should_be_fails_at_construction(tmp_path, where):
    (tmp_path / "logs").write_text("not a folder")
    with pytest.raises(UsageError, match="a file stands where its folder should be"):
        TensorBoard(tmp_path / where)


def access_as_a_user(monkeypatch) -> None:
    """Where the tests run as root, whom permission bits do not stop, ``os.access`` answers
    as for the folder's owner who is not root: no writing where the owner's write bit is off
    (the check dnn makes before making a folder in it)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return  # the permission bits stop this user: the real os.access
    access = os.access

    def as_a_user(path, mode, *args, **kwargs):
        if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
            return False
        return access(path, mode, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "access", as_a_user)


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX'")
@pytest.mark.parametrize("where", ["logs", "logs/deeper"])
def test_a_read_only_log_folder_is_one_error_before_training(tmp_path, monkeypatch, where):
    """Made read-only (mode 0555), the log folder fails at construction, with one line naming
    it, before any model trained (run as root too: see :func:`access_as_a_user`)."""
    access_as_a_user(monkeypatch)
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o555)
    try:
        with pytest.raises(UsageError) as raised:
            TensorBoard(tmp_path / where)
    finally:
        folder.chmod(0o755)
    target = tmp_path / where / "train" / "events.out.tfevents"
    assert str(raised.value) == (f"TensorBoard log_dir {target}: cannot write a file there "
                                 f"(cannot make a folder in {os.path.realpath(folder)})")
    assert list(folder.iterdir()) == []  # nothing made


def test_a_full_disk_fails_before_the_first_step(tmp_path, monkeypatch):
    """The first event, written when training begins, meets the full disk: one line, before
    any weight moved."""
    from tensorboard.summary.writer import record_writer

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    board = TensorBoard(tmp_path)
    monkeypatch.setattr(record_writer.RecordWriter, "write", disk_full)
    with pytest.raises(FileWriteError) as raised:
        train("cpu", [board])
    folder = tmp_path / "train"
    assert str(raised.value) == f"cannot write {folder}: No space left on device"
    assert raised.value.errno == errno.ENOSPC
    assert board.model.epochs_done == 0 and board.model.optimizer.iterations == 0


# -- the page a user opens -----------------------------------------------------------------
def start_server(log_dir, output, timeout=15.0):
    """``(process, url)`` of the real ``tensorboard --logdir`` on a free port of 127.0.0.1,
    its output in the file ``output``."""
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--port", "0",
             "--host", "127.0.0.1", "--load_fast", "false"], stdout=sink, stderr=sink)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(rb"http://127\.0\.0\.1:\d+/", output.read_bytes())
        if found:
            return process, found.group().decode()
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"tensorboard did not start: {output.read_text()}")


def fetch_scalars(url, run, tag, points, timeout=15.0) -> list:
    """``[[wall time, step, value], ...]`` of ``tag`` in ``run`` from the server's data API,
    once it has loaded ``points`` of them."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}data/plugin/scalars/scalars?{query}",
                                        timeout=timeout) as response:
                read = json.load(response)
            if len(read) == points:
                return read
        except urllib.error.HTTPError:  # the run is not loaded yet
            pass
        assert time.monotonic() < deadline, f"the server has no {points} {tag} of {run}"
        time.sleep(0.1)


def test_the_tensorboard_server_shows_the_run(tmp_path):
    _, history = train("cpu", [TensorBoard(tmp_path / "logs", gradient_freq=1)])
    process, url = start_server(tmp_path / "logs", tmp_path / "tensorboard.out")
    try:
        for run, prefix in (("train", ""), ("validation", "val_")):
            for name in ("loss", "accuracy"):
                read = fetch_scalars(url, run, f"epoch_{name}", EPOCHS)
                assert [step for _, step, _ in read] == list(range(EPOCHS))
                np.testing.assert_allclose([value for _, _, value in read],
                                           history.history[f"{prefix}{name}"], rtol=1e-7)
        with urllib.request.urlopen(f"{url}data/plugin/scalars/tags", timeout=15) as response:
            scalar_tags = json.load(response)
        assert "sequential/hidden/kernel/gradient_norm" in scalar_tags["train"]
        with urllib.request.urlopen(f"{url}data/plugin/graphs/info", timeout=15) as response:
            graphs = json.load(response)
        assert graphs["train"]["tags"]["keras"]["conceptual_graph"] is True
        query = urllib.parse.urlencode({"run": "train", "tag": "keras", "conceptual": "true"})
        with urllib.request.urlopen(f"{url}data/plugin/graphs/graph?{query}",
                                    timeout=15) as response:
            graph = response.read().decode()  # the GraphDef the Graphs tab draws
        assert graph.count('s: "Dense"') == 2 and 'name: "sequential/hidden"' in graph
    finally:
        process.kill()
        process.wait(timeout=15)


def test_dnn_train_tensorboard_writes_the_runs_epochs(tmp_path, install_fake_plugin):
    pytest.importorskip("tensorboard")
    from click.testing import CliRunner

    from dnn.cli import main
    from tests.test_cli import TINY_DATASET

    install_fake_plugin("fake-tiny", "1.0", {"dnn.datasets": {"tiny": "fake_tiny:Tiny"}},
                        {"fake_tiny": TINY_DATASET})
    logs = tmp_path / "logs"
    result = CliRunner().invoke(main, ["train", "--dataset", "tiny", "--epochs", "2", "--quiet",
                                       "--tensorboard", str(logs)])
    assert result.exit_code == 0, result.output
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train = EventAccumulator(str(logs / "train"), size_guidance={"tensors": 0}).Reload()
    assert [event.step for event in train.Tensors("epoch_loss")] == [0, 1]
    tags = train.Tags()["tensors"]
    assert any(re.fullmatch(r"sequential/\w+/kernel/gradient_norm", tag) for tag in tags)
    assert any(re.fullmatch(r"sequential/\w+/kernel/histogram", tag) for tag in tags)
    assert "keras" in tags
    test = EventAccumulator(str(logs / "test"), size_guidance={"tensors": 0}).Reload()
    assert [event.step for event in test.Tensors("epoch_accuracy")] == [0, 1]


def test_the_graph_of_a_model_whose_layers_join_again_is_drawn_as_it_computes(tmp_path):
    """TensorBoard's own reader of Keras models (the graph dashboard's) gives each layer the
    layers it takes."""
    from tensorboard.plugins.graph.keras_util import keras_model_to_graph_def
    from tests.test_merging import residual_model, toy_data

    model = residual_model("cpu")
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(*toy_data(), epochs=1, verbose=0, callbacks=[TensorBoard(tmp_path)])
    (_, value), = keras_summaries(tmp_path / "train")
    drawn = keras_model_to_graph_def(json.loads(value.tensor.string_val[0]))
    inputs = {node.name: list(node.input) for node in drawn.node}
    names = [f"{model.name}/{layer.name}" for layer in model.layers]  # scoped by the model
    assert inputs == {names[0]: [], **{
        name: [names[source] for source in sources]
        for name, sources in zip(names[1:], model.graph.inbound)}}
