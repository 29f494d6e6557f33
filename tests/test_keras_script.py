"""A Keras user's script of the seed network, as Keras' own examples write it, runs with only
its import changed (``import dnn as keras``), on the real MNIST."""

import textwrap
from pathlib import Path

import numpy as np

import dnn as keras
from dnn import utils as keras_utils

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KERAS_SCRIPT = (EXAMPLES / "mnist_mlp.py").read_text()


def run_script(source: str, filename: str, mnist_dir, monkeypatch, tmp_path) -> dict:
    """The names a Keras user's script ``source`` left, run in ``tmp_path`` on the real MNIST
    (the seed it sets undone after)."""
    monkeypatch.setenv("DNN_DATA_DIR", str(mnist_dir.resolve()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_utils, "_model_seeds", None)
    names = {}
    exec(compile(textwrap.dedent(source), filename, "exec"), names)
    return names


def run_example_on_fewer_images(name: str, fit: str, fewer: str, mnist_dir, monkeypatch,
                                tmp_path, capsys) -> tuple[dict, str]:
    """``(names, printed)`` of ``examples/name`` run with its call ``fit`` made ``fewer``
    (the same training on fewer images)."""
    script = (EXAMPLES / name).read_text()
    short = script.replace(fit, fewer)
    assert short != script
    names = run_script(short, name, mnist_dir, monkeypatch, tmp_path)
    return names, capsys.readouterr().out


def test_a_keras_script_runs_with_only_its_import_changed(mnist_dir, monkeypatch, tmp_path,
                                                          capsys):
    names = run_script(KERAS_SCRIPT, "keras_script.py", mnist_dir, monkeypatch, tmp_path)
    output = capsys.readouterr().out
    assert "Total params: 407,050" in output and "Epoch 5/5" in output
    assert names["score"][1] >= 0.975
    assert set(names["history"].history) == {"loss", "acc", "val_loss", "val_acc"}  # as Keras 3
    np.testing.assert_allclose(names["predictions"],
                               names["model"].predict(names["x_test"][:10]), rtol=1e-6)
    assert (tmp_path / "mnist.npz").is_file()


TUTORIAL_SCRIPT = """
import numpy as np
import dnn as keras
from dnn import layers

keras.utils.set_random_seed(1)
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train[:12000].reshape(-1, 784).astype("float32") / 255
y_train = keras.utils.to_categorical(y_train[:12000])     # uint8 labels, classes inferred
x_test = x_test.reshape(-1, 784).astype("float32") / 255

model = keras.Sequential()
model.add(keras.Input(shape=(784,)))
model.add(layers.Dense(256, activation="relu",
                       kernel_regularizer=keras.regularizers.l2(1e-5)))
model.add(layers.Dropout(0.1))
model.add(layers.Dense(10))
model.add(layers.Activation("softmax"))
model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
              loss="categorical_crossentropy",
              metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=3)])


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


seen = []
history = model.fit(Batches(x_train, y_train, 128), epochs=3, verbose=0,
                    validation_data=(x_train[-2000:], y_train[-2000:]),
                    callbacks=[keras.callbacks.CSVLogger("training.csv"),
                               keras.callbacks.TerminateOnNaN(),
                               keras.callbacks.LambdaCallback(
                                   on_epoch_end=lambda epoch, logs: seen.append(epoch))])
model.layers[0].trainable = False  # the first Dense: an Input is no layer, as in Keras
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, np.argmax(y_train, axis=1), epochs=1, batch_size=256, verbose=0)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
"""


def test_a_keras_tutorial_past_the_first_script_runs_with_only_its_import_changed(
        mnist_dir, monkeypatch, tmp_path):
    names = run_script(TUTORIAL_SCRIPT, "tutorial.py", mnist_dir, monkeypatch, tmp_path)
    assert names["seen"] == [0, 1, 2]
    assert list(names["history"].history) == [
        "loss", "accuracy", "top_k_categorical_accuracy", "val_loss", "val_accuracy",
        "val_top_k_categorical_accuracy"]
    assert names["accuracy"] > 0.92  # 12,000 images, 4 epochs
    rows = (tmp_path / "training.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "epoch" and len(rows) == 4


# keras.io's "Simple MNIST convnet", as written there (its seed line added, for a test that
# gives the same result at every run); the test trains one of its 15 epochs.
CONVNET_SCRIPT = (EXAMPLES / "mnist_convnet.py").read_text()


def test_the_keras_mnist_convnet_runs_with_only_its_import_changed(mnist_dir, monkeypatch,
                                                                   tmp_path, capsys):
    script = CONVNET_SCRIPT.replace("epochs = 15", "epochs = 1")
    assert script != CONVNET_SCRIPT
    names = run_script(script, "mnist_convnet.py", mnist_dir, monkeypatch, tmp_path)
    output = capsys.readouterr().out
    assert "Total params: 34,826" in output and "(None, 5, 5, 64)" in output
    assert "Epoch 1/1" in output and "val_accuracy: " in output
    # After one epoch Keras 3 itself gives 0.976-0.978 on the validation images and
    # 0.971-0.974 on the test images over three seeds, as dnn does (docs/benchmarks.md).
    assert names["model"].history.history["val_accuracy"][0] >= 0.975
    assert names["score"][1] >= 0.97, names["score"]


def test_the_functional_guides_first_model_runs_with_only_its_import_changed(
        mnist_dir, monkeypatch, tmp_path, capsys):
    """keras.io/guides/functional_api, its first model as printed there: the summary, two
    epochs and the test accuracy (Keras 3 itself: 0.953-0.958 over three seeds,
    docs/benchmarks.md), then saved and loaded."""
    names = run_script((EXAMPLES / "mnist_functional.py").read_text(), "mnist_functional.py",
                       mnist_dir, monkeypatch, tmp_path)
    output = capsys.readouterr().out
    assert 'Model: "mnist_model"' in output and "Total params: 55,050" in output
    assert names["test_scores"][1] >= 0.95
    assert set(names["history"].history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert isinstance(names["model"], keras.Model) and names["model"].name == "mnist_model"
    assert (tmp_path / "my_model.keras").is_file()


def test_the_functional_guides_toy_resnet_runs_with_only_its_import_changed(
        mnist_dir, monkeypatch, tmp_path, capsys):
    """keras.io/guides/functional_api's toy ResNet, two residual blocks joined by
    layers.add, on MNIST: its summary says which layers each takes, and it trains (here on
    the first 2,000 images, as the guide trains on its first 1,000; on all of them it
    reaches Keras 3's test accuracy, docs/benchmarks.md)."""
    names, output = run_example_on_fewer_images(
        "mnist_resnet.py", "model.fit(x_train, y_train,",
        "model.fit(x_train[:2000], y_train[:2000],", mnist_dir, monkeypatch, tmp_path, capsys)
    assert 'Model: "toy_resnet"' in output and "Total params: 222,666" in output
    model = names["model"]
    blocks = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    rows = {line.split()[0]: line for line in output.splitlines() if line.strip()}
    for block, (convolved, skipped) in zip(blocks, [(5, 3), (8, 6)], strict=True):
        assert rows[block.name].endswith(f"{model.layers[convolved].name}, "
                                         f"{model.layers[skipped].name}")
    assert len(names["test_scores"]) == 2 and set(model.history.history) == {
        "loss", "acc", "val_loss", "val_acc"}


def test_a_model_of_two_inputs_trains_on_both_views_of_each_digit(mnist_dir, monkeypatch,
                                                                  tmp_path, capsys):
    """examples/mnist_two_inputs.py, on the first 2,000 images (on all of them it reaches
    Keras 3's test accuracy, docs/benchmarks.md): the data go in as a dict keyed by the
    Inputs' names, and the summary lists each Input where Keras does."""
    names, output = run_example_on_fewer_images(
        "mnist_two_inputs.py", "model.fit(train, y_train,",
        "model.fit({name: array[:2000] for name, array in train.items()}, y_train[:2000],",
        mnist_dir, monkeypatch, tmp_path, capsys)
    assert 'Model: "two_views"' in output and "Total params: 14,954" in output
    model = names["model"]
    profile, flatten, dense = model.layers[5:8]  # where Keras 3 lists them
    assert (profile.name, type(flatten), type(dense)) == ("profile", keras.layers.Flatten,
                                                          keras.layers.Dense)
    rows = {line.split()[0]: line for line in output.splitlines() if line.strip()}
    joined = next(layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate))
    assert rows[joined.name].endswith(f"{flatten.name}, {dense.name}")
    assert rows[dense.name].endswith("profile")
    assert names["test_scores"][1] >= 0.5  # 0.65 here: 30 steps; chance is 0.1
    assert set(model.history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_a_model_of_two_outputs_trains_both_heads_from_one_set_of_features(
        mnist_dir, monkeypatch, tmp_path, capsys):
    """examples/mnist_two_outputs.py, on the first 2,000 images (on all of them,
    docs/benchmarks.md): a loss, loss weight and metrics per output keyed by the outputs'
    names, and the figures of each named after it, as Keras 3 names them."""
    names, output = run_example_on_fewer_images(
        "mnist_two_outputs.py", "model.fit(x_train, train_targets,",
        "model.fit(x_train[:2000], {name: array[:2000] for name, array in "
        "train_targets.items()},", mnist_dir, monkeypatch, tmp_path, capsys)
    assert 'Model: "two_heads"' in output and "Total params: 203,787" in output
    model = names["model"]
    assert model.output_names == ["digit", "ink"]
    figures = {"loss", "digit_loss", "ink_loss", "digit_accuracy", "ink_mae"}
    assert set(model.history.history) == figures | {f"val_{name}" for name in figures}
    scores = names["test_scores"]
    assert set(scores) == figures and scores["digit_accuracy"] >= 0.5  # 0.79 here; chance 0.1
    np.testing.assert_allclose(scores["loss"], scores["digit_loss"] + 0.5 * scores["ink_loss"],
                               rtol=1e-5)


def test_a_convolutional_network_reads_each_digit_as_a_sequence_of_rows(
        mnist_dir, monkeypatch, tmp_path, capsys):
    """examples/mnist_sequences.py, on the first 2,000 images (on all of them,
    docs/benchmarks.md): Conv1D and the 1-D poolings over the images' rows, the summary's
    shapes Keras' own."""
    names, output = run_example_on_fewer_images(
        "mnist_sequences.py", "model.fit(x_train, y_train,",
        "model.fit(x_train[:2000], y_train[:2000],", mnist_dir, monkeypatch, tmp_path, capsys)
    assert 'Model: "rows_as_sequences"' in output and "Total params: 18,442" in output
    assert [layer.output_shape for layer in names["model"].layers] == [
        (26, 64), (13, 64), (11, 64), (64,), (10,)]
    assert names["test_scores"][1] >= 0.5  # chance is 0.1
    assert set(names["model"].history.history) == {"loss", "accuracy", "val_loss",
                                                   "val_accuracy"}
