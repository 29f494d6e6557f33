"""The command line, in process, on a tiny dataset plugin: outputs, files, exit codes."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from dnn.models import load_model
from dnn.cli import main
from dnn.utils import to_categorical

TINY_DATASET = """
import numpy as np

class Tiny:
    name = "tiny"
    num_classes = 3

    def load(self, data_dir=None):
        rng = np.random.default_rng(0)
        centres = rng.normal(scale=3.0, size=(3, 12))
        def split(n):
            labels = rng.integers(0, 3, size=n)
            x = np.clip((centres[labels] + rng.normal(size=(n, 12))) / 10 + 0.5, 0, 1)
            return x.astype(np.float32), labels
        return split(300), split(100)
"""


@pytest.fixture
def tiny(install_fake_plugin):
    install_fake_plugin("fake-tiny", "1.0", {"dnn.datasets": {"tiny": "fake_tiny:Tiny"}},
                        {"fake_tiny": TINY_DATASET})


def run(*args, **env):
    """``dnn ARGS`` in process, with ``env`` set and without $DNN_DATA_DIR unless given: the
    fake datasets read no folder, and a DNN_DATA_DIR naming a missing one would be refused."""
    return CliRunner(env={"DNN_DATA_DIR": None, **env}).invoke(main, list(args))


def test_train_writes_history_in_the_documented_schema(tiny, tmp_path):
    history = tmp_path / "history.json"
    result = run("train", "--dataset", "tiny", "--epochs", "3", "--batch-size", "32",
                 "--hidden", "16", "--lr", "0.01", "--history", str(history))
    assert result.exit_code == 0, result.output
    assert result.output.count("Epoch ") == 3 and "test: loss" in result.output
    record = json.loads(history.read_text())
    assert {k: record[k] for k in ("backend", "optimizer", "dataset")} == {
        "backend": "cpu", "optimizer": "rmsprop", "dataset": "tiny"}
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    for epoch in record["epochs"]:
        assert set(epoch) == {"epoch", "loss", "accuracy", "test_loss", "test_accuracy",
                              "seconds"}
    assert set(record["test"]) == {"loss", "accuracy"}
    assert record["test"]["accuracy"] == record["epochs"][-1]["test_accuracy"]
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"]


def test_the_final_test_figures_are_those_of_the_trained_weights(tiny, tmp_path):
    from fake_tiny import Tiny

    history, saved = tmp_path / "history.json", tmp_path / "model.npz"
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--history", str(history),
                 "--save", str(saved))
    assert result.exit_code == 0, result.output
    _, (x_test, labels) = Tiny().load()
    loss, accuracy = load_model(saved).evaluate(x_test, to_categorical(labels, 3))
    assert json.loads(history.read_text())["test"] == {"loss": loss, "accuracy": accuracy}
    assert result.output.endswith(f"test: loss {loss:.4f} accuracy {accuracy:.4f}\n")


def test_zero_epochs_write_a_history_with_the_untrained_test_result(tiny, tmp_path):
    history = tmp_path / "history.json"
    result = run("train", "--dataset", "tiny", "--epochs", "0", "--history", str(history))
    assert result.exit_code == 0, result.output
    record = json.loads(history.read_text())
    assert record["epochs"] == [] and set(record["test"]) == {"loss", "accuracy"}
    assert f"test: loss {record['test']['loss']:.4f}" in result.output


def test_an_interrupted_run_keeps_the_history_of_its_finished_epochs(tiny, tmp_path,
                                                                     monkeypatch):
    from dnn.trainers import Trainer

    evaluate_batches = Trainer.evaluate_batches
    calls = []

    def interrupted_in_epoch_2(self, *args, **kwargs):
        calls.append(1)
        if len(calls) in (2, 3):  # the test-set pass of epoch 2, then of the next run's 1
            raise KeyboardInterrupt
        return evaluate_batches(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate_batches", interrupted_in_epoch_2)
    history, model = tmp_path / "history.json", tmp_path / "model.npz"
    result = run("train", "--dataset", "tiny", "--epochs", "3", "--history", str(history),
                 "--save", str(model))
    assert result.exit_code == 130
    assert result.output.splitlines()[-1] == (f"Error: interrupted (Ctrl-C); the last checkpoint "
                                              f"saved is in {model}")
    assert load_model(model).epochs_done == 1
    unsaved = run("train", "--dataset", "tiny", "--epochs", "3")
    assert unsaved.output.splitlines()[-1] == ("Error: interrupted (Ctrl-C); no checkpoint was "
                                               "saved (no --save)")
    record = json.loads(history.read_text())
    assert [epoch["epoch"] for epoch in record["epochs"]] == [1]
    assert record["test"] == {"loss": record["epochs"][0]["test_loss"],
                              "accuracy": record["epochs"][0]["test_accuracy"]}


BROKEN_DATASET = """
import numpy as np

