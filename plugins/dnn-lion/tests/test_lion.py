import numpy as np

from dnn import optimizers, plugins, testing
from dnn_lion import Lion


def test_lion_passes_the_conformance_kit():
    testing.check_optimizer(Lion)


def test_lion_first_steps_by_hand():
    cpu = __import__("dnn").get_backend("cpu")
    param = np.array([1.0, -2.0])
    opt = Lion(learning_rate=0.1, weight_decay=0.5)
    opt.build([param], cpu)
    m = np.zeros(2)
    expected = param.copy()
    for grad in (np.array([0.5, -0.25]), np.array([-1.0, 0.1])):
        c = 0.9 * m + 0.1 * grad
        expected = expected - 0.1 * (np.sign(c) + 0.5 * expected)
        m = 0.99 * m + 0.01 * grad
        opt.apply_gradients([param], [grad.copy()])
        np.testing.assert_allclose(param, expected, rtol=1e-12)


def test_lion_is_registered():
    assert plugins.find("optimizer", "lion").distribution == "dnn-lion"
    assert isinstance(optimizers.get("lion", learning_rate=0.01), Lion)
