"""Keras' learning-rate schedules (dnn.optimizers.schedules) against their formulas computed
here in float64, on Python numbers and on 0-d arrays (their dtype kept, never read on the host:
a captured training step evaluates them); their serialization; the LearningRateScheduler and
ReduceLROnPlateau callbacks' decisions; and training with each, which replays as it runs
eagerly and as the cpu backend trains."""

import json
import math
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

from dnn import callbacks
from dnn.errors import ArgumentTypeError, CaptureError, UsageError
from dnn.optimizers import SGD, Adam, schedules
from dnn.optimizers.schedules import (CosineDecay, ExponentialDecay, InverseTimeDecay,
                                      LearningRateSchedule, PiecewiseConstantDecay)
from dnn.replay import ReplayBackend
from dnn.trainers.step import GraphFallbackWarning
from tests.test_replay import EagerReplayBackend, assert_same_run, train


# -- Keras' formulas, in float64 ------------------------------------------------------------------
def exponential(step, initial, decay_steps, rate, staircase=False):
    progress = step / decay_steps
    return initial * rate ** (math.floor(progress) if staircase else progress)


def piecewise(step, boundaries, values):
    for boundary, value in zip(boundaries, values):
        if step <= boundary:
            return value
    return values[-1]


def cosine(step, initial, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    if warmup_target is None:
        start, decay_step = initial, step
    elif step < warmup_steps:
        return initial + (warmup_target - initial) * step / warmup_steps
    else:
        start, decay_step = warmup_target, step - warmup_steps
    fraction = min(decay_step, decay_steps) / decay_steps
    return start * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)


def inverse_time(step, initial, decay_steps, rate, staircase=False):
    progress = step / decay_steps
    return initial / (1 + rate * (math.floor(progress) if staircase else progress))


CASES = {  # id: (class, formula, positional and keyword arguments, steps around each boundary)
    "exponential": (ExponentialDecay, exponential, (0.1, 10, 0.5), {},
                    [0, 1, 5, 9, 10, 11, 25, 100]),
    "exponential-staircase": (ExponentialDecay, exponential, (0.1, 10, 0.5),
                              {"staircase": True}, [0, 9, 10, 19, 20, 21, 55]),
    "piecewise": (PiecewiseConstantDecay, piecewise, ([10, 20], [0.1, 0.05, 0.01]), {},
                  [0, 9, 10, 11, 19, 20, 21, 1000]),
    "piecewise-one-boundary": (PiecewiseConstantDecay, piecewise, ([3], [1, 0.5]), {},
                               [0, 3, 4]),
    "cosine": (CosineDecay, cosine, (0.1, 20), {"alpha": 0.1}, [0, 1, 10, 19, 20, 21, 500]),
    "cosine-warmup": (CosineDecay, cosine, (0.0, 20),
                      {"warmup_target": 0.1, "warmup_steps": 5},
                      [0, 1, 4, 5, 6, 15, 24, 25, 26, 100]),
    "cosine-warmup-of-0-steps": (CosineDecay, cosine, (0.1, 20), {"warmup_target": 0.2},
                                 [0, 10, 20, 30]),
    "inverse-time": (InverseTimeDecay, inverse_time, (0.1, 5, 0.5), {}, [0, 1, 4, 5, 6, 50]),
    "inverse-time-staircase": (InverseTimeDecay, inverse_time, (0.1, 5, 0.5),
                               {"staircase": True}, [0, 4, 5, 9, 10, 11]),
}


def case(name):
    """``(schedule, its formula of one step, steps)``."""
    cls, formula, arguments, keywords, steps = CASES[name]
    return (cls(*arguments, **keywords), lambda step: formula(step, *arguments, **keywords),
            steps)


