"""Checks of the arguments that the callbacks share."""

from __future__ import annotations

import os

from dnn.errors import ArgumentTypeError


def check_flag(owner: str, name: str, value) -> None:
    """An ArgumentTypeError unless ``value``, the ``name`` argument of ``owner``, is a bool."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{owner} {name} must be True or False, not {value!r}")


def check_path(owner: str, name: str, value) -> str:
    """``value``, the ``name`` argument of ``owner``, as a str path; ArgumentTypeError unless
    it is a str or an ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(f"{owner} {name} must be a path, not {value!r}")
    return os.fspath(value)
