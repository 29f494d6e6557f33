"""Learning-rate schedules, as Keras' ``keras.optimizers.schedules``: a learning rate that is a
function of the training step, given to an optimizer as its ``learning_rate``::

    schedule = dnn.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.9)
    model.compile(optimizer=dnn.optimizers.SGD(learning_rate=schedule), loss="mse")

A schedule is called with the step, counted from 0 (the first training step): a Python number
gives a Python float; a 0-d float array of the training backend (NumPy, CuPy, or any array with
an array-API namespace) gives a 0-d array of the same kind and dtype.  The optimizer calls it
that way inside every training step, which the gpu backend captures once as a CUDA graph and
then replays: so an array is computed with operations of its own namespace only, never read on
the host (a read is refused while a step is captured) and never the subject of a Python ``if``
(a replay would keep the branch taken at capture time).  A schedule of your own subclasses
:class:`LearningRateSchedule` and keeps to the same rule: compute with
``xp = array_namespace(step)`` and arithmetic operators, choose with ``xp.where``.

:func:`serialize` and :func:`deserialize` turn a schedule into Keras' JSON-able
``{"class_name": ..., "config": ...}`` and back.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
from collections.abc import Mapping

import numpy as np

from dnn.errors import ArgumentTypeError, DnnError, UsageError
from dnn.utils import is_number


class LearningRateSchedule:
    """The base class of learning-rate schedules.

    A subclass implements ``__call__(step)``: ``step`` (a Python number, or a 0-d float array
    of the training backend) is the number of training steps taken before this one, and the
    result is that step's learning rate, of the same kind (see the module docstring for the
    rule that arrays follow).  To be serializable it also implements ``get_config()``, a dict
    of its constructor's arguments; ``from_config(config)`` calls the constructor with them.

    A schedule of your own that halves the rate every ``every`` steps::

        class Halving(LearningRateSchedule):
            def __init__(self, initial_learning_rate, every):
                self.initial_learning_rate, self.every = initial_learning_rate, every

            def __call__(self, step):
                xp = array_namespace(step)
                return self.initial_learning_rate * 0.5 ** xp.floor(step / self.every)

            def get_config(self):
                return {"initial_learning_rate": self.initial_learning_rate,
                        "every": self.every}
    """

    def __call__(self, step):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must "
                                  "override `__call__(self, step)`.")

    def get_config(self) -> dict:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must "
                                  "override `get_config()` in order to be serializable.")

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        """The schedule of ``config``, a dict of ``get_config()``'s."""
        return cls(**config)


def array_namespace(step):
    """What to compute the learning rate of ``step`` with: for a Python number, a stand-in
    namespace of Python floats (``floor``, ``cos``, ``minimum``, ``where``, ``astype``); for an
    array (a NumPy scalar included), the array's own namespace.  CuPy's arrays have none of
    their own (``__array_namespace__``): theirs is CuPy itself, the gpu backend's ``xp``, so
    that a regularizer or schedule computes with the very functions the backend has."""
    if isinstance(step, numbers.Real) and not isinstance(step, (bool, np.generic)):
        return _PythonNumbers
    if hasattr(step, "__array_namespace__"):
        return step.__array_namespace__()
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(step, cupy.ndarray):
        return cupy
    raise ArgumentTypeError(f"a learning-rate schedule takes the step as a number or a 0-d "
                            f"array, not {type(step).__name__}")


class _PythonNumbers:
    """The functions of an array namespace that the schedules use, on Python floats."""

    cos = staticmethod(math.cos)
    minimum = staticmethod(min)

    @staticmethod
    def floor(x: float) -> float:
        return float(math.floor(x))

    @staticmethod
    def where(condition: bool, x1: float, x2: float) -> float:
        return x1 if condition else x2

    @staticmethod
    def astype(x, dtype) -> float:
        return dtype(x)  # dtype: float, the "dtype" of a Python number


class _Formula(LearningRateSchedule):
    """A built-in schedule: its formula, ``_rate(step, xp)``, written once over the array
    namespace ``xp`` of ``step`` (Python floats for a number, see :func:`array_namespace`);
    ``get_config()`` reads the constructor's arguments from the attributes of their names."""

    def __call__(self, step):
        xp = array_namespace(step)
        if xp is _PythonNumbers:
            return float(self._rate(float(step), xp))
        rate = self._rate(step, xp)
        # NumPy hands back a scalar for an operation on 0-d arrays: the 0-d array again
        return np.asarray(rate) if isinstance(rate, np.generic) else rate

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def _number(owner: str, name: str, value):
    """``value`` as a Python int or float (JSON-able); an :class:`ArgumentTypeError` naming
    ``owner``'s argument ``name`` when it is not a real number, a :class:`UsageError` when it
    is not finite."""
    if not is_number(value):
        raise ArgumentTypeError(f"{owner} {name} must be a number, not {value!r}")
    value = value.item() if isinstance(value, np.generic) else value
    if not math.isfinite(value):
        raise UsageError(f"{owner} {name} must be a finite number, not {value!r}")
    return value


