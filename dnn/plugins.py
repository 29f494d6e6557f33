"""Plugin discovery over the entry-point groups ``dnn.backends``, ``dnn.optimizers`` and
``dnn.datasets``.

Entry points are read lazily, once per process, and de-duplicated by name.  A plugin is imported
only when it is asked for; one that fails to import is reported with its distribution's name and
never takes the others down.

Name clashes: the built-in plugins (those of our own distribution) always win.  A third-party
plugin that reuses a built-in name, or a name already taken by another distribution (the first in
alphabetical order of distribution names wins), is *refused*: it is listed by ``dnn plugins`` with
status ``refused`` and a :class:`UserWarning` names it, but it is never loaded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import sys
import warnings
from dataclasses import dataclass

from dnn.errors import PluginLoadError, UnknownPluginError, UsageError

DISTRIBUTION = "dnn-framework"
# What a plugin's own code may raise and dnn reports as that plugin's failure: sys.exit() in a
# plugin is a failure like any other, not the end of dnn (Ctrl-C still is).
PLUGIN_FAILURES = (Exception, SystemExit)
GROUPS = {"backend": "dnn.backends", "optimizer": "dnn.optimizers", "dataset": "dnn.datasets"}


@dataclass(frozen=True)
class Plugin:
    """One entry point: ``name = "module:attribute"`` declared by ``distribution``."""

    kind: str
    name: str
    value: str
    distribution: str
    version: str
    entry_point: importlib.metadata.EntryPoint

    @property
    def builtin(self) -> bool:
        return self.distribution == DISTRIBUTION

    @property
    def origin(self) -> str:
        """``"optimizer 'lion' from dnn-lion 0.1.0"``: who to blame in a message."""
        return f"{self.kind} {self.name!r} from {self.distribution} {self.version}"


def failure(origin: str, stage: str, error: BaseException) -> str:
    """The one wording of a plugin's own code raising: ``"<origin> failed <stage>:
    <error type>: <error>"`` (``stage`` such as ``"to start"``; empty for none)."""
    stage = f" {stage}" if stage else ""
    return f"{origin} failed{stage}: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class Catalog:
    """The plugins of one kind: those that can be loaded, and those refused for a name clash."""

    plugins: dict  # name -> Plugin
    refused: tuple  # (Plugin, reason) pairs


def _plugin(kind: str, entry_point) -> Plugin:
    dist = entry_point.dist
    name = dist.metadata["Name"] if dist is not None else "unknown"
    version = dist.version if dist is not None else "unknown"
    return Plugin(kind, entry_point.name, entry_point.value, name, version, entry_point)


@functools.cache
def catalog(kind: str) -> Catalog:
    """All entry points of ``kind`` ("backend", "optimizer" or "dataset"), read once."""
    found = [_plugin(kind, ep) for ep in importlib.metadata.entry_points(group=GROUPS[kind])]
    # Built-ins first, then third parties by distribution name: the first of a name wins.
    found.sort(key=lambda p: (not p.builtin, p.distribution.lower(), p.name))
    plugins, refused = {}, []
    for plugin in found:
        winner = plugins.get(plugin.name)
        if winner is None:
            plugins[plugin.name] = plugin
        elif (winner.distribution, winner.value) != (plugin.distribution, plugin.value):
            reason = (f"{kind} name {plugin.name!r} is already provided by "
                      f"{winner.distribution}; this one is ignored")
            refused.append((plugin, reason))
            warnings.warn(f"plugin {plugin.name!r} from {plugin.distribution}: {reason}",
                          stacklevel=2)
        # else: the same distribution listed twice (editable installs): collapse.
    return Catalog(plugins, tuple(refused))


def names(kind: str) -> list[str]:
    """Sorted names of the installed plugins of ``kind``."""
    return sorted(catalog(kind).plugins)


def _not_installed_hint() -> str:
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return (f"; {DISTRIBUTION} is not installed, so its built-in plugins are not "
                "registered: run `pip install -e .` in the source tree")
    return ""


def find(kind: str, name: str) -> Plugin:
    """The plugin called ``name``; :class:`UnknownPluginError` lists the installed ones."""
    plugin = catalog(kind).plugins.get(name)
    if plugin is None:
        installed = ", ".join(names(kind)) or "none"
        raise UnknownPluginError(
            f"unknown {kind} {name!r}; installed: {installed}{_not_installed_hint()}")
    return plugin


@functools.cache
def load(kind: str, name: str):
    """Import and return the object (usually a class) registered as ``name`` for ``kind``."""
    plugin = find(kind, name)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what a plugin prints is not our output
            return plugin.entry_point.load()
    except PLUGIN_FAILURES as error:
        raise PluginLoadError(failure(plugin.origin, "to load", error)) from error


def load_class(kind: str, name: str, fits, what: str) -> type:
    """The class registered as ``name`` for ``kind``, held to its kind: a
    :class:`PluginLoadError` ``"<origin> is not <what>"`` when the entry point names something
    other than a class for which ``fits(cls)`` is true."""
    cls = load(kind, name)
    if not (isinstance(cls, type) and fits(cls)):
        raise PluginLoadError(f"{find(kind, name).origin} is not {what}")
    return cls


def parse_options(cls, options: dict[str, str]) -> dict:
    """Typed keyword arguments for ``cls(**kwargs)`` from ``KEY=VALUE`` strings.

    Each value is converted with the type of the constructor's default for that key (bool
    accepts true/false/1/0/yes/no).  A key the constructor does not take, or a value that does
    not convert, is a :class:`UsageError` naming the accepted keys.
    """
    parameters = {
        name: parameter for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    accepted = ", ".join(parameters) or "none"
    typed = {}
    for key, text in options.items():
        if key not in parameters:
            raise UsageError(f"{cls.__name__} takes no option {key!r}; accepted: {accepted}")
        default = parameters[key].default
        typed[key] = _convert(cls.__name__, key, text, default)
    return typed


def _convert(owner: str, key: str, text: str, default):
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"{owner} option {key!r} wants true or false, not {text!r}")
    if isinstance(default, (int, float)):
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"{owner} option {key!r} wants a number, not {text!r}") from None
        return int(number) if isinstance(default, int) and number.is_integer() else number
    return text


def _registered(kind: str, cls) -> Plugin | None:
    """The plugin whose entry point points at class ``cls``, or None."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for plugin in catalog(kind).plugins.values():
        if plugin.value.replace(" ", "") == target:
            return plugin
    return None


def name_of(kind: str, cls) -> str:
    """The registered name of class ``cls`` (the entry point that points at it)."""
    plugin = _registered(kind, cls)
    if plugin is None:
        raise UsageError(f"{kind} class {cls.__module__}:{cls.__qualname__} is not registered "
                         f"in the dnn.{kind}s entry points")
    return plugin.name


def origin_of(kind: str, cls) -> str:
    """:attr:`Plugin.origin` of class ``cls``, or ``"optimizer class Lion"`` for a class used
    without an entry point."""
    plugin = _registered(kind, cls)
    return plugin.origin if plugin is not None else f"{kind} class {cls.__qualname__}"
