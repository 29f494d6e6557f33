"""Keras' layer features: weight regularizers, ``trainable``, and the Activation and Reshape
layers, checked against closed forms, finite differences (float64) and Keras' configs."""

import json
import warnings

import numpy as np
import pytest

import dnn
from dnn import activations, regularizers
from dnn.errors import ArgumentTypeError, UsageError
from dnn.layers import Activation, Dense, Input, Reshape, from_config
from dnn.regularizers import L1, L1L2, L2
from dnn.testing import numerical_gradient

RNG = np.random.default_rng(2024)
GRADIENT_TOLERANCE = dict(rtol=1e-6, atol=1e-8)


def away_from_zero(shape, rng=RNG):
    """Normals at least 0.1 from 0, where ``|w|`` has a derivative finite differences see."""
    values = rng.normal(size=shape)
    return values + 0.1 * np.sign(values)


def same_arrays(ours: list, expected: list) -> bool:
    """The same array objects, in order."""
    return len(ours) == len(expected) and all(a is b for a, b in zip(ours, expected))


def factors(regularizer) -> tuple:
    """``(l1, l2)`` of a built-in regularizer, from its config."""
    config = regularizer.get_config()
    return config.get("l1", 0.0), config.get("l2", 0.0)


def penalty_of(regularizer, w) -> float:
    """``l1 * sum|w| + l2 * sum(w ** 2)``, the closed form, on the host."""
    l1, l2 = factors(regularizer)
    return l1 * np.abs(w).sum() + l2 * np.square(w).sum()


def penalty_gradient_of(regularizer, w) -> np.ndarray:
    l1, l2 = factors(regularizer)
    return l1 * np.sign(w) + 2 * l2 * w


def one_hot(labels, classes):
    return np.eye(classes)[labels]


REGULARIZERS = [L1(0.3), L2(0.2), L1L2(l1=0.1, l2=0.05), L1L2(l2=0.07)]


# -- regularizers ------------------------------------------------------------------------------
@pytest.mark.parametrize("regularizer", REGULARIZERS, ids=["L1", "L2", "L1L2", "L1L2-l2"])
def test_penalty_and_gradient_match_the_formula_and_finite_differences(regularizer):
    w = away_from_zero((4, 3))
    penalty = regularizer(w)
    assert isinstance(penalty, np.ndarray) and penalty.shape == () and penalty.dtype == w.dtype
    assert float(penalty) == pytest.approx(penalty_of(regularizer, w), rel=1e-12)
    gradient = regularizer.gradient(w)
    np.testing.assert_allclose(gradient, penalty_gradient_of(regularizer, w), rtol=1e-12)
    np.testing.assert_allclose(gradient, numerical_gradient(lambda: float(regularizer(w)), w),
                               **GRADIENT_TOLERANCE)


def test_a_float32_weight_keeps_its_dtype_and_zero_has_no_l1_slope():
    w = np.array([[0.0, -2.0], [3.0, 0.5]], np.float32)
    regularizer = L1L2(l1=0.5, l2=0.25)
    assert regularizer(w).dtype == np.float32 and regularizer.gradient(w).dtype == np.float32
    assert float(regularizer(w)) == pytest.approx(0.5 * 5.5 + 0.25 * 13.25)
    np.testing.assert_allclose(regularizer.gradient(w), [[0.0, -1.5], [2.0, 0.75]])


def test_l1l2_config_round_trips_through_every_form():
    regularizer = L1L2(l1=0.1, l2=0.2)
    config = regularizer.get_config()
    assert config == {"l1": 0.1, "l2": 0.2}
    assert L1L2.from_config(config).get_config() == config
    serialized = regularizers.serialize(regularizer)
    assert serialized == {"class_name": "L1L2", "config": config}
    for rebuilt in (regularizers.deserialize(json.loads(json.dumps(serialized))),
                    regularizers.get(serialized)):
        assert type(rebuilt) is L1L2 and rebuilt.get_config() == config
    assert regularizers.serialize(None) is None


