"""Embedding and the layers over sequences (a text classifier's: Conv1D, MaxPooling1D,
AveragePooling1D and the 1-D global poolings): against Keras 3.15.1's figures, NumPy, finite
differences and every backend."""

import json

import numpy as np
import pytest

import dnn as keras
from dnn import layers
from dnn.backends.base import Backend
from dnn.errors import OutOfMemoryError, UsageError
from dnn.testing import check_layer, numerical_gradient


def reference_case():
    """``(x, y, embeddings, kernel)``: 48 sequences of 7 indices below 20, labelled by their
    first index, and the weights the script that ran Keras 3.15.1 (JAX, CPU) gave its layers,
    drawn in its order."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 20, size=(48, 7))
    y = (x[:, 0] > 9).astype("float32")
    embeddings = rng.uniform(-0.5, 0.5, size=(20, 6)).astype("float32")
    kernel = rng.normal(size=(6, 1)).astype("float32") * 0.5
    return x, y, embeddings, kernel


def text_model(pool: str, backend=None, dtype="float32"):
    """7 indices -> Embedding(20, 6) -> the global ``pool`` ("avg" or "max") -> Dense(1,
    sigmoid), given :func:`reference_case`'s weights."""
    _, _, embeddings, kernel = reference_case()
    inputs = keras.Input(shape=(7,))
    pooling = layers.GlobalAveragePooling1D if pool == "avg" else layers.GlobalMaxPooling1D
    features = pooling()(layers.Embedding(20, 6, name="emb")(inputs))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(features),
                        backend=backend, dtype=dtype, seed=0)
    model.get_layer("emb").set_weights([embeddings])
    model.get_layer("out").set_weights([kernel, np.zeros(1)])
    return model


# Keras 3.15.1: fit(x, y, batch_size=16, epochs=3, shuffle=False) with SGD(0.5), and then
# the first embedding's first value and the sum of the embeddings' magnitudes
KERAS = {"avg": ({"loss": [0.6866493225097656, 0.6825788021087646, 0.6796908378601074],
                  "accuracy": [0.5, 0.5625, 0.6041666865348816]},
                 0.20241008698940277, 31.55000877380371),
         "max": ({"loss": [0.7343826293945312, 0.6868762373924255, 0.673098087310791],
                  "accuracy": [0.4791666567325592, 0.5416666865348816, 0.5833333134651184]},
                 0.22476550936698914, 30.938520431518555)}


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_a_text_classifier_trains_as_keras_trains_it(pool):
    x, y, _, _ = reference_case()
    model = text_model(pool)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    figures, first, magnitude = KERAS[pool]
    for name, values in figures.items():
        assert history[name] == pytest.approx(values, rel=1e-5), name
    embeddings = model.get_layer("emb").get_weights()[0]
    assert embeddings[0, 0] == pytest.approx(first, rel=1e-5)
    assert np.abs(embeddings).sum() == pytest.approx(magnitude, rel=1e-5)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_the_forward_pass_is_numpys(pool):
    x, _, embeddings, kernel = reference_case()
    looked_up = embeddings[x]  # (48, 7, 6)
    pooled = looked_up.mean(axis=1) if pool == "avg" else looked_up.max(axis=1)
    expected = 1 / (1 + np.exp(-(pooled @ kernel)))
    np.testing.assert_allclose(text_model(pool).predict(x, verbose=0), expected, rtol=1e-5)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_the_embeddings_gradient_is_central_finite_differences(cpu, pool):
    """Indices met twice in a batch add both their gradients into one row."""
    x, y, _, _ = reference_case()
    x, y = x[:5], y[:5]
    x[1, :3] = x[0, 0]  # one index, several times
    model = text_model(pool, cpu, dtype="float64")
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    y = y[:, None]
    model.compute_gradients(x.astype(np.float64), y)
    analytic = [grad.copy() for layer in model.stack for grad in layer.grads]
    for param, grad in zip(model.params, analytic, strict=True):
        np.testing.assert_allclose(grad, numerical_gradient(lambda: model.test_on_batch(x, y),
                                                            param), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("layer", [layers.GlobalAveragePooling1D(),
                                   layers.GlobalMaxPooling1D(keepdims=True)])
def test_the_1d_poolings_pass_the_layer_check(layer):
    check_layer(layer, (4, 3))


def test_the_generic_scatter_adds_every_row_as_numpys_add_at(cpu):
    rng = np.random.default_rng(1)
    rows, indices = rng.normal(size=(300, 4)), rng.integers(0, 9, size=300)
    expected = np.zeros((9, 4))
    np.add.at(expected, indices, rows)
    generic = np.zeros((9, 4))
    Backend.scatter_add_rows(cpu, rows, indices, generic)  # in one-hot blocks
    np.testing.assert_allclose(generic, expected, rtol=1e-12)
    np.testing.assert_array_equal(cpu.scatter_add_rows(rows, indices, np.zeros((9, 4))),
                                  expected)
    single = rows.astype(np.float32)  # the C kernel's, and NumPy's for what it cannot take
    for source, picked in ((single, indices), (single[:6], np.arange(12)[::2] % 9),
                           (single[:3, :1], np.array([0, -1, 2])), (single, indices - 9)):
        expected = np.zeros((9, 4), np.float32)
        np.add.at(expected, picked, source)
        np.testing.assert_array_equal(
            cpu.scatter_add_rows(source, picked, np.zeros((9, 4), np.float32)), expected)


@pytest.mark.parametrize("values, shown", [(20, "20"), (-1, "-1"), (2.5, "2.5"),
                                           (np.nan, "nan"), (np.inf, "inf")])
def test_inputs_that_are_no_index_are_refused_before_they_move(values, shown):
    x, y, _, _ = reference_case()
    x = x.astype(np.float64)
    x[3, 4] = values
    model = text_model("avg")
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    message = (f"inputs hold {shown}, which is no index of emb's 20 embeddings \\(whole "
               "numbers from 0 to 19\\)")
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.predict(x, verbose=0),
                 lambda: model.evaluate(iter([(x[:8], y[:8])]), verbose=0)):
        with pytest.raises(UsageError, match=message):
            call()