@pytest.mark.parametrize("name", CASES)
def test_a_number_gives_the_formulas_float(name):
    schedule, formula, steps = case(name)
    for step in steps:
        for given in (step, float(step)):
            rate = schedule(given)
            assert type(rate) is float
            assert rate == pytest.approx(formula(step), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("name", CASES)
def test_a_0d_array_gives_a_0d_array_of_its_dtype(name, dtype, rtol):
    """Computed in the step's dtype, as Keras computes in float32: the cosine's ``1 + cos``
    loses digits near its end, hence the absolute tolerance (1e-6 of the rates' scale)."""
    schedule, formula, steps = case(name)
    for step in steps:
        for given in (np.asarray(step, dtype=dtype), dtype(step)):  # NumPy's scalars too
            rate = schedule(given)
            assert isinstance(rate, np.ndarray) and rate.shape == () and rate.dtype == dtype
            np.testing.assert_allclose(rate, formula(step), rtol=rtol, atol=rtol * 0.1)


@pytest.mark.parametrize("name", CASES)
def test_an_array_api_array_gives_an_array_of_its_own_namespace(name):
    xp = pytest.importorskip("array_api_strict")
    schedule, formula, steps = case(name)
    for step in steps:
        rate = schedule(xp.asarray(step, dtype=xp.float32))
        assert isinstance(rate, type(xp.asarray(0.0))) and rate.shape == ()
        assert rate.dtype == xp.float32
        assert float(rate) == pytest.approx(formula(step), rel=1e-6, abs=1e-7)


class HasNoNamespace(np.ndarray):
    """As CuPy 14's arrays: no ``__array_namespace__``."""

    @property
    def __array_namespace__(self):
        raise AttributeError("CuPy's arrays have no __array_namespace__")


def test_cupys_arrays_are_computed_with_the_gpu_backends_namespace(monkeypatch):
    """Without array-api-compat, that is CuPy itself (here NumPy standing in for it, which
    notes what it is asked for)."""
    asked = []

    class StandInCupy:
        ndarray = HasNoNamespace

        def __getattr__(self, name):
            asked.append(name)
            return getattr(np, name)

    monkeypatch.setitem(sys.modules, "cupy", StandInCupy())
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", None)  # an ImportError
    schedule, formula, _ = case("cosine-warmup")
    rate = schedule(np.asarray(3, dtype=np.float32).view(HasNoNamespace))
    assert rate.shape == () and rate.dtype == np.float32
    assert float(rate) == pytest.approx(formula(3), rel=1e-6)
    assert {"minimum", "where", "cos"} <= set(asked)


@pytest.mark.parametrize("name", CASES)
def test_a_captured_schedule_reads_nothing_on_the_host_and_replays_for_every_step(name):
    """Captured once at the first step (as a CUDA graph is), then replayed for steps in every
    other branch of the formula: each replay gives that step's rate, bit for bit as the eager
    call on the same backend does (a Python branch taken at capture would keep its
    answer)."""
    backend = ReplayBackend()
    schedule, formula, steps = case(name)
    step = backend.asarray(np.float32(steps[0]))
    rate = backend.xp.zeros((), dtype=np.float32)

    def evaluate():
        rate[...] = schedule(step)

    captured = backend.capture(evaluate)  # a CaptureError on a host read
    for value in steps:
        step[...] = value
        captured.replay()
        eager = schedule(backend.asarray(np.float32(value)))
        np.testing.assert_array_equal(rate.view(np.ndarray), eager.view(np.ndarray))
        assert float(rate) == pytest.approx(formula(value), rel=1e-6, abs=1e-7)


def test_a_schedule_that_branches_on_the_step_in_python_cannot_be_captured():
    """The check above could fail: this schedule reads the step on the host."""

    class BranchesInPython(LearningRateSchedule):
        def __call__(self, step):
            return 0.1 if step < 5 else 0.01

    backend = ReplayBackend()
    step = backend.asarray(np.float32(0))
    with pytest.raises(CaptureError, match="read on the host"):
        backend.capture(lambda: BranchesInPython()(step))


def test_a_step_of_another_kind_is_refused():
    with pytest.raises(ArgumentTypeError, match="a number or a 0-d array, not str"):
        ExponentialDecay(0.1, 10, 0.5)("3")


def test_the_example_of_a_schedule_of_your_own_is_captured_and_serialized_as_documented():
    namespace = {"LearningRateSchedule": LearningRateSchedule,
                 "array_namespace": schedules.array_namespace}
    exec(textwrap.dedent(LearningRateSchedule.__doc__.split("::\n", 1)[1]), namespace)
    halving = namespace["Halving"](0.1, 10)
    assert halving(25) == 0.025
    assert halving(np.asarray(25, dtype=np.float32)).dtype == np.float32
    backend = ReplayBackend()
    step, rate = backend.asarray(np.float32(0)), backend.xp.zeros((), dtype=np.float32)
    captured = backend.capture(lambda: rate.__setitem__(..., halving(step)))
    step[...] = 25
    captured.replay()
    assert float(rate) == pytest.approx(0.025)
    written = schedules.serialize(halving)
    assert written == {"class_name": "Halving",
                       "config": {"initial_learning_rate": 0.1, "every": 10}}
    again = schedules.deserialize(json.loads(json.dumps(written)),
                                  custom_objects={"Halving": namespace["Halving"]})
    assert again(25) == 0.025
    with pytest.raises(UsageError, match="unknown learning-rate schedule 'Halving'.*"
                                         "custom_objects"):
        schedules.deserialize(written)  # a class of your own is named to deserialize


# -- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, message", [
    (lambda: ExponentialDecay(0.1, 0, 0.5), UsageError,
     r"ExponentialDecay: argument `decay_steps` must be > 0. Received: decay_steps=0"),
    (lambda: InverseTimeDecay(0.1, -1, 0.5), UsageError, r"decay_steps=-1"),
    (lambda: CosineDecay(0.1, 0), UsageError, r"CosineDecay: argument `decay_steps` must be > 0"),
    (lambda: CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=-5), UsageError,
     r"warmup_steps must be >= 0, not -5"),
    (lambda: PiecewiseConstantDecay([10, 20], [0.1, 0.01]), UsageError,
     r"the length of boundaries should be 1 less than the length of values. Received: "
     r"boundaries=\[10, 20\] of length 2, and values=\[0.1, 0.01\] of length 2"),
    (lambda: PiecewiseConstantDecay([], [0.1]), UsageError, r"at least one boundary"),
    (lambda: PiecewiseConstantDecay([20, 10], [0.1, 0.05, 0.01]), UsageError,
     r"strictly increasing, not \[20, 10\]"),
    (lambda: PiecewiseConstantDecay(10, [0.1, 0.01]), ArgumentTypeError,
     r"boundaries must be a list of numbers, not 10"),
    (lambda: ExponentialDecay("0.1", 10, 0.5), ArgumentTypeError,
     r"ExponentialDecay initial_learning_rate must be a number, not '0.1'"),
    (lambda: InverseTimeDecay(0.1, 10, math.nan), UsageError,
     r"decay_rate must be a finite number, not nan"),
    (lambda: ExponentialDecay(-1.0, 1, 0.9), UsageError,
     r"ExponentialDecay initial_learning_rate must be >= 0, not -1.0"),
    (lambda: PiecewiseConstantDecay([1], [0.1, -5.0]), UsageError,
     r"PiecewiseConstantDecay values must be >= 0, not -5.0"),
    (lambda: InverseTimeDecay(0.1, 1, -1.0), UsageError,
     r"InverseTimeDecay decay_rate must be >= 0, not -1.0"),
    (lambda: CosineDecay(0.1, 10, warmup_target=-0.2, warmup_steps=5), UsageError,
     r"CosineDecay warmup_target must be >= 0, not -0.2"),
], ids=["exponential-steps", "inverse-time-steps", "cosine-steps", "negative-warmup",
        "lengths", "no-boundary", "decreasing", "boundaries-not-a-list", "text-rate", "nan",
        "negative-rate", "negative-value", "negative-decay", "negative-target"])
