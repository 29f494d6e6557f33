"""Fashion-MNIST through the conformance kit and the CLI, on generated full-size IDX files
(the real ones need the network)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnn import plugins, testing
from dnn.cli import main
from dnn.datasets.idx import write_idx
from dnn.errors import DataError
from dnn_fashion_mnist import FashionMNIST


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """Learnable fake data: each class lights up its own band of rows."""
    folder = tmp_path_factory.mktemp("fashion")
    for prefix, count in (("train", 60000), ("t10k", 10000)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = np.zeros((count, 28, 28), np.uint8)
        for digit in range(10):
            images[labels == digit, 2 * digit:2 * digit + 3, :] = 200
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, compress=True)
    return folder


def test_fashion_mnist_passes_the_conformance_kit(fashion_dir):
    testing.check_dataset(FashionMNIST, data_dir=fashion_dir)


def test_fashion_mnist_trains_through_the_cli(fashion_dir, tmp_path):
    assert plugins.find("dataset", "fashion_mnist").distribution == "dnn-fashion-mnist"
    history = tmp_path / "history.json"
    result = CliRunner().invoke(main, ["train", "--dataset", "fashion_mnist", "--epochs", "1",
                                       "--hidden", "32", "--data-dir", str(fashion_dir),
                                       "--history", str(history)])
    assert result.exit_code == 0, result.output
    record = json.loads(history.read_text())
    assert record["dataset"] == "fashion_mnist" and record["test"]["accuracy"] > 0.9


def test_mnist_files_under_the_same_names_are_refused():
    """MNIST's files have Fashion-MNIST's names: a folder of them must not load as fashion."""
    folder = os.environ.get("DNN_DATA_DIR")
    if not folder or not (Path(folder) / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("real MNIST not available: set DNN_DATA_DIR to a folder with the IDX files")
    with pytest.raises(DataError, match="not fashion_mnist's .*another dataset's files"):
        FashionMNIST().load(folder)
