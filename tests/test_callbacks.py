"""The printers behind ``fit(verbose=...)``, driven batch by batch with a fake clock, and the
library's independence from the command line's toolkit."""

import io
import subprocess
import sys

import pytest

from dnn import callbacks


@pytest.fixture
def clock(monkeypatch):
    now = [10.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    return now


def frames(stream: io.StringIO) -> list[str]:
    """Each redraw of the bar, without its padding."""
    return [frame.rstrip() for frame in stream.getvalue().split("\r") if frame.strip()]


def test_the_bar_shows_progress_time_left_loss_and_rate_from_the_first_batch_end(clock):
    stream = io.StringIO()
    display = callbacks.ProgressBar(stream)
    display.on_train_begin(None, epochs=1, steps_per_epoch=10)
    for step in range(1, 11):  # 128 samples a batch, 0.1 s each after the first
        display.on_batch_end(step, 128 * step, lambda: 0.5)
        clock[0] += 0.1
    drawn = frames(stream)
    assert drawn[0] == f"training [###{'-' * 27}]  10% loss 0.5000"
    # 0.3 s after the first batch: 3 more steps, 384 samples; 6 steps of 0.1 s left.
    assert drawn[1] == f"training [############{'-' * 18}]  40% 00:00:01 loss 0.5000 1,280 samples/s"
    assert drawn[-1] == f"training [{'#' * 30}] 100% 00:00:00 loss 0.5000 1,280 samples/s"


def test_the_epoch_line_follows_the_bar_on_a_line_of_its_own(clock):
    stream = io.StringIO()
    display = callbacks.ProgressBar(stream)
    display.on_train_begin(None, epochs=2, steps_per_epoch=1)
    display.on_batch_end(1, 60, lambda: 0.25)
    display.on_epoch_end(1, {"loss": 0.25, "accuracy": 0.5, "seconds": 1.5})
    assert stream.getvalue().endswith(
        "loss 0.2500\nepoch 1/2: loss 0.2500 accuracy 0.5000 (1.50 s)\n")


def test_a_bar_left_open_by_an_error_is_ended_when_training_ends(clock):
    """The error that stopped training then prints on a line of its own."""
    stream = io.StringIO()
    display = callbacks.ProgressBar(stream)
    display.on_train_begin(None, epochs=2, steps_per_epoch=10)
    display.on_batch_end(1, 128, lambda: 0.5)
    display.on_train_end()  # fit raised before the epoch ended
    assert stream.getvalue().endswith("\n")
    display.on_train_end()  # and a second call is harmless
    assert not stream.getvalue().endswith("\n\n")


def test_epoch_lines_call_validation_figures_test_figures():
    stream = io.StringIO()
    display = callbacks.EpochLines(stream)
    display.on_train_begin(None, epochs=5, steps_per_epoch=3)
    display.on_epoch_end(2, {"loss": 0.1, "val_loss": 0.2, "seconds": 0.5})
    assert stream.getvalue() == "epoch 2/5: loss 0.1000 test_loss 0.2000 (0.50 s)\n"


def test_the_library_does_not_import_the_command_line_toolkit():
    code = ("import sys, dnn, dnn.callbacks, dnn.checkpoint, dnn.testing; "
            "import numpy as np; from dnn.layers import Dense; "
            "m = dnn.Sequential([Dense(2)], seed=0); m.compile(optimizer='sgd', loss='mse'); "
            "m.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=2); "
            "print('click' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
