"""Functional models of several outputs: ``keras.Model(inputs, [a, b])`` or ``{"a": a, "b":
b}``, compiled, trained, evaluated, saved and asked to predict as Keras 3 does it; checked
against Keras 3.15.1's own figures, finite differences and a NumPy forward pass."""

import pickle

import numpy as np
import pytest

import dnn as keras
from dnn import layers
from dnn.callbacks.tensorboard import _keras_layout
from dnn.errors import UsageError
from dnn.testing import numerical_gradient
from dnn.utils import to_categorical


def reference_case():
    """``(x, labels, targets, sample_weight, weights)``: 32 samples of 4 features, their
    class of 3 and a number to regress, and each layer's weights by name: drawn in the order
    the script that ran Keras 3.15.1 (JAX, CPU) for the figures below drew them."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=32)
    targets = rng.normal(size=(32, 1)).astype(np.float32)
    sample_weight = rng.random(32).astype(np.float32)
    weights = {}
    for name, units, fans_in in (("h", 5, 4), ("cls", 3, 5), ("reg", 1, 5)):
        weights[name] = [rng.normal(size=(fans_in, units)).astype(np.float32) * 0.5,
                         rng.normal(size=units).astype(np.float32) * 0.1]
    return x, labels, targets, sample_weight, weights


def reference_model(as_dict: bool):
    """4 features -> h (5, relu) -> cls (3, softmax) and reg (1, linear), given the weights
    of :func:`reference_case`; the outputs a list ``[cls, reg]``, or a dict ``{"b": cls,
    "a": reg}``."""
    inputs = keras.Input(shape=(4,), name="x")
    hidden = layers.Dense(5, activation="relu", name="h")(inputs)
    cls = layers.Dense(3, activation="softmax", name="cls")(hidden)
    reg = layers.Dense(1, name="reg")(hidden)
    model = keras.Model(inputs, {"b": cls, "a": reg} if as_dict else [cls, reg])
    weights = reference_case()[-1]
    for layer in model.layers[1:]:
        layer.set_weights(weights[layer.name])
    return model


# Keras 3.15.1's figures for the same model, weights and calls (reference_model)
KERAS_LIST_HISTORY = {
    "loss": [1.8843247890472412, 1.782389760017395],
    "cls_loss": [1.1214836835861206, 1.0905177593231201],
    "reg_loss": [1.5256822109222412, 1.383744239807129],
    "cls_accuracy": [0.4375, 0.4375],
    "reg_mae": [0.9949620962142944, 0.9713732004165649],
    "reg_weighted_mae": [0.9949620962142944, 0.9713732004165649]}
KERAS_LIST_EVALUATE = [1.72147798538208, 1.060347318649292, 1.3222612142562866, 0.4375,
                       0.9581999778747559, 0.9581999778747559]
KERAS_DICT_HISTORY = {  # b's samples weighted
    "loss": [3.3491616249084473], "b_loss": [0.3825327754020691],
    "a_loss": [1.4833145141601562], "a_mae": [1.006762981414795],
    "a_mse": [1.4833145141601562], "b_accuracy": [0.4375]}
# its losses in the order of compile's loss dict (b, a), its metrics by output key
KERAS_DICT_EVALUATE = [3.623652458190918, 1.106589913368225, 1.2585313320159912,
                       0.9373002052307129, 1.2585313320159912, 0.4375]


def numpy_outputs(x, weights):
    """``(cls, reg)`` of :func:`reference_model` computed in NumPy."""
    hidden = np.maximum(x @ weights["h"][0] + weights["h"][1], 0)
    logits = hidden @ weights["cls"][0] + weights["cls"][1]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True), hidden @ weights["reg"][0] + weights["reg"][1]


def test_a_list_of_outputs_trains_evaluates_and_predicts_as_keras():
    x, labels, targets, _, weights = reference_case()
    model = reference_model(as_dict=False)
    assert model.output_names == ["cls", "reg"]
    assert model.output_shape == [(None, 3), (None, 1)]
    cls, reg = model.predict(x, verbose=0)
    expected = numpy_outputs(x, weights)
    np.testing.assert_allclose(cls, expected[0], rtol=1e-5)
    np.testing.assert_allclose(reg, expected[1], rtol=1e-5, atol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 0.5],
                  metrics=[["accuracy"], ["mae"]], weighted_metrics=[[], ["mae"]])
    history = model.fit(x, [labels, targets], batch_size=8, epochs=2, shuffle=False,
                        verbose=0).history
    assert list(history) == list(KERAS_LIST_HISTORY)
    for name, values in KERAS_LIST_HISTORY.items():
        assert history[name] == pytest.approx(values, rel=1e-6), name
    assert model.evaluate(x, [labels, targets], verbose=0) == pytest.approx(
        KERAS_LIST_EVALUATE, rel=1e-6)


def test_a_dict_of_outputs_keys_its_figures_by_its_keys_as_keras():
    x, labels, targets, sample_weight, _ = reference_case()
    model = reference_model(as_dict=True)
    assert model.output_names == ["reg", "cls"]  # the layers', in the order of the keys
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss={"b": "sparse_categorical_crossentropy", "a": "mse"},
                  loss_weights={"a": 2.0, "b": 1.0},
                  metrics={"b": ["accuracy"], "a": ["mae", "mse"]})
    history = model.fit(x, {"b": labels, "a": targets}, batch_size=8, shuffle=False,
                        verbose=0, sample_weight={"b": sample_weight,
                                                  "a": np.ones(32, np.float32)}).history
    assert sorted(history) == sorted(KERAS_DICT_HISTORY)
    for name, values in KERAS_DICT_HISTORY.items():
        assert history[name] == pytest.approx(values, rel=1e-6), name
    y = {"a": targets, "b": labels}
    assert model.evaluate(x, y, verbose=0) == pytest.approx(KERAS_DICT_EVALUATE, rel=1e-6)
    assert list(model.evaluate(x, y, verbose=0, return_dict=True)) == [
        "loss", "b_loss", "a_loss", "a_mae", "a_mse", "b_accuracy"]
    predicted = model.predict(x, verbose=0)
    assert sorted(predicted) == ["a", "b"] and predicted["b"].shape == (32, 3)
    np.testing.assert_array_equal(model(x)["a"], predicted["a"])


def three_output_model(backend=None, dtype="float32", seed=0):
    """6 features -> h (8, relu) -> cls (3, softmax), mid (4, tanh) -> reg (1): ``mid`` an
    output that ``reg`` takes too (its gradient the sum of its loss's and reg's)."""
    inputs = keras.Input(shape=(6,), name="features")
    hidden = layers.Dense(8, activation="relu", name="h")(inputs)
    mid = layers.Dense(4, activation="tanh", name="mid")(hidden)
    outputs = [layers.Dense(3, activation="softmax", name="cls")(hidden), mid,
               layers.Dense(1, name="reg")(mid)]
    return keras.Model(inputs, outputs, dtype=dtype, seed=seed, backend=backend)


def three_output_data(rows=64):
    """``(x, [one-hot classes, 4 columns, 1 column])`` for :func:`three_output_model`."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    return x, [to_categorical(np.argmax(x[:, :3], axis=1), 3),
               np.tanh(x[:, 2:]).astype(np.float32), x[:, :1] * x[:, 1:2]]


