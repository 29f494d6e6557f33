"""Functional models of several inputs (``keras.Model(inputs=[a, b, c], outputs=...)``): the
layers in Keras' order, data as a list or a dict of arrays checked input by input, gradients
against central finite differences, an independent reference (a concatenation of the inputs
is one Dense layer on the joined features), and the model through saving, copies and its
data's every form.  The replaying, stand-in GPU and data-parallel runs of these models are in
tests/test_replay.py, tests/test_gpu_standin.py and tests/test_distributed.py."""

import array
import collections
import pickle

import numpy as np
import pytest

import dnn as keras
from dnn import layers
from dnn.callbacks.tensorboard import _keras_layout
from dnn.errors import CheckpointError, DivergenceError, UsageError
from dnn.testing import numerical_gradient
from dnn.utils import PyDataset, to_categorical

RNG = np.random.default_rng(11)


def three_input_model(backend=None, dtype="float32", seed=0):
    """Three inputs: ``a`` through two layers, ``b`` through one, ``c`` joined as it is and
    taken by a layer too (an input taken twice)."""
    a, b, c = (keras.Input(shape=(size,), name=name) for size, name in ((4, "a"), (3, "b"),
                                                                         (2, "c")))
    x = layers.Dense(5, activation="tanh", name="da2")(layers.Dense(5, activation="relu",
                                                                    name="da")(a))
    joined = layers.concatenate([x, layers.Dense(5, activation="relu", name="db")(b), c],
                                name="cat")
    added = layers.Add(name="add")([layers.Dense(6, name="p")(joined),
                                    layers.Dense(6, name="q")(c)])
    outputs = layers.Dense(3, activation="softmax", name="out")(added)
    return keras.Model([a, b, c], outputs, dtype=dtype, seed=seed, backend=backend)


# Keras 3.15.1's model.layers and get_weights() shapes for the same calls (map_graph's order)
KERAS_LAYER_ORDER = ["a", "da", "b", "da2", "db", "c", "cat", "p", "q", "add", "out"]
KERAS_WEIGHT_SHAPES = [(4, 5), (5,), (5, 5), (5,), (3, 5), (5,), (12, 6), (6,), (2, 6), (6,),
                       (6, 3), (3,)]


def toy_data(rows=64):
    """``([a, b, c], y)``: the three inputs' arrays and one-hot targets of 3 classes."""
    x = [RNG.normal(size=(rows, size)).astype(np.float32) for size in (4, 3, 2)]
    return x, to_categorical(RNG.integers(0, 3, size=rows), 3)


def run(x, y, **fit):
    """``(history, weights)`` of :func:`three_input_model` trained with RMSprop on ``x``."""
    model = three_input_model()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, **fit)
    return history.history, model.get_weights()


def assert_same_run(ours, reference) -> None:
    assert ours[0] == reference[0]
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_array_equal(mine, theirs)


# -- the model -------------------------------------------------------------------------------
def test_the_layers_and_weights_are_listed_in_kerass_order():
    model = three_input_model()
    assert [layer.name for layer in model.layers] == KERAS_LAYER_ORDER
    assert [weight.shape for weight in model.get_weights()] == KERAS_WEIGHT_SHAPES
    assert model.input_shape == [(None, 4), (None, 3), (None, 2)]
    assert model.sample_shape == [(4,), (3,), (2,)]
    assert model.output_shape == (None, 3)
    lines = []
    model.summary(print_fn=lines.append)
    rows = {line.split()[0]: line for line in lines[2:] if line.split()[0] in KERAS_LAYER_ORDER}
    assert list(rows) == KERAS_LAYER_ORDER
    assert rows["c"].split()[1:] == ["(Input)", "(None,", "2)", "0", "-"]
    assert rows["cat"].endswith("da2, db, c") and rows["q"].endswith(" c")


