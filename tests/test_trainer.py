"""The Keras API past a first script: add-style models, sample and class weights, data as
batches, steps per epoch, every callback hook, frozen layers, saving weights and architectures.
Each against a formula or an independent run, on the cpu backend and through dnn.replay (a
step captured once and replayed, as on a GPU)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import dnn
from dnn import layers
from dnn.callbacks import Callback
from dnn.errors import CheckpointError, UsageError
from dnn.replay import ReplayBackend
from dnn.trainers.epoch_iterator import RanOutOfData
from dnn.trainers.step import GraphFallbackWarning
from dnn.utils import to_categorical

RNG = np.random.default_rng(7)
X = RNG.normal(size=(60, 5)).astype("float32")
LABELS = RNG.integers(0, 3, size=60)
Y = to_categorical(LABELS, 3)


def network(*first, backend="cpu", dtype="float32", optimizer="adam", metrics=("accuracy",),
            **compile_options):
    """5 -> 8 relu -> 3 softmax from seed 0, compiled; ``first`` layers go before it."""
    model = dnn.Sequential([*first, layers.Dense(8, activation="relu"),
                            layers.Dense(3, activation="softmax")],
                           seed=0, backend=backend, dtype=dtype)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=list(metrics),
                  **compile_options)
    return model


def same_weights(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


# -- building ------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["input_shape", "Input"])
def test_the_add_style_builds_and_trains_as_the_list_style(first):
    listed = dnn.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                             layers.Dense(3, activation="softmax")], seed=0)
    added = dnn.Sequential(seed=0)
    if first == "Input":
        added.add(dnn.Input(shape=(5,)))
        added.add(layers.Dense(8, activation="relu"))
    else:
        added.add(layers.Dense(8, activation="relu", input_shape=(5,)))
    added.add(layers.Dense(3, activation="softmax"))
    assert added.count_params() == listed.count_params() == 5 * 8 + 8 + 8 * 3 + 3
    assert same_weights(added, listed)
    for model in (listed, added):
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    assert same_weights(added, listed)


def test_pop_removes_the_last_layer_and_a_new_one_builds_on_the_one_before():
    model = network(layers.Input(shape=(5,)))
    popped = model.pop()
    assert popped.units == 3 and not popped.in_model
    assert model.count_params() == 5 * 8 + 8
    model.add(layers.Dense(2, activation="softmax"))
    assert model.count_params() == 5 * 8 + 8 + 8 * 2 + 2
    model.compile(optimizer="adam", loss="categorical_crossentropy")  # a new optimizer: built
    history = model.fit(X, to_categorical(LABELS % 2, 2), epochs=3, batch_size=20, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_after_pop_the_loss_takes_the_outputs_of_the_new_last_layer():
    model = network(layers.Input(shape=(5,)))  # ends in a softmax whose logits the loss takes
    model.pop()
    model.add(layers.Dense(3))
    model.add(layers.Activation("relu"))  # no softmax last: the loss takes its outputs
    outputs = model.predict(X, verbose=0)
    assert (outputs >= 0).all() and not np.allclose(outputs.sum(axis=1), 1)
    model.pop()
    model.add(layers.Flatten())  # a layer without an activation last
    assert (model.predict(X, verbose=0) < 0).any()  # the Dense's outputs, no softmax
    model.add(layers.Activation("softmax"))  # the loss takes the logits again
    np.testing.assert_allclose(model.predict(X, verbose=0).sum(axis=1), 1, rtol=1e-5)
    history = model.fit(X, Y, epochs=2, batch_size=20, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("make, message", [
    (lambda: dnn.Sequential([layers.Dense(3, input_shape=(4,)), layers.Input((3,))]),
     "an Input declares the model's inputs: it goes first, not after dense"),
    (lambda: dnn.Sequential([layers.Input((4,)), layers.Input((4,))]),
     "an Input declares the model's inputs: it goes first")])
def test_an_input_after_the_first_layer_is_refused(make, message):
    with pytest.raises(UsageError, match=message):
        make()


@pytest.mark.parametrize("make", [
    lambda: dnn.Sequential([layers.Dense(3, input_shape=(4,)),
                            layers.Dense(2, input_shape=(9,))]),
    lambda: dnn.Sequential([layers.Dense(3), layers.Dense(2, input_shape=(9,))]).build((4,))])
def test_a_later_layers_input_shape_is_ignored_as_keras_does_with_a_warning(make):
    with pytest.warns(UserWarning, match=r"declares input_shape \(9,\), but the layer before "
                                         r"it gives \(3,\): only the first layer's"):
        make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dnn.Sequential([layers.Input((4,)), layers.Dense(2, input_shape=(4,))])  # they agree


def test_get_layer_by_name_or_index():
    model = network(layers.Input(shape=(5,), name="pixels"))
    first = model.layers[0]
    assert model.get_layer(first.name) is first is model.get_layer(index=0)
    assert model.get_layer(index=-1) is model.layers[-1]
    with pytest.raises(UsageError, match=f"no layer named 'pixels'; the model's layers: "
                                         f"'{first.name}'"):  # an Input is none, as in Keras
        model.get_layer("pixels")
    with pytest.raises(UsageError, match="a name or an index, one of them"):
        model.get_layer()


def test_json_architecture_and_clone_give_the_same_model_with_fresh_weights():
    model = network()
    model.fit(X, Y, epochs=1, verbose=0)
    text = model.to_json()
    assert json.loads(text)["class_name"] == "Sequential"
    rebuilt = dnn.models.model_from_json(text)
    clone = dnn.models.clone_model(model)
    for other in (rebuilt, clone):
        assert other.get_config() == model.get_config() and other.optimizer is None
    assert clone.built and not same_weights(clone, model)
    with pytest.raises(UsageError, match="reads what a model's to_json"):
        dnn.models.model_from_json('{"class_name": "Subclassed"}')
    with pytest.raises(UsageError, match="a model config is a dict with a list of layers"):
        dnn.models.model_from_json('{"class_name": "Functional"}')


def test_to_categorical_takes_the_uint8_labels_of_mnist_load_data():
    labels = np.array([0, 9, 255, 3], np.uint8)
    one_hot = to_categorical(labels)
    assert one_hot.shape == (4, 256) and one_hot[np.arange(4), labels].tolist() == [1] * 4
    np.testing.assert_array_equal(to_categorical(labels[:, None], 256), one_hot)


# -- weights of samples and classes -------------------------------------------------------
def _per_sample_crossentropy(probabilities, targets):
    return -np.sum(targets * np.log(np.clip(probabilities, 1e-7, 1 - 1e-7)), axis=1)


def test_evaluate_weighs_each_sample_as_keras_does():
    model = network(dtype="float64", weighted_metrics=["accuracy"])
    weights = RNG.uniform(0, 2, size=60)
    weights[:10] = 0
    loss, accuracy, weighted = model.evaluate(X, Y, sample_weight=weights, verbose=0)
    probabilities = model.predict(X, verbose=0)
    per_sample = _per_sample_crossentropy(probabilities, Y)
    assert loss == pytest.approx(np.sum(weights * per_sample) / 60, rel=1e-9)  # sum over batch
    correct = np.argmax(probabilities, axis=1) == LABELS
    assert accuracy == pytest.approx(correct.mean())  # metrics= ignore the weights, as Keras
    assert weighted == pytest.approx(np.sum(weights * correct) / np.sum(weights))


def test_the_weighted_gradient_is_that_of_the_weighted_loss():
    model = network(dtype="float64", optimizer="sgd", metrics=())
    model.build(5)
    x, y, weights = X[:7].astype("float64"), Y[:7].astype("float64"), RNG.uniform(0, 3, 7)
    model.compute_gradients(x, y, weights)
    analytic = [g.copy() for layer in model.layers for g in layer.grads]
    for param, grad in zip(model.params, analytic):
        numerical = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            saved = param[index]
            losses = []
            for step in (1e-6, -1e-6):
                param[index] = saved + step
                losses.append(model.test_on_batch(x, y, sample_weight=weights))
            param[index] = saved
            numerical[index] = (losses[0] - losses[1]) / 2e-6
        np.testing.assert_allclose(grad, numerical, rtol=1e-5, atol=1e-9)


def test_class_weight_trains_as_the_sample_weights_it_stands_for():
    table = {0: 2.0, 1: 0.5}  # class 2 left out: weighs 1
    by_class, by_sample = network(), network()
    by_class.fit(X, Y, epochs=2, batch_size=16, class_weight=table, verbose=0)
    by_sample.fit(X, Y, epochs=2, batch_size=16, verbose=0,
                  sample_weight=np.array([table.get(label, 1.0) for label in LABELS]))
    assert same_weights(by_class, by_sample)
    unweighted = network()
    unweighted.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    assert not same_weights(by_class, unweighted)


class NegativeLength(dnn.utils.PyDataset):
    def __len__(self):
        return -1

    def __getitem__(self, index):
        return X, Y


@pytest.mark.parametrize("call, message", [
    (lambda m: m.fit(X, Y, sample_weight=np.ones(60), class_weight={0: 1}, verbose=0),
     "give sample_weight or class_weight, not both"),
    (lambda m: m.fit(X, Y, sample_weight=-np.ones(60), verbose=0),
     "sample weights must be finite numbers >= 0"),
    (lambda m: m.fit(X, Y, sample_weight=np.ones(59), verbose=0),
     r"sample weights must be one number per sample, \(60,\), not \(59,\)"),
    (lambda m: m.fit(X, Y, class_weight={3: 1.0}, verbose=0),
     "class_weight key 3 is not a class index of a model with 3 outputs"),
    (lambda m: m.fit(X, Y, steps_per_epoch=0, verbose=0),
     "steps_per_epoch must be a positive integer or None, not 0"),
    (lambda m: m.fit(iter([(X, Y)]), validation_split=0.2, verbose=0),
     "validation_split needs arrays; with batches give validation_data"),
    (lambda m: m.fit(iter([(X,)]), verbose=0),
     r"batch 0 must be \(x, y\) or \(x, y, sample_weight\), not tuple of 1"),
    (lambda m: m.fit(iter([(X, Y)]), Y, verbose=0), "do not give y as well"),
    (lambda m: m.predict(X, batch_size=0), "batch_size must be a positive integer, not 0"),
    (lambda m: m.fit(NegativeLength(), verbose=0),
     r"the data's __len__ must give its number of batches, an integer >= 0 \(__len__\(\) "
     r"should return >= 0\)"),
])
def test_wrong_weights_steps_and_batches_are_one_line_errors(call, message):
    with pytest.raises(UsageError, match=message):
        call(network())


# -- data as batches, steps per epoch -----------------------------------------------------
def _batches(size=16):
    return [(X[i:i + size], Y[i:i + size]) for i in range(0, 60, size)]


class Batches:
    """An iterable of batches (a new pass at each iter()), neither list nor generator."""

    def __iter__(self):
        return iter(_batches())


class Dataset(dnn.utils.PyDataset):
    """A keras.utils.PyDataset: len(), [i], on_epoch_end()."""

    def __init__(self):
        super().__init__(workers=4)  # accepted, as Keras takes it
        self.epochs_ended = 0

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return _batches()[index]

    def on_epoch_end(self):
        self.epochs_ended += 1


@pytest.mark.parametrize("backend", ["cpu", ReplayBackend])
@pytest.mark.parametrize("source", ["iterable", "generator", "dataset"])
def test_batches_from_a_source_train_as_the_same_arrays(backend, source):
    backend = backend() if callable(backend) else backend
    arrays = network(backend=backend)
    arrays.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    data = {"iterable": Batches(), "generator": iter(_batches()), "dataset": Dataset()}[source]
    batched = network(backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)  # staged batches replay too
        history = batched.fit(data, epochs=1, shuffle=False, verbose=0)
    assert same_weights(batched, arrays)
    assert history.history["loss"] == pytest.approx(arrays.history.history["loss"], rel=1e-6)


def test_a_model_of_no_declared_backend_or_shape_builds_at_the_first_batch():
    model = dnn.Sequential([layers.Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(iter(_batches()), epochs=1, verbose=0)
    assert model.built and model.input_dim == 5 and model.backend.name == "cpu"


def test_a_dataset_is_told_each_epoch_end_and_validates_as_batches():
    dataset, model = Dataset(), network()
    history = model.fit(dataset, epochs=3, validation_data=Dataset(), verbose=0)
    assert dataset.epochs_ended == 3
    expected = model.evaluate(X, Y, verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)


def test_a_used_up_generator_ends_training_with_keras_warning():
    model = network()
    with pytest.warns(RanOutOfData, match="your input ran out of data"):
        history = model.fit(iter(_batches()), epochs=3, verbose=0)
    assert history.epoch == [0] and model.optimizer.iterations == 4


def test_steps_per_epoch_goes_on_where_the_last_epoch_stopped():
    stepped, whole = network(), network()
    stepped.fit(X, Y, batch_size=20, epochs=2, steps_per_epoch=3, shuffle=False, verbose=0)
    whole.fit(X, Y, batch_size=20, epochs=2, shuffle=False, verbose=0)  # 3 batches an epoch
    assert same_weights(stepped, whole)
    more = network()
    more.fit(X, Y, batch_size=20, epochs=2, steps_per_epoch=5, verbose=0)
    assert more.optimizer.iterations == 10  # passes follow each other within an epoch
    infinite = network()

    def forever():
        while True:
            yield X[:10], Y[:10]

    history = infinite.fit(forever(), epochs=3, steps_per_epoch=2, verbose=0)
    assert infinite.optimizer.iterations == 6 and len(history.history["loss"]) == 3


# -- metrics, callbacks --------------------------------------------------------------------
def test_metrics_by_name_and_object_are_reported_as_keras_names_them():
    model = network(metrics=["accuracy", "mae", dnn.metrics.TopKCategoricalAccuracy(k=2),
                             "accuracy"], weighted_metrics=["accuracy"])
    history = model.fit(X, Y, epochs=1, validation_split=0.25, verbose=0)
    assert list(history.history) == [
        "loss", "accuracy", "mae", "top_k_categorical_accuracy", "accuracy_1",
        "weighted_accuracy", "val_loss", "val_accuracy", "val_mae",
        "val_top_k_categorical_accuracy", "val_accuracy_1", "val_weighted_accuracy"]
    probabilities = model.predict(X[45:], verbose=0)
    error = np.abs(probabilities - Y[45:]).mean()
    assert history.history["val_mae"][0] == pytest.approx(error, rel=1e-5)


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: self.calls.append(
                (name, *[a for a in args if isinstance(a, int)]))
        return super().__getattribute__(name)


def test_fit_evaluate_and_predict_call_every_hook_in_keras_order():
    recorder, model = Recorder(), network()
    model.fit(X[:40], Y[:40], batch_size=20, epochs=1, validation_data=(X[40:], Y[40:]),
              validation_batch_size=20, callbacks=[recorder], verbose=0)
    assert recorder.calls == [
        ("on_train_begin",), ("on_epoch_begin", 0),
        ("on_train_batch_begin", 0), ("on_train_batch_end", 0),
        ("on_train_batch_begin", 1), ("on_train_batch_end", 1),
        ("on_test_begin",), ("on_test_batch_begin", 0), ("on_test_batch_end", 0),
        ("on_test_end",), ("on_epoch_end", 0), ("on_train_end",)]
    recorder.calls.clear()
    model.evaluate(X, Y, batch_size=30, callbacks=[recorder], verbose=0)
    model.predict(X, batch_size=60, callbacks=[recorder])
    assert recorder.calls == [
        ("on_test_begin",), ("on_test_batch_begin", 0), ("on_test_batch_end", 0),
        ("on_test_batch_begin", 1), ("on_test_batch_end", 1), ("on_test_end",),
        ("on_predict_begin",), ("on_predict_batch_begin", 0), ("on_predict_batch_end", 0),
        ("on_predict_end",)]


# -- frozen layers -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpu", ReplayBackend])
def test_a_frozen_layer_stays_frozen_in_captured_steps(backend):
    backend = backend() if callable(backend) else backend
    model = network(backend=backend)
    model.layers[0].trainable = False
    model.build(5)
    frozen = model.layers[0].get_weights()
    before = model.layers[1].get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    for ours, theirs in zip(model.layers[0].get_weights(), frozen):
        np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(model.layers[1].get_weights()[0], before[0])
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2


# -- saving weights ------------------------------------------------------------------------
def test_save_weights_and_load_weights_restore_weights_and_optimizer_state(tmp_path):
    path = tmp_path / "model.weights.npz"
    model = network()
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    model.save_weights(path)
    restored = network()
    restored.load_weights(path)
    assert same_weights(restored, model) and restored.optimizer.iterations == 8
    for model_ in (model, restored):
        model_.fit(X, Y, epochs=3, initial_epoch=2, batch_size=16, verbose=0)
    assert same_weights(restored, model)  # the optimizer's state and the shuffle went on
    other = dnn.Sequential([layers.Dense(4, activation="relu"), layers.Dense(3)], seed=0)
    with pytest.raises(CheckpointError, match=r"holds another model: its layer 1 \(after any "
                                              r"Input\) is \{'class': 'Dense', 'units': 8, "):
        other.load_weights(path)