THREE_OUTPUT_COMPILE = {"loss": ["categorical_crossentropy", "mse", "mse"],
                        "loss_weights": [1.0, 0.3, 0.5], "metrics": [["accuracy"], [], ["mae"]]}


def test_the_gradients_of_the_weighted_total_are_central_finite_differences(cpu):
    model = three_output_model(cpu, dtype="float64", seed=2)
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    x, y = three_output_data(rows=7)
    x, y = x.astype(np.float64), [array.astype(np.float64) for array in y]
    model.compute_gradients(x, y)
    analytic = [grad.copy() for layer in model.stack for grad in layer.grads]
    assert len(analytic) == 8
    for param, grad in zip(model.params, analytic, strict=True):
        np.testing.assert_allclose(
            grad, numerical_gradient(lambda: model.test_on_batch(x, y)[0], param),
            rtol=1e-5, atol=1e-8)


def test_the_loss_is_each_outputs_loss_times_its_weight():
    x, y = three_output_data()
    model = three_output_model()
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    cls, mid, reg = model.predict(x, verbose=0)
    cross_entropy = -np.mean(np.sum(y[0] * np.log(cls), axis=1))
    squares = [np.mean((mid - y[1]) ** 2), np.mean((reg - y[2]) ** 2)]
    assert results["cls_loss"] == pytest.approx(cross_entropy, rel=1e-5)
    assert [results["mid_loss"], results["reg_loss"]] == pytest.approx(squares, rel=1e-5)
    assert results["loss"] == pytest.approx(cross_entropy + 0.3 * squares[0]
                                            + 0.5 * squares[1], rel=1e-5)
    assert list(results) == ["loss", "cls_loss", "mid_loss", "reg_loss", "cls_accuracy",
                             "reg_mae"]


