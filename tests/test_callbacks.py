"""Keras' callbacks: hook names and arguments, EarlyStopping, ModelCheckpoint, History, the
printers behind ``fit(verbose=...)`` (driven batch by batch with a fake clock), and the
library's independence from the command line's toolkit."""

import io
import subprocess
import sys

import numpy as np
import pytest

import dnn
from dnn import callbacks
from dnn.callbacks import progbar_logger
from dnn.utils import to_categorical
from tests.test_model import blobs, seed_network


@pytest.fixture
def clock(monkeypatch):
    now = [10.0]
    monkeypatch.setattr(progbar_logger.time, "perf_counter", lambda: now[0])
    return now


def frames(stream: io.StringIO) -> list[str]:
    """Each redraw of the bar, without its padding."""
    return [frame.rstrip() for frame in stream.getvalue().replace("\n", "\r").split("\r")
            if frame.strip()]


def printer(kind, stream, epochs=2, steps=10):
    display = kind(stream)
    display.set_params({"epochs": epochs, "steps": steps, "verbose": 1})
    display.on_train_begin()
    return display


def test_the_bar_shows_steps_time_left_and_figures_then_the_summary_on_its_line(clock):
    stream = io.StringIO()
    display = printer(callbacks.ProgressBar, stream)
    display.on_epoch_begin(1)
    for batch in range(10):  # 0.1 s a batch; a redraw at most every 0.25 s
        clock[0] += 0.1
        display.on_train_batch_end(batch, {"loss": 0.5, "accuracy": 0.75})
    clock[0] += 0.2  # the validation
    display.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.4})
    drawn = frames(stream)
    assert drawn[0] == "Epoch 2/2"
    assert drawn[1] == f"1/10 [==>{'.' * 27}] - ETA: 0.9s - loss: 0.5000 - accuracy: 0.7500"
    assert drawn[2] == (f"4/10 [{'=' * 11}>{'.' * 18}] - ETA: 0.6s - loss: 0.5000 - accuracy: "
                        "0.7500")
    assert not any(frame.startswith("10/10 [=") and "ETA" in frame for frame in drawn)
    assert drawn[-1] == (f"10/10 [{'=' * 30}] - 1.2s 120ms/step - loss: 0.5000 - accuracy: "
                         "0.7500 - val_loss: 0.4000")
    assert stream.getvalue().endswith("val_loss: 0.4000\n")


def test_epoch_lines_are_keras_verbose_2(clock):
    stream = io.StringIO()
    display = printer(callbacks.EpochLines, stream, epochs=5, steps=3)
    display.on_epoch_begin(0)
    clock[0] += 0.6
    display.on_train_batch_end(0, {"loss": 1.0})
    display.on_epoch_end(0, {"loss": 0.1, "test_loss": 0.2})
    assert stream.getvalue() == ("Epoch 1/5\n3/3 - 0.6s 200ms/step - loss: 0.1000 - "
                                 "test_loss: 0.2000\n")


def test_a_bar_left_open_by_an_error_is_ended_when_training_ends(clock):
    """The error that stopped training then prints on a line of its own."""
    stream = io.StringIO()
    display = printer(callbacks.ProgressBar, stream)
    display.on_epoch_begin(0)
    display.on_train_batch_end(0, {"loss": 0.5})
    display.on_train_end()  # fit raised before the epoch ended
    assert stream.getvalue().endswith("\n")
    display.on_train_end()  # and a second call is harmless
    assert not stream.getvalue().endswith("\n\n")


