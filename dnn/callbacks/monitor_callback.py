"""The base of the callbacks that watch one figure of the epoch logs."""

from __future__ import annotations

import math

from dnn.callbacks.callback import Callback
from dnn.errors import ArgumentTypeError, UsageError


class MonitorCallback(Callback):
    """A callback that watches one figure of the epoch logs, ``monitor`` (its name, a str),
    for its best value: ``mode`` ``"min"``, ``"max"`` or ``"auto"`` (rising for an accuracy,
    falling otherwise), an improvement being a change of more than ``min_delta``."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        if not isinstance(monitor, str):
            raise ArgumentTypeError(f"{type(self).__name__} monitor must be the name of a "
                                    f"figure of the logs (a str), not {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise UsageError(f"mode must be 'auto', 'min' or 'max', not {mode!r}")
        self.monitor, self.min_delta = monitor, abs(min_delta)
        self.lower_is_better = mode == "min" or (mode == "auto" and "acc" not in monitor)
        self._forget_best()

    def _forget_best(self) -> None:
        """Start over: the next value seen is an improvement."""
        self.best = math.inf if self.lower_is_better else -math.inf

    def _improved(self, logs) -> bool:
        if self.monitor not in (logs or {}):
            raise UsageError(f"{type(self).__name__} watches {self.monitor!r}, which the logs "
                             f"do not have (they have {', '.join(logs or {}) or 'nothing'})")
        value = logs[self.monitor]
        better = (value < self.best - self.min_delta if self.lower_is_better
                  else value > self.best + self.min_delta)
        if better:
            self.best = value
        return better
