"""Each built-in optimizer's first steps against values worked out by hand from its formula,
and the cpu backend's in-place kernels against the generic kernels they override."""

import math

import numpy as np
import pytest

from dnn import optimizers
from dnn.errors import OptimizerError, UsageError

def run_steps(optimizer, backend, param, grads):
    """Apply ``grads`` one step each to a copy of ``param``; return every intermediate value."""
    param = np.array(param, dtype=np.float64)
    optimizer.build([param], backend)
    values = []
    for grad in grads:
        optimizer.apply_gradients([param], [np.array(grad, dtype=np.float64)])
        values.append(param.copy())
    return values


def test_rmsprop_keras_documented_example(cpu):
    # Keras' RMSprop docstring: var1 = 10.0, loss = var1**2 / 2 (gradient 10), lr 0.1.
    (value,) = run_steps(optimizers.RMSprop(learning_rate=0.1), cpu, [10.0], [[10.0]])
    assert value[0] == pytest.approx(9.683772, abs=1e-6)


def test_rmsprop_two_steps_by_hand(cpu):
    lr, rho, eps = 0.01, 0.9, 1e-7
    g1, g2 = 0.5, -2.0
    v1 = (1 - rho) * g1**2
    p1 = 1.0 - lr * g1 / math.sqrt(v1 + eps)
    v2 = rho * v1 + (1 - rho) * g2**2
    p2 = p1 - lr * g2 / math.sqrt(v2 + eps)
    values = run_steps(optimizers.RMSprop(learning_rate=lr), cpu, [1.0], [[g1], [g2]])
    assert [v[0] for v in values] == pytest.approx([p1, p2], rel=1e-12)


def test_rmsprop_centered_with_momentum_by_hand(cpu):
    lr, rho, mom, eps = 0.01, 0.9, 0.5, 1e-7
    g1, g2 = 0.5, 0.25
    ms, mg, buf, p = 0.0, 0.0, 0.0, 1.0
    expected = []
    for g in (g1, g2):
        ms = rho * ms + (1 - rho) * g * g
        mg = rho * mg + (1 - rho) * g
        buf = mom * buf + lr * g / math.sqrt(ms - mg * mg + eps)
        p -= buf
        expected.append(p)
    opt = optimizers.RMSprop(learning_rate=lr, rho=rho, momentum=mom, centered=True)
    values = run_steps(opt, cpu, [1.0], [[g1], [g2]])
    assert [v[0] for v in values] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_by_hand(cpu, nesterov):
    lr, mom = 0.1, 0.9
    velocity, p, expected = 0.0, 2.0, []
    for g in (1.0, -0.5, 0.25):
        velocity = mom * velocity - lr * g
        p += mom * velocity - lr * g if nesterov else velocity
        expected.append(p)
    opt = optimizers.SGD(learning_rate=lr, momentum=mom, nesterov=nesterov)
    values = run_steps(opt, cpu, [2.0], [[1.0], [-0.5], [0.25]])
    assert [v[0] for v in values] == pytest.approx(expected, rel=1e-12)


def test_plain_sgd_by_hand(cpu):
    values = run_steps(optimizers.SGD(learning_rate=0.1), cpu, [1.0, -1.0], [[2.0, 4.0]])
    np.testing.assert_allclose(values[0], [0.8, -1.4], rtol=1e-12)


