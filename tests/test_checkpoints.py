"""Checkpoints: round trips across backends, resume, and every bad file refused cleanly."""

import copy
import io
import json
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import dnn
from dnn import backends, plugins
from dnn.models import load_model
from dnn.saving import checkpoint
from dnn.cli import main
from dnn.errors import CheckpointError, DivergenceError, UsageError
from scripts.hostile import npy, patched, rewritten, zipped
from tests.conftest import peak_bytes
from tests.test_cli import tiny  # noqa: F401  (the tiny dataset plugin fixture)
from tests.test_model import blobs, seed_network
from dnn.utils import to_categorical


def run(*args):
    """``dnn ARGS`` in process, without $DNN_DATA_DIR: the fake datasets read no folder."""
    return CliRunner(env={"DNN_DATA_DIR": None}).invoke(main, list(args))


def test_save_on_one_backend_load_on_every_other(tmp_path, cpu):
    x, labels = blobs(n=96)
    model = seed_network(cpu)
    model.fit(x, to_categorical(labels), epochs=2, batch_size=16)
    path = tmp_path / "model.npz"
    checkpoint.save(model, path)
    expected = model.evaluate(x, to_categorical(labels))
    for name in plugins.names("backend"):
        if not backends.availability(name):
            continue
        loaded = load_model(path, backend=name)
        assert loaded.backend.name == name
        np.testing.assert_allclose(loaded.evaluate(x, to_categorical(labels)), expected,
                                   rtol=1e-5)
        assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
        for ours, theirs in zip(loaded.optimizer.states, model.optimizer.states):
            for key in theirs:
                np.testing.assert_array_equal(loaded.backend.to_numpy(ours[key]),
                                              cpu.to_numpy(theirs[key]))


def test_resume_continues_exactly_where_training_stopped(tmp_path, cpu):
    x, labels = blobs(n=96)
    y = to_categorical(labels)
    straight = seed_network(cpu)
    straight.fit(x, y, epochs=2, batch_size=96, shuffle=False)
    first = seed_network(cpu)
    first.fit(x, y, epochs=1, batch_size=96, shuffle=False)
    checkpoint.save(first, tmp_path / "m.npz")
    resumed = load_model(tmp_path / "m.npz")
    resumed.fit(x, y, epochs=1, batch_size=96, shuffle=False)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("saved, loading", [(False, True), (True, False)],
                         ids=["adam-into-amsgrad", "amsgrad-into-adam"])
def test_weights_load_into_the_same_optimizer_made_with_other_state(tmp_path, cpu, saved,
                                                                    loading):
    """A file saved by Adam (every file from before amsgrad) loaded into a model compiled with
    Adam(amsgrad=True), and the reverse: not damaged, another optimizer's state; the weights
    load and the optimizer's state starts afresh, with a warning."""
    x, labels = blobs(n=96)
    y = to_categorical(labels)
    model = seed_network(cpu)
    model.compile(optimizer=dnn.optimizers.Adam(amsgrad=saved), loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.save_weights(tmp_path / "m.weights.npz")
    other = seed_network(cpu, seed=1)
    other.compile(optimizer=dnn.optimizers.Adam(amsgrad=loading),
                  loss="categorical_crossentropy")
    other.build(8)
    with pytest.warns(UserWarning, match="holds Adam state of other settings .*: the weights "
                                         "are loaded, the optimizer's state starts afresh"):
        other.load_weights(tmp_path / "m.weights.npz")
    for ours, theirs in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert all(not np.any(cpu.to_numpy(array)) for state in other.optimizer.states
               for array in state.values())


def _bad_checkpoints(tmp_path, tiny_model_path):
    pickled = tmp_path / "pickle.npz"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    text = tmp_path / "notes.npz"
    text.write_text("not a model\n")
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(3))
    object_array = tmp_path / "objects.npz"
    np.savez(object_array, meta=np.array([{"x": 1}], dtype=object))
    return {"pickle": pickled, "text": text, "plain npz": plain, "object array": object_array,
            "missing": tmp_path / "nope.npz"}


@pytest.mark.parametrize("case", ["pickle", "text", "plain npz", "object array", "missing"])
def test_bad_checkpoints_are_refused_and_left_alone(tmp_path, case, tiny):  # noqa: F811
    path = _bad_checkpoints(tmp_path, None)[case]
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(CheckpointError):
        load_model(path)
    result = run("evaluate", str(path), "--dataset", "tiny")
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1
    assert "unsafely" not in result.output  # NumPy's advice for a pickle: never for a user
    assert (path.read_bytes() if path.exists() else None) == before


