"""Merge layers and functional models whose layers make a graph (a residual block's Add, branches
joined by Concatenate): forward values against NumPy, gradients against central finite
differences and against the one Dense layer such a graph equals, training on every backend as
on cpu, saving, and one clear line for what dnn does not take."""

import json
import pickle
import warnings

import numpy as np
import pytest

import dnn as keras
from dnn import layers
from dnn.errors import CheckpointError, UsageError
from dnn.layers.merging import Merge
from dnn.testing import check_layer, numerical_gradient
from dnn.trainers.step import GraphFallbackWarning
from dnn.utils import to_categorical
from tests.test_embedding import text_classifier, text_cnn, text_cnn_data, text_data
from tests.test_multi_input import three_input_model, toy_data as three_inputs_data
from tests.test_multi_output import THREE_OUTPUT_COMPILE, three_output_data, three_output_model

RNG = np.random.default_rng(7)


def residual_model(backend=None, dtype="float32", seed=0):
    """A residual block and a branch joined again: the first Dense's output goes to three
    layers (its gradient is a sum of three)."""
    inputs = keras.Input(shape=(6,))
    x = layers.Dense(8, activation="tanh")(inputs)
    block = layers.Add()([x, layers.Dense(8, activation="relu")(x)])
    joined = layers.Concatenate()([block, layers.Dense(3, activation="sigmoid")(x)])
    outputs = layers.Dense(4, activation="softmax")(joined)
    return keras.Model(inputs, outputs, dtype=dtype, seed=seed, backend=backend)


def toy_data(rows=50, features=6, classes=4):
    x = RNG.normal(size=(rows, features)).astype(np.float32)
    return x, to_categorical(RNG.integers(0, classes, size=rows), classes)


def picking_model(backend=None, seed=0):
    """Maximum of an output, a layer after it and itself again (ties), then Minimum with a
    branch from the inputs."""
    inputs = keras.Input(shape=(6,))
    first = layers.Dense(5, activation="tanh")(inputs)
    joined = layers.Maximum()([first, layers.Dense(5, activation="sigmoid")(first), first])
    joined = layers.Minimum()([joined, layers.Dense(5)(inputs)])
    return keras.Model(inputs, layers.Dense(4, activation="softmax")(joined), seed=seed,
                       backend=backend)


def residual_run(backend, x, y, make=residual_model, loss="categorical_crossentropy") -> tuple:
    """``(history, weights)`` of the model ``make`` gives, trained on ``backend`` with Adam
    and ``loss`` (and the accuracy; or a dict of compile's arguments) for three epochs of
    batches of 32, a captured step's fallback to the eager one an error."""
    model = make(backend)
    model.compile(optimizer="adam", **({"loss": loss, "metrics": ["accuracy"]}
                                       if isinstance(loss, str) else loss))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return history.history, model.get_weights()


# -- the layers ------------------------------------------------------------------------------
@pytest.mark.parametrize("merge, reference", [
    (layers.Add, lambda xs: xs[0] + xs[1] + xs[2]),
    (layers.Multiply, lambda xs: xs[0] * xs[1] * xs[2]),
    (layers.Average, lambda xs: (xs[0] + xs[1] + xs[2]) / 3),
    (layers.Maximum, lambda xs: np.maximum(np.maximum(xs[0], xs[1]), xs[2])),
    (layers.Minimum, lambda xs: np.minimum(np.minimum(xs[0], xs[1]), xs[2])),
    (lambda: layers.Concatenate(), lambda xs: np.concatenate(xs, axis=-1)),
    (lambda: layers.Concatenate(axis=1), lambda xs: np.concatenate(xs, axis=1)),
    (lambda: layers.Concatenate(axis=-2), lambda xs: np.concatenate(xs, axis=1)),
], ids=["add", "multiply", "average", "maximum", "minimum", "concatenate",
        "concatenate-axis-1", "concatenate-axis-minus-2"])
