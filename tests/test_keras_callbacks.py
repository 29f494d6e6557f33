"""Keras 3's callbacks as Keras documents and writes them: CallbackList, CSVLogger,
LambdaCallback, TerminateOnNaN, BackupAndRestore and ProgbarLogger, each driven hook by hook
and within ``fit`` on a tiny model."""

import csv
import io
import json
import math
import os
import re
from unittest import mock

import numpy as np
import pytest

import dnn
from dnn import callbacks
from dnn.callbacks import csv_logger, progbar_logger
from dnn.callbacks.callback import HOOKS
from dnn.errors import (ArgumentTypeError, CheckpointError, DivergenceError, FileWriteError,
                        UsageError)
from dnn.saving.fileio import atomic_write
from dnn.layers import Dense
from dnn.utils import to_categorical
from tests.conftest import a_named_pipe


def tiny_model():
    """The same small classifier every call, trained with Adam (whose state a backup must
    keep)."""
    model = dnn.Sequential([Dense(4, activation="relu", input_shape=(3,)),
                            Dense(2, activation="softmax")], seed=0, backend="cpu")
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(rows=64):
    """``rows`` random samples of 3 features, labelled by the sign of their sum."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    return x, to_categorical((x.sum(axis=1) > 0).astype(int), 2)


def one_line_error(kind, match, make):
    """Assert that ``make()`` raises ``kind`` matching ``match``, in one line."""
    with pytest.raises(kind, match=match) as caught:
        make()
    assert "\n" not in str(caught.value)


class Spy(callbacks.Callback):
    """Records every hook call as ``(name, hook, positional arguments, keyword arguments)``."""

    def __init__(self, name="spy", calls=None):
        super().__init__()
        self.name, self.calls = name, [] if calls is None else calls

    def hooks(self) -> list:
        return [call[1] for call in self.calls]


def _recorder(hook):
    def record(self, *args, **kwargs):
        self.calls.append((self.name, hook, args, kwargs))
    return record


for _hook in HOOKS:
    setattr(Spy, _hook, _recorder(_hook))


# -- CallbackList ---------------------------------------------------------------------------
def keras_arguments(hook, logs):
    """What Keras' CallbackList passes to a callback's ``hook``: the batch hooks take their
    logs by keyword, the others positionally, after the epoch's index for the epoch hooks."""
    if "batch" in hook:
        return (7,), {"logs": logs}
    return ((3, logs) if "epoch" in hook else (logs,)), {}


def test_callback_list_calls_each_hook_of_each_callback_in_order_with_keras_arguments():
    calls = []
    both = callbacks.CallbackList([Spy("first", calls), Spy("second", calls)])
    logs = {"loss": 0.5}
    expected = []
    for hook in HOOKS:
        args, kwargs = keras_arguments(hook, logs)
        getattr(both, hook)(*args, **kwargs)
        expected += [("first", hook, args, kwargs), ("second", hook, args, kwargs)]
    assert calls == expected
    assert all(any(value is logs for value in (*args, *kwargs.values()))
               for _, _, args, kwargs in calls)  # the same object, not a copy


def test_callback_list_adds_history_and_progbar_and_hands_out_model_and_params():
    model, spy = tiny_model(), Spy()
    listed = callbacks.CallbackList([spy], add_history=True, add_progbar=True, model=model,
                                    epochs=3, steps=2, verbose=0)
    assert [type(callback) for callback in listed.callbacks] == [
        Spy, callbacks.History, callbacks.ProgbarLogger]
    assert model.history is listed.callbacks[1]
    for callback in listed.callbacks:
        assert callback.model is model
        assert callback.params == {"epochs": 3, "steps": 2, "verbose": 0}


def test_callback_list_keeps_the_history_and_progbar_it_is_given():
    model, history, progbar = tiny_model(), callbacks.History(), callbacks.ProgbarLogger()
    listed = callbacks.CallbackList([history, progbar], add_history=True, add_progbar=True,
                                    model=model)
    assert listed.callbacks == [history, progbar] and model.history is history
    assert history.params == {}  # no params: set_params is not called, as in Keras
    assert callbacks.CallbackList(None).callbacks == []
    assert callbacks.CallbackList(history).callbacks == [history]