class Recorder(callbacks.Callback):
    """Every hook call, with its epoch or batch index."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.params["epochs"], self.params["steps"]))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_hooks_are_keras_from_epoch_0_and_initial_epoch_starts_later(cpu):
    x, labels = blobs(n=40)
    model = seed_network(cpu)
    recorder = Recorder()
    history = model.fit(x, to_categorical(labels), batch_size=20, epochs=3, initial_epoch=1,
                        callbacks=[recorder], verbose=0)
    assert recorder.model is model and model.history is history
    assert recorder.calls == [
        ("train_begin", 3, 2),
        ("epoch_begin", 1), ("batch_end", 0), ("batch_end", 1),
        ("epoch_end", 1, ["accuracy", "loss"]),
        ("epoch_begin", 2), ("batch_end", 0), ("batch_end", 1),
        ("epoch_end", 2, ["accuracy", "loss"]),
        ("train_end",)]
    assert history.epoch == [1, 2] and len(history.history["loss"]) == 2


def test_batch_logs_are_read_from_the_device_only_when_looked_at(cpu, monkeypatch):
    reads = []
    real = dnn.Sequential._results
    monkeypatch.setattr(dnn.Sequential, "_results",
                        lambda self, seen: reads.append(seen) or real(self, seen))

    class Looks(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.loss = logs["loss"]

    x, labels = blobs(n=60)
    looks = Looks()
    seed_network(cpu).fit(x, to_categorical(labels), batch_size=20, epochs=1,
                          callbacks=[looks], verbose=0)
    assert reads == [40, 60]  # batch 1's look, then the epoch's figures
    assert looks.loss > 0


def test_stop_training_ends_fit_after_the_epoch_or_batch_that_set_it(cpu):
    class StopAt(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    x, labels = blobs(n=80)
    history = seed_network(cpu).fit(x, to_categorical(labels), batch_size=20, epochs=5,
                                    callbacks=[StopAt()], verbose=0)
    assert history.epoch == [0]


def test_early_stopping_waits_its_patience_and_restores_the_best_weights(cpu):
    """A validation set the model cannot learn: val_loss rises from the first epoch on."""
    x, labels = blobs(n=120)
    model = seed_network(cpu)
    best = {}

    class KeepEachEpoch(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best[epoch] = (logs["val_loss"], self.model.get_weights())

    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.0,
                                      restore_best_weights=True)
    noise = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    history = model.fit(x, to_categorical(labels), batch_size=20, epochs=50,
                        validation_data=(noise, to_categorical(labels)),
                        callbacks=[KeepEachEpoch(), stopper], verbose=0)
    losses = history.history["val_loss"]
    best_epoch = int(np.argmin(losses))
    assert len(losses) == best_epoch + 3 < 50  # the best, then patience 2, then the stop
    assert stopper.best_epoch == best_epoch and stopper.stopped_epoch == len(losses) - 1
    for ours, saved in zip(model.get_weights(), best[best_epoch][1]):
        np.testing.assert_array_equal(ours, saved)


def test_model_checkpoint_saves_the_best_epochs_atomically_by_name(cpu, tmp_path):
    x, labels = blobs(n=80)
    y = to_categorical(labels)
    model = seed_network(cpu)
    saver = callbacks.ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.npz",
                                      save_best_only=True)
    history = model.fit(x, y, batch_size=20, epochs=4, validation_data=(x, y),
                        callbacks=[saver], verbose=0)
    losses = history.history["val_loss"]
    expected = {f"m-{epoch + 1:02d}-{loss:.3f}.npz" for epoch, loss in enumerate(losses)
                if loss <= min(losses[:epoch + 1])}
    assert {path.name for path in tmp_path.iterdir()} == expected
    last = sorted(tmp_path.iterdir())[-1]
    np.testing.assert_allclose(dnn.load_model(last).evaluate(x, y)[0], min(losses), rtol=1e-5)


def test_model_checkpoint_saves_weights_every_few_batches_below_a_threshold(cpu, tmp_path):
    x, labels = blobs(n=80)
    y = to_categorical(labels)
    model = seed_network(cpu)
    every = callbacks.ModelCheckpoint(tmp_path / "w-{epoch}-{batch}.npz", save_freq=3,
                                      save_weights_only=True, monitor="loss")
    best = callbacks.ModelCheckpoint(tmp_path / "best.npz", save_best_only=True,
                                     monitor="loss", initial_value_threshold=0.0)
    model.fit(x, y, batch_size=20, epochs=2, callbacks=[every, best], verbose=0)
    # 4 batches an epoch, a save after every third counted across epochs
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w-1-3.npz", "w-2-2.npz"]
    again = seed_network(cpu)
    again.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    again.load_weights(tmp_path / "w-2-2.npz")
    assert again.get_weights()[0].shape == model.get_weights()[0].shape


@pytest.mark.parametrize("arguments, message", [
    ({"save_freq": 0}, "save_freq must be 'epoch' or a number of batches >= 1, not 0"),
    ({"save_freq": "batch"}, "save_freq must be 'epoch' or a number of batches"),
    ({"save_weights_only": "yes"}, "save_weights_only must be True or False, not 'yes'"),
    ({"initial_value_threshold": float("nan")}, "initial_value_threshold must be a number"),
    ({"save_best_only": 1}, "save_best_only must be True or False, not 1"),
    ({"save_freq": 5, "save_best_only": True}, "with save_freq=5 saves on a batch's logs, "
                                               "which have no 'val_loss'"),
    ({"save_freq": 5, "filepath": "m-{val_accuracy:.2f}.npz"},
     "with save_freq=5 saves on a batch's logs, which have no 'val_accuracy'")])
def test_model_checkpoint_refuses_bad_arguments_by_name(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        callbacks.ModelCheckpoint(**{"filepath": "m.npz", **arguments})


def test_a_model_checkpoint_name_the_logs_cannot_fill_is_named(cpu, tmp_path):
    x, labels = blobs(n=20)
    saver = callbacks.ModelCheckpoint(tmp_path / "m-{val_loss:.2f}.npz")
    with pytest.raises(dnn.errors.UsageError, match=r"ModelCheckpoint filepath .* names "
                                                    r"'val_loss', which it is not given"):
        seed_network(cpu).fit(x, to_categorical(labels), callbacks=[saver], verbose=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("filepath, problem", [
    ("m_{epoch.npz", "expected '}' before end of string"),
    ("m_}.npz", "Single '}' encountered in format string"),
    ("m_{}.npz", "{} is not the name of a figure"),
    ("m_{0}.npz", "{0} is not the name of a figure"),
    ("m_{epoch.__class__}.npz", "{epoch.__class__} is not the name of a figure"),
    ("m_{loss[0]}.npz", "{loss[0]} is not the name of a figure"),
    ("m_{loss:.{}f}.npz", "{} is not the name of a figure"),
    ("m_{epoch!x}.npz", "unknown conversion !x"),
])
def test_a_malformed_model_checkpoint_name_is_refused_before_training(filepath, problem):
    """Refused at once, not (a bare ValueError, or a file named m_<class 'int'>.npz) at the
    first epoch's end."""
    with pytest.raises(dnn.errors.UsageError) as caught:
        callbacks.ModelCheckpoint(filepath)
    assert str(caught.value).startswith(f"ModelCheckpoint filepath {filepath!r}: {problem}")
    assert "\n" not in str(caught.value)