def test_wrong_arguments_are_dnn_errors_naming_them(make, error, message):
    with pytest.raises(error, match=message):
        make()


# -- serialization ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_serialize_writes_keras_json_that_deserialize_reads_back(name):
    schedule, _, steps = case(name)
    written = json.dumps(schedules.serialize(schedule))
    assert json.loads(written)["class_name"] == type(schedule).__name__
    again = schedules.deserialize(json.loads(written))
    assert type(again) is type(schedule) and again.get_config() == schedule.get_config()
    assert [again(step) for step in steps] == [schedule(step) for step in steps]


def test_numpy_arguments_are_written_as_json_numbers():
    schedule = ExponentialDecay(np.float32(0.5), np.int64(10), np.float64(0.9))
    assert json.loads(json.dumps(schedules.serialize(schedule)))["config"] == {
        "initial_learning_rate": 0.5, "decay_steps": 10, "decay_rate": 0.9,
        "staircase": False, "name": "ExponentialDecay"}


def test_deserialize_reads_what_keras_writes():
    keras = {"module": "keras.optimizers.schedules", "class_name": "CosineDecay",
             "config": {"initial_learning_rate": 0.0, "decay_steps": 20, "alpha": 0.0,
                        "name": "CosineDecay", "warmup_target": 0.1, "warmup_steps": 5},
             "registered_name": None}
    schedule = schedules.deserialize(keras)
    assert isinstance(schedule, CosineDecay) and schedule(5) == pytest.approx(0.1)