@pytest.mark.parametrize("given, message", [
    (3, "callbacks must be a list of dnn.callbacks.Callback instances, not int"),
    ([print], "callbacks must be dnn.callbacks.Callback instances, not "
              "builtin_function_or_method"),
    ((Spy(), 3), "callbacks must be dnn.callbacks.Callback instances, not int"),
])
def test_callback_list_refuses_what_is_not_a_callback(given, message):
    one_line_error(UsageError, message, lambda: callbacks.CallbackList(given))


def test_the_train_batch_hooks_call_keras_older_names():
    """Keras' Callback calls on_batch_begin and on_batch_end from its train batch hooks."""
    class Old(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_begin(self, batch, logs=None):
            self.seen.append(("begin", batch, logs))

        def on_batch_end(self, batch, logs=None):
            self.seen.append(("end", batch, logs))

    old = Old()
    listed = callbacks.CallbackList([old])
    listed.on_train_batch_begin(0)
    listed.on_train_batch_end(0, {"loss": 1.0})
    listed.on_test_batch_end(0, {"loss": 2.0})  # not a training batch
    assert old.seen == [("begin", 0, None), ("end", 0, {"loss": 1.0})]


def test_fit_calls_every_training_hook_in_keras_order():
    """Needs the trainer's CallbackList (on_train_batch_begin, the logs of on_train_end)."""
    x, y = tiny_data(32)
    spy = Spy()
    history = tiny_model().fit(x, y, batch_size=16, epochs=2, callbacks=[spy], verbose=0)
    epoch = ["on_epoch_begin"] + ["on_train_batch_begin", "on_train_batch_end"] * 2 + [
        "on_epoch_end"]
    assert spy.hooks() == ["on_train_begin", *epoch, *epoch, "on_train_end"]
    assert [call[2:] for call in spy.calls if call[1] == "on_train_batch_begin"] == [
        ((0,), {"logs": None}), ((1,), {"logs": None})] * 2
    last_epoch_logs = spy.calls[-2][2][1]
    assert dict(last_epoch_logs) == {"loss": history.history["loss"][-1],
                                     "accuracy": history.history["accuracy"][-1]}
    assert spy.calls[-1][2:] == ((last_epoch_logs,), {})  # Keras: the last epoch's logs


# -- CSVLogger ------------------------------------------------------------------------------
def drive_epochs(callback, epoch_logs, first_epoch=0):
    """``on_train_begin``, ``on_epoch_end`` with each of ``epoch_logs``, ``on_train_end``."""
    callback.on_train_begin()
    for epoch, logs in enumerate(epoch_logs, first_epoch):
        callback.on_epoch_end(epoch, logs)
    callback.on_train_end()


def written(path) -> str:
    """The file at ``path``, its line ends as they are."""
    return path.read_bytes().decode()


def test_csv_logger_writes_what_keras_writes(tmp_path):
    """Keras' file for these logs: sorted columns, ``val_`` columns added when the first
    epoch has none (``NA``), numbers as ``str`` writes them, an array's values in quotes,
    lines ending in ``\\r\\n``."""
    path = tmp_path / "log.csv"
    drive_epochs(callbacks.CSVLogger(path), [
        {"loss": 0.6931471824645996, "accuracy": 0.5},
        {"loss": 0.25, "accuracy": 0.75, "learning_rate": 0.001},  # a key the first lacked
        {"loss": float("nan"), "accuracy": np.float64(0.125), "val_loss": 0.5},
        {"loss": 1e-05, "accuracy": np.array([1, 2])},
    ])
    assert path.read_bytes() == (
        b"epoch,accuracy,loss,val_accuracy,val_loss\r\n"
        b"0,0.5,0.6931471824645996,NA,NA\r\n"
        b"1,0.75,0.25,NA,NA\r\n"
        b"2,0.125,nan,NA,0.5\r\n"
        b'3,"""[1, 2]""",1e-05,NA,NA\r\n')


def test_csv_logger_with_validation_keeps_the_columns_it_has_and_a_separator(tmp_path):
    path = tmp_path / "log.tsv"
    drive_epochs(callbacks.CSVLogger(path, separator="\t"),
                 [{"val_loss": 0.5, "loss": 0.25}, {"loss": 0.125}])
    assert written(path) == "epoch\tloss\tval_loss\r\n0\t0.25\t0.5\r\n1\t0.125\tNA\r\n"


def test_csv_logger_writes_each_row_as_its_epoch_ends(tmp_path):
    path = tmp_path / "log.csv"
    logger = callbacks.CSVLogger(path)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 0.5})
    assert written(path) == "epoch,loss,val_loss\r\n0,0.5,NA\r\n"  # before fit ends
    logger.on_epoch_end(1, {"loss": 0.25})
    assert written(path).endswith("\r\n1,0.25,NA\r\n")
    logger.on_train_end()