def _at_least_0(owner: str, name: str, value):
    """``value`` checked by :func:`_number` and refused (UsageError) below 0: a rate, or a
    factor of one, below 0 would step up the gradient (an optimizer refuses such a rate)."""
    value = _number(owner, name, value)
    if value < 0:
        raise UsageError(f"{owner} {name} must be >= 0, not {value!r}")
    return value


def _decay_steps(owner: str, value):
    """``decay_steps`` checked as Keras checks it: a number above 0."""
    value = _number(owner, "decay_steps", value)
    if value <= 0:
        raise UsageError(f"{owner}: argument `decay_steps` must be > 0. Received: "
                         f"decay_steps={value}")
    return value


class _DecayOverSteps(_Formula):
    """What ExponentialDecay and InverseTimeDecay share: their arguments, and the progress
    ``step / decay_steps``, rounded down when ``staircase`` is True."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name=None):
        owner = type(self).__name__
        self.initial_learning_rate = _at_least_0(owner, "initial_learning_rate",
                                                 initial_learning_rate)
        self.decay_steps = _decay_steps(owner, decay_steps)
        self.decay_rate = _at_least_0(owner, "decay_rate", decay_rate)
        self.staircase, self.name = bool(staircase), owner if name is None else name

    def _progress(self, step, xp):
        progress = step / self.decay_steps
        return xp.floor(progress) if self.staircase else progress


class ExponentialDecay(_DecayOverSteps):
    """An exponential decay of the learning rate::

        initial_learning_rate * decay_rate ** (step / decay_steps)

    with ``step / decay_steps`` rounded down to an integer when ``staircase`` is True (the
    rate then drops every ``decay_steps`` steps).

    Args:
        initial_learning_rate: float, the rate of step 0.
        decay_steps: number > 0, the steps over which the rate is multiplied by
            ``decay_rate``.
        decay_rate: float, the decay per ``decay_steps`` steps.
        staircase: bool, decay at discrete intervals.
        name: str, Keras' name of the schedule.

    Calling it with ``step`` (a number, or a 0-d float array) gives the rate of that step, a
    float or a 0-d array of ``step``'s kind and dtype.
    """

    def _rate(self, step, xp):
        return self.initial_learning_rate * self.decay_rate ** self._progress(step, xp)


class PiecewiseConstantDecay(_Formula):
    """A learning rate constant between step boundaries: ``values[0]`` while
    ``step <= boundaries[0]``, ``values[1]`` while ``boundaries[0] < step <= boundaries[1]``,
    ..., and ``values[-1]`` once ``step > boundaries[-1]``.

    Args:
        boundaries: list of numbers, strictly increasing, at least one.
        values: list of floats, one more than ``boundaries``.
        name: str, Keras' name of the schedule.

    Calling it with ``step`` (a number, or a 0-d float array) gives the rate of that step, a
    float or a 0-d array of ``step``'s kind and dtype.
    """

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        owner = type(self).__name__
        boundaries = _numbers(owner, "boundaries", boundaries)
        values = [_at_least_0(owner, "values", value)
                  for value in _numbers(owner, "values", values)]
        if len(boundaries) != len(values) - 1:
            raise UsageError(f"{owner}: the length of boundaries should be 1 less than the "
                             f"length of values. Received: boundaries={boundaries} of length "
                             f"{len(boundaries)}, and values={values} of length {len(values)}.")
        if not boundaries:
            raise UsageError(f"{owner} needs at least one boundary, not boundaries=[]")
        if any(low >= high for low, high in zip(boundaries, boundaries[1:])):
            raise UsageError(f"{owner} boundaries must be strictly increasing, not "
                             f"{boundaries}")
        self.boundaries, self.values, self.name = boundaries, values, name

    def _rate(self, step, xp):
        """Keras' sum: each interval's value times whether ``step`` is in it (1 or 0)."""
        dtype = getattr(step, "dtype", float)  # float: a Python number's
        boundaries, values = self.boundaries, self.values
        rate = (xp.astype(step <= boundaries[0], dtype) * values[0]
                + xp.astype(step > boundaries[-1], dtype) * values[-1])
        for low, high, value in zip(boundaries, boundaries[1:], values[1:-1]):
            rate = rate + xp.astype((step > low) & (step <= high), dtype) * value
        return rate


def _numbers(owner: str, name: str, values) -> list:
    """``values`` (a list or tuple of numbers) as a list of Python numbers."""
    if not isinstance(values, (list, tuple)):
        raise ArgumentTypeError(f"{owner} {name} must be a list of numbers, not {values!r}")
    return [_number(owner, name, value) for value in values]


class CosineDecay(_Formula):
    """A cosine decay of the learning rate, after an optional linear warmup.

    Without ``warmup_target``, the rate decays from ``initial_learning_rate`` to
    ``initial_learning_rate * alpha`` over ``decay_steps`` steps and stays there::

        step = min(step, decay_steps)
        initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * step / decay_steps)) + alpha)

    With ``warmup_target``, it first rises linearly from ``initial_learning_rate`` to
    ``warmup_target`` over ``warmup_steps`` steps, then decays as above from
    ``warmup_target`` (with ``step - warmup_steps`` for ``step``).

    Args:
        initial_learning_rate: float, the rate of step 0.
        decay_steps: number > 0, the steps to decay over.
        alpha: float, the final rate as a fraction of the rate the decay starts from.
        name: str, Keras' name of the schedule.
        warmup_target: float or None, the rate the warmup rises to (None: no warmup).
        warmup_steps: number >= 0, the steps of the warmup.

    Calling it with ``step`` (a number, or a 0-d float array) gives the rate of that step, a
    float or a 0-d array of ``step``'s kind and dtype.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        owner = type(self).__name__
        self.initial_learning_rate = _at_least_0(owner, "initial_learning_rate",
                                                 initial_learning_rate)
        self.decay_steps = _decay_steps(owner, decay_steps)
        self.alpha = _at_least_0(owner, "alpha", alpha)
        self.name = name
        self.warmup_target = (None if warmup_target is None
                              else _at_least_0(owner, "warmup_target", warmup_target))
        self.warmup_steps = _number(owner, "warmup_steps", warmup_steps)
        if self.warmup_steps < 0:
            raise UsageError(f"{owner} warmup_steps must be >= 0, not {self.warmup_steps}")

    def _rate(self, step, xp):
        if self.warmup_target is None:
            return self._decayed(xp.minimum(step, self.decay_steps), xp,
                                 self.initial_learning_rate)
        step = xp.minimum(step, self.decay_steps + self.warmup_steps)
        decayed = self._decayed(step - self.warmup_steps, xp, self.warmup_target)
        if not self.warmup_steps:
            return decayed
        warmed = ((self.warmup_target - self.initial_learning_rate) * (step / self.warmup_steps)
                  + self.initial_learning_rate)
        return xp.where(step < self.warmup_steps, warmed, decayed)

    def _decayed(self, step, xp, start: float):
        cosine = 0.5 * (1.0 + xp.cos(math.pi * (step / self.decay_steps)))
        return start * ((1 - self.alpha) * cosine + self.alpha)


