"""Backpropagation checked against central finite differences in float64, and forward values
against independent NumPy expressions."""

import numpy as np
import pytest

import dnn
from dnn import activations, losses
from dnn.layers import Dense, Layer
from dnn.testing import numerical_gradient

RNG = np.random.default_rng(1234)
TOLERANCE = dict(rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_activation_backward_matches_finite_differences(cpu, name):
    activation = activations.get(name)
    z = RNG.normal(size=(4, 5))
    upstream = RNG.normal(size=(4, 5))

    def objective():
        return float(np.sum(upstream * activation.forward(cpu, z.copy())))

    out = activation.forward(cpu, z.copy())
    analytic = activation.backward(cpu, upstream.copy(), out)
    np.testing.assert_allclose(analytic, numerical_gradient(objective, z), **TOLERANCE)


def test_activation_forward_values_match_reference(cpu):
    z = RNG.normal(size=(3, 4)) * 5
    exp = np.exp(z)
    references = {"linear": z, "relu": np.where(z > 0, z, 0), "sigmoid": 1 / (1 + np.exp(-z)),
                  "tanh": np.tanh(z), "softmax": exp / exp.sum(axis=1, keepdims=True)}
    for name, expected in references.items():
        actual = activations.get(name).forward(cpu, z.copy())
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15, err_msg=name)


def loss_and_gradient(loss, backend, output, targets, logits):
    """``(loss_sum, dL/doutput)`` of ``loss``, its gradient in a new array."""
    grad = np.empty_like(output)
    return float(loss.compute(backend, output, targets, grad, logits=logits)), grad


def _targets(n, k, sparse):
    labels = RNG.integers(0, k, size=n)
    return labels if sparse else np.eye(k)[labels]


LOSS_CASES = [  # (loss name, sparse targets, fused with softmax logits, output transform)
    ("categorical_crossentropy", False, True, None),
    ("categorical_crossentropy", False, False, "softmax"),
    ("sparse_categorical_crossentropy", True, True, None),
    ("sparse_categorical_crossentropy", True, False, "softmax"),
    ("categorical_crossentropy", False, False, "positive"),  # no probabilities: scaled
    ("sparse_categorical_crossentropy", True, False, "positive"),
    ("mean_squared_error", False, False, None),
]
OUTPUTS = {None: lambda cpu, raw: raw,
           "softmax": lambda cpu, raw: activations.Softmax().forward(cpu, raw),
           "positive": lambda cpu, raw: 2 / (1 + np.exp(-raw))}


@pytest.mark.parametrize("name, sparse, fused, transform", LOSS_CASES)
def test_loss_gradient_matches_finite_differences(cpu, name, sparse, fused, transform):
    loss = losses.get(name)
    n, k = 6, 4
    raw = RNG.normal(size=(n, k))
    output = OUTPUTS[transform](cpu, raw)
    targets = _targets(n, k, sparse)

    def objective():
        return loss_and_gradient(loss, cpu, output, targets, fused)[0] / n

    _, grad = loss_and_gradient(loss, cpu, output, targets, fused)
    np.testing.assert_allclose(grad, numerical_gradient(objective, output), **TOLERANCE)


def test_crossentropy_of_outputs_that_are_no_probabilities_is_keras_value(cpu):
    """Keras' categorical_crossentropy(from_logits=False) scales the outputs to sum to 1,
    then clips them (keras/src/backend/numpy/nn.py)."""
    output = np.array([[2.0, 2.0, 2.0], [0.5, 3.0, 1e-9], [4.0, 1e-12, 1e-12]])
    targets = np.eye(3)[[0, 1, 2]]
    scaled = np.clip(output / output.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
    expected = -(targets * np.log(scaled)).sum()
    loss_sum, _ = loss_and_gradient(losses.get("categorical_crossentropy"), cpu, output,
                                    targets, logits=False)
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-12)
    assert loss_sum == pytest.approx(np.log(3) + np.log(3.5 / 3) - np.log(1e-7), rel=1e-9)


