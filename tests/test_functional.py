"""Keras' functional API, chains of layers: layers called on a ``keras.Input`` give symbolic
outputs of Keras' shapes, ``keras.Model(inputs, outputs)`` is the Sequential of the chain
(the same weights and training, bit for bit), saves and loads, its layers named as they were;
what dnn does not take (several inputs or outputs, shared layers) is one clear error.  Graphs
of layers joined again by merge layers: tests/test_merging.py."""

import pickle

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
    assert outputs.shape == (None, 10) and not outputs.layer.built  # nothing computed
    model = keras.Model(inputs=inputs, outputs=outputs)
    assert model.name == "functional" and model.built
    assert model.layers[0] is inputs and model.get_layer(inputs.name) is inputs  # as Keras
    assert [(None, *layer.output_shape) for layer in model.layers] == [
        (None, 28, 28, 1), (None, 26, 26, 32), (None, 13, 13, 32), (None, 5408), (None, 10)]


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
    assert type(restored) is keras.Model and restored.name == "small"
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("remake", [
    lambda model: keras.Model.from_config(model.get_config()),
    lambda model: keras.models.Sequential.from_config(model.get_config()),
    lambda model: keras.models.model_from_json(model.to_json()),
    keras.models.clone_model], ids=["Model.from_config", "Sequential.from_config",
                                    "json", "clone_model"])
def test_a_model_of_a_chain_is_remade_from_its_config_as_a_functional_model(remake):
    inputs = keras.Input(shape=(12,))
    model = keras.Model(inputs, chain(inputs), name="small")
    made = remake(model)
    assert type(made) is keras.Model and made.name == "small"
    assert [type(layer) for layer in made.layers] == [type(layer) for layer in model.layers]
    assert '"class_name": "Functional"' in model.to_json()


def test_a_sequentials_config_makes_a_functional_model_where_it_starts_with_an_input():
    sequential = keras.Sequential([keras.Input(shape=(12,)), layers.Dense(3)])
    made = keras.Model.from_config(sequential.get_config())
    assert type(made) is keras.Model and isinstance(made.layers[0], layers.Input)
    with pytest.raises(UsageError, match="a functional model's layers start with its "
                                         "keras.Input"):
        keras.Model.from_config(keras.Sequential([layers.Dense(3)]).get_config())


def test_every_sequential_is_a_model_as_in_keras():
    assert isinstance(keras.Sequential([layers.Dense(2)]), keras.Model)
    assert issubclass(keras.Sequential, keras.Model) and issubclass(keras.Model, keras.Model)
    assert keras.models.Model is keras.Model
    assert not isinstance(layers.Dense(2), keras.Model)
    assert not issubclass(layers.Dense, keras.Model)


@pytest.mark.parametrize("freeze", [
    lambda inputs, outputs: keras.Model(inputs, outputs, trainable=False),
    lambda inputs, outputs: setattr(model := keras.Model(inputs, outputs), "trainable",
                                    False) or model], ids=["argument", "attribute"])
def test_a_frozen_model_trains_none_of_its_weights(freeze):
    x, y = data()
    inputs = keras.Input(shape=(12,))
    model = freeze(inputs, chain(inputs))
    assert model.trainable is False and not any(layer.trainable for layer in model.layers)
    before = model.get_weights()
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(old, new) for old, new in zip(before, model.get_weights()))
    assert keras.Model.from_config(model.get_config()).trainable is False  # as saved
    model.trainable = True
    model.fit(x, y, epochs=1, verbose=0)
    assert not all(np.array_equal(old, new) for old, new in zip(before, model.get_weights()))


