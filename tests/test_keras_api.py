"""The parts of Keras' API a Keras user reaches for first, each as Keras behaves: Dense's
arguments, building, counting, calling, saving and loading, validation_split and
initial_epoch, Dropout, Flatten and Input, binary cross-entropy and from_logits."""

import numpy as np
import pytest

import dnn
from dnn import activations, backends, losses
from dnn.models import load_model
from dnn.saving import checkpoint
from dnn.layers import Dense, Dropout, Flatten, Input
from dnn.utils import to_categorical
from dnn.testing import numerical_gradient
from tests.test_model import blobs


def test_dense_takes_keras_arguments_and_a_declared_input_builds_the_model(cpu):
    model = dnn.Sequential([Dense(64, activation="relu", input_shape=(20,), name="hidden",
                                  kernel_initializer="he_normal", bias_initializer="ones"),
                            Dense(3, use_bias=False, activation="softmax")], seed=0,
                           backend=cpu)
    assert model.built and model.count_params() == 20 * 64 + 64 + 64 * 3
    kernel, bias = model.layers[0].get_weights()
    assert bias.tolist() == [1.0] * 64
    assert abs(kernel.std() - np.sqrt(2 / 20)) < 0.02 and np.abs(kernel).max() <= 2 * np.sqrt(
        2 / 20) / 0.8796 + 1e-6  # truncated at two standard deviations
    assert len(model.layers[1].get_weights()) == 1  # no bias
    assert model.layers[0].name == "hidden"
    model.compile(optimizer="Adam", loss="categorical_crossentropy", metrics=["acc"])
    x, labels = blobs(n=64, features=20)
    history = model.fit(x, to_categorical(labels), batch_size=16, epochs=3, verbose=0)
    assert set(history.history) == {"loss", "acc"}  # named as given, as Keras 3 names it
    assert type(model.optimizer).__name__ == "Adam"
    np.testing.assert_array_equal(model(x), model.predict(x))
    np.testing.assert_allclose(model.predict_on_batch(x[:5]), model.predict(x)[:5], rtol=1e-5,
                               atol=1e-7)  # other batch shapes, other BLAS blocks
    results = model.evaluate(x, to_categorical(labels), return_dict=True)
    assert list(results) == ["loss", "acc"]


def test_build_takes_keras_shapes_and_layer_weights_can_be_set(cpu):
    model = dnn.Sequential([Dense(4), Dense(2)], seed=0, backend=cpu)
    model.build((None, 7))
    assert model.input_dim == 7 and model.count_params() == 7 * 4 + 4 + 4 * 2 + 2
    kernel = np.arange(28, dtype=np.float32).reshape(7, 4)
    model.layers[0].set_weights([kernel, np.zeros(4)])
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    with pytest.raises(dnn.errors.UsageError,
                       match=r"weight 0 has shape \(4, 7\); the model's is \(7, 4\)"):
        model.layers[0].set_weights([kernel.T, np.zeros(4)])
    with pytest.raises(dnn.errors.UsageError, match="the model has no weights yet"):
        dnn.Sequential([Dense(3)]).count_params()


def test_evaluate_prints_one_line_when_verbose(cpu, capsys):
    x, labels = blobs(n=32)
    model = dnn.Sequential([Dense(3, activation="softmax")], seed=0, backend=cpu)
    model.compile(metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, to_categorical(labels), verbose=1)
    assert capsys.readouterr().out == f"loss: {loss:.4f} - accuracy: {accuracy:.4f}\n"


def test_validation_split_keeps_the_last_samples_and_initial_epoch_counts_on(cpu):
    x, labels = blobs(n=100)
    y = to_categorical(labels)
    model = dnn.Sequential([Dense(3, activation="softmax")], seed=0, backend=cpu)
    model.compile(metrics=["accuracy"])
    history = model.fit(x, y, batch_size=10, epochs=4, initial_epoch=2, validation_split=0.2,
                        verbose=0)
    assert history.epoch == [2, 3]
    val_loss, val_accuracy = model.evaluate(x[80:], y[80:])
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_accuracy)
    with pytest.raises(dnn.errors.UsageError, match="validation_split must be a number in"):
        model.fit(x, y, validation_split=1.5, verbose=0)
    again = dnn.Sequential([Dense(3, activation="softmax")], seed=0, backend=cpu)
    again.compile(metrics=["accuracy"])
    numpy_share = again.fit(x, y, batch_size=10, epochs=4, initial_epoch=2,
                            validation_split=np.float32(0.2), verbose=0)  # NumPy's numbers too
    assert numpy_share.history["val_loss"] == history.history["val_loss"]


def dropout_output(backend, x, rate=0.5, steps=2):
    layer = Dropout(rate)
    layer.build_on((x.shape[1],), backend, np.random.default_rng(3), "float32")
    for _ in range(steps):
        out = layer.forward(backend.asarray(x), training=True)
    return backend.to_numpy(out)