def test_get_takes_keras_names_classes_instances_and_none():
    assert regularizers.l1 is L1 and regularizers.l2 is L2 and regularizers.l1_l2 is L1L2
    assert regularizers.get(None) is None
    assert regularizers.get(REGULARIZERS[0]) is REGULARIZERS[0]
    assert regularizers.get("l1").get_config() == {"l1": 0.01}
    assert regularizers.get("l2").get_config() == {"l2": 0.01}
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.01, "l2": 0.01}
    assert regularizers.get(L2).get_config() == {"l2": 0.01}
    assert L1L2().get_config() == {"l1": 0.0, "l2": 0.0}  # Keras 3's class defaults
    assert L1(None).l1 == L2(None).l2 == 0.01


def test_unknown_or_wrong_regularizers_are_one_line_errors():
    with pytest.raises(UsageError, match="unknown regularizer 'l3'; known: l1, l2, l1_l2"):
        Dense(3, kernel_regularizer="l3")
    with pytest.raises(UsageError, match="unknown regularizer 'L3'"):
        regularizers.get({"class_name": "L3", "config": {}})
    with pytest.raises(UsageError, match="regularizer L2: .*'l1'"):
        regularizers.deserialize({"class_name": "L2", "config": {"l1": 0.1}})
    with pytest.raises(ArgumentTypeError, match="not function"):
        regularizers.get(lambda w: 0.0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="L2 l2 must be a finite number >= 0"):
            L2(bad)
    with pytest.raises(ArgumentTypeError, match="L1L2 l1 must be a number"):
        L1L2(l1="0.1")
    with pytest.raises(UsageError, match="activity_regularizer is not supported yet"):
        Dense(3, activity_regularizer="l2")


# -- regularized layers ------------------------------------------------------------------------
def regularized_model(backend, **options):
    """A float64 ``4 -> 3 tanh -> 2 softmax`` model, built, whose layers carry ``options``'
    regularizers (``kernel``/``bias`` of the ``hidden``/``output`` layer)."""
    model = dnn.Sequential([
        Dense(3, activation="tanh", input_shape=(4,), name="hidden",
              kernel_regularizer=options.get("hidden_kernel"),
              bias_regularizer=options.get("hidden_bias")),
        Dense(2, activation="softmax", name="output",
              kernel_regularizer=options.get("output_kernel"),
              bias_regularizer=options.get("output_bias"))], dtype="float64", seed=5,
        backend=backend)
    rng = np.random.default_rng(0)  # the same biases for every call
    for layer in model.layers:  # biases away from 0, for L1's finite differences
        layer.bias[...] = away_from_zero(layer.bias.shape, rng)
    return model


def test_layer_penalty_and_its_gradients_match_the_formula_and_finite_differences(cpu):
    hidden_kernel, hidden_bias, output_kernel = L1L2(l1=0.01, l2=0.02), L2(0.3), L1(0.05)
    model = regularized_model(cpu, hidden_kernel=hidden_kernel, hidden_bias=hidden_bias,
                              output_kernel=output_kernel)
    hidden, output = model.layers
    penalty = hidden.regularization_loss()
    assert isinstance(penalty, np.ndarray) and penalty.shape == () and penalty.dtype == np.float64
    expected = penalty_of(hidden_kernel, hidden.kernel) + penalty_of(hidden_bias, hidden.bias)
    assert float(penalty) == pytest.approx(expected, rel=1e-12)
    assert float(output.regularization_loss()) == pytest.approx(
        penalty_of(output_kernel, output.kernel), rel=1e-12)
    for layer, regularized in ((hidden, (hidden_kernel, hidden_bias)),
                               (output, (output_kernel, None))):
        for grad in layer.grads:
            grad[...] = 1.0  # the penalty's gradient is added to what backward wrote
        layer.add_regularization_gradients()
        for param, grad, regularizer in zip(layer.params, layer.grads, regularized):
            if regularizer is None:
                np.testing.assert_array_equal(grad, 1.0)
                continue
            np.testing.assert_allclose(grad - 1, penalty_gradient_of(regularizer, param),
                                       rtol=1e-12)
            numerical = numerical_gradient(lambda: float(layer.regularization_loss()), param)
            np.testing.assert_allclose(grad - 1, numerical, **GRADIENT_TOLERANCE)