def test_a_layer_made_trainable_in_a_frozen_model_stays_frozen_as_in_keras(tmp_path):
    """Keras 3.15.1: after model.trainable = False, a layer made trainable again trains only
    once the model is made trainable; the model saves, loads and copies frozen, with the
    layer's own flag as it was."""
    x, y = data()
    inputs = keras.Input(shape=(12,))
    model = keras.Model(inputs, chain(inputs))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.trainable = False
    model.layers[1].trainable = True
    assert model.trainable is False and model.trainable_weights == []
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(old, new) for old, new in zip(before, model.get_weights()))
    model.save(tmp_path / "frozen.npz")
    for copy in (keras.models.load_model(tmp_path / "frozen.npz"),
                 keras.models.model_from_json(model.to_json()), pickle.loads(pickle.dumps(model))):
        assert copy.trainable is False and copy.trainable_weights == []
        assert [layer.trainable for layer in copy.layers] == [layer.trainable
                                                              for layer in model.layers]
    model.trainable = True
    assert len(model.trainable_weights) == 4
    model.fit(x, y, epochs=1, verbose=0)
    assert not all(np.array_equal(old, new) for old, new in zip(before, model.get_weights()))


def test_a_frozen_model_lists_every_weight_as_non_trainable_and_adds_no_penalty():
    """As Keras 3.15.1: a layer made trainable again inside a frozen model is no trained
    layer, so its regularizer adds nothing to the loss."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    model = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3),
                              layers.BatchNormalization(),
                              layers.Dense(2, kernel_regularizer=keras.regularizers.l2(10.0))],
                             trainable=False, seed=0)
    model.compile("sgd", "mse")
    unpenalized = model.evaluate(x, y, verbose=0)
    model.layers[2].trainable = True
    assert model.trainable is False
    assert (len(model.trainable_weights), len(model.non_trainable_weights),
            len(model.weights)) == (0, 8, 8)
    assert model.evaluate(x, y, verbose=0) == unpenalized
    model.trainable = True
    assert model.evaluate(x, y, verbose=0) > unpenalized  # the penalty, once it trains


def test_a_model_takes_its_name_third_as_keras_does():
    inputs = keras.Input(shape=(12,))
    assert keras.Model(inputs, chain(inputs), "named").name == "named"


def test_a_model_that_could_not_be_made_leaves_its_layers_free():
    inputs = keras.Input(shape=(12,))
    with pytest.raises(UsageError, match="already has a layer named 'twin'"):
        keras.Model(inputs, layers.Dense(2, name="twin")(layers.Dense(3, name="twin")(inputs)))
    assert keras.Model(inputs, layers.Dense(2)(inputs)).output_shape == (None, 2)


def test_one_branch_of_a_graph_is_a_chain_but_its_other_branch_then_has_a_layer_in_a_model():
    inputs = keras.Input(shape=(12,))
    shared = layers.Dense(8)(inputs)
    first, second = layers.Dense(2)(shared), layers.Dense(3)(shared)
    assert keras.Model(inputs, first).output_shape == (None, 2)
    with pytest.raises(UsageError, match="input_layer.* is already in a model: dnn's models "
                                         "share no layers or inputs"):
        keras.Model(inputs, second)


@pytest.mark.parametrize("build, message", [
    (lambda inputs, dense: keras.Model(inputs, dense(dense(inputs))),
     "dense.* is called twice in one model: shared layers are not supported"),
    (lambda inputs, dense: layers.Dense(2, input_shape=(5,))(inputs),
     r"declared for samples of shape \(5,\), but input_layer.* gives \(12,\)"),
    (lambda inputs, dense: dense([inputs, inputs]), "called on a list of 2 inputs"),
    (lambda inputs, dense: layers.Conv2D(4, 3)(inputs), "Conv2D"),
], ids=["layer-twice", "declared-shape", "two-inputs", "no-image"])
def test_a_call_that_makes_no_chain_is_one_clear_error(build, message):
    with pytest.raises(UsageError, match=message):
        build(keras.Input(shape=(12,)), layers.Dense(12))


@pytest.mark.parametrize("make, message", [
    (lambda inputs, outputs: keras.Model(inputs, [outputs, outputs]),
     "Model's outputs list dense.* twice"),
    (lambda inputs, outputs: keras.Model(keras.Input(shape=(12,)), outputs),
     r"outputs come from input_layer.*, which is not among its inputs \(input_layer"),
    (lambda inputs, outputs: keras.Model(inputs, inputs), "outputs must be what calling"),
    (lambda inputs, outputs: keras.Model(outputs, outputs),
     "inputs must be keras.Input.*, not SymbolicTensor"),
    (lambda inputs, outputs: keras.Model([inputs, inputs], outputs),
     "Model's inputs list input_layer.* twice"),
    (lambda inputs, outputs: keras.Model([], outputs), "Model's inputs are an empty list"),
    (lambda inputs, outputs: keras.Model(), "subclass of Model with a call.* not supported"),
    (lambda inputs, outputs: keras.Model({"features": inputs}, outputs),
     "Model's inputs dict holds .* under 'features': a dict of inputs keys each keras.Input "
     r"by its name \(keras.Input\(..., name=key\)\), which also keys its data"),
], ids=["output-twice", "other-input", "no-layers", "inputs-not-input",
        "input-twice", "no-inputs", "subclassing", "named-inputs"])
def test_a_model_of_no_chain_is_one_clear_error(make, message):
    inputs = keras.Input(shape=(12,))
    with pytest.raises(UsageError, match=message):
        make(inputs, chain(inputs))


class CallsItsOwn(keras.Model):
    def call(self, inputs, training=False):
        return inputs


class TrainsItsOwn(keras.Model):
    def train_step(self, data):
        return {}


class ComputesItsLoss(keras.Model):
    def compute_loss(self, x=None, y=None, y_pred=None):
        return 0.0


class ForgetsItsInit(keras.Model):
    def __init__(self):
        self.dense = layers.Dense(2)


@pytest.mark.parametrize("make, message", [
    (lambda inputs: CallsItsOwn(inputs, layers.Dense(2)(inputs)),
     r"CallsItsOwn defines call\(\): a model of one's own computing or training otherwise"),
    (lambda inputs: TrainsItsOwn(inputs, layers.Dense(2)(inputs)),
     r"TrainsItsOwn defines train_step\(\)"),
    (lambda inputs: ComputesItsLoss(inputs, layers.Dense(2)(inputs)),
     r"ComputesItsLoss defines compute_loss\(\)"),
    (lambda inputs: ForgetsItsInit().compile("sgd"),
     r"ForgetsItsInit was not initialised: its __init__ must call super\(\).__init__"),
], ids=["call", "train_step", "compute_loss", "no-super-init"])
def test_a_subclass_of_model_that_computes_or_trains_otherwise_is_refused(make, message):
    with pytest.raises(UsageError, match=message):
        make(keras.Input(shape=(4,)))


@pytest.mark.parametrize("name", ["apply_gradients", "forward", "metrics", "get_config"])
def test_a_subclass_of_model_naming_a_helper_as_dnn_names_its_own_is_refused(name):
    """A helper called ``apply_gradients`` would replace the update fit makes (the model
    would silently not train); ``metrics`` would collide with the compiled metrics."""
    subclass = type("Helper", (keras.Model,), {name: lambda self: None})
    inputs = keras.Input(shape=(4,))
    with pytest.raises(UsageError, match=f"Helper defines {name}, which dnn's models have "
                                         "themselves.*give yours another name"):
        subclass(inputs, layers.Dense(2)(inputs))


class CompilesWithDefaults(keras.Model):
    seed_of_mine = 3
    name_prefix = "mine"  # a class attribute of a name dnn's instances also have

    def compile(self, optimizer="adam", **options):
        super().compile(optimizer, **options)

    def summary(self, **options):
        super().summary(**options)


class InheritsACall(CallsItsOwn):
    pass


def test_a_subclass_may_override_kerass_public_methods_but_not_inherit_a_call(capsys):
    inputs = keras.Input(shape=(4,))
    model = CompilesWithDefaults(inputs, layers.Dense(2)(inputs))
    model.compile(loss="mse")
    model.summary()
    assert type(model.optimizer).__name__ == "Adam" and "Total params: 10" in (
        capsys.readouterr().out)
    other = keras.Input(shape=(4,))
    with pytest.raises(UsageError, match=r"InheritsACall defines call\(\)"):
        InheritsACall(other, layers.Dense(2)(other))


def test_a_subclass_of_model_with_helpers_of_new_names_works():
    class Described(keras.Model):
        def describe(self):
            return f"{self.name}: {len(self.layers)} layers"

    inputs = keras.Input(shape=(4,))
    assert Described(inputs, layers.Dense(2)(inputs)).describe() == "functional: 2 layers"


def test_a_model_of_its_input_alone_has_its_shape_and_saves(tmp_path):
    model = keras.Sequential([keras.Input(shape=(3,))])
    assert model.output_shape == (None, 3)
    model.save(tmp_path / "input.npz")
    assert keras.models.load_model(tmp_path / "input.npz").output_shape == (None, 3)


def test_summary_takes_kerass_arguments(capsys):
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, layers.Dense(2, name="out", trainable=False)(inputs))
    model.summary(print_fn=None, show_trainable=True, line_length=80, expand_nested=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["Layer", "Output", "shape", "Params", "Trainable"]
    assert lines[3].split()[-1] == "N" and lines[2].split()[-1] == "Y"
    with pytest.raises(UsageError, match="summary's layer_range is not supported"):
        model.summary(layer_range=["out", "out"])
    assert model.get_layer(index=np.int64(1)).name == "out"
    printed = []
    model.summary(printed.append)  # dnn's print_fn first, before Keras' order
    assert printed[0] == 'Model: "functional"' and not capsys.readouterr().out


@pytest.mark.parametrize("training", [True, False])
def test_training_given_to_a_layer_called_on_an_input_is_refused(training):
    """Keras would run the layer so in fit and predict alike (Monte-Carlo dropout): dnn runs
    every layer as fit and predict ask, and says so rather than ignore it."""
    with pytest.raises(UsageError, match=f"dropout.* was called on keras.Input with training="
                                         f"{training}"):
        layers.Dropout(0.5)(keras.Input(shape=(4,)), training=training)


def test_a_model_called_on_an_input_and_a_symbolic_output_given_as_data_are_refused():
    inputs = keras.Input(shape=(12,))
    outputs = chain(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(UsageError, match="a model called on keras.Input.* is not supported"):
        model(keras.Input(shape=(12,)))
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(UsageError, match="inputs: the output of dense.* has no values"):
        model.fit(outputs, np.zeros(4), verbose=0)
    with pytest.raises(UsageError, match="inputs: the output of dense.* has no values"):
        model.predict_on_batch(outputs)


USES = {
    "predict": lambda model, x, y: model.predict(x, verbose=0),
    "fit": lambda model, x, y: model.fit(x, y, verbose=0, epochs=2).history,
    "evaluate": lambda model, x, y: model.evaluate(x, y, verbose=0),
    "predict_on_batch": lambda model, x, y: model.predict_on_batch(x),
    "train_on_batch": lambda model, x, y: model.train_on_batch(x, y),
    "call": lambda model, x, y: model(x, training=True),
}


def _compiled_model(name="features"):
    inputs = keras.Input(shape=(12,), name=name)
    model = keras.Model(inputs, chain(inputs), seed=3)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("use", USES.values(), ids=USES.keys())
@pytest.mark.parametrize("given", [lambda x: {"features": x}, lambda x: [x], lambda x: (x,)],
                         ids=["dict-of-its-name", "list-of-one", "tuple-of-one"])
def test_the_inputs_of_a_model_of_one_input_may_come_named_or_in_a_list_of_one(use, given):
    """As Keras takes them: the same figures as the array itself gives."""
    x, y = data()
    expected, found = use(_compiled_model(), x, y), use(_compiled_model(), given(x), y)
    np.testing.assert_equal(found, expected)


@pytest.mark.parametrize("given", [lambda value: [value], lambda value: (value,)],
                         ids=["list-of-one", "tuple-of-one"])
def test_targets_and_sample_weights_may_come_in_a_list_of_one(given):
    """As Keras takes the data of a model's one output."""
    x, y = data()
    weights = np.linspace(0.5, 1.5, len(y))
    expected = _compiled_model().fit(x, y, sample_weight=weights, verbose=0).history
    assert _compiled_model().fit(x, given(y), sample_weight=given(weights),
                                 verbose=0).history == expected
    assert (_compiled_model().evaluate(x, given(y), verbose=0)
            == _compiled_model().evaluate(x, y, verbose=0))


