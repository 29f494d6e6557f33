"""Conv2D, the pooling layers and BatchNormalization: their windows, their forward passes
against loops written from the definitions, their gradients against finite differences, every
backend against cpu, and what a model does with them (shapes, summary, checkpoints, moving
statistics)."""

import functools
import itertools
import threading

import numpy as np
import pytest

import dnn
from dnn import backends
from dnn.backends.windows import Axis
from dnn.errors import UsageError
from dnn.layers import (AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                        GlobalAveragePooling2D, GlobalMaxPooling2D, Input, MaxPooling2D,
                        from_config)
from dnn.utils import to_categorical
from dnn.testing import numerical_gradient
from tests.conftest import GenericNumpy, host_cuda_param
from tests.cuda_harness import HostCudaBackend

RNG = np.random.default_rng(11)


# -- windows -----------------------------------------------------------------------------------
@pytest.mark.parametrize("length, size, stride", list(itertools.product(range(1, 8),
                                                                        range(1, 4),
                                                                        range(1, 4))))
def test_each_window_offset_meets_the_inputs_the_definition_says(length, size, stride):
    for padding in ("valid", "same"):
        axis = Axis.of(length, size, stride, padding)
        expected_out = (-(-length // stride) if padding == "same"
                        else max((length - size) // stride + 1, 0))
        assert axis.out == expected_out
        for span in axis.spans():
            inside = [0 <= r * stride + span.offset - axis.pad_before < length
                      for r in range(axis.out)]
            assert inside == [span.out_start <= r < span.out_stop for r in range(axis.out)]
            if span.count:
                assert span.in_start == span.out_start * stride + span.offset - axis.pad_before


# -- references written from the definitions ---------------------------------------------------
def padded(x, axis_rows, axis_columns, fill):
    """``x`` ``(n, h, w, c)`` with Keras' padding of the two axes, filled with ``fill``."""
    def pads(axis):
        total = max((axis.out - 1) * axis.stride + axis.size - axis.length, 0)
        return axis.pad_before, total - axis.pad_before
    return np.pad(x, ((0, 0), pads(axis_rows), pads(axis_columns), (0, 0)),
                  constant_values=fill)


def windows_of(x, layer, fill):
    """Every window of ``x`` as ``(n, oh, ow, kh, kw, c)``, by loops."""
    rows, columns = layer._window.rows, layer._window.columns
    image = padded(x, rows, columns, fill)
    out = np.empty((x.shape[0], rows.out, columns.out, rows.size, columns.size, x.shape[3]))
    for y, z in itertools.product(range(rows.out), range(columns.out)):
        out[:, y, z] = image[:, y * rows.stride:y * rows.stride + rows.size,
                             z * columns.stride:z * columns.stride + columns.size]
    return out


def conv_reference(x, layer):
    kernel, bias = layer.get_weights()
    return np.maximum(np.einsum("nyxijc,ijcf->nyxf", windows_of(x, layer, 0.0), kernel) + bias,
                      0)


def average_reference(x, layer):
    ones = windows_of(np.ones_like(x), layer, 0.0)
    return windows_of(x, layer, 0.0).sum(axis=(3, 4)) / ones.sum(axis=(3, 4))


def batch_norm_reference(x, layer, training):
    gamma, beta, moving_mean, moving_variance = layer.get_weights()
    mean, variance = ((x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))) if training
                      else (moving_mean, moving_variance))
    return (x - mean) / np.sqrt(variance + layer.epsilon) * gamma + beta


LAYERS = {
    "conv valid": (lambda: Conv2D(3, (3, 2), activation="relu"), (7, 6, 2),
                   conv_reference),
    "conv same strided": (lambda: Conv2D(4, 3, strides=2, padding="same", activation="relu"),
                          (7, 6, 2), conv_reference),
    "conv same 1x2 strides": (lambda: Conv2D(2, (2, 3), strides=(1, 2), padding="same",
                                             activation="relu"), (5, 8, 3), conv_reference),
    "max pool": (lambda: MaxPooling2D(2), (6, 7, 3),
                 lambda x, layer: windows_of(x, layer, -np.inf).max(axis=(3, 4))),
    "max pool overlapping same": (lambda: MaxPooling2D(3, strides=2, padding="same"),
                                  (7, 6, 2),
                                  lambda x, layer: windows_of(x, layer, -np.inf).max(axis=(3, 4))),
    "average pool": (lambda: AveragePooling2D(2), (6, 6, 3), average_reference),
    "average pool same": (lambda: AveragePooling2D((3, 2), strides=2, padding="same"),
                          (7, 5, 2), average_reference),
    "global average": (lambda: GlobalAveragePooling2D(), (5, 4, 3),
                       lambda x, layer: x.mean(axis=(1, 2))),
    "global max": (lambda: GlobalMaxPooling2D(), (5, 4, 3),
                   lambda x, layer: x.max(axis=(1, 2))),
    "global max keepdims": (lambda: GlobalMaxPooling2D(keepdims=True), (3, 6, 2),
                            lambda x, layer: x.max(axis=(1, 2), keepdims=True)),
    "batch norm": (lambda: BatchNormalization(), (4, 3, 5),
                   lambda x, layer: batch_norm_reference(x, layer, training=False)),
}


def built(make, shape, backend, dtype=np.float64):
    layer = make()
    layer.build_on(shape, backend, np.random.default_rng(3), dtype)
    if isinstance(layer, BatchNormalization):  # statistics and weights other than the start
        layer.set_weights([RNG.uniform(0.5, 1.5, shape[-1]), RNG.normal(size=shape[-1]),
                           RNG.normal(size=shape[-1]), RNG.uniform(0.5, 2, shape[-1])])
    return layer


@pytest.mark.parametrize("name", LAYERS)
def test_forward_passes_equal_the_definitions(cpu, name):
    make, shape, reference = LAYERS[name]
    layer = built(make, shape, cpu)
    x = RNG.normal(size=(3, *shape))
    out = layer.forward(x.copy())
    assert out.shape == (3, *layer.output_shape)
    np.testing.assert_allclose(out, reference(x, layer), rtol=1e-12, atol=1e-12)


def test_batch_normalization_in_training_uses_the_batchs_statistics_and_moves_its_own(cpu):
    layer = built(BatchNormalization, (4, 3, 5), cpu)
    x = RNG.normal(size=(6, 4, 3, 5)) * 3 + 1
    _, _, moving_mean, moving_variance = layer.get_weights()
    out = layer.forward(x.copy(), training=True)
    np.testing.assert_allclose(out, batch_norm_reference(x, layer, training=True), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(layer.get_weights()[2],
                               0.99 * moving_mean + 0.01 * x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(layer.get_weights()[3],
                               0.99 * moving_variance + 0.01 * x.var(axis=(0, 1, 2)),
                               rtol=1e-12)
    layer.trainable = False  # Keras 3: a frozen layer normalizes with its moving statistics
    before = layer.get_weights()
    np.testing.assert_allclose(layer.forward(x.copy(), training=True),
                               batch_norm_reference(x, layer, training=False), rtol=1e-12)
    for ours, theirs in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(ours, theirs)


class RecordedSums(GenericNumpy):
    """The generic kernels, recording each call of the sums per channel: (kernel, the
    arrays it was given)."""

    def __init__(self):
        self.calls = []

    def channel_sums(self, x, out, mean=None):
        self.calls.append(("channel_sums", x, mean))
        return super().channel_sums(x, out, mean)

    def channel_gradient_sums(self, grad, normalized, out):
        self.calls.append(("channel_gradient_sums", grad, normalized))
        return super().channel_gradient_sums(grad, normalized, out)


@pytest.mark.parametrize("shape", [(4, 3, 5), (7,)], ids=["images", "flat"])
def test_batch_normalization_sums_with_the_backends_kernels_on_views_of_its_rows(shape):
    """A training pass: the batch's sums and its sums of squares about their mean, then the
    gradient's sums, each on the ``(m, c)`` rows of the arrays themselves (no copy)."""
    backend = RecordedSums()
    layer = built(BatchNormalization, shape, backend)
    x, grad = RNG.normal(size=(6, *shape)), RNG.normal(size=(6, *shape))
    layer.forward(x, training=True)
    layer.backward(grad)
    rows = (x.size // shape[-1], shape[-1])
    assert [(name, first.shape) for name, first, _ in backend.calls] == [
        ("channel_sums", rows), ("channel_sums", rows), ("channel_gradient_sums", rows)]
    (_, first, _), (_, again, mean), (_, gradient, normalized) = backend.calls
    assert np.shares_memory(first, x) and np.shares_memory(again, x) and mean.shape == shape[-1:]
    assert np.shares_memory(gradient, grad) and np.shares_memory(normalized, layer._normalized)


class ThreadRanks:
    """Ranks as threads of one process, for a layer's sums: ``rank(r)`` is rank ``r``'s
    communicator, whose ``all_reduce`` waits for every rank's array and leaves in each their
    sum, added in rank order."""

    def __init__(self, size):
        self.arrays = [None] * size
        self.barrier = threading.Barrier(size, timeout=30)

    def rank(self, rank):
        ranks = self

        class Rank:
            def all_reduce(self, array, backend):
                ranks.arrays[rank] = array
                ranks.barrier.wait()
                total = functools.reduce(np.add, [a.copy() for a in ranks.arrays])
                ranks.barrier.wait()  # every rank has read every array
                array[...] = total
        return Rank()


@pytest.mark.parametrize("name", ["cpu", host_cuda_param()])
@pytest.mark.parametrize("share_rows", [(0, 6), (2, 4)], ids=["a share of no rows", "2 and 4"])
def test_synchronized_batch_normalization_over_shares_is_the_whole_batchs(name, share_rows):
    """With ``synchronized``, two ranks' shares of a batch of 6 (one of no rows: a rank past
    the rows of a last batch) are normalized with the whole batch's statistics, move the
    moving ones as it does, and give back each share's rows of the whole batch's input
    gradient and, weighted by their shares of the rows, its weights' gradients: in each
    share's units, the gradient of its share's mean loss."""
    backend = HostCudaBackend() if name == "host-cuda" else backends.get_backend("cpu")
    shape = (4, 3, 5)
    x = RNG.normal(size=(6, *shape)) * 3 + 1
    upstream = RNG.normal(size=x.shape)  # of the whole batch's mean loss
    whole = built(BatchNormalization, shape, backend)
    start = whole.get_weights()
    expected = [whole.forward(x.copy(), training=True).copy(), whole.backward(upstream.copy())]
    expected_grads = [backend.to_numpy(grad) for grad in whole.grads]
    bounds, ranks, results = np.cumsum([0, *share_rows]), ThreadRanks(2), {}

    def share(rank):
        rows = slice(bounds[rank], bounds[rank + 1])
        layer = built(lambda: BatchNormalization(synchronized=True), shape, backend)
        layer.set_weights(start)
        layer.ranks, layer.global_rows = ranks.rank(rank), 6
        units = 6 / max(share_rows[rank], 1)  # d(share's mean) / d(whole batch's mean)
        out = layer.forward(x[rows].copy(), training=True).copy()
        grad_x = layer.backward(upstream[rows] * units) / units
        results[rank] = (rows, layer, [out, grad_x], [grad.copy() for grad in layer.grads])

    threads = [threading.Thread(target=share, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1]
    for rows, layer, ours, _ in results.values():
        for mine, theirs in zip(ours, expected):
            np.testing.assert_allclose(mine, theirs[rows], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.get_weights()[2:], whole.get_weights()[2:],
                                   rtol=1e-12)
    for index, theirs in enumerate(expected_grads):  # weighted as the model sums them
        weighted = sum(grads[index] * share_rows[rank] / 6
                       for rank, (_, _, _, grads) in results.items())
        np.testing.assert_allclose(weighted, theirs, rtol=1e-10, atol=1e-12)


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_gradients_match_finite_differences(cpu, name, training):
    """Of the inputs and of every trained weight, through the layer alone (float64)."""
    make, shape, _ = LAYERS[name]
    if training and not isinstance(make(), BatchNormalization):
        pytest.skip("training changes nothing but batch normalization")
    layer = built(make, shape, cpu)
    if isinstance(layer, Conv2D):
        layer.params[1] += 0.3  # most pre-activations away from relu's kink
    x = RNG.normal(size=(2, *shape))
    upstream = RNG.normal(size=(2, *layer.output_shape))
    moving = [weight.copy() for weight in layer.state_weights]

    def objective():
        for weight, start in zip(layer.state_weights, moving):
            weight[...] = start  # a training pass moves them: each pass from the same start
        return float(np.sum(upstream * layer.forward(x, training=training)))

    objective()
    grad_x = layer.backward(upstream.copy()).copy()
    grads = [grad.copy() for grad in layer.grads]
    np.testing.assert_allclose(grad_x, numerical_gradient(objective, x), rtol=1e-5, atol=1e-7)
    for param, grad in zip(layer.params, grads):
        np.testing.assert_allclose(grad, numerical_gradient(objective, param), rtol=1e-5,
                                   atol=1e-7)


def test_max_pooling_sends_a_tie_to_the_first_input_of_its_window(cpu):
    layer = built(lambda: MaxPooling2D(2), (2, 4, 1), cpu)
    x = np.zeros((1, 2, 4, 1))  # relu's zeros: every input ties
    x[0, 1, 3, 0] = -1.0
    layer.forward(x)
    grad_x = layer.backward(np.array([[[[1.0], [2.0]]]]))
    np.testing.assert_array_equal(grad_x[0, :, :, 0], [[1, 0, 2, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("name", LAYERS)
def test_every_backend_computes_what_cpu_does(backend, cpu, name):
    """Forward and backward of each layer on each backend from the same weights and inputs,
    to float32 rounding."""
    make, shape, _ = LAYERS[name]
    x = RNG.normal(size=(3, *shape)).astype(np.float32)
    grad = weights = None
    results = []
    for on in (backend, cpu):
        layer = built(make, shape, on, np.float32)
        if weights is None:
            weights = layer.get_weights()
        layer.set_weights(weights)
        out = on.to_numpy(layer.forward(on.asarray(x), training=True))
        if grad is None:
            grad = RNG.normal(size=out.shape).astype(np.float32)
        grad_x = on.to_numpy(layer.backward(on.asarray(grad.copy())))
        results.append([out, grad_x, *layer.get_weights(), *map(on.to_numpy, layer.grads)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)


# -- arguments and shapes ----------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(0, 3), "Conv2D filters must be an integer from 1"),
    (lambda: Conv2D(8, 0), r"Conv2D kernel_size must be a positive integer or two of them"),
    (lambda: Conv2D(8, (3, 3, 3)), "Conv2D kernel_size must be"),
    (lambda: Conv2D(8, 3, padding="full"), "Conv2D padding must be 'valid' or 'same', not 'full'"),
    (lambda: Conv2D(8, 3, data_format="channels_first"), "only data_format='channels_last'"),
    (lambda: Conv2D(8, 3, dilation_rate=2), "dilation_rate and groups other than 1"),
    (lambda: MaxPooling2D(2, strides=0), "MaxPooling2D strides must be a positive integer"),
    (lambda: BatchNormalization(momentum=1), r"momentum must be a number in \[0, 1\)"),
    (lambda: BatchNormalization(epsilon=0), "epsilon must be a positive number"),
    (lambda: Conv2D(8, 3, kernel_constraint="max_norm"),
     r"Conv2D: kernel_constraint is not supported yet; leave it None"),
    (lambda: MaxPooling2D(dtype="float16"), r"dtype is not supported yet; the model's dtype"),
    (lambda: Dense(3, kernel_constrain=None), "Dense has no argument 'kernel_constrain'"),
])
def test_bad_arguments_are_one_clear_error(make, message):
    with pytest.raises(UsageError, match=message):
        make()


def test_keras_arguments_that_ask_for_nothing_are_taken():
    Conv2D(8, 3, kernel_constraint=None, bias_constraint=None)
    BatchNormalization(momentum=np.float32(0.9), synchronized=False, gamma_regularizer=None)
    MaxPooling2D(dtype=None)


@pytest.mark.parametrize("layers, message", [
    ([Conv2D(4, 3)], r"conv2d\w* \(Conv2D\) takes images \(height, width, channels\), not "
                     r"inputs of shape \(784,\)"),
    ([Input(shape=(28, 28, 1)), Conv2D(4, 30)], "a 30x30 window does not fit in 28x28 images"),
    ([Input(shape=(28, 28, 1)), BatchNormalization(axis=1)], "only the last axis"),
])
def test_layers_that_cannot_take_their_inputs_say_so_when_built(layers, message):
    with pytest.raises(UsageError, match=message):
        dnn.Sequential(layers).build(784)  # a model whose Input declares builds at once


@pytest.mark.parametrize("layers", [
    lambda: [Conv2D(4, 2**40, padding="same", input_shape=(8, 8, 1))],
    lambda: [Input(shape=(2**31, 2**31)), dnn.layers.Dense(3)]])
def test_weights_past_what_numpy_can_index_are_out_of_memory_not_a_numpy_error(layers):
    with pytest.raises(dnn.errors.OutOfMemoryError, match="need .* bytes: more memory than this "
                                                         "machine gives"):
        dnn.Sequential(layers())


def test_a_negative_moving_variance_is_refused_before_any_weight_is_written(tmp_path):
    model = dnn.Sequential([Input(shape=(4, 4, 1)), Conv2D(2, 3), BatchNormalization(),
                            Flatten(), dnn.layers.Dense(3, activation="softmax")])
    before = model.get_weights()
    wrong = [weight + 1 for weight in before]
    wrong[5][0] = -2.0  # the moving variance
    message = "batch_normalization.*: a moving variance must be >= 0, not -2.0"
    with pytest.raises(UsageError, match=message):
        model.set_weights(wrong)
    with pytest.raises(UsageError, match=message):
        model.layers[1].set_weights(wrong[2:6])
    for kept, weight in zip(before, model.get_weights()):  # nothing was written
        np.testing.assert_array_equal(kept, weight)


def test_every_layer_rebuilds_from_its_config():
    for layer in (Conv2D(8, (3, 2), strides=2, padding="same", activation="relu",
                         use_bias=False, kernel_initializer="he_normal", name="c"),
                  MaxPooling2D((2, 3), strides=1, padding="same"), AveragePooling2D(),
                  GlobalAveragePooling2D(keepdims=True), GlobalMaxPooling2D(),
                  BatchNormalization(momentum=0.9, epsilon=1e-5, center=False)):
        config = layer.get_config()
        assert from_config(config).get_config() == config
        assert repr(from_config(config)) == repr(layer)


# -- in a model ---------------------------------------------------------------------------------
def convnet(**kwargs):
    return dnn.Sequential([Input(shape=(8, 8, 1)), Conv2D(4, 3, activation="relu"),
                           BatchNormalization(), MaxPooling2D(2),
                           Conv2D(6, 2, padding="same", activation="relu"),
                           AveragePooling2D(), Flatten(), Dropout(0.25),
                           Dense(3, activation="softmax")], seed=0, **kwargs)


def images(count=48):
    x = RNG.normal(size=(count, 8, 8, 1)).astype(np.float32)
    labels = (x[:, :4].sum(axis=(1, 2, 3)) > 0).astype(int) + (x[:, :, :4].sum(axis=(1, 2, 3))
                                                                 > 0)
    return x, to_categorical(labels, 3)


def test_a_convnet_summary_gives_keras_output_shapes_and_counts():
    lines = []
    convnet().summary(print_fn=lines.append)
    text = "\n".join(lines)
    for shape, count in (("(None, 6, 6, 4)", "40"), ("(None, 6, 6, 4)", "16"),
                         ("(None, 3, 3, 4)", "0"), ("(None, 3, 3, 6)", "102"),
                         ("(None, 1, 1, 6)", "0"), ("(None, 6)", "0"), ("(None, 3)", "21")):
        assert any(shape in line and line.rstrip().endswith(count) for line in lines), text
    assert "Total params: 179" in text and "Trainable params: 171" in text
    assert "Non-trainable params: 8" in text  # the moving statistics


def test_a_convnet_trains_and_its_checkpoint_holds_moving_statistics(tmp_path):
    x, y = images()
    model = convnet()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[0]
    norm = model.layers[1]
    moving = [weight.copy() for weight in norm.state_weights]
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0)[0] < before
    assert all(not np.array_equal(now, then) for now, then in zip(norm.state_weights, moving))
    model.save(tmp_path / "convnet.npz")
    loaded = dnn.load_model(tmp_path / "convnet.npz")
    assert loaded.input_shape == (None, 8, 8, 1) and loaded.output_shape == (None, 3)
    for ours, theirs in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # evaluation uses the moving statistics: the same result whatever the batch
    np.testing.assert_allclose(model.predict(x[:5], verbose=0),
                               model.predict(x, verbose=0)[:5], rtol=1e-5)


def test_a_convnet_built_from_its_data_saves_the_image_shape(tmp_path):
    """Without an Input the weights do not say the image size: the checkpoint does."""
    x, y = images(16)
    model = dnn.Sequential([Conv2D(2, 3, activation="relu"), Flatten(),
                            Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "built.npz")
    loaded = dnn.load_model(tmp_path / "built.npz")
    assert loaded.sample_shape == (8, 8, 1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_flat_samples_reach_an_image_model_in_its_shape():
    x, y = images(16)
    model = convnet()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    np.testing.assert_array_equal(model.predict(x.reshape(16, 64), verbose=0),
                                  model.predict(x, verbose=0))
    with pytest.raises(UsageError, match=r"inputs have 63 features; the model expects 64 "
                                         r"\(samples of shape \(8, 8, 1\)\)"):
        model.predict(np.zeros((2, 63)), verbose=0)


def test_weights_are_named_as_keras_names_them(cpu):
    model = convnet(backend=cpu)
    names = [f"{layer.name}/{layer.weight_name(weight)}" for layer in model.layers
             for weight in layer.weights]
    conv, norm, dense = model.layers[0].name, model.layers[1].name, model.layers[-1].name
    assert names == [f"{conv}/kernel", f"{conv}/bias", f"{norm}/gamma", f"{norm}/beta",
                     f"{norm}/moving_mean", f"{norm}/moving_variance",
                     f"{model.layers[3].name}/kernel", f"{model.layers[3].name}/bias",
                     f"{dense}/kernel", f"{dense}/bias"]


def test_no_input_gradient_is_computed_before_the_first_layer_with_weights(cpu):
    """An Input, a pooling or a Dropout before the first weighted layer passes no gradient
    back, and that layer computes none (the first convolution's would be the largest)."""
    model = dnn.Sequential([Input(shape=(8, 8, 1)), MaxPooling2D(2), Conv2D(2, 3),
                            Flatten(), Dense(3, activation="softmax")], seed=0, backend=cpu)
    assert [layer.needs_input_grad for layer in model.layers] == [False, False, True, True]
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = images(4)
    called = []
    model.layers[0].backward = lambda grad, logits=False: called.append(grad)
    model.train_on_batch(x, y)
    assert called == [] and "grad_cols" not in str(model.layers[1]._buffers._arrays)


def test_evaluation_batches_of_a_convnet_keep_its_outputs_within_bounds(cpu):
    """A dense network evaluates 1024 rows at a time; a convnet's layer outputs are about a
    hundred times larger per sample, so its default evaluation batch is smaller."""
    from dnn.trainers.trainer import EVALUATION_BATCH, EVALUATION_BYTES

    model = dnn.Sequential([Input(shape=(28, 28, 1)), Conv2D(32, 3, activation="relu"),
                            MaxPooling2D(2), Flatten(), Dense(10, activation="softmax")],
                           seed=0, backend=cpu)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rows = []
    forward = model.layers[0].forward
    model.layers[0].forward = lambda x, **kwargs: rows.append(x.shape[0]) or forward(x, **kwargs)
    x = RNG.random((600, 28, 28, 1)).astype(np.float32)
    whole = model.predict(x, batch_size=600, verbose=0)
    rows.clear()
    np.testing.assert_allclose(model.predict(x, verbose=0), whole, rtol=1e-5, atol=1e-7)
    per_sample = 4 * (28 * 28 + 26 * 26 * 32 + 13 * 13 * 32 * 2 + 10)  # each layer's output
    assert max(rows) == EVALUATION_BYTES // per_sample < EVALUATION_BATCH
    dense = dnn.Sequential([Dense(512, activation="relu"), Dense(10)], backend=cpu)
    dense.build(784)
    assert dense._evaluation_batch() == EVALUATION_BATCH


# -- what a user can get wrong, and models a checkpoint must bring back ------------------------
@pytest.mark.parametrize("first", [lambda: [BatchNormalization()],
                                   lambda: [dnn.layers.Reshape((6, 6, 1)), Conv2D(2, 3),
                                            Flatten()],
                                   lambda: [dnn.layers.Reshape((6, 6, 1)), MaxPooling2D(),
                                            Flatten()]],
                         ids=["batch norm first", "reshape then conv", "reshape then pool"])
def test_models_whose_first_kernel_does_not_say_their_inputs_load_back(tmp_path, first):
    x = RNG.normal(size=(8, 36)).astype(np.float32)
    model = dnn.Sequential([*first(), Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, to_categorical(RNG.integers(0, 3, 8), 3), verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    again = dnn.Sequential([*first(), Dense(3, activation="softmax")], seed=1)
    again.load_weights(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_load_weights_ignores_what_the_weights_do_not_depend_on(tmp_path):
    """A frozen layer, an Input rather than input_shape: the same weights load."""
    x, y = images(8)
    saved = dnn.Sequential([Input(shape=(8, 8, 1)), Conv2D(2, 3), Flatten(),
                            Dense(3, activation="softmax")], seed=0)
    saved.layers[0].trainable = False
    saved.save_weights(tmp_path / "w.npz")
    other = dnn.Sequential([Conv2D(2, 3, input_shape=(8, 8, 1)), Flatten(),
                            Dense(3, activation="softmax")], seed=5)
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(x, verbose=0), saved.predict(x, verbose=0))
    wider = dnn.Sequential([Conv2D(4, 3, input_shape=(8, 8, 1)), Flatten(), Dense(3)])
    with pytest.raises(dnn.errors.CheckpointError,
                       match=r"its layer 1 \(after any Input\) is \{'class': 'Conv2D', "
                             r"'filters': 2"):
        wider.load_weights(tmp_path / "w.npz")


def test_a_model_whose_last_layer_gives_images_is_refused_a_loss(cpu):
    model = dnn.Sequential([Input(shape=(3, 3, 2)), Conv2D(3, 1)], backend=cpu)
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(UsageError, match=r"the last layer, conv2d\w*, gives each sample an "
                                         r"output of shape \(3, 3, 3\); dnn's losses take one "
                                         r"vector a sample"):
        model.fit(np.zeros((4, 3, 3, 2)), np.zeros((4, 3, 3, 3)), verbose=0)
    assert model.predict(np.zeros((4, 3, 3, 2)), verbose=0).shape == (4, 3, 3, 3)


def test_softmax_of_images_is_over_their_channels(cpu):
    model = dnn.Sequential([Input(shape=(3, 2, 4)), dnn.layers.Activation("softmax")],
                           backend=cpu)
    x = RNG.normal(size=(2, 3, 2, 4))
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out, np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True),
                               rtol=1e-5)
    layer = dnn.layers.Activation("softmax")
    layer.build_on((3, 2, 4), cpu, RNG, np.float64)
    upstream = RNG.normal(size=x.shape)

    def objective():
        return float(np.sum(upstream * layer.forward(x)))

    objective()
    np.testing.assert_allclose(layer.backward(upstream.copy()), numerical_gradient(objective, x),
                               rtol=1e-5, atol=1e-8)


def test_a_layer_that_cannot_be_added_leaves_the_model_as_it_was(cpu):
    model = dnn.Sequential([Input(shape=(10,)), Dense(16)], backend=cpu)
    conv = Conv2D(2, 3)
    with pytest.raises(UsageError, match="takes images"):
        model.add(conv)
    assert len(model.layers) == 1 and not conv.in_model
    model.add(Dense(2, activation="softmax"))
    assert model.predict(np.zeros((3, 10)), verbose=0).shape == (3, 2)


def test_images_of_another_layout_are_refused_and_a_missing_channel_is_added(cpu):
    model = dnn.Sequential([Input(shape=(8, 4, 2)), Flatten(), Dense(2)], backend=cpu)
    with pytest.raises(UsageError, match=r"inputs are samples of shape \(2, 8, 4\); the model "
                                         r"expects \(8, 4, 2\)"):
        model.predict(np.zeros((3, 2, 8, 4)), verbose=0)
    gray = dnn.Sequential([Input(shape=(8, 4, 1)), Flatten(), Dense(2)], backend=cpu)
    x = RNG.normal(size=(3, 8, 4))
    np.testing.assert_array_equal(gray.predict(x, verbose=0), gray.predict(x[..., None],
                                                                         verbose=0))


def test_default_names_are_keras_names():
    made = [Input(shape=(4,)), BatchNormalization(), MaxPooling2D(), AveragePooling2D(),
            GlobalAveragePooling2D(), Conv2D(1, 1)]
    names = [layer.name.rsplit("_", 1)[0] if layer.name[-1].isdigit() and "_" in layer.name
             else layer.name for layer in made]
    assert names == ["input_layer", "batch_normalization", "max_pooling2d",
                     "average_pooling2d", "global_average_pooling2d", "conv2d"]


def test_an_input_is_not_one_of_the_models_layers_as_in_keras(cpu):
    """Keras lists no InputLayer in ``model.layers``: freezing ``layers[0]`` freezes the
    first layer that computes, and the summary has no Input row."""
    model = dnn.Sequential([Input(shape=(4,)), Dense(3, activation="relu"), Dense(2)],
                           seed=0, backend=cpu)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dense"]
    assert model.get_layer(index=0) is model.layers[0]
    model.layers[0].trainable = False
    model.compile(optimizer="sgd", loss="mse")
    before = model.layers[0].get_weights()
    model.fit(RNG.normal(size=(8, 4)), RNG.normal(size=(8, 2)), verbose=0)
    for ours, theirs in zip(model.layers[0].get_weights(), before):
        np.testing.assert_array_equal(ours, theirs)
    lines = []
    model.summary(print_fn=lines.append)
    assert not any("input_layer" in line for line in lines)
    assert model.get_config()["layers"][0] == {"class": "Input", "shape": [4],
                                               "name": model._layers[0].name}
    assert model.layers[0].count_params() == 15
    assert model.input_shape == Input(shape=(4,)).shape == (None, 4)
    assert model.output_shape == (None, 2)


def test_weights_from_keras_give_keras_predictions(cpu):
    """A Keras 3 convnet's weights (tests/data/keras_convnet.npz: Conv2D, MaxPooling2D, a
    strided "same" Conv2D, BatchNormalization with moving statistics of its own,
    AveragePooling2D "same", Dense; written by Keras 3.15 with the JAX backend) loaded with
    set_weights into the same dnn model predict what Keras predicted."""
    from pathlib import Path

    with np.load(Path(__file__).parent / "data" / "keras_convnet.npz") as keras_run:
        weights = [keras_run[f"weight_{index}"] for index in range(10)]
        x, expected = keras_run["x"], keras_run["predictions"]
    model = dnn.Sequential([
        Input(shape=(10, 9, 2)), Conv2D(4, (3, 2), activation="relu"), MaxPooling2D(2),
        Conv2D(5, 3, strides=2, padding="same"), BatchNormalization(),
        dnn.layers.Activation("relu"), AveragePooling2D(2, padding="same"), Flatten(),
        Dense(3, activation="softmax")], backend=cpu)
    model.set_weights(weights)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_calling_the_model_with_training_runs_the_layers_as_fit_does(cpu):
    """Keras' ``model(x, training=True)``: batch statistics, moving ones moved; without it,
    the moving statistics and nothing moved."""
    model = dnn.Sequential([Input(shape=(4, 4, 2)), BatchNormalization(), Flatten()],
                           backend=cpu)
    x = RNG.normal(size=(5, 4, 4, 2)) * 3 + 2
    norm = model.layers[0]
    start = norm.get_weights()
    np.testing.assert_allclose(model(x), batch_norm_reference(x, norm, training=False)
                               .reshape(5, -1), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(norm.get_weights(), start):
        np.testing.assert_array_equal(ours, theirs)
    expected = batch_norm_reference(x, norm, training=True).reshape(5, -1)
    np.testing.assert_allclose(model(x, training=True), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.get_weights()[2], 0.01 * x.mean(axis=(0, 1, 2)),
                               rtol=1e-5)