def test_adam_first_steps_by_hand(cpu):
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-7
    m = v = 0.0
    p, expected = 1.0, []
    for t, g in enumerate((0.3, -0.1), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        # Keras folds the bias corrections into the step: eps is scaled by them too.
        p -= lr * m_hat / (math.sqrt(v_hat) + eps / math.sqrt(1 - b2**t))
        expected.append(p)
    values = run_steps(optimizers.Adam(), cpu, [1.0], [[0.3], [-0.1]])
    assert [v[0] for v in values] == pytest.approx(expected, rel=1e-9)


OPTIMIZER_CASES = [
    optimizers.SGD, lambda: optimizers.SGD(momentum=0.9),
    lambda: optimizers.SGD(momentum=0.9, nesterov=True), optimizers.RMSprop,
    lambda: optimizers.RMSprop(momentum=0.5, centered=True), optimizers.Adam,
    lambda: optimizers.Adam(amsgrad=True),
]


@pytest.mark.parametrize("make", OPTIMIZER_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_kernels_reproduce_generic_kernels_bit_for_bit(cpu, generic, make, dtype):
    rng = np.random.default_rng(7)
    start = rng.normal(size=(8, 3)).astype(dtype)
    grads = [rng.normal(size=(8, 3)).astype(dtype) for _ in range(3)]
    results = []
    for backend in (cpu, generic):
        param = start.copy()
        optimizer = make()
        optimizer.build([param], backend)
        for grad in grads:
            optimizer.apply_gradients([param], [grad])
        assert param.dtype == dtype
        results.append(param)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name, kwargs, message", [
    ("RMSprop", {"learning_rate": -0.1}, "learning_rate must be a finite number >= 0"),
    ("RMSprop", {"learning_rate": float("nan")}, "learning_rate must be a finite number >= 0"),
    ("RMSprop", {"rho": 1.5}, "rho must be below 1"),
    ("RMSprop", {"epsilon": float("inf")}, "epsilon must be a finite number >= 0"),
    ("RMSprop", {"epsilon": 0.0}, "epsilon must be above 0"),
    ("Adam", {"epsilon": 0.0}, "epsilon must be above 0"),
    ("SGD", {"momentum": 1.5}, "SGD momentum must be between 0 and 1, not 1.5"),
    ("Adam", {"beta_2": 1.0}, "Adam beta_2 must be below 1, not 1.0"),
    ("Adam", {"beta_1": 1.0}, "Adam beta_1 must be below 1, not 1.0"),
    ("Adam", {"learning_rate": 10**400}, r"Adam learning_rate must be a finite number >= 0, "
                                         r"not an integer of about 10\*\*400$"),
    ("SGD", {"momentum": 0.9, "nesterov": "no"}, "^SGD nesterov must be True or False, not 'no'$"),
    ("SGD", {"nesterov": 2}, "^SGD nesterov must be True or False, not 2$"),
    ("SGD", {"nesterov": np.array([True, False])}, r"^SGD nesterov must be True or False, not "
                                                    r"array\(\[ True, False\]\)$"),
    ("RMSprop", {"centered": "yes"}, "^RMSprop centered must be True or False, not 'yes'$"),
    ("Adam", {"amsgrad": None}, "^Adam amsgrad must be True or False, not None$"),
    ("Adam", {"learning_rate": "0.1"}, "Adam learning_rate must be a number, not '0.1'"),
    ("SGD", {"momentum": None}, "SGD momentum must be a number, not None"),
    ("RMSprop", {"rho": True}, "RMSprop rho must be a number, not True"),
])
def test_bad_hyperparameters_are_refused(name, kwargs, message):
    with pytest.raises(UsageError, match=message):
        getattr(optimizers, name)(**kwargs)


def test_hyperparameters_set_after_the_base_init_are_checked_when_built(cpu):
    class Momentum(optimizers.Optimizer):  # Keras' order: the base first, then its own
        def __init__(self, learning_rate=0.01, momentum=0.5):
            super().__init__(learning_rate)
            self.momentum = momentum

        def update(self, param, grad, state):
            param -= self.learning_rate * grad

    params = [cpu.asarray(np.ones(3, np.float32))]
    Momentum(momentum=0.9).build(params, cpu)
    with pytest.raises(UsageError, match="Momentum momentum must be a finite number >= 0, "
                                         "not -1.0"):
        Momentum(momentum=-1.0).build(params, cpu)


def test_numpy_scalars_are_numbers():
    assert optimizers.Adam(learning_rate=np.float32(0.01)).learning_rate == np.float32(0.01)


