"""The training step as fixed arrays in, fixed arrays out, and the runner that replays it.

A :class:`TrainingStep` reads only arrays that live as long as the ``fit`` that made it (the
device data, its index buffer, the weights, the optimizer state, the layers' and the model's
buffers) and writes only those, so a backend can capture it once and replay it for every batch
of that shape, as a CUDA graph does.  What changes from batch to batch is written into its
index buffer (or into the arrays it reads, for batches that come from a generator) before each
run, and what may change between runs (the optimizer's step count, learning rate and other
hyper-parameters) lives in device arrays the step reads; what it adds up (the epoch's loss and
metrics) stays on the device until the epoch ends.

:class:`ReplayedStep` runs a step eagerly once (compiling kernels, allocating buffers), then has
the backend capture it (:meth:`dnn.backends.Backend.capture`) and checks its own work: the first
two replays are each compared, array by array and bit for bit, with the eager step from the
same state on the same batch.  The second comparison catches a value read on the host at
capture time that changes from step to step (the captured step keeps the old one).  A warm-up,
capture, check or replay that fails, or a replay that differs, falls back to the eager step for
the rest of the run, with one :class:`GraphFallbackWarning` naming the reason: never a wrong
result for speed, and no error of the capture machinery out of ``fit`` (but for a fault the
GPU reports later, at the next read of a result, which no step can recover from).
"""

from __future__ import annotations

import warnings

import numpy as np

from dnn.errors import CaptureError, DnnError


class GraphFallbackWarning(UserWarning):
    """A captured training step could not be used; the step runs eagerly instead."""


class TrainingStep:
    """One :meth:`dnn.trainers.Trainer.train_step` on the rows of ``data`` (a
    :class:`dnn.trainers.data.DeviceData`: inputs ``(N, features)``, targets, sample weights
    ``(N,)`` or None) named by ``indices`` ``(rows,)`` (int64, written by the caller before
    each run), gathered into the trainer's batch buffers."""

    def __init__(self, trainer, data, rows: int):
        self.trainer, self.data = trainer, data
        self.indices = trainer.backend.empty((rows,), "int64")

    def __call__(self) -> None:
        trainer, data = self.trainer, self.data
        weights = (None if data.sample_weight is None
                   else trainer.gather("w_batch", data.sample_weight, self.indices))
        trainer.train_step(trainer.gather("x_batch", data.x, self.indices),
                           trainer.gather("y_batch", data.y, self.indices), weights)

    def state(self) -> list:
        """Every array a run changes that outlives it (:meth:`Trainer.step_state`)."""
        return self.trainer.step_state()


class ReplayedStep:
    """Runs ``step`` (a :class:`TrainingStep`) eagerly, or captured and replayed where its
    backend can capture, checking the first two replays (module docstring).  Whatever fails
    on the way (the warm-up, the capture, the eager step a replay is checked against, a
    replay) sends it back to the eager step from the state before, with one warning; only a
    dnn error of the step itself (a plugin breaking its contract) is raised, as it would be
    without a capture."""

    CHECKED_REPLAYS = 2

    def __init__(self, step: TrainingStep):
        self.step = step
        self.indices = step.indices  # written by the caller before each run
        self.backend = step.trainer.backend
        self.graph = None
        self.runs = 0  # eager runs and replays
        self.replays = 0
        self.eager = False  # decided for the rest of the run

    def __call__(self) -> None:
        self.runs += 1
        if not self.eager and not self.backend.captures_steps():  # no graphs, nothing to check
            self.eager = True
        if self.eager:
            self.step()
        elif self.runs == 1:  # kernels compiled, buffers and the capture's memory allocated
            self._in_graph_kernels(self.step, "its warm-up", self._snapshot())
        elif self.graph is not None or self._capture():  # else it ran eagerly
            if self.replays < self.CHECKED_REPLAYS:
                self._checked_replay()
            else:
                self._replay()

    def _in_graph_kernels(self, action, what: str, before: list):
        """``action()``'s result, run with the kernels of a captured step from the state
        ``before``; if that fails, None after falling back (``self.eager`` set): the state
        restored and the step run eagerly instead.  A dnn error that is not the capture's (a
        plugin breaking its contract) is the user's to see: raised, from the state
        restored."""
        try:
            with self.backend.graph_kernels():
                return action()
        except DnnError as error:
            if not isinstance(error, CaptureError):
                self._restore(before)
                raise
            reason = str(error)
        except Exception as error:  # whatever the GPU stack raises: the eager step decides
            reason = f"{type(error).__name__}: {error}"
        self._fall_back(f"{what} failed: {reason}", before)
        self.step()
        return None

    def _capture(self) -> bool:
        """Capture the step: True when its graph is ready to replay; else the step ran
        eagerly (the capture failed, or the backend declined it)."""
        before = self._snapshot()
        self.graph = self._in_graph_kernels(lambda: self.backend.capture(self.step),
                                            "capturing it", before)
        if self.eager:
            return False
        # A capture runs the step's Python: its host effects (and, on a backend whose capture
        # also computes, its device effects) are undone before the first replay.
        self._restore(before)
        if self.graph is None:  # the backend declined this step: eager, without a warning
            self.eager = True
            self.step()
            return False
        return True

    def _checked_replay(self) -> None:
        before = self._snapshot()
        self._in_graph_kernels(self.step, "the eager step it is checked against", before)
        if self.eager:
            return
        expected = self._snapshot()
        self._restore(before)
        if not self._replay(expected):
            return
        differing = [index for index, (ours, reference) in enumerate(zip(self._snapshot(),
                                                                         expected))
                     if not _same_bits(ours, reference)]
        if differing:
            self._fall_back(f"replay {self.replays} differs from the eager step in "
                            f"{len(differing)} of its {len(expected)} arrays", expected)

    def _replay(self, eager_result: list | None = None) -> bool:
        """Replay the graph; True when it ran.  A launch that failed ran nothing: the step
        then runs eagerly from here on (or ``eager_result`` is taken, where a checked replay
        already computed it)."""
        try:
            self.graph.replay()
        except Exception as error:
            self._fall_back(f"replaying it failed: {type(error).__name__}: {error}",
                            eager_result)
            if eager_result is None:
                self.step()
            return False
        self.replays += 1
        return True

    def _fall_back(self, reason: str, state: list | None) -> None:
        """Run eagerly from here on, from ``state`` (None: from the arrays as they are)."""
        self.graph, self.eager = None, True
        if state is not None:
            self._restore(state)
        warnings.warn(f"the training step runs without a captured graph: {reason}",
                      GraphFallbackWarning, stacklevel=5)

    def _snapshot(self) -> list:
        return [self.backend.to_numpy(array) for array in self.step.state()]

    def _restore(self, snapshot: list) -> None:
        for array, saved in zip(self.step.state(), snapshot):
            array[...] = self.backend.asarray(saved)


def _same_bits(ours: np.ndarray, reference: np.ndarray) -> bool:
    """Equal shapes and bytes (NaN for NaN, -0.0 for -0.0)."""
    return ours.shape == reference.shape and ours.tobytes() == reference.tobytes()