def test_cli_save_evaluate_resume_and_architecture_mismatch(tmp_path, tiny):  # noqa: F811
    model = tmp_path / "model.npz"
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--hidden", "16", "--lr", "0.01",
                 "--save", str(model))
    assert result.exit_code == 0, result.output
    trained_line = result.output.strip().splitlines()[-1]
    evaluated = run("evaluate", str(model), "--dataset", "tiny")
    assert evaluated.exit_code == 0 and evaluated.output.strip() == trained_line
    if "strict" in plugins.names("backend") and backends.availability("strict"):
        on_strict = run("evaluate", str(model), "--dataset", "tiny", "--backend", "strict")
        assert on_strict.output.strip() == trained_line
    history = tmp_path / "resumed.json"
    resumed = run("train", "--dataset", "tiny", "--epochs", "3", "--hidden", "16",
                  "--resume", str(model), "--history", str(history))
    assert resumed.exit_code == 0, resumed.output
    assert [line for line in resumed.output.splitlines() if line.startswith("Epoch")] == [
        "Epoch 3/3"]
    first_losses = json.loads(history.read_text())["epochs"][0]["loss"]
    assert first_losses < 0.5  # continues the curve instead of starting again near ln(3)
    before = model.read_bytes()
    for args, message in [
            (["--optimizer", "sgd"], "was trained with rmsprop, not sgd; leave out --optimizer"),
            (["--lr", "0.5"], "--resume goes on with the rmsprop settings saved in "),
            (["--opt", "rho=0.5"], "leave out --lr and --opt")]:
        refused = run("train", "--dataset", "tiny", "--hidden", "16", "--resume", str(model),
                      "--save", str(model), *args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    same_optimizer = run("train", "--dataset", "tiny", "--hidden", "16", "--epochs", "2",
                         "--resume", str(model), "--optimizer", "rmsprop")
    assert same_optimizer.exit_code == 0, same_optimizer.output
    mismatch = run("train", "--dataset", "tiny", "--hidden", "32", "--resume", str(model))
    assert mismatch.exit_code == 1
    assert "holds a model 16 relu -> 3 softmax (float32), not 32 relu" in mismatch.output
    assert model.read_bytes() == before


@pytest.mark.parametrize("features, classes", [(5, 3), (12, 4)])
def test_a_model_of_another_size_than_the_dataset_is_named_with_both_sizes(
        tmp_path, tiny, cpu, features, classes):  # noqa: F811
    x, labels = blobs(n=32, features=features, classes=classes)
    model = seed_network(cpu, classes=classes)
    model.fit(x, to_categorical(labels), epochs=1)
    path = tmp_path / "other.npz"
    checkpoint.save(model, path)
    message = (f"Error: {path} takes {features} features and has {classes} classes; "
               "tiny has 12 features and 3 classes (name the dataset it was trained on with "
               "--dataset)")
    evaluated = run("evaluate", str(path), "--dataset", "tiny")
    assert evaluated.exit_code == 2 and evaluated.output.strip().endswith(message), \
        evaluated.output
    if classes == 3:  # a model with other outputs is refused by the architecture check first
        resumed = run("train", "--dataset", "tiny", "--hidden", "16", "--resume", str(path))
        assert resumed.exit_code == 2 and resumed.output.strip().endswith(message), \
            resumed.output


def two_inputs_model():
    """Its inputs' features, 6 and 6, add up to tiny's 12."""
    first, second = dnn.Input(shape=(6,)), dnn.Input(shape=(6,))
    return dnn.Model([first, second], dnn.layers.Dense(3, activation="softmax")(
        dnn.layers.concatenate([first, second])))


def two_outputs_model():
    """Both its outputs have tiny's 3 classes."""
    inputs = dnn.Input(shape=(12,))
    hidden = dnn.layers.Dense(8, activation="relu")(inputs)
    model = dnn.Model(inputs, [dnn.layers.Dense(3, activation="softmax")(hidden),
                               dnn.layers.Dense(3, activation="softmax")(hidden)])
    model.compile(loss="categorical_crossentropy")
    return model


@pytest.mark.parametrize("make, message", [
    (two_inputs_model, "holds a model of 2 inputs; a dataset gives one: train and evaluate it "
                       "in Python, with its inputs as a list"),
    (two_outputs_model, "holds a model of 2 outputs; a dataset gives one label a sample: train "
                        "and evaluate it in Python, with its targets as a list"),
], ids=["inputs", "outputs"])
def test_a_model_of_several_inputs_or_outputs_is_refused_by_the_command_line(
        tmp_path, tiny, make, message):  # noqa: F811
    """It would fit the dataset's features and classes: the check still says no."""
    path = tmp_path / "two.npz"
    make().save(path)
    for command in (("evaluate", str(path)), ("train", "--resume", str(path))):
        refused = run(*command, "--dataset", "tiny")
        assert refused.exit_code == 2 and refused.output.strip().endswith(
            f"Error: {path} {message}"), refused.output


def test_resume_takes_the_architecture_from_the_checkpoint_unless_told_otherwise(
        tmp_path, tiny):  # noqa: F811
    model = tmp_path / "model.npz"
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    trained = run("train", "--dataset", "tiny", "--epochs", "2", "--hidden", "16", "--hidden",
                  "8", "--lr", "0.01", "--save", str(model), "--history", str(first))
    assert trained.exit_code == 0, trained.output
    resumed = run("train", "--dataset", "tiny", "--epochs", "3", "--resume", str(model),
                  "--history", str(second))
    assert resumed.exit_code == 0, resumed.output
    losses = [epoch["loss"] for epoch in json.loads(first.read_text())["epochs"]]
    # The curve goes on below the second epoch's loss instead of starting again from the first.
    assert json.loads(second.read_text())["epochs"][0]["loss"] < losses[1] < losses[0]
    same = run("train", "--dataset", "tiny", "--epochs", "2", "--resume", str(model),
               "--hidden", "16", "--hidden", "8", "--dtype", "float32")
    assert same.exit_code == 0, same.output
    for option, wanted in ((["--hidden", "16"], "16 relu -> 3 softmax (float32)"),
                           (["--dtype", "float64"], "16 relu -> 8 relu -> 3 softmax (float64)")):
        refused = run("train", "--dataset", "tiny", "--resume", str(model), *option)
        assert refused.exit_code == 1
        assert refused.output == (f"Error: {model} holds a model 16 relu -> 8 relu -> 3 softmax "
                                  f"(float32), not {wanted}; leave out --hidden and --dtype to "
                                  "go on with the saved one\n")


def test_divergence_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, tiny):  # noqa: F811
    model = tmp_path / "model.npz"
    good = run("train", "--dataset", "tiny", "--epochs", "1", "--save", str(model))
    assert good.exit_code == 0
    before = model.read_bytes()
    diverged = run("train", "--dataset", "tiny", "--epochs", "3", "--optimizer", "sgd",
                   "--lr", "1e30", "--save", str(model))
    assert diverged.exit_code == 1, diverged.output
    assert "Error: training diverged" in diverged.output and "Traceback" not in diverged.output
    assert model.read_bytes() == before  # the run diverged in its first epoch
    loaded = load_model(model)
    assert all(np.all(np.isfinite(w)) for w in loaded.get_weights())