def test_a_layer_without_regularizers_or_frozen_has_no_penalty(cpu):
    model = regularized_model(cpu, output_kernel=L2(0.1))
    hidden, output = model.layers
    assert hidden.regularization_loss() is None
    output.trainable = False  # Keras regularizes trainable weights only
    assert output.regularization_loss() is None
    before = [grad.copy() for grad in output.grads]
    output.add_regularization_gradients()
    for grad, old in zip(output.grads, before):
        np.testing.assert_array_equal(grad, old)
    output.trainable = True
    assert output.regularization_loss() is not None


def test_dense_without_bias_ignores_its_bias_regularizer(cpu):
    layer = Dense(2, use_bias=False, kernel_regularizer=L2(0.1), bias_regularizer=L1(5.0))
    dnn.Sequential([layer], dtype="float64", seed=0, backend=cpu).build(3)
    assert float(layer.regularization_loss()) == pytest.approx(0.1 * (layer.kernel ** 2).sum())


def test_regularized_and_frozen_layers_round_trip_through_config_and_checkpoint(tmp_path, cpu):
    model = dnn.Sequential([
        Input(shape=(12,)), Reshape((3, 4)),
        Dense(5, kernel_regularizer=L1L2(l1=0.1, l2=0.2), bias_regularizer="l2",
              trainable=False),
        Activation("relu"), Dense(3, kernel_regularizer="l1"), Activation("softmax")],
        seed=0, backend=cpu)
    config = model.get_config()
    dense = config["layers"][2]
    assert dense["kernel_regularizer"] == {"class_name": "L1L2",
                                           "config": {"l1": 0.1, "l2": 0.2}}
    assert dense["bias_regularizer"] == {"class_name": "L2", "config": {"l2": 0.01}}
    assert dense["trainable"] is False
    assert "trainable" not in config["layers"][4] and "bias_regularizer" not in config["layers"][4]
    rebuilt = [from_config(json.loads(json.dumps(layer))) for layer in config["layers"]]
    assert [layer.get_config() for layer in rebuilt] == config["layers"]
    assert rebuilt[2].trainable is False and isinstance(rebuilt[2].kernel_regularizer, L1L2)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    path = tmp_path / "regularized.npz"
    model.save(path)
    loaded = dnn.load_model(path, backend=cpu)
    assert loaded.get_config() == config
    assert loaded.layers[1].trainable is False  # the Input is not among the layers


# -- trainable ---------------------------------------------------------------------------------
def test_trainable_is_settable_and_round_trips_through_config(cpu):
    layer = Dense(3, trainable=False, name="frozen")
    assert layer.trainable is False
    assert layer.get_config() == {"class": "Dense", "units": 3, "activation": "linear",
                                  "name": "frozen", "trainable": False}
    assert from_config(layer.get_config()).trainable is False
    layer.trainable = 1  # Keras stores bool(value)
    assert layer.trainable is True and "trainable" not in layer.get_config()
    frozen_input = Input(shape=(4,))
    frozen_input.trainable = False  # a layer without a trainable argument still keeps it
    assert from_config(frozen_input.get_config()).trainable is False


def test_weights_properties_list_the_params_as_keras_does(cpu):
    layer = Dense(3)
    dnn.Sequential([layer], seed=0, backend=cpu).build(2)
    kernel, bias = layer.params
    assert same_arrays(layer.trainable_weights, [kernel, bias])
    assert layer.non_trainable_weights == []
    layer.trainable = False
    assert layer.trainable_weights == []
    assert same_arrays(layer.non_trainable_weights, [kernel, bias])
    assert same_arrays(layer.weights, [kernel, bias])
    layer.weights.clear()  # a copy of the list: the layer keeps its params
    assert len(layer.params) == 2