class Broken:
    name = "broken"

    def load(self, data_dir=None):
        rng = np.random.default_rng(0)
        x, y = rng.random((50, 6)).astype(np.float32), rng.integers(0, 3, 50)
        RETURN
"""


@pytest.mark.parametrize("body, problem", [
    ("raise RuntimeError('the server said no')", "failed: RuntimeError: the server said no"),
    ("raise FileNotFoundError('no stripes here')",
     "failed: FileNotFoundError: no stripes here"),
    ("return None", "broke the dataset contract: load() must return ((x_train, y_train), "),
    ("return x, y", "broke the dataset contract: the train split must be a pair (images, labels)"),
    ("return ((x * 255).astype(np.uint8), y), (x, y)",
     "broke the dataset contract: the train images are uint8, not float32"),
    ("return (x * 255, y), (x, y)", "broke the dataset contract: the train images are not in"),
    ("return (x, y + 0.5), (x, y)",
     "broke the dataset contract: the train labels must be integers (N,), not float64 (50,)"),
    ("return (x, y - 1), (x, y)", "broke the dataset contract: the train labels must be >= 0"),
    ("return (x, y[:10]), (x, y)",
     "broke the dataset contract: the train split has images of shape (50, 6) and 10 labels"),
    ("return (np.float32(0.5), y), (x, y)",
     "broke the dataset contract: the train images and labels must be host NumPy arrays"),
    ("return (np.array(0.5, np.float32), y[:1]), (x, y)",
     "broke the dataset contract: the train split has images of shape () and 1 labels"),
    ("return (x, y), (x[:, :3], y)",
     "broke the dataset contract: the train images have shape (6,) and the test images (3,)"),
])
def test_a_broken_dataset_plugin_is_one_error_line_naming_it(install_fake_plugin, tmp_path,
                                                             body, problem):
    install_fake_plugin("fake-broken-data", "1.2", {"dnn.datasets": {"broken": "fake_bd:Broken"}},
                        {"fake_bd": BROKEN_DATASET.replace("RETURN", body)})
    model = tmp_path / "model.npz"
    _save_a_six_feature_model(model)
    for command in (["train", "--dataset", "broken", "--epochs", "1"],
                    ["evaluate", str(model), "--dataset", "broken"]):
        result = run(*command)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: dataset 'broken' from fake-broken-data 1.2 "
                                        f"{problem}"), result.output
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


BROKEN_OPTIMIZER = """
from dnn.optimizers import Optimizer

class Broken(Optimizer):
    def __init__(self, learning_rate=0.1):
        INIT
        super().__init__(learning_rate=learning_rate)

    def init_state(self, param):
        STATE

    def update(self, param, grad, state):
        UPDATE