def test_dropout_drops_a_share_scales_the_rest_and_only_in_training(cpu):
    x = np.ones((200, 50), np.float32)
    out = dropout_output(cpu, x, rate=0.3)
    dropped = np.mean(out == 0)
    assert 0.27 < dropped < 0.33 and np.allclose(out[out != 0], 1 / 0.7)
    assert not np.array_equal(out, dropout_output(cpu, x, rate=0.3, steps=3))  # a new draw
    layer = Dropout(0.3)
    layer.build_on((50,), cpu, np.random.default_rng(3), "float32")
    np.testing.assert_array_equal(layer.forward(x), x)  # evaluate and predict: no dropout
    assert Dropout(np.float32(0.25)).rate == 0.25  # NumPy's numbers too
    with pytest.raises(dnn.errors.UsageError, match=r"Dropout rate must be a number in \[0, 1\)"):
        Dropout(True)


def test_dropout_drops_the_same_units_on_every_backend(other_backend):
    x = np.random.default_rng(1).random((64, 33), dtype=np.float32)
    reference = dropout_output(backends.get_backend("cpu"), x)
    np.testing.assert_array_equal(dropout_output(other_backend, x), reference)


def test_dropout_gradient_matches_finite_differences(cpu):
    layer = Dropout(0.4)
    layer.build_on((6,), cpu, np.random.default_rng(2), "float64")
    x = np.random.default_rng(3).normal(size=(5, 6))
    upstream = np.random.default_rng(4).normal(size=(5, 6))
    out = layer.forward(x, training=True)
    mask = out / x
    grad = layer.backward(upstream.copy())
    np.testing.assert_allclose(grad, numerical_gradient(lambda: float(np.sum(upstream * x * mask)),
                                                        x), rtol=1e-6, atol=1e-8)


def test_flatten_and_input_declare_the_inputs(cpu):
    images = np.random.default_rng(0).random((20, 4, 5), dtype=np.float32)
    labels = np.arange(20) % 3
    for first in (Input(shape=(4, 5)), Flatten(input_shape=(4, 5))):
        model = dnn.Sequential([first, Dense(3, activation="softmax")], seed=0, backend=cpu)
        assert model.built and model.input_dim == 20
        model.compile(loss="sparse_categorical_crossentropy")
        model.fit(images, labels, epochs=1, verbose=0)
        assert model.predict(images).shape == (20, 3)


@pytest.mark.parametrize("logits", [False, True])
def test_binary_crossentropy_gradient_matches_finite_differences(cpu, logits):
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(6, 3))
    output = raw if logits else activations.Sigmoid().forward(cpu, raw.copy())
    targets = (rng.random((6, 3)) < 0.5).astype(np.float64)
    loss = losses.get("binary_crossentropy")

    def objective():
        return float(loss.compute(cpu, output, targets, np.empty_like(output), logits=logits)) / 6

    grad = np.empty_like(output)
    loss.compute(cpu, output, targets, grad, logits=logits)
    np.testing.assert_allclose(grad, numerical_gradient(objective, output), rtol=1e-6,
                               atol=1e-9)


def test_sigmoid_with_binary_crossentropy_takes_the_logits_and_learns(cpu):
    x, labels = blobs(n=120, classes=2)
    model = dnn.Sequential([Dense(8, activation="relu"), Dense(1, activation="sigmoid")],
                           seed=0, backend=cpu)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    assert model.heads[0].takes_logits
    history = model.fit(x, labels.reshape(-1, 1), epochs=20, batch_size=20, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    probabilities = model.predict(x)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_from_logits_trains_a_linear_output_as_a_softmax_one_and_survives_a_checkpoint(
        cpu, tmp_path):
    x, labels = blobs()
    y = to_categorical(labels)
    runs = []
    for activation, loss in ((None, losses.CategoricalCrossentropy(from_logits=True)),
                             ("softmax", "categorical_crossentropy")):
        model = dnn.Sequential([Dense(8, activation="relu"), Dense(3, activation=activation)],
                               seed=0, backend=cpu)
        model.compile(loss=loss, metrics=["accuracy"])
        runs.append(model.fit(x, y, epochs=5, batch_size=32, verbose=0).history)
    assert runs[0] == runs[1] and runs[0]["loss"][-1] < runs[0]["loss"][0]
    model = dnn.Sequential([Dense(8, activation="relu"), Dense(3)], seed=0, backend=cpu)
    model.compile(loss=losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    assert loaded.loss.from_logits
    assert loaded.evaluate(x, y) == pytest.approx(model.evaluate(x, y), rel=1e-6)


def test_a_model_with_dropout_and_no_bias_saves_and_loads(cpu, tmp_path):
    x, labels = blobs(n=40)
    model = dnn.Sequential([Dense(8, activation="relu", use_bias=False), Dropout(0.25),
                            Dense(3, activation="softmax")], seed=0, backend=cpu)
    model.compile()
    model.fit(x, to_categorical(labels), epochs=2, verbose=0)
    checkpoint.save(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [type(layer).__name__ for layer in loaded.layers] == ["Dense", "Dropout", "Dense"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
