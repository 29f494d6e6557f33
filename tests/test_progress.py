"""The command line's progress display, driven batch by batch with a fake clock."""

import pytest

from dnn import progress


class RecordingBar:
    """Stands in for click's progress bar: records every update."""

    def __init__(self, **kwargs):
        self.updates = []
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        return False

    def update(self, steps, text):
        self.updates.append((steps, text))


@pytest.fixture
def bar_and_clock(monkeypatch):
    bars, clock = [], [10.0]
    monkeypatch.setattr(progress.click, "progressbar",
                        lambda **kwargs: bars.append(RecordingBar(**kwargs)) or bars[-1])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    return bars, clock


def test_the_rate_counts_from_the_end_of_the_first_batch(bar_and_clock):
    bars, clock = bar_and_clock
    display = progress.ProgressBar()
    display.on_train_begin(None, epochs=1, steps_per_epoch=10)
    for step in range(1, 11):  # 128 samples a batch, 0.1 s each after the first
        display.on_batch_end(step, 128 * step, lambda: 0.5)
        clock[0] += 0.1
    updates = bars[0].updates
    assert updates[0] == (4, "loss 0.5000 1,280 samples/s")  # 384 samples in 0.3 s
    assert sum(steps for steps, _ in updates) == 10
    assert updates[-1][1] == "loss 0.5000 1,280 samples/s"


def test_a_one_batch_epoch_shows_the_loss_without_a_rate(bar_and_clock):
    bars, _ = bar_and_clock
    display = progress.ProgressBar()
    display.on_train_begin(None, epochs=1, steps_per_epoch=1)
    display.on_batch_end(1, 60, lambda: 0.25)
    assert bars[0].updates == [(1, "loss 0.2500")]


def test_a_bar_left_open_by_an_error_is_closed_when_training_ends(bar_and_clock):
    """Closing ends the bar's line and shows the terminal's cursor again, so the error that
    stopped training prints on a line of its own."""
    bars, _ = bar_and_clock
    display = progress.ProgressBar()
    display.on_train_begin(None, epochs=2, steps_per_epoch=10)
    display.on_batch_end(1, 128, lambda: 0.5)
    display.on_train_end()  # fit raised before the epoch ended
    assert bars[0].closed
    display.on_train_end()  # and a second call is harmless
