"""The seed network on the real MNIST, as the README runs it (needs DNN_DATA_DIR)."""

import json

from click.testing import CliRunner

from dnn.cli import main


def test_seed_network_reaches_keras_accuracy(mnist_dir, tmp_path):
    history = tmp_path / "history.json"
    result = CliRunner().invoke(main, [
        "train", "--backend", "cpu", "--dataset", "mnist", "--optimizer", "rmsprop",
        "--epochs", "5", "--batch-size", "128", "--seed", "0", "--data-dir", str(mnist_dir),
        "--history", str(history)])
    assert result.exit_code == 0, result.output
    record = json.loads(history.read_text())
    assert len(record["epochs"]) == 5
    assert record["test"]["accuracy"] >= 0.978, record["test"]