@pytest.mark.parametrize("config, error, message", [
    ({"class_name": "StepDecay", "config": {}}, UsageError,
     r"unknown learning-rate schedule 'StepDecay': the built-in ones are ExponentialDecay, "
     r"PiecewiseConstantDecay, CosineDecay, InverseTimeDecay"),
    ({"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1}}, UsageError,
     r"learning-rate schedule ExponentialDecay: .*missing 2 required positional arguments"),
    ({"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1,
                                                   "decay_steps": 0, "decay_rate": 0.5}},
     UsageError, r"decay_steps=0"),
    ("ExponentialDecay", ArgumentTypeError, r"a dict with 'class_name' and 'config'"),
], ids=["unknown", "missing-arguments", "wrong-argument", "not-a-dict"])
def test_deserialize_refuses_what_it_cannot_read_with_dnn_errors(config, error, message):
    with pytest.raises(error, match=message):
        schedules.deserialize(config)


def test_a_schedule_without_get_config_cannot_be_serialized():
    class Constant(LearningRateSchedule):
        def __call__(self, step):
            return 0.1

    with pytest.raises(NotImplementedError, match="'Constant' must override `get_config"):
        schedules.serialize(Constant())
    with pytest.raises(NotImplementedError, match=r"must override `__call__\(self, step\)`"):
        LearningRateSchedule()(0)


def test_keras_names_reach_the_schedules():
    import dnn as keras

    assert keras.optimizers.schedules.ExponentialDecay is ExponentialDecay
    assert "schedules" in keras.optimizers.__all__


# -- the callbacks' decisions -------------------------------------------------------------------
class DeviceRate:
    """The optimizer side the callbacks use: ``learning_rate`` a 0-d float32 array, written in
    place by assignment."""

    def __init__(self, rate):
        self._rate = np.array(rate, dtype=np.float32)

    @property
    def learning_rate(self):
        return self._rate

    @learning_rate.setter
    def learning_rate(self, value):
        self._rate[...] = value


def drive(callback, values, monitor="val_loss", rate=0.1):
    """The learning rates ``callback`` logs over epochs whose ``monitor`` is each of
    ``values``, and each epoch's rate as the optimizer has it after its ``on_epoch_begin``."""
    callback.set_model(types.SimpleNamespace(optimizer=DeviceRate(rate)))
    callback.on_train_begin()
    logged, used = [], []
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch)
        used.append(float(callback.model.optimizer.learning_rate))
        logs = {"loss": 1.0, monitor: value}
        callback.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    return logged, used


F32_TENTH = float(np.float32(0.1))  # 0.1 as a float32 learning rate holds it


def test_reduce_lr_on_plateau_reduces_after_patience_epochs_without_improvement(capsys):
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=3, verbose=1)
    logged, _ = drive(plateau, [1.0, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert logged == [F32_TENTH] * 5 + [F32_TENTH / 2] * 4 + [F32_TENTH / 4]
    assert capsys.readouterr().out == (
        f"\nEpoch 5: ReduceLROnPlateau reducing learning rate to {F32_TENTH / 2}.\n"
        f"\nEpoch 9: ReduceLROnPlateau reducing learning rate to {F32_TENTH / 4}.\n")


def test_reduce_lr_on_plateau_counts_changes_below_min_delta_as_none():
    losses = [1.0, 0.99996, 0.99992, 0.99988]
    assert drive(callbacks.ReduceLROnPlateau(factor=0.5, patience=2), losses)[0][-1] \
        == F32_TENTH / 2
    assert drive(callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0), losses)[0] \
        == [F32_TENTH] * 4


@pytest.mark.parametrize("cooldown, rates", [
    (0, [0.1, 0.1, 0.05, 0.03, 0.03, 0.03, 0.03]),
    (2, [0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03])])
def test_reduce_lr_on_plateau_waits_its_cooldown_and_stops_at_min_lr(capsys, cooldown, rates):
    """Keras' counting: the epoch that ends a cooldown counts towards the patience again."""
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=cooldown,
                                          min_lr=0.03, verbose=1)
    logged, _ = drive(plateau, [1.0] * 7)
    np.testing.assert_allclose(logged, rates, rtol=1e-7)
    assert capsys.readouterr().out.count("reducing learning rate") == 2  # none at min_lr


