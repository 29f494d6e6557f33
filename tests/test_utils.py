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


# Keras 3.15.1's pad_sequences of these sequences, for each set of arguments
SEQUENCES = [[1], [2, 3], [4, 5, 6], [], [7, 8, 9, 10]]
KERAS_PADDED = [
    ({}, [[0, 0, 0, 1], [0, 0, 2, 3], [0, 4, 5, 6], [0, 0, 0, 0], [7, 8, 9, 10]]),
    ({"maxlen": 3}, [[0, 0, 1], [0, 2, 3], [4, 5, 6], [0, 0, 0], [8, 9, 10]]),
    ({"maxlen": 3, "padding": "post", "truncating": "post"},
     [[1, 0, 0], [2, 3, 0], [4, 5, 6], [0, 0, 0], [7, 8, 9]]),
    ({"maxlen": 5, "value": -1, "truncating": "post"},
     [[-1, -1, -1, -1, 1], [-1, -1, -1, 2, 3], [-1, -1, 4, 5, 6], [-1, -1, -1, -1, -1],
      [-1, 7, 8, 9, 10]]),
    ({"dtype": "float32", "value": 0.5, "maxlen": 2},
     [[0.5, 1.0], [2.0, 3.0], [5.0, 6.0], [0.5, 0.5], [9.0, 10.0]]),
]


@pytest.mark.parametrize("arguments, expected", KERAS_PADDED)
def test_pad_sequences_pads_and_cuts_as_keras(arguments, expected):
    padded = dnn.utils.pad_sequences(SEQUENCES, **arguments)
    assert padded.dtype == np.dtype(arguments.get("dtype", "int32"))
    assert padded.tolist() == expected
    as_arrays = dnn.utils.pad_sequences([np.array(s, np.int64) for s in SEQUENCES], **arguments)
    np.testing.assert_array_equal(as_arrays, padded)


def test_pad_sequences_keeps_the_shape_of_each_item():
    padded = dnn.utils.pad_sequences([np.ones((2, 3)), np.full((1, 3), 2.0)], maxlen=3,
                                     dtype="float32")
    assert padded.shape == (2, 3, 3)
    np.testing.assert_array_equal(padded[1], [[0, 0, 0], [0, 0, 0], [2, 2, 2]])


@pytest.mark.parametrize("call, message", [
    (lambda: dnn.utils.pad_sequences(SEQUENCES, padding="both"),
     "pad_sequences padding must be 'pre' or 'post', not 'both'"),
    (lambda: dnn.utils.pad_sequences(SEQUENCES, maxlen=0),
     "pad_sequences maxlen must be a positive integer, not 0"),
    (lambda: dnn.utils.pad_sequences([[1], 2]),
     "pad_sequences takes a list of sequences; item 1 is 2"),
    (lambda: dnn.utils.pad_sequences(SEQUENCES, value="x"),
     "pad_sequences value 'x' is a string: give dtype=object, not int32"),
    (lambda: dnn.utils.pad_sequences([[1, "a"]]),
     "pad_sequences: sequence 0 holds values that are not int32 numbers"),
    (lambda: dnn.utils.pad_sequences([np.ones((2, 3)), np.ones((2, 4))]),
     r"the items of sequence 1 have shape \(4,\), those of the first \(3,\)"),
], ids=["padding", "maxlen", "not-a-sequence", "string-value", "strings", "item-shapes"])
def test_what_pad_sequences_cannot_take_is_one_clear_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()
