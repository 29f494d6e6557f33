"""The examples of the README, the plugin guide and how-it-learns work as printed: users copy
them."""

import ast
import re
import sys
from pathlib import Path

import pytest

from dnn import testing, utils

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "plugins.md"


def blocks(language: str, page: Path = GUIDE) -> list[str]:
    """The fenced code blocks of ``language`` in ``page``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.S | re.M)


def test_the_readme_example_trains_mnist_to_keras_accuracy(mnist_dir, monkeypatch, capsys,
                                                           tmp_path):
    monkeypatch.setenv("DNN_DATA_DIR", str(mnist_dir.resolve()))
    monkeypatch.chdir(tmp_path)  # it saves mnist.npz
    monkeypatch.setattr(utils, "_model_seeds", None)  # it calls set_random_seed: undone after
    example = blocks("python", ROOT / "README.md")[0]
    on_the_gpu = example.index("with keras.use_backend(\"gpu\")")  # needs a GPU: left out
    exec(compile(example[:on_the_gpu], "README.md", "exec"), {})
    *epochs, result = capsys.readouterr().out.strip().splitlines()
    assert epochs[0::2] == [f"Epoch {n}/5" for n in range(1, 6)]
    assert all(line.startswith("469/469 - ") for line in epochs[1::2])
    loss, accuracy = ast.literal_eval(result)
    assert accuracy >= 0.978 and loss < 0.1
    assert (tmp_path / "mnist.npz").is_file()


def test_the_optimizer_example_passes_the_conformance_kit():
    namespace = {}
    example_code = next(block for block in blocks("python") if "class Lion" in block)
    exec(compile(example_code, str(GUIDE), "exec"), namespace)
    testing.check_optimizer(namespace["Lion"])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_the_pyproject_example_has_what_pip_needs():
    import tomllib

    config = tomllib.loads(blocks("toml")[0])
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"
    assert {"name", "version"} <= set(config["project"])
    assert config["project"]["entry-points"]["dnn.optimizers"] == {"lion": "dnn_lion:Lion"}


def test_the_dataset_example_is_the_fashion_mnist_plugin():
    plugin = pytest.importorskip("dnn_fashion_mnist")
    namespace = {}
    example_code = next(block for block in blocks("python") if "class FashionMNIST" in block)
    exec(compile(example_code, str(GUIDE), "exec"), namespace)
    example, shipped = namespace["FashionMNIST"], plugin.FashionMNIST
    for attribute in ("name", "files", "mirrors", "image_shape", "num_classes", "sizes",
                      "class_counts"):
        assert getattr(example, attribute) == getattr(shipped, attribute), attribute


def test_the_step_by_hand_in_how_it_learns_matches_dnn(capsys):
    page = ROOT / "docs" / "how-it-learns.md"
    exec(compile(blocks("python", page)[0], str(page), "exec"), {})  # asserts the weights
    by_hand, by_dnn = re.findall(r"[0-9]+\.[0-9]+", capsys.readouterr().out)
    assert by_hand == by_dnn and 2.0 < float(by_hand) < 2.7  # about ln(10) at the start


def test_the_convolution_by_hand_in_how_it_learns_matches_dnn(capsys):
    page = ROOT / "docs" / "how-it-learns.md"
    example = next(block for block in blocks("python", page) if "Conv2D(" in block)
    exec(compile(example, str(page), "exec"), {})  # asserts outputs and gradients
    assert capsys.readouterr().out == "Conv2D matches the loops\n"


def test_the_layer_example_of_the_plugin_guide_trains_and_passes_its_check(capsys):
    example = next(block for block in blocks("python") if "class Scale(Layer)" in block)
    check = next(block for block in blocks("python") if "check_layer(Scale()" in block)
    names = {}
    exec(compile(example, str(GUIDE), "exec"), names)
    before, after = map(float, re.findall(r"[0-9]+\.[0-9]+", capsys.readouterr().out))
    assert after < before
    exec(compile(check, str(GUIDE), "exec"), names)  # raises where a gradient is wrong
