"""The Optimizer base class: the contract optimizer plugins are written against.

A subclass takes its hyper-parameters as keyword arguments of ``__init__`` (stored as
attributes of the same names) and implements two methods:

``init_state(param) -> dict``
    Called once per parameter when the optimizer is built; returns the state arrays for that
    parameter, made with ``self.xp`` (e.g. ``{"m": self.xp.zeros_like(param)}``).
``update(param, grad, state) -> None``
    Applies one step *in place* on ``param`` and on the arrays of ``state``.  ``self.xp`` is the
    backend's array namespace.

Where the numbers live: once built, ``self.learning_rate`` and every keyword argument of
``__init__`` whose default is a float (``self.beta_1``, ...) is a 0-d array of the backend in
the parameters' dtype, and ``self.iterations`` a 0-d int64 array (1 during the first step),
always.  ``update`` computes with them as arrays (``1 - self.beta_1``,
``xp.astype(self.iterations, param.dtype)``) and never reads them on the host (``float(...)``,
an ``if`` on one) nor keeps a number of its own from step to step: the gpu backend captures
the training step once as a CUDA graph and replays it, and a replay reads only device memory,
which is where a callback's new learning rate (``optimizer.learning_rate = 0.01`` writes into
the array) or a schedule's next one arrives.  ``dnn check`` trains each optimizer through a
captured step and catches one that does not.  The other settings (a default that is an int, a
bool, a string, None) stay host values, which a captured step bakes in: setting one during
``fit`` (``optimizer.nesterov = True``) makes the step be captured again
(:attr:`Optimizer.host_settings_changes`), which costs a capture, not a wrong step.

Every setting is checked when the optimizer is made, when it is built and whenever it is set
after that (a callback's ``optimizer.momentum = 0.99``): a number where ``__init__``'s default is
a number (finite, >= 0), ``True`` or ``False`` where it is a bool, and whatever the optional
``check_setting(name, value)`` of the subclass refuses (a range, or a setting that decides the
state ``init_state`` made, which :meth:`Optimizer.check_built_state` keeps as it was built).

Optionally, ``begin_step()`` computes once per step, on the device, what every parameter's
update shares (Adam's bias-corrected step size), and ``fused_update = "name"`` asks the backend
for a fused kernel of the update (see :meth:`dnn.backends.Backend.fused_update`); ``update``
then calls ``self.fused(...)`` with the arrays and hyper-parameters that backends document for
that name, and runs its own formula when that returns False (no such kernel, or one that
cannot take these arrays).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers

import numpy as np

from dnn import host_settings, plugins
from dnn.errors import ArgumentTypeError, DnnError, OptimizerError, UsageError
from dnn.optimizers.schedules import LearningRateSchedule, deserialize, serialize
from dnn.utils import is_number


def _no_fused_kernel(*args) -> bool:
    return False


class Optimizer:
    """Base class of every optimizer: bookkeeping, hyper-parameters on the device, state for
    checkpoints."""

    fused_update: str | None = None  # the update a backend may have a fused kernel of
    fused = staticmethod(_no_fused_kernel)  # that kernel once built: True when it took the step

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001):
        self._device = None  # {name: 0-d array} once built: iterations and hyper-parameters
        self._host_names = frozenset()  # once built: the settings that stay host values
        self.host_settings_changes = 0  # how often one of those was set to another value
        self._exact = {}  # {name: the number last given} of the hyper-parameters on the device
        self._at_build = None  # once built: {name: value} of every setting when it was built
        self._schedule = None
        self.iterations = 0
        if isinstance(learning_rate, dict):  # a schedule as get_config() writes it
            learning_rate = deserialize(learning_rate)
        self.learning_rate = learning_rate
        self.backend = None
        self.states: list[dict] = []
        self._update_checked = False
        self.check_hyperparameters()

    # -- the plugin contract -----------------------------------------------------------------
    def init_state(self, param) -> dict:
        """State arrays for one parameter (none by default)."""
        return {}

    def update(self, param, grad, state) -> None:
        """One in-place step on ``param`` and ``state``."""
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def begin_step(self) -> None:
        """Compute on the device, once per step before the updates, the numbers every
        parameter's update shares (none by default)."""

    def check_setting(self, name: str, value) -> None:
        """Refuse (a one-line UsageError) ``value`` for setting ``name`` beyond the base checks
        (a range, say): run when the optimizer is made and built, and for a value set once it is
        built, each time after the base checks passed (none by default)."""

    def check_built_state(self, name: str, value, fits: bool) -> None:
        """For :meth:`check_setting`: once built, refuse a ``value`` of ``name`` that the state
        :meth:`init_state` made does not ``fit`` (compare with :meth:`built_setting`)."""
        if self.__dict__.get("_at_build") is not None and not fits:
            raise UsageError(f"{type(self).__name__} {name} decides the state made when the "
                             f"optimizer is built: give {name}={value!r} when making it")

    def built_setting(self, name: str):
        """The value setting ``name`` had when the optimizer was built (None before)."""
        return (self.__dict__.get("_at_build") or {}).get(name)

    # -- hyper-parameters on the device -------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(_defaults(type(self)).get(name), bool) and _is_bool_like(value):
            value = bool(value)  # a host setting of Python's type, as configs save it
        if name == "learning_rate" and isinstance(value, LearningRateSchedule):
            if self.__dict__.get("_device") is not None:  # a captured step may hold the rate
                raise UsageError("give a learning-rate schedule when the optimizer is made "
                                 "(learning_rate=...), not once it is built")
            object.__setattr__(self, "_schedule", value)
            value = float(value(self._host_value("iterations")))  # its rate at the next step
        elif name == "learning_rate" and self.__dict__.get("_schedule") is not None:
            raise ArgumentTypeError(
                "This optimizer was created with a LearningRateSchedule object as its "
                "learning_rate constructor argument, hence its learning rate is not settable. "
                "To change the learning rate, use a schedule that changes it.")
        device = self.__dict__.get("_device")
        if device is None or name not in device:
            if name in self.__dict__.get("_host_names", ()) and not host_settings.same(
                    self.__dict__.get(name), value):
                self._check_hyperparameter(name, value,
                                           is_number(_defaults(type(self)).get(name)))
                object.__setattr__(self, "host_settings_changes",
                                   self.host_settings_changes + 1)
            object.__setattr__(self, name, value)
            return
        if self.backend.is_own_array(value):
            host = self.backend.to_numpy(value)
            if host.size != 1:
                raise UsageError(f"an optimizer's {name} is one number, not an array of shape "
                                 f"{host.shape}")
            value = host.item()
        if name == "iterations":
            if not (isinstance(value, numbers.Integral) and value >= 0):
                raise UsageError(f"an optimizer's iterations must be an integer >= 0, not "
                                 f"{value!r}")
        else:
            self._check_hyperparameter(name, value, number_expected=True)
            self._exact[name] = value
        device[name][...] = value  # in place: a captured step reads it at its next replay

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of training step ``step`` (the count of steps before it), worked
        out on the host without reading the device: a schedule's value at ``step``, else the
        number the rate was last given (for a step not taken yet: if nothing changes it)."""
        if self._schedule is not None:
            return float(self._schedule(step))
        return float(self._host_value("learning_rate"))

    def _host_value(self, name: str):
        """Hyper-parameter or ``iterations`` ``name`` as a Python number, wherever it lives: a
        hyper-parameter as it was given, not rounded to the parameters' dtype."""
        if name in self.__dict__.get("_exact", {}):
            return self._exact[name]
        value = self.__dict__.get(name)
        if self.__dict__.get("_device") and name in self._device:
            return self.backend.to_numpy(value).item()
        return value

    def _device_names(self) -> list[str]:
        """``iterations``, learning_rate (a schedule writes each step's rate into it) and the
        keyword arguments of ``__init__`` whose default is a float; an integer one (a count,
        say) stays a host number."""
        return ["iterations", *(name for name, default in _defaults(type(self)).items()
                                if name == "learning_rate"
                                or (isinstance(default, float)
                                    and is_number(self._host_value(name))))]

    def step_state(self) -> list:
        """The optimizer's device arrays beside the per-parameter state (``iterations``, the
        hyper-parameters): what a captured step reads or changes besides the weights."""
        return list((self._device or {}).values())

    # -- used by the model ------------------------------------------------------------------
    @property
    def xp(self):
        """The array namespace of the backend the optimizer runs on."""
        return self.backend.xp

    def build(self, params: list, backend) -> None:
        """Attach to ``backend``, create one state dict per parameter and move ``iterations``
        and the hyper-parameters to the device (in the parameters' dtype).  A subclass whose
        ``init_state`` raises, or returns anything but a dict of ``backend``'s arrays, is an
        :class:`OptimizerError` naming it.  The hyper-parameters are checked again here, as a
        subclass may set them after ``Optimizer.__init__`` checked them (Keras' order)."""
        self._at_build = None  # a new build makes new state: the settings are checked anew
        self.check_hyperparameters()
        values = {name: self._host_value(name) for name in self._device_names()}
        self._device = None
        for name, value in values.items():  # init_state sees host numbers
            object.__setattr__(self, name, value)
        self.backend = backend
        kernel = backend.fused_update(self.fused_update) if self.fused_update else None
        self.fused = kernel or _no_fused_kernel
        try:
            self.states = [self.init_state(param) for param in params]
        except (DnnError, MemoryError):
            raise
        except plugins.PLUGIN_FAILURES as error:
            raise OptimizerError(plugins.failure(self._origin(), "in init_state()",
                                                 error)) from error
        for state in self.states:
            wrong = ([type(state).__name__] if not isinstance(state, dict) else
                     [f"a dict with {key!r}: {type(value).__name__}"
                      for key, value in state.items() if not backend.is_own_array(value)])
            if wrong:
                raise OptimizerError(f"{self._origin()}: init_state() must return a dict of "
                                     f"arrays made with self.xp, not {wrong[0]}")
        dtypes = {"iterations": backend.dtype("int64")}
        dtype = params[0].dtype if params else backend.dtype("float32")
        device = {name: backend.xp.asarray(value, dtype=dtypes.get(name, dtype))
                  for name, value in values.items()}
        for name, array in device.items():
            object.__setattr__(self, name, array)
        self._device = device
        self._exact = {name: value for name, value in values.items() if name != "iterations"}
        self._host_names = frozenset(_defaults(type(self))) - set(device)
        self._state_index = {id(param): index for index, param in enumerate(params)}
        self._update_checked = False
        self._at_build = {name: self._host_value(name) for name in _defaults(type(self))
                          if hasattr(self, name)}

    def _states_of(self, params: list) -> list:
        """The state of each of ``params`` (some or all of those the optimizer was built
        for: a frozen layer's weights are left out of a step, their state kept)."""
        try:
            return [self.states[self._state_index[id(param)]] for param in params]
        except KeyError:
            raise UsageError("apply_gradients got a weight the optimizer was not built for: "
                             "build() it with the model's weights") from None

    def apply_gradients(self, params: list, grads: list) -> None:
        """Advance ``iterations`` and update every parameter with its gradient, on the device
        alone (a captured step replays all of it).  A subclass whose ``update`` raises, or
        returns a new array (a sign that it did not work in place; ``param`` itself may be
        returned), is an :class:`OptimizerError` naming it; so is one whose first step after
        :meth:`build` leaves every parameter as it was while a gradient is not zero (the sign
        of ``param = param - step``, which rebinds the name instead of writing the array)."""
        iterations = self.iterations
        iterations += 1  # in place, on the device
        xp = self.xp
        if self._schedule is not None:  # Keras' step: the count of steps before this one
            rate = self.learning_rate
            rate[...] = self._schedule(xp.astype(iterations - 1, rate.dtype))
        before = None
        if not self._update_checked:  # once, outside any capture (its reads are on the host)
            before = [xp.asarray(param, copy=True) for param in params]
        try:
            self.begin_step()
            for param, grad, state in zip(params, grads, self._states_of(params)):
                returned = self.update(param, grad, state)
                if returned is not None and returned is not param:
                    raise OptimizerError(
                        f"{self._origin()}: update() returned a new array; it must change "
                        "param and its state in place (param -= ...)")
        except (DnnError, MemoryError):
            raise
        except plugins.PLUGIN_FAILURES as error:
            raise OptimizerError(plugins.failure(self._origin(), "in update()",
                                                 error)) from error
        if before is not None:
            if _left_alone(xp, params, grads, before, self.learning_rate):
                raise OptimizerError(f"{self._origin()}: update() left every parameter as it "
                                     "was: change param in place (param -= step), not by "
                                     "assigning a new array to the name")
            self._update_checked = True

    def _origin(self) -> str:
        """The plugin (name, distribution, version) or class, for error messages."""
        return plugins.origin_of("optimizer", type(self))

    def get_config(self) -> dict:
        """The hyper-parameters as ``__init__`` takes them, host numbers (a schedule as
        :func:`dnn.optimizers.schedules.serialize` writes it)."""
        config = {name: self._host_value(name)
                  for name in _defaults(type(self)) if hasattr(self, name)}
        if self._schedule is not None and "learning_rate" in config:
            config["learning_rate"] = serialize(self._schedule)
        return config

    def check_hyperparameters(self) -> None:
        """Refuse numeric hyper-parameters that are negative, not finite, or not numbers where
        ``__init__``'s default is a number, settings that are not True or False where it is a
        bool, and what :meth:`check_setting` refuses."""
        defaults = _defaults(type(self))
        for name, value in self.get_config().items():
            if name == "learning_rate" and self._schedule is not None:
                continue
            self._check_hyperparameter(name, value, is_number(defaults.get(name)))

    def _check_hyperparameter(self, name: str, value, number_expected: bool) -> None:
        if (isinstance(_defaults(type(self)).get(name), bool)
                and not _is_bool_like(value)):
            raise UsageError(f"{type(self).__name__} {name} must be True or False, not "
                             f"{value!r}")
        if number_expected and not is_number(value):
            raise UsageError(f"{type(self).__name__} {name} must be a number, not {value!r}")
        if is_number(value) and not (_finite(value) and value >= 0):
            raise UsageError(f"{type(self).__name__} {name} must be a finite number >= 0, "
                             f"not {_shown(value)}")
        self.check_setting(name, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _is_bool_like(value) -> bool:
    """Whether ``value`` is a truth value as Keras takes one: a bool, NumPy's, 0 or 1."""
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, numbers.Integral) and value in (0, 1))