def test_one_sample_weight_array_weighs_every_output_as_one_each():
    x, y = three_output_data()
    weights = np.random.default_rng(1).random(64).astype(np.float32)
    runs = []
    for given in (weights, [weights] * 3, {"cls": weights, "mid": weights, "reg": weights}):
        model = three_output_model()
        model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, sample_weight=given)
        runs.append((history.history, model.get_weights()))
    for history, weights_after in runs[1:]:
        assert history == runs[0][0]
        for mine, theirs in zip(weights_after, runs[0][1], strict=True):
            np.testing.assert_array_equal(mine, theirs)
    unweighted = three_output_model()
    unweighted.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    assert unweighted.fit(x, y, batch_size=16, epochs=2, verbose=0).history != runs[0][0]


def test_targets_in_batches_validation_and_train_on_batch_are_per_output():
    x, y = three_output_data()
    model = three_output_model()
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    history = model.fit(x, y, batch_size=16, verbose=0, validation_data=(x, y)).history
    assert history["val_reg_mae"] == [pytest.approx(model.evaluate(
        x, y, verbose=0, return_dict=True)["reg_mae"], rel=1e-6)]
    batches = [(x[start:start + 16], [part[start:start + 16] for part in y])
               for start in range(0, 64, 16)]
    assert model.evaluate(iter(batches), verbose=0) == pytest.approx(
        model.evaluate(x, y, verbose=0, batch_size=16), rel=1e-6)
    assert len(model.train_on_batch(x, y)) == 6


def through_a_file(model, path):
    """``model`` saved to ``path`` and loaded back."""
    model.save(path)
    return keras.models.load_model(path)


def test_a_model_of_several_outputs_comes_back_from_its_file_and_a_pickle(tmp_path):
    model = reference_model(as_dict=True)
    model.compile(optimizer="adam", loss={"b": "sparse_categorical_crossentropy", "a": "mse"},
                  loss_weights={"a": 2.0, "b": 0.5}, metrics={"b": ["accuracy"], "a": ["mae"]},
                  weighted_metrics={"a": ["mse"]})
    x, labels, targets, *_ = reference_case()
    y = {"a": targets, "b": labels}
    model.fit(x, y, batch_size=8, verbose=0)
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(expected) == ["loss", "b_loss", "a_loss", "a_mae", "a_mse", "b_accuracy"]
    for copy in (lambda: through_a_file(model, tmp_path / "two.npz"),
                 lambda: pickle.loads(pickle.dumps(model))):
        loaded = copy()
        assert loaded.output_names == ["reg", "cls"]
        assert list(loaded.evaluate(x, y, verbose=0, return_dict=True).items()) == list(
            model.evaluate(x, y, verbose=0, return_dict=True).items())
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)["b"],
                                      model.predict(x, verbose=0)["b"])
        assert loaded.fit(x, y, verbose=0).history == model.fit(x, y, verbose=0).history