def test_get_by_name_and_unknown_name():
    assert isinstance(optimizers.get("adam", learning_rate=0.5), optimizers.Adam)
    with pytest.raises(UsageError, match=r"not the class Adam: call it, Adam\(\)"):
        optimizers.get(optimizers.Adam)
    with pytest.raises(UsageError, match="installed: adam, .*rmsprop, sgd"):
        optimizers.get("lamb")


def test_an_optimizer_class_used_without_a_plugin_is_named_by_its_class(cpu):
    class Stepless(optimizers.Optimizer):
        def update(self, param, grad, state):
            return param - grad

    import dnn
    from dnn.layers import Dense

    model = dnn.Sequential([Dense(2)], backend=cpu)
    model.compile(optimizer=Stepless(), loss="mse")
    with pytest.raises(OptimizerError, match=r"^optimizer class .*Stepless: update\(\) returned a "
                                             r"new array; it must change param"):
        model.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))


@pytest.mark.parametrize("name", ["RMSprop", "Adam"])
def test_an_epsilon_the_weights_dtype_rounds_away_is_refused(cpu, name):
    import dnn
    from dnn.layers import Dense

    x, y = np.ones((4, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    model = dnn.Sequential([Dense(2, activation="softmax")], backend=cpu)
    model.compile(optimizer=getattr(optimizers, name)(epsilon=1e-50))
    with pytest.raises(UsageError, match=f"{name} epsilon 1e-50 is below the smallest normal "
                                         r"number of the weights' dtype \(1.18e-38\)"):
        model.fit(x, y)
    in_float64 = dnn.Sequential([Dense(2, activation="softmax")], dtype="float64", backend=cpu)
    in_float64.compile(optimizer=getattr(optimizers, name)(epsilon=1e-50))
    assert np.isfinite(in_float64.fit(x, y, epochs=3).history["loss"]).all()


class Rebinds(optimizers.SGD):
    """The planted bug: ``param = param - step`` rebinds the name; the weights never move."""

    def update(self, param, grad, state):
        param = param - self.learning_rate * grad  # noqa: F841


def first_step(optimizer, dtype=np.float32, backend=None):
    """A model of zero biases and small kernels, fitted for one step of ``optimizer``; its
    weights before and after."""
    import dnn
    from dnn.layers import Dense

    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6)).astype(dtype)
    y = np.eye(3, dtype=dtype)[rng.integers(0, 3, size=32)]
    model = dnn.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                           dtype=dtype, seed=0, backend=backend)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    model.build(6)
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return before, model.get_weights()