def test_a_model_checkpoint_name_of_fields_and_escaped_braces_is_taken(cpu, tmp_path):
    x, labels = blobs(n=20)
    saver = callbacks.ModelCheckpoint(tmp_path / "m{{1}}-{epoch!s:>3}-{loss:.{digits}f}.npz")
    with pytest.raises(dnn.errors.UsageError, match="names 'digits', which it is not given"):
        seed_network(cpu).fit(x, to_categorical(labels), callbacks=[saver], verbose=0)
    saver = callbacks.ModelCheckpoint(tmp_path / "m{{1}}-{epoch!s:>3}-{loss:.2f}.npz")
    seed_network(cpu).fit(x, to_categorical(labels), callbacks=[saver], verbose=0)
    assert [path.name[:9] for path in tmp_path.iterdir()] == ["m{1}-  1-"]


@pytest.mark.parametrize("name, make", [
    ("EarlyStopping", callbacks.EarlyStopping),
    ("ReduceLROnPlateau", callbacks.ReduceLROnPlateau),
    ("ModelCheckpoint", lambda monitor: callbacks.ModelCheckpoint("m.npz", monitor=monitor))])
@pytest.mark.parametrize("monitor", [5, None, b"loss", ["loss"]])
def test_a_monitor_that_is_no_name_is_refused_naming_the_callback(name, make, monitor):
    """ReduceLROnPlateau(monitor=5) was "argument of type 'int' is not iterable"."""
    with pytest.raises(dnn.errors.ArgumentTypeError) as caught:
        make(monitor=monitor)
    assert str(caught.value) == (f"{name} monitor must be the name of a figure of the logs "
                                 f"(a str), not {monitor!r}")


def test_a_monitor_the_logs_lack_is_named(cpu):
    x, labels = blobs(n=20)
    with pytest.raises(dnn.errors.UsageError, match="EarlyStopping watches 'val_loss', which "
                                                    "the logs do not have"):
        seed_network(cpu).fit(x, to_categorical(labels), callbacks=[callbacks.EarlyStopping()],
                              verbose=0)


def test_the_library_does_not_import_the_command_line_toolkit():
    code = ("import sys, dnn, dnn.callbacks, dnn.saving.checkpoint, dnn.testing; "
            "import numpy as np; from dnn.layers import Dense; "
            "m = dnn.Sequential([Dense(2)], seed=0); m.compile(optimizer='sgd', loss='mse'); "
            "m.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=2); "
            "print('click' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"

