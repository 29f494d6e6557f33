"""The batches of an epoch, from arrays or from a source of batches, as Keras' EpochIterator.

Two kinds of data, one interface (:meth:`epoch` yields :class:`Batch` es):

- :class:`ArrayBatches`: a :class:`DeviceData` moved to the device once; a batch is the device
  indices of its rows (a new random order each pass when shuffling), which the training step
  gathers itself, so that its arrays stay the same from batch to batch;
- :class:`StreamBatches`: a Python iterable or generator of ``(x, y)`` or ``(x, y,
  sample_weight)`` host batches, or a ``keras.utils.PyDataset``-style object (``len()`` and
  ``[i]``, and ``on_epoch_end()`` if it has one); each batch is checked and moved to the device
  as it comes.

With ``steps_per_epoch`` an epoch is that many batches, and the next epoch goes on where it
stopped (a new pass starts when one is used up), as in Keras; a source that runs out first ends
the epoch early with a warning, and one that yields nothing ends training.

Data-parallel (:mod:`dnn.distributed`): every rank holds the same data and makes the same
global batches (the same permutation: the ranks' generators start alike), and a
:class:`Batch` is the contiguous share of its rank (``shard``, ``(rank, size)``) of the global
batch's ``total`` rows (:func:`dnn.distributed.share`).  A source of batches should give every
rank the same batches; the ranks read theirs in step, agreeing before each batch
(:meth:`StreamBatches.epoch`), so that a source that ends early on one rank ends the epoch on
every rank instead of leaving the others waiting in a sum.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from dnn import distributed
from dnn.errors import UsageError
from dnn.trainers.data import DeviceData, is_pydataset

SINGLE = (0, 1)  # the shard of a single process: all of every batch


class Batch(NamedTuple):
    """This rank's rows of one batch: ``indices`` ``(rows,)`` (device int64) into ``data``, or
    None when ``data`` is those rows themselves; ``total`` is the rows of the whole batch, over
    every rank (``rows`` in a single process)."""

    data: DeviceData
    indices: object
    rows: int
    total: int


class RanOutOfData(UserWarning):
    """A source of batches ran out before the epoch's ``steps_per_epoch``."""


class UnequalSources(UserWarning):
    """Data-parallel, the ranks' sources of batches ended at different batches."""


PASS_ENDED, RAN_OUT = "its pass ended", "it ran out"  # why a source gave no next batch


def _ran_out_warning() -> None:
    warnings.warn("your input ran out of data; interrupting training: make sure that your "
                  "generator or dataset can yield at least steps_per_epoch * epochs batches",
                  RanOutOfData, stacklevel=5)  # at the user's fit


def is_batch_source(x) -> bool:
    """True for data given as batches (a PyDataset-style object, an iterator, a generator or
    another iterable that is not an array or a list of numbers)."""
    if (isinstance(x, (np.ndarray, list, tuple, str, bytes, Mapping))
            or hasattr(x, "__array__")):  # a dict names the inputs of a model of several
        return False
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # a device array
        return False
    return is_pydataset(x) or isinstance(x, Iterable)


def _batch_count(source, prefix: str) -> int:
    """``len(source)`` of a PyDataset-style source; UsageError naming it when ``__len__``
    fails or gives what is not a count of batches."""
    try:
        return len(source)
    except (TypeError, ValueError, OverflowError) as error:  # a negative or non-int __len__
        raise UsageError(f"the {prefix}data's __len__ must give its number of batches, an "
                         f"integer >= 0 ({error})") from None


def check_steps(steps, name: str) -> int | None:
    """``steps`` (``steps_per_epoch``, ``validation_steps``, ...: the ``name``) checked: a
    positive integer, or None."""
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise UsageError(f"{name} must be a positive integer or None, not {steps!r}")
    return int(steps)