def test_reduce_lr_on_plateau_watches_accuracy_rise_in_auto_mode():
    rising = callbacks.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    assert drive(rising, [0.5, 0.6, 0.7], monitor="val_accuracy")[0] == [F32_TENTH] * 3
    falling = callbacks.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    assert drive(falling, [0.7, 0.6, 0.5], monitor="val_accuracy")[0] \
        == [F32_TENTH, F32_TENTH, F32_TENTH / 2]


def test_reduce_lr_on_plateau_starts_over_at_each_fit():
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=2)
    drive(plateau, [0.1, 0.2])
    assert drive(plateau, [1.0, 1.0])[0] == [F32_TENTH] * 2  # 1.0 is not worse than 0.1 here


@pytest.mark.parametrize("make, error, message", [
    (lambda: callbacks.ReduceLROnPlateau(factor=1.0), UsageError,
     r"ReduceLROnPlateau does not support a factor >= 1.0 or below 0. Received factor=1.0"),
    (lambda: callbacks.ReduceLROnPlateau(factor=-0.5), UsageError, r"factor=-0.5"),
    (lambda: callbacks.ReduceLROnPlateau(factor="0.5"), ArgumentTypeError,
     r"factor must be a number, not '0.5'"),
    (lambda: callbacks.ReduceLROnPlateau(mode="down"), UsageError, r"mode must be"),
    (lambda: callbacks.LearningRateScheduler(0.1), ArgumentTypeError,
     r"schedule must be a function of the epoch"),
])
def test_wrong_callback_arguments_are_dnn_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_reduce_lr_on_plateau_names_a_monitor_the_logs_lack():
    with pytest.raises(UsageError, match="ReduceLROnPlateau watches 'val_loss', which the logs "
                                         "do not have"):
        drive(callbacks.ReduceLROnPlateau(), [1.0], monitor="loss")


@pytest.mark.parametrize("schedule, expected", [
    (lambda epoch, lr: lr if epoch == 0 else lr * 0.5, [F32_TENTH, F32_TENTH / 2, F32_TENTH / 4]),
    (lambda epoch: 0.1 / (epoch + 1), [float(np.float32(0.1 / k)) for k in (1, 2, 3)]),
    (ExponentialDecay(0.1, 1, 0.5), [F32_TENTH, F32_TENTH / 2, F32_TENTH / 4]),
], ids=["epoch-and-rate", "epoch-alone", "learning-rate-schedule"])
def test_the_scheduler_sets_each_epochs_rate_before_it_and_logs_it(schedule, expected):
    logged, used = drive(callbacks.LearningRateScheduler(schedule), [0.0] * 3, rate=0.1)
    assert used == expected and logged == expected


def test_the_scheduler_says_what_it_sets_when_verbose(capsys):
    drive(callbacks.LearningRateScheduler(lambda epoch: 0.5 ** epoch, verbose=1), [0.0] * 2)
    assert capsys.readouterr().out == (
        "\nEpoch 1: LearningRateScheduler setting learning rate to 1.0.\n"
        "\nEpoch 2: LearningRateScheduler setting learning rate to 0.5.\n")


@pytest.mark.parametrize("returned", ["0.1", None, True, np.array([0.1])])
def test_a_schedule_returning_a_non_number_is_named(returned):
    with pytest.raises(ArgumentTypeError, match=r"The output of the `schedule` function should "
                                                r"be a float. Got: "):
        drive(callbacks.LearningRateScheduler(lambda epoch: returned), [0.0])


# -- training with them: cpu, replayed and eager the same ---------------------------------------
SCHEDULES = {  # rates that change within the first epochs of train(): 7 steps an epoch
    "exponential": lambda: ExponentialDecay(0.05, 5, 0.5, staircase=True),
    "piecewise": lambda: PiecewiseConstantDecay([6, 13], [0.05, 0.02, 0.005]),
    "cosine": lambda: CosineDecay(0.01, 12, alpha=0.1, warmup_target=0.05, warmup_steps=5),
    "inverse-time": lambda: InverseTimeDecay(0.05, 3, 1.0),
}
OPTIMIZERS = {"sgd": lambda rate: SGD(rate, momentum=0.9), "adam": Adam}
CALLBACKS = {  # the callback and the learning rates it logs in train()'s three epochs
    "scheduler": (lambda: callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 * 0.5 ** epoch),
                  [0.05, 0.025, 0.0125]),
    "plateau": (lambda: callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1,
                                                    min_delta=1.0), [0.05, 0.05, 0.025]),
}
STEPS = 3 * 7  # train(): three epochs of six full batches and a partial one