# -- Activation and Reshape --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_activation_layer_backward_matches_finite_differences(cpu, name):
    layer = Activation(name)
    assert layer.build_on((5,), cpu, RNG, np.float64) == (5,)
    x, upstream = RNG.normal(size=(4, 5)) + 0.05, RNG.normal(size=(4, 5))

    def objective():
        return float(np.sum(upstream * layer.forward(x)))

    before = x.copy()
    out = layer.forward(x)
    assert out is not x
    np.testing.assert_array_equal(x, before)  # its input is left as it was
    np.testing.assert_allclose(out, activations.get(name).forward(cpu, x.copy()), rtol=1e-15)
    grad_x = layer.backward(upstream.copy())
    np.testing.assert_allclose(grad_x, numerical_gradient(objective, x), **GRADIENT_TOLERANCE)
    assert layer.get_config() == {"class": "Activation", "activation": name,
                                  "name": layer.name}
    assert from_config(layer.get_config()).activation.name == name


def train(layers, steps=3):
    """The losses of ``steps`` train_on_batch calls and the weights after them."""
    model = dnn.Sequential(layers, seed=11)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(16, 6)), one_hot(RNG.integers(0, 3, size=16), 3)
    losses = [model.train_on_batch(x, y) for _ in range(steps)]
    return losses, model.get_weights(), model.predict(x)


def test_a_softmax_activation_layer_trains_as_a_dense_softmax():
    state = RNG.bit_generator.state
    dense_losses, dense_weights, dense_outputs = train(
        [Dense(5, activation="relu"), Dense(3, activation="softmax")])
    RNG.bit_generator.state = state  # the same data
    layer_losses, layer_weights, layer_outputs = train(
        [Dense(5, activation="relu"), Dense(3), Activation("softmax")])
    assert layer_losses == dense_losses
    for ours, reference in zip(layer_weights, dense_weights, strict=True):
        np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(layer_outputs, dense_outputs)
    np.testing.assert_allclose(layer_outputs.sum(axis=1), 1, rtol=1e-6)


def test_reshape_passes_the_features_on_and_refuses_another_size(cpu):
    reshape = Reshape((-1, 4))
    model = dnn.Sequential([Input(shape=(12,)), reshape, Dense(2)], seed=0, backend=cpu)
    x = RNG.normal(size=(3, 12))
    np.testing.assert_allclose(model.predict(x), x @ model.layers[1].kernel, rtol=1e-5)
    assert reshape.get_config() == {"class": "Reshape", "target_shape": [-1, 4],
                                    "name": reshape.name}
    assert from_config(reshape.get_config()).target_shape == (-1, 4)
    for target, declared in (((5, 2), "Input"), ((-1, 5), "Input"), ((5, 2), "data")):
        layers = [Reshape(target), Dense(2)]
        with pytest.raises(UsageError) as error:
            if declared == "Input":
                dnn.Sequential([Input(shape=(12,)), *layers], backend=cpu)
            else:
                dnn.Sequential(layers, backend=cpu).predict(x)
        message = str(error.value)
        assert "\n" not in message and "(12,)" in message and str(target) in message


@pytest.mark.parametrize("target", [(), (0, 3), (-1, -1), (2, -2), (2.0, 3), "12"])
def test_reshape_refuses_a_target_shape_that_is_not_sizes(target):
    with pytest.raises(UsageError, match="Reshape target_shape must be positive sizes"):
        Reshape(target)