class ArrayBatches:
    """Batches of ``batch_size`` rows of ``data`` (a :class:`DeviceData`), shuffled anew each
    pass with ``rng`` when ``shuffle``; each :class:`Batch` holds the share of ``shard``
    (``(rank, size)``)."""

    def __init__(self, data: DeviceData, batch_size: int, backend, rng=None,
                 shuffle: bool = False, steps_per_epoch: int | None = None,
                 shard: tuple[int, int] = SINGLE):
        self.data, self.batch_size, self.backend = data, batch_size, backend
        self.rng, self.shuffle, self.steps_per_epoch = rng, shuffle, steps_per_epoch
        self.shard = shard
        self.num_batches = math.ceil(data.count / batch_size)
        self.ran_out = False  # arrays never run out
        self._order = None  # the pass under way (device indices), and where it stands
        self._next = 0

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return self.steps_per_epoch or self.num_batches

    def epoch(self):
        """Yield the epoch's :class:`Batch` es: the next ``steps`` batches of an endless run
        of passes over the data."""
        for _ in range(self.steps):
            if self._order is None or self._next >= self.data.count:
                self._new_pass()
            start = self._next
            stop = self._next = min(start + self.batch_size, self.data.count)
            first, last = distributed.share(stop - start, *self.shard)
            yield Batch(self.data, self._order[start + first:start + last], last - first,
                        stop - start)
        if not self.steps_per_epoch:  # each epoch is one pass
            self._order = None

    def split(self, share, batch_size: int, steps=None) -> tuple[ArrayBatches, ArrayBatches]:
        """``(training, validation)``: the last ``share`` of the rows held out (Keras'
        ``validation_split``) in batches of ``batch_size``."""
        kept, held_out = self.data.split(share)
        return (ArrayBatches(kept, self.batch_size, self.backend, self.rng, self.shuffle,
                             self.steps_per_epoch, self.shard),
                ArrayBatches(held_out, batch_size, self.backend, steps_per_epoch=steps,
                             shard=self.shard))

    def _new_pass(self) -> None:
        count = self.data.count
        order = self.rng.permutation(count) if self.shuffle else np.arange(count)
        self._order, self._next = self.backend.asarray(order), 0


class StreamBatches:
    """Batches from ``source`` (see the module docstring), each checked with ``model`` and
    moved to its backend (``class_weight`` weighs each batch's samples); ``prefix`` names them
    in errors (``"validation "``); without ``with_targets`` (``predict``) a batch may be ``x``
    alone (for a model of several inputs, the list of their arrays too).  Each
    :class:`Batch` holds the rows of ``shard`` (``(rank, size)``)."""

    def __init__(self, model, source, steps_per_epoch: int | None = None, rng=None,
                 shuffle: bool = False, prefix: str = "", with_targets: bool = True,
                 class_weight=None, shard: tuple[int, int] = SINGLE):
        self.model, self.source, self.steps_per_epoch = model, source, steps_per_epoch
        self.class_weight = class_weight
        self.rng, self.shuffle, self.prefix = rng, shuffle, prefix
        self.with_targets, self.shard = with_targets, shard
        self._indexed = is_pydataset(source)
        self.num_batches = _batch_count(source, prefix) if self._indexed else None
        self.ran_out = False  # a new pass yielded nothing: training ends
        self._iterator = None

    @property
    def steps(self) -> int | None:
        """Batches per epoch, None when the source does not say."""
        return self.steps_per_epoch or self.num_batches

    def epoch(self):
        """Yield the epoch's :class:`Batch` es, each with the host batch moved to the device;
        :attr:`ran_out` is set when a new pass over the source yields nothing.

        Data-parallel, the ranks agree before each batch (:meth:`_agreed`): a batch runs when
        every rank has one, of the same rows; where the source of one rank ends first, the
        epoch ends on every rank as it would in a single process reading that source (the
        batch the others read there dropped, with an :class:`UnequalSources` warning): at
        the end of a pass without ``steps_per_epoch``, and for training when a new pass
        yields nothing (:class:`RanOutOfData`)."""
        seen = 0
        while self.steps_per_epoch is None or seen < self.steps_per_epoch:
            host_batch, ended = self._next_batch()
            data = None if ended else self._checked(host_batch, seen)
            if self.shard != SINGLE:
                ended = self._agreed(seen, data, ended)
            if ended == RAN_OUT:  # a generator used up, or an empty dataset
                self.ran_out = True
                _ran_out_warning()
                return
            if ended == PASS_ENDED:
                break
            if self.shard == SINGLE:
                yield Batch(data, None, data.count, data.count)
            else:
                first, last = distributed.share(data.count, *self.shard)
                yield Batch(data.rows(first, last), None, last - first, data.count)
            seen += 1
        if self._indexed and self._iterator is None and hasattr(self.source, "on_epoch_end"):
            self.source.on_epoch_end()

    def _next_batch(self) -> tuple[object, str | None]:
        """``(host batch, None)``: the next batch of the pass under way, or of a new one
        where none is (with ``steps_per_epoch``, a pass that ends is followed by the next);
        ``(None, PASS_ENDED)`` where the pass ended (without ``steps_per_epoch``: the epoch
        ends), ``(None, RAN_OUT)`` where a new pass yields nothing."""
        while True:
            fresh = self._iterator is None
            if fresh:
                self._iterator = self._new_pass()
            try:
                return next(self._iterator), None
            except StopIteration:
                self._iterator = None
                if fresh:
                    return None, RAN_OUT
                if self.steps_per_epoch is None:
                    return None, PASS_ENDED

    def _agreed(self, index: int, data: DeviceData | None, ended: str | None) -> str | None:
        """What every rank does at batch ``index`` of the epoch, from each rank's outcome
        (this rank's: its ``data``, or why its source ``ended``; one collective): None, the
        batch, where every rank has one of the same rows; else why the source that ended
        ended (:data:`RAN_OUT` where one ran out), this rank's pass dropped (the next epoch
        starts a new one, as on the rank whose pass ended).  Batches of different rows are a
        UsageError on every rank."""
        outcomes = distributed.communicator().gather_objects(
            ended if ended else data.count)
        rows = [outcome for outcome in outcomes if not isinstance(outcome, str)]
        if len(rows) == len(outcomes):
            for rank, theirs in enumerate(rows[1:], 1):
                if theirs != rows[0]:
                    raise UsageError(f"every rank must give the same batches: {self.prefix}"
                                     f"batch {index} has {theirs} rows on rank {rank}, "
                                     f"{rows[0]} on rank 0")
            return None
        self._iterator = None
        first = next(rank for rank, outcome in enumerate(outcomes) if isinstance(outcome, str))
        if rows:
            going_on = next(rank for rank, outcome in enumerate(outcomes)
                            if not isinstance(outcome, str))
            warnings.warn(f"the ranks' sources of {self.prefix}batches differ: rank {first} "
                          f"has no batch {index} in this epoch ({outcomes[first]}), rank "
                          f"{going_on} has one; every rank stops there",
                          UnequalSources, stacklevel=5)  # at the user's fit
        return RAN_OUT if RAN_OUT in outcomes else PASS_ENDED

    def _new_pass(self):
        if self._indexed:
            order = (self.rng.permutation(len(self.source)) if self.shuffle
                     else range(len(self.source)))
            return (self.source[int(index)] for index in order)
        return iter(self.source)

    def _checked(self, host_batch, index: int) -> DeviceData:
        """One host batch checked and moved to the device."""
        what = f"{self.prefix}batch {index} "
        if not self.with_targets and (not isinstance(host_batch, (tuple, list))
                                      or self._holds_every_input(host_batch)):
            return DeviceData.from_host_inputs(self.model, host_batch, what)
        sizes = (2, 3) if self.with_targets else (1, 2, 3)
        if not isinstance(host_batch, (tuple, list)) or len(host_batch) not in sizes:
            wanted = ("(x, y) or (x, y, sample_weight)" if self.with_targets
                      else "x, (x,) or (x, y)")
            raise UsageError(f"{what}must be {wanted}, not {type(host_batch).__name__}"
                             + (f" of {len(host_batch)}" if isinstance(host_batch, (tuple, list))
                                else ""))
        if not self.with_targets:
            return DeviceData.from_host_inputs(self.model, host_batch[0], what)
        if self.class_weight is not None and len(host_batch) == 3:
            raise UsageError(f"{what}holds sample weights; class_weight cannot be given too")
        return DeviceData.from_host(self.model, *host_batch, class_weight=self.class_weight,
                                    prefix=what)

    def _holds_every_input(self, host_batch) -> bool:
        """Whether a batch for ``predict`` (a list or tuple) is the arrays of the model's
        several inputs themselves: one array for each, where ``(x, y)`` cannot be meant
        (``x`` alone is no data for such a model)."""
        count = self.model._input_count
        return count > 1 and len(host_batch) == count and all(
            hasattr(item, "shape") and not isinstance(item, (list, tuple, dict))
            for item in host_batch)