@pytest.mark.parametrize("make", OPTIMIZER_CASES)
@pytest.mark.parametrize("rate", [0.0, 1e-45, 1e-30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rate_that_moves_nothing_is_no_broken_contract(cpu, make, rate, dtype):
    """Keras allows a learning rate of 0 (a frozen run, to measure a loss); one so small that
    every step rounds away, or underflows to a subnormal, proves nothing either."""
    optimizer = make()
    optimizer.learning_rate = rate
    before, after = first_step(optimizer, dtype, cpu)
    if rate == 0:
        for old, new in zip(before, after):
            np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("rate", [0.01, 1e-4])
def test_an_update_that_rebinds_param_is_still_caught_at_a_normal_rate(cpu, rate):
    with pytest.raises(OptimizerError, match=r"update\(\) left every parameter as it was: "
                                             r"change param in place"):
        first_step(Rebinds(learning_rate=rate), backend=cpu)


def test_the_first_step_check_judges_each_element_by_its_own_dtype(cpu):
    """A step of rate * min(1, |grad|): a float32 1.0 does not move by 1e-9, a 1e-3 does;
    gradients of zero, and steps below the smallest normal number, move nothing."""
    from dnn.optimizers.base import _left_alone

    rate = np.asarray(1e-9, np.float32)
    ones, small = np.ones(4, np.float32), np.full(4, 1e-3, np.float32)
    grad = np.full(4, 0.5, np.float32)
    assert not _left_alone(np, [ones], [grad], [ones.copy()], rate)
    assert _left_alone(np, [small], [grad], [small.copy()], rate)
    assert not _left_alone(np, [small], [np.zeros(4, np.float32)], [small.copy()], rate)
    zeros = np.zeros(4, np.float32)
    tiny = np.asarray(1e-39, np.float32)  # subnormal in float32
    assert not _left_alone(np, [zeros], [grad], [zeros.copy()], tiny)
    assert _left_alone(np, [zeros.astype(np.float64)], [grad.astype(np.float64)],
                       [zeros.astype(np.float64)], np.asarray(1e-39))


def built(optimizer, backend, dtype=np.float32):
    """``optimizer`` built for one weight of three ``dtype`` elements on ``backend``."""
    optimizer.build([backend.asarray(np.ones(3, dtype))], backend)
    return optimizer


@pytest.mark.parametrize("make, name, value, message", [
    (lambda: optimizers.SGD(momentum=0.9), "nesterov", "no",
     "SGD nesterov must be True or False, not 'no'"),
    (lambda: optimizers.SGD(momentum=0.9), "momentum", 5.0,
     "SGD momentum must be between 0 and 1, not 5.0"),
    (optimizers.RMSprop, "epsilon", 0.0, "RMSprop epsilon must be above 0"),
    (optimizers.RMSprop, "epsilon", 1e-50,
     r"RMSprop epsilon 1e-50 is below the smallest normal number of the weights' dtype"),
    (optimizers.RMSprop, "rho", 1.5, "RMSprop rho must be below 1, not 1.5"),
    (optimizers.RMSprop, "centered", "yes", "RMSprop centered must be True or False"),
    (optimizers.Adam, "epsilon", 0.0, "Adam epsilon must be above 0"),
    (optimizers.Adam, "beta_1", 1.0, "Adam beta_1 must be below 1, not 1.0"),
    (optimizers.Adam, "learning_rate", 10**400,
     r"Adam learning_rate must be a finite number >= 0, not an integer of about 10\*\*400$"),
    (optimizers.Adam, "amsgrad", 2, "Adam amsgrad must be True or False, not 2"),
], ids=lambda value: "10**400" if value == 10**400 else None)
def test_a_setting_set_once_built_is_checked_as_when_made(cpu, make, name, value, message):
    """A callback's value went unchecked (SGD momentum 5.0, epsilon 0, ...): the same checks
    as at construction, and the setting keeps its value."""
    optimizer = built(make(), cpu)
    before = optimizer.get_config()[name]
    changes = optimizer.host_settings_changes
    with pytest.raises(UsageError, match=f"^{message}"):
        setattr(optimizer, name, value)
    assert optimizer.get_config()[name] == before
    assert optimizer.host_settings_changes == changes


@pytest.mark.parametrize("make, name, value", [
    (optimizers.SGD, "momentum", 0.9),
    (optimizers.RMSprop, "momentum", 0.5),
    (optimizers.RMSprop, "centered", True),
    (lambda: optimizers.RMSprop(centered=True), "centered", False),
    (optimizers.Adam, "amsgrad", True),
    (lambda: optimizers.Adam(amsgrad=True), "amsgrad", False),
])
def test_a_setting_that_decides_the_built_state_cannot_change_once_built(cpu, make, name,
                                                                       value):
    """The state is made at build from these settings: a change afterwards was silently
    ignored (the same losses to the bit).  Refused, saying to give it when making it."""
    optimizer = make()
    setattr(optimizer, name, value)  # before the build: the build makes the state for it
    setattr(optimizer, name, make().get_config()[name])
    optimizer = built(optimizer, cpu)
    with pytest.raises(UsageError, match=f"^{type(optimizer).__name__} {name} decides the state "
                                         "made when the optimizer is built: give "
                                         f"{name}={value!r} when making it$"):
        setattr(optimizer, name, value)


def test_a_momentum_change_that_keeps_the_state_works_once_built(cpu):
    """0.5 -> 0.9 keeps the velocity made at build, as does 0.9 -> 0 (a velocity that is the
    plain step) and back: each step follows the momentum of its time."""
    lr, p, velocity, expected = 0.1, 2.0, 0.0, []
    schedule = ((0.5, 1.0), (0.9, -0.5), (0.0, 0.25), (0.9, 1.0))
    for mom, g in schedule:
        velocity = mom * velocity - lr * g
        p += velocity
        expected.append(p)
    optimizer, param, values = optimizers.SGD(learning_rate=lr, momentum=0.5), np.array([2.0]), []
    optimizer.build([param], cpu)
    for mom, g in schedule:
        optimizer.momentum = mom
        optimizer.apply_gradients([param], [np.array([g])])
        values.append(param[0])
    assert values == pytest.approx(expected, rel=1e-12)
    rmsprop = built(optimizers.RMSprop(momentum=0.5), cpu)
    rmsprop.momentum = 0.0
    rmsprop.momentum = 0.9
    assert rmsprop.get_config()["momentum"] == 0.9


def test_bool_settings_take_numpy_bools_and_0_or_1_as_python_bools(cpu):
    """As Keras takes them (SGD(nesterov=1) is Nesterov there too)."""
    assert optimizers.SGD(momentum=0.9, nesterov=1).get_config()["nesterov"] is True
    assert optimizers.RMSprop(centered=0).centered is False
    optimizer = optimizers.SGD(momentum=0.9, nesterov=np.bool_(True))
    assert type(optimizer.nesterov) is bool
    built(optimizer, cpu)
    optimizer.nesterov = np.bool_(False)
    assert optimizer.nesterov is False and optimizer.host_settings_changes == 1
    optimizer.nesterov = False
    assert optimizer.host_settings_changes == 1


def test_a_plugin_s_settings_are_checked_by_their_default_s_type_and_its_own_check(cpu):
    """A string, None or int setting of a plugin is not refused for its type; a bool one must
    be True or False; the plugin's check_setting runs when made and when set once built."""

    class Lion(optimizers.Optimizer):
        def __init__(self, learning_rate=0.01, mode="sign", clip=None, warmup=10,
                     decoupled=False, beta=0.9):
            self.mode, self.clip, self.warmup = mode, clip, warmup
            self.decoupled, self.beta = decoupled, beta
            super().__init__(learning_rate)

        def check_setting(self, name, value):
            if name == "mode" and value not in ("sign", "tanh"):
                raise UsageError(f"Lion mode must be 'sign' or 'tanh', not {value!r}")

        def update(self, param, grad, state):
            param -= self.learning_rate * self.xp.sign(grad)

    optimizer = built(Lion(mode="tanh", clip="norm", warmup=3), cpu)
    optimizer.clip, optimizer.warmup, optimizer.decoupled = 1.5, 5, True
    assert optimizer.host_settings_changes == 3
    with pytest.raises(UsageError, match="^Lion decoupled must be True or False, not 'yes'$"):
        optimizer.decoupled = "yes"
    with pytest.raises(UsageError, match="^Lion mode must be 'sign' or 'tanh', not 'cos'$"):
        optimizer.mode = "cos"
    with pytest.raises(UsageError, match="^Lion mode must be 'sign' or 'tanh', not 'cos'$"):
        Lion(mode="cos")
    with pytest.raises(UsageError, match="^Lion decoupled must be True or False, not 2$"):
        Lion(decoupled=2)


def test_amsgrad_steps_by_hand(cpu):
    """Keras' AMSGrad: v_hat = max(v_hat, v) takes v's place in the step; a big gradient then
    small ones, so that v falls below its maximum."""
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 1e-7
    m = v = v_hat = 0.0
    p, expected, grads = 1.0, [], (3.0, 0.1, -0.2)
    for t, g in enumerate(grads, start=1):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        v_hat = max(v_hat, v)
        p -= lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v_hat) + eps)
        expected.append(p)
    optimizer = optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, amsgrad=True)
    values = run_steps(optimizer, cpu, [1.0], [[g] for g in grads])
    assert [value[0] for value in values] == pytest.approx(expected, rel=1e-12)
    plain = run_steps(optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2), cpu, [1.0],
                      [[g] for g in grads])
    assert plain[2][0] != pytest.approx(expected[2], rel=1e-6)  # v_hat made a difference
