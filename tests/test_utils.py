"""dnn.utils: one-hot targets from labels, the global random seed, and what they refuse."""

import numpy as np
import pytest

import dnn
from dnn import utils
from dnn.errors import UsageError
from dnn.layers import Dense
from dnn.utils import to_categorical


def test_to_categorical_sets_one_column_per_label():
    one_hot = to_categorical(np.array([2, 0, 1, 2]), 4)
    assert one_hot.dtype == np.float32
    np.testing.assert_array_equal(one_hot, np.eye(4, dtype=np.float32)[[2, 0, 1, 2]])
    assert to_categorical([1, 0]).shape == (2, 2)  # classes from the largest label


@pytest.mark.parametrize("labels, num_classes, message", [
    ([0.5, 1.0], None, r"to_categorical wants integer labels \(N,\), not float64 \(2,\)"),
    ([[0, 1], [1, 0]], None, r"to_categorical wants integer labels \(N,\), not int64 \(2, 2\)"),
    ([0, 2], 2, r"labels must lie in \[0, 2\), not \[0, 2\]"),
    ([-1, 1], None, r"labels must lie in \[0, 2\), not \[-1, 1\]"),
    ([0, 1], 2.5, "num_classes must be a positive integer, not 2.5"),
    ([0, 1], 0, "num_classes must be a positive integer, not 0"),
])
def test_to_categorical_refuses_what_is_not_labels(labels, num_classes, message):
    with pytest.raises(UsageError, match=message):
        to_categorical(np.asarray(labels), num_classes)


@pytest.fixture
def seed_stream(monkeypatch):
    """set_random_seed's stream as it was before the test, afterwards."""
    monkeypatch.setattr(utils, "_model_seeds", None)


def _two_unseeded_models() -> list:
    models = [dnn.Sequential([Dense(3)]) for _ in range(2)]
    for model in models:
        model.build(4)
    return [model.get_weights()[0] for model in models]


def test_set_random_seed_makes_unseeded_models_repeat_and_differ(seed_stream):
    utils.set_random_seed(7)
    first = _two_unseeded_models()
    drawn = np.random.rand(3)
    utils.set_random_seed(7)
    second = _two_unseeded_models()
    np.testing.assert_array_equal(np.random.rand(3), drawn)  # NumPy's global generator too
    for before, again in zip(first, second):
        np.testing.assert_array_equal(before, again)
    assert not np.array_equal(first[0], first[1])  # each model takes its own seed


def test_a_model_given_a_seed_ignores_set_random_seed(seed_stream):
    def kernel():
        model = dnn.Sequential([Dense(3)], seed=3)
        model.build(4)
        return model.get_weights()[0]

    before = kernel()
    utils.set_random_seed(7)
    np.testing.assert_array_equal(kernel(), before)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True, None])
def test_set_random_seed_refuses_what_is_not_a_32_bit_seed(seed, seed_stream):
    with pytest.raises(UsageError, match=r"seed must be an integer from 0 to 2\*\*32 - 1"):
        utils.set_random_seed(seed)
    assert utils._model_seeds is None
