"""What a trainer does differently on several ranks (:mod:`dnn.distributed`): the gradient sum,
the start from rank 0's state, the totals summed, the settings compared, the callbacks that
write (``writes_files``) left to rank 0.

Every rank runs the same ``fit``: the same batches of the same permutation, each rank the
rows of its share (:mod:`dnn.trainers.epoch_iterator`).  A training step computes the gradient
of its share's mean loss, and :class:`GradientSum` adds up every rank's, each weighted by its
rows over the global batch's: the gradient of the global batch's mean loss, which the optimizer
then applies on every rank alike.  Two ranks give, bit for bit, what one process gives that sums
the two shares' weighted gradients in rank order; more ranks sum in the order MPI or NCCL
chooses, the same on every rank and in every run of one size.
"""

from __future__ import annotations

import atexit
import sys

import numpy as np

from dnn import backends, layers
from dnn.callbacks import Callback
from dnn.distributed.communicator import Communicator, first_difference
from dnn.errors import DnnError, UsageError
from dnn.trainers.data import each_array


class StepCollectives(Communicator):
    """``communicator`` as a training step's layers (``layer.ranks``) and its gradient sum
    use it: each :meth:`all_reduce` is made and recorded as ``(count, dtype)`` in ``made``,
    the run's so far (from :meth:`start`); ``known`` is a whole step's, once a run made its
    gradient sum, the step's last (every step of a trainer makes the same sums: the layers'
    depend on their channels, not on the batch's rows).  A rank whose run failed part-way
    joins the sums it did not make with zeros (:meth:`join_the_rest`), so that the other
    ranks' complete.  A step only sums: its other collectives are refused (a captured step
    can hold nothing else)."""

    def __init__(self, communicator: Communicator):
        self.communicator = communicator
        self.rank, self.size = communicator.rank, communicator.size
        self.local_rank, self.local_size = communicator.local_rank, communicator.local_size
        self.in_graph = communicator.in_graph
        self.made: list[tuple[int, str]] = []
        self.known: list[tuple[int, str]] | None = None

    def start(self) -> None:
        """A run begins: it has made no sum yet."""
        self.made = []

    def all_reduce(self, array, backend) -> None:
        self.communicator.all_reduce(array, backend)
        self.made.append((int(array.size), str(array.dtype)))

    def step_made(self) -> None:
        """The run made its gradient sum: its sums are a whole step's."""
        self.known = list(self.made)

    def join_the_rest(self, backend, failure: str) -> None:
        """After ``failure`` of a run on this rank: make, with zeros, the sums of a whole step
        that the run did not make (every rank throws the step's results away).  DnnError,
        which ends the job, where they are not known: no step made its gradient sum yet, or
        the run's sums are not the beginning of a whole step's."""
        made, known = self.made, self.known
        if known is None or made != known[:len(made)]:
            raise DnnError(f"rank {self.rank} cannot complete the other ranks' sums: its "
                           f"training step failed after {len(made)} of them ({failure}), "
                           f"before a step had made them all")
        for count, dtype in known[len(made):]:
            self.all_reduce(backend.xp.zeros((count,), dtype), backend)


class GradientSum:
    """The trainable gradients ``grads`` (arrays of ``backend``, as the layers hold them),
    summed over the ranks of ``communicator`` in one flat buffer ``(P,)`` of their dtype, ``P``
    their elements; ``collectives`` records a step's sums, this one the last of them
    (:class:`StepCollectives`), and ``count`` is the gradient sums this rank joined."""

    def __init__(self, grads: list, backend, communicator):
        self.grads, self.backend = grads, backend
        self.collectives = StepCollectives(communicator)
        self._slices, start = [], 0
        for grad in grads:
            self._slices.append(slice(start, start + grad.size))
            start += grad.size
        self.flat = backend.empty((start,), grads[0].dtype if grads else "float32")
        self.count = 0

    def holds(self, grads: list) -> bool:
        """Whether this sum is made for ``grads`` (the same arrays, in order)."""
        return len(grads) == len(self.grads) and all(
            mine is theirs for mine, theirs in zip(self.grads, grads))

    def __call__(self, rows: int, total_rows: int) -> None:
        """Replace every gradient, that of the mean loss of this rank's ``rows``, with the
        sum over the ranks of each one's times its ``rows / total_rows``."""
        xp = self.backend.xp
        for part, grad in zip(self._slices, self.grads):
            self.flat[part] = xp.reshape(grad, (-1,))
        self.flat *= rows / total_rows  # in place: no temporary the size of every gradient
        self.collectives.all_reduce(self.flat, self.backend)
        self.collectives.step_made()
        self.count += 1
        for part, grad in zip(self._slices, self.grads):
            grad[...] = xp.reshape(self.flat[part], grad.shape)


def sum_totals(arrays: list, backend, communicator, scale: float = 1.0) -> None:
    """Sum ``arrays`` (the device arrays an epoch's loss and metrics are added up in) over the
    ranks, times ``scale``, in place: one collective, on the host, in float64."""
    host = [backend.to_numpy(array) for array in arrays]
    summed = np.concatenate([values.reshape(-1).astype(np.float64) for values in host])
    communicator.all_reduce(summed, backend)
    summed *= scale
    start = 0
    for array, values in zip(arrays, host):
        part = summed[start:start + values.size].reshape(values.shape).astype(values.dtype)
        array[...] = backend.asarray(part)
        start += values.size