def test_save_writes_the_name_given_even_with_braces(tmp_path, tiny):  # noqa: F811
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "model-{epoch}.npz"  # a file name, not a Keras ModelCheckpoint pattern
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--save", str(model))
    assert result.exit_code == 0, result.output
    assert [path.name for path in folder.iterdir()] == ["model-{epoch}.npz"]
    assert load_model(model).epochs_done == 2


def test_plot_without_matplotlib_is_a_clear_error(tiny, monkeypatch, tmp_path):  # noqa: F811
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 1
    assert "Error: --plot needs matplotlib: pip install 'dnn-framework[plot]'" in result.output
    assert not (tmp_path / "p.png").exists()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny):  # noqa: F811
    path = tmp_path / "model.npz"
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--hidden", "16",
                 "--save", str(path))
    assert result.exit_code == 0, result.output
    return path, result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("case, mutate, message", [
    ("state shape", lambda meta, arrays: arrays.update(state_0_mean_square=np.zeros((3, 3))),
     "the optimizer's mean_square for weight 0 has shape (3, 3), not (12, 16)"),
    ("step count text", lambda meta, arrays: meta["optimizer"].update(iterations="x"),
     "the optimizer's step count is 'x'"),
    ("negative step count", lambda meta, arrays: meta["optimizer"].update(iterations=-5),
     "the optimizer's step count is -5"),
    ("text weights", lambda meta, arrays: arrays.update(weight_1=np.array(["a"] * 16)),
     "is damaged: weight 1 must be real numbers, not <U1"),
    ("NaN weights", lambda meta, arrays: arrays["weight_2"].__setitem__((0, 0), np.nan),
     "holds NaN or infinite values in weight 2: the model it saved had diverged"),
    ("NaN state", lambda meta, arrays: arrays["state_1_mean_square"].__setitem__(0, np.inf),
     "holds NaN or infinite values in the optimizer's mean_square for weight 1: the model it "
     "saved had diverged"),
    ("extra state", lambda meta, arrays: arrays.update(state_0_momentum=np.zeros((12, 16))),
     "it holds optimizer state state_0_momentum that RMSprop does not have"),
    ("claims huge units", lambda meta, arrays: meta["model"]["layers"][0].update(units=300000),
     "weight 0 has shape (12, 16); its architecture 300000 relu -> 3 softmax (float32) needs "
     "(12, 300000)"),
    ("a (2e7, 0) weight", lambda meta, arrays: arrays.update(weight_0=np.zeros((20000000, 0))),
     "weight 0 has shape (20000000, 0); its architecture 16 relu -> 3 softmax (float32) needs "
     "(20000000, 16)"),
])
def test_damaged_checkpoints_are_one_error_line(tmp_path, tiny_checkpoint, case, mutate,
                                                message):
    source, _ = tiny_checkpoint
    path = rewritten(source, tmp_path / "damaged.npz", mutate)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_model(path)
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--hidden", "16",
                 "--resume", str(path))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_a_diverged_model_is_not_saved(tmp_path, cpu):
    x, labels = blobs(n=32)
    model = seed_network(cpu)
    model.fit(x, to_categorical(labels), epochs=1, verbose=0)
    weights = model.get_weights()
    weights[3][0] = np.nan
    model.set_weights(weights)
    path = tmp_path / "kept.npz"
    path.write_bytes(b"the user's file")
    with pytest.raises(DivergenceError, match=r"the model's weight 3 holds NaN or infinite "
                                              r"values \(its training diverged\): not saved to "):
        model.save(path)
    weights[3][0] = 0.0
    model.set_weights(weights)
    model.optimizer.states[1]["mean_square"][0] = np.inf  # RMSprop's, for the first bias
    with pytest.raises(DivergenceError, match=r"the model's optimizer's mean_square for weight 1 "
                                              r"holds NaN or infinite values"):
        model.save(path)
    assert path.read_bytes() == b"the user's file"