@pytest.mark.parametrize("compile_arguments, message", [
    ({"loss": ["mse"]}, r"compile's loss list 1 items for the model's 3 outputs \(cls, mid, "
                        r"reg\): give one each, or a dict keyed by their names"),
    ({"loss": {"cls": "mse", "mid": "mse"}}, "compile has no loss for the output reg"),
    ({"loss": {"out": "mse"}}, "compile's loss name 'out', which is none of the model's "
                               r"outputs \(cls, mid, reg\)"),
    ({"loss": "mse", "metrics": ["mae"]}, "compile's metrics of a model of 3 outputs must be "
                                          "a list of one list per output"),
    ({"loss": "mse", "loss_weights": [1, -1, 1]}, "the loss weight of mid must be a finite "
                                                  "number >= 0, not -1"),
    ({"loss": "mse", "metrics": {"cls": [keras.metrics.MeanAbsoluteError()] * 2}},
     "compile was given the metric object mean_absolute_error twice"),
], ids=["loss-list", "loss-missing", "loss-unknown", "flat-metrics", "negative-weight",
        "metric-twice"])
def test_compile_arguments_that_do_not_fit_the_outputs_are_one_clear_error(compile_arguments,
                                                                            message):
    with pytest.raises(UsageError, match=message):
        three_output_model().compile(optimizer="sgd", **compile_arguments)


@pytest.mark.parametrize("give, message", [
    (lambda y: y[:2], r"the model has 3 outputs \(cls, mid, reg\)"),
    (lambda y: {"cls": y[0], "mid": y[1]}, "targets have no 'reg'"),
    (lambda y: y[0], "the model has 3 outputs"),
    (lambda y: [y[0], y[1], y[2][:10]], r"64 inputs but 10 targets 'reg'"),
    (lambda y: [y[0], y[1][:, :2], y[2]], r"targets 'mid' have 2 columns; the model outputs 4 "
                                          r"there \(mid\)"),
], ids=["too-few", "dict-missing", "one-array", "rows", "columns"])
def test_targets_that_do_not_fit_the_outputs_are_one_clear_error(give, message):
    x, y = three_output_data()
    model = three_output_model()
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    with pytest.raises(UsageError, match=message):
        model.fit(x, give(y), verbose=0)


def test_class_weight_is_refused_for_several_outputs_as_in_keras():
    x, y = three_output_data()
    model = three_output_model()
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    with pytest.raises(UsageError, match="class_weight weighs the classes of a model of one "
                                         "output .as in Keras.: give sample_weight"):
        model.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)


def test_tensorboards_graph_lists_every_output_layer_as_keras():
    assert _keras_layout(three_output_model())["config"]["output_layers"] == [
        ["cls", 0, 0], ["mid", 0, 0], ["reg", 0, 0]]


def logits_and_probabilities_model(backend=None, dtype="float32"):
    """``[z, p]``: a Dense layer's logits ``z`` (an output another layer takes) and their
    softmax ``p``."""
    inputs = keras.Input(shape=(5,))
    logits = layers.Dense(3, name="z")(inputs)
    return keras.Model(inputs, [logits, layers.Activation("softmax", name="p")(logits)],
                       dtype=dtype, seed=3, backend=backend)


def test_a_from_logits_loss_takes_the_logits_of_an_output_another_layer_takes_too(cpu):
    model = logits_and_probabilities_model(cpu, dtype="float64")
    model.compile(optimizer="sgd", loss=[
        keras.losses.CategoricalCrossentropy(from_logits=True), "categorical_crossentropy"])
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(9, 5)), to_categorical(rng.integers(0, 3, size=9), 3)
    results = model.evaluate(x, [y, y], verbose=0, return_dict=True)
    assert results["z_loss"] == pytest.approx(results["p_loss"], rel=1e-12)
    model.compute_gradients(x, [y, y])
    for param, grad in zip(model.params, [g.copy() for g in model.stack[0].grads], strict=True):
        np.testing.assert_allclose(
            grad, numerical_gradient(lambda: model.test_on_batch(x, [y, y])[0], param),
            rtol=1e-5, atol=1e-8)