def test_a_list_of_one_number_or_one_sample_is_still_the_data_itself():
    """Only a list of one whole array is unwrapped: a list of one label, weight or sample is
    the data of one sample, as it was before lists of one array were taken."""
    x, labels = data(rows=2)
    model = _compiled_model()
    assert np.isfinite(model.train_on_batch(x[:1], [labels[0]])).all()
    assert np.isfinite(model.fit(x[:1], labels[:1], sample_weight=[np.float32(2)],
                                 verbose=0).history["loss"][0])
    np.testing.assert_array_equal(model.predict([x[0]], verbose=0),
                                  model.predict(x[:1], verbose=0))


def test_build_refuses_samples_of_another_shape_than_the_inputs_declare():
    """The model would save a file no load could read."""
    inputs = keras.Input(shape=(12,), name="features")
    model = keras.Model(inputs, chain(inputs))
    with pytest.raises(UsageError, match=r"the model is built for samples of shape \(12,\); "
                                         r"build\(\) was given \(6,\): make a new model"):
        model.build((None, 6))


@pytest.mark.parametrize("use", USES.values(), ids=USES.keys())
def test_inputs_named_otherwise_than_the_models_input_are_refused(use):
    x, y = data()
    with pytest.raises(UsageError, match=r"inputs name 'pixels', which is none of the model's "
                                         r"inputs \(features\)"):
        use(_compiled_model(), {"pixels": x}, y)


