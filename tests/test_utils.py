"""dnn.utils: one-hot targets from labels, and what it refuses."""

import numpy as np
import pytest

from dnn.errors import UsageError
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