def test_a_model_whose_optimizer_is_not_installed_evaluates_but_does_not_resume(
        tmp_path, tiny_checkpoint):
    source, trained_line = tiny_checkpoint
    path = rewritten(source, tmp_path / "gone.npz",
                      lambda meta, arrays: meta["optimizer"].update(name="gone"))
    evaluated = run("evaluate", str(path), "--dataset", "tiny")
    assert evaluated.exit_code == 0 and evaluated.output.strip() == trained_line
    resumed = run("train", "--dataset", "tiny", "--hidden", "16", "--resume", str(path))
    assert resumed.exit_code == 1
    assert resumed.output.startswith(f"Error: {path} was trained with the optimizer 'gone', "
                                     "which is not installed here (installed: ")


def test_a_model_compiled_without_optimizer_evaluates_and_saves_but_does_not_train(tmp_path, cpu):
    x, labels = blobs(n=32)
    trained = seed_network(cpu)
    trained.fit(x, to_categorical(labels), epochs=1, batch_size=8)
    checkpoint.save(trained, tmp_path / "m.npz")
    model = load_model(tmp_path / "m.npz", with_optimizer=False)
    assert model.optimizer is None
    assert model.evaluate(x, to_categorical(labels)) == trained.evaluate(x, to_categorical(labels))
    with pytest.raises(UsageError, match="compiled without an optimizer"):
        model.fit(x, to_categorical(labels))
    with pytest.raises(UsageError, match="compiled without an optimizer"):
        model.train_on_batch(x, to_categorical(labels))
    model.save(tmp_path / "again.npz")  # as Keras saves a model without an optimizer
    again = load_model(tmp_path / "again.npz")
    assert again.optimizer is None and again.get_config() == trained.get_config()
    assert again.evaluate(x, to_categorical(labels)) == model.evaluate(x, to_categorical(labels))


