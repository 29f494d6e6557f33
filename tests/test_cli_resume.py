"""``dnn train --resume MODEL.npz --epochs N``: N counts the epochs in all, as Keras'
``fit(epochs=N, initial_epoch=...)`` does.  That 3 epochs resumed to 5 are the run of 5 bit
for bit is checked in tests/test_checkpoints.py."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dnn.cli import main
from dnn.models import load_model
from tests.test_cli import tiny  # noqa: F401  (the tiny dataset plugin fixture)

TRAIN = ["train", "--dataset", "tiny", "--hidden", "16", "--batch-size", "32"]


def run(*args):
    """``dnn ARGS`` in process, without $DNN_DATA_DIR: the fake datasets read no folder."""
    return CliRunner(env={"DNN_DATA_DIR": None}).invoke(main, list(args))


def epoch_lines(result) -> list:
    """The ``Epoch i/n`` lines a run printed."""
    return [line for line in result.output.splitlines() if line.startswith("Epoch")]


@pytest.fixture
def three_epochs(tmp_path, tiny):  # noqa: F811
    """A checkpoint of 3 epochs, its history file and the test line its run printed."""
    model, history = tmp_path / "model.npz", tmp_path / "history.json"
    result = run(*TRAIN, "--epochs", "3", "--save", str(model), "--history", str(history))
    assert result.exit_code == 0, result.output
    assert load_model(model).epochs_done == 3
    return model, history, result.output.splitlines()[-1]


def test_epochs_counts_the_total_so_resuming_3_to_5_trains_the_4th_and_5th(tmp_path,
                                                                          three_epochs):
    model, _, _ = three_epochs
    history = tmp_path / "resumed.json"  # no earlier records to go on from
    resumed = run("train", "--dataset", "tiny", "--batch-size", "32", "--resume", str(model),
                  "--epochs", "5", "--save", str(model), "--history", str(history))
    assert resumed.exit_code == 0, resumed.output
    assert epoch_lines(resumed) == ["Epoch 4/5", "Epoch 5/5"]
    assert [epoch["epoch"] for epoch in json.loads(history.read_text())["epochs"]] == [4, 5]
    assert load_model(model).epochs_done == 5


def test_epochs_equal_to_those_done_trains_nothing_and_records_the_model_as_it_is(
        tmp_path, three_epochs):
    model, history, trained_line = three_epochs
    before, recorded = model.read_bytes(), json.loads(history.read_text())
    copy = tmp_path / "copy.npz"
    same = run("train", "--dataset", "tiny", "--resume", str(model), "--epochs", "3",
               "--save", str(copy), "--history", str(history))
    assert same.exit_code == 0, same.output
    assert epoch_lines(same) == [] and same.output.splitlines() == [trained_line]
    assert json.loads(history.read_text()) == recorded  # its 3 epochs, the same test figures
    assert model.read_bytes() == before
    saved = load_model(copy)
    assert saved.epochs_done == 3
    for mine, theirs in zip(saved.get_weights(), load_model(model).get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_a_plot_of_a_resumed_run_that_trains_nothing_is_refused(tmp_path, three_epochs):
    pytest.importorskip("matplotlib")
    model, _, _ = three_epochs
    before = model.read_bytes()
    result = run("train", "--dataset", "tiny", "--resume", str(model), "--epochs", "3",
                 "--save", str(model), "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: --plot draws the epochs of this run: give --epochs 4 or more ({model} has "
        "trained 3)")
    assert not (tmp_path / "p.png").exists() and model.read_bytes() == before


@pytest.mark.parametrize("epochs", ["2", "0"])
def test_fewer_epochs_than_done_is_a_usage_error_that_changes_no_file(three_epochs, epochs):
    """Under the old meaning (this many more) it trained on: now one line naming both
    numbers, exit 2, and the checkpoint and history left byte for byte."""
    model, history, _ = three_epochs
    before = model.read_bytes(), history.read_bytes()
    refused = run("train", "--dataset", "tiny", "--resume", str(model), "--epochs", epochs,
                  "--save", str(model), "--history", str(history))
    assert refused.exit_code == 2, refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: --epochs {epochs} is fewer than the 3 epochs {model} has "
                      "trained; --epochs counts the total, as Keras' epochs does"]
    assert refused.output.splitlines()[-1] == errors[0]
    assert "Traceback" not in refused.output and epoch_lines(refused) == []
    assert (model.read_bytes(), history.read_bytes()) == before


def test_the_default_epochs_fewer_than_done_says_it_is_the_default(three_epochs):
    model, _, _ = three_epochs
    assert run("train", "--dataset", "tiny", "--resume", str(model), "--epochs", "6",
               "--save", str(model)).exit_code == 0
    before = model.read_bytes()
    refused = run("train", "--dataset", "tiny", "--resume", str(model), "--save", str(model))
    assert refused.exit_code == 2, refused.output
    assert refused.output.splitlines()[-1] == (
        f"Error: --epochs 5 (the default) is fewer than the 6 epochs {model} has trained; "
        "--epochs counts the total, as Keras' epochs does")
    assert model.read_bytes() == before


@pytest.mark.parametrize("held", ['{"epochs": [1, 2]}', '{"epochs": 5}', '{"epochs": null}',
                                  "[" * 100000 + "]" * 100000, '{"epochs": [{"epoch": "1"}]}'])
def test_a_history_file_of_another_shape_is_started_anew_when_resuming(tmp_path, three_epochs,
                                                                       held):
    model, _, _ = three_epochs
    history = tmp_path / "other.json"
    history.write_text(held)
    resumed = run("train", "--dataset", "tiny", "--batch-size", "32", "--resume", str(model),
                  "--epochs", "4", "--history", str(history))
    assert resumed.exit_code == 0, resumed.output
    assert [epoch["epoch"] for epoch in json.loads(history.read_text())["epochs"]] == [4]


def test_evaluate_and_a_run_of_no_epochs_print_the_accuracy_among_other_metrics(tmp_path,
                                                                               three_epochs):
    import dnn

    model, _, trained_line = three_epochs
    saved = load_model(model)
    saved.compile(optimizer=saved.optimizer, loss=saved.loss,
                  metrics=["mae", "top_k_categorical_accuracy", "accuracy"])
    other = tmp_path / "metrics.npz"
    saved.save(other)
    assert [metric.name for metric in dnn.load_model(other).metrics][0] == "mae"
    evaluated = run("evaluate", str(other), "--dataset", "tiny")
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output.splitlines() == [trained_line]
    same = run("train", "--dataset", "tiny", "--resume", str(other), "--epochs", "3")
    assert same.exit_code == 0 and same.output.splitlines() == [trained_line], same.output
