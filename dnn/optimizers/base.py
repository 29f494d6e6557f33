"""The Optimizer base class: the contract optimizer plugins are written against.

A subclass takes its hyper-parameters as keyword arguments of ``__init__`` (stored as
attributes of the same names) and implements two methods:

``init_state(param) -> dict``
    Called once per parameter when the model is compiled and built; returns the state arrays
    for that parameter, made with ``self.xp`` (e.g. ``{"m": self.xp.zeros_like(param)}``).
``update(param, grad, state) -> None``
    Applies one step *in place* on ``param`` and on the arrays of ``state``.  ``self.xp`` is the
    backend's array namespace, ``self.learning_rate`` a Python float and ``self.iterations`` the
    number of the current step (1 on the first).  Keep the parameter's dtype: use Python scalars
    for hyper-parameters.

Optionally, ``fused_update = "name"`` asks the backend for a fused kernel of the update (see
:meth:`dnn.backends.Backend.fused_update`); ``update`` then calls ``self.fused(...)`` with the
arrays and hyper-parameters that backends document for that name, and runs its own formula when
that returns False (no such kernel, or one that cannot take these arrays).
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from dnn import plugins
from dnn.errors import DnnError, OptimizerError, UsageError


def _no_fused_kernel(*args) -> bool:
    return False


class Optimizer:
    """Base class of every optimizer: bookkeeping, hyper-parameters, state for checkpoints."""

    fused_update: str | None = None  # the update a backend may have a fused kernel of
    fused = staticmethod(_no_fused_kernel)  # that kernel once built: True when it took the step

    def __init__(self, learning_rate: float = 0.001):
        self.learning_rate = learning_rate
        self.iterations = 0
        self.backend = None
        self.states: list[dict] = []
        self.scalars: dict = {}  # this step's step_scalars, host numbers or device arrays
        self._scalar_arrays = None
        self._param_dtype = None
        self.check_hyperparameters()

    # -- the plugin contract -----------------------------------------------------------------
    def init_state(self, param) -> dict:
        """State arrays for one parameter (none by default)."""
        return {}

    def update(self, param, grad, state) -> None:
        """One in-place step on ``param`` and ``state``."""
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    # -- used by the model ------------------------------------------------------------------
    @property
    def xp(self):
        """The array namespace of the backend the optimizer runs on."""
        return self.backend.xp

    def build(self, params: list, backend) -> None:
        """Attach to ``backend`` and create one state dict per parameter.  A subclass whose
        ``init_state`` raises, or returns anything but a dict of ``backend``'s arrays, is an
        :class:`OptimizerError` naming it."""
        self.backend = backend
        self._param_dtype = params[0].dtype if params else None
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

    def step_scalars(self, iteration: int) -> dict:
        """The hyper-parameters of step ``iteration`` that change from step to step (Adam's
        step size, say), as host numbers by name; ``update`` reads them from
        ``self.scalars``.  None by default."""
        return {}

    def use_device_scalars(self, on_device: bool) -> None:
        """Keep :meth:`step_scalars` in 0-d arrays of the backend, written before each step
        by :meth:`load_step_scalars`, instead of handing ``update`` host numbers: a training
        step captured for replay reads the arrays, so it never holds a stale number."""
        if not on_device:
            self._scalar_arrays = None
            return
        self._scalar_arrays = {name: self.xp.zeros((), dtype=self._param_dtype)
                               for name in self.step_scalars(1)}

    def load_step_scalars(self) -> None:
        """Write the coming step's :meth:`step_scalars` into their device arrays (when
        :meth:`use_device_scalars` keeps them there); called before every training step."""
        if self._scalar_arrays:
            for name, value in self.step_scalars(self.iterations + 1).items():
                self._scalar_arrays[name][...] = value

    def apply_gradients(self, params: list, grads: list) -> None:
        """Advance ``iterations`` and update every parameter with its gradient.  A subclass
        whose ``update`` raises, or returns a new array (a sign that it did not work in place;
        ``param`` itself may be returned), is an :class:`OptimizerError` naming it; so is one
        whose first step leaves every parameter as it was while a gradient is not zero (the
        sign of ``param = param - step``, which rebinds the name instead of writing the
        array)."""
        self.iterations += 1
        self.scalars = self._scalar_arrays or self.step_scalars(self.iterations)
        xp = self.xp
        before = [xp.asarray(param, copy=True) for param in params] \
            if self.iterations == 1 else None
        try:
            for param, grad, state in zip(params, grads, self.states):
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
        if before is not None and _left_alone(xp, params, grads, before):
            raise OptimizerError(f"{self._origin()}: update() left every parameter as it was: "
                                 "change param in place (param -= step), not by assigning a "
                                 "new array to the name")

    def device_arrays(self) -> list:
        """Arrays of the backend that the optimizer keeps beside its per-parameter state: the
        device copies of :meth:`step_scalars`, if any."""
        return list((self._scalar_arrays or {}).values())

    def _origin(self) -> str:
        """The plugin (name, distribution, version) or class, for error messages."""
        return plugins.origin_of("optimizer", type(self))

    def get_config(self) -> dict:
        """The hyper-parameters: ``__init__``'s keyword arguments, read from the attributes."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters
                if hasattr(self, name)}

    def check_hyperparameters(self) -> None:
        """Refuse numeric hyper-parameters that are negative, not finite, or not numbers where
        ``__init__``'s default is a number."""
        defaults = {name: parameter.default
                    for name, parameter in inspect.signature(type(self)).parameters.items()}
        for name, value in self.get_config().items():
            if _is_number(defaults.get(name)) and not _is_number(value):
                raise UsageError(f"{type(self).__name__} {name} must be a number, not {value!r}")
            if not _is_number(value):
                continue
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{type(self).__name__} {name} must be a finite number >= 0, "
                                 f"not {value!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _left_alone(xp, params, grads, before) -> bool:
    """True when no parameter changed although some gradient is not zero (read on the host:
    done on the first step only)."""
    unchanged = all(bool(xp.all(param == old)) for param, old in zip(params, before))
    return unchanged and any(bool(xp.any(grad != 0)) for grad in grads)


def _is_number(value) -> bool:
    """A real number (NumPy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