def test_an_embedding_too_large_for_the_models_dtype_is_refused_before_any_weight():
    with pytest.raises(UsageError, match=r"has 16,777,217 embeddings, but the model's float32 "
                                         "inputs hold whole numbers exactly only up to "
                                         "16,777,216"):
        keras.Sequential([keras.Input(shape=(3,)), layers.Embedding(2**24 + 1, 1)])


def test_an_embedding_saves_loads_and_configures_as_keras_names_it(tmp_path):
    x, y, _, _ = reference_case()
    model = text_model("avg")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "text.npz")
    loaded = keras.models.load_model(tmp_path / "text.npz")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    again = keras.models.model_from_json(model.to_json())
    assert [type(layer).__name__ for layer in again.layers] == [
        "Input", "Embedding", "GlobalAveragePooling1D", "Dense"]
    config = layers.Embedding(10, 3, embeddings_initializer="glorot_uniform",
                              embeddings_regularizer="l2", name="words").get_config()
    assert json.loads(json.dumps(config)) == config and config["input_dim"] == 10
    assert layers.from_config(config).get_config() == config
    with pytest.warns(UserWarning, match="input_length is deprecated"):
        assert layers.Embedding(10, 3, input_length=5).output_dim == 3
    with pytest.raises(UsageError, match="Embedding: mask_zero is not supported yet"):
        layers.Embedding(10, 3, mask_zero=True)


def text_classifier(backend=None):
    """:func:`text_model` with max pooling (tests/test_merging.py's GRAPH_MODELS: trained on
    every backend, replayed, and captured on the GPU stand-in)."""
    return text_model("max", backend)


def text_data(rows=48):
    """``(x, y)``: ``rows`` sequences of 7 indices below 20, labelled by their first."""
    x = np.random.default_rng(rows).integers(0, 20, size=(rows, 7))
    return x, (x[:, 0] > 9).astype("float32")


def test_an_embedding_after_another_layer_is_refused_naming_it():
    with pytest.raises(UsageError, match=r"emb \(Embedding\) takes the model's inputs "
                                         r"\(indices, checked before they move\), not another "
                                         "layer's output: put it first"):
        keras.Sequential([keras.Input(shape=(3,)), layers.Dense(3),
                          layers.Embedding(5, 2, name="emb")])


def test_an_integer_input_feeds_an_embedding_as_keras_declares_it():
    x, y, embeddings, kernel = reference_case()
    inputs = keras.Input(shape=(7,), dtype="int32")
    features = layers.GlobalAveragePooling1D()(layers.Embedding(20, 6, name="emb")(inputs))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(features))
    model.get_layer("emb").set_weights([embeddings])
    model.get_layer("out").set_weights([kernel, np.zeros(1)])
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  text_model("avg").predict(x, verbose=0))
    with pytest.raises(UsageError, match=r"inputs hold 20000001, which is no index of emb's "
                                         r"20,000,001 embeddings \(whole numbers from 0 to "
                                         r"20,000,000\)"):
        keras.Sequential([keras.Input(shape=(2,)), layers.Embedding(20_000_001, 1, name="emb"),
                          layers.Flatten()], dtype="float64").predict(
            np.array([[20_000_001, 0]]), verbose=0)


def test_an_optimizer_state_beyond_memory_is_one_error_naming_it(monkeypatch):
    """A large vocabulary's table is often what the optimizer cannot double or triple."""
    def out_of_memory(self, params, backend):
        raise MemoryError

    monkeypatch.setattr(keras.optimizers.Adam, "build", out_of_memory)
    with pytest.raises(OutOfMemoryError, match="the Adam optimizer's state for 127 weights "
                                               "needs more memory than this machine gives"):
        text_model("avg").compile(optimizer="adam", loss="binary_crossentropy")