def test_a_concatenation_of_inputs_trains_as_one_dense_layer_on_the_joined_features(cpu):
    """An independent reference: Dense(concatenate([a, b])) is a Dense layer on the features
    of ``a`` and ``b`` side by side, through every step of fit (shuffled alike)."""
    a, b = keras.Input(shape=(4,)), keras.Input(shape=(3,))
    joined = keras.Model([a, b], layers.Dense(3, activation="softmax")(layers.concatenate([a, b])),
                         dtype="float64", seed=5, backend=cpu)
    single = keras.Sequential([layers.Dense(3, activation="softmax", input_shape=(7,))],
                              dtype="float64", seed=5, backend=cpu)
    single.set_weights(joined.get_weights())
    (xa, xb, _), y = toy_data(rows=50)
    runs = []
    for model, x in ((joined, [xa, xb]), (single, np.concatenate([xa, xb], axis=1))):
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        runs.append((model.fit(x, y, batch_size=8, epochs=3, verbose=0).history["loss"],
                     model.get_weights()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
    for mine, theirs in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)


def test_the_gradients_are_central_finite_differences(cpu):
    model = three_input_model(cpu, dtype="float64", seed=2)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = toy_data(rows=7)
    x = [array.astype(np.float64) for array in x]  # as a list, too
    model.compute_gradients(x, y)
    analytic = [grad.copy() for layer in model.stack for grad in layer.grads]
    assert len(analytic) == len(KERAS_WEIGHT_SHAPES)
    for param, grad in zip(model.params, analytic, strict=True):
        np.testing.assert_allclose(grad, numerical_gradient(lambda: model.test_on_batch(x, y),
                                                            param), rtol=1e-5, atol=1e-8)


# -- its data --------------------------------------------------------------------------------
def test_a_list_a_tuple_and_a_dict_in_any_order_are_the_same_data():
    x, y = toy_data()
    reference = run(x, y)
    assert_same_run(run(tuple(x), y), reference)
    assert_same_run(run({"c": x[2], "a": x[0], "b": x[1]}, y), reference)
    model = three_input_model()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    named = {"b": x[1], "c": x[2], "a": x[0]}
    np.testing.assert_array_equal(model.predict(named, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(model.predict_on_batch(named), model.predict(x, verbose=0))
    np.testing.assert_array_equal(model(named), model.predict(x, verbose=0))
    assert model.evaluate(named, y, verbose=0) == model.evaluate(x, y, verbose=0)


class ListedBatches(PyDataset):
    """The rows of ``x`` (a list of arrays) and ``y`` in batches of 16, each ``(x, y)`` with
    ``x`` as ``given`` makes it of the batch's arrays."""

    def __init__(self, x, y, given):
        super().__init__()
        self.x, self.y, self.given = x, y, given

    def __len__(self):
        return -(-len(self.y) // 16)

    def __getitem__(self, index):
        rows = slice(16 * index, 16 * index + 16)
        return self.given([array[rows] for array in self.x]), self.y[rows]


@pytest.mark.parametrize("given", [list, lambda arrays: dict(zip("abc", arrays))],
                         ids=["lists", "dicts"])
def test_batches_from_a_source_train_as_the_arrays_do(given):
    x, y = toy_data()
    reference = run(x, y, shuffle=False)
    assert_same_run(run(ListedBatches(x, y, given), None, shuffle=False), reference)
    source = ListedBatches(x, y, given)
    generator = (source[index] for _ in range(2) for index in range(len(source)))
    assert_same_run(run(generator, None, steps_per_epoch=4), reference)


@pytest.mark.parametrize("batch", [lambda arrays: arrays, tuple, lambda arrays: (arrays,),
                                   lambda arrays: dict(zip("abc", arrays))],
                         ids=["list", "tuple", "in-a-tuple-of-one", "dict"])
def test_predict_takes_batches_of_the_inputs_arrays_alone(batch):
    """For predict, a batch that is one array per input is x itself: read as (x, y), x
    would be one array, no data for a model of several inputs."""
    x, _ = toy_data()
    model = three_input_model()
    batches = (batch([array[start:start + 16] for array in x]) for start in range(0, 64, 16))
    np.testing.assert_array_equal(model.predict(batches, verbose=0),
                                  model.predict(x, verbose=0))


def test_validation_split_holds_out_the_last_rows_of_every_input():
    x, y = toy_data()
    split = run(x, y, validation_split=0.25)
    given = run([array[:48] for array in x], y[:48],
                validation_data=([array[48:] for array in x], y[48:]))
    assert_same_run(split, given)
    assert set(split[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_sample_weights_and_one_batch_methods_take_the_inputs_as_fit_does():
    x, y = toy_data(rows=16)
    weights = RNG.uniform(0, 2, size=16)
    model, again = three_input_model(), three_input_model()
    for each in (model, again):
        each.compile(optimizer="sgd", loss="categorical_crossentropy")
    fitted = model.fit(x, y, sample_weight=weights, batch_size=16, shuffle=False, verbose=0)
    assert again.train_on_batch({"a": x[0], "b": x[1], "c": x[2]}, y,
                                sample_weight=weights) == fitted.history["loss"][0]
    assert again.test_on_batch(x, y) == model.test_on_batch(tuple(x), y)


def test_a_dict_of_inputs_keyed_by_their_names_orders_them_by_key_as_keras(tmp_path):
    """Keras 3.15.1 flattens a dict of Inputs in the order of its keys sorted: its
    input_shape, and its layers' order, are these."""
    inputs = {name: keras.Input(shape=(size,), name=name) for name, size in (("zeta", 2),
                                                                            ("alpha", 3))}
    model = keras.Model(inputs, layers.Dense(1)(layers.concatenate([inputs["zeta"],
                                                                    inputs["alpha"]])))
    assert model.input_shape == [(None, 3), (None, 2)]
    assert [layer.name for layer in model.layers][:2] == ["zeta", "alpha"]
    model.compile(optimizer="sgd", loss="mse")
    x = {"zeta": RNG.normal(size=(8, 2)), "alpha": RNG.normal(size=(8, 3))}
    model.save(tmp_path / "named.npz")
    for made in (model, keras.models.load_model(tmp_path / "named.npz"),
                 keras.models.clone_model(model), pickle.loads(pickle.dumps(model))):
        with pytest.raises(UsageError, match=r"the model's inputs came as a dict: give inputs "
                                             r"as a dict keyed by their names \(alpha, zeta\), "
                                             "as Keras takes them, not a list"):
            made.predict([x["alpha"], x["zeta"]], verbose=0)  # Keras refuses the order too
    loaded = keras.models.load_model(tmp_path / "named.npz")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(UsageError, match="Model's inputs dict holds 'not an input' under 'a'"):
        keras.Model({"a": "not an input"}, layers.Dense(1)(keras.Input(shape=(2,))))


@pytest.mark.parametrize("give, message", [
    (lambda x: x[:2], r"the model takes 3 inputs \(a, b, c\): give inputs as a list of 3 "
                      "arrays, in that order, or a dict keyed by their names, not a list of 2"),
    (lambda x: x[0], "the model takes 3 inputs .*, not ndarray"),
    (lambda x: {"a": x[0], "b": x[1]}, r"inputs have no 'c': give every input of the model "
                                       r"\(a, b, c\)"),
    (lambda x: {"a": x[0], "b": x[1], "c": x[2], "d": x[2]},
     r"inputs name 'd', which is none of the model's inputs \(a, b, c\)"),
    (lambda x: [x[0], x[1], x[2][:5]], "inputs 'a' have 64 samples, but inputs 'c' have 5: "
                                       "every input has one row per sample"),
    (lambda x: [x[0], x[2], x[1]], "inputs 'b' have 2 features; the model expects 3"),
    (lambda x: [x[0], x[1], {"c": x[2]}], "inputs 'c' are a dict"),
    (lambda x: [x[0], x[1], x[2][0]], r"inputs 'c' must be a non-empty batch \(N, "
                                      r"features...\), not \(2,\)"),
], ids=["too-few", "one-array", "missing-name", "unknown-name", "rows-differ",
        "in-another-order", "nested-dict", "one-sample"])
def test_inputs_that_do_not_fit_the_model_are_one_clear_error(give, message):
    x, y = toy_data()
    model = three_input_model()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    for use in (lambda data: model.fit(data, y, verbose=0),
                lambda data: model.predict(data, verbose=0)):
        with pytest.raises(UsageError, match=message):
            use(give(x))
    with pytest.raises(UsageError, match="validation inputs"):
        model.fit(x, y, validation_data=(give(x), y), verbose=0)


def test_a_nan_in_one_input_names_that_input(cpu):
    x, y = toy_data()
    x[1][7, 2] = np.nan
    model = three_input_model(cpu)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    with pytest.raises(DivergenceError, match=r"the inputs 'b' hold NaN or infinite values "
                                              r"\(the first in row 7\)"):
        model.fit(x, y, verbose=0)


# -- saving and copies ---------------------------------------------------------------------
@pytest.mark.parametrize("copy", [
    lambda model, path: (model.save(path), keras.models.load_model(path))[1],
    lambda model, path: pickle.loads(pickle.dumps(model)),
    lambda model, path: keras.models.model_from_json(model.to_json()),
    lambda model, path: keras.models.clone_model(model),
], ids=["save-load", "pickle", "json", "clone"])
def test_a_model_of_several_inputs_keeps_them_through_saving_and_copies(copy, tmp_path):
    x, y = toy_data()
    model = three_input_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, verbose=0)
    made = copy(model, tmp_path / "model.npz")
    assert [layer.name for layer in made.layers] == KERAS_LAYER_ORDER
    assert made.input_shape == model.input_shape and made.graph.inputs == 3
    if made.compiled:  # the file's and the pickle's weights and optimizer
        np.testing.assert_array_equal(made.predict(x, verbose=0), model.predict(x, verbose=0))
        assert made.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    else:  # the architecture alone: it trains
        made.compile(optimizer="adam", loss="categorical_crossentropy")
        assert np.isfinite(made.fit(x, y, verbose=0).history["loss"][0])


def two_input_model(order: str):
    """Dense layers on inputs ``a`` and ``b`` joined, the model's inputs listed in
    ``order``: the same weights, whichever order."""
    inputs = {"a": keras.Input(shape=(4,), name="a"), "b": keras.Input(shape=(3,), name="b")}
    joined = layers.concatenate([layers.Dense(5)(inputs["a"]), layers.Dense(5)(inputs["b"])])
    return keras.Model([inputs[name] for name in order], layers.Dense(3)(joined))


def test_weights_of_a_model_of_other_inputs_are_refused(tmp_path):
    """The same layers taking the inputs listed in another order hold weights of the same
    shapes, but are another model."""
    two_input_model("ba").save_weights(tmp_path / "swapped.weights.npz")
    three_input_model().save_weights(tmp_path / "three.weights.npz")
    model = two_input_model("ab")
    with pytest.raises(CheckpointError, match="holds another model: its layers are joined as "
                                              r"the graph \[\[1\], \[0\], \[2, 3\], \[4\]\], "
                                              r"this model's as the graph \[\[0\], \[1\]"):
        model.load_weights(tmp_path / "swapped.weights.npz")
    with pytest.raises(CheckpointError, match="holds another model"):
        model.load_weights(tmp_path / "three.weights.npz")


def test_tensorboards_graph_lists_every_input():
    layout = _keras_layout(three_input_model())
    assert layout["class_name"] == "Functional"
    assert layout["config"]["input_layers"] == [["a", 0, 0], ["b", 0, 0], ["c", 0, 0]]
    by_name = {layer["config"]["name"]: layer for layer in layout["config"]["layers"]}
    assert [tensor["config"]["keras_history"][0]
            for tensor in by_name["cat"]["inbound_nodes"][0]["args"][0]] == ["da2", "db", "c"]
    assert by_name["b"]["class_name"] == "InputLayer" and "inbound_nodes" not in by_name["b"]


# -- what hostile use found ------------------------------------------------------------------
def test_a_from_logits_model_whose_last_layer_has_no_activation_predicts_its_logits(cpu):
    """Summed branch logits (an Add last): predict gives the sum itself, as Keras does."""
    a, b = keras.Input(shape=(3,), name="a"), keras.Input(shape=(2,), name="b")
    first, second = layers.Dense(4), layers.Dense(4)
    model = keras.Model([a, b], layers.Add()([first(a), second(b)]), backend=cpu,
                        dtype="float64")
    model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x = [RNG.normal(size=(8, 3)), RNG.normal(size=(8, 2))]
    (kernel_a, bias_a), (kernel_b, bias_b) = first.get_weights(), second.get_weights()
    logits = x[0] @ kernel_a + bias_a + x[1] @ kernel_b + bias_b
    for outputs in (model.predict(x, verbose=0), model.predict_on_batch(x), model(x),
                    model(x, training=True)):
        np.testing.assert_allclose(outputs, logits, rtol=1e-12)


class EndlessBatches(PyDataset):
    """Two batches by ``len()``, but ``[i]`` answers any index (the usual slicing), as NumPy
    would read it for ever; it gives up at the 100th read."""

    def __init__(self, x):
        super().__init__()
        self.x, self.reads = x, 0

    def __len__(self):
        return 2

    def __getitem__(self, index):
        self.reads += 1
        if self.reads > 100:
            raise RuntimeError("read for ever")
        return self.x[index * 5:index * 5 + 5]


@pytest.mark.parametrize("give", [lambda source, x: [source, x[1], x[2]],
                                  lambda source, x: {"a": source, "b": x[1], "c": x[2]}],
                         ids=["in-a-list", "in-a-dict"])
def test_a_source_of_batches_among_the_inputs_is_refused_before_it_is_read(give):
    x, y = toy_data(rows=10)
    model = three_input_model()
    source = EndlessBatches(x[0])
    with pytest.raises(UsageError, match="inputs 'a' are a EndlessBatches, a source of "
                                         "batches: give it as x itself"):
        model.predict(give(source, x), verbose=0)
    assert source.reads == 0


class UnreadableArray:
    """What a CuPy array is to NumPy: an array that refuses to be converted."""
    shape, dtype, ndim = (10, 3), np.dtype("float32"), 2

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()`\nsecond line")


def test_an_array_numpy_cannot_read_is_one_line_naming_its_input():
    x, _ = toy_data(rows=10)
    with pytest.raises(UsageError, match=r"^inputs 'b': a UnreadableArray NumPy cannot read "
                                         r"\(Implicit conversion to a NumPy array is not "
                                         r"allowed. Please use `.get\(\)`\)$"):
        three_input_model().predict([x[0], UnreadableArray(), x[2]], verbose=0)


def image_model():
    """A small convnet of one (6, 6, 1) input, for the data forms below."""
    model = keras.Sequential([keras.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3),
                              layers.Flatten(), layers.Dense(3, activation="softmax")], seed=1)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def test_lists_of_samples_stay_samples_for_a_model_of_one_input():
    """What dnn took before lists of one array were unwrapped: a list of one image, or of
    several, is that many samples; a list of one one-hot row is one sample's target; a
    range, a deque or an array.array is data NumPy reads."""
    images = RNG.normal(size=(4, 6, 6, 1)).astype(np.float32)
    np.testing.assert_array_equal(image_model().predict([images[0]], verbose=0),
                                  image_model().predict(images[:1], verbose=0))
    assert image_model().train_on_batch([images[0]], [2]) == image_model().train_on_batch(
        images[:1], np.array([2]))
    assert (image_model().fit(list(images), [0, 1, 2, 0], verbose=0).history
            == image_model().fit(images, np.array([0, 1, 2, 0]), verbose=0).history)
    dense = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3, activation="softmax")],
                             seed=1)
    dense.compile(optimizer="sgd", loss="categorical_crossentropy")
    row, target = np.ones((1, 4), np.float32), np.eye(3)[1]
    assert np.isfinite(dense.train_on_batch([row[0]], [target]))
    expected = image_model().fit(images[:3], np.array([0, 1, 2]), verbose=0).history
    for labels in (range(3), collections.deque([0, 1, 2]), array.array("i", [0, 1, 2])):
        assert image_model().fit(images[:3], labels, verbose=0).history == expected


def test_build_again_keeps_the_weights_and_a_failed_build_leaves_the_model_unbuilt():
    model = three_input_model()
    weights = model.get_weights()
    model.build([(4,), (3,), (2,)])
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(UsageError, match=r"the model is built for samples of shape \[\(4,\), "
                                         r"\(3,\), \(2,\)\]; build\(\) was given \[\(4,\), "
                                         r"\(3,\), \(5,\)\]"):
        model.build([(4,), (3,), (5,)])
    images = keras.Sequential([layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(UsageError):
        images.build((2, 2, 1))  # too small for a 3x3 window
    assert not images.built and images.sample_shape is None
    images.compile(optimizer="sgd", loss="categorical_crossentropy")
    history = images.fit(RNG.normal(size=(4, 6, 6, 1)), np.eye(2)[[0, 1, 0, 1]], verbose=0)
    assert images.input_shape == (None, 6, 6, 1) and np.isfinite(history.history["loss"][0])


def test_validation_split_keeps_the_rows_keras_keeps():
    """Keras 3 trains on the first floor(N * (1 - split)) rows: 8 of 11 at 0.25."""
    a, b = keras.Input(shape=(1,), name="a"), keras.Input(shape=(1,), name="b")
    model = keras.Model([a, b], layers.Add()([a, b]))
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(11, dtype=np.float32)[:, None]
    history = model.fit([x, x], np.zeros((11, 1)), validation_split=0.25, shuffle=False,
                        verbose=0).history
    assert history["loss"] == [np.mean((2 * x[:8]) ** 2)]  # as Keras 3.15.1 gives: 70.0
    assert history["val_loss"] == [pytest.approx(np.mean((2 * x[8:]) ** 2))]  # 326.67


def test_a_frozen_model_takes_no_optimizer_step_as_keras():
    """Keras 3.15.1 leaves iterations at 0 while no weight trains: a learning-rate schedule
    is not used up by a frozen warm-up."""
    x, y = toy_data(rows=32)
    model = three_input_model()
    model.trainable = False
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert int(model.optimizer.iterations) == 0
    model.trainable = True
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert int(model.optimizer.iterations) == 4


def test_a_layers_trainable_is_true_or_false():
    with pytest.raises(keras.errors.ArgumentTypeError, match="trainable must be True or False, "
                                                             "not 'no'"):
        layers.Dense(2, trainable="no")


def test_clone_model_takes_kerass_other_arguments_at_their_defaults_only():
    model = three_input_model()
    assert keras.models.clone_model(model, input_tensors=None).input_shape == model.input_shape
    with pytest.raises(UsageError, match="clone_model: clone_function is not supported yet; "
                                         "leave it None"):
        keras.models.clone_model(model, clone_function=lambda layer: layer)
    with pytest.raises(UsageError, match="clone_model has no argument 'inputs'"):
        keras.models.clone_model(model, inputs=None)


def test_an_input_the_outputs_do_not_come_from_is_kept_as_keras_keeps_it(tmp_path):
    """Its data are taken (and checked), and nothing comes of them; Keras 3.15.1 lists it
    among the layers as far from the output as the output."""
    def make(unused: bool):
        a, b, c = (keras.Input(shape=(size,), name=name) for size, name in ((4, "a"), (3, "b"),
                                                                             (2, "c")))
        joined = layers.concatenate([layers.Dense(5, name="h")(a), c], name="cat")
        return keras.Model([a, b, c] if unused else [a, c],
                           layers.Dense(3, activation="softmax", name="out")(joined), seed=0)
    x, y = toy_data()
    model, reference = make(unused=True), make(unused=False)
    assert [layer.name for layer in model.layers] == ["a", "h", "c", "cat", "b", "out"]
    assert model.input_shape == [(None, 4), (None, 3), (None, 2)]
    for made in (model, reference):
        made.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert history == reference.fit([x[0], x[2]], y, batch_size=16, epochs=2,
                                    verbose=0).history
    for copy in (keras.models.model_from_json(model.to_json()),
                 pickle.loads(pickle.dumps(model))):
        assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    model.save(tmp_path / "unused.npz")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "unused.npz").predict(
        x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(UsageError, match="inputs 'a' have 64 samples, but inputs 'b' have 10"):
        model.predict([x[0], x[1][:10], x[2]], verbose=0)
