"""The cross-backend equivalence suite: every activation, every loss and a multi-step run of the
seed network on each installed backend, against the cpu backend, within the float32 and float64
tolerances of :data:`dnn.testing.TOLERANCE`; results must be the backend's own arrays, in the
dtype asked for.  (Kernels and optimizer steps: ``dnn.testing.check_backend``, run on every
backend by tests/test_backends.py.)"""

import numpy as np
import pytest

import dnn
from dnn import activations, backends, losses
from dnn.layers import Dense
from dnn.testing import assert_matches_cpu
from dnn.utils import to_categorical

DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_activations_match_cpu(other_backend, name, dtype):
    rng = np.random.default_rng(1)
    z, grad = (rng.normal(scale=3.0, size=(16, 7)).astype(dtype) for _ in range(2))
    activation = activations.get(name)
    cpu = backends.get_backend("cpu")
    reference = activation.forward(cpu, z.copy(), {})
    ours = activation.forward(other_backend, other_backend.asarray(z.copy()), {})
    assert_matches_cpu(other_backend, f"{name} forward", ours, reference, dtype)
    reference_grad = activation.backward(cpu, grad.copy(), reference, {})
    ours_grad = activation.backward(other_backend, other_backend.asarray(grad.copy()), ours, {})
    assert_matches_cpu(other_backend, f"{name} backward", ours_grad, reference_grad, dtype)


LOSS_CASES = [("categorical_crossentropy", False), ("categorical_crossentropy", True),
              ("sparse_categorical_crossentropy", False),
              ("sparse_categorical_crossentropy", True), ("mean_squared_error", False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, logits", LOSS_CASES)
def test_losses_match_cpu(other_backend, name, logits, dtype):
    rng = np.random.default_rng(2)
    scores = rng.normal(scale=2.0, size=(12, 5)).astype(dtype)
    output = scores if logits else activations.get("softmax").forward(
        backends.get_backend("cpu"), scores, {})
    labels = rng.integers(0, 5, size=12)
    loss = losses.get(name)
    targets = labels if loss.sparse else to_categorical(labels, 5, dtype)
    cpu_sum, cpu_grad = loss.compute(backends.get_backend("cpu"), output.copy(), targets, {},
                                     logits=logits)
    our_sum, our_grad = loss.compute(other_backend, other_backend.asarray(output.copy()),
                                     other_backend.asarray(targets), {}, logits=logits)
    assert_matches_cpu(other_backend, f"{name} loss", our_sum, cpu_sum, dtype)
    assert_matches_cpu(other_backend, f"{name} gradient", our_grad, cpu_grad, dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NaN and inf logits, on purpose
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_crossentropy_of_awkward_logits_matches_cpu(other_backend, dtype):
    """Ties, a NaN logit, an infinite one and logits far from zero, NaN where cpu has NaN."""
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(8, 5)).astype(dtype)
    logits[0] = 1.0
    logits[1, 2] = np.nan
    logits[2, 3] = np.inf
    logits[3] += 1e4
    targets = to_categorical(rng.integers(0, 5, size=8), 5, dtype)
    cpu = backends.get_backend("cpu")
    cpu_sum, cpu_grad = cpu.softmax_crossentropy(logits.copy(), targets, {})
    our_sum, our_grad = other_backend.softmax_crossentropy(other_backend.asarray(logits),
                                                           other_backend.asarray(targets), {})
    assert np.isnan(cpu_grad[1]).all() and np.isfinite(cpu_grad[3]).all()
    assert_matches_cpu(other_backend, "softmax_crossentropy loss", our_sum, cpu_sum, dtype)
    assert_matches_cpu(other_backend, "softmax_crossentropy grad", our_grad, cpu_grad, dtype)


@pytest.mark.parametrize("targets_as", ["one-hot", "labels"])
def test_correct_count_matches_cpu(other_backend, targets_as):
    """numpy.argmax's rule on every backend: ties go to the first index, NaN wins."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, size=64)
    output = rng.normal(size=(64, 5)).astype("float32") + 3 * to_categorical(labels, 5)
    output[:6] = 1.0  # ties
    output[6:10, 3] = np.nan
    targets = labels if targets_as == "labels" else to_categorical(labels, 5)
    expected = int(backends.get_backend("cpu").correct_count(output, targets))
    ours = other_backend.correct_count(other_backend.asarray(output),
                                       other_backend.asarray(targets))
    assert 30 < expected < 64
    assert int(other_backend.to_numpy(ours)) == expected


def test_seed_network_trains_alike_step_by_step(other_backend):
    """784-512-10, relu/softmax, RMSprop, batch 128, same seed: the same losses and weights
    after several steps (MNIST-like data: mostly zeros, the rest in [0, 1], and edge pixels
    zero in every image, which the cpu backend leaves out of its products)."""
    rng = np.random.default_rng(3)
    x = rng.random((512, 784), dtype=np.float32) * (rng.random((512, 784)) < 0.2)
    x[:, :150] = x[:, -150:] = 0.0
    y = to_categorical(rng.integers(0, 10, size=512), 10)
    runs = []
    for backend in (backends.get_backend("cpu"), other_backend):
        model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                               seed=0, backend=backend)
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        history = model.fit(x, y, epochs=2, batch_size=128)
        runs.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for ours, reference in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
