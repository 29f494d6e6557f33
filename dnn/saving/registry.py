"""Classes of one's own that saved configs name: Keras' ``register_keras_serializable``,
``custom_objects`` and ``custom_object_scope``.

A layer's config (:meth:`dnn.layers.Layer.get_config`) names its class by a string: a built-in
layer's class name, or for a class of one's own :func:`get_registered_name` (``"Custom>PReLU"``
once registered, else the class name).  Loading a checkpoint or JSON finds the class by that
string: first among the ``custom_objects`` given to the load (or a :func:`custom_object_scope`
around it), then among the registered classes, then among dnn's own.
"""

from __future__ import annotations

import contextlib
import contextvars

from dnn.errors import ArgumentTypeError

_REGISTERED: dict = {}  # "package>name" -> class
_NAMES: dict = {}  # class -> "package>name"
_SCOPE = contextvars.ContextVar("dnn_custom_objects", default={})


def register_keras_serializable(package: str = "Custom", name: str | None = None):
    """A class decorator: ``@register_keras_serializable("my_package")`` registers the class
    under ``"my_package>ClassName"`` (``name`` in place of the class name where given), so that
    checkpoints and JSON holding it load without ``custom_objects``."""
    if not isinstance(package, str) or not (name is None or isinstance(name, str)):
        raise ArgumentTypeError("register_keras_serializable takes a package name and "
                                "optionally a name, both strings")

    def register(cls):
        if not isinstance(cls, type):
            raise ArgumentTypeError(f"register_keras_serializable registers a class, not "
                                    f"{type(cls).__name__}")
        registered = f"{package}>{name or cls.__name__}"
        _REGISTERED[registered] = cls
        _NAMES[cls] = registered
        return cls

    return register


def get_registered_name(cls) -> str:
    """The name configs give ``cls``: the one it was registered under, else its class name."""
    return _NAMES.get(cls, cls.__name__)


def get_custom_objects() -> dict:
    """The live dict of registered classes, by registered name (Keras'; adding to it
    registers)."""
    return _REGISTERED


def get_registered_object(name: str, custom_objects: dict | None = None):
    """The class of one's own that configs call ``name``, or None: looked up in the
    innermost :func:`custom_object_scope`, then among the registered classes, then in
    ``custom_objects``.  A registered name ``"package>Name"`` is also found by ``Name`` in the
    scope or ``custom_objects``, as Keras finds it."""
    candidates = (name, name.rpartition(">")[2])
    for objects in (_SCOPE.get(), _REGISTERED, custom_objects or {}):
        for key in candidates:
            if key in objects:
                return objects[key]
    return None


def registered_under_class_name(name: str):
    """The one class registered as ``"...>name"``, or None (none, or several): what a bare
    ``name`` in a file saved before its class was registered stands for, once no class of
    that name is known otherwise (dnn's own come first)."""
    registered = [cls for key, cls in _REGISTERED.items() if key.rpartition(">")[2] == name]
    return registered[0] if len(registered) == 1 else None


@contextlib.contextmanager
def custom_object_scope(custom_objects: dict | None):
    """``with custom_object_scope({"PReLU": PReLU}):`` makes the classes found by name for
    every load inside (Keras' ``custom_object_scope``; ``load_model(..., custom_objects=)``
    opens one)."""
    if custom_objects is None:
        custom_objects = {}
    if not isinstance(custom_objects, dict) or not all(
            isinstance(key, str) for key in custom_objects):
        raise ArgumentTypeError("custom_objects is a dict of class names to classes, such as "
                                "{'PReLU': PReLU}")
    token = _SCOPE.set({**_SCOPE.get(), **custom_objects})
    try:
        yield
    finally:
        _SCOPE.reset(token)