def test_fused_crossentropy_equals_reference_and_is_stable(cpu):
    logits = RNG.normal(size=(5, 3))
    targets = _targets(5, 3, sparse=False)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(targets * log_probs).sum()
    loss_sum, _ = loss_and_gradient(losses.get("categorical_crossentropy"), cpu, logits,
                                    targets, logits=True)
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-12)
    huge = np.array([[1000.0, 0.0, -1000.0]])
    loss_sum, grad = loss_and_gradient(losses.get("categorical_crossentropy"), cpu, huge,
                                       np.array([[0.0, 0.0, 1.0]]), logits=True)
    assert np.isfinite(float(loss_sum)) and float(loss_sum) == pytest.approx(2000.0)
    assert np.all(np.isfinite(grad))


def test_dense_layer_gradients_match_finite_differences(cpu):
    layer = Dense(3, activation="tanh")
    layer.build_on((4,), cpu, RNG, np.float64)
    x = RNG.normal(size=(5, 4))
    upstream = RNG.normal(size=(5, 3))

    def objective():
        return float(np.sum(upstream * layer.forward(x)))

    layer.forward(x)
    grad_x = layer.backward(upstream.copy())
    grad_kernel, grad_bias = (g.copy() for g in layer.grads)
    np.testing.assert_allclose(grad_kernel, numerical_gradient(objective, layer.kernel),
                               **TOLERANCE)
    np.testing.assert_allclose(grad_bias, numerical_gradient(objective, layer.bias), **TOLERANCE)
    np.testing.assert_allclose(grad_x, numerical_gradient(objective, x), **TOLERANCE)


def test_first_layer_computes_no_input_gradient(cpu):
    model = dnn.Sequential([Dense(4, activation="relu"), Dense(2, activation="softmax")],
                           backend=cpu, seed=0)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.train_on_batch(RNG.normal(size=(3, 5)), _targets(3, 2, sparse=False))
    assert model.layers[0].needs_input_grad is False
    assert model.layers[1].needs_input_grad is True
    assert model.layers[0].backward(np.ones((3, 4))) is None


@pytest.mark.parametrize("hidden_activation", ["relu", "sigmoid", "tanh"])
def test_two_layer_network_parameter_gradients(cpu, hidden_activation):
    model = dnn.Sequential([Dense(6, activation=hidden_activation),
                            Dense(4, activation="softmax")], dtype="float64", seed=3, backend=cpu)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = RNG.normal(size=(7, 5))
    y = _targets(7, 4, sparse=False)
    model.build(5)
    # Nudge relu pre-activations away from the kink so finite differences are valid there.
    bias = model.layers[0].bias
    bias += 0.05

    def objective():
        return model.test_on_batch(x, y)

    model.compute_gradients(x, y)
    analytic = [g.copy() for layer in model.layers for g in layer.grads]
    for param, grad in zip(model.params, analytic):
        np.testing.assert_allclose(grad, numerical_gradient(objective, param), rtol=1e-5,
                                   atol=1e-8)


class Scale(Layer):
    """A layer written against the Layer protocol alone: ``y = x * s``, one weight per
    feature.  Sequential must train it without knowing it."""

    def build(self, input_shape):
        self.add_weight(input_shape, "ones")

    def forward(self, x, logits=False, training=False):
        self._input = x
        return x * self.params[0]

    def backward(self, grad, logits=False):
        self.grads[0][...] = self._backend.xp.sum(grad * self._input, axis=0)
        return grad * self.params[0] if self.needs_input_grad else None

    def get_config(self):
        return {"class": "Scale"}


def test_a_new_layer_type_trains_in_sequential_unchanged(cpu):
    model = dnn.Sequential([Scale(), Dense(6, activation="tanh"), Scale(),
                            Dense(3, activation="softmax")], dtype="float64", seed=1,
                           backend=cpu)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = RNG.normal(size=(9, 4)), _targets(9, 3, sparse=False)
    model.build(4)
    assert [layer.needs_input_grad for layer in model.layers] == [False, True, True, True]

    def objective():
        return model.test_on_batch(x, y)

    model.compute_gradients(x, y)
    analytic = [g.copy() for layer in model.layers for g in layer.grads]
    assert len(analytic) == len(model.params) == 6
    for param, gradient in zip(model.params, analytic):
        np.testing.assert_allclose(gradient, numerical_gradient(objective, param), rtol=1e-5,
                                   atol=1e-8)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=9, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
