"""The Keras-shaped model API on every available backend: shapes, dtypes, seeding, errors."""

import re
import warnings

import numpy as np
import pytest

import dnn
import dnn.saving.checkpoint
import dnn.optimizers
from dnn.errors import DivergenceError, DnnError, UsageError
from dnn.layers import Dense
from dnn.utils import to_categorical


def blobs(n=256, features=8, classes=3, seed=0):
    """A learnable toy problem: class centres far apart plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(scale=3.0, size=(classes, features))
    x = (centres[labels] + rng.normal(size=(n, features))).astype(np.float32)
    return x, labels


def seed_network(backend, dtype="float32", seed=0, hidden=16, classes=3):
    model = dnn.Sequential([Dense(hidden, activation="relu"), Dense(classes, activation="softmax")],
                           dtype=dtype, seed=seed, backend=backend)
    model.compile(optimizer=dnn.optimizers.RMSprop(learning_rate=0.01),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_learns_and_reports_history(backend):
    x, labels = blobs()
    model = seed_network(backend)
    history = model.fit(x, to_categorical(labels), epochs=5, batch_size=32,
                        validation_data=(x[:64], to_categorical(labels[:64])))
    losses = history.history["loss"]
    assert len(losses) == 5 and losses[-1] < losses[0] / 2
    assert history.history["accuracy"][-1] > 0.9
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2, 3, 4] and len(history.seconds) == 5
    loss, accuracy = model.evaluate(x, to_categorical(labels))
    assert accuracy > 0.9 and loss == pytest.approx(history.history["loss"][-1], rel=0.5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_end_to_end(backend, dtype):
    x, labels = blobs(n=64)
    model = seed_network(backend, dtype=dtype)
    model.fit(x, to_categorical(labels), epochs=1, batch_size=16)
    expected = backend.dtype(dtype)
    assert all(p.dtype == expected for p in model.params)
    assert all(backend.is_own_array(p) for p in model.params)
    output = model.forward(backend.asarray(x[:16].astype(dtype)))
    assert output.dtype == expected
    grads = [g for layer in model.layers for g in layer.grads]
    assert all(g.dtype == expected for g in grads)
    states = [a for s in model.optimizer.states for a in s.values()]
    assert states and all(a.dtype == expected for a in states)
    assert model.predict(x).dtype == np.dtype(dtype)


def test_the_backends_own_arrays_train_like_host_arrays(backend, monkeypatch):
    x, labels = blobs(n=96)
    y = to_categorical(labels)
    x_own, y_own = backend.asarray(x), backend.asarray(y)
    if not isinstance(x_own, np.ndarray):
        try:
            np.asarray(x_own)
        except TypeError:
            pass  # already refused, as CuPy's arrays refuse it
        else:  # make it refuse, as CuPy's arrays do
            def refuse(*args, **kwargs):
                raise TypeError("Implicit conversion to a NumPy array is not allowed")

            monkeypatch.setattr(type(x_own), "__array__", refuse)
    on_host, on_backend = seed_network(backend), seed_network(backend)
    host_losses = on_host.fit(x, y, epochs=2, batch_size=32).history["loss"]
    assert on_backend.fit(x_own, y_own, epochs=2, batch_size=32).history["loss"] == host_losses
    assert on_backend.evaluate(x_own, y_own) == on_host.evaluate(x, y)
    np.testing.assert_array_equal(on_backend.predict(x_own), on_host.predict(x))


def test_same_seed_same_run_different_seed_different_start(backend):
    x, labels = blobs(n=64)
    runs = []
    for seed in (5, 5, 6):
        model = seed_network(backend, seed=seed)
        history = model.fit(x, to_categorical(labels), epochs=2, batch_size=16)
        runs.append((history.history["loss"], model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][0] != runs[2][0]


def test_weights_in_keras_order_and_set_weights_copies(cpu):
    model = seed_network(cpu, hidden=5)
    model.build(4)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(4, 5), (5,), (5, 3), (3,)]
    kernel = model.get_weights()[0]
    limit = np.sqrt(6 / (4 + 5))
    assert np.all(np.abs(kernel) <= limit) and np.all(model.get_weights()[1] == 0)
    new = [np.full(s, 0.5, np.float32) for s in shapes]
    model.set_weights(new)
    model.fit(np.ones((4, 4), np.float32), to_categorical([0, 1, 2, 0], 3), epochs=1)
    assert np.all(new[0] == 0.5), "training wrote into the caller's arrays"
    with pytest.raises(UsageError, match="shape"):
        model.set_weights([np.zeros((3, 3))] + new[1:])


def test_predict_gives_probabilities_and_train_on_batch_a_loss(backend):
    x, labels = blobs(n=32)
    model = seed_network(backend)
    probabilities = model.predict(x)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (32, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    first, accuracy = model.train_on_batch(x, to_categorical(labels))  # Keras 3: and metrics
    assert isinstance(first, float) and 0 <= accuracy <= 1
    model.compile(optimizer=model.optimizer, loss=model.loss)
    for _ in range(20):
        last = model.train_on_batch(x, to_categorical(labels))
    assert isinstance(last, float) and last < first  # a loss alone without metrics


def test_sparse_and_mse_losses_train(cpu):
    x, labels = blobs(n=128)
    for loss, targets in (("sparse_categorical_crossentropy", labels),
                          ("mean_squared_error", to_categorical(labels))):
        model = dnn.Sequential([Dense(8, activation="tanh"), Dense(3, activation="sigmoid")],
                               seed=1, backend=cpu)
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        history = model.fit(x, targets, epochs=8, batch_size=16)
        assert history.history["loss"][-1] < history.history["loss"][0], loss


def test_inputs_are_flattened_and_size_inferred_saying_keras_would_not(cpu):
    model = seed_network(cpu)
    images = np.zeros((4, 2, 3), np.float32)
    with pytest.warns(UserWarning, match=r"dense.* takes its inputs of shape \(2, 3\) flattened, "
                                         r"as 6 features \(Keras would apply it to their last "
                                         r"axis alone\): put a Flatten\(\) before it"):
        assert model.predict(images).shape == (4, 3)
    assert model.layers[0].kernel.shape == (6, 16)


def sparse(model):
    """``model`` compiled again with the sparse loss (integer labels)."""
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: m.fit(x, y, batch_size=0), "batch_size"),
    (lambda m, x, y: m.fit(x, y, epochs=-1), "epochs"),
    (lambda m, x, y: m.fit(x, y[:3]), "targets"),
    (lambda m, x, y: m.fit(x[:, :5], y), "features"),
    (lambda m, x, y: m.fit(x, np.argmax(y, axis=1)), "one-hot"),
    (lambda m, x, y: m.fit(x.astype(complex), y), "inputs must be real numbers, not complex128"),
    (lambda m, x, y: m.fit(x.astype(str), y), "inputs must be real numbers, not <U"),
    (lambda m, x, y: m.evaluate(x, y.astype(object)), "targets must be real numbers, not object"),
    (lambda m, x, y: m.fit(x, y, validation_data=x), r"validation_data must be \(x_val, y_val\)"),
    (lambda m, x, y: sparse(m).fit(x, np.argmax(y, axis=1) + 1),
     r"labels must lie in \[0, 3\) for a model with 3 outputs, not \[1, 3\]"),
    (lambda m, x, y: sparse(m).evaluate(x, np.argmax(y, axis=1) - 1),
     r"labels must lie in \[0, 3\) for a model with 3 outputs, not \[-1, 1\]"),
    (lambda m, x, y: m.fit(x, y, callbacks=[print]),
     "callbacks must be dnn.callbacks.Callback instances, not builtin_function_or_method"),
    (lambda m, x, y: m.fit(x, y, callbacks=3),
     "callbacks must be a list of dnn.callbacks.Callback instances, not int"),
    (lambda m, x, y: m.fit([[0.5] * 8, [0.5] * 7], y[:2]),
     r"inputs: not a rectangular array \(rows of different lengths\?\)"),
    (lambda m, x, y: m.fit(x[:2], [[1, 0, 0], [0, 1]]),
     r"targets: not a rectangular array \(rows of different lengths\?\)"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x[:, :5], y)),
     "validation inputs have 5 features; the model expects 8"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x, y[:3])),
     "16 validation inputs but 3 validation targets"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x, 1)),
     r"validation targets must be an array \(N, ...\), not one number"),
    (lambda m, x, y: dnn.Sequential([Dense(2)]).build(0),
     r"input shape must be a positive number of features, a shape such as \(28, 28, 1\) or "
     r"\(None, features\), not 0"),
])
def test_bad_calls_say_what_is_wrong(cpu, call, message):
    x, labels = blobs(n=16)
    model = seed_network(cpu)
    model.build(x.shape[1])
    with pytest.raises(UsageError, match=message):
        call(model, x, to_categorical(labels))


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_a_bad_seed_is_a_usage_error(seed):
    with pytest.raises(UsageError, match=f"seed must be a non-negative integer or None, not "
                                         f"{re.escape(repr(seed))}"):
        dnn.Sequential([Dense(2)], seed=seed)


def test_unknown_names_are_usage_errors():
    with pytest.raises(UsageError, match="activation"):
        Dense(3, activation="swish")
    with pytest.raises(UsageError, match="units"):
        Dense(0)
    model = dnn.Sequential([Dense(2)])
    with pytest.raises(UsageError, match="loss"):
        model.compile(loss="hinge")
    with pytest.raises(UsageError, match="metric"):
        model.compile(metrics=["f1"])
    with pytest.raises(UsageError, match="unknown metric 'f1'"):
        model.compile(metrics="f1")


def test_layers_must_be_a_list_of_layers():
    with pytest.raises(UsageError, match=r"Sequential takes a list of layers"):
        dnn.Sequential(Dense(3))
    not_a_layer = r"layers must be dnn.layers.Layer instances \(Dense, ...\), not "
    with pytest.raises(UsageError, match=not_a_layer + "int"):
        dnn.Sequential([Dense(3), 4])
    with pytest.raises(UsageError, match=not_a_layer + "str"):
        dnn.Sequential().add("relu")


def test_a_layer_is_in_one_model_once(cpu):
    x, labels = blobs(n=32)
    shared = Dense(4, activation="relu")
    with pytest.raises(UsageError, match="is already in a model"):
        dnn.Sequential([shared, shared])
    trained = dnn.Sequential([Dense(4, activation="relu"), Dense(3, activation="softmax")],
                             seed=0, backend=cpu)
    trained.compile()
    trained.fit(x, to_categorical(labels), epochs=1)
    before = trained.get_weights()
    with pytest.raises(UsageError, match=r"Dense\(4, activation='relu'\) is already in a model"):
        dnn.Sequential([trained.layers[0], Dense(3)])
    with pytest.raises(UsageError, match="make a new layer for each place"):
        dnn.Sequential([Dense(5)]).add(trained.layers[1])
    for kept, weight in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(kept, weight)


@pytest.mark.parametrize("dtype", ["bogus", None, "float16", 3, "int32"])
def test_a_dtype_other_than_float32_or_float64_is_refused(dtype):
    with pytest.raises(UsageError, match=f"dtype must be float32 or float64, not {dtype!r}"):
        dnn.Sequential([Dense(2)], dtype=dtype)


@pytest.mark.parametrize("dtype, expected", [("float32", np.float32), ("f8", np.float64),
                                             (float, np.float64), (np.float32, np.float32)])
def test_float_dtypes_are_taken_in_any_numpy_spelling(dtype, expected):
    assert dnn.Sequential([Dense(2)], dtype=dtype).dtype == expected


def test_one_metric_name_alone_is_a_list_of_one():
    model = dnn.Sequential([Dense(2)])
    model.compile(metrics="accuracy")
    assert [metric.name for metric in model.metrics] == ["accuracy"]


def test_divergence_raises(cpu):
    x, labels = blobs(n=64)
    model = dnn.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=cpu)
    model.compile(optimizer=dnn.optimizers.SGD(learning_rate=1e30),
                  loss="categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow on the way is no warning: the error says it
        with pytest.raises(DivergenceError, match="diverged.*smaller learning rate"):
            model.fit(x * 1e6, to_categorical(labels), epochs=3, batch_size=8)


def test_callbacks_hear_the_end_of_training_also_when_it_raises(cpu):
    class Ends(dnn.callbacks.Callback):
        ended = 0

        def on_train_end(self, logs=None):
            self.ended += 1

    x, labels = blobs(n=64)
    model = seed_network(cpu)
    ends = Ends()
    model.fit(x, to_categorical(labels), epochs=1, batch_size=16, callbacks=[ends])
    assert ends.ended == 1
    with np.errstate(all="ignore"), pytest.raises(DivergenceError):
        model.fit(x * np.inf, to_categorical(labels), epochs=1, batch_size=16, callbacks=[ends])
    assert ends.ended == 2


@pytest.mark.parametrize("what", ["inputs", "targets"])
def test_divergence_from_non_finite_data_names_the_data_not_the_step(cpu, what):
    x, labels = blobs(n=64)
    data = {"inputs": x.copy(), "targets": to_categorical(labels).astype(np.float32)}
    data[what][37, 1] = np.nan if what == "inputs" else np.inf
    model = dnn.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=cpu)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as error:
        model.fit(data["inputs"], data["targets"], epochs=1, batch_size=8)
    assert str(error.value).endswith(
        f"because the {what} hold NaN or infinite values (the first in row 37)")


def test_summary_counts_the_parameters_as_keras_does():
    model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")])
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[0] == 'Model: "sequential"'
    assert [line.split()[-1] for line in lines[2:4]] == ["?", "?"]
    assert lines[-1].startswith("Total params: unknown until the model is built")
    model.build(784)
    lines.clear()
    model.summary(print_fn=lines.append)
    weights = model.get_weights()
    per_layer = [kernel.size + bias.size for kernel, bias in zip(weights[::2], weights[1::2])]
    assert [int(line.split()[-1].replace(",", "")) for line in lines[2:4]] == per_layer
    assert lines[2].split()[1:3] == ["(Dense)", "(None,"]
    # Keras' summary of this network reports 407,050 parameters.
    assert lines[-3:] == ["Total params: 407,050 (float32, 1.55 MiB)",
                          "Trainable params: 407,050", "Non-trainable params: 0"]


def test_set_weights_refuses_text():
    model = dnn.Sequential([Dense(2)])
    model.build(3)
    weights = model.get_weights()
    weights[1] = np.array(["a", "b"])
    with pytest.raises(UsageError, match="weight 1 must be real numbers, not <U1"):
        model.set_weights(weights)


def test_verbose_prints_the_epochs_as_keras_does(cpu, capsys):
    x, labels = blobs(n=64)
    model = seed_network(cpu)
    model.fit(x, to_categorical(labels), epochs=2, batch_size=32, verbose=0)
    assert capsys.readouterr().out == ""
    for verbose in ("auto", 2):  # "auto" is the bar only on a terminal; pytest's is not one
        history = model.fit(x, to_categorical(labels), epochs=2, batch_size=32, verbose=verbose,
                            validation_data=(x, to_categorical(labels)))
        lines = capsys.readouterr().out.splitlines()
        assert lines[0::2] == ["Epoch 1/2", "Epoch 2/2"]
        assert lines[3].startswith("2/2 - ") and "ms/step - loss: " in lines[3]
        assert f"loss: {history.history['loss'][1]:.4f} - " in lines[3]
        assert lines[3].endswith(f"val_accuracy: {history.history['val_accuracy'][1]:.4f}")
    with pytest.raises(UsageError, match="verbose must be 0, 1, 2 or 'auto', not 3"):
        model.fit(x, to_categorical(labels), verbose=3)


def test_callbacks_may_be_none_or_one_callback(cpu):
    x, labels = blobs(n=16)
    model = seed_network(cpu)

    class Counter(dnn.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs):
            self.epochs += 1

    counter = Counter()
    model.fit(x, to_categorical(labels), epochs=2, callbacks=counter)
    model.fit(x, to_categorical(labels), epochs=1, callbacks=None)
    assert counter.epochs == 2


def test_compiling_again_with_the_same_optimizer_keeps_its_state(cpu):
    x, labels = blobs(n=32)
    model = seed_network(cpu)
    model.fit(x, to_categorical(labels), epochs=1)
    optimizer = model.optimizer
    saved = [{key: value.copy() for key, value in state.items()} for state in optimizer.states]
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=[])
    assert model.metrics == () and optimizer.iterations > 0
    for before, after in zip(saved, optimizer.states):
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
    model.compile(optimizer="rmsprop")  # a new optimizer starts from zero
    assert all(not state["mean_square"].any() for state in model.optimizer.states)


def test_a_softmax_over_one_unit_is_refused():
    model = dnn.Sequential([Dense(4, activation="relu"), Dense(1, activation="softmax")])
    with pytest.raises(UsageError, match="a softmax over one unit outputs 1 whatever its input"):
        model.compile()
    dnn.Sequential([Dense(1, activation="sigmoid")]).compile(loss="mse")  # a yes/no output


@pytest.mark.parametrize("call, error, message", [
    (lambda m, tmp: Dense(16, activation=["relu"]), TypeError,
     "activation must be a name or an Activation, not list"),
    (lambda m, tmp: m.compile(loss=[["x"]]), TypeError,
     "loss must be a name or a Loss, not list"),
    (lambda m, tmp: m.compile(optimizer=["sgd"]), TypeError,
     "optimizer must be a name or an Optimizer, not list"),
    (lambda m, tmp: m.compile(metrics=5), TypeError, "metrics must be a list of names, not int"),
    (lambda m, tmp: m.set_weights(None), TypeError,
     "set_weights takes a list of arrays, not NoneType"),
    (lambda m, tmp: m.set_weights([[[1, 2], [3]]] + m.get_weights()[1:]), ValueError,
     "weight 0: not a rectangular array"),
    (lambda m, tmp: dnn.saving.checkpoint.save(m, tmp), ValueError, "not replacing it, it is a folder"),
    (lambda m, tmp: dnn.saving.checkpoint.save(m, None), TypeError,
     "save needs a file name, not NoneType"),
    (lambda m, tmp: dnn.load_model(123), TypeError,
     "a checkpoint path must be a file name, not int"),
    (lambda m, tmp: dnn.Sequential([Dense(16)]).build(2**40), MemoryError,
     "the weights of a 1,099,511,627,776 -> 16 model need"),
    (lambda m, tmp: to_categorical([2**40]), MemoryError,
     "to_categorical: 1 labels of 1,099,511,627,777 classes need more memory"),
    (lambda m, tmp: Dense(2**63), ValueError,
     "Dense units must be an integer from 1 to 2,147,483,647, not 9223372036854775808"),
    (lambda m, tmp: to_categorical([1, 2], dtype="bogus"), TypeError,
     "to_categorical dtype must be a NumPy dtype such as 'float32', not 'bogus'"),
    (lambda m, tmp: dnn.models.model_from_json("[" * 100000 + "]" * 100000), ValueError,
     "model_from_json: JSON nested deeper than any model's"),
    (lambda m, tmp: setattr(m.optimizer, "learning_rate", np.array([0.1, 0.2])), ValueError,
     "an optimizer's learning_rate is one number, not an array of shape (2,)"),
], ids=["activation-list", "loss-list", "optimizer-list", "metrics-int", "set-weights-none",
        "ragged-weights", "save-folder", "save-none", "load-int", "build-huge",
        "to-categorical-huge", "units-huge", "to-categorical-dtype", "json-nested",
        "learning-rate-array"])
def test_what_a_user_can_pass_wrong_is_dnns_own_error_naming_it(cpu, tmp_path, call, error,
                                                                 message):
    """dnn's errors, also the built-in exception a Python user would catch."""
    model = seed_network(cpu)
    model.build(8)
    with pytest.raises(DnnError) as raised:
        call(model, tmp_path)
    assert isinstance(raised.value, error)
    assert message in str(raised.value)