def test_named_inputs_for_a_model_without_an_input_and_named_targets_are_refused():
    x, y = data()
    model = keras.Sequential([layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(UsageError, match="inputs are a dict, but the model's inputs have no "
                                         "names .it has no keras.Input."):
        model.fit({"features": x}, y, verbose=0)
    with pytest.raises(UsageError, match=r"targets name 'dense', which is none of the "
                                         r"model's outputs \(dense_\d+\)"):
        _compiled_model().fit(x, {"dense": y}, verbose=0)


def test_a_layer_called_on_data_still_computes(monkeypatch):
    monkeypatch.setattr(keras_utils, "_model_seeds", None)
    keras.utils.set_random_seed(0)
    out = layers.Dense(4)(np.ones((2, 12), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 4)



class ReadsWhatItLacks(layers.Layer):
    def forward(self, x, logits=False, training=False):
        return x

    @property
    def weights(self):
        return self.never_set


def test_a_missing_attribute_is_an_attribute_error_naming_what_is_missing():
    """hasattr and getattr with a default work on models and layers; an AttributeError a
    property raises keeps its own message (Python would answer __getattr__'s)."""
    model = keras.Sequential([layers.Dense(2), ReadsWhatItLacks()])
    model.build((3,))
    assert not hasattr(model, "nope") and getattr(model.layers[0], "nope", 7) == 7
    with pytest.raises(AttributeError, match="'ReadsWhatItLacks' object has no attribute "
                                             "'never_set'"):
        model.get_weights()


def test_a_model_named_as_the_default_sequential_keeps_its_name_and_a_bad_flag_its_layers():
    inputs = keras.Input(shape=(4,))
    outputs = layers.Dense(2)(inputs)
    with pytest.raises(keras.errors.ArgumentTypeError, match="Model trainable must be True "
                                                             "or False"):
        keras.Model(inputs, outputs, trainable="no")
    model = keras.Model(inputs, outputs, name="sequential")  # the layers are free again
    assert keras.models.model_from_json(model.to_json()).name == "sequential"


@pytest.mark.parametrize("remake", [
    lambda model, path: (model.save(path), keras.models.load_model(path))[1],
    lambda model, path: keras.models.model_from_json(model.to_json()),
    lambda model, path: pickle.loads(pickle.dumps(model)),
    lambda model, path: keras.models.clone_model(model),
], ids=["save", "json", "pickle", "clone"])
def test_every_layer_keeps_its_name_as_in_keras(tmp_path, remake):
    """Default names too: get_layer finds a loaded model's layers by the names they had."""
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, layers.Dense(2)(layers.Dense(3, name="mine")(inputs)))
    model.build(4)
    made = remake(model, tmp_path / "named.npz")
    assert [layer.name for layer in made.layers] == [layer.name for layer in model.layers]
    assert made.get_layer(model.layers[-1].name) is made.layers[-1]


def test_a_default_name_is_never_one_a_loaded_model_has(tmp_path):
    model = keras.Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(2)])
    model.save(tmp_path / "m.npz")
    loaded = keras.models.load_model(tmp_path / "m.npz")
    ahead = layers.Dense(2, name=f"dense_{int(model.layers[-1].name.rpartition('_')[2]) + 5}")
    fresh = layers.Dense(5)
    assert fresh.name not in {layer.name for layer in (*loaded.layers, ahead)}
    loaded.add(fresh)  # no name clash
    assert loaded.output_shape == (None, 5)


