"""The progress display of ``fit``: Keras' :class:`ProgbarLogger`, which shows what
``verbose`` asks for: a live bar (:class:`ProgressBar`, ``verbose=1``), two lines per epoch
(:class:`EpochLines`, ``verbose=2``) or nothing (``verbose=0``)."""

from __future__ import annotations

import sys
import time

from dnn.callbacks.callback import Callback
from dnn.errors import UsageError

REFRESH_SECONDS = 0.25  # each refresh reads the running loss from the device: keep them rare
BAR_WIDTH = 30


def figures(logs) -> str:
    """``"loss: 0.2587 - accuracy: 0.9250"`` for ``{"loss": ..., "accuracy": ...}``."""
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


def _then_figures(logs) -> str:
    """``" - "`` and the figures of ``logs``, to follow a progress line; empty for none."""
    return f" - {figures(logs)}" if logs else ""


def _duration(seconds: float) -> str:
    """Keras' ``"3s"`` or ``"1:02"``, tenths below ten seconds."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}:{seconds % 60:02d}"


class _Printer(Callback):
    """What both printers share: the stream, the epoch's clock and its closing line.  Output
    alone (``writes_files``): data-parallel, rank 0 prints."""

    writes_files = True

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._write(f"Epoch {epoch + 1}/{self.params['epochs']}\n")
        self.started = time.perf_counter()

    def _summary(self, logs) -> str:
        steps, spent = self.params["steps"], time.perf_counter() - self.started
        return (f"{steps}/{steps} - {_duration(spent)} {1000 * spent / max(steps, 1):.0f}ms/step"
                + _then_figures(logs))


class EpochLines(_Printer):
    """Two lines per epoch, as Keras' ``verbose=2``: ``Epoch 2/5`` and its summary."""

    def on_epoch_end(self, epoch, logs=None):
        self._write(self._summary(logs) + "\n")


class ProgressBar(_Printer):
    """Keras' bar: ``Epoch 2/5``, then ``312/469 [=====>....] - ETA: 3.2s - loss: ...``
    redrawn in place, ending as the epoch's summary on the same line."""

    def on_train_begin(self, logs=None):
        self.drawn = None  # the line on screen, while a bar is open

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.drawn, self.last_refresh = None, None

    def on_train_batch_end(self, batch, logs=None):
        step, steps, now = batch + 1, self.params["steps"], time.perf_counter()
        if step == steps or (self.last_refresh is not None
                             and now - self.last_refresh < REFRESH_SECONDS):
            return  # the last step's line is the epoch's summary, after its validation
        self.last_refresh = now
        done = int(BAR_WIDTH * step / steps)
        bar = "=" * max(done - 1, 0) + (">" if done else "") + "." * (BAR_WIDTH - done)
        eta = (now - self.started) / step * (steps - step)
        self._draw(f"{step}/{steps} [{bar}] - ETA: {_duration(eta)}{_then_figures(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        summary = self._summary(logs)
        steps = self.params["steps"]
        self._draw(summary.replace(f"{steps}/{steps}", f"{steps}/{steps} [{'=' * BAR_WIDTH}]",
                                   1))
        self._end_line()

    def on_train_end(self, logs=None):
        self._end_line()  # when fit raised mid-epoch: the error gets a line of its own

    def _draw(self, text: str) -> None:
        self._write("\r" + text.ljust(len(self.drawn or "")))
        self.drawn = text

    def _end_line(self) -> None:
        if self.drawn is not None:
            self._write("\n")
            self.drawn = None


def check_verbose(verbose) -> None:
    """A UsageError unless ``verbose`` is one of Keras' values: 0, 1, 2 or ``"auto"``."""
    if verbose not in (0, 1, 2, "auto"):
        raise UsageError(f"verbose must be 0, 1, 2 or 'auto', not {verbose!r}")


def _display(verbose) -> _Printer | None:
    """The printer that ``verbose`` asks for: 0 none, 1 the bar, 2 the lines, ``"auto"`` the
    bar on a terminal and the lines elsewhere."""
    check_verbose(verbose)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 0:
        return None
    return ProgressBar() if verbose == 1 else EpochLines()


class ProgbarLogger(Callback):
    """Keras' progress display, which ``fit`` adds unless ``verbose=0``: it shows what
    ``params["verbose"]`` asks for, a live bar on stdout for 1, two lines per epoch for 2,
    nothing for 0, and for ``"auto"`` the bar on a terminal and the lines elsewhere.

    It draws training only: validation within ``fit`` is silent, as in Keras (its figures
    join the epoch's summary), and the evaluation and prediction hooks show nothing.

    Output alone (``writes_files``): data-parallel, rank 0 prints.
    """

    writes_files = True

    def __init__(self):
        super().__init__()
        self.display = None

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.display = _display(params.get("verbose", 1))
        if self.display is not None:
            self.display.set_params(params)

    def _forward(self, hook: str, *args) -> None:
        """Call ``hook`` of the printer, if ``verbose`` asks for one."""
        if self.display is not None:
            getattr(self.display, hook)(*args)

    def on_train_begin(self, logs=None):
        self._forward("on_train_begin", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._forward("on_epoch_begin", epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._forward("on_train_batch_end", batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._forward("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._forward("on_train_end", logs)