def test_csv_logger_appends_without_a_second_header_or_overwrites(tmp_path):
    path = tmp_path / "log.csv"
    drive_epochs(callbacks.CSVLogger(path), [{"loss": 0.5}])
    resumed = callbacks.CSVLogger(path, append=True)
    drive_epochs(resumed, [{"loss": 0.25}], first_epoch=1)
    drive_epochs(resumed, [{"loss": 0.125}], first_epoch=2)  # the same logger, another fit
    assert written(path) == ("epoch,loss,val_loss\r\n0,0.5,NA\r\n1,0.25,NA\r\n"
                             "2,0.125,NA\r\n")
    drive_epochs(callbacks.CSVLogger(path), [{"loss": 1.0}])
    assert written(path) == "epoch,loss,val_loss\r\n0,1.0,NA\r\n"
    fresh = tmp_path / "new.csv"
    drive_epochs(callbacks.CSVLogger(fresh, append=True), [{"loss": 1.0}])
    assert written(fresh) == "epoch,loss,val_loss\r\n0,1.0,NA\r\n"


def test_csv_logger_in_fit_logs_the_history(tmp_path):
    x, y = tiny_data()
    path = tmp_path / "log.csv"
    history = tiny_model().fit(x, y, batch_size=16, epochs=3, validation_data=(x, y),
                               callbacks=[callbacks.CSVLogger(path)], verbose=0)
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    for key, values in history.history.items():
        assert [row[key] for row in rows] == [str(value) for value in values]
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]


@pytest.mark.parametrize("arguments, kind, message", [
    (("missing/log.csv",), UsageError, "CSVLogger cannot write .*missing/log.csv: the folder "
                                       ".*missing does not exist"),
    ((3,), ArgumentTypeError, "CSVLogger filename must be a path, not 3"),
    (("log.csv", "::"), UsageError, "CSVLogger separator must be one character, not '::'"),
    (("log.csv", 9), ArgumentTypeError, "CSVLogger separator must be a str, not 9"),
    (("log.csv", ",", "yes"), ArgumentTypeError, "CSVLogger append must be True or False"),
])
def test_csv_logger_refuses_bad_arguments(tmp_path, monkeypatch, arguments, kind, message):
    monkeypatch.chdir(tmp_path)
    one_line_error(kind, message, lambda: callbacks.CSVLogger(*arguments))


def test_csv_logger_names_a_file_it_cannot_open(tmp_path):
    (tmp_path / "log.csv").mkdir()
    logger = callbacks.CSVLogger(tmp_path / "log.csv")
    one_line_error(UsageError, "log.csv: not writing to it, it is a folder$",
                   logger.on_train_begin)


@pytest.mark.parametrize("append", [False, True])
def test_csv_logger_refuses_a_write_protected_file_as_model_save_does(tmp_path, append):
    """Root's open() would have replaced (or added to) a file its user made read-only."""
    path = tmp_path / "log.csv"
    path.write_text("the user's log\n")
    path.chmod(0o444)
    refusal = "it is write-protected \\(mode 0444\\)$"
    one_line_error(UsageError, f"log.csv: not writing to it, {refusal}",
                   callbacks.CSVLogger(path, append=append).on_train_begin)
    one_line_error(UsageError, f"log.csv: not replacing it, {refusal}",
                   lambda: tiny_model().save(path))
    assert path.read_text() == "the user's log\n"


