"""Training progress for the command line: a live bar on a terminal, one line per epoch
otherwise (logs, CI)."""

from __future__ import annotations

import time

import click

from dnn.model import Callback

REFRESH_SECONDS = 0.25  # each refresh reads the running loss from the device: keep them rare


def format_epoch(epoch: int, epochs: int, logs: dict) -> str:
    """``epoch 1/5: loss 0.2587 accuracy 0.9250 test_loss ... (1.23 s)``."""
    metrics = " ".join(f"{key.replace('val_', 'test_')} {value:.4f}"
                       for key, value in logs.items() if key != "seconds")
    return f"epoch {epoch}/{epochs}: {metrics} ({logs['seconds']:.2f} s)"


class EpochLines(Callback):
    """Prints one line per epoch."""

    def on_train_begin(self, model, epochs, steps_per_epoch):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        click.echo(format_epoch(epoch, self.epochs, logs))


class ProgressBar(EpochLines):
    """A click progress bar per epoch showing the running loss and throughput."""

    def on_train_begin(self, model, epochs, steps_per_epoch):
        super().on_train_begin(model, epochs, steps_per_epoch)
        self.steps = steps_per_epoch
        self.bar = None

    def on_batch_end(self, step, samples_seen, running_loss):
        now = time.perf_counter()
        if self.bar is None:
            self.bar = click.progressbar(length=self.steps, label="training", width=30,
                                         show_eta=True, item_show_func=lambda text: text)
            self.bar.__enter__()
            # The clock starts when the first batch ends, so the rate leaves that batch out.
            self.started, self.started_seen = now, samples_seen
            self.shown_steps, self.last_refresh = 0, now
        if now - self.last_refresh < REFRESH_SECONDS and step < self.steps:
            return
        text = f"loss {running_loss():.4f}"
        if now > self.started:
            text += f" {(samples_seen - self.started_seen) / (now - self.started):,.0f} samples/s"
        self.bar.update(step - self.shown_steps, text)
        self.shown_steps, self.last_refresh = step, now

    def on_epoch_end(self, epoch, logs):
        self._close_bar()
        super().on_epoch_end(epoch, logs)

    def on_train_end(self):
        self._close_bar()  # when fit raised mid-epoch: the error gets a line of its own

    def _close_bar(self):
        """End the bar's line and show the terminal's cursor again."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
