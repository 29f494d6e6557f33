"""Set the learning rate of each epoch from a schedule."""

from __future__ import annotations

import inspect

from dnn.callbacks.callback import Callback
from dnn.errors import ArgumentTypeError
from dnn.utils import is_number


def log_learning_rate(model, logs) -> None:
    """Put the optimizer's learning rate in the epoch's ``logs``, as Keras does."""
    if logs is not None:
        logs["learning_rate"] = float(model.optimizer.learning_rate)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch to what ``schedule``
    returns for it, as Keras does; the rate is added to the epoch's logs as
    ``"learning_rate"``.

    Args:
        schedule: a function of the epoch's index (an int, from 0) and the current learning
            rate (a float) that returns the epoch's learning rate (a float), or a function of
            the epoch's index alone.
        verbose: int, 0 quiet, 1 a line each epoch with the rate it sets.

    Example: keep the rate for ten epochs, then decay it exponentially::

        def scheduler(epoch, lr):
            return lr if epoch < 10 else lr * math.exp(-0.1)

        model.fit(x, y, epochs=15, callbacks=[LearningRateScheduler(scheduler)])
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ArgumentTypeError(f"LearningRateScheduler schedule must be a function of the "
                                    f"epoch (and the learning rate), not {schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        self._takes_rate = _takes_two_arguments(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if self._takes_rate:
            learning_rate = self.schedule(epoch, float(optimizer.learning_rate))
        else:
            learning_rate = self.schedule(epoch)
        if not is_number(learning_rate):
            raise ArgumentTypeError(f"The output of the `schedule` function should be a float. "
                                    f"Got: {learning_rate!r}")
        optimizer.learning_rate = float(learning_rate)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        log_learning_rate(self.model, logs)


def _takes_two_arguments(function) -> bool:
    """Whether ``function`` can be called with the epoch and the learning rate (Keras' newer
    form of a schedule) rather than with the epoch alone."""
    try:
        inspect.signature(function).bind(0, 0.0)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some built-in functions): try the newer form
        return True
    return True
