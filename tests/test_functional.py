"""Keras' functional API for chains of layers: layers called on a ``keras.Input`` give symbolic
outputs of Keras' shapes, ``keras.Model(inputs, outputs)`` is the Sequential of the chain
(the same weights and training, bit for bit), saves and loads; every graph that is no chain is
one clear error."""

import numpy as np
import pytest

import dnn as keras
from dnn import layers, utils as keras_utils
from dnn.errors import UsageError
from dnn.models.functional import SymbolicTensor


def data(rows=96, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, features)).astype(np.float32),
            rng.integers(0, classes, size=rows))


def chain(inputs):
    """The layers of a small network called one on the other from ``inputs``."""
    x = layers.Dense(16, activation="relu")(inputs)
    x = layers.Dropout(0.25)(x)
    return layers.Dense(3, activation="softmax")(x)


def test_a_layer_called_on_an_input_gives_kerass_symbolic_shapes():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(inputs)
    assert isinstance(x, SymbolicTensor) and x.shape == (None, 26, 26, 32) and x.ndim == 4
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    assert x.shape == (None, 13, 13, 32)
    x = layers.Flatten()(x)
    assert x.shape == (None, 13 * 13 * 32)
    outputs = layers.Dense(10, activation="softmax")(x)
    assert outputs.shape == (None, 10) and not outputs.layers[-1].built  # nothing computed
    model = keras.Model(inputs=inputs, outputs=outputs)
    assert model.name == "functional" and model.built
    assert [(None, *layer.output_shape) for layer in model.layers] == [
        (None, 26, 26, 32), (None, 13, 13, 32), (None, 5408), (None, 10)]


def test_a_model_of_a_chain_trains_as_the_sequential_of_its_layers():
    """Bit for bit: the same weights drawn from the same seed, the same steps."""
    x, y = data()
    runs = []
    for functional in (True, False):
        inputs = keras.Input(shape=(12,))
        if functional:
            model = keras.Model(inputs, chain(inputs), seed=3)
        else:
            model = keras.Sequential([inputs, layers.Dense(16, activation="relu"),
                                      layers.Dropout(0.25),
                                      layers.Dense(3, activation="softmax")], seed=3)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history
        runs.append((history, model.get_weights(), model.predict(x, verbose=0)))
    (history, weights, predictions), (reference, theirs, expected) = runs
    assert history == reference and history["loss"][-1] < history["loss"][0]
    assert all(mine.tobytes() == other.tobytes() for mine, other in zip(weights, theirs,
                                                                       strict=True))
    assert predictions.tobytes() == expected.tobytes()


def test_a_model_of_a_chain_saves_and_loads_to_the_same_predictions(tmp_path):
    x, y = data()
    inputs = keras.Input(shape=(12,))
    model = keras.Model(inputs=[inputs], outputs=[chain(inputs)], name="small")
    model.compile("rmsprop", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "small.npz")
    restored = keras.models.load_model(tmp_path / "small.npz")
    assert restored.name == "small" and isinstance(restored, keras.Model)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


def test_every_sequential_is_a_model_as_in_keras():
    assert isinstance(keras.Sequential([layers.Dense(2)]), keras.Model)
    assert keras.models.Model is keras.Model
    assert not isinstance(layers.Dense(2), keras.Model)


def test_one_branch_of_a_graph_is_a_chain_but_its_other_branch_then_has_a_layer_in_a_model():
    inputs = keras.Input(shape=(12,))
    shared = layers.Dense(8)(inputs)
    first, second = layers.Dense(2)(shared), layers.Dense(3)(shared)
    assert keras.Model(inputs, first).output_shape == (None, 2)
    with pytest.raises(UsageError, match="input_layer.* is already in a model: dnn's models "
                                         "share no layers or inputs"):
        keras.Model(inputs, second)


@pytest.mark.parametrize("build, message", [
    (lambda inputs, dense: dense(dense(inputs)), "called twice in one chain"),
    (lambda inputs, dense: layers.Dense(2, input_shape=(5,))(inputs),
     r"declared for samples of shape \(5,\), but input_layer.* gives \(12,\)"),
    (lambda inputs, dense: dense([inputs, inputs]), "called on a list of 2 inputs"),
    (lambda inputs, dense: layers.Conv2D(4, 3)(inputs), "Conv2D"),
], ids=["layer-twice", "declared-shape", "two-inputs", "no-image"])
def test_a_call_that_makes_no_chain_is_one_clear_error(build, message):
    with pytest.raises(UsageError, match=message):
        build(keras.Input(shape=(12,)), layers.Dense(12))


@pytest.mark.parametrize("make, message", [
    (lambda inputs, outputs: keras.Model([inputs, keras.Input(shape=(3,))], outputs),
     "Model got 2 inputs: dnn's functional models are chains"),
    (lambda inputs, outputs: keras.Model(inputs, [outputs, outputs]), "Model got 2 outputs"),
    (lambda inputs, outputs: keras.Model(keras.Input(shape=(12,)), outputs),
     "outputs come from input_layer.*, not from its inputs"),
    (lambda inputs, outputs: keras.Model(inputs, inputs), "outputs must be what calling"),
    (lambda inputs, outputs: keras.Model(outputs, outputs), "inputs must be a keras.Input"),
    (lambda inputs, outputs: keras.Model(), "subclass of Model with a call.* not supported"),
], ids=["two-inputs", "two-outputs", "other-input", "no-layers", "inputs-not-input",
        "subclassing"])
def test_a_model_of_no_chain_is_one_clear_error(make, message):
    inputs = keras.Input(shape=(12,))
    with pytest.raises(UsageError, match=message):
        make(inputs, chain(inputs))


def test_a_model_called_on_an_input_and_a_symbolic_output_given_as_data_are_refused():
    inputs = keras.Input(shape=(12,))
    outputs = chain(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(UsageError, match="a model called on keras.Input.* is not supported"):
        model(keras.Input(shape=(12,)))
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(UsageError, match="inputs: the output of dense.* has no values"):
        model.fit(outputs, np.zeros(4), verbose=0)


def test_a_layer_called_on_data_still_computes(monkeypatch):
    monkeypatch.setattr(keras_utils, "_model_seeds", None)
    keras.utils.set_random_seed(0)
    out = layers.Dense(4)(np.ones((2, 12), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 4)

