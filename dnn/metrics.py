"""Metrics by name.  Each is counted by a backend kernel (``Backend.correct_count`` for
accuracy), on the device, so that an epoch reads it once."""

from __future__ import annotations

from dnn.errors import UsageError

METRICS = ("accuracy",)


def check(metrics) -> tuple:
    """The metric names, validated (one name alone, ``"accuracy"``, counts as a list of one)."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics or ())
    for name in metrics:
        if name not in METRICS:
            raise UsageError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return metrics