class WeighsEachOutputThenAll(keras.utils.PyDataset):
    """Two batches of :func:`three_output_data`: the first with a weight array per output,
    the second with one array for all of them."""

    def __init__(self):
        super().__init__()
        self.x, self.y = three_output_data(rows=32)
        rng = np.random.default_rng(2)
        self.weights = [[rng.random(16).astype(np.float32) for _ in range(3)],
                        rng.random(16).astype(np.float32)]

    def __len__(self):
        return 2

    def __getitem__(self, index):
        rows = slice(16 * index, 16 * index + 16)
        return self.x[rows], [part[rows] for part in self.y], self.weights[index]


def test_batches_that_change_how_they_weigh_the_outputs_train_as_each_batch_alone():
    batches = WeighsEachOutputThenAll()
    model, reference = three_output_model(), three_output_model()
    for made in (model, reference):
        made.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    model.fit(batches, epochs=2, verbose=0)
    for _ in range(2):
        for index in range(2):
            reference.train_on_batch(*batches[index])
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)


def test_an_output_given_no_sample_weights_is_unweighted_as_in_keras():
    x, y = three_output_data()
    weights = np.random.default_rng(1).random(64).astype(np.float32)
    model = three_output_model()
    model.compile(optimizer="sgd", **THREE_OUTPUT_COMPILE)
    ones = np.ones(64, np.float32)
    assert model.evaluate(x, y, verbose=0, sample_weight=[weights, None, None]) == \
        model.evaluate(x, y, verbose=0, sample_weight=[weights, ones, ones])
    assert model.evaluate(x, y, verbose=0, sample_weight={"cls": None, "mid": None,
                                                          "reg": None}) == \
        model.evaluate(x, y, verbose=0)
    with pytest.raises(UsageError, match="targets 'mid' are None: give an array"):
        model.evaluate(x, [y[0], None, y[2]], verbose=0)


def test_a_list_of_outputs_lists_their_losses_in_its_order_whatever_the_loss_dicts():
    """Keras 3.15.1 follows compile's loss dict only for a dict of outputs."""
    x, y = three_output_data()
    model = three_output_model()
    model.compile(optimizer="sgd", loss={"reg": "mse", "cls": "categorical_crossentropy",
                                         "mid": "mse"})
    assert list(model.evaluate(x, y, verbose=0, return_dict=True)) == [
        "loss", "cls_loss", "mid_loss", "reg_loss"]


def test_a_dict_of_one_output_is_keyed_by_its_key_as_keras(tmp_path):
    x, _, targets, *_ = reference_case()
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, {"a": layers.Dense(1, name="d")(inputs)})
    assert model.output_names == ["d"]
    model.compile(optimizer="sgd", loss={"a": "mse"}, metrics={"a": ["mae"]})
    assert list(model.fit(x, {"a": targets}, verbose=0).history) == ["loss", "mae"]
    assert list(model.fit(x, targets, verbose=0).history) == ["loss", "mae"]
    weights = np.linspace(0, 1, 32)
    assert model.evaluate(x, targets, sample_weight={"a": weights}, verbose=0) == \
        model.evaluate(x, targets, sample_weight=weights, verbose=0)
    for made in (model, keras.Model.from_config(model.get_config()),
                 through_a_file(model, tmp_path / "one.npz")):
        predicted = made.predict(x, verbose=0)
        assert list(predicted) == ["a"] and predicted["a"].shape == (32, 1)
    config = three_output_model().get_config()
    config["output_names"] = ["a", "a", "b"]
    with pytest.raises(UsageError, match=r"config names its 3 outputs \['a', 'a', 'b'\]: a "
                                         "list of one name each, each name once"):
        keras.Model.from_config(config)


def test_an_output_named_like_validation_figures_is_refused():
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, {"val": layers.Dense(1)(inputs), "b": layers.Dense(1)(inputs)})
    with pytest.raises(UsageError, match="an output named 'val' would log figures named as "
                                         r"validation's \(val_loss\): name it otherwise"):
        model.compile(optimizer="sgd", loss="mse")
