import numpy as np
import pytest

from dnn import Sequential, backends, testing
from dnn.layers import Dense
from dnn.utils import to_categorical
from dnn_array_api_strict import StrictBackend


def test_strict_backend_passes_the_conformance_kit():
    testing.check_backend(StrictBackend)


def test_seed_network_losses_match_cpu_step_by_step():
    rng = np.random.default_rng(0)
    x = rng.random((512, 784), dtype=np.float32)
    y = to_categorical(rng.integers(0, 10, size=512), 10)
    losses = {}
    for name in ("cpu", "strict"):
        model = Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=name)
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        losses[name] = [model.train_on_batch(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]
    np.testing.assert_allclose(losses["strict"], losses["cpu"], rtol=1e-5)


def test_strict_refuses_numpy_idioms():
    strict = backends.get_backend("strict")
    array = strict.asarray(np.ones((2, 2), np.float32))
    with pytest.raises(AttributeError):
        array.sum()  # a NumPy method, not the standard's xp.sum(array)
    with pytest.raises(TypeError):
        array + strict.xp.asarray([1, 2])  # float + int arrays: NumPy promotes, the standard refuses