def test_a_merge_layer_called_on_batches_computes_what_numpy_does(merge, reference):
    xs = [RNG.normal(size=(5, 2, 3)).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(merge()(xs), reference(xs), rtol=1e-6)


def test_subtract_and_keras_merge_functions_compute_what_numpy_does():
    a, b = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    np.testing.assert_allclose(layers.Subtract()([a, b]), a - b, rtol=1e-6)
    np.testing.assert_allclose(layers.subtract([a, b]), a - b, rtol=1e-6)
    np.testing.assert_allclose(layers.add([a, b]), a + b, rtol=1e-6)
    np.testing.assert_allclose(layers.multiply([a, b]), a * b, rtol=1e-6)
    np.testing.assert_allclose(layers.average([a, b]), (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(layers.maximum([a, b]), np.maximum(a, b), rtol=1e-6)
    np.testing.assert_allclose(layers.minimum([a, b]), np.minimum(a, b), rtol=1e-6)
    np.testing.assert_allclose(layers.concatenate([a, b], axis=1), np.hstack([a, b]), rtol=1e-6)


@pytest.mark.parametrize("layer, shapes", [
    (layers.Add(), [(3, 2)] * 3), (layers.Subtract(), [(4,)] * 2),
    (layers.Multiply(), [(4,)] * 3), (layers.Average(), [(2, 2)] * 3),
    (layers.Maximum(), [(2, 3)] * 3), (layers.Minimum(), [(3,), (1,)]),
    (layers.Concatenate(), [(2, 3), (2, 1)]), (layers.Concatenate(axis=1), [(1, 3), (2, 3)])],
    ids=["add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate",
         "concatenate-axis-1"])
def test_each_merge_layers_input_gradients_are_central_finite_differences(layer, shapes):
    check_layer(layer, shapes)


DOT_CASES = {  # axes, the two sample shapes, normalize
    "two-towers": (1, [(5,), (5,)], False),
    "cosine": (-1, [(5,), (5,)], True),
    "rows-by-rows": (2, [(3, 4), (2, 4)], False),
    "columns-by-rows-normalized": ((1, 2), [(4, 3), (2, 4)], True),
    "vector-by-matrix": ((1, 1), [(4,), (4, 3)], False),
    "matrix-by-vector-normalized": ((2, 1), [(3, 4), (4,)], True),
}


def dot_reference(x, y, axes, normalize):
    """Keras' batch_dot of ``x`` and ``y`` (NumPy, one sample at a time): each input's
    summed axis moved last, their tensor product over it, a lone result made ``(1,)``."""
    pair = axes if isinstance(axes, tuple) else (axes, axes)
    pair = [axis % array.ndim for axis, array in zip(pair, (x, y))]
    if normalize:
        x, y = (array / np.maximum(np.linalg.norm(array, axis=axis, keepdims=True), 1e-7)
                for array, axis in zip((x, y), pair))
    x, y = np.moveaxis(x, pair[0], -1), np.moveaxis(y, pair[1], -1)
    out = np.stack([np.tensordot(a, b, axes=([-1], [-1])) for a, b in zip(x, y)])
    return out.reshape(len(out), -1) if out.ndim == 1 else out


@pytest.mark.parametrize("axes, shapes, normalize", DOT_CASES.values(), ids=DOT_CASES.keys())
def test_dot_computes_what_a_product_of_each_sample_does(axes, shapes, normalize):
    rng = np.random.default_rng(8)  # the module's RNG draws the other tests' data
    x, y = (rng.normal(size=(6, *shape)) for shape in shapes)
    layer = layers.Dot(axes, normalize=normalize)
    out = layer([x, y])
    expected = dot_reference(x, y, axes, normalize)
    assert out.shape == expected.shape == (6, *layer.compute_output_shape(shapes))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if normalize and expected.shape[1:] == (1,):
        assert np.all(np.abs(out) <= 1 + 1e-6)  # a cosine


@pytest.mark.parametrize("axes, shapes, normalize", DOT_CASES.values(), ids=DOT_CASES.keys())
def test_dots_input_gradients_are_central_finite_differences(axes, shapes, normalize):
    check_layer(layers.Dot(axes, normalize=normalize), shapes)


def test_a_normalized_dot_of_a_zero_sample_divides_by_epsilon_as_keras_does(cpu):
    """The norm a zero vector would be divided by is Keras' epsilon, 1e-7: its gradient is
    the other input over it, finite, and no NaN reaches the output."""
    layer = layers.Dot(1, normalize=True)
    x, y = np.zeros((2, 3)), np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    layer([x, y])
    grad_x, grad_y = (np.asarray(grad) for grad in layer.backward(np.ones((2, 1))))
    np.testing.assert_allclose(grad_x, y / np.linalg.norm(y, axis=1, keepdims=True) / 1e-7,
                               rtol=1e-6)
    np.testing.assert_array_equal(grad_y, np.zeros((2, 3)))


@pytest.mark.parametrize("axes, shapes, message", [
    (1, [(5,), (4,)], r"sums along axes of one size, not 5 \(axis 1 of \(None, 5\)\) and 4"),
    (0, [(5,), (5,)], "cannot sum along axis 0 of inputs of shape .None, 5.: it sums along an "
                      "axis other than the batch's"),
    (3, [(5,), (5,)], r"cannot sum along axis 3: inputs of shape \(None, 5\) have no such "
                      "axis"),
    (-2, [(5,), (5,)], "cannot sum along axis -2 of inputs of shape .None, 5.: it sums along "
                       "an axis other than the batch's"),
    (1, [(2, 2, 2), (2,)], "takes samples of one or two axes"),
    ((1, 2, 3), [(5,), (5,)], "Dot's axes must be an integer or a pair of integers"),
    (True, [(5,), (5,)], "Dot's axes must be an integer or a pair of integers"),
], ids=["sizes-differ", "batch-axis", "no-such-axis", "batch-axis-from-the-end",
        "three-axes", "three-axes-given", "bool"])
def test_dot_refuses_axes_that_do_not_fit_in_one_line(axes, shapes, message):
    with pytest.raises(UsageError, match=message):
        layers.Dot(axes)([keras.Input(shape=shape) for shape in shapes])


def towers_model(backend=None, seed=0):
    """Two inputs, each through a Dense tower, joined by their cosine similarity (a
    normalized Dot) and one more Dot of rows by rows: whether two vectors point alike."""
    first, second = keras.Input(shape=(6,), name="first"), keras.Input(shape=(6,), name="second")
    towers = [layers.Dense(8, activation="tanh")(first), layers.Dense(8, activation="tanh")(second)]
    similarity = layers.dot(towers, axes=1, normalize=True)
    rows = layers.Reshape((2, 4))
    pairs = layers.Flatten()(layers.Dot(axes=2)([rows(towers[0]), layers.Reshape((2, 4))(
        towers[1])]))
    joined = layers.concatenate([similarity, layers.Dense(1)(pairs)])
    return keras.Model([first, second], layers.Dense(1, activation="sigmoid")(joined),
                       seed=seed, backend=backend)


def towers_data(rows=400):
    """``([a, b], alike)``: pairs of vectors, alike (1) where ``b`` is ``a`` with noise."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(rows, 6)).astype(np.float32)
    alike = rng.integers(0, 2, size=rows)
    b = np.where(alike[:, None] == 1, a + 0.3 * rng.normal(size=(rows, 6)),
                 rng.normal(size=(rows, 6))).astype(np.float32)
    return [a, b], alike


@pytest.mark.parametrize("model", ["dot-towers", "text", "text-cnn"])
def test_a_model_trains_on_every_backend_as_on_cpu(other_backend, model):
    """The strict array API backend and the GPU: Dot's products are the backend's
    batch_matmul, its norms array API operations; Embedding's gradient rows are added up by
    the backend's scatter_add_rows; Conv1D and the 1-D poolings are its window kernels."""
    make, data, loss = GRAPH_MODELS[model]
    x, y = data(rows=64)
    reference = residual_run("cpu", x, y, make, loss)
    ours = residual_run(other_backend, x, y, make, loss)
    np.testing.assert_allclose(ours[0]["loss"], reference[0]["loss"], rtol=1e-5)
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_a_two_tower_model_joined_by_dot_trains_saves_and_loads(tmp_path, cpu):
    """It learns whether two vectors point alike, and comes back from its file and its JSON
    the same."""
    model = towers_model(cpu)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    (a, b), alike = towers_data()
    history = model.fit([a, b], alike, epochs=30, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.8 > history.history["accuracy"][0]
    model.save(tmp_path / "towers.npz")
    loaded = keras.models.load_model(tmp_path / "towers.npz")
    np.testing.assert_array_equal(loaded.predict([a, b], verbose=0), model.predict([a, b],
                                                                                  verbose=0))
    remade = keras.models.model_from_json(model.to_json())
    assert [repr(layer) for layer in remade.layers] == [repr(layer) for layer in model.layers]
    assert "Dot(axes=1, normalize=True)" in [repr(layer) for layer in model.layers]


class GivesOneGradientForTwo(layers.Add):
    def backward(self, grad, logits=False):
        return super().backward(grad)[:1]


class AddsTwiceTheSecond(layers.Add):
    def backward(self, grad, logits=False):
        first, second = super().backward(grad)
        return [first, second * 2]


@pytest.mark.parametrize("layer, message", [
    (GivesOneGradientForTwo(), "backward returns 1 input gradients for 2 inputs"),
    (AddsTwiceTheSecond(), r"the gradient of input 1 \(what backward returns at \[1\]\)"),
], ids=["too-few", "wrong"])
def test_check_layer_finds_what_a_merge_layer_of_ones_own_gets_wrong(layer, message):
    with pytest.raises(AssertionError, match=message):
        check_layer(layer, [(3,), (3,)])


def merged_model(merge, cpu):
    """inputs -> a = Dense(tanh) -> b = Dense(sigmoid); c = Dense(inputs); merge of a (which
    also feeds b), b and c (a and b for Subtract) -> Dense(softmax), in float64."""
    inputs = keras.Input(shape=(5,))
    a = layers.Dense(4, activation="tanh")(inputs)
    b = layers.Dense(4, activation="sigmoid")(a)
    c = layers.Dense(4)(inputs)
    joined = merge()([a, b] if merge is layers.Subtract else [a, b, c])
    outputs = layers.Dense(3, activation="softmax")(joined)
    return keras.Model(inputs, outputs, dtype="float64", seed=2, backend=cpu)


@pytest.mark.parametrize("merge", [layers.Add, layers.Subtract, layers.Multiply, layers.Average,
                                   layers.Maximum, layers.Minimum, layers.Concatenate,
                                   lambda: SameTwice()],
                         ids=["add", "subtract", "multiply", "average", "maximum", "minimum",
                              "concatenate", "one-output-taken-twice"])
def test_the_gradients_of_a_graph_are_central_finite_differences(cpu, merge):
    model = merged_model(merge, cpu)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(7, 5)), to_categorical(RNG.integers(0, 3, size=7), 3)

    def objective():
        return model.test_on_batch(x, y)

    model.compute_gradients(x, y)
    analytic = [grad.copy() for layer in model.stack for grad in layer.grads]
    assert len(analytic) == len(model.params) == 2 * (len(model.stack) - 1)  # a Dense's two
    for param, grad in zip(model.params, analytic):
        np.testing.assert_allclose(grad, numerical_gradient(objective, param), rtol=1e-5,
                                   atol=1e-8)


class SameTwice(layers.Add):
    """Add of its first input with itself (what ``Add()([a, a])`` computes), for the test
    above: one node taken twice by one layer."""

    def __call__(self, inputs, training=None):
        return super().__call__([inputs[0], inputs[0]], training)


@pytest.mark.parametrize("merge, split", [
    (layers.Add, lambda grad: [grad, grad]),
    (layers.Concatenate, lambda grad: [grad[:, :2], grad[:, 2:]]),
], ids=["add", "concatenate"])
def test_two_dense_layers_merged_are_the_one_dense_layer_they_add_up_to(cpu, merge, split):
    """Add of two linear Dense layers is one Dense layer of the summed kernels and biases;
    Concatenate of them, the one of kernels and biases side by side: the same outputs, and
    each kernel's gradient is that layer's (all of it, or its columns)."""
    units = (5, 5) if merge is layers.Add else (2, 3)
    inputs = keras.Input(shape=(4,))
    first, second = layers.Dense(units[0]), layers.Dense(units[1])
    outputs = layers.Dense(3, activation="softmax")(merge()([first(inputs), second(inputs)]))
    graph = keras.Model(inputs, outputs, dtype="float64", seed=1, backend=cpu)
    joined = (np.add if merge is layers.Add else lambda a, b: np.concatenate([a, b], -1))
    one = keras.Sequential([layers.Dense(5, input_shape=(4,)),
                            layers.Dense(3, activation="softmax")], dtype="float64",
                           backend=cpu)
    kernel_1, bias_1, kernel_2, bias_2, *last = graph.get_weights()
    one.set_weights([joined(kernel_1, kernel_2), joined(bias_1, bias_2), *last])
    for model in (graph, one):
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(9, 4)), to_categorical(RNG.integers(0, 3, size=9), 3)
    np.testing.assert_allclose(graph.predict(x, verbose=0), one.predict(x, verbose=0),
                               rtol=1e-12)
    graph.compute_gradients(x, y)
    one.compute_gradients(x, y)
    kernel_grads = split(one.stack[0].grads[0])
    bias_grads = split(one.stack[0].grads[1][None, :])
    for layer, kernel_grad, bias_grad in zip((first, second), kernel_grads, bias_grads):
        np.testing.assert_allclose(layer.grads[0], kernel_grad, rtol=1e-12)
        np.testing.assert_allclose(layer.grads[1], bias_grad[0], rtol=1e-12)
    np.testing.assert_allclose(graph.stack[-1].grads[0], one.stack[-1].grads[0], rtol=1e-12)


# -- the model -------------------------------------------------------------------------------
def test_a_graphs_layers_come_each_after_those_it_takes_and_summary_says_which():
    model = residual_model()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Input", "Dense", "Dense", "Add", "Dense", "Concatenate", "Dense"]
    assert model.graph.inbound == ((0,), (1,), (1, 2), (1,), (3, 4), (5,))
    assert model.output_shape == (None, 4) and model.count_params() == (
        6 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3 + 11 * 4 + 4)
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[1].split()[-2:] == ["Connected", "to"]
    add_row = next(line for line in lines if line.startswith("add"))
    assert add_row.endswith(f"{model.layers[1].name}, {model.layers[2].name}")


def test_a_graph_trains_on_every_backend_as_on_cpu(other_backend):
    x, y = toy_data()
    runs = []
    for backend in ("cpu", other_backend):
        model = residual_model(backend)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        runs.append((history.history, model.get_weights()))
    (reference, weights), (ours, our_weights) = runs
    np.testing.assert_allclose(ours["loss"], reference["loss"], rtol=1e-5)
    for mine, theirs in zip(our_weights, weights, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_the_first_of_equal_inputs_takes_a_maximums_gradient():
    """As MaxPooling2D's: ties (here an input with itself, and equal elements) are not split."""
    layer = layers.Maximum()
    x = np.array([[1.0, 2.0, 3.0]])
    layer([x, np.array([[1.0, 5.0, 0.0]]), x])
    grads = [np.asarray(grad) for grad in layer.backward(np.ones((1, 3), np.float32))]
    np.testing.assert_array_equal(np.stack(grads), [[[1, 0, 1]], [[0, 1, 0]], [[0, 0, 0]]])


@pytest.mark.parametrize("merge", [layers.Maximum, layers.Minimum, layers.Subtract,
                                   layers.Multiply])
def test_the_other_merges_train_on_every_backend_as_on_cpu(other_backend, merge):
    x, y = toy_data()
    runs = []
    for backend in ("cpu", other_backend):
        inputs = keras.Input(shape=(6,))
        first = layers.Dense(5, activation="tanh")(inputs)
        joined = merge()([first, layers.Dense(5, activation="sigmoid")(first)])
        model = keras.Model(inputs, layers.Dense(4, activation="softmax")(joined), seed=0,
                            backend=backend)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        runs.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for mine, theirs in zip(runs[1][1], runs[0][1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_a_graph_learns_what_no_one_of_its_branches_holds(cpu):
    """The class of x's largest feature of the first four, learnt in 60 epochs."""
    x = np.random.default_rng(7).normal(size=(200, 6)).astype(np.float32)
    y = to_categorical(np.argmax(x[:, :4], axis=1), 4)
    model = residual_model(cpu)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=60, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8


@pytest.mark.parametrize("remake, same_weights", [
    (lambda model, path: (model.save(path), keras.models.load_model(path))[1], True),
    (lambda model, path: pickle.loads(pickle.dumps(model)), True),
    (lambda model, path: keras.models.model_from_json(model.to_json()), False),
    (lambda model, path: keras.Sequential.from_config(model.get_config()), False),
], ids=["save", "pickle", "json", "config"])
def test_a_graph_is_made_again_with_its_graph(tmp_path, remake, same_weights):
    """A checkpoint or a copy gives the trained model; its architecture (JSON, config), the
    same graph with new weights."""
    x, y = toy_data()
    model = residual_model()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    made = remake(model, tmp_path / "graph.npz")
    assert type(made) is keras.Model and made.graph.inbound == model.graph.inbound
    assert [type(layer) for layer in made.layers] == [type(layer) for layer in model.layers]
    ours, theirs = made.predict(x, verbose=0), model.predict(x, verbose=0)
    assert np.array_equal(ours, theirs) == same_weights


def test_weights_saved_from_a_graph_load_into_it_alone_and_a_merge_in_a_chain_is_refused(
        tmp_path):
    model = residual_model(seed=1)
    model.build(6)
    model.save_weights(tmp_path / "graph.npz")
    again = residual_model(seed=2)
    again.load_weights(tmp_path / "graph.npz")
    for mine, theirs in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    inputs = keras.Input(shape=(6,))  # residual_model's layers, the relu one on the inputs
    x = layers.Dense(8, activation="tanh")(inputs)
    block = layers.Add()([x, layers.Dense(8, activation="relu")(inputs)])
    joined = layers.Concatenate()([block, layers.Dense(3, activation="sigmoid")(x)])
    rewired = keras.Model(inputs, layers.Dense(4, activation="softmax")(joined))
    with pytest.raises(CheckpointError, match=r"holds another model: its layers are joined as "
                                              r"the graph \[\[0\], \[1\], \[1, 2\]"):
        rewired.load_weights(tmp_path / "graph.npz")
    with pytest.raises(UsageError, match="merges a list of inputs: call it on a list of layer "
                                         "outputs in a functional model"):
        keras.Sequential([layers.Dense(8, activation="tanh", input_shape=(6,)), layers.Add()])


def test_a_checkpoint_whose_graph_is_damaged_is_refused_naming_the_file(tmp_path):
    model = residual_model()
    model.build(6)
    path = tmp_path / "graph.npz"
    model.save(path)
    archive = dict(np.load(path))
    meta = json.loads(str(archive["meta"]))
    for inbound, message in [
            ([[0], [1], [1, 2], [1], [3, 9], [5]], "takes node 9"),
            ([[0], [1], [1, 2], [1], [3, 4]], "inbound must list the inputs of each of its 6"),
            ([[0], [0], [1, 2], [1], [3, 4], [5]], "weight 2 has shape"),
            ([[0], [1], [1, 2], [1], [3], [5]], "node 4 of the model's graph is taken by no"),
            ([[0], [1], [1, 2], [3], [4], [5]], "weight 6 has shape"),
            ([[0], [1, 0], [1, 2], [1], [3, 4], [5]], "takes one input, but the model's graph"),
            ("chain", "inbound must list")]:
        meta["model"]["inbound"] = inbound
        damaged = tmp_path / "damaged.npz"
        np.savez(damaged, **{**archive, "meta": np.asarray(json.dumps(meta))})
        with pytest.raises(CheckpointError, match=f"damaged.npz is damaged.*{message}"):
            keras.models.load_model(damaged)


@pytest.mark.parametrize("make, message", [
    (lambda x: layers.Add()([x, layers.Dense(3)(x)]),
     r"merges inputs of one shape, or of shapes that broadcast \(lined up from the last "
     r"axis, a size 1 stretched to the others'\), not \(8,\), \(3,\)"),
    (lambda x: layers.Subtract()([x, x, x]), "takes exactly 2 inputs, not 3"),
    (lambda x: layers.Add()([x, layers.Reshape((4, 2))(x)]), "merges inputs of one shape"),
    (lambda x: layers.Add()(x), "merges a list of inputs: call it on a list"),
    (lambda x: layers.Concatenate(axis=0)([x, x]), "along axis 0"),
    (lambda x: layers.Concatenate()([x, layers.Reshape((2, 4))(x)]), "as many axes"),
    (lambda x: layers.Concatenate(axis="last"), "axis must be an integer"),
    (lambda x: layers.Dense(2)([x, x]), "called on a list of 2 inputs: a layer takes one"),
    (lambda x: layers.Add()([x, np.ones((1, 8))]), "mixing outputs of layer calls"),
], ids=["shapes", "subtract-three", "ranks-differ", "no-list", "batch-axis", "ranks", "axis-type",
        "dense-on-two", "mixed"])
def test_what_a_merge_cannot_take_is_one_clear_error(make, message):
    with pytest.raises(UsageError, match=message):
        make(layers.Dense(8)(keras.Input(shape=(4,))))


@pytest.mark.parametrize("call, message", [
    (lambda: layers.Add()([np.ones((2, 3)), np.ones((2, 4))]), "merges inputs of one shape"),
    (lambda: layers.Add()([np.ones((2, 3)), np.ones((3, 3))]), "batches of as many rows"),
    (lambda: layers.Add()(np.ones((2, 3))), "merges a list of batches"),
    (lambda: layers.Add()([]), "merges a list of batches"),
], ids=["shapes", "rows", "one-batch", "none"])
def test_a_merge_called_on_batches_it_cannot_take_is_one_clear_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()


def test_a_graph_has_no_last_place_to_add_or_pop_a_layer():
    model = residual_model()
    with pytest.raises(UsageError, match="add\\(\\) on a functional model whose layers make "
                                         "no chain"):
        model.add(layers.Dense(2))
    with pytest.raises(UsageError, match="pop\\(\\) on a functional model"):
        model.pop()
    assert len(model.layers) == 7


def test_a_shared_layer_is_refused_when_the_model_is_made():
    inputs = keras.Input(shape=(4,))
    shared = layers.Dense(4)
    first = shared(inputs)
    with pytest.raises(UsageError, match="called twice in one model: shared layers"):
        keras.Model(inputs, layers.Add()([first, shared(first)]))


def keras_ordered_graphs():
    """Three graphs and the order Keras 3.15 lists their layers in (``[layer.name for layer
    in model.layers]``, run with Keras itself)."""
    def residual():
        i = keras.Input(shape=(6,), name="i")
        x = layers.Dense(8, name="x")(i)
        block = layers.Add(name="blk")([x, layers.Dense(8, name="r")(x)])
        joined = layers.Concatenate(name="j")([block, layers.Dense(3, name="s")(x)])
        return keras.Model(i, layers.Dense(4, name="o")(joined))

    def crossed():
        i = keras.Input(shape=(6,), name="i")
        a, b = layers.Dense(5, name="a")(i), layers.Dense(5, name="b")(i)
        d = layers.Dense(5, name="d")(layers.Dense(5, name="c")(a))
        e = layers.Add(name="e")([b, d, a])
        return keras.Model(i, layers.Multiply(name="g")([layers.Dense(5, name="f")(b), e]))

    def shortcut_first():
        i = keras.Input(shape=(6,), name="i")
        a = layers.Dense(5, name="a")(i)
        joined = layers.Concatenate(name="m")([layers.Dense(5, name="c")(i),
                                               layers.Dense(5, name="b")(a), a])
        return keras.Model(i, layers.Dense(2, name="o")(joined))

    return [(residual, ["i", "x", "r", "blk", "s", "j", "o"]),
            (crossed, ["i", "a", "c", "b", "d", "f", "e", "g"]),
            (shortcut_first, ["i", "a", "c", "b", "m", "o"])]


@pytest.mark.parametrize("make, names", keras_ordered_graphs(),
                         ids=["residual", "crossed", "shortcut-first"])
def test_a_graphs_layers_and_weights_come_in_kerass_order(make, names):
    """The farthest from the output first, ties in the order a walk from the output meets
    them: model.layers[i] and get_weights() line up with a Keras model's."""
    model = make()
    assert [layer.name for layer in model.layers] == names
    model.build(6)
    assert [weight.shape for weight in model.get_weights()] == [
        weight.shape for layer in model.layers for weight in layer.get_weights()]


def test_operators_on_layer_outputs_are_their_merge_layers():
    inputs = keras.Input(shape=(4,))
    x = layers.Dense(4)(inputs)
    total = (x + inputs) - x * x
    assert type(total.layer) is layers.Subtract
    assert [type(item.layer) for item in total.inputs] == [layers.Add, layers.Multiply]
    model = keras.Model(inputs, total, backend="cpu")
    data = RNG.normal(size=(3, 4)).astype(np.float32)
    kernel, bias = model.get_weights()
    dense = data @ kernel + bias
    np.testing.assert_allclose(model.predict(data, verbose=0), dense + data - dense * dense,
                               rtol=1e-5)
    for operation, message in [(lambda: x + 2, r"\+ of a layer output and int"),
                               (lambda: np.ones(4) * 0 + x[0], "output is sliced"),
                               (lambda: 3 * x, r"\* of a layer output and int")]:
        with pytest.raises(UsageError, match=message):
            operation()


def test_a_merge_broadcasts_as_keras_does(cpu):
    """Squeeze-and-excitation's multiply([x, scale]), scale (1, 1, c) or (c,): the output is
    NumPy's broadcast product (the shapes lined up from the last axis), and the scale's
    gradient its sum over the stretched axes."""
    x, scale = RNG.normal(size=(2, 3, 3, 4)), RNG.normal(size=(2, 1, 1, 4))
    np.testing.assert_allclose(layers.multiply([x, scale]), x * scale, rtol=1e-6)
    np.testing.assert_allclose(layers.Add()([x, scale]), x + scale, rtol=1e-6)
    np.testing.assert_allclose(layers.multiply([x, scale[:, 0, 0]]), x * scale, rtol=1e-6)
    assert layers.Add().compute_output_shape([(2, 3), (4, 1, 3)]) == (4, 2, 3)  # as Keras'
    assert layers.Add().compute_output_shape([(0,), (1,)]) == (0,)
    check_layer(layers.Multiply(), [(3, 3, 4), (1, 1, 4)])
    check_layer(layers.Multiply(), [(3, 3, 4), (4,)])
    check_layer(layers.Subtract(), [(1, 3), (2, 1)])
    check_layer(layers.Average(), [(2, 3), (4, 2, 1), (1, 3)])


def test_a_merge_of_one_input_passes_it_on_as_in_keras():
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, layers.Add()([layers.Dense(3)(inputs)]), backend="cpu")
    data = RNG.normal(size=(2, 3)).astype(np.float32)
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(model.predict(data, verbose=0), data @ kernel + bias, rtol=1e-6)


class HandsOneArrayToEach(Merge):
    """A sum of one's own that gives every input the one gradient array it is given, as a
    plugin author may write it: the model must copy it before a layer overwrites it."""

    def forward(self, inputs, logits=False, training=False):
        return sum(inputs[1:], inputs[0].copy())

    def backward(self, grad, logits=False):
        return [grad] * len(self.input_shape) if self.needs_input_grad else None


class ForgetsAnInput(HandsOneArrayToEach):
    def backward(self, grad, logits=False):
        return [grad]


def test_a_merge_of_ones_own_handing_one_array_to_two_inputs_trains_right(cpu):
    """Each tanh layer's backward overwrites the gradient it is given."""
    inputs = keras.Input(shape=(5,))
    joined = HandsOneArrayToEach()([layers.Dense(4, activation="tanh")(inputs),
                                    layers.Dense(4, activation="tanh")(inputs)])
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(joined), dtype="float64",
                        seed=4, backend=cpu)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(6, 5)), to_categorical(RNG.integers(0, 3, size=6), 3)
    model.compute_gradients(x, y)
    analytic = [grad.copy() for layer in model.stack for grad in layer.grads]
    for param, grad in zip(model.params, analytic, strict=True):
        np.testing.assert_allclose(grad, numerical_gradient(lambda: model.test_on_batch(x, y),
                                                            param), rtol=1e-5, atol=1e-8)


def test_a_merge_of_ones_own_giving_too_few_gradients_is_one_clear_error(cpu):
    model = merged_model(ForgetsAnInput, cpu)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(UsageError, match=r"forgets_an_input.*'s backward must return a list "
                                         "of one input gradient for each of its 3 inputs"):
        model.fit(RNG.normal(size=(6, 5)), to_categorical(RNG.integers(0, 3, size=6), 3),
                  verbose=0)


class ForgetsToReturn(layers.Layer):
    """A layer of one's own whose backward writes its input gradient but returns nothing."""

    def forward(self, x, logits=False, training=False):
        return x

    def backward(self, grad, logits=False):
        grad *= 1.0


class WrongGradientShape(HandsOneArrayToEach):
    def backward(self, grad, logits=False):
        return [grad[:, :1], grad]


class GivesAReadOnlyGradient(HandsOneArrayToEach):
    def backward(self, grad, logits=False):
        return [np.broadcast_to(grad[:1], grad.shape), grad]


class GivesAMaskedArray(HandsOneArrayToEach):
    def backward(self, grad, logits=False):
        return [np.ma.masked_greater(grad, 0), grad]


class ComputesElsewhere(layers.Layer):
    """forward gives what its compute_output_shape does not say, in float64."""

    def forward(self, x, logits=False, training=False):
        return np.asarray(x, dtype=np.float64)[:, :1] if self.name.endswith("shape") else (
            np.asarray(x, dtype=np.float64))


@pytest.mark.parametrize("make, message", [
    (lambda x: ForgetsToReturn()(x),
     r"forgets_to_return.*'s backward's input gradient must be a writable, C-contiguous "
     r"array of the cpu backend of shape \(6, 4\) and dtype float32, not None"),
    (lambda x: WrongGradientShape()([x, x]),
     r"wrong_gradient_shape.*'s backward's input gradient must be a writable, C-contiguous "
     r"array of the cpu backend of shape \(6, 4\) and dtype float32, not ndarray of shape "
     r"\(6, 1\)"),
    (lambda x: ComputesElsewhere(name="computes_shape")(x),
     r"computes_shape's forward output must be an array of the cpu backend of shape "
     r"\(6, 4\) and dtype float32, not ndarray of shape \(6, 1\) and dtype float64"),
    (lambda x: ComputesElsewhere(name="computes_dtype")(x), "and dtype float64"),
    (lambda x: GivesAReadOnlyGradient()([x, x]), "must be a writable, C-contiguous array"),
    (lambda x: GivesAMaskedArray()([x, x]), "not MaskedArray of shape"),
], ids=["backward-returns-none", "gradient-shape", "output-shape", "output-dtype",
        "read-only-gradient", "numpy-subclass"])
def test_a_layer_of_ones_own_computing_what_it_does_not_say_is_one_clear_error(make, message):
    """Not a silent gradient of stale memory nor an error from deep inside another layer."""
    inputs = keras.Input(shape=(5,))
    outputs = layers.Dense(3, activation="softmax")(make(layers.Dense(4)(inputs)))
    model = keras.Model(inputs, outputs, backend="cpu")
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(UsageError, match=message):
        model.fit(RNG.normal(size=(6, 5)), to_categorical(RNG.integers(0, 3, size=6), 3),
                  batch_size=6, verbose=0)


def test_arithmetic_other_than_merges_and_truth_are_refused_in_one_line():
    inputs = keras.Input(shape=(4,))
    x = layers.Dense(4)(inputs)
    assert type((inputs + inputs).layer) is layers.Add and inputs.ndim == x.ndim == 2
    for operation, message in [(lambda: -x, "a sign on dense"), (lambda: x / x, "/ on dense"),
                               (lambda: inputs @ x, "@ on input_layer"),
                               (lambda: abs(x), r"abs\(\) on dense"),
                               (lambda: np.ones(4) + x, r"\+ of a layer output and ndarray"),
                               (lambda: bool(x), "used as True or False"),
                               (lambda: layers.Add()(x), r"merges a list of inputs: call it on"
                                                        r" a list")]:
        with pytest.raises(UsageError, match=message):
            operation()


def test_a_layer_called_in_two_branches_is_refused_as_shared():
    inputs = keras.Input(shape=(4,))
    shared = layers.Dense(4, name="shared_dense")
    with pytest.raises(UsageError, match="shared_dense is called twice in one model: shared "
                                         "layers are not supported"):
        keras.Model(inputs, layers.Add()([shared(inputs), shared(inputs)]))
    assert not shared.in_model


def test_a_model_called_on_a_layer_output_says_a_model_is_no_layer_of_another():
    inner = residual_model()
    outputs = layers.Dense(6)(keras.Input(shape=(6,)))
    with pytest.raises(UsageError, match="functional was called on dense.*: a model called on "
                                         "keras.Input or on a layer's output, as a layer of "
                                         "another model, is not supported"):
        inner(outputs)


def test_the_models_checks_take_its_own_dtype_and_any_array_its_backend_owns(cpu):
    """forward given float32 rows on a float64 model, or a NumPy subclass, computes as
    before the checks; a keras.Input is still no iterable."""
    model = keras.Sequential([layers.Dense(2)], dtype="float64", backend=cpu)
    model.build(3)
    assert model.forward(np.ones((2, 3), np.float32)).dtype == np.float64
    assert model.forward(np.ma.masked_array(np.ones((2, 3)))).shape == (2, 2)
    with pytest.raises(TypeError, match="not iterable"):
        list(keras.Input(shape=(3,)))


# The models whose layers make a graph that the replaying backend and the GPU stand-in train
# (tests/test_replay.py, tests/test_gpu_standin.py): {name: (make(backend), data(rows) ->
# (x, y), loss)}
GRAPH_MODELS = {"residual": (residual_model, toy_data, "categorical_crossentropy"),
                "picking": (picking_model, toy_data, "categorical_crossentropy"),
                "three-inputs": (three_input_model, three_inputs_data,
                                 "categorical_crossentropy"),
                "dot-towers": (towers_model, towers_data, "binary_crossentropy"),
                "three-outputs": (three_output_model, three_output_data, THREE_OUTPUT_COMPILE),
                "text": (text_classifier, text_data, "binary_crossentropy"),
                "text-cnn": (text_cnn, lambda rows: text_cnn_data(rows)[:2],
                             "binary_crossentropy")}