@functools.cache
def _defaults(cls: type) -> dict:
    """{name: default} of the keyword arguments of ``cls.__init__``."""
    return {name: parameter.default
            for name, parameter in inspect.signature(cls).parameters.items()}


def _finite(value) -> bool:
    """Whether real number ``value`` is finite (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value) -> str:
    """``repr(value)``, or for an integer too large for a float its size (its digits would
    fill the screen, or be more than Python prints)."""
    try:
        float(value)
    except OverflowError:
        sign = "-" if value < 0 else ""
        return f"an integer of about {sign}10**{int(abs(value).bit_length() * math.log10(2))}"
    return repr(value)


def _left_alone(xp, params, grads, before, rate) -> bool:
    """True when no parameter changed although the step should have moved one (read on the
    host: done on the first step only).

    A step "should have moved" an element when a step of ``rate * min(1, |grad|)`` against its
    gradient, a normal number of its dtype, changes it: SGD moves each element by
    ``rate * |grad|``, and the optimizers that scale the gradient (RMSprop, Adam) by about
    ``rate``, so no built-in step is smaller.  A step that by its own hyper-parameters moves
    nothing (a rate of 0, or one so small that every such step rounds away, or a subnormal
    that hardware may flush to zero) proves nothing, and is not taken for a rebinding."""
    if any(not bool(xp.all(param == old)) for param, old in zip(params, before)):
        return False
    return any(_should_move(xp, old, grad, rate) for old, grad in zip(before, grads))


def _should_move(xp, old, grad, rate) -> bool:
    """Whether a step of ``rate * min(1, |grad|)`` against ``grad`` changes some element of
    ``old`` in its dtype (steps below the dtype's smallest normal number count as none)."""
    rate = xp.astype(xp.asarray(rate), old.dtype)
    step = xp.minimum(xp.abs(grad) * rate, rate)
    moved = (old - step * xp.sign(grad) != old) & (step >= xp.finfo(old.dtype).smallest_normal)
    return bool(xp.any(moved))