def test_csv_logger_names_a_file_to_append_to_that_is_not_text(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(bytes(range(256)))
    logger = callbacks.CSVLogger(path, append=True)
    one_line_error(UsageError, "^CSVLogger cannot append to .*log.csv: it is not UTF-8 text$",
                   logger.on_train_begin)
    assert logger.csv_file.closed and path.read_bytes() == bytes(range(256))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("append", [False, True])
def test_csv_logger_refuses_a_named_pipe_before_it_could_block(tmp_path, append):
    """A pipe nobody reads blocked fit forever (a reader comes after 10 seconds, so a logger
    that blocks fails the test instead of hanging it)."""
    with a_named_pipe(tmp_path / "log.csv") as path:
        one_line_error(UsageError, "log.csv: not writing to it, it is a named pipe(, not a "
                       "regular file| no one reads)", callbacks.CSVLogger(
                           path, append=append).on_train_begin)  # to append, it must be read


@pytest.mark.skipif(not os.path.exists("/proc/version") or not os.path.exists("/dev/full"),
                    reason="no /proc/version or /dev/full here")
def test_csv_logger_names_the_file_the_system_will_not_write(tmp_path, monkeypatch):
    """/proc/version was a bare OSError (errno 5) as its first row was flushed; a full disk
    (/dev/full standing for the log) was one too."""
    one_line_error(UsageError, "^/proc/version: not writing to it, it is write-protected",
                   callbacks.CSVLogger("/proc/version").on_train_begin)
    path = tmp_path / "log.csv"
    monkeypatch.setattr(csv_logger, "open_in_place",
                        lambda name, mode, **options: open("/dev/full", mode, **options))
    logger = callbacks.CSVLogger(path)
    logger.on_train_begin()
    full = f"^cannot write {re.escape(str(path))}: No space left on device$"
    one_line_error(FileWriteError, full, lambda: logger.on_epoch_end(0, {"loss": 0.5}))
    one_line_error(FileWriteError, full, logger.on_train_end)  # the row is still unwritten
    assert logger.csv_file.closed


# -- LambdaCallback -------------------------------------------------------------------------
def test_lambda_callback_calls_its_functions_with_keras_arguments():
    """Needs the trainer's CallbackList: on_train_begin(logs) and on_train_batch_begin."""
    calls = []
    record = calls.append
    spy = callbacks.LambdaCallback(
        on_train_begin=lambda logs: record(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: record(("epoch_begin", epoch, logs)),
        on_train_batch_begin=lambda batch, logs: record(("batch_begin", batch, logs)),
        on_train_batch_end=lambda batch, logs: record(("batch_end", batch, logs["loss"])),
        on_epoch_end=lambda epoch, logs: record(("epoch_end", epoch, sorted(logs))),
        on_train_end=lambda logs: record(("train_end",)))
    x, y = tiny_data(32)
    history = tiny_model().fit(x, y, batch_size=16, epochs=3, initial_epoch=1,
                               callbacks=[spy], verbose=0)
    expected = [("train_begin", None)]
    for epoch, loss in zip((1, 2), history.history["loss"], strict=True):
        expected += [("epoch_begin", epoch, None),
                     ("batch_begin", 0, None), ("batch_end", 0, mock.ANY),
                     ("batch_begin", 1, None), ("batch_end", 1, loss),  # the epoch's mean
                     ("epoch_end", epoch, ["accuracy", "loss"])]
    assert calls == expected + [("train_end",)]


def test_lambda_callback_takes_any_hook_by_keyword():
    calls = []
    spy = callbacks.LambdaCallback(on_test_begin=lambda logs: calls.append(("test", logs)),
                                   on_batch_end=lambda batch, logs: calls.append((batch, logs)),
                                   on_predict_batch_end=None)
    listed = callbacks.CallbackList([spy])
    listed.on_test_begin({"loss": 1.0})
    listed.on_train_batch_end(4, {"loss": 2.0})  # Callback's alias calls on_batch_end
    listed.on_predict_batch_end(0, {})
    listed.on_epoch_end(0, {})  # not given: does nothing
    assert calls == [("test", {"loss": 1.0}), (4, {"loss": 2.0})]


@pytest.mark.parametrize("arguments, kind, message", [
    ({"on_epoch_end": "print"}, ArgumentTypeError,
     "LambdaCallback on_epoch_end must be a function, not 'print'"),
    ({"on_test_end": 3}, ArgumentTypeError, "LambdaCallback on_test_end must be a function"),
    ({"on_epoch_ned": print}, UsageError, "LambdaCallback has no hook 'on_epoch_ned'; its "
                                          "hooks are on_train_begin, on_train_end"),
])
def test_lambda_callback_refuses_what_is_not_a_hook_function(arguments, kind, message):
    one_line_error(kind, message, lambda: callbacks.LambdaCallback(**arguments))


# -- TerminateOnNaN -------------------------------------------------------------------------
class Stoppable:
    """Just what TerminateOnNaN touches of a model."""

    stop_training = False


def test_terminate_on_nan_stops_at_a_nan_or_infinite_loss_with_keras_message(capsys):
    guard = callbacks.TerminateOnNaN()
    guard.set_model(Stoppable())
    listed = callbacks.CallbackList([guard])
    for batch, loss in enumerate([0.5, 1e30]):
        listed.on_train_batch_end(batch, callbacks.BatchLogs(lambda loss=loss: {"loss": loss}))
    listed.on_train_batch_end(2, {})  # logs without a loss: nothing to check
    assert not guard.model.stop_training and capsys.readouterr().out == ""
    listed.on_train_batch_end(3, {"loss": np.float32("inf")})
    assert guard.model.stop_training
    assert capsys.readouterr().out == "Batch 3: Invalid loss, terminating training\n"
    guard.model.stop_training = False
    listed.on_train_batch_end(4, {"loss": float("nan")})
    assert guard.model.stop_training


def test_terminate_on_nan_raises_at_once_when_asked():
    guard = callbacks.TerminateOnNaN(raise_error=True)
    guard.set_model(Stoppable())
    one_line_error(DivergenceError, r"^NaN or Inf loss encountered at batch 5\. Loss value: "
                                    r"nan\. Terminating training immediately\.$",
                   lambda: guard.on_train_batch_end(5, {"loss": math.nan}))
    assert not guard.model.stop_training
    one_line_error(ArgumentTypeError, "TerminateOnNaN raise_error must be True or False",
                   lambda: callbacks.TerminateOnNaN(raise_error="yes"))


def test_terminate_on_nan_ends_fit_at_the_first_batch_whose_loss_is_nan(tmp_path, capsys):
    """Row 20 holds a NaN: with batches of 8 in order, the loss of batch 2 is the first NaN.
    Needs the trainer to end gracefully on a stop (no DivergenceError), as Keras does."""
    x, y = tiny_data()
    x[20, 1] = np.nan
    batches = []
    seen = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    path = tmp_path / "log.csv"
    history = tiny_model().fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                               callbacks=[callbacks.TerminateOnNaN(), seen,
                                          callbacks.CSVLogger(path)])
    assert batches == [0, 1, 2]
    assert capsys.readouterr().out == "Batch 2: Invalid loss, terminating training\n"
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    with open(path, newline="") as file:
        assert list(csv.DictReader(file))[-1]["loss"] == "nan"


# -- BackupAndRestore -----------------------------------------------------------------------
class Counter:
    """A stand-in model for BackupAndRestore's files: its weights are one number, the
    batches it trained."""

    built = True

    def __init__(self):
        self.batches, self.stop_training, self._initial_epoch = 0, False, None

    def save_weights(self, path):
        with atomic_write(path, "w") as file:
            file.write(str(self.batches))

    def load_weights(self, path):
        with open(path) as file:
            text = file.read()
        if not text.isdigit():
            raise CheckpointError(f"{path} is damaged")
        self.batches = int(text)


class Interrupt(callbacks.Callback):
    """Raises at the end of batch ``batch`` of epoch ``epoch``, or asks to stop there."""

    def __init__(self, epoch, batch, stop=False):
        super().__init__()
        self.at, self.stop = (epoch, batch), stop

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            if not self.stop:
                raise RuntimeError("interrupted")
            self.model.stop_training = True


def train(model, listed, epochs, steps=3) -> list:
    """Keras 3's training loop as dnn's ``fit`` runs it (``on_train_end`` even after an
    error) on a :class:`Counter`; returns the epochs it ran."""
    listed = callbacks.CallbackList(listed, model=model, epochs=epochs, steps=steps, verbose=0)
    model.stop_training, ran = False, []
    try:
        listed.on_train_begin()
        for epoch in range(model._initial_epoch or 0, epochs):
            listed.on_epoch_begin(epoch)
            for batch in range(steps):
                listed.on_train_batch_begin(batch)
                model.batches += 1
                listed.on_train_batch_end(batch, {})
                if model.stop_training:
                    break
            listed.on_epoch_end(epoch, {})
            ran.append(epoch)
            if model.stop_training:
                break
    finally:
        listed.on_train_end()
        model._initial_epoch = None
    return ran


def interrupted(backup, at, epochs=5) -> Counter:
    """A Counter whose training with ``backup`` raised at ``at`` (epoch, batch)."""
    model = Counter()
    with pytest.raises(RuntimeError, match="interrupted"):
        train(model, [backup, Interrupt(*at)], epochs)
    return model


def test_backup_after_each_epoch_resumes_from_the_last_completed_one(tmp_path):
    """Keras' test_best_case_epoch: 3 batches an epoch, interrupted in epoch 2 (from 0)."""
    backup_dir = tmp_path / "backup"
    backup = callbacks.BackupAndRestore(backup_dir)
    assert interrupted(backup, at=(2, 1)).batches == 8
    assert sorted(path.name for path in backup_dir.iterdir()) == [
        "latest.weights.npz", "training_metadata.json"]
    assert (backup_dir / "training_metadata.json").read_text() == '{"epoch": 2, "batch": 0}'
    assert (backup_dir / "latest.weights.npz").read_text() == "6"
    resumed = Counter()  # as in a new process
    assert train(resumed, [backup], epochs=5) == [2, 3, 4]
    assert resumed.batches == 5 * 3
    assert not backup_dir.exists()


def test_backup_every_n_batches_resumes_at_its_epochs_start_with_its_weights(tmp_path):
    """Keras' test_best_case_step: save_freq=1, interrupted after batch 1 of epoch 0."""
    backup = callbacks.BackupAndRestore(tmp_path / "backup", save_freq=1)
    assert interrupted(backup, at=(0, 1)).batches == 2
    metadata = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert metadata == {"epoch": 0, "batch": 1}
    resumed = Counter()
    assert train(resumed, [backup], epochs=5) == [0, 1, 2, 3, 4]
    assert resumed.batches == 2 + 5 * 3


def test_a_double_checkpoint_restores_the_backup_before_a_damaged_one(tmp_path):
    """Keras' test_backup_corrupted: the last backup is damaged, the one before is used."""
    backup_dir = tmp_path / "backup"
    backup = callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    interrupted(backup, at=(2, 1))
    assert (backup_dir / "latest.weights.npz.bkp").read_text() == "3"
    assert (backup_dir / "training_metadata.json.bkp").read_text() == '{"epoch": 1, "batch": 0}'
    (backup_dir / "latest.weights.npz").write_text("0x")
    resumed = Counter()
    assert train(resumed, [backup], epochs=5) == [1, 2, 3, 4]
    assert resumed.batches == 5 * 3 and not backup_dir.exists()


def test_a_damaged_backup_without_a_double_checkpoint_is_a_one_line_error(tmp_path):
    backup_dir = tmp_path / "backup"
    backup = callbacks.BackupAndRestore(backup_dir)
    interrupted(backup, at=(2, 1))
    (backup_dir / "training_metadata.json").write_text('{"epoch": -1}')
    one_line_error(CheckpointError, r"training_metadata.json is damaged: its epoch is -1",
                   lambda: train(Counter(), [backup], epochs=5))
    (backup_dir / "training_metadata.json").write_text('{"epo')
    one_line_error(CheckpointError, r"training_metadata.json is damaged",
                   lambda: train(Counter(), [backup], epochs=5))
    assert (backup_dir / "latest.weights.npz").exists()  # an error: the backup is kept


def test_a_stop_ends_training_normally_and_only_the_backup_files_are_deleted(tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "notes.txt").write_text("mine")
    backup = callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    assert train(Counter(), [backup, Interrupt(1, 0, stop=True)], epochs=5) == [0, 1]
    assert [path.name for path in backup_dir.iterdir()] == ["notes.txt"]
    kept = callbacks.BackupAndRestore(tmp_path / "kept", delete_checkpoint=False)
    train(Counter(), [kept], epochs=2)
    assert (tmp_path / "kept" / "training_metadata.json").read_text() == (
        '{"epoch": 2, "batch": 0}')


def test_an_error_before_the_backups_hooks_of_an_epoch_keeps_it(tmp_path):
    """A callback before it fails as epoch 1 begins: the backup of epoch 0 is kept."""
    def fail(epoch, logs):
        if epoch == 1:
            raise RuntimeError("interrupted")

    backup = callbacks.BackupAndRestore(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        train(Counter(), [callbacks.LambdaCallback(on_epoch_begin=fail), backup], epochs=3)
    assert (tmp_path / "backup" / "training_metadata.json").read_text() == (
        '{"epoch": 1, "batch": 0}')


@pytest.mark.parametrize("backup_dir", ["/proc/backup", "notes.txt/backup"])
def test_backup_and_restore_names_a_folder_it_cannot_make(tmp_path, monkeypatch, backup_dir):
    """/proc/backup was a bare FileNotFoundError at the first epoch's end."""
    if backup_dir.startswith("/proc") and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's notes")
    backup = callbacks.BackupAndRestore(backup_dir)
    with pytest.raises(FileWriteError, match=f"^cannot write {backup_dir}: ") as caught:
        train(Counter(), [backup], epochs=2)
    assert "\n" not in str(caught.value)
    assert (tmp_path / "notes.txt").read_text() == "a user's notes"


@pytest.mark.parametrize("arguments, kind, message", [
    ({"backup_dir": ""}, UsageError, "^Empty `backup_dir` argument passed$"),
    ({"backup_dir": None}, UsageError, "^Empty `backup_dir` argument passed$"),
    ({"backup_dir": 3}, ArgumentTypeError, "BackupAndRestore backup_dir must be a path"),
    ({"backup_dir": "file.txt"}, UsageError, "backup_dir file.txt is a file, not a folder"),
    ({"backup_dir": "b", "save_freq": "batch"}, UsageError,
     "^Invalid value for argument `save_freq`. Received: save_freq='batch'. Expected either "
     "'epoch' or a positive integer.$"),
    ({"backup_dir": "b", "save_freq": 0.15}, UsageError, "Invalid value for argument"),
    ({"backup_dir": "b", "save_freq": 0}, UsageError, "Invalid value for argument"),
    ({"backup_dir": "b", "save_freq": True}, UsageError, "Invalid value for argument"),
    ({"backup_dir": "b", "delete_checkpoint": "no"}, ArgumentTypeError,
     "BackupAndRestore delete_checkpoint must be True or False, not 'no'"),
    ({"backup_dir": "b", "double_checkpoint": 1}, ArgumentTypeError,
     "BackupAndRestore double_checkpoint must be True or False, not 1"),
])
def test_backup_and_restore_refuses_bad_arguments(tmp_path, monkeypatch, arguments, kind,
                                                  message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    one_line_error(kind, message, lambda: callbacks.BackupAndRestore(**arguments))


@pytest.mark.parametrize("resume_with", ["the same model", "a new model"])
def test_backup_and_restore_resumes_fit_bit_for_bit(tmp_path, resume_with):
    """Interrupted in epoch 2 by an error in a callback, then fit again with the same
    BackupAndRestore: epochs 2 and 3 run from the backup of epoch 1's end, and the weights
    end equal, bit for bit, to those of a fit that was never interrupted (Adam's state
    included).  Needs the model's save_weights, load_weights and _initial_epoch."""
    x, y = tiny_data()
    arguments = dict(batch_size=16, epochs=4, shuffle=False, verbose=0)
    reference = tiny_model()
    reference.fit(x, y, **arguments)
    backup = callbacks.BackupAndRestore(tmp_path / "backup")
    model = tiny_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, callbacks=[backup, Interrupt(2, 1)], **arguments)
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text()) == {
        "epoch": 2, "batch": 0}
    assert model._initial_epoch is None
    if resume_with == "a new model":
        model = tiny_model()
    history = model.fit(x, y, callbacks=[backup], **arguments)
    assert history.epoch == [2, 3] and model._initial_epoch is None
    for ours, expected in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, expected)
    assert not (tmp_path / "backup").exists()


