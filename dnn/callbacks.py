"""Callbacks: hooks into :meth:`dnn.Sequential.fit`, the :class:`History` it returns, and the two
printers behind ``fit(verbose=...)``: a live bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

REFRESH_SECONDS = 0.25  # each refresh reads the running loss from the device: keep them rare
BAR_WIDTH = 30


@dataclass
class History:
    """What :meth:`Sequential.fit` returns: ``history["loss"]`` and friends, one per epoch."""

    history: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)  # one dict of logs per epoch

    def append(self, logs: dict) -> None:
        self.epochs.append(logs)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


class Callback:
    """Hooks into :meth:`Sequential.fit`; override what you need."""

    def on_train_begin(self, model, epochs: int, steps_per_epoch: int) -> None:
        pass

    def on_batch_end(self, step: int, samples_seen: int, running_loss) -> None:
        """``running_loss()`` reads the epoch's mean loss so far (a device sync: call sparingly)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self) -> None:
        """Called once when ``fit`` ends, whether it finished or raised (Ctrl-C included)."""


def format_epoch(epoch: int, epochs: int, logs: dict) -> str:
    """``epoch 1/5: loss 0.2587 accuracy 0.9250 test_loss ... (1.23 s)``."""
    metrics = " ".join(f"{key.replace('val_', 'test_')} {value:.4f}"
                       for key, value in logs.items() if key != "seconds")
    return f"epoch {epoch}/{epochs}: {metrics} ({logs['seconds']:.2f} s)"


class EpochLines(Callback):
    """Prints one line per epoch to ``stream`` (standard output by default)."""

    def __init__(self, stream=None):
        self.stream = stream

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def on_train_begin(self, model, epochs, steps_per_epoch):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        self._write(format_epoch(epoch, self.epochs, logs) + "\n")


class ProgressBar(EpochLines):
    """A bar per epoch, redrawn in place, with the running loss, throughput and time left;
    then the epoch's line."""

    def on_train_begin(self, model, epochs, steps_per_epoch):
        super().on_train_begin(model, epochs, steps_per_epoch)
        self.steps = steps_per_epoch
        self.drawn = None  # the line on screen, while a bar is open

    def on_batch_end(self, step, samples_seen, running_loss):
        now = time.perf_counter()
        if self.drawn is None:
            # The clock starts when the first batch ends, so the rate leaves that batch out.
            self.started, self.started_step, self.started_seen = now, step, samples_seen
            self.last_refresh = None
        elif now - self.last_refresh < REFRESH_SECONDS and step < self.steps:
            return
        self.last_refresh = now
        done = step / self.steps
        text = f"training [{'#' * round(BAR_WIDTH * done):-<{BAR_WIDTH}}] {done:4.0%}"
        if step > self.started_step and now > self.started:
            seconds_per_step = (now - self.started) / (step - self.started_step)
            text += f" {_clock(seconds_per_step * (self.steps - step))}"
        text += f" loss {running_loss():.4f}"
        if now > self.started:
            text += f" {(samples_seen - self.started_seen) / (now - self.started):,.0f} samples/s"
        self._write("\r" + text.ljust(len(self.drawn or "")))
        self.drawn = text

    def on_epoch_end(self, epoch, logs):
        self._close_bar()
        super().on_epoch_end(epoch, logs)

    def on_train_end(self):
        self._close_bar()  # when fit raised mid-epoch: the error gets a line of its own

    def _close_bar(self):
        """End the bar's line, so that what follows starts a line of its own."""
        if self.drawn is not None:
            self._write("\n")
            self.drawn = None


def _clock(seconds: float) -> str:
    """``"00:01:05"``."""
    seconds = round(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
