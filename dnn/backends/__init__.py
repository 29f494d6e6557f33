"""Backends: where arrays live and kernels run.  Found through the ``dnn.backends`` entry points.

The current backend is scoped with :func:`use_backend` (a context manager over a ContextVar), so
selecting one in a test or a thread never leaks into another.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

from dnn import plugins
from dnn.backends.base import Availability, Backend
from dnn.errors import BackendUnavailableError, PluginLoadError

__all__ = ["Availability", "Backend", "availability", "get_backend", "current_backend",
           "use_backend"]

_current: contextvars.ContextVar = contextvars.ContextVar("dnn_backend", default=None)


def availability(name: str) -> Availability:
    """Whether the backend registered as ``name`` can run here, and if not, why (the plugin is
    imported but not constructed).  A plugin that is not a Backend, or whose ``is_available``
    raises or returns anything but an Availability, is a :class:`PluginLoadError` naming it."""
    cls = plugins.load_class("backend", name, lambda cls: issubclass(cls, Backend),
                             "a dnn.backends.Backend subclass")
    origin = plugins.find("backend", name).origin
    try:
        found = cls.is_available()
    except plugins.PLUGIN_FAILURES as error:
        raise PluginLoadError(plugins.failure(origin, "in is_available()", error)) from error
    if not isinstance(found, Availability):
        raise PluginLoadError(f"{origin}: is_available() must return a "
                              f"dnn.backends.Availability, not {type(found).__name__}")
    return found


@functools.cache
def get_backend(name: str) -> Backend:
    """The (shared) instance of the backend registered as ``name``.

    Raises UnknownPluginError for an unknown name and BackendUnavailableError, with the reason
    and the fix, for one that cannot run here.
    """
    found = availability(name)
    if not found:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {found.reason}")
    try:
        return plugins.load("backend", name)()
    except plugins.PLUGIN_FAILURES as error:
        raise PluginLoadError(plugins.failure(plugins.find("backend", name).origin, "to start",
                                              error)) from error


def resolve(backend: str | Backend | None) -> Backend:
    """A Backend from a name, an instance, or None (the current backend)."""
    if backend is None:
        return current_backend()
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend)


def current_backend() -> Backend:
    """The backend selected by the innermost :func:`use_backend`, else ``cpu``."""
    return _current.get() or get_backend("cpu")


@contextlib.contextmanager
def use_backend(backend: str | Backend):
    """Run the body with ``backend`` (a name or an instance) as the current backend."""
    token = _current.set(resolve(backend))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
