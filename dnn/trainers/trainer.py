"""The trainer: Keras' ``compile``/``fit``/``evaluate``/``predict`` over a model's layers.

:class:`Trainer` is what :class:`dnn.Sequential` inherits for training, as Keras 3's ``Model``
inherits its ``Trainer``: the model holds the layers and their weights, the trainer the loss,
optimizer and metrics and the loops.  A step is :meth:`Trainer.train_step`: compute the
gradients (:meth:`compute_gradients`), then apply them (:meth:`apply_gradients`), then add the
batch to the epoch's loss and metrics, all on the device.  On several ranks
(:mod:`dnn.distributed`), each computes the gradients of its share of the global batch and
the ranks sum them between the two (:mod:`dnn.trainers.data_parallel`).

Data are arrays (host NumPy or the backend's own), moved to the backend once per call, or
batches from a generator, iterable or ``PyDataset`` (:mod:`dnn.trainers.epoch_iterator`).  The
epoch's loss and metrics are added up on the device and read back once per epoch (or when a
callback looks at a batch's logs).
"""

from __future__ import annotations

import math
import reprlib
import sys
import time

import numpy as np

from dnn import backends, distributed, optimizers
from dnn.callbacks import BatchLogs, CallbackList, figures
from dnn.callbacks.progbar_logger import check_verbose
from dnn.errors import DivergenceError, OutOfMemoryError, UsageError
from dnn.trainers import data_parallel, heads
from dnn.trainers.data import DeviceData, arrays_like, each_array, map_arrays
from dnn.trainers.epoch_iterator import (ArrayBatches, batches_of, check_steps,
                                         is_batch_source)
from dnn.trainers.step import ReplayedStep, TrainingStep
from dnn.utils import is_int_at_least

# The default batch of evaluate, predict and validation: Keras' 32 is slow for a forward pass
# alone, and a batch's rows do not change a mean loss; but no more rows than keep the layers'
# outputs of one batch within EVALUATION_BYTES (a convnet's are ~100 times a dense network's).
EVALUATION_BATCH = 1024
EVALUATION_BYTES = 32 << 20


def _writable_rows(array) -> bool:
    """Whether ``array`` is writable and C-contiguous, where its type says (NumPy's and
    CuPy's ``flags``; an array type without them is taken to be)."""
    flags = getattr(array, "flags", None)
    return flags is None or (getattr(flags, "writeable", True) and flags.c_contiguous)


def positive_int(name: str, value) -> int:
    if not is_int_at_least(value, 1):
        raise UsageError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


