"""Metrics by name.  Each is counted by a backend kernel (``Backend.correct_count`` for
accuracy), on the device, so that an epoch reads it once."""

from __future__ import annotations

from dnn.errors import ArgumentTypeError, UsageError

METRICS = ("accuracy",)
ALIASES = {"acc": "accuracy"}  # Keras' short name


def check(metrics) -> tuple:
    """The metric names, validated (one name alone, ``"accuracy"``, counts as a list of one)."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        metrics = tuple(metrics or ())
    except TypeError:
        raise ArgumentTypeError(f"metrics must be a list of names, not "
                                f"{type(metrics).__name__}") from None
    if not all(isinstance(name, str) for name in metrics):
        wrong = next(name for name in metrics if not isinstance(name, str))
        raise ArgumentTypeError(f"metrics must be names, not {type(wrong).__name__}")
    metrics = tuple(ALIASES.get(name, name) for name in metrics)
    for name in metrics:
        if name not in METRICS:
            raise UsageError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return metrics

