"""Metrics, counted on the device so that an epoch reads them once."""

from __future__ import annotations

from dnn.errors import UsageError

METRICS = ("accuracy",)


def check(metrics) -> tuple:
    """The metric names, validated."""
    metrics = tuple(metrics or ())
    for name in metrics:
        if name not in METRICS:
            raise UsageError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return metrics


def correct_count(xp, output, targets):
    """0-d count of samples whose predicted class matches the target.

    ``output`` is ``(n, k)`` (probabilities or logits: the argmax is the same); ``targets`` are
    one-hot ``(n, k)`` or labels ``(n,)``.  With ``k == 1`` the prediction is ``output > 0.5``.
    """
    if output.shape[1] == 1:
        predicted = xp.astype(output[:, 0] > 0.5, targets.dtype)
        labels = xp.reshape(targets, (-1,))
    else:
        predicted = xp.argmax(output, axis=1)
        labels = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
    return xp.sum(xp.astype(predicted == xp.astype(labels, predicted.dtype), xp.int64))