SCALAR_STATE_OPTIMIZER = """
from dnn.optimizers import Optimizer

class Counted(Optimizer):
    def __init__(self, learning_rate=0.1):
        super().__init__(learning_rate=learning_rate)

    def init_state(self, param):
        xp = self.xp
        return {"steps": xp.zeros((), dtype=xp.int64), "squares": xp.zeros((), dtype=param.dtype)}

    def update(self, param, grad, state):
        state["steps"] += 1
        state["squares"] += self.xp.sum(grad * grad)
        param -= self.learning_rate * grad
"""


def test_optimizer_state_of_other_shapes_and_dtypes_than_the_parameters_resumes(
        tmp_path, tiny, install_fake_plugin):  # noqa: F811
    install_fake_plugin("fake-counted", "1.0",
                        {"dnn.optimizers": {"counted": "fake_counted:Counted"}},
                        {"fake_counted": SCALAR_STATE_OPTIMIZER})
    path = tmp_path / "counted.npz"
    trained = run("train", "--dataset", "tiny", "--epochs", "1", "--optimizer", "counted",
                  "--save", str(path))
    assert trained.exit_code == 0, trained.output
    saved = load_model(path).optimizer
    assert [int(state["steps"]) for state in saved.states] == [saved.iterations] * 4
    assert all(state["steps"].dtype == np.int64 and state["squares"].dtype == np.float32
               for state in saved.states)
    resumed = run("train", "--dataset", "tiny", "--epochs", "2", "--resume", str(path),
                  "--save", str(path))
    assert resumed.exit_code == 0, resumed.output
    assert [int(state["steps"]) for state in load_model(path).optimizer.states] == \
        [2 * saved.iterations] * 4


def test_numpy_scalar_hyperparameters_are_saved_as_numbers(tmp_path, cpu):
    x, labels = blobs(n=32)
    model = seed_network(cpu)
    model.compile(optimizer=dnn.optimizers.RMSprop(learning_rate=np.float32(0.5),
                                                   rho=np.float64(0.8), centered=np.bool_(True)))
    model.fit(x, to_categorical(labels), epochs=1)
    path = tmp_path / "model.npz"
    checkpoint.save(model, path)
    config = load_model(path).optimizer.get_config()
    assert (config["learning_rate"], config["rho"], config["centered"]) == (0.5, 0.8, True)
    assert type(config["rho"]) is float and type(config["centered"]) is bool


OBJECT_HYPERPARAMETER_OPTIMIZER = """
from dnn.optimizers import Optimizer

class Scheduled(Optimizer):
    def __init__(self, learning_rate=0.1, schedule=None):
        self.schedule = schedule
        super().__init__(learning_rate=learning_rate)

    def update(self, param, grad, state):
        param -= self.learning_rate * grad
"""


def test_a_hyperparameter_json_cannot_hold_is_refused_and_the_old_file_kept(
        tmp_path, cpu, install_fake_plugin):
    install_fake_plugin("fake-scheduled", "1.0",
                        {"dnn.optimizers": {"scheduled": "fake_sched:Scheduled"}},
                        {"fake_sched": OBJECT_HYPERPARAMETER_OPTIMIZER})
    from fake_sched import Scheduled

    x, labels = blobs(n=32)
    model = seed_network(cpu)
    model.compile(optimizer=Scheduled(schedule=lambda step: 0.1))
    model.fit(x, to_categorical(labels), epochs=1)
    path = tmp_path / "model.npz"
    path.write_bytes(b"an earlier checkpoint")
    with pytest.raises(UsageError, match=r"cannot save .*model.npz: the optimizer's "
                                         r"hyper-parameters .* must be numbers, strings, "
                                         r"booleans or None \(function "):
        checkpoint.save(model, path)
    assert path.read_bytes() == b"an earlier checkpoint"


@pytest.mark.parametrize("loss, metrics", [("mean_squared_error", []),
                                           ("sparse_categorical_crossentropy", ["accuracy"])])