class Trainer:
    """Training, evaluation and prediction for a model with ``stack`` (the layers that
    compute, in order), ``graph`` (which outputs each takes), ``params``, ``backend``,
    ``dtype``, ``rng`` and ``build`` (see :class:`dnn.Sequential`)."""

    def __init__(self):
        self.optimizer = None
        self.heads: list = []  # of each output: its loss and metrics (dnn.trainers.heads)
        self.heads_in_loss_order: list = []  # as Keras lists their losses
        self.history = None
        self.stop_training = False
        self.epochs_done = 0  # epochs trained, over every fit (checkpoints keep it)
        self._initial_epoch = None  # set by a callback (BackupAndRestore) at on_train_begin
        self._loss_total = None  # 0-d, the model's dtype: the loss summed over the batches
        self._communicator = None  # for the backend's arrays, once it is known
        self._gradient_sum = None  # data-parallel, once a step needs it
        self._started_together = False  # on several ranks: from rank 0's state since built
        self._own_kind = None  # (type, dtype) of the model's arrays, once it is built

    # -- compile -------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss="categorical_crossentropy", metrics=None,
                weighted_metrics=None, loss_weights=None):
        """Choose the optimizer (a name or an instance; ``None`` for a model that is only
        evaluated or asked to predict), the loss, the ``metrics`` and the
        ``weighted_metrics`` (names or :mod:`dnn.metrics` objects; only the weighted ones
        see sample weights, as in Keras); a model of several outputs takes them (and
        ``loss_weights``) per output (:mod:`dnn.trainers.heads`).  Compiled again with the
        optimizer it already has, the model keeps that optimizer's state, as in Keras."""
        if not self.stack:
            raise UsageError("the model has no layers")
        for layer in self.output_layers:
            if layer.output_features == 1 and getattr(layer.activation, "name", None) == "softmax":
                where = f" ({layer.name})" if len(self.output_layers) > 1 else ""
                raise UsageError(f"a softmax over one unit{where} outputs 1 whatever its "
                                 "input: use Dense(1, activation='sigmoid') for a yes/no "
                                 "output, or one unit per class")
        previous = self.optimizer
        optimizer = None if optimizer is None else optimizers.get(optimizer)
        self.heads = heads.compile_heads(self._output_keys, self.output_layers, loss,
                                         loss_weights, metrics, weighted_metrics)
        self.heads_in_loss_order = heads.in_loss_order(self.heads, loss, self._outputs_by_name)
        self.optimizer = optimizer
        self._outputs_changed()
        if self.built:
            self._build_training_state(rebuild_optimizer=optimizer is not previous)

    def _outputs_changed(self) -> None:
        """Whether each output's loss takes the logits of its layer's activation (one whose
        output other layers take too gives them its activation's output, and the loss
        takes that, but for a ``from_logits`` loss: its layer outputs logits anyway)."""
        graph = self.graph
        for head, node, layer in zip(self.heads, graph.outputs, self.output_layers):
            head.takes_logits = (head.loss.takes_logits_of(layer.activation)
                                 and (graph.uses[node] == 0 or head.loss.from_logits))

    @property
    def loss(self):
        """The compiled loss: a :class:`dnn.losses.Loss`, a list of one per output for a
        model of several, None before ``compile``."""
        if not self.heads:
            return None
        return self.heads[0].loss if len(self.heads) == 1 else [h.loss for h in self.heads]

    @property
    def metrics(self) -> tuple:
        """The compiled metric objects, of each output in turn."""
        return tuple(metric for head in self.heads for metric in head.metrics)

    @property
    def weighted_metrics(self) -> tuple:
        """The compiled weighted metric objects, of each output in turn."""
        return tuple(metric for head in self.heads for metric in head.weighted_metrics)

    def _build_training_state(self, rebuild_optimizer: bool = True) -> None:
        """The device arrays of compiled training: the optimizer's state (for every weight, a
        frozen one's too: ``trainable`` may change between fits), the loss totals and the
        metrics' totals.  On several ranks, the next train_on_batch, test_on_batch or
        evaluate starts from rank 0's state again (:meth:`_start_together_once`)."""
        self._started_together = False
        if self.optimizer is not None and rebuild_optimizer:
            try:
                self.optimizer.build(self.params, self.backend)
            except MemoryError:
                count = sum(math.prod(param.shape) for param in self.params)
                raise OutOfMemoryError(f"the {type(self.optimizer).__name__} optimizer's state "
                                       f"for {count:,} weights needs more memory than this "
                                       "machine gives") from None
        xp, dtype = self.backend.xp, self.backend.dtype(self.dtype)
        self._loss_total = xp.zeros((), dtype=dtype)
        for head, layer in zip(self.heads, self.output_layers):
            head.total = xp.zeros((), dtype=dtype)
            logits_of = layer.activation if head.takes_logits else None
            for metric in (*head.metrics, *head.weighted_metrics):
                metric.build(self.backend, self.dtype, activation=logits_of)

    @property
    def compiled(self) -> bool:
        return bool(self.heads)

    def _require_compiled(self, training: bool = False) -> None:
        if not self.heads:
            raise UsageError("compile() the model before training or evaluating it")
        if training and self.optimizer is None:
            raise UsageError("the model was compiled without an optimizer: compile() it with "
                             "one to train it")

    # -- the ranks (dnn.distributed) ---------------------------------------------------------
    @property
    def communicator(self) -> distributed.Communicator:
        """The communicator of data-parallel training for the model's arrays
        (:func:`dnn.distributed.for_backend`); a single process's in a plain run."""
        if self.backend is None:
            return distributed.communicator()
        if self._communicator is None:
            self._communicator = distributed.for_backend(self.backend)
        return self._communicator

    def gradient_sum(self) -> data_parallel.GradientSum:
        """The sum over the ranks of the trainable layers' gradients (made again when the
        trainable weights changed)."""
        grads = [grad for layer in self._trained_layers() for grad in layer.grads]
        if self._gradient_sum is None or not self._gradient_sum.holds(grads):
            self._gradient_sum = data_parallel.GradientSum(grads, self.backend,
                                                           self.communicator)
        return self._gradient_sum

    def _evaluation_batch(self) -> int:
        """The default rows of an evaluation batch: :data:`EVALUATION_BATCH`, or fewer where
        the inputs and the layers' outputs of that many samples would take more than
        :data:`EVALUATION_BYTES` (an unbuilt model: the first)."""
        features = (self.input_dim + sum(layer.output_features or 0 for layer in self.stack)
                    if self.built else 0)
        sample_bytes = max(features * self.dtype.itemsize, 1)
        return max(1, min(EVALUATION_BATCH, EVALUATION_BYTES // sample_bytes))

    def _start_together_once(self, data: DeviceData | None, **arguments) -> None:
        """On several ranks, at the first ``train_on_batch``, ``test_on_batch`` or
        ``evaluate`` since the model was built, compiled or loaded (``fit`` does it at each
        start): the settings compared as ``fit`` compares them (``data``, the arrays given,
        and ``arguments``), then rank 0's state on every rank
        (:func:`data_parallel.start_together`)."""
        ranks = distributed.communicator()
        if ranks.size == 1 or self._started_together:
            return
        ranks.require_same(data_parallel.fit_settings(self, data, **arguments))
        data_parallel.start_together(self, ranks, 0)
        self._started_together = self.built  # else the weights the first batch makes are not

    def _shared(self, data: DeviceData) -> tuple[DeviceData, int | None]:
        """``(this rank's share of data, its total rows)`` for a batch given whole to
        ``train_on_batch`` or ``test_on_batch``; ``(data, None)`` in a single process."""
        ranks = distributed.communicator()
        if ranks.size == 1:
            return data, None
        return data.rows(*distributed.share(data.count, ranks.rank, ranks.size)), data.count

    # -- one step --------------------------------------------------------------------------
    def gather(self, role: str, data, indices):
        """``data[indices]`` (rows) into the model's ``role`` buffer, valid until the next
        batch."""
        out = self._buffers(role, (indices.shape[0], *data.shape[1:]), data.dtype)
        return self.backend.take_rows(data, indices, out)

    def gather_each(self, role: str, data, indices):
        """:meth:`gather` of each array of ``data`` (one array, or a tuple of one per input
        or output), into buffers named after ``role``; None for None."""
        if data is None:
            return None
        return arrays_like(data, (self.gather(f"{role}_{index}" if index else role, array,
                                              indices)
                                  for index, array in enumerate(each_array(data))))

    def forward(self, x, training: bool = False):
        """``(n, *sample_shape) -> (n, k)`` (``x`` a tuple of one array per input for a model
        of several): the model's output, a tuple of one per output for a model of several;
        an output's logits where its loss takes those (see :meth:`predictions`).  Each layer
        is given the outputs ``graph`` says it takes."""
        stack, graph, nodes = self.stack, self.graph, list(each_array(x))
        logits = self._logits_nodes()
        rows = nodes[0].shape[0]
        for index, layer in enumerate(stack):
            output = layer.forward(graph.taken(layer, index, nodes),
                                   logits=graph.inputs + index in logits, training=training)
            self._check(output, rows, layer.output_shape, layer, "'s forward output")
            nodes.append(output)
        outputs = [nodes[node] for node in graph.outputs]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def _logits_nodes(self) -> frozenset:
        """The graph's nodes whose layer gives its logits: outputs whose loss takes them."""
        return frozenset(node for head, node in zip(self.heads, self.graph.outputs)
                         if head.takes_logits)

    def _check(self, array, rows: int, sample_shape: tuple, layer, what: str, gradient=False):
        """Refuse (UsageError naming ``layer`` and ``what`` it gave) an ``array`` that is not
        an array of the model's backend (of the type of its own buffers: no NumPy subclass)
        and dtype, of ``rows`` samples of ``sample_shape``, and for a ``gradient`` (which the
        layer before may overwrite, with kernels that take rows) writable and C-contiguous
        where the array type says (a layer of one's own that computes something else)."""
        if self._own_kind is None:  # the type and dtype of the model's arrays, once
            own = self._buffers("the backend's array type", (0,),
                                self.backend.dtype(self.dtype))
            self._own_kind = (type(own), own.dtype)
        if (type(array) is not self._own_kind[0] or array.dtype != self._own_kind[1]
                or array.shape != (rows, *sample_shape)
                or gradient and not _writable_rows(array)):
            found = (f"{type(array).__name__} of shape {tuple(array.shape)} and dtype "
                     f"{array.dtype}" if hasattr(array, "shape") and hasattr(array, "dtype")
                     else reprlib.repr(array))
            raise UsageError(f"{layer.name}{what} must be "
                             f"{'a writable, C-contiguous' if gradient else 'an'} array of the "
                             f"{self.backend.name} backend of shape "
                             f"{(rows, *sample_shape)} and dtype {self.dtype}, not "
                             f"{found}")

    def predictions(self, outputs):
        """The model's outputs (probabilities after a softmax) from :meth:`forward`'s
        ``outputs``, each in a model's buffer where its loss took the logits of an
        activation (a layer without one, under a ``from_logits`` loss, outputs its
        logits)."""
        found = []
        for index, (head, output, layer) in enumerate(zip(self._heads_or_none(),
                                                          each_array(outputs),
                                                          self.output_layers)):
            if head is not None and head.takes_logits and layer.activation is not None:
                probabilities = self._buffers(f"predictions_{index}" if index else "predictions",
                                              output.shape, output.dtype)
                probabilities[...] = output
                output = layer.activation.forward(self.backend, probabilities)
            found.append(output)
        return arrays_like(outputs, found)

    def _heads_or_none(self) -> list:
        """The heads of a compiled model, else None for each output."""
        return self.heads or [None] * len(self.graph.outputs)

    def _losses(self, outputs, y, sample_weight):
        """The batch's summed loss (0-d: each output's weighted per sample, times its loss
        weight, plus the batch's rows times the layers' regularization penalty, as Keras adds
        them), each output's summed loss (a list), and their gradients (each output's,
        scaled by its loss weight: a list) in the model's buffers; ``y`` one target array per
        output (either form a sparse loss takes: labels, or the one-hot rows ``fit``
        converts them to), ``sample_weight`` None, ``(n,)`` or a tuple of one per output."""
        total, sums, grads = None, [], []
        for index, (head, output, targets, weights) in enumerate(zip(
                self.heads, each_array(outputs), each_array(y),
                per_output(sample_weight, len(self.heads)))):
            grad = self._buffers(f"loss_grad_{index}" if index else "loss_grad",
                                 output.shape, output.dtype)
            loss_sum = head.loss.compute(self.backend, output, targets, grad,
                                         logits=head.takes_logits, sample_weight=weights)
            weighted = loss_sum
            if head.weight != 1:
                grad *= head.weight
                weighted = loss_sum * head.weight
            total = weighted if total is None else total + weighted
            sums.append(loss_sum)
            grads.append(grad)
        rows = each_array(outputs)[0].shape[0]
        for layer in self._trained_layers():  # a frozen weight has no penalty, as in Keras
            penalty = layer.regularization_loss()
            if penalty is not None:
                total = total + penalty * rows
        return total, sums, grads

    def compute_gradients(self, x, y, sample_weight=None):
        """Forward, loss and backward on a device batch: every layer's ``grads`` written
        (the regularizers' gradients added); returns ``(loss_sum, outputs)`` on the device
        (:meth:`_losses`, :meth:`forward`)."""
        loss_sum, _, outputs = self._gradients_and_sums(x, y, sample_weight)
        return loss_sum, outputs

    def _gradients_and_sums(self, x, y, sample_weight):
        """:meth:`compute_gradients`, returning ``(loss_sum, output_sums, outputs)``: each
        output's summed loss too (:meth:`_losses`)."""
        outputs = self.forward(x, training=True)
        loss_sum, sums, grads = self._losses(outputs, y, sample_weight)
        self._backward(grads)
        for layer in self._trained_layers():
            layer.add_regularization_gradients()
        return loss_sum, sums, outputs

    def _backward(self, output_grads: list) -> None:
        """Each layer's ``backward``, the last first, from the loss gradients
        ``output_grads`` of the model's outputs (one each): a layer's output taken by
        several layers (or twice, or an output other layers take too) gets the sum of their
        input gradients, in the model's buffer of that output, as does an output given an
        array that a merge layer returned for another input too (the layer before may
        overwrite what it is given); a layer whose output needs no gradient (no weights
        before it) is given none."""
        stack, graph = self.stack, self.graph
        grads = [None] * (graph.inputs + len(stack))  # of each node; the inputs', never
        for node, grad in zip(graph.outputs, output_grads):
            grads[node] = grad
        logits, rows = self._logits_nodes(), output_grads[0].shape[0]
        for index in range(len(stack) - 1, -1, -1):
            layer, node = stack[index], graph.inputs + index
            if grads[node] is None:
                continue
            given = layer.backward(grads[node], logits=node in logits)
            if not layer.needs_input_grad:  # the layers before have no weights
                continue
            sources = graph.inbound[index]
            given = given if layer.takes_several else [given]
            if not isinstance(given, (list, tuple)) or len(given) != len(sources):
                raise UsageError(f"{layer.name}'s backward must return a list of one input "
                                 f"gradient for each of its {len(sources)} inputs, not "
                                 f"{reprlib.repr(given)}")
            handed_on = set()
            for source, source_grad in zip(sources, given):
                if source < graph.inputs:
                    continue
                self._check(source_grad, rows, stack[graph.layer_of(source)].output_shape,
                            layer, "'s backward's input gradient", gradient=True)
                if (graph.uses[source] == 1 and grads[source] is None
                        and id(source_grad) not in handed_on):
                    grads[source] = source_grad
                    handed_on.add(id(source_grad))
                elif grads[source] is None:
                    total = self._buffers(f"gradient of node {source}", source_grad.shape,
                                          source_grad.dtype)
                    total[...] = source_grad
                    grads[source] = total
                else:
                    grads[source] += source_grad

    def apply_gradients(self) -> None:
        """One optimizer step on the trainable layers' weights with their gradients; none
        where no weight trains (a frozen model), as in Keras: its iterations, and so its
        learning-rate schedule, stay where they are."""
        trainable = self._trained_layers()
        params = [p for layer in trainable for p in layer.params]
        if params:
            self.optimizer.apply_gradients(params, [g for layer in trainable for g in layer.grads])

    def train_step(self, x, y, sample_weight=None, total_rows: int | None = None) -> None:
        """One training step on a device batch (``x`` ``(n, *sample_shape)``, a tuple of one
        such array per input for a model of several; ``y`` the targets; ``sample_weight``
        ``(n,)`` or None), its loss and metrics added to the epoch's.
        Data-parallel, ``x`` is this rank's share of a global batch of ``total_rows`` rows,
        and the gradients are summed over the ranks before the update, the step's sums
        (the layers' too) recorded (:class:`dnn.trainers.data_parallel.StepCollectives`)."""
        ranks = None if total_rows is None else self.gradient_sum().collectives
        if ranks is not None:
            ranks.start()  # this step's sums, recorded
        first_row = 0 if ranks is None else distributed.share(total_rows, ranks.rank,
                                                               ranks.size)[0]
        for layer in self.stack:
            layer.first_row, layer.global_rows, layer.ranks = first_row, total_rows, ranks
        try:
            loss_sum, sums, outputs = self._gradients_and_sums(x, y, sample_weight)
        finally:  # a pass outside training steps (model(x, training=True)) sums nothing
            for layer in self.stack:
                layer.ranks = None
        if total_rows is not None:
            self.gradient_sum()(each_array(outputs)[0].shape[0], total_rows)
        self.apply_gradients()
        self._track(loss_sum, sums, outputs, y, sample_weight)

    def test_step(self, x, y, sample_weight=None) -> None:
        """The loss and metrics of a device batch, added to the totals (no gradient kept)."""
        outputs = self.forward(x)
        loss_sum, sums, _ = self._losses(outputs, y, sample_weight)
        self._track(loss_sum, sums, outputs, y, sample_weight)

    def _track(self, loss_sum, sums, outputs, y, sample_weight) -> None:
        """Add a batch to the loss totals (each output's ``sums`` too, for a model of
        several) and the metrics of each output (given the logits where its loss takes them:
        they were built knowing it)."""
        self._loss_total += loss_sum
        several = len(self.heads) > 1
        for head, loss_sum, output, targets, weights in zip(
                self.heads, sums, each_array(outputs), each_array(y),
                per_output(sample_weight, len(self.heads))):
            if several:
                head.total += loss_sum
            for metric in head.metrics:
                metric.update_state(targets, output)
            for metric in head.weighted_metrics:
                metric.update_state(targets, output, weights)

    def step_state(self) -> list:
        """Every device array a training step changes that outlives it: the weights, the
        layers' step state, the optimizer's state (its iterations and hyper-parameters too),
        the loss total and the metrics' totals (the buffers in between are rewritten by every
        step)."""
        optimizer = self.optimizer
        optimizer_state = [] if optimizer is None else [
            *(a for state in optimizer.states for a in state.values()), *optimizer.step_state()]
        return [*self.params, *(a for layer in self.stack for a in layer.step_state()),
                *optimizer_state, *self.totals()]

    def totals(self) -> list:
        """The device arrays the loss and the metrics are added up in: the loss total (then
        each output's, for a model of several), then each metric's variables."""
        return [*self._loss_totals(), *(v for metric in (*self.metrics, *self.weighted_metrics)
                                        for v in metric.variables)]

    def _loss_totals(self) -> list:
        """The loss total, then each output's for a model of several."""
        return [self._loss_total, *(head.total for head in self.heads if len(self.heads) > 1)]

    def _reset_totals(self) -> None:
        """Zero the loss total and the metrics (made zero when the model is built by the
        first batch of a source)."""
        if self._loss_total is None:
            return
        for total in self._loss_totals():
            total[...] = 0
        for metric in (*self.metrics, *self.weighted_metrics):
            metric.reset_state()

    def _sum_totals_over_ranks(self) -> None:
        """Replace the loss and metric totals with their sums over the ranks (every rank
        calls it alike); nothing in a single process."""
        ranks = distributed.communicator()
        if ranks.size > 1:
            data_parallel.sum_totals(self.totals(), self.backend, ranks)

    def _results(self, rows: int) -> dict:
        """The mean loss of the ``rows`` samples added up so far (and each output's, for a
        model of several) and every metric, read from the device, named as Keras names them
        (:meth:`Head.named`; within an output, a repeated name numbered, a weighted metric
        named like an unweighted one prefixed with ``weighted_``)."""
        results = {"loss": float(self._loss_total) / max(rows, 1)}
        if len(self.heads) > 1:
            results.update({head.named("loss"): float(head.total) / max(rows, 1)
                            for head in self.heads_in_loss_order})
        for head in self.heads:
            names = {"loss"}
            for metric in head.metrics:
                name, number = metric.name, 1
                while name in names:
                    name, number = f"{metric.name}_{number}", number + 1
                names.add(name)
                results[head.named(name)] = metric.result()
            for metric in head.weighted_metrics:
                name = metric.name if metric.name not in names else f"weighted_{metric.name}"
                base, number = name, 1
                while name in names:
                    name, number = f"{base}_{number}", number + 1
                names.add(name)
                results[head.named(name)] = metric.result()
        return results

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1,
            verbose="auto", callbacks=None, validation_split: float = 0.0,
            validation_data=None, shuffle: bool = True, class_weight=None,
            sample_weight=None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1):
        """Train from epoch ``initial_epoch`` to ``epochs`` (Keras' arguments and meanings);
        returns the :class:`dnn.callbacks.History` whose ``history["loss"]`` lists the
        per-epoch mean training losses (and every metric, ``val_`` ones too).

        ``x``, ``y``: arrays (NumPy or the backend's own; ``x`` a list of them in the order
        of the Inputs, or a dict keyed by their names, for a model of several), or ``x`` alone
        as a generator, iterable or ``PyDataset`` of ``(x, y)`` or ``(x, y, sample_weight)``
        batches (then ``batch_size`` is theirs).  ``sample_weight`` ``(N,)`` or
        ``class_weight`` ``{class: weight}`` weigh each sample's loss.  ``steps_per_epoch``
        batches make an epoch, the next one going on where it stopped.  ``validation_split``
        keeps that share of the samples, the last ones before shuffling (the first
        ``floor(N * (1 - validation_split))`` trained on, as in Keras), for validation;
        ``validation_data`` is ``(x_val, y_val)``, ``(x_val, y_val, weights)`` or batches.
        ``callbacks`` are :mod:`dnn.callbacks` Callbacks; one may end training with
        ``model.stop_training = True``.  ``verbose``: 0 silent, 1 a progress bar, 2 two
        lines per epoch, ``"auto"`` 1 on a terminal and 2 elsewhere.  A NaN or infinite
        epoch loss raises :class:`DivergenceError`.

        On several ranks (``mpiexec``, :mod:`dnn.distributed`) every rank calls ``fit`` with
        the same model, data and arguments (refused otherwise), ``batch_size`` is the global
        batch, and training starts from rank 0's state.  Batches from a source are read in
        step: where one rank's source ends, the epoch (or training) ends on every rank
        (:class:`dnn.trainers.epoch_iterator.StreamBatches`).  Rank 0 alone prints and runs
        the callbacks that write (``writes_files``, a callback of one's own too); the others
        run every other callback, with the same epoch figures; ``fit`` returns on every rank
        once they are written.  A batch's logs are those of the rank's own share; the
        optimizer's settings are compared at every epoch's end (a callback that changed them on
        some ranks only is a UsageError), and ``sys.exit`` inside ``fit`` on one rank ends the
        whole job with its status as the process exits (:func:`data_parallel.end_job_at_exit`)."""
        self._require_compiled(training=True)
        if not is_int_at_least(epochs, 0):
            raise UsageError(f"epochs must be a non-negative integer, not {epochs!r}")
        if not is_int_at_least(initial_epoch, 0):
            raise UsageError(f"initial_epoch must be a non-negative integer, not "
                             f"{initial_epoch!r}")
        validation_freq = positive_int("validation_freq", validation_freq)
        batch_size = positive_int("batch_size", 32 if batch_size is None else batch_size)
        check_verbose(verbose)
        steps_per_epoch = check_steps(steps_per_epoch, "steps_per_epoch")
        validation_steps = check_steps(validation_steps, "validation_steps")
        training = batches_of(self, x, y, batch_size=batch_size, sample_weight=sample_weight,
                              class_weight=class_weight, steps=steps_per_epoch,
                              shuffle=shuffle, rng=self.rng)
        training, validation = self._validation(
            training, validation_data, validation_split,
            validation_batch_size or max(batch_size, self._evaluation_batch()), validation_steps)
        ranks = distributed.communicator()
        if ranks.size > 1:
            ranks.require_same(data_parallel.fit_settings(
                self, getattr(training, "data", None), batch_size=batch_size, epochs=epochs,
                initial_epoch=initial_epoch, shuffle=shuffle,
                validation_split=validation_split, steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps, validation_freq=validation_freq))
            callbacks = data_parallel.on_this_rank(callbacks, ranks.rank)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        if self.backend is None:  # batches from a source build the model at the first one
            self.backend = backends.current_backend()
        callbacks = CallbackList(callbacks, add_history=True,
                                 add_progbar=verbose != 0 and ranks.rank == 0, model=self,
                                 epochs=epochs, steps=training.steps, verbose=verbose)
        loop = _TrainingLoop(self, training)
        self.stop_training = False
        logs = None
        try:
            callbacks.on_train_begin()
            first = self._initial_epoch or initial_epoch
            if ranks.size > 1:
                first = data_parallel.start_together(self, ranks, first)
                self._started_together = self.built
            for epoch in range(first, epochs):
                callbacks.on_epoch_begin(epoch)
                with self.backend.overflow_silenced():  # a diverged epoch raises instead
                    logs = loop.epoch(epoch, callbacks)
                if logs is None:  # the data ran out before the epoch began
                    break
                if ranks.size > 1:
                    data_parallel.average_state_weights(self, ranks)
                if validation is not None and (epoch + 1) % validation_freq == 0:
                    results = self.evaluate_batches(validation, callbacks)
                    logs.update({f"val_{key}": value for key, value in results.items()})
                self.epochs_done = epoch + 1
                callbacks.on_epoch_end(epoch, logs)
                if ranks.size > 1:  # a callback's stop on one rank stops every rank, and
                    # one that changed the optimizer on some ranks only ends the job
                    self.stop_training = data_parallel.stop_at_epoch_end(self, ranks)
                if self.stop_training or training.ran_out:
                    break
        except SystemExit as error:  # sys.exit on one rank would leave the others waiting
            data_parallel.end_job_at_exit(ranks, error)
            raise
        finally:
            self._initial_epoch = None
            try:
                callbacks.on_train_end(logs)
            except SystemExit as error:
                data_parallel.end_job_at_exit(ranks, error)
                raise
        if ranks.size > 1:  # together: rank 0's files are written when fit returns on any rank
            ranks.all(True)
        return self.history

    def _validation(self, training, validation_data, validation_split, batch_size: int,
                    steps):
        """``(training, validation)`` batches of ``fit``: ``validation_data`` (overriding the
        split, as in Keras) or the last ``validation_split`` of the training arrays."""
        if validation_data is not None:
            if is_batch_source(validation_data):
                return training, batches_of(self, validation_data, None,
                                            batch_size=batch_size, steps=steps,
                                            prefix="validation ")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (
                    2, 3):
                raise UsageError("validation_data must be (x_val, y_val), (x_val, y_val, "
                                 "sample_weight) or batches of them")
            weights = validation_data[2] if len(validation_data) == 3 else None
            return training, batches_of(self, *validation_data[:2], batch_size=batch_size,
                                        sample_weight=weights, steps=steps,
                                        prefix="validation ")
        if not validation_split:
            return training, None
        if not isinstance(training, ArrayBatches):
            raise UsageError("validation_split needs arrays; with batches give "
                             "validation_data")
        return training.split(validation_split, batch_size, steps)

    # -- evaluate, predict ----------------------------------------------------------------
    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto",
                 sample_weight=None, steps: int | None = None, callbacks=None,
                 return_dict: bool = False):
        """The mean loss over ``(x, y)`` (arrays, or batches as ``fit`` takes them), or
        ``[loss, *metrics]`` when metrics were compiled (a dict with ``return_dict``);
        ``verbose`` 1, 2 or ``"auto"`` print them in one line.  On several ranks, each
        evaluates its share of every batch, and every rank returns the figures of all."""
        self._require_compiled()
        batch_size = positive_int("batch_size",
                                  self._evaluation_batch() if batch_size is None else batch_size)
        check_verbose(verbose)
        steps = check_steps(steps, "steps")
        batches = batches_of(self, x, y, batch_size=batch_size, sample_weight=sample_weight,
                             steps=steps)
        self._start_together_once(getattr(batches, "data", None), batch_size=batch_size,
                                  steps=steps)
        callbacks = CallbackList(callbacks, model=self, steps=batches.steps, verbose=verbose)
        results = self.evaluate_batches(batches, callbacks)
        if verbose and distributed.communicator().rank == 0:
            print(figures(results))
        if return_dict:
            return results
        return results["loss"] if len(results) == 1 else list(results.values())

    def evaluate_batches(self, batches, callbacks=None) -> dict:
        """The mean loss and metrics over ``batches`` (what
        :func:`dnn.trainers.epoch_iterator.batches_of` made, on the device already: a
        callback evaluating each epoch moves its data once), each batch a :meth:`test_step`;
        ``callbacks`` a :class:`dnn.callbacks.CallbackList` or None."""
        self._reset_totals()
        if callbacks is not None:
            callbacks.on_test_begin()
        rows = total = 0  # this rank's, and every rank's
        for index, batch in enumerate(batches.epoch()):
            if callbacks is not None:
                callbacks.on_test_batch_begin(index)
            x, y, weights = _gathered(self, batch, "eval")
            self.test_step(x, y, weights)
            rows, total = rows + batch.rows, total + batch.total
            if callbacks is not None:
                callbacks.on_test_batch_end(index, BatchLogs(lambda seen=rows:
                                                             self._results(seen)))
        if total == 0:
            raise UsageError("no batch to evaluate: the data are empty, or a generator was "
                             "used up (give validation_steps, or data that can be read again)")
        self._sum_totals_over_ranks()
        results = self._results(total)
        if callbacks is not None:
            callbacks.on_test_end(results)
        return results

    def predict(self, x, batch_size: int | None = None, verbose="auto", steps=None,
                callbacks=None) -> np.ndarray:
        """Host ``(N, k)`` outputs of the last layer (probabilities after a softmax) for
        ``x`` (an array, a list or dict of them for a model of several inputs, or batches of
        ``x`` or ``(x, ...)``); a list of them for a model of several outputs (a dict keyed by
        their names, where they came as one); ``verbose`` is accepted as Keras' is, and
        prints nothing."""
        batch_size = positive_int("batch_size",
                                  self._evaluation_batch() if batch_size is None else batch_size)
        check_verbose(verbose)
        batches = batches_of(self, x, None, batch_size=batch_size,
                             steps=check_steps(steps, "steps"), with_targets=False)
        return self._predicted(batches, callbacks, verbose)

    def _predicted(self, batches, callbacks, verbose) -> np.ndarray:
        """The host outputs of :meth:`predict` for ``batches``."""
        callbacks = CallbackList(callbacks, model=self, steps=batches.steps, verbose=verbose)
        callbacks.on_predict_begin()
        outputs = []
        for index, batch in enumerate(batches.epoch()):
            callbacks.on_predict_batch_begin(index)
            x_batch, _, _ = _gathered(self, batch, "predict")
            outputs.append(self.host_outputs(self.forward(x_batch)))
            callbacks.on_predict_batch_end(index, {"outputs": self._as_given(outputs[-1])})
        callbacks.on_predict_end()
        if not outputs:
            raise UsageError("predict got no batch: the data are empty")
        return self._as_given([np.concatenate(parts) for parts in zip(*outputs)])

    def host_outputs(self, outputs) -> list:
        """:meth:`predictions` of :meth:`forward`'s ``outputs``, a host array for each."""
        return [self.backend.to_numpy(output) for output in each_array(self.predictions(outputs))]

    def _as_given(self, arrays: list):
        """Host ``arrays`` of each output in the form Keras gives a model's outputs: the one
        array, a list of them, or a dict keyed by the outputs' names where they came as
        one."""
        if self._outputs_by_name:
            return dict(zip(self._output_keys, arrays))
        return arrays[0] if len(arrays) == 1 else list(arrays)

    # -- one batch -----------------------------------------------------------------------
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None,
                       return_dict: bool = False):
        """One optimizer step on ``(x, y)``; returns that batch's loss (and metrics, as
        :meth:`evaluate` does).  On several ranks, ``(x, y)`` is the global batch, each rank
        taking its share."""
        self._require_compiled(training=True)
        data = DeviceData.from_host(self, x, y, sample_weight, class_weight)
        self._start_together_once(data)
        data, total = self._shared(data)
        self._reset_totals()
        self.train_step(data.x, data.y, data.sample_weight, total_rows=total)
        return self._batch_results(total or data.count, return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """The loss (and metrics) of ``(x, y)`` as one batch (shared as
        :meth:`train_on_batch` shares it)."""
        self._require_compiled()
        data = DeviceData.from_host(self, x, y, sample_weight)
        self._start_together_once(data)
        data, total = self._shared(data)
        self._reset_totals()
        self.test_step(data.x, data.y, data.sample_weight)
        return self._batch_results(total or data.count, return_dict)

    def _batch_results(self, rows: int, return_dict: bool):
        self._sum_totals_over_ranks()
        results = self._results(rows)
        if return_dict:
            return results
        return results["loss"] if len(results) == 1 else list(results.values())

    def predict_on_batch(self, x) -> np.ndarray:
        """:meth:`predict` of ``x`` as one batch."""
        data = DeviceData.from_host_inputs(self, x)
        return self._predicted(ArrayBatches(data, data.count, self.backend), None, 0)

    def _divergence_message(self, epoch: int, loss: float, data) -> str:
        """Why the loss of ``epoch`` is not finite: NaN or infinite values in the data when
        there are some (looked for only now, so that a healthy run never pays for it), else
        too large a step."""
        inputs, targets = each_array(data.x), each_array(data.y)
        names = ([f"inputs {layer.name!r}" for layer in self._layers[:len(inputs)]]
                 if len(inputs) > 1 else ["inputs"])
        names += ([f"targets {key!r}" for key in self._output_keys] if len(targets) > 1
                  else ["targets"])
        for what, array in zip(names, (*inputs, *targets)):
            host = self.backend.to_numpy(array).reshape(array.shape[0], -1)
            bad_rows = np.flatnonzero(~np.isfinite(host).all(axis=1))
            if bad_rows.size:
                return (f"training diverged: the loss of epoch {epoch} is {loss} because the "
                        f"{what} hold NaN or infinite values (the first in row {bad_rows[0]})")
        return (f"training diverged: the loss of epoch {epoch} is {loss}; try a smaller "
                "learning rate")


def per_output(sample_weight, outputs: int) -> list:
    """The sample weights of each of ``outputs``: a tuple of one per output as it is, else
    the one array (or None) for every output."""
    return list(sample_weight) if isinstance(sample_weight, tuple) else [sample_weight] * outputs


def _gathered(trainer, batch, role: str):
    """``(x, y, sample_weight)`` of ``batch`` on the device: its rows gathered into the
    trainer's ``role`` buffers, or the batch's own arrays."""
    data = batch.data
    if batch.indices is None:
        return data.x, data.y, data.sample_weight
    gather = trainer.gather_each
    return (gather(f"{role}_x", data.x, batch.indices), gather(f"{role}_y", data.y, batch.indices),
            gather(f"{role}_w", data.sample_weight, batch.indices))


class _TrainingLoop:
    """The epochs of one ``fit``: a training step per batch shape, captured and replayed
    where the backend can for the full batches (the last, smaller one of an epoch runs
    once an epoch: capturing it would not pay); targets of a sparse loss are made one-hot
    once, so that the steps run as fast as on one-hot targets.  On several ranks, a
    rank's steps are for its shares; whether a callback stopped training is agreed after
    every batch, and the epoch's figures are every rank's."""

    def __init__(self, trainer: Trainer, batches):
        self.trainer, self.batches = trainer, batches
        self._steps: dict = {}
        self._full_batch = getattr(batches, "batch_size", None)  # rows of a whole batch
        self._ranks = distributed.communicator()
        # rank 0's state: shared by fit at the start, or else at the first step
        self._state_shared = trainer.built or self._ranks.size == 1
        data = getattr(batches, "data", None)
        if data is not None:
            batches.data = DeviceData(data.x, self._dense(data.y), data.sample_weight)

    def _dense(self, targets):
        """``targets`` (one array per output) with each sparse loss's labels as its one-hot
        rows (:meth:`dnn.losses.Loss.dense_targets`)."""
        trainer = self.trainer
        dtype = trainer.backend.dtype(trainer.dtype)
        return arrays_like(targets, (
            head.loss.dense_targets(trainer.backend, array, layer.output_features, dtype)
            for head, layer, array in zip(trainer.heads, trainer.output_layers,
                                          each_array(targets))))

    def epoch(self, epoch: int, callbacks) -> dict | None:
        """One epoch; returns its logs (loss and metrics; the training seconds go to the
        History's ``seconds``), or None when the data ran out before its first batch."""
        trainer, ranks = self.trainer, self._ranks
        started = time.perf_counter()
        trainer._reset_totals()
        rows = total = batches_run = 0  # this rank's rows, and every rank's
        for index, batch in enumerate(self.batches.epoch()):
            callbacks.on_train_batch_begin(index)
            self._step_for(batch)()
            rows, total = rows + batch.rows, total + batch.total
            batches_run += 1
            callbacks.on_train_batch_end(index, BatchLogs(lambda seen=rows:
                                                          trainer._results(seen)))
            if ranks.size > 1:
                trainer.stop_training = ranks.any(trainer.stop_training)
            if trainer.stop_training:
                break
        if batches_run == 0:
            return None
        trainer._sum_totals_over_ranks()
        logs = trainer._results(total)
        # a non-finite loss ends the run, unless a callback (TerminateOnNaN) ended it already
        if not math.isfinite(logs["loss"]) and not trainer.stop_training:
            data = getattr(self.batches, "data", None)
            raise DivergenceError(
                trainer._divergence_message(epoch + 1, logs["loss"], data) if data is not None
                else f"training diverged: the loss of epoch {epoch + 1} is {logs['loss']}")
        trainer.history.seconds.append(time.perf_counter() - started)  # without validation
        return logs

    def _step_for(self, batch):
        """The step for ``batch``, its rows written into the step's index buffer (array
        data) or its arrays copied into the step's own (batches from a source)."""
        weights = batch.data.sample_weight  # None, one array, or a tuple of one per output
        key = (batch.rows, batch.total, None if weights is None else len(each_array(weights)),
               batch.indices is None)
        if not self._state_shared:  # a model built by its first batch (from a source)
            data_parallel.share_state(self.trainer, self._ranks)
            self._state_shared = True
        if key not in self._steps:
            if self._full_batch is None:  # batches from a source: its first batch's size
                self._full_batch = batch.total
            data = batch.data if batch.indices is not None else self._staging(batch)
            step = TrainingStep(self.trainer, data, batch.rows,
                                batch.total if self._ranks.size > 1 else None)
            if batch.indices is None:
                step.indices[...] = self.trainer.backend.asarray(np.arange(batch.rows))
            if batch.total == self._full_batch:  # alike on every rank
                step = ReplayedStep(step)
            self._steps[key] = step, data
        step, data = self._steps[key]
        if batch.indices is not None:
            step.indices[...] = batch.indices
        else:
            given = batch.data
            for staged, array in zip(data.arrays(), DeviceData(
                    given.x, self._dense(given.y), given.sample_weight).arrays(), strict=True):
                staged[...] = array
        return step

    def _staging(self, batch) -> DeviceData:
        """Arrays of ``batch``'s shapes that every batch of them is copied into, so that a
        captured step reads the same arrays each time."""
        backend, data = self.trainer.backend, batch.data

        def like(array):
            return backend.empty(array.shape, array.dtype)
        return DeviceData(*(map_arrays(like, arrays)
                            for arrays in (data.x, self._dense(data.y), data.sample_weight)))