def text_cnn(backend=None):
    """12 indices -> Embedding(20, 4) -> Conv1D(5, 3, relu) -> MaxPooling1D(2) -> Conv1D(3, 2,
    "same", tanh) -> AveragePooling1D(2, strides=1, "same") -> GlobalMaxPooling1D -> Dense(1,
    sigmoid) (tests/test_merging.py's GRAPH_MODELS too)."""
    inputs = keras.Input(shape=(12,))
    x = layers.Conv1D(5, 3, activation="relu", name="c1")(layers.Embedding(20, 4, name="emb")(
        inputs))
    x = layers.Conv1D(3, 2, padding="same", activation="tanh", name="c2")(
        layers.MaxPooling1D(2)(x))
    x = layers.GlobalMaxPooling1D()(layers.AveragePooling1D(2, strides=1, padding="same")(x))
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(x),
                       backend=backend, seed=0)


def text_cnn_data(rows=48):
    """``(x, y)`` for :func:`text_cnn`, drawn as the script that ran Keras 3.15.1 drew them,
    and the weights it gave each layer, by name."""
    rng = np.random.default_rng(21)
    x = rng.integers(0, 20, size=(rows, 12))
    y = (x[:, :3].sum(axis=1) > 28).astype("float32")
    shapes = {"emb": [(20, 4)], "c1": [(3, 4, 5), (5,)], "c2": [(2, 5, 3), (3,)],
              "out": [(3, 1), (1,)]}
    weights = {name: [(rng.normal(size=shape) * 0.4).astype("float32") for shape in listed]
               for name, listed in shapes.items()}
    return x, y, weights


def test_a_convolutional_text_classifier_trains_as_keras_trains_it():
    """Keras 3.15.1, from the same weights, SGD(0.3), batches of 16, three epochs."""
    x, y, weights = text_cnn_data()
    model = text_cnn()
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    assert [layer.kernel.shape for layer in (model.get_layer("c1"), model.get_layer("c2"))] == [
        (3, 4, 5), (2, 5, 3)]  # Keras' (kernel_size, channels, filters)
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    assert history["loss"] == pytest.approx([0.7028473019599915, 0.6943780779838562,
                                             0.6896573901176453], rel=1e-5)
    assert history["accuracy"] == pytest.approx([0.4375, 0.5416666865348816,
                                                 0.5416666865348816])
    assert np.abs(model.get_layer("c1").get_weights()[0]).sum() == pytest.approx(
        20.270347595214844, rel=1e-5)
    assert model.get_layer("c2").get_weights()[0][0, 0, 0] == pytest.approx(
        -0.19006167352199554, rel=1e-5)


@pytest.mark.parametrize("layer", [
    layers.Conv1D(3, 2), layers.Conv1D(2, 3, strides=2, padding="same", activation="relu"),
    layers.MaxPooling1D(), layers.MaxPooling1D(2, 1, padding="same"),
    layers.AveragePooling1D(3, 2, padding="same")], ids=repr)
def test_the_windowed_1d_layers_pass_the_layer_check(layer):
    check_layer(layer, (7, 2))


def test_the_1d_layers_configure_as_keras_names_them():
    config = layers.Conv1D(4, 3, strides=2, padding="same", name="c").get_config()
    assert (config["kernel_size"], config["strides"], config["padding"]) == ([3], [2], "same")
    assert layers.from_config(config).get_config() == config
    pooled = layers.MaxPooling1D(3, name="p").get_config()
    assert pooled["pool_size"] == [3] and "strides" not in pooled  # the pool size, as Keras
    assert layers.from_config(pooled).get_config() == pooled
    assert (layers.Convolution1D, layers.MaxPool1D, layers.AvgPool1D) == (
        layers.Conv1D, layers.MaxPooling1D, layers.AveragePooling1D)


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Conv1D(2, 3, padding="causal"), "Conv1D padding must be 'valid' or 'same'"),
    (lambda: layers.Conv1D(2, 3, dilation_rate=2), "Conv1D: dilation_rate and groups other"),
    (lambda: layers.Conv1D(2, (3, 3)), r"Conv1D kernel_size must be a positive integer, such "
                                       r"as 3, not \(3, 3\)"),
    (lambda: layers.MaxPooling1D(0), "MaxPooling1D pool_size must be a positive integer"),
    (lambda: keras.Sequential([keras.Input(shape=(6, 6, 1)), layers.Conv1D(2, 3, name="c")]),
     r"c \(Conv1D\) takes sequences \(steps, channels\), not inputs of shape \(6, 6, 1\)"),
    (lambda: keras.Sequential([keras.Input(shape=(2, 3)), layers.Conv1D(2, 3, name="c")]),
     r"c \(Conv1D\): a window of 3 steps does not fit in sequences of 2 steps with padding "
     "'valid'"),
], ids=["causal", "dilation", "kernel-pair", "pool-zero", "images", "too-short"])
def test_what_the_1d_layers_cannot_do_is_one_clear_error(make, message):
    with pytest.raises(UsageError, match=message):
        make()