def test_models_saved_with_another_loss_evaluate_and_resume_on_the_command_line(
        tmp_path, tiny, cpu, loss, metrics):  # noqa: F811
    from fake_tiny import Tiny

    (x, labels), (x_test, labels_test) = Tiny().load()
    model = seed_network(cpu)
    model.compile(optimizer="rmsprop", loss=loss, metrics=metrics)
    sparse = loss.startswith("sparse")
    model.fit(x, labels if sparse else to_categorical(labels, 3), epochs=2, batch_size=32)
    path = tmp_path / "model.npz"
    checkpoint.save(model, path)
    results = model.evaluate(x_test, labels_test if sparse else to_categorical(labels_test, 3))
    expected_loss = results[0] if metrics else results
    accuracy = np.mean(np.argmax(model.predict(x_test), axis=1) == labels_test)
    evaluated = run("evaluate", str(path), "--dataset", "tiny")
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output == f"test: loss {expected_loss:.4f} accuracy {accuracy:.4f}\n"
    history = tmp_path / "resumed.json"
    resumed = run("train", "--dataset", "tiny", "--epochs", "3", "--resume", str(path),
                  "--history", str(history))
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 3/3" in resumed.output
    record = json.loads(history.read_text())
    assert 0 <= record["epochs"][0]["accuracy"] <= 1 and 0 <= record["test"]["accuracy"] <= 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_checkpoint_path_that_is_not_a_file_is_named_as_such(tmp_path, tiny):  # noqa: F811
    pipe = tmp_path / "model.npz"
    os.mkfifo(pipe)
    result = run("evaluate", str(pipe), "--dataset", "tiny")
    assert result.exit_code == 1 and result.output == f"Error: checkpoint {pipe} is not a file\n"
    missing = run("evaluate", str(tmp_path / "gone.npz"), "--dataset", "tiny")
    assert missing.output == f"Error: checkpoint {tmp_path / 'gone.npz'} does not exist\n"


# -- hostile files: bounded reads, one error line ----------------------------------------------
def method(number: int) -> dict:
    """A patch of every zip header's compression method to ``number``."""
    return {(b"PK\x03\x04", 8): lambda old: number.to_bytes(2, "little"),
            (b"PK\x01\x02", 10): lambda old: number.to_bytes(2, "little")}


ENCRYPTED = {(b"PK\x03\x04", 6): lambda old: bytes([old[0] | 1, old[1]]),
             (b"PK\x01\x02", 8): lambda old: bytes([old[0] | 1, old[1]])}


META = json.dumps({"format": "dnn-checkpoint", "version": 1})