# -- ProgbarLogger --------------------------------------------------------------------------
def drive(display) -> None:
    """One epoch of 3 batches through ``display``, from ``on_train_begin`` to
    ``on_train_end``."""
    display.on_train_begin()
    display.on_epoch_begin(0)
    for batch in range(3):
        display.on_train_batch_end(batch, {"loss": 0.5})
    display.on_epoch_end(0, {"loss": 0.5})
    display.on_train_end()


def shown(verbose, monkeypatch, capsys) -> str:
    """What a ProgbarLogger given ``verbose`` prints for :func:`drive` (at a standing
    clock)."""
    monkeypatch.setattr(progbar_logger.time, "perf_counter", lambda: 10.0)
    drive(callbacks.CallbackList(add_progbar=True, epochs=2, steps=3, verbose=verbose))
    return capsys.readouterr().out


def test_progbar_logger_shows_what_verbose_asks_for(monkeypatch, capsys):
    lines = "Epoch 1/2\n3/3 - 0.0s 0ms/step - loss: 0.5000\n"
    assert shown(2, monkeypatch, capsys) == lines
    assert shown("auto", monkeypatch, capsys) == lines  # stdout is not a terminal here
    assert shown(0, monkeypatch, capsys) == ""
    bar = shown(1, monkeypatch, capsys)
    assert bar.startswith("Epoch 1/2\n\r1/3 [=========>")
    assert bar.endswith(f"\r3/3 [{'=' * 30}] - 0.0s 0ms/step - loss: 0.5000\n")
    monkeypatch.setattr(progbar_logger.sys.stdout, "isatty", lambda: True)
    assert shown("auto", monkeypatch, capsys) == bar
    one_line_error(UsageError, "verbose must be 0, 1, 2 or 'auto', not 3",
                   lambda: callbacks.CallbackList(add_progbar=True, verbose=3))


@pytest.mark.parametrize("verbose, printer", [(1, callbacks.ProgressBar),
                                              (2, callbacks.EpochLines)])
def test_progbar_logger_draws_as_the_printers_do(monkeypatch, capsys, verbose, printer):
    expected = shown(verbose, monkeypatch, capsys)
    stream = io.StringIO()
    direct = printer(stream)
    direct.set_params({"epochs": 2, "steps": 3, "verbose": verbose})
    drive(direct)
    assert stream.getvalue() == expected


def test_fit_shows_one_progress_display_even_with_a_progbar_logger_given(capsys):
    """Keras adds a ProgbarLogger only when the callbacks have none.  Needs the trainer's
    CallbackList."""
    x, y = tiny_data(32)
    tiny_model().fit(x, y, batch_size=16, epochs=2, verbose=2,
                     callbacks=[callbacks.ProgbarLogger()])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == ["Epoch 1/2", "Epoch 2/2"] and len(lines) == 4
    assert all(line.startswith("2/2 - ") and "loss: " in line for line in lines[1::2])