def test_a_layer_renamed_to_anothers_name_is_refused_before_anything_is_written(tmp_path):
    model = keras.Sequential([layers.Dense(3, input_shape=(4,), name="p"),
                              layers.Dense(2, name="q")])
    model.save(tmp_path / "kept.npz")
    model.layers[1].name = "p"
    with pytest.raises(UsageError, match="the model has two layers named 'p'"):
        model.save(tmp_path / "kept.npz")
    with pytest.raises(UsageError, match="two layers named 'p'"):
        model.to_json()
    assert [layer.name for layer in keras.models.load_model(tmp_path / "kept.npz").layers] == [
        "p", "q"]


def test_a_checkpoint_naming_only_some_layers_loads_in_a_fresh_process(tmp_path, monkeypatch):
    """dnn saved only the names given: a default-named layer saved without its name is
    never given one that another of the file's layers has."""
    import json

    model = keras.Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(2)])
    model.save(tmp_path / "m.npz")
    archive = dict(np.load(tmp_path / "m.npz"))
    meta = json.loads(str(archive["meta"]))
    del meta["model"]["layers"][0]["name"]
    meta["model"]["layers"][1]["name"] = "dense"
    np.savez(tmp_path / "old.npz", **{**archive, "meta": np.asarray(json.dumps(meta))})
    monkeypatch.setattr(layers.Layer, "_made", {})  # no layer made yet in this process
    loaded = keras.models.load_model(tmp_path / "old.npz")
    assert loaded.layers[1].name == "dense" and loaded.layers[0].name != "dense"