def average_state_weights(trainer, communicator) -> None:
    """Replace the weights the layers update themselves (BatchNormalization's moving
    statistics), which each rank moved with its own shares, with their mean over the ranks,
    so that every rank evaluates and saves the same model (Keras' mirrored moving statistics
    read as their mean over the replicas)."""
    arrays = [weight for layer in trainer.stack for weight in layer.state_weights]
    if arrays:
        sum_totals(arrays, trainer.backend, communicator, scale=1 / communicator.size)


def start_together(trainer, communicator, first_epoch: int) -> int:
    """Rank 0's start on every rank: its random generator (so every rank shuffles alike), its
    epochs done and the epoch ``fit`` starts from (returned), its optimizer's hyper-parameters
    (where it has one) and, for a built model, every array a step changes
    (:func:`share_state`)."""
    optimizer = trainer.optimizer
    hyperparameters = {} if optimizer is None else {
        name: value for name, value in optimizer.get_config().items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)}
    start = communicator.broadcast_object({
        "shuffle": trainer.rng.bit_generator.state, "epochs_done": trainer.epochs_done,
        "first_epoch": first_epoch, "hyperparameters": hyperparameters})
    trainer.rng.bit_generator.state = start["shuffle"]
    trainer.epochs_done = start["epochs_done"]
    for name, value in start["hyperparameters"].items():
        if hyperparameters.get(name) != value:
            setattr(optimizer, name, value)
    if trainer.built:
        share_state(trainer, communicator)
    return start["first_epoch"]


def stop_at_epoch_end(trainer, communicator) -> bool:
    """Whether a callback stopped training on some rank, at an epoch's end, in one small
    gather that also compares the optimizer's settings (``get_config()``, host numbers):
    a callback that changed them on some ranks only (from a batch's logs, each rank's own)
    would leave the ranks' weights apart for ever, so a difference is a UsageError, the same
    on every rank, naming the first setting that differs and the ranks."""
    settings = {f"the optimizer's {name}": value
                for name, value in trainer.optimizer.get_config().items()}  # fit: compiled
    gathered = communicator.gather_objects((bool(trainer.stop_training), settings))
    difference = first_difference([theirs for _, theirs in gathered])
    if difference is not None:
        raise UsageError(f"{difference}: a callback that changes training must run alike on "
                         "every rank (docs/distributed.md)")
    return any(stop for stop, _ in gathered)


def exit_status_of(error: SystemExit) -> int:
    """The exit status Python gives ``error``'s code: 0 for None, an int itself, else 1
    (Python prints that code, a message, to stderr)."""
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def end_job_at_exit(communicator, error: SystemExit) -> None:
    """Where ``SystemExit`` (``sys.exit`` in a callback) leaves ``fit`` on one of several
    ranks, have the whole job end with its exit status (:func:`exit_status_of`) once this
    process exits: the others would wait in their next collective for ever (Python calls no
    exception hook for it, and mpi4py's runner aborts for no status 0).  The exit goes on
    first as in a single process (``on_train_end``, the script's ``finally`` blocks); a code
    that is a message is printed, as Python prints it, after ``"rank N: "``.  Nothing in a
    single process."""
    if communicator.size == 1:
        return
    status = exit_status_of(error)

    def report(prefix: str) -> None:
        if error.code is not None and not isinstance(error.code, int):
            sys.stderr.write(f"{prefix}{error.code}\n")

    atexit.register(communicator.end_job, report, status)


def share_state(trainer, communicator) -> None:
    """Rank 0's values of every array a training step changes (weights, optimizer state and
    iterations, the layers' step counters) on every rank."""
    for array in trainer.step_state():
        communicator.broadcast(array, trainer.backend)


def on_this_rank(callbacks, rank: int):
    """``callbacks`` (None, a Callback or a list of them) that run on ``rank``: all on rank 0,
    on the others all but those whose only effect is output (:attr:`Callback.writes_files`:
    files, the terminal).  BackupAndRestore's restore on rank 0 reaches the others with rank
    0's state (:func:`start_together`)."""
    if rank == 0 or callbacks is None:
        return callbacks
    if isinstance(callbacks, Callback):
        return None if callbacks.writes_files else callbacks
    try:
        return [callback for callback in callbacks
                if not getattr(callback, "writes_files", False)]
    except TypeError:  # not a list: CallbackList says what is wrong
        return callbacks


def fit_settings(trainer, data, **arguments) -> dict:
    """What must agree between the ranks of one ``fit`` (or of the first ``train_on_batch``,
    ``test_on_batch`` or ``evaluate``): dnn's version, the backend, the model, its
    compilation, the size of the data (``data``, a :class:`dnn.trainers.data.DeviceData`, or
    None for batches from a source) and the call's ``arguments``."""
    import dnn

    optimizer = trainer.optimizer
    return {"dnn version": dnn.__version__,
            "backend": (trainer.backend or backends.current_backend()).name,
            "dtype": str(trainer.dtype), "model": layers.without_names(trainer.get_config()),
            "optimizer": None if optimizer is None else (type(optimizer).__name__,
                                                         optimizer.get_config()),
            "loss": [(head.name, type(head.loss).__name__, head.loss.get_config(),
                      head.weight) for head in trainer.heads],
            "metrics": [metric.name for metric in (*trainer.metrics,
                                                   *trainer.weighted_metrics)],
            "samples": None if data is None else _shapes(data.x),
            **arguments}


def _shapes(x):
    """The shape of inputs ``x``: a tuple of one per input, for a model of several."""
    shapes = [tuple(array.shape) for array in each_array(x)]
    return shapes[0] if len(shapes) == 1 else shapes
