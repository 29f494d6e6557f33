"""The training step as fixed arrays in, fixed arrays out, and the runner that replays it.

A :class:`TrainingStep` reads only arrays that live as long as the ``fit`` that made it (the
device data, its index buffer, the weights, the optimizer state, the layers' and the model's
buffers) and writes only those, so a backend can capture it once and replay it for every batch
of that shape, as a CUDA graph does.  What changes from batch to batch is written into its
index buffer (or into the arrays it reads, for batches that come from a generator) before each
run, and what may change between runs (the optimizer's step count, learning rate and other
float hyper-parameters) lives in device arrays the step reads; what it adds up (the epoch's
loss and metrics) stays on the device until the epoch ends.  A setting read on the host (an
optimizer's bool or int hyper-parameter, a layer's or the model's ``trainable``, a
regularizer's factor) is baked into a capture: when one changes (on any rank), the step is
warmed up, captured and checked again.

:class:`ReplayedStep` runs a step eagerly (compiling kernels, allocating buffers, warming the
memory of its capture: again while a run still took new memory, so that the capture takes
none, :meth:`dnn.backends.Backend.warmed_up`), then has the backend capture it
(:meth:`dnn.backends.Backend.capture`) and checks its own work: the first two replays are
each compared, array by array and bit for bit, with the eager step from the same state on
the same batch.  The second comparison catches a value read on the host at
capture time that changes from step to step (the captured step keeps the old one).  A warm-up,
capture, check or replay that fails, or a replay that differs, falls back to the eager step for
the rest of the run, with one :class:`GraphFallbackWarning` naming the reason: never a wrong
result for speed, and no error of the capture machinery out of ``fit`` (but for a fault the
GPU reports later, at the next read of a result, which no step can recover from).

Data-parallel (:mod:`dnn.distributed`), a step holds collectives: the ranks' gradient sum, last,
and the sums of its layers before (a synchronized BatchNormalization's); every rank must make
the same sums as the others, so every rank must take the same path.  Whether to capture at all,
and each outcome (the warm-up, the capture, each checked replay), is decided by all ranks
together: one failing sends every rank back to the eager step, with the same warning naming
that rank.  A step records the sums it makes, their sizes and dtypes
(:class:`dnn.trainers.data_parallel.StepCollectives`), so that once one step made them all, a
run that failed part-way on one rank first joins the others' remaining sums with zeros (which
every rank then throws away), and no rank waits for a sum that never comes.  Before any step
made them all, a run that failed before its first sum makes them by running the eager step,
and one that failed after some ends the job with an error.  After the checked replays, a
replay that fails on one rank ends training with an error: the other ranks' sums went on
without it.
"""

from __future__ import annotations

import warnings

import numpy as np

from dnn import host_settings
from dnn.errors import CaptureError, DnnError


class GraphFallbackWarning(UserWarning):
    """A captured training step could not be used; the step runs eagerly instead."""


class TrainingStep:
    """One :meth:`dnn.trainers.Trainer.train_step` on the rows of ``data`` (a
    :class:`dnn.trainers.data.DeviceData`: inputs ``(N, *sample_shape)`` (one per input),
    targets, sample weights ``(N,)`` or None) named by ``indices`` ``(rows,)`` (int64, written
    by the caller before each run), gathered into the trainer's batch buffers; data-parallel,
    ``total_rows`` are the rows of the global batch those are this rank's share of (None in a
    single process)."""

    def __init__(self, trainer, data, rows: int, total_rows: int | None = None):
        self.trainer, self.data, self.total_rows = trainer, data, total_rows
        self.indices = trainer.backend.empty((rows,), "int64")

    def __call__(self) -> None:
        trainer, data = self.trainer, self.data
        trainer.train_step(trainer.gather_each("x_batch", data.x, self.indices),
                           trainer.gather_each("y_batch", data.y, self.indices),
                           trainer.gather_each("w_batch", data.sample_weight, self.indices),
                           total_rows=self.total_rows)

    def state(self) -> list:
        """Every array a run changes that outlives it (:meth:`Trainer.step_state`)."""
        return self.trainer.step_state()

    def host_settings(self) -> tuple:
        """How often a setting the step reads on the host changed: an optimizer's int or bool
        hyper-parameter, a layer's ``trainable``, a regularizer's factor
        (:mod:`dnn.host_settings`); a graph captured before the last change is stale."""
        return self.trainer.optimizer.host_settings_changes, host_settings.changes

    def collectives(self):
        """The sums this step's runs make and record (a
        :class:`dnn.trainers.data_parallel.StepCollectives`); None in a single process."""
        return None if self.total_rows is None else self.trainer.gradient_sum().collectives