# -- what the model does with them (dnn.models: the loss, the update, the frozen weights) --------
def test_fit_adds_exactly_the_penalty_to_the_loss_and_its_gradient_to_the_update(cpu):
    regularizer = L1L2(l1=0.01, l2=0.02)
    plain = regularized_model(cpu)
    regularized = regularized_model(cpu, hidden_kernel=regularizer)
    x, y = RNG.normal(size=(8, 4)), one_hot(RNG.integers(0, 2, size=8), 2)
    kernel = regularized.layers[0].get_weights()[0]
    penalty = penalty_of(regularizer, kernel)
    for model in (plain, regularized):
        model.compile(optimizer=dnn.optimizers.SGD(learning_rate=0.1),
                      loss="categorical_crossentropy")
    assert regularized.evaluate(x, y) == pytest.approx(plain.evaluate(x, y) + penalty,
                                                        rel=1e-12)
    losses = [model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
              .history["loss"][0] for model in (plain, regularized)]
    assert losses[1] == pytest.approx(losses[0] + penalty, rel=1e-12)
    plain_weights, regularized_weights = plain.get_weights(), regularized.get_weights()
    np.testing.assert_allclose(plain_weights[0] - regularized_weights[0],
                               0.1 * penalty_gradient_of(regularizer, kernel), rtol=1e-9)
    for ours, reference in zip(regularized_weights[1:], plain_weights[1:]):
        np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_the_regularized_training_gradient_matches_finite_differences_of_the_loss(cpu):
    model = regularized_model(cpu, hidden_kernel=L1L2(l1=0.02, l2=0.03), hidden_bias=L2(0.1),
                              output_kernel=L1(0.04), output_bias="l1_l2")
    plain = regularized_model(cpu)
    x, y = RNG.normal(size=(6, 4)), one_hot(RNG.integers(0, 2, size=6), 2)
    for each in (model, plain):
        each.compile(optimizer=dnn.optimizers.SGD(learning_rate=1.0),
                     loss="categorical_crossentropy")
    penalty = sum(float(layer.regularization_loss()) for layer in model.layers)
    assert model.evaluate(x, y) == pytest.approx(plain.evaluate(x, y) + penalty, rel=1e-12)
    numerical = [numerical_gradient(lambda: model.evaluate(x, y), param)
                 for param in model.params]
    before = model.get_weights()
    model.train_on_batch(x, y)  # w - 1.0 * gradient
    for old, new, expected in zip(before, model.get_weights(), numerical):
        np.testing.assert_allclose(old - new, expected, rtol=1e-5, atol=1e-8)


def test_a_frozen_layer_keeps_its_weights_and_passes_the_gradient_on(cpu):
    model = dnn.Sequential([Dense(4, activation="tanh"), Dense(3, activation="softmax")],
                           seed=3, backend=cpu)
    model.layers[1].trainable = False
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(20, 5)), one_hot(RNG.integers(0, 3, size=20), 3)
    model.build(5)
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=5, verbose=0)
    after = model.get_weights()
    assert not np.array_equal(after[0], before[0])  # trained through the frozen layer
    for old, new in zip(before[2:], after[2:]):
        np.testing.assert_array_equal(new, old)
    assert model.count_params() == 5 * 4 + 4 + 4 * 3 + 3  # Keras counts frozen weights too
    lines = []
    model.summary(print_fn=lines.append)
    summary = "\n".join(lines)
    assert "Trainable params: 24" in summary and "Non-trainable params: 15" in summary
    model.layers[1].trainable = True  # and trains again once unfrozen
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert not np.array_equal(model.get_weights()[2], after[2])


