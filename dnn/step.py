"""The training step as fixed arrays in, fixed arrays out, and the runner that replays it.

A :class:`TrainingStep` reads only arrays that live as long as the ``fit`` that made it (the
device data, its index buffer, the weights, the optimizer state, the layers' and the model's
buffers) and writes only those, so a backend can capture it once and replay it for every batch
of that shape, as a CUDA graph does.  What changes from batch to batch is written into its
index buffer before each run; what it adds up (the epoch's loss and correct count) stays on the
device until the epoch ends.

:class:`ReplayedStep` runs a step eagerly once (compiling kernels, allocating buffers), then has
the backend capture it (:meth:`dnn.backends.Backend.capture`) and checks its own work: the first
two replays are each compared, array by array and bit for bit, with the eager step from the
same state on the same batch.  The second comparison catches a value read on the host at
capture time that changes from step to step (the captured step keeps the old one).  A capture
that fails or a replay that differs falls back to the eager step for the rest of the run, with
one :class:`GraphFallbackWarning` naming the reason: never a wrong result for speed.
"""

from __future__ import annotations

import warnings

import numpy as np

from dnn.errors import CaptureError


class GraphFallbackWarning(UserWarning):
    """A captured training step could not be used; the step runs eagerly instead."""


class TrainingStep:
    """One optimizer step of ``model`` on the rows of ``x_data`` ``(N, features)`` and
    ``y_data`` ``(N, k)`` named by ``indices`` ``(n,)`` (int64, written by the caller before
    each run), with ``loss`` (the model's, or one taking its targets in another form), adding
    the batch's summed loss to ``totals.loss`` and, with metrics, its correct count to
    ``totals.correct``."""

    def __init__(self, model, x_data, y_data, rows: int, totals: EpochTotals, loss):
        self.model, self.x_data, self.y_data, self.totals = model, x_data, y_data, totals
        self.loss = loss
        self.indices = model.backend.empty((rows,), "int64")

    def __call__(self) -> None:
        model = self.model
        x = model._gather("x_batch", self.x_data, self.indices)
        y = model._gather("y_batch", self.y_data, self.indices)
        loss_sum, output = model._train_step(x, y, self.loss)
        self.totals.loss += loss_sum
        if model.metrics:
            self.totals.correct += model.backend.correct_count(output, y,
                                                               model._output_threshold)

    def state(self) -> list:
        """Every array a run changes that outlives it: the weights, the layers' step state,
        the optimizer's state and the epoch totals (the buffers in between are rewritten by
        every run)."""
        model, optimizer = self.model, self.model.optimizer
        return [*model.params, *(a for layer in model.layers for a in layer.step_state()),
                *(a for s in optimizer.states for a in s.values()),
                *optimizer.device_arrays(), self.totals.loss, self.totals.correct]


class EpochTotals:
    """The epoch's summed loss (0-d, the model's dtype) and correct count (0-d int64), on the
    device, read once an epoch (or when a progress display asks)."""

    def __init__(self, backend, dtype):
        xp = backend.xp
        self.loss = xp.zeros((), dtype=backend.dtype(dtype))
        self.correct = xp.zeros((), dtype=xp.int64)

    def reset(self) -> None:
        self.loss[...] = 0
        self.correct[...] = 0


class ReplayedStep:
    """Runs ``step`` (a :class:`TrainingStep`) eagerly, or captured and replayed where its
    backend can capture, checking the first two replays (module docstring)."""

    CHECKED_REPLAYS = 2

    def __init__(self, step: TrainingStep):
        self.step = step
        self.indices = step.indices  # written by the caller before each run
        self.backend = step.model.backend
        self.graph = None
        self.runs = 0  # eager runs and replays
        self.replays = 0
        self.eager = False  # decided for the rest of the run

    def __call__(self) -> None:
        self.runs += 1
        if self.eager:
            self.step()
            return
        if self.runs == 1:  # a warm-up: kernels compiled, buffers and graph memory allocated
            with self.backend.graph_kernels():
                self.step()
            return
        if self.graph is None:
            self._capture()
            if self.graph is None:
                return  # it ran eagerly
        if self.replays < self.CHECKED_REPLAYS:
            self._checked_replay()
        else:
            self._replay()

    def _replay(self) -> None:
        try:
            self.graph.replay()
        except Exception as error:  # a launch that failed ran nothing: go on eagerly
            self.graph, self.eager = None, True
            warnings.warn(f"the training step runs without a captured graph: replaying it "
                          f"failed: {type(error).__name__}: {error}", GraphFallbackWarning,
                          stacklevel=4)
            self.step()
            return
        self.replays += 1
        self.step.model.optimizer.iterations += 1  # the host's count, which replays skip

    def _capture(self) -> None:
        """Capture the step; without a capture (the backend has none, or it failed), run it
        eagerly now and from here on."""
        if not self.backend.captures_steps():  # no graphs here: nothing to check either
            self.eager = True
            self.step()
            return
        optimizer = self.step.model.optimizer
        before, iterations = self._snapshot(), optimizer.iterations
        try:
            with self.backend.graph_kernels():
                self.graph = self.backend.capture(self.step)
        except CaptureError as error:
            self._fall_back(f"capturing it failed: {error}", before, iterations)
            self.step()
            return
        # A capture runs the step's Python: its host effects (and, on a backend whose capture
        # also computes, its device effects) are undone before the first replay.
        self._restore(before)
        optimizer.iterations = iterations
        if self.graph is None:  # the backend declined this step: eager, without a warning
            self.eager = True
            self.step()

    def _checked_replay(self) -> None:
        optimizer = self.step.model.optimizer
        before, iterations = self._snapshot(), optimizer.iterations
        with self.backend.graph_kernels():
            self.step()
        expected, expected_iterations = self._snapshot(), optimizer.iterations
        self._restore(before)
        optimizer.iterations = iterations
        self._replay()
        differing = [index for index, (ours, reference) in enumerate(zip(self._snapshot(),
                                                                         expected))
                     if not _same_bits(ours, reference)]
        if differing:
            self._fall_back(f"replay {self.replays} differs from the eager step in "
                            f"{len(differing)} of its {len(expected)} arrays",
                            expected, expected_iterations)

    def _fall_back(self, reason: str, state: list, iterations: int) -> None:
        """Run eagerly from here on, from ``state`` (the eager step's result)."""
        self.graph, self.eager = None, True
        self._restore(state)
        self.step.model.optimizer.iterations = iterations
        warnings.warn(f"the training step runs without a captured graph: {reason}",
                      GraphFallbackWarning, stacklevel=4)

    def _snapshot(self) -> list:
        return [self.backend.to_numpy(array) for array in self.step.state()]

    def _restore(self, snapshot: list) -> None:
        for array, saved in zip(self.step.state(), snapshot):
            array[...] = self.backend.asarray(saved)


def _same_bits(ours: np.ndarray, reference: np.ndarray) -> bool:
    """Equal shapes and bytes (NaN for NaN, -0.0 for -0.0)."""
    return ours.shape == reference.shape and ours.tobytes() == reference.tobytes()