class ReplayedStep:
    """Runs ``step`` (a :class:`TrainingStep`) eagerly, or captured and replayed where its
    backend can capture (and its trainer's communicator can sum inside a graph), checking the
    first two replays (module docstring).  Whatever fails on the way (the warm-up, the
    capture, the eager step a replay is checked against, a replay) sends it back to the eager
    step from the state before, with one warning; only a dnn error of the step itself (a
    plugin breaking its contract) is raised, as it would be without a capture."""

    CHECKED_REPLAYS = 2
    WARM_UPS_AT_MOST = 3  # then the capture may take a new block, which CUDA allows

    def __init__(self, step: TrainingStep):
        self.step = step
        self.indices = step.indices  # written by the caller before each run
        self.backend = step.trainer.backend
        self.ranks = step.trainer.communicator
        self.graph = None
        self.settings = None  # step.host_settings() at the last warm-up (None: before the first)
        self.warm_ups = 0  # since the settings last changed
        self.warm = False  # whether a capture would take no new memory (Backend.warmed_up)
        self.runs = 0  # eager runs and replays
        self.replays = 0
        self.eager = False  # decided for the rest of the run

    def __call__(self) -> None:
        self.runs += 1
        if self.runs == 1:  # no graphs, or a sum that cannot be in one: nothing to check
            self.eager = not self.ranks.all(self.backend.captures_steps()
                                            and self.ranks.in_graph)
        if self.eager:
            self.step()
        elif self._settings_changed():  # the first run, or a setting a graph bakes in changed
            self.warm_ups = 0
            self._warm_up()
        elif not self.warm:  # the last warm-up still took new memory for the capture
            self._warm_up()
        elif self.graph is not None or self._capture():  # else it ran eagerly
            if self.replays < self.CHECKED_REPLAYS:
                self._checked_replay()
            else:
                self._replay()

    def _settings_changed(self) -> bool:
        """Whether the step has not been warmed up with the settings it reads on the host as
        they are now (:meth:`TrainingStep.host_settings`), on some rank: every rank then
        warms up, captures and checks the step again, together."""
        changed = self.settings != self.step.host_settings()
        return self.ranks.any(changed) if self.ranks.size > 1 else changed

    def _warm_up(self) -> None:
        """Run the step eagerly with the kernels of a captured one: kernels compiled, buffers
        allocated, and the memory of the next capture warmed with the temporaries the step
        takes with its settings as they are; the next run captures it, or warms it up again
        where this one still took new memory (:meth:`Backend.warmed_up`, on some rank), up to
        :attr:`WARM_UPS_AT_MOST` warm-ups.  A step whose own run changes such a setting would
        need a graph of its own at every run: it runs eagerly from here on, with a warning."""
        self.graph, self.replays = None, 0
        settings = self.step.host_settings()
        before = self._snapshot()
        _, reason = self._attempt(self.step, "its warm-up", before)
        if self._eager_unless_agreed(reason, before):
            return
        self.warm_ups += 1
        warm = self.backend.warmed_up() or self.warm_ups >= self.WARM_UPS_AT_MOST
        self.warm = self.ranks.all(warm) if self.ranks.size > 1 else warm
        self.settings = self.step.host_settings()
        changing, _ = self._agree(None if self.settings == settings else (
            "its run changes a setting it reads on the host (an optimizer's hyper-parameter "
            "that is no device array, a layer's trainable, a regularizer's attribute; an "
            "optimizer's own that changes at every step takes a float default)"))
        if changing is not None:
            self._fall_back(changing, None)

    def _attempt(self, action, what: str, before: list, executes: bool = True):
        """``(action(), None)``, run with the kernels of a captured step; ``(None, reason)``
        when that failed, after this rank joined the sums of the step that the others made
        where ``action`` executes the step (a capture does not; :meth:`_join_sums`).  A dnn
        error that is not the capture's (a plugin breaking its contract) is the user's to
        see: raised, from the state ``before`` restored."""
        self._start_sums()
        try:
            with self.backend.graph_kernels():
                return action(), None
        except DnnError as error:
            if not isinstance(error, CaptureError):
                self._restore(before)
                raise
            reason = f"{what} failed: {error}"
        except Exception as error:  # whatever the GPU stack raises: the eager step decides
            reason = f"{what} failed: {type(error).__name__}: {error}"
        if executes:
            self._join_sums(before, reason)
        return None, reason

    def _start_sums(self) -> None:
        """Record the sums a run makes from here (none yet; a replay records none)."""
        collectives = self.step.collectives()
        if collectives is not None:
            collectives.start()

    def _join_sums(self, before: list, failure: str) -> None:
        """After ``failure`` of a run that executes the step on this rank: join the sums of
        the step that the run did not make, so that the other ranks' complete (every rank
        then throws the step's results away).  Where no whole step's sums are known yet, the
        eager step, from the state ``before``, makes them all if the run made none; a run
        that made some ends the job (:meth:`StepCollectives.join_the_rest`)."""
        collectives = self.step.collectives()
        if collectives is None:
            return
        if collectives.known is None and not collectives.made:
            self._restore(before)
            self.step()
        else:
            collectives.join_the_rest(self.backend, failure)

    def _agree(self, reason: str | None, declined: bool = False) -> tuple[str | None, bool]:
        """Every rank's outcome of one attempt, decided together: ``(reason, declined)``, the
        first failing rank's ``reason`` (naming the rank, where there are several) or None,
        and whether some rank's backend declined the capture."""
        if self.ranks.size == 1:
            return reason, declined
        outcomes = self.ranks.gather_objects((reason, declined))
        for rank, (theirs, _) in enumerate(outcomes):
            if theirs is not None:
                return f"{theirs} (on rank {rank})", False
        return None, any(theirs for _, theirs in outcomes)

    def _eager_unless_agreed(self, reason: str | None, state: list) -> bool:
        """Agree on ``reason`` (this rank's failure, or None); True when some rank failed:
        then the eager step has run on every rank, from ``state``."""
        reason, _ = self._agree(reason)
        if reason is None:
            return False
        self._fall_back(reason, state)
        self.step()
        return True

    def _capture(self) -> bool:
        """Capture the step: True when its graph is ready to replay; else the step ran
        eagerly (the capture failed or the backend declined it, on some rank)."""
        before = self._snapshot()
        graph, reason = self._attempt(lambda: self.backend.capture(self.step), "capturing it",
                                      before, executes=False)
        # A capture runs the step's Python: its host effects (and, on a backend whose capture
        # also computes, its device effects) are undone before the first replay.
        self._restore(before)
        reason, declined = self._agree(reason, declined=reason is None and graph is None)
        if reason is not None:
            self._fall_back(reason, None)
        elif declined:  # a backend declined this step: eager, without a warning
            self.graph, self.eager = None, True
        else:
            self.graph = graph
            return True
        self.step()
        return False

    def _checked_replay(self) -> None:
        before = self._snapshot()
        _, reason = self._attempt(self.step, "the eager step it is checked against", before)
        if self._eager_unless_agreed(reason, before):
            return
        expected = self._snapshot()
        self._restore(before)
        self._start_sums()
        reason = self._launch()
        if reason is not None:  # it ran nothing: every sum of the step joined with zeros
            self._join_sums(before, reason)
        else:
            self.replays += 1
            differing = [index for index, (ours, reference)
                         in enumerate(zip(self._snapshot(), expected))
                         if not _same_bits(ours, reference)]
            if differing:
                reason = (f"replay {self.replays} differs from the eager step in "
                          f"{len(differing)} of its {len(expected)} arrays")
        reason, _ = self._agree(reason)
        if reason is not None:
            self._fall_back(reason, expected)

    def _replay(self) -> None:
        """Replay the graph.  A launch that failed ran nothing: the step then runs eagerly
        from here on, in a single process; on several ranks, whose sums went on without this
        one's, it is an error."""
        reason = self._launch()
        if reason is None:
            self.replays += 1
            return
        if self.ranks.size > 1:
            raise DnnError(f"the captured training step failed on rank {self.ranks.rank}: "
                           f"{reason}; the other ranks' gradient sum went on without it")
        self._fall_back(reason, None)
        self.step()

    def _launch(self) -> str | None:
        """Launch the graph: None, or why it failed (then it ran nothing).  A dnn error that
        is not the capture's (a request to stop, :class:`dnn.errors.Terminated`) is raised."""
        try:
            self.graph.replay()
        except Exception as error:
            if isinstance(error, DnnError) and not isinstance(error, CaptureError):
                raise
            return f"replaying it failed: {type(error).__name__}: {error}"
        return None

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