class Scaled(layers.Layer):
    """A layer of one's own whose __init__ takes no name."""

    def __init__(self, factor=2.0):
        super().__init__()
        self.factor = factor

    def forward(self, x, logits=False, training=False):
        return x * self.factor

    def backward(self, grad, logits=False):
        return grad * self.factor if self.needs_input_grad else None


def test_a_layer_of_ones_own_taking_no_name_saves_and_loads_with_its_name(tmp_path):
    model = keras.Sequential([layers.Dense(3, input_shape=(4,)), Scaled(3.0)])
    model.save(tmp_path / "own.npz")
    loaded = keras.models.load_model(tmp_path / "own.npz", custom_objects={"Scaled": Scaled})
    assert loaded.layers[1].name == model.layers[1].name and loaded.layers[1].factor == 3.0


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Dense(2, name=["l"]), r"a layer's name must be a string, not \['l'\]"),
    (lambda: layers.Dense(2, name=5), "must be a string, not 5"),
    (lambda: layers.GlobalMaxPooling2D(keepdims="no"), "keepdims must be True or False"),
], ids=["list", "number", "keepdims"])
def test_an_argument_of_the_wrong_type_is_refused(make, message):
    with pytest.raises((UsageError, keras.errors.ArgumentTypeError), match=message):
        make()


def test_a_model_whose_description_a_checkpoint_cannot_hold_is_not_saved(tmp_path):
    model = keras.Sequential([layers.Dense(2, input_shape=(3,), name="x" * 300_000)])
    with pytest.raises(UsageError, match="the model's description takes 300,.* characters, "
                                         "more than a checkpoint holds"):
        model.save(tmp_path / "long.npz")
    assert not (tmp_path / "long.npz").exists()