class InverseTimeDecay(_DecayOverSteps):
    """An inverse-time decay of the learning rate::

        initial_learning_rate / (1 + decay_rate * step / decay_steps)

    with ``step / decay_steps`` rounded down to an integer when ``staircase`` is True.

    Args:
        initial_learning_rate: float, the rate of step 0.
        decay_steps: number > 0, how often the decay applies.
        decay_rate: float, the decay rate.
        staircase: bool, decay at discrete intervals.
        name: str, Keras' name of the schedule.

    Calling it with ``step`` (a number, or a 0-d float array) gives the rate of that step, a
    float or a 0-d array of ``step``'s kind and dtype.
    """

    def _rate(self, step, xp):
        return self.initial_learning_rate / (1 + self.decay_rate * self._progress(step, xp))


_BUILT_IN = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay,
                                          CosineDecay, InverseTimeDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """``schedule`` as Keras writes it: ``{"class_name": "ExponentialDecay", "config":
    {...}}``, JSON-able."""
    if not isinstance(schedule, LearningRateSchedule):
        raise ArgumentTypeError(f"serialize takes a LearningRateSchedule, not "
                                f"{type(schedule).__name__}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """The schedule that :func:`serialize` (or Keras) wrote as ``config``, a dict with
    ``"class_name"`` and ``"config"`` (other keys, as Keras' ``"module"``, are ignored).
    ``custom_objects`` maps the class names of schedules of your own to their classes.  An
    unknown class name, or a config its class does not take, is a :class:`UsageError`."""
    if not isinstance(config, Mapping) or not isinstance(config.get("class_name"), str):
        raise ArgumentTypeError(f"a serialized learning-rate schedule is a dict with "
                                f"'class_name' and 'config', not {config!r}")
    name, classes = config["class_name"], {**_BUILT_IN, **(custom_objects or {})}
    if name not in classes:
        raise UsageError(f"unknown learning-rate schedule {name!r}: the built-in ones are "
                         f"{', '.join(_BUILT_IN)}; pass a class of your own in custom_objects")
    try:
        return classes[name].from_config(config.get("config", {}))
    except DnnError:
        raise
    except TypeError as error:  # an argument the class does not take, or one it lacks
        raise UsageError(f"learning-rate schedule {name}: {error}") from error


__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay",
           "InverseTimeDecay", "array_namespace", "serialize", "deserialize"]
