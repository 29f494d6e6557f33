"""Weight regularizers, as Keras' ``keras.regularizers``: a penalty on a layer's weights that
training adds to the loss::

    Dense(64, activation="relu", kernel_regularizer=dnn.regularizers.L2(1e-4))

``L1(l1)`` penalises ``l1 * sum(|w|)``, ``L2(l2)`` ``l2 * sum(w ** 2)``, ``L1L2(l1, l2)`` both;
``l1``, ``l2`` and ``l1_l2`` are the same classes under Keras' other names.  The penalty of
each regularized weight of a trainable layer is added to the batch's mean loss, and its
gradient (``l1 * sign(w) + 2 * l2 * w``) to the weight's gradient (see :mod:`dnn.layers`).

A regularizer is called with a weight ``w`` (an array of any shape) and gives its penalty, a
0-d array of ``w``'s kind and dtype; :meth:`Regularizer.gradient` gives ``dpenalty/dw``, an
array of ``w``'s shape.  Both compute with ``w``'s own array namespace (NumPy, CuPy, ...) and
never read ``w`` on the host: a training step that calls them can be captured on a GPU and
replayed.  One of your own subclasses :class:`Regularizer` and keeps to the same rule.

:func:`serialize` and :func:`deserialize` turn a regularizer into Keras' JSON-able
``{"class_name": ..., "config": ...}`` and back (checkpoints keep them so); :func:`get` takes
any of the forms a layer's ``kernel_regularizer`` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from dnn import host_settings
from dnn.errors import ArgumentTypeError, DnnError, UsageError
from dnn.optimizers.schedules import array_namespace
from dnn.utils import is_number


class Regularizer:
    """A penalty on a weight.  A subclass implements :meth:`__call__`, :meth:`gradient` and
    :meth:`get_config` (the arguments that rebuild it)."""

    def __call__(self, x):
        """The penalty of ``x``, a 0-d array of ``x``'s namespace and dtype."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(x)")

    def gradient(self, x):
        """``dpenalty/dx``: an array of ``x``'s shape, namespace and dtype."""
        raise NotImplementedError(f"{type(self).__name__} must implement gradient(x)")

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")

    def __setattr__(self, name, value):
        if name in self.__dict__ and not host_settings.same(self.__dict__[name], value):
            host_settings.changed()  # a factor a captured step reads on the host
        object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, config: dict) -> Regularizer:
        """The regularizer of ``config``, a dict of ``get_config()``'s."""
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def _factor(owner: str, name: str, value) -> float:
    """``value`` as a float, if it is a finite number >= 0 (Keras' check)."""
    if not is_number(value):
        raise ArgumentTypeError(f"{owner} {name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{owner} {name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _penalty(x, l1: float, l2: float):
    """``l1 * sum(|x|) + l2 * sum(x ** 2)``, a 0-d array (a term of factor 0 left out)."""
    xp = array_namespace(x)
    penalty = xp.zeros((), dtype=x.dtype)
    if l1:
        penalty = penalty + l1 * xp.sum(xp.abs(x))
    if l2:
        penalty = penalty + l2 * xp.sum(x * x)
    return xp.asarray(penalty)  # NumPy answers a scalar for 0-d arrays: the 0-d array again


def _gradient(x, l1: float, l2: float):
    """``l1 * sign(x) + 2 * l2 * x``, ``x``'s shape (``sign(0)`` is 0, as Keras' gradient)."""
    xp = array_namespace(x)
    if l1 and l2:
        return l1 * xp.sign(x) + (2 * l2) * x
    return l1 * xp.sign(x) if l1 else (2 * l2) * x


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x ** 2)``; ``l1`` and ``l2`` are numbers >= 0 (None is 0)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor("L1L2", "l1", 0.0 if l1 is None else l1)
        self.l2 = _factor("L1L2", "l2", 0.0 if l2 is None else l2)

    def __call__(self, x):
        return _penalty(x, self.l1, self.l2)

    def gradient(self, x):
        return _gradient(x, self.l1, self.l2)

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 * sum(|x|)``; ``l1`` is a number >= 0 (None is the default, 0.01)."""

    def __init__(self, l1=0.01):
        self.l1 = _factor("L1", "l1", 0.01 if l1 is None else l1)

    def __call__(self, x):
        return _penalty(x, self.l1, 0.0)

    def gradient(self, x):
        return _gradient(x, self.l1, 0.0)

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x ** 2)``; ``l2`` is a number >= 0 (None is the default, 0.01)."""

    def __init__(self, l2=0.01):
        self.l2 = _factor("L2", "l2", 0.01 if l2 is None else l2)

    def __call__(self, x):
        return _penalty(x, 0.0, self.l2)

    def gradient(self, x):
        return _gradient(x, 0.0, self.l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


l1, l2, l1_l2 = L1, L2, L1L2  # Keras 3's lower-case names: the same classes

_BUILT_IN = {cls.__name__: cls for cls in (L1, L2, L1L2)}
# By name, with Keras' documented factors: "l1_l2" is 0.01 of each (L1L2() would be none).
NAMES = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}


def serialize(regularizer: Regularizer | None) -> dict | None:
    """``regularizer`` as Keras writes it: ``{"class_name": "L2", "config": {"l2": 0.01}}``,
    JSON-able (None for None)."""
    if regularizer is None:
        return None
    if not isinstance(regularizer, Regularizer):
        raise ArgumentTypeError(f"serialize takes a Regularizer, not "
                                f"{type(regularizer).__name__}")
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> Regularizer:
    """The regularizer that :func:`serialize` (or Keras) wrote as ``config``, a dict with
    ``"class_name"`` and ``"config"`` (other keys, as Keras' ``"module"``, are ignored).
    ``custom_objects`` maps the class names of regularizers of your own to their classes."""
    if not isinstance(config, Mapping) or not isinstance(config.get("class_name"), str):
        raise ArgumentTypeError(f"a serialized regularizer is a dict with 'class_name' and "
                                f"'config', not {config!r}")
    name, classes = config["class_name"], {**_BUILT_IN, **(custom_objects or {})}
    if name not in classes:
        raise UsageError(f"unknown regularizer {name!r}: the built-in ones are "
                         f"{', '.join(_BUILT_IN)}; pass a class of your own in custom_objects")
    try:
        return classes[name].from_config(config.get("config", {}))
    except DnnError:
        raise
    except TypeError as error:  # an argument the class does not take
        raise UsageError(f"regularizer {name}: {error}") from error


def get(identifier) -> Regularizer | None:
    """A Regularizer from a name (``"l1"``, ``"l2"``, ``"l1_l2"``: factors of 0.01), a dict of
    :func:`serialize`'s, a Regularizer (or its class, made with its defaults), or None."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if isinstance(identifier, Mapping):
        return deserialize(identifier)
    if not isinstance(identifier, str):
        raise ArgumentTypeError(f"a regularizer is a name, a dict of serialize()'s, a "
                                f"dnn.regularizers.Regularizer or None, not "
                                f"{type(identifier).__name__}")
    if identifier not in NAMES:
        raise UsageError(f"unknown regularizer {identifier!r}; known: {', '.join(NAMES)}")
    return NAMES[identifier]()


__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "serialize", "deserialize",
           "get"]