def object_header() -> bytes:
    """The .npy header of a one-element array of Python objects (a pickle would follow)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False,
                                                  "shape": (1,)})
    return buffer.getvalue()


def hostile(tmp_path, case):
    path = tmp_path / "hostile.npz"
    meta = npy(np.asarray(META))
    cases = {
        "an unused 3 GiB member": lambda: zipped(
            path, {"meta.npy": meta, "extra.npy": (3 << 30, bytes(1 << 20))},
            zipfile.ZIP_DEFLATED),
        "a 3 GiB weight of zeros": lambda: zipped(
            path, {"meta.npy": meta, "weight_0.npy": (3 << 30, bytes(1 << 20))},
            zipfile.ZIP_DEFLATED),
        "deeply nested meta": lambda: zipped(
            path, {"meta.npy": npy(np.asarray("[" * 100000 + "]" * 100000))}),
        "a malformed npy header": lambda: zipped(
            path, {"meta.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': '<U3',   \n"}),
        "an npy with a zip appended": lambda: zipped(
            path, {"meta.npy": meta + zipped(tmp_path / "inner.zip", {"x.npy": meta})
                   .read_bytes()}),
        "a member without .npy": lambda: zipped(path, {"meta.npy": meta, "meta": b"x"}),
        "the encrypted flag": lambda: patched(zipped(path, {"meta.npy": meta}), ENCRYPTED),
        "compression method 1": lambda: patched(zipped(path, {"meta.npy": meta}), method(1)),
        "compression method 99": lambda: patched(zipped(path, {"meta.npy": meta}), method(99)),
        "an object array": lambda: zipped(path, {"meta.npy": object_header() + b"x" * 8}),
    }
    return cases[case]()


HOSTILE = {
    "an unused 3 GiB member": "holds a member 'extra.npy', which a dnn checkpoint does not",
    "a 3 GiB weight of zeros": "member 'weight_0.npy' inflates from",
    "deeply nested meta": "its meta member is not JSON dnn can read: RecursionError",
    "a malformed npy header": "the header of meta cannot be read",
    "an npy with a zip appended": "meta declares () <U",
    "a member without .npy": "holds a member 'meta', which a dnn checkpoint does not",
    "the encrypted flag": "member 'meta.npy' is encrypted",
    "compression method 1": "uses compression method 1, not stored or deflate",
    "compression method 99": "uses compression method 99, not stored or deflate",
    "an object array": "meta holds Python objects, which dnn never loads",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoints_are_refused_in_one_line_within_bounded_memory(tmp_path, case,
                                                                          tiny):  # noqa: F811
    path = hostile(tmp_path, case)
    peak = peak_bytes(lambda: load_model(path), CheckpointError, re.escape(HOSTILE[case]))
    assert peak < 32 << 20, f"reading it took {peak:,} bytes"
    result = run("evaluate", str(path), "--dataset", "tiny")
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert HOSTILE[case] in result.output and len(result.output.splitlines()) == 1


@pytest.mark.parametrize("call, error, message", [
    (lambda cpu: load_model(123), UsageError, "a checkpoint path must be a file name, "
     "not int"),
    (lambda cpu: load_model(None), UsageError, "a checkpoint path must be a file name, "
     "not NoneType"),
    (lambda cpu: load_model("m.npz", backend="nope"), UsageError, "unknown backend 'nope'"),
    (lambda cpu: load_model("m.npz", seed=-1), UsageError, "seed must be a non-negative"),
])
def test_load_blames_its_arguments_not_the_file(tmp_path, monkeypatch, cpu, call, error,
                                                message):
    monkeypatch.chdir(tmp_path)
    model = seed_network(cpu)
    model.build(12)
    checkpoint.save(model, tmp_path / "m.npz")
    with pytest.raises(error, match=re.escape(message)) as raised:
        call(cpu)
    assert "damaged" not in str(raised.value)


def test_resume_continues_the_epochs_the_history_and_the_shuffle_bit_for_bit(tmp_path,
                                                                            tiny):  # noqa: F811
    """3 epochs, then --resume with --epochs 5 (the total, as Keras counts it), is the run
    of 5 epochs: same weights and optimizer state, same history (its epochs numbered on),
    same printed epoch numbers."""
    common = ["--dataset", "tiny", "--hidden", "16", "--batch-size", "32"]
    straight = run("train", *common, "--epochs", "5", "--save", str(tmp_path / "s.npz"),
                   "--history", str(tmp_path / "s.json"))
    first = run("train", *common, "--epochs", "3", "--save", str(tmp_path / "r.npz"),
                "--history", str(tmp_path / "r.json"))
    resumed = run("train", "--dataset", "tiny", "--epochs", "5", "--batch-size", "32",
                  "--resume", str(tmp_path / "r.npz"), "--save", str(tmp_path / "r.npz"),
                  "--history", str(tmp_path / "r.json"))
    for result in (straight, first, resumed):
        assert result.exit_code == 0, result.output
    assert [line for line in resumed.output.splitlines() if line.startswith("Epoch")] == [
        "Epoch 4/5", "Epoch 5/5"]
    with np.load(tmp_path / "s.npz") as one, np.load(tmp_path / "r.npz") as two:
        for name in one.files:
            if name != "meta":
                np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    records = [json.loads((tmp_path / name).read_text()) for name in ("s.json", "r.json")]
    for record in records:
        for epoch in record["epochs"]:
            del epoch["seconds"]
    assert records[1]["epochs"] == records[0]["epochs"]
    assert [epoch["epoch"] for epoch in records[1]["epochs"]] == [1, 2, 3, 4, 5]
    assert records[1]["test"] == records[0]["test"]


def test_a_checkpoint_with_dropout_resumes_on_the_command_line(tmp_path, tiny,  # noqa: F811
                                                             cpu):
    """Saved from the Python API, layers the command line never builds are named in its
    messages, and the model trains on."""
    x, labels = blobs(n=60, features=12)
    model = dnn.Sequential([dnn.layers.Dense(16, activation="relu"), dnn.layers.Dropout(0.2),
                            dnn.layers.Dense(3, activation="softmax")], seed=0, backend=cpu)
    model.compile(metrics=["accuracy"])
    model.fit(x, to_categorical(labels), epochs=1, verbose=0)
    model.save(tmp_path / "dropout.npz")
    refused = run("train", "--dataset", "tiny", "--resume", str(tmp_path / "dropout.npz"),
                  "--hidden", "16")
    assert refused.exit_code == 1
    assert "holds a model 16 relu -> dropout -> 3 softmax (float32), not 16 relu -> 3 " \
           "softmax (float32)" in refused.output
    resumed = run("train", "--dataset", "tiny", "--epochs", "2", "--resume",
                  str(tmp_path / "dropout.npz"))
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 2/2" in resumed.output


@pytest.mark.parametrize("middle, shown", [(lambda: dnn.layers.Dropout(0.2), "dropout"),
                                           (lambda: dnn.layers.Activation("tanh"), "activation"),
                                           (lambda: dnn.layers.Flatten(), "flatten")])
def test_resume_with_dtype_alone_takes_any_saved_layers(tmp_path, tiny, cpu,  # noqa: F811
                                                        middle, shown):
    """--dtype without --hidden compares the dtype alone: the saved layers, whatever their
    kinds (not only Dense, which has units), stay as they are."""
    x, labels = blobs(n=60, features=12)
    model = dnn.Sequential([dnn.layers.Dense(16, activation="relu"), middle(),
                            dnn.layers.Dense(3, activation="softmax")], seed=0, backend=cpu)
    model.compile(metrics=["accuracy"])
    model.fit(x, to_categorical(labels), epochs=1, verbose=0)
    path = tmp_path / "saved.npz"
    model.save(path)
    refused = run("train", "--dataset", "tiny", "--resume", str(path), "--dtype", "float64")
    assert refused.exit_code == 1, refused.output
    assert refused.output == (
        f"Error: {path} holds a model 16 relu -> {shown} -> 3 softmax (float32), not 16 relu -> "
        f"{shown} -> 3 softmax (float64); leave out --hidden and --dtype to go on with the "
        "saved one\n")
    resumed = run("train", "--dataset", "tiny", "--epochs", "2", "--resume", str(path),
                  "--dtype", "float32")
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 2/2" in resumed.output


@pytest.mark.parametrize("compiled, command, message", [
    (False, "evaluate", "holds a model saved without compile.. .no loss.: compile it with its "
                        "loss before saving it"),
    (True, "train", "holds a model compiled without an optimizer: there is no training to "
                    "resume")], ids=["evaluate-uncompiled", "resume-without-optimizer"])
def test_the_command_line_says_what_a_saved_model_lacks(tmp_path, tiny, compiled,  # noqa: F811
                                                        command, message):
    inputs = dnn.Input(shape=(12,))
    model = dnn.Model(inputs, dnn.layers.Dense(3, activation="softmax")(inputs))
    if compiled:
        model.compile(optimizer=None, loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "model.npz")
    arguments = (["evaluate", str(tmp_path / "model.npz")] if command == "evaluate" else
                 ["train", "--resume", str(tmp_path / "model.npz"), "--epochs", "1"])
    result = run(*arguments, "--dataset", "tiny")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda model: pickle.loads(
    pickle.dumps(model))], ids=["deepcopy", "pickle"])
def test_a_model_deep_copied_or_pickled_is_the_same_model_apart(copier):
    x, labels = blobs(n=64)
    inputs = dnn.Input(shape=(x.shape[1],))
    model = dnn.Model(inputs, dnn.layers.Dense(3, activation="softmax")(inputs), name="blob")
    assert copier(model).get_config() == model.get_config()  # not built yet: its config
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, labels, epochs=2, verbose=0)
    copied = copier(model)
    assert type(copied) is dnn.Model and copied.name == "blob"
    assert int(copied.optimizer.iterations) == int(model.optimizer.iterations) > 0
    assert copied.evaluate(x, labels, verbose=0) == model.evaluate(x, labels, verbose=0)
    copied.fit(x, labels, epochs=1, verbose=0)  # trains apart from the original
    assert not np.array_equal(copied.get_weights()[0], model.get_weights()[0])
    with pytest.raises(UsageError, match="copying or pickling a compiled model needs it "
                                         "built"):
        copier(_compiled_unbuilt())


def test_a_subclass_of_a_model_is_not_copied_as_dnns_class():
    class WithAHelper(dnn.Sequential):
        def helper(self):
            return 1

    model = WithAHelper([dnn.layers.Dense(2)])
    model.build((3,))
    with pytest.raises(UsageError, match="copying or pickling a WithAHelper .a subclass of a "
                                         "model. is not supported"):
        copy.deepcopy(model)


def test_the_command_line_refuses_a_model_of_its_input_alone(tmp_path, tiny):  # noqa: F811
    dnn.Sequential([dnn.Input(shape=(12,))]).save(tmp_path / "input.npz")
    result = run("evaluate", str(tmp_path / "input.npz"), "--dataset", "tiny")
    assert result.exit_code == 1 and result.output.strip().endswith(
        "holds a model of its Input alone: no layer computes its outputs"), result.output


def _compiled_unbuilt():
    model = dnn.Sequential([dnn.layers.Dense(2)])
    model.compile("sgd")
    return model