def replayed_and_checked(make_optimizer, make_callbacks=list):
    """The run of train() on the replaying backend, checked bit for bit against the eager
    run of the same arrays and kernels, with every full batch but the first replayed and no
    fallback; and its optimizer."""
    backend, optimizer = ReplayBackend(), make_optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(backend, optimizer, callbacks=make_callbacks())
    assert backend.replays == 3 * 6 - 1
    assert_same_run(replayed, train(EagerReplayBackend(), make_optimizer(),
                                    callbacks=make_callbacks()))
    return replayed, optimizer


def assert_close_runs(ours, reference):
    """The same history and weights to float32 rounding (different kernels)."""
    assert ours[0].keys() == reference[0].keys()
    for key in ours[0]:
        np.testing.assert_allclose(ours[0][key], reference[0][key], rtol=1e-5)
    for mine, theirs in zip(ours[1], reference[1]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def assert_different_weights(ours, reference):
    assert any(not np.allclose(mine, theirs, rtol=1e-4, atol=1e-5)
               for mine, theirs in zip(ours[1], reference[1]))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_training_with_a_schedule_replays_as_it_runs_eagerly_and_on_cpu(cpu, schedule,
                                                                          optimizer):
    """Each step's rate is computed on the device from its step count: a replay takes the
    rate of its own step, not the one of the capture."""
    def make():
        return OPTIMIZERS[optimizer](SCHEDULES[schedule]())

    replayed, replayed_optimizer = replayed_and_checked(make)
    on_cpu = train(cpu, make())
    assert_close_runs(on_cpu, replayed)
    assert int(replayed_optimizer.iterations) == STEPS
    assert float(replayed_optimizer.learning_rate) == pytest.approx(
        SCHEDULES[schedule]()(STEPS - 1), rel=1e-6)  # the rate of the last step taken
    assert_different_weights(on_cpu, train(cpu, OPTIMIZERS[optimizer](
        SCHEDULES[schedule]()(0))))  # at the constant initial rate


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learning_rate_at_gives_each_steps_rate_on_the_host(cpu, schedule):
    """What the device computes for each step, known on the host from the step count."""
    optimizer = Adam(SCHEDULES[schedule]())
    train(cpu, optimizer)
    assert optimizer.learning_rate_at(STEPS - 1) == pytest.approx(
        float(optimizer.learning_rate), rel=1e-6)
    assert [optimizer.learning_rate_at(step) for step in range(STEPS)] == pytest.approx(
        [float(SCHEDULES[schedule]()(step)) for step in range(STEPS)], rel=1e-6)
    constant = SGD(0.05)
    constant.learning_rate = 0.01
    assert constant.learning_rate_at(7) == 0.01


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("callback", CALLBACKS)
def test_training_with_a_learning_rate_callback_replays_as_it_runs_eagerly_and_on_cpu(
        cpu, callback, optimizer):
    """The rate a callback sets between epochs reaches the captured step's next replay."""
    make_callback, rates = CALLBACKS[callback]

    def make():
        return OPTIMIZERS[optimizer](0.05)

    replayed, _ = replayed_and_checked(make, lambda: [make_callback()])
    np.testing.assert_allclose(replayed[0]["learning_rate"], rates, rtol=1e-7)
    on_cpu = train(cpu, make(), callbacks=[make_callback()])
    assert_close_runs(on_cpu, replayed)
    assert_different_weights(on_cpu, train(cpu, make()))  # at the constant rate


@pytest.mark.parametrize("callback", CALLBACKS)
def test_a_learning_rate_callback_cannot_set_the_rate_of_a_schedule(cpu, callback):
    """As in Keras: the optimizer refuses, with a TypeError."""
    with pytest.raises(TypeError, match="not settable"):
        train(cpu, SGD(SCHEDULES["exponential"]()), callbacks=[CALLBACKS[callback][0]()])