def batches_of(model, x, y, *, batch_size: int, sample_weight=None, class_weight=None,
               steps: int | None = None, shuffle: bool = False, rng=None, prefix: str = "",
               with_targets: bool = True):
    """:class:`ArrayBatches` or :class:`StreamBatches` for ``x`` (and ``y``), as given to
    ``fit``, ``evaluate`` or ``predict``: with targets, sharded over the ranks of a
    data-parallel run; without (``predict``), every rank gets every row."""
    ranks = distributed.communicator()
    shard = (ranks.rank, ranks.size) if with_targets else SINGLE
    if is_batch_source(x):
        given = [name for name, value in (("y", y), ("sample_weight", sample_weight))
                 if value is not None]
        if given:
            raise UsageError(f"{prefix}data given as batches hold their own targets and "
                             f"weights: do not give {given[0]} as well")
        return StreamBatches(model, x, steps, rng, shuffle, prefix, with_targets, class_weight,
                             shard)
    if with_targets and y is None:
        raise UsageError(f"{prefix}targets are missing: give (x, y) arrays, or batches of "
                         "(x, y)")
    data = (DeviceData.from_host(model, x, y, sample_weight, class_weight, prefix)
            if with_targets else DeviceData.from_host_inputs(model, x, prefix))
    return ArrayBatches(data, batch_size, model.backend, rng, shuffle, steps, shard)