"""
_WORKING = {"INIT": "pass", "STATE": "return {}", "UPDATE": "param -= self.learning_rate * grad"}


def _optimizer_source(**parts) -> str:
    """BROKEN_OPTIMIZER with each placeholder filled by ``parts`` or by its working code."""
    source = BROKEN_OPTIMIZER
    for placeholder, working in _WORKING.items():
        source = source.replace(placeholder, parts.get(placeholder, working))
    return source


def test_an_update_that_works_in_place_may_return_param(tiny, install_fake_plugin):
    source = _optimizer_source(
        UPDATE="param -= self.learning_rate * grad\n        return param")
    install_fake_plugin("fake-returns-param", "0.1",
                        {"dnn.optimizers": {"chained": "fake_rp:Broken"}}, {"fake_rp": source})
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--optimizer", "chained")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("part, code, problem", [
    ("INIT", "raise ValueError('no licence key')", "failed to start: ValueError: no licence key"),
    ("STATE", "raise KeyError('m')", "failed in init_state(): KeyError: 'm'"),
    ("STATE", "return [self.xp.zeros_like(param)]",
     ": init_state() must return a dict of arrays made with self.xp, not list"),
    ("STATE", "return {'m': 0.0}",
     ": init_state() must return a dict of arrays made with self.xp, not a dict with 'm': float"),
    ("UPDATE", "raise RuntimeError('boom')", "failed in update(): RuntimeError: boom"),
    ("UPDATE", "return param - self.learning_rate * grad",
     ": update() returned a new array; it must change param and its state in place"),
])
def test_a_broken_optimizer_plugin_is_one_error_line_naming_it(tiny, install_fake_plugin,
                                                               part, code, problem):
    install_fake_plugin("fake-broken-opt", "0.3", {"dnn.optimizers": {"broken": "fake_bo:Broken"}},
                        {"fake_bo": _optimizer_source(**{part: code})})
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--optimizer", "broken")
    assert result.exit_code == 1, result.output
    *progress, last = result.output.splitlines()
    assert last.startswith(f"Error: optimizer 'broken' from fake-broken-opt 0.3"
                           f"{'' if problem.startswith(':') else ' '}{problem}"), result.output
    assert "Traceback" not in result.output
    assert progress in ([], ["Epoch 1/1"])  # the epoch it failed in, for an update


@pytest.mark.parametrize("source, problem, listed_broken", [
    ("class Broken:\n    name = 'broken'\n", "is not a dataset class with load(data_dir=None)",
     True),
    ("Broken = 3\n", "is not a dataset class with load(data_dir=None)", True),
    ("class Broken:\n    def __init__(self):\n        raise RuntimeError('no config')\n"
     "    def load(self, data_dir=None):\n        pass\n",
     "failed to start: RuntimeError: no config", False),
])
def test_a_dataset_plugin_that_is_no_dataset_class_is_one_error_line(install_fake_plugin, tmp_path,
                                                                     source, problem,
                                                                     listed_broken):
    install_fake_plugin("fake-odd-data", "0.1", {"dnn.datasets": {"broken": "fake_od:Broken"}},
                        {"fake_od": source})
    model = tmp_path / "model.npz"
    _save_a_six_feature_model(model)
    message = f"Error: dataset 'broken' from fake-odd-data 0.1 {problem}\n"
    for command in (["train", "--dataset", "broken"],
                    ["evaluate", str(model), "--dataset", "broken"]):
        result = run(*command)
        assert result.exit_code == 1 and result.output == message, result.output
    listed = run("plugins")
    assert listed.exit_code == 0
    assert (f"broken: {message[7:-1]}" in listed.output) == listed_broken, listed.output


def test_an_optimizer_plugin_that_is_no_optimizer_class_is_refused_before_the_data_loads(
        install_fake_plugin):
    install_fake_plugin("fake-odd", "0.4", {"dnn.optimizers": {"odd": "fake_odd:Odd"},
                                            "dnn.datasets": {"slow": "fake_odd:Slow"}},
                        {"fake_odd": "class Odd:\n    pass\n\n"
                                     "class Slow:\n    def load(self, data_dir=None):\n"
                                     "        raise RuntimeError('loaded the data')\n"})
    message = "optimizer 'odd' from fake-odd 0.4 is not a dnn.optimizers.Optimizer subclass"
    result = run("train", "--dataset", "slow", "--optimizer", "odd")
    assert result.exit_code == 1 and result.output == f"Error: {message}\n", result.output
    assert f"broken: {message}" in run("plugins").output
    for wrong in (["--optimizer", "lamb"], ["--opt", "rho=high"], ["--lr", "-1"]):
        result = run("train", "--dataset", "slow", *wrong)
        assert result.exit_code == 2 and "loaded the data" not in result.output, result.output


def test_a_dataset_of_one_class_is_refused(install_fake_plugin):
    install_fake_plugin("fake-one", "1.0", {"dnn.datasets": {"one": "fake_one:One"}},
                        {"fake_one": BROKEN_DATASET.replace("class Broken", "class One").replace(
                            "RETURN", "return (x, 0 * y), (x, 0 * y)")})
    result = run("train", "--dataset", "one", "--epochs", "1")
    assert result.exit_code == 1
    assert result.output == ("Error: dataset 'one' has one class only (every label is 0): there "
                             "is nothing to tell apart\n")


def _save_a_six_feature_model(path):
    import dnn
    from dnn.saving import checkpoint
    from dnn.layers import Dense

    model = dnn.Sequential([Dense(4, activation="relu"), Dense(3, activation="softmax")], seed=0)
    model.compile()
    model.build(6)
    checkpoint.save(model, path)


def test_opt_passes_typed_hyperparameters(tiny, tmp_path):
    history = tmp_path / "h.json"
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--optimizer", "sgd",
                 "--opt", "momentum=0.9", "--opt", "nesterov=true", "--history", str(history))
    assert result.exit_code == 0, result.output
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--optimizer", "sgd",
                 "--opt", "beta=2")
    assert result.exit_code == 2
    assert ("SGD takes no option 'beta'; accepted: learning_rate, momentum, nesterov"
            in result.output)


@pytest.mark.parametrize("args, status, message", [
    (["--backend", "tpu"], 2, "unknown backend 'tpu'; installed: "),
    (["--optimizer", "lamb"], 2, "unknown optimizer 'lamb'; installed: adam, "),
    (["--dataset", "cifar"], 2, "unknown dataset 'cifar'; installed: "),
    (["--batch-size", "0"], 2, "--batch-size"),
    (["--epochs", "-1"], 2, "--epochs"),
    (["--lr", "-0.5"], 2, "learning_rate must be a finite number >= 0"),
    (["--lr", "nan"], 2, "learning_rate must be a finite number >= 0"),
    (["--opt", "momentum"], 2, "--opt wants KEY=VALUE"),
    (["--lr", "0.1", "--opt", "learning_rate=0.2"], 2, "give the learning rate once"),
    (["--opt", "epsilon=0"], 2, "RMSprop epsilon must be above 0"),
    (["--seed", "-5"], 2, "--seed"),
    (["--dtype", "float16"], 2, "float16"),
])
def test_bad_input_exits_with_one_error_line(tiny, args, status, message):
    result = run("train", "--dataset", "tiny", "--epochs", "1", *args)
    assert result.exit_code == status, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1


@pytest.mark.parametrize("option", ["--save", "--history", "--plot"])
def test_an_unwritable_destination_fails_before_training(tiny, tmp_path, option):
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("a user's file")
    result = run("train", "--dataset", "tiny", "--epochs", "1", option,
                 str(in_the_way / "out.file"))
    assert result.exit_code == 2, result.output
    assert f"Error: {option} {in_the_way / 'out.file'}: cannot write a file there" in result.output
    assert "epoch " not in result.output and "Traceback" not in result.output
    assert in_the_way.read_text() == "a user's file"


@pytest.mark.parametrize("first, second", [("--history", "--save"), ("--save", "--plot"),
                                           ("--resume", "--history")])
def test_two_options_naming_one_file_are_refused(tiny, tmp_path, first, second):
    shared = tmp_path / "out.file"
    shared.write_bytes(b"a user's file")
    other_spelling = tmp_path / "sub" / ".." / "out.file"
    result = run("train", "--dataset", "tiny", "--epochs", "1", first, str(shared),
                 second, str(other_spelling))
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and error.endswith("; give each its own file")
    assert f"{first} and {second} both name" in error or f"{second} and {first} both name" in error
    assert shared.read_bytes() == b"a user's file"


def test_resume_may_save_over_its_own_checkpoint(tiny, tmp_path):
    model = tmp_path / "model.npz"
    assert run("train", "--dataset", "tiny", "--epochs", "1", "--save", str(model)).exit_code == 0
    before = model.read_bytes()
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--resume", str(model),
                 "--save", str(model))
    assert result.exit_code == 0, result.output
    assert model.read_bytes() != before and load_model(model).epochs_done == 2


def test_a_write_that_fails_mid_run_is_one_error_line(tiny, tmp_path, monkeypatch):
    import errno

    from dnn.saving import checkpoint

    def disk_full(model, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save", disk_full)
    target = tmp_path / "model.npz"
    result = run("train", "--dataset", "tiny", "--epochs", "1", "--save", str(target))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {target}: No space left on device")
    assert "Traceback" not in result.output


def test_gpu_without_cupy_or_device_is_a_clean_runtime_error(tiny, tmp_path):
    from dnn.backends.gpu import GpuBackend

    if GpuBackend.is_available():
        pytest.skip("a GPU is present here")
    model = tmp_path / "model.npz"
    _save_a_six_feature_model(model)
    for command in (["train", "--dataset", "tiny", "--backend", "gpu"],
                    ["evaluate", str(model), "--dataset", "tiny", "--backend", "gpu"],
                    ["check", "--backend", "gpu"]):
        result = run(*command)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: backend 'gpu' is unavailable: ")
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_installed_example_plugins_train_through_the_cli(tiny, tmp_path):
    from dnn import plugins

    if "lion" not in plugins.names("optimizer"):
        pytest.skip("the dnn-lion example plugin is not installed (CI installs it)")
    rows = json.loads(run("plugins", "--json").output)
    statuses = {(r["kind"], r["name"]): r["status"] for r in rows}
    assert statuses[("optimizer", "lion")] == "available"
    assert statuses.get(("dataset", "fashion_mnist")) == "available"
    assert statuses.get(("backend", "strict")) == "available"
    history = tmp_path / "h.json"
    result = run("train", "--dataset", "tiny", "--optimizer", "lion", "--lr", "0.001",
                 "--opt", "weight_decay=0.01", "--backend", "strict", "--epochs", "2",
                 "--hidden", "16", "--history", str(history))
    assert result.exit_code == 0, result.output
    record = json.loads(history.read_text())
    assert (record["optimizer"], record["backend"]) == ("lion", "strict")
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"]


def test_plot_writes_a_png(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_with_zero_epochs_is_refused_before_loading_anything(tiny, tmp_path):
    result = run("train", "--dataset", "tiny", "--epochs", "0", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "Error: --plot draws the epochs of this run: give --epochs 1 or more" in result.output
    assert not (tmp_path / "p.png").exists()


def test_the_plot_marks_whole_epochs_only(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as pyplot

    from dnn import plotting

    figures = []
    monkeypatch.setattr(pyplot, "close", figures.append)
    history = {"loss": [0.5, 0.3, 0.2], "accuracy": [0.8, 0.9, 0.95],
               "test_loss": [0.6, 0.4, 0.3], "test_accuracy": [0.7, 0.85, 0.9]}
    plotting.plot_history(history, tmp_path / "curves.png", "tiny: 16 relu -> 3 softmax")
    figure = figures[0]
    assert figure._suptitle.get_text() == "tiny: 16 relu -> 3 softmax"
    for axis, metric in zip(figure.axes, ("loss", "accuracy")):
        ticks = [tick for tick in axis.get_xticks() if 1 <= tick <= 3]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        assert (axis.get_xlabel(), axis.get_ylabel()) == ("epoch", metric)
        assert [line.get_label() for line in axis.get_lines()] == ["train", "test"]
        assert list(axis.get_lines()[0].get_xdata()) == [1, 2, 3]
    plotting.plot_history(history, tmp_path / "resumed.png", "resumed", epochs=[4, 5, 6])
    assert [list(line.get_xdata()) for line in figures[1].axes[0].get_lines()] == [[4, 5, 6]] * 2


def test_python_dash_m_dnn_and_help():
    for command, usage in ((["--help"], "Usage: dnn [OPTIONS] COMMAND"),
                           (["train", "--help"], "Usage: dnn train [OPTIONS]")):
        finished = subprocess.run([sys.executable, "-m", "dnn", *command], capture_output=True,
                                  text=True, timeout=60)
        assert finished.returncode == 0, finished.stderr
        assert finished.stdout.startswith(usage), finished.stdout
    for flag in ("--backend", "--optimizer", "--opt", "--hidden", "--save", "--resume", "--plot"):
        assert flag in finished.stdout


def test_python_dash_m_dnn_fails_as_the_console_script_does():
    """The same exit status and output, usage lines and ``Error:`` line alike."""
    from scripts.hostile import console_script

    script = console_script()
    if script[0] == sys.executable:
        pytest.skip("no dnn console script beside this Python")
    arguments = ["train", "--optimizer", "nosuch", "--epochs", "0"]
    environment = {name: value for name, value in os.environ.items() if name != "DNN_DATA_DIR"}
    by_script, by_module = (subprocess.run([*start, *arguments], capture_output=True, text=True,
                                           timeout=60, env=environment)
                            for start in (script, [sys.executable, "-m", "dnn"]))
    assert by_module.returncode == by_script.returncode == 2
    assert by_module.stderr.splitlines()[-1].startswith("Error: unknown optimizer 'nosuch'")
    assert (by_module.stdout, by_module.stderr) == (by_script.stdout, by_script.stderr)


def test_python_dash_m_dnn_goes_through_the_console_scripts_entry(tmp_path):
    """A real SIGINT while ``python -m dnn`` imports its command line is the console script's
    one line and exit 130 (dnn/entry.py), not a traceback."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import builtins, os, signal
        real = builtins.__import__
        def interrupted(name, *args, **kwargs):
            if name == "click":
                os.kill(os.getpid(), signal.SIGINT)
            return real(name, *args, **kwargs)
        builtins.__import__ = interrupted
    """))
    result = subprocess.run([sys.executable, "-m", "dnn", "plugins"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 130, result.stderr
    assert result.stderr == "Error: interrupted (Ctrl-C) while starting; nothing was done\n"
    assert result.stdout == ""


def test_the_package_and_the_command_report_the_installed_version():
    from importlib import metadata

    import dnn

    assert dnn.__version__ == metadata.version("dnn-framework")
    assert run("--version").output.strip() == f"main, version {dnn.__version__}"


def test_import_dnn_reads_its_version_when_asked_for_it_only():
    """``import dnn`` reads no distribution metadata (a search of sys.path); ``__version__``
    does, once."""
    code = ("import sys, dnn\n"
            "print('dnn.plugins' in sys.modules, '__version__' in vars(dnn))\n"
            "from importlib import metadata\n"
            "print(dnn.__version__ == metadata.version('dnn-framework'),"
            " '__version__' in vars(dnn))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "True"]


def test_sigterm_during_a_write_leaves_no_temporary_file_and_exits_143(tmp_path):
    code = textwrap.dedent("""
        import os, signal, sys, time
        from pathlib import Path
        import click
        from dnn.cli.commands import reports_errors
        from dnn.saving.fileio import atomic_write

        @click.command()
        @click.argument("path")
        @reports_errors
        def slow_save(path):
            with atomic_write(Path(path)) as file:
                file.write(b"half a model")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)

        slow_save()
    """)
    target = tmp_path / "model.npz"
    result = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 143
    assert result.stderr.strip().splitlines() == [
        "Error: stopped by SIGTERM; files being written were left as they were"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, status, line", [
    ("SIGINT", 130, "Error: interrupted (Ctrl-C); no checkpoint was saved (no --save)"),
    ("SIGTERM", 143, "Error: stopped by SIGTERM; files being written were left as they were")])
def test_a_signal_python_swallows_is_delivered_again(name, status, line):
    """A signal's exception raised inside a ``__del__`` (or a weakref callback of the import
    system, where a Ctrl-C once went unheeded) is lost to Python: the command would have run
    on; it is delivered again, and stops the command in one line."""
    code = textwrap.dedent(f"""
        import os, signal, time
        import click
        from dnn.cli.commands import reports_errors

        class SignalledWhileCollected:
            def __del__(self):
                os.kill(os.getpid(), signal.{name})  # its handler runs here, in __del__

        @click.command()
        @reports_errors
        def work():
            SignalledWhileCollected()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                pass
            print("ran on")

        work()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == line + "\n"