def test_a_frozen_first_layer_leaves_the_rest_training_as_a_model_of_its_own(cpu):
    frozen = Dense(4, activation="tanh", trainable=False)
    model = dnn.Sequential([frozen, Dense(3, activation="softmax")], dtype="float64", seed=4,
                           backend=cpu)
    model.compile(optimizer="adam", loss="categorical_crossentropy")  # state per weight
    model.build(5)
    x, y = RNG.normal(size=(20, 5)), one_hot(RNG.integers(0, 3, size=20), 3)
    kernel, bias = frozen.get_weights()
    alone = dnn.Sequential([Dense(3, activation="softmax")], dtype="float64", backend=cpu)
    alone.compile(optimizer="adam", loss="categorical_crossentropy")
    alone.build(4)
    alone.set_weights(model.get_weights()[2:])
    model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    alone.fit(np.tanh(x @ kernel + bias), y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    np.testing.assert_array_equal(frozen.get_weights()[0], kernel)
    np.testing.assert_array_equal(frozen.get_weights()[1], bias)
    for ours, reference in zip(model.get_weights()[2:], alone.get_weights(), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


# -- a layer called on a batch (Keras' layer(x)) ----------------------------------------------
def test_a_layer_called_on_a_batch_builds_itself_as_the_keras_guide_shows(monkeypatch):
    """keras.io's Sequential guide: no weights until the first call, then (4, 3) and (3,),
    the output x @ kernel + bias as a new host array; the same seed, the same weights."""
    from dnn import utils

    monkeypatch.setattr(utils, "_model_seeds", None)
    outputs = []
    for _ in range(2):
        dnn.utils.set_random_seed(0)
        layer = Dense(3)
        assert layer.weights == []
        x = np.ones((1, 4))
        y = layer(x)
        kernel, bias = layer.get_weights()
        assert kernel.shape == (4, 3) and bias.shape == (3,)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32
        np.testing.assert_allclose(y, x @ kernel + bias, rtol=1e-6)
        outputs.append(y)
    np.testing.assert_array_equal(*outputs)
    again = layer(2 * x)
    np.testing.assert_array_equal(y, outputs[1])  # the first result is a copy of its own
    assert not np.array_equal(again, y)


def test_layers_called_in_turn_give_what_a_sequential_of_them_predicts():
    layers = [Dense(2, activation="relu"), Dense(3, activation="relu"), Dense(4)]
    x = RNG.normal(size=(3, 3)).astype(np.float32)
    chained = layers[2](layers[1](layers[0](x)))
    model = dnn.Sequential([Dense(2, activation="relu"), Dense(3, activation="relu"),
                            Dense(4)], seed=1)
    model.build(3)
    model.set_weights([w for layer in layers for w in layer.get_weights()])
    np.testing.assert_allclose(chained, model.predict(x, verbose=0), rtol=1e-6)
    inside = model.layers[0](x)  # a layer of a built model: its weights, its backend
    kernel, bias = model.layers[0].get_weights()
    np.testing.assert_allclose(inside, np.maximum(x @ kernel + bias, 0), rtol=1e-6)


def test_a_call_runs_the_layer_as_fit_does_only_with_training():
    x = np.ones((200, 5), np.float32)
    dropout = dnn.layers.Dropout(0.5)
    np.testing.assert_array_equal(dropout(x), x)
    dropped = dropout(x, training=True)
    assert 0.3 < np.mean(dropped == 0) < 0.7 and set(np.unique(dropped)) == {0.0, 2.0}
    norm = dnn.layers.BatchNormalization()
    batch = RNG.normal(3.0, 2.0, size=(64, 2)).astype(np.float32)
    np.testing.assert_allclose(norm(batch), batch / np.sqrt(1 + 1e-3), rtol=1e-6)
    normalized = norm(batch, training=True)
    np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(norm.get_weights()[2], 0.01 * batch.mean(axis=0), rtol=1e-4)


def test_a_call_on_the_current_backend_gives_host_arrays():
    from dnn.replay import EagerReplayBackend

    backend = EagerReplayBackend()
    with dnn.backends.use_backend(backend):
        layer = Dense(2)
        y = layer(np.ones((2, 3)))
    assert layer.backend is backend and type(y) is np.ndarray
    assert layer(backend.asarray(np.ones((2, 3), np.float32))).shape == (2, 2)


@pytest.mark.parametrize("inputs, options, message", [
    (Input((4,)), {}, r"dense_call is built for samples of shape \(3,\), but input_layer.* "
                      r"gives \(4,\)"),
    (Dense(3), {}, r"dense_call's inputs are a Dense \(dense.*\), not data"),
    (np.ones(3), {}, r"dense_call's inputs must be a non-empty batch \(n, \*sample shape\), "
                     r"not of shape \(3,\)"),
    (np.ones((0, 3)), {}, "must be a non-empty batch"),
    (np.ones((2, 4)), {}, r"dense_call is built for samples of shape \(3,\), not \(4,\)"),
    (["a", "b"], {}, "dense_call's inputs must be real numbers"),
    ((np.ones((2, 3)), np.ones((2, 3))), {}, "dense_call was called on a list of 2 inputs: a "
                                             "layer takes one"),
    (np.ones((2, 3)), {"training": "False"}, "dense_call's training must be True or False, "
                                             "not 'False'"),
    (np.ones((2, 3)), {"mask": None}, "dense_call was called with mask: dnn's layers take a "
                                      "batch and training= alone")],
    ids=["keras-input", "a-layer", "no-batch-axis", "empty", "other-shape", "strings",
         "several-inputs", "training-text", "mask"])
def test_a_call_on_what_the_layer_cannot_take_is_one_clear_error(inputs, options, message):
    layer = Dense(2, name="dense_call")
    layer(np.ones((1, 3)))
    with pytest.raises(UsageError, match=message):
        layer(inputs, **options)


def test_a_call_before_building_refuses_another_shape_than_declared_and_too_large_weights():
    with pytest.raises(UsageError, match=r"dense_declared is declared for samples of shape "
                                         r"\(5,\), not \(4,\)"):
        Dense(3, input_shape=(5,), name="dense_declared")(np.ones((2, 4)))
    huge = Dense(2**30, name="dense_huge")
    with pytest.raises(dnn.errors.OutOfMemoryError, match="dense_huge: its weights for samples "
                                                          r"of shape \(4,\) need more memory"):
        huge(np.ones((1, 4)))
    assert not huge.built


def test_a_model_called_on_a_keras_input_says_a_model_is_no_layer_of_another():
    model = dnn.Sequential([Dense(2)])
    with pytest.raises(UsageError, match=r"sequential was called on input_layer.*: a model "
                                         r"called on keras.Input .*is not supported"):
        model(Input((3,)))


def test_a_model_keeps_the_weights_of_a_layer_a_call_built_alike():
    """As Keras does: the weights set on a layer built by a call, and a BatchNormalization's
    moving statistics moved by one, stay once a model holds the layer; a call's build for
    another sample shape is drawn anew, with a warning."""
    x = RNG.normal(size=(16, 4)).astype(np.float32)
    dense, norm = Dense(3, name="dense_kept"), dnn.layers.BatchNormalization()
    dense(x)
    weights = [np.full((4, 3), 0.5, np.float32), np.arange(3, dtype=np.float32)]
    dense.set_weights(weights)
    norm(dense(x), training=True)
    moving = norm.get_weights()[2:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kept, without a word
        model = dnn.Sequential([Input((4,)), dense, norm])  # built: its first layer's shape
    assert model.built
    for ours, given in zip(dense.get_weights(), weights):
        np.testing.assert_array_equal(ours, given)
    for ours, moved in zip(norm.get_weights()[2:], moving):
        np.testing.assert_array_equal(ours, moved)
    assert not np.allclose(moving[0], 0)
    other = Dense(3, name="dense_redrawn")
    other(np.ones((2, 5)))
    with pytest.warns(UserWarning, match=r"dense_redrawn was built by a call for samples of "
                                         r"shape \(5,\) .*; the model builds it for \(4,\) "
                                         r".*drawing its weights anew"):
        dnn.Sequential([Input((4,)), other])
    assert other.get_weights()[0].shape == (4, 3)


def test_input_takes_keras_batch_shape_and_names_the_arguments_it_cannot_honour():
    assert Input(batch_shape=(None, 28, 28, 1)).shape == (None, 28, 28, 1)
    assert Input((3,), dtype=None, sparse=None, optional=False).shape == (None, 3)
    assert Input((3,), sparse=False).shape == (None, 3)
    model = dnn.Sequential([Input(batch_shape=(None, 4)), Dense(2)])
    assert model.sample_shape == (4,)
    for options, message in [
            (dict(shape=(4,), batch_size=8), "Input: batch_size is not supported yet; leave it "
                                             "None"),
            (dict(shape=(4,), dtype="float64"), r"Input: dtype is not supported yet; the "
                                                r"model's dtype \(Sequential\(dtype=...\)\)"),
            (dict(batch_shape=(8, 4)), r"batch_shape must be \(None, \*sample shape\), not "
                                       r"\(8, 4\)"),
            (dict(), "Input takes shape=.*or batch_shape=.*one of them"),
            (dict(shape=(4,), batch_shape=(None, 4)), "one of them"),
            (dict(shape=(4,), ragged=True), "Input has no argument 'ragged'")]:
        with pytest.raises(UsageError, match=message):
            Input(**options)