def test_a_sequential_of_none_is_an_empty_model_as_in_keras():
    model = dnn.Sequential(None)
    model.add(Dense(2))
    assert len(model.layers) == 1


@pytest.mark.parametrize("set_weights", [
    lambda model, weights: model.set_weights(weights),
    lambda model, weights: model.layers[0].set_weights(weights[:2]),
])
def test_set_weights_refuses_values_beyond_the_dtype(set_weights):
    model = dnn.Sequential([Dense(2), Dense(2)])
    model.build(3)
    weights = model.get_weights()
    weights[0] = np.full((3, 2), 2.0**200)  # finite in float64, inf in float32
    with pytest.raises(UsageError, match=r"weight 0 holds 1\.6\d+e\+60, beyond the range of "
                                         "float32"):
        set_weights(model, weights)
    assert np.isfinite(model.get_weights()[0]).all()


def test_sparse_labels_are_taken_as_keras_takes_them(cpu):
    """Keras' guides give sparse labels as floats (``y.astype("float32")``) or as a column
    ``(N, 1)``: the same run as integer labels ``(N,)``; fractions are refused."""
    x, labels = blobs(n=64)
    runs = []
    for targets in (labels, labels.astype(np.float32), labels[:, None],
                    labels.astype(np.float64)[:, None]):
        model = seed_network(cpu)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        runs.append((model.fit(x, targets, epochs=2, batch_size=16, verbose=0).history,
                     model.evaluate(x, targets, verbose=0)))
    assert all(run == runs[0] for run in runs)
    with pytest.raises(UsageError, match="wants labels that are whole numbers .class "
                                         "indices.; targets hold fractions"):
        model.fit(x, labels + 0.5, verbose=0)
    with pytest.raises(UsageError, match="targets hold NaN or infinite labels"):
        model.fit(x, np.where(labels == 0, np.nan, labels), verbose=0)
    with pytest.raises(UsageError, match=r"labels must lie in \[0, 3\) for a model with 3 "
                                         r"outputs, not \[0.0, 1e\+20\]"):
        model.fit(x, np.where(labels == 1, 1e20, labels), verbose=0)


def test_compile_takes_weighted_metrics_fourth_by_position_as_it_always_has(cpu):
    """loss_weights came after it: a call that gives every argument by position keeps its
    meaning."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    model = dnn.Sequential([Dense(1, input_shape=(3,))], backend=cpu)
    model.compile("sgd", "mse", ["mae"], ["mse"])
    assert [metric.name for metric in model.weighted_metrics] == ["mse"]
    assert list(model.evaluate(x, y, verbose=0, return_dict=True)) == ["loss", "mae", "mse"]