def test_a_write_protected_save_target_is_refused_before_training(tiny, tmp_path):
    target = tmp_path / "best.npz"
    target.write_bytes(b"the user's best model")
    os.chmod(target, 0o444)
    result = run("train", "--dataset", "tiny", "--save", str(target))
    assert result.exit_code == 2
    assert "--save" in result.output and "write-protected (mode 0444)" in result.output
    assert target.read_bytes() == b"the user's best model"


def test_a_bad_option_creates_no_folder_for_the_outputs(tiny, tmp_path):
    result = run("train", "--dataset", "tiny", "--save", str(tmp_path / "a" / "b" / "m.npz"),
                 "--optimizer", "nope")
    assert result.exit_code == 2 and "unknown optimizer 'nope'" in result.output
    assert not (tmp_path / "a").exists()


def test_a_missing_data_folder_is_named_not_downloaded_into(tmp_path):
    result = run("train", "--data-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "Error: Invalid value for '--data-dir'" in result.output
    assert "does not exist" in result.output and not (tmp_path / "nowhere").exists()


def test_a_ctrl_c_while_the_command_line_starts_is_one_line():
    """A real SIGINT, sent while the command line is being imported (in the middle of
    importing click, as a user's Ctrl-C would come), ends in one line and exit 130."""
    code = ("import builtins, os, signal\n"
            "real = builtins.__import__\n"
            "def interrupted(name, *args, **kwargs):\n"
            "    if name == 'click':\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = interrupted\n"
            "from dnn.entry import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code, "plugins"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 130
    assert result.stderr == "Error: interrupted (Ctrl-C) while starting; nothing was done\n"
    assert result.stdout == ""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Fake plugins (the tiny dataset among them) for a subprocess's PYTHONPATH."""
    from scripts.hostile import fake_site

    return fake_site(tmp_path_factory.mktemp("cli") / "site")


def _started(site, args, **options):
    """``dnn ARGS`` through the console script (``python -m dnn`` where there is none), in a
    new process whose PYTHONPATH holds ``site``'s plugins."""
    from scripts.hostile import console_script

    environment = {name: value for name, value in os.environ.items() if name != "DNN_DATA_DIR"}
    environment["PYTHONPATH"] = str(site)
    return subprocess.Popen([*console_script(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment, **options)


def _wait_for_numpy(process) -> bool:
    """Wait until ``process`` has loaded NumPy's core (its command line is being imported,
    after the console script's handler is in place); False if it ended first."""
    maps = f"/proc/{process.pid}/maps"
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with open(maps) as mapped:
                if "_multiarray_umath" in mapped.read():
                    return True
        time.sleep(0.0005)
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.04, 0.15])
def test_a_ctrl_c_at_any_moment_after_the_console_script_starts_is_one_line(site, delay):
    """From the moment the console script runs (NumPy's core loads while the command line is
    imported, after it) a SIGINT is one line and exit 130, whether it comes during the
    imports, the parsing or the training.  What comes before dnn's first line, the
    interpreter's own start, no code of dnn can handle (dnn/entry.py says so)."""
    process = _started(site, ["train", "--dataset", "tiny", "--epochs", "100000"])
    assert _wait_for_numpy(process), process.communicate()[0]
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and "Aborted" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert errors in (["Error: interrupted (Ctrl-C) while starting; nothing was done"],
                      ["Error: interrupted (Ctrl-C); no checkpoint was saved (no --save)"]), output


def test_a_ctrl_c_while_training_through_the_console_script_says_what_was_kept(site,
                                                                              tmp_path):
    process = _started(site, ["train", "--dataset", "tiny", "--hidden", "512", "--epochs",
                              "100000", "--save", str(tmp_path / "m.npz")])
    _epoch_started(process)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert output.splitlines()[-1] in (
        "Error: interrupted (Ctrl-C); no checkpoint was saved",
        f"Error: interrupted (Ctrl-C); the last checkpoint saved is in {tmp_path / 'm.npz'}")


def _epoch_started(process) -> list:
    """The lines ``process`` printed until its first epoch began."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Epoch 1/"):
            return lines
    raise AssertionError("".join(lines))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_stops_training_as_sigterm_does_in_one_line_with_exit_129(site, tmp_path):
    """The terminal went away: one line, what was kept, 128 + 1; never a bare death."""
    process = _started(site, ["train", "--dataset", "tiny", "--hidden", "512", "--epochs",
                              "100000", "--save", str(tmp_path / "m.npz")],
                       preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # nohup
    _epoch_started(process)
    process.send_signal(signal.SIGHUP)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 129, output
    assert output.splitlines()[-1] == ("Error: stopped by SIGHUP; files being written were "
                                       "left as they were")
    assert "Traceback" not in output
    assert [path.name for path in tmp_path.iterdir()] in ([], ["m.npz"])


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_under_nohup_a_sighup_is_ignored_and_training_goes_on(site):
    process = _started(site, ["train", "--dataset", "tiny", "--hidden", "64", "--epochs", "40"],
                       preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _epoch_started(process)
    process.send_signal(signal.SIGHUP)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Epoch 40/40" in output and "test: loss" in output


def test_a_refused_plugin_is_one_warning_line(install_fake_plugin):
    install_fake_plugin("fake-evil", "1.0", {"dnn.optimizers": {"adam": "fake_evil:Evil"}},
                        {"fake_evil": "class Evil:\n    pass\n"})
    result = CliRunner().invoke(main, ["plugins"])
    warning = [line for line in result.stderr.splitlines() if "fake-evil" in line]
    assert warning == ["Warning: plugin 'adam' from fake-evil: optimizer name 'adam' is already "
                       "provided by dnn-framework; this one is ignored"]
    assert "warnings.warn" not in result.stderr and "UserWarning" not in result.stderr


def test_an_optimizer_that_rebinds_param_stops_training_at_its_first_step(
        tiny, install_fake_plugin):
    install_fake_plugin("fake-rebinds", "1.0", {"dnn.optimizers": {"rebinds": "fake_r:Broken"}},
                        {"fake_r": _optimizer_source(UPDATE="param = param - 0.1 * grad")})
    result = run("train", "--dataset", "tiny", "--epochs", "3", "--optimizer", "rebinds")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: optimizer 'rebinds' from fake-rebinds 1.0: update() left every parameter as it "
        "was: change param in place (param -= step), not by assigning a new array to the name")
    assert "Epoch 2/3" not in result.output


def test_validation_split_adds_val_figures_beside_the_test_ones(tiny, tmp_path):
    history = tmp_path / "history.json"
    result = run("train", "--dataset", "tiny", "--epochs", "2", "--validation-split", "0.2",
                 "--history", str(history))
    assert result.exit_code == 0, result.output
    # 240 of the 300 samples train, in batches of 128: 2 steps
    summaries = [line for line in result.output.splitlines() if line.startswith("2/2 - ")]
    assert len(summaries) == 2
    for line in summaries:
        assert "- val_loss: " in line and "- test_loss: " in line
    assert set(json.loads(history.read_text())["epochs"][0]) == {
        "epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"}
    refused = run("train", "--dataset", "tiny", "--validation-split", "1")
    assert refused.exit_code == 2 and "--validation-split" in refused.output


@pytest.mark.parametrize("rate", ["0", "1e-45"])
@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd", "adam"])
def test_a_learning_rate_that_moves_nothing_trains_without_blaming_the_optimizer(
        tiny, tmp_path, rate, optimizer):
    """Keras allows --lr 0 (a frozen run, to measure a loss): the weights stay as they
    were, and no built-in optimizer is said to break its plugin contract."""
    saved = tmp_path / "frozen.npz"
    result = run("train", "--dataset", "tiny", "--hidden", "16", "--epochs", "2", "--lr", rate,
                 "--optimizer", optimizer, "--save", str(saved))
    assert result.exit_code == 0, result.output
    if rate == "0":
        first = run("train", "--dataset", "tiny", "--hidden", "16", "--epochs", "0",
                    "--save", str(tmp_path / "untrained.npz"))
        assert first.exit_code == 0, first.output
        for frozen, untrained in zip(load_model(saved).get_weights(),
                                     load_model(tmp_path / "untrained.npz").get_weights()):
            np.testing.assert_array_equal(frozen, untrained)


@contextlib.contextmanager
def _read_if_blocked(pipe, seconds=20):
    """Open ``pipe`` for reading after ``seconds`` unless the block ends first: a writer that
    blocked on it (no one reads it) is released, and the test fails instead of hanging."""
    timer = threading.Timer(seconds, lambda: pipe.read_bytes())
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextlib.contextmanager
def _special(kind, tmp_path):
    """A path that is not a regular file: a named pipe, a socket, or the null device."""
    if kind == "named pipe":
        os.mkfifo(tmp_path / "out")
        with _read_if_blocked(tmp_path / "out"):
            yield tmp_path / "out"
    elif kind == "socket":
        folder = tempfile.mkdtemp(dir="/tmp")  # a socket's path must be short
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(os.path.join(folder, "s"))
            yield os.path.join(folder, "s")
        os.unlink(os.path.join(folder, "s"))
        os.rmdir(folder)
    else:
        yield os.devnull


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(socket, "AF_UNIX"),
                    reason="no named pipes or sockets in the file system here")
@pytest.mark.parametrize("kind", ["named pipe", "socket", "character device"])
@pytest.mark.parametrize("option", ["--save", "--history", "--plot"])
def test_an_output_that_is_no_regular_file_is_refused_before_training(tiny, tmp_path, kind,
                                                                      option):
    """A named pipe as --save used to block after training, until killed: refused at once,
    in one line naming the option and the path, as a device or a socket is."""
    with _special(kind, tmp_path) as path:
        started = time.monotonic()
        result = run("train", "--dataset", "tiny", "--epochs", "1", option, str(path))
        assert time.monotonic() - started < 10
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (f"Error: {option} {path}: cannot write there (it "
                                              f"is a {kind}, not a regular file)")
    assert "Epoch" not in result.output


@pytest.mark.parametrize("where, problem", [("/dev/zero", "is not a folder"),
                                            ("a file", "is a file, not a folder"),
                                            ("nowhere", "does not exist")])
@pytest.mark.parametrize("given", ["environment", "option"])
def test_a_data_folder_that_is_no_folder_is_one_line_naming_where_it_came_from(
        tmp_path, where, problem, given):
    """Refused before any file is looked for "in" it (or downloaded instead): --data-dir at
    once, $DNN_DATA_DIR by the dataset that reads it."""
    folder = "/dev/zero" if where == "/dev/zero" else str(tmp_path / where)
    if where == "a file":
        (tmp_path / where).write_text("notes")
    env = {"DNN_DATA_DIR": folder, "DNN_CACHE_DIR": str(tmp_path / "cache")}
    if given == "environment":
        result = run("train", "--epochs", "0", **env)
        expected = f"Error: $DNN_DATA_DIR {folder} {problem}"
    else:
        result = run("train", "--epochs", "0", "--data-dir", folder, **env)
        expected = f"Error: Invalid value for '--data-dir': {folder!r} {problem}."
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        expected]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command", [["check", "--backend", "cpu"],
                                     ["train", "--dataset", "tiny", "--epochs", "1"]])
def test_a_stale_dnn_data_dir_stops_no_command_that_reads_no_folder(tiny, tmp_path, command):
    """$DNN_DATA_DIR naming a folder that is gone is the business of the datasets that read
    it: the fake ones (and `dnn check` without --dataset) read none."""
    result = run(*command, DNN_DATA_DIR=str(tmp_path / "gone"))
    assert result.exit_code == 0, result.output


def test_train_help_says_what_epochs_counts_and_gives_examples():
    text = run("train", "--help").output
    assert ("Epochs (passes over the training data) in all, as Keras' fit(epochs=) counts "
            "them: with --resume of a checkpoint that has trained 3, --epochs 5 trains the "
            "4th and 5th.") in " ".join(text.split())
    assert "Examples:" in text
    assert "dnn train --resume model.npz --epochs 5      # on to 5 epochs in all" in text


IMAGES_DATASET = TINY_DATASET.replace('name = "tiny"', 'name = "images"').replace(
    "return x.astype(np.float32), labels", "return x.reshape(n, 3, 4).astype(np.float32), labels")


def test_the_command_lines_network_takes_images_flattened_without_a_warning(
        install_fake_plugin, tmp_path):
    """The command line's dense network takes (N, 28, 28) images flattened, by design: the
    warning a Keras user gets for a Dense on images (it would apply to their last axis) is
    not for its user, who has no Flatten to add."""
    assert IMAGES_DATASET != TINY_DATASET.replace('name = "tiny"', 'name = "images"')
    install_fake_plugin("fake-images", "1.0", {"dnn.datasets": {"images": "fake_images:Tiny"}},
                        {"fake_images": IMAGES_DATASET})
    model = tmp_path / "model.npz"
    trained = run("train", "--dataset", "images", "--epochs", "1", "--hidden", "8",
                  "--save", str(model))
    evaluated = run("evaluate", str(model), "--dataset", "images")
    for result in (trained, evaluated):
        assert result.exit_code == 0, result.output
        assert "Warning" not in result.output and "flattened" not in result.output
