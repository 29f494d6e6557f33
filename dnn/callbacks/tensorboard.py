"""Keras' ``TensorBoard`` callback: a run's figures, weights and gradients as TensorBoard event
files, for ``tensorboard --logdir LOG_DIR`` to show while the run goes on.

The files are written with TensorBoard's own record writer, event protos and summaries (the
``tensorboard`` package, dnn's optional extra ``dnn-framework[tensorboard]``), in Keras 3's
layout and with its names.  Everything is read from the device once an epoch, outside any
captured step; a batch costs nothing unless ``update_freq`` asks for batch figures (then the
lazy logs of the batches written are read, and each batch's learning rate is worked out on
the host, without reading the device).  Every event passes through
:meth:`_EventFiles.add`: where several processes train one model, the check that only the
first writes is one line there.
"""

from __future__ import annotations

import json
import itertools
import os
import socket
import time
import types
import warnings

import numpy as np

from dnn.callbacks.arguments import check_flag, check_path
from dnn.callbacks.callback import Callback
from dnn.callbacks.learning_rate_scheduler import log_learning_rate
from dnn.errors import DnnError, UsageError
from dnn.saving.fileio import check_writable, write_errors_named
from dnn.utils import is_int_at_least, is_number

INSTALL_HINT = "pip install 'dnn-framework[tensorboard]'"
RUNS = {"val_": "validation", "test_": "test"}  # a figure's prefix -> its run; others: train
_FILE_NUMBERS = itertools.count()  # tells apart the files a process opens in one second
IGNORED = {  # Keras' arguments that do nothing here: (their default, what they do in Keras)
    "write_images": (False, "weight images"),
    "profile_batch": (0, "profiling"),
    "embeddings_freq": (0, "the embedding projector"),
    "embeddings_metadata": (None, "the embedding projector"),
}


def _library() -> types.SimpleNamespace:
    """The parts of the ``tensorboard`` package the callback writes with, or a DnnError
    saying which extra to install."""
    try:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.graph.metadata import PLUGIN_NAME_KERAS_MODEL
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise DnnError(f"the TensorBoard callback needs the tensorboard package: "
                       f"{INSTALL_HINT}") from None
    return types.SimpleNamespace(Event=Event, RecordWriter=RecordWriter,
                                 histogram_pb=histogram_pb, scalar_pb=scalar_pb,
                                 Summary=summary_pb2.Summary,
                                 SummaryMetadata=summary_pb2.SummaryMetadata,
                                 TensorProto=tensor_pb2.TensorProto, DT_STRING=types_pb2.DT_STRING,
                                 keras_model_plugin=PLUGIN_NAME_KERAS_MODEL)


def _model_summary(library: types.SimpleNamespace, tag: str, json_text: str):
    """Keras' ``keras_model_summary``: a ``Summary`` of one string tensor, ``json_text`` (the
    model's ``to_json()``), under ``tag``, for the plugin ``graph_keras_model`` (version
    ``1``), that TensorBoard's graph dashboard reads as the model's conceptual graph."""
    metadata = library.SummaryMetadata()
    metadata.plugin_data.plugin_name = library.keras_model_plugin  # "graph_keras_model"
    metadata.plugin_data.content = b"1"
    tensor = library.TensorProto(dtype=library.DT_STRING,
                                 string_val=[json_text.encode("utf-8")])
    tensor.tensor_shape.SetInParent()  # a scalar, as tf.summary.write makes it
    return library.Summary(value=[library.Summary.Value(tag=tag, metadata=metadata,
                                                        tensor=tensor)])


def _keras_layout(model) -> dict:
    """``model.get_config()`` laid out as Keras' ``to_json`` lays out a Sequential's, which
    TensorBoard's graph dashboard draws: ``{"class_name": "Sequential", "config": {"name",
    "layers": [{"class_name", "config": {"name", ...}}, ...]}}``, an Input as Keras'
    ``InputLayer`` with its ``batch_shape``; a model whose layers make a graph as Keras 3
    lays out a Functional one, each layer with the ``inbound_nodes`` it takes (and a list of
    its ``input_layers`` where it has several)."""
    config = model.get_config()
    layers = []
    for layer, layer_config in zip(model._layers, config["layers"]):
        arguments = {key: value for key, value in layer_config.items() if key != "class"}
        arguments.update(name=layer.name, dtype=config["dtype"])
        if layer_config["class"] == "Input":
            arguments["batch_shape"] = [None, *arguments.pop("shape")]
            layers.append({"class_name": "InputLayer", "config": arguments})
        else:
            layers.append({"class_name": layer_config["class"], "config": arguments})
    if model.graph.is_chain:
        return {"class_name": "Sequential", "config": {"name": model.name, "layers": layers}}
    inputs = model.graph.inputs
    for layout, layer, names in zip(layers[inputs:], model.stack, model._taken_names()):
        taken = [{"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}
                 for name in names]
        layout["inbound_nodes"] = [{"args": [taken if layer.takes_several else taken[0]],
                                    "kwargs": {}}]
    return {"class_name": "Functional",
            "config": {"name": model.name, "layers": layers,
                       "input_layers": _keras_nodes(model._layers[:inputs]),
                       "output_layers": _keras_nodes(model.output_layers)}}


def _keras_nodes(layers: list):
    """Keras' ``[name, 0, 0]`` of the one layer of ``layers``, or a list of them for
    several (a Functional config's ``input_layers`` and ``output_layers``)."""
    nodes = [[layer.name, 0, 0] for layer in layers]
    return nodes if len(nodes) > 1 else nodes[0]


def _sync(file) -> None:
    """Write what ``file`` holds to disk."""
    file.flush()
    os.fsync(file.fileno())


class _EventFiles:
    """The event files of a log folder, one per run (a subfolder: ``train``, ``validation``,
    ``test``), opened when the run's first event comes and named as TensorBoard's own writer
    names them.  Events are written in the calling thread with TensorBoard's record writer,
    so that an error (a :class:`dnn.errors.FileWriteError` naming the run's folder) is raised
    where it happens; every event passes through :meth:`add`."""

    def __init__(self, log_dir: str, library: types.SimpleNamespace):
        self.log_dir, self._library = log_dir, library
        self._files: dict = {}  # run -> (file, record writer)

    def folder(self, run: str) -> str:
        """The folder of ``run``'s event files."""
        return os.path.join(self.log_dir, run)

    def add(self, run: str, step: int, summaries=()) -> None:
        """Write ``summaries`` (TensorBoard ``Summary`` protos) to ``run`` at ``step``,
        opening its file first if need be (with no summaries: only open it)."""
        with write_errors_named(self.folder(run)):
            records = self._records(run)
            for summary in summaries:
                event = self._library.Event(wall_time=time.time(), step=int(step),
                                            summary=summary)
                records.write(event.SerializeToString())

    def _records(self, run: str):
        """The record writer of ``run``'s file, made, its first event (the format's version)
        written and on disk, if need be."""
        if run not in self._files:
            folder = self.folder(run)
            os.makedirs(folder, exist_ok=True)
            name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                    f"{os.getpid()}.{next(_FILE_NUMBERS)}")
            file = open(os.path.join(folder, name), "wb")
            records = self._library.RecordWriter(file)
            self._files[run] = file, records  # at once: close() closes it whatever comes next
            version = self._library.Event(wall_time=time.time(), file_version="brain.Event:2")
            records.write(version.SerializeToString())
            _sync(file)
        return self._files[run][1]

    def flush(self) -> None:
        """Write every event added so far to disk."""
        for run, (file, _) in self._files.items():
            with write_errors_named(self.folder(run)):
                _sync(file)

    def close(self) -> None:
        """Close every file (writing what it holds); a later event opens a new one."""
        files, self._files = self._files, {}
        for run, (file, _) in files.items():
            with write_errors_named(self.folder(run)):
                file.close()


def _frequency(name: str, value) -> int:
    """``value``, the ``name`` argument (every how many epochs; 0: never), checked."""
    if not is_int_at_least(value, 0):
        raise UsageError(f"TensorBoard {name} must be an integer >= 0 (0: never), not "
                         f"{value!r}")
    return int(value)


def _update_freq(value):
    """Keras' ``update_freq``: ``"epoch"``, or every how many batches (``"batch"``: 1)."""
    if value == "batch":
        return 1
    if value != "epoch" and not is_int_at_least(value, 1):
        raise UsageError(f"TensorBoard update_freq must be 'epoch', 'batch' or a positive "
                         f"integer, not {value!r}")
    return value if value == "epoch" else int(value)


def _warn_ignored(values: dict) -> None:
    """One warning naming the arguments of :data:`IGNORED` given a value that would do
    something in Keras."""
    given = {name: value for name, value in values.items() if value != IGNORED[name][0]}
    if given:
        arguments = ", ".join(f"{name}={value!r}" for name, value in given.items())
        what = ", ".join(dict.fromkeys(IGNORED[name][1] for name in given))
        warnings.warn(f"TensorBoard ignores {arguments}: dnn writes no {what}", UserWarning,
                      stacklevel=3)


def _by_run(figures: dict) -> dict:
    """``{run: {name: value}}``: ``figures`` by run (``val_loss`` becomes ``loss`` of
    ``validation``, ``test_loss`` ``loss`` of ``test``, the others stay in ``train``)."""
    runs: dict = {}
    for name, value in figures.items():
        prefix = next((prefix for prefix in RUNS if name.startswith(prefix)), "")
        runs.setdefault(RUNS.get(prefix, "train"), {})[name[len(prefix):]] = value
    return runs


def _path(model, layer, weight) -> str:
    """``weight``'s tag stem as Keras 3 writes it: its ``weight.path`` (``model name/layer
    name/weight name``: ``sequential/dense/kernel``), ``:`` replaced by ``_``."""
    return f"{model.name}/{layer.name}/{layer.weight_name(weight)}".replace(":", "_")


def _weights(model):
    """``(path, weight)`` for every weight of every layer of ``model``, trained or not (a
    frozen layer's, BatchNormalization's ``moving_mean``), as Keras 3 writes histograms."""
    for layer in model.layers:
        for weight in layer.weights:
            yield _path(model, layer, weight), weight


def _trained(model):
    """``(path, param, grad)`` for every weight the optimizer trains: the ``params`` of the
    model's trainable layers, with their gradients."""
    for layer in model._trained_layers():
        for param, grad in zip(layer.params, layer.grads):
            yield _path(model, layer, param), param, grad


def _every(frequency: int, epoch: int) -> bool:
    """Whether something written every ``frequency`` epochs (0: never) is due at ``epoch``
    (epochs 0, N, 2N, ... as in Keras)."""
    return bool(frequency) and epoch % frequency == 0


def _norm(array: np.ndarray) -> float:
    """The Euclidean norm of a host array's elements, summed in float64."""
    return float(np.sqrt(np.sum(np.square(array, dtype=np.float64))))


class TensorBoard(Callback):
    """Write TensorBoard event files under ``log_dir`` as Keras 3's ``TensorBoard`` does;
    ``tensorboard --logdir LOG_DIR`` shows them, during the run too (the files are flushed
    at the end of every epoch, so a crash loses at most the epoch it was in).

    Runs (subfolders of ``log_dir``) and tags, as Keras names them:

    - ``train``: ``epoch_loss``, ``epoch_<metric>`` (``epoch_accuracy``), ``epoch_learning_rate``
      (the optimizer's, read at the end of the epoch: with a schedule, the rate of the
      epoch's last step, where Keras reads the next step's), at step ``epoch`` (from 0).  The
      rate is written every epoch, changed or not, as Keras writes it: a constant rate is a
      flat line, which is what one expects to see, and a change shows at the epoch it
      happened;
    - ``validation``: the ``val_`` figures, named without it (``epoch_loss``), and
      ``evaluation_<figure>_vs_iterations`` at the optimizer's step count after each
      evaluation; ``test``: the ``test_`` figures that ``dnn train`` adds (its test set);
    - with ``update_freq`` ``"batch"`` or N: ``batch_loss``, ``batch_<metric>`` (the epoch's
      running means) every N batches, at step ``batches trained in this fit`` (from 1); and
      ``batch_learning_rate``, the rate of the batch's step as the optimizer holds it when the
      batch ends: with the other batch figures, and besides at the first batch and at every
      batch where the rate changed (a schedule's, or one a callback sets), with the old rate
      at the batch before, so that the chart draws the change as a step, not a ramp (a
      schedule that changes the rate every step writes a point every step).  It is worked out
      on the host (the schedule's formula from the step count, or the number the rate was
      last given), never read from the device;
    - with ``write_steps_per_second``: ``epoch_steps_per_second`` (and
      ``batch_steps_per_second`` with batch figures);
    - with ``histogram_freq`` N: every N epochs, in ``train``, a histogram of every weight of
      every layer, trained or not (a frozen layer's, BatchNormalization's ``moving_mean``),
      tagged as Keras 3 tags it, by the weight's path ``<model>/<layer>/<weight>/histogram``
      (``sequential/dense/kernel/histogram``, ``sequential/dense/bias/histogram``; the
      model's ``name``, each layer's, and the name the layer made the weight with);
    - with ``write_graph`` (the default): in ``train`` at step 0, when training begins, the
      model's architecture as Keras' ``keras_model_summary`` writes it: the tag ``keras``, a
      string tensor for TensorBoard's ``graph_keras_model`` plugin holding the JSON laid out
      as Keras' ``to_json`` lays it out (each layer's class and arguments, named), which its
      Graphs dashboard draws as the run's conceptual graph; a model whose config cannot be
      written warns and writes none, as in Keras.

    Beyond Keras, ``gradient_freq`` N writes every N epochs, in ``train``, for each weight the
    optimizer trains (those of the trainable layers), from the last step of the epoch (its
    gradient, regularization included, as the optimizer applied it), under the same path as
    its histogram: ``<model>/<layer>/<weight>/gradient_norm``
    (``sequential/dense/kernel/gradient_norm``: vanishing or exploding gradients),
    ``<model>/<layer>/<weight>/update_ratio``, the norm of the step's change of the weight
    over the weight's norm (about 1e-3 is healthy; 1e-1 means a learning rate too large), and
    ``<model>/<layer>/<weight>/gradient_histogram``.  The weights are copied on the device
    once, before that step; the ratio is left out where the epoch's length is not known
    (batches from a generator without ``len``), the epoch stopped early, or the weight was
    zero.

    Args:
        log_dir: the folder of the runs, made if missing; it must be a folder that can be
            written (checked here, and again when training begins: a
            :class:`dnn.errors.UsageError` or :class:`dnn.errors.FileWriteError`).
        histogram_freq: every how many epochs to write the weights' histograms (0: never).
        write_graph: write the model's JSON (tag ``keras``, above) when training begins.
        write_images: ignored (Keras draws weights as images); True warns.
        write_steps_per_second: write the training steps per second.
        update_freq: ``"epoch"`` (figures once an epoch), ``"batch"`` or N (also every N
            batches; each reads the batch's figures from the device, which slows a run).
        profile_batch, embeddings_freq, embeddings_metadata: ignored (Keras' profiler and
            embedding projector); a value that would do something in Keras warns.
        gradient_freq: every how many epochs to write the gradient figures (0: never).

    Needs the ``tensorboard`` package (``pip install 'dnn-framework[tensorboard]'``); without
    it, making the callback is a :class:`dnn.errors.DnnError` saying so.

    Example::

        model.fit(x, y, epochs=10, validation_split=0.1,
                  callbacks=[TensorBoard("logs", histogram_freq=1, gradient_freq=1)])
        # then: tensorboard --logdir logs
    """

    writes_files = True  # event files: where several processes train, only rank 0 runs it

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0,
                 embeddings_freq=0, embeddings_metadata=None, gradient_freq=0):
        super().__init__()
        self.log_dir = check_path("TensorBoard", "log_dir", log_dir)
        self.histogram_freq = _frequency("histogram_freq", histogram_freq)
        self.gradient_freq = _frequency("gradient_freq", gradient_freq)
        self.update_freq = _update_freq(update_freq)
        for name, flag in (("write_graph", write_graph), ("write_images", write_images),
                           ("write_steps_per_second", write_steps_per_second)):
            check_flag("TensorBoard", name, flag)
        self.write_graph, self.write_images = write_graph, write_images
        self.write_steps_per_second = write_steps_per_second
        self.profile_batch, self.embeddings_freq = profile_batch, embeddings_freq
        self.embeddings_metadata = embeddings_metadata
        _warn_ignored({"write_images": write_images, "profile_batch": profile_batch,
                       "embeddings_freq": embeddings_freq,
                       "embeddings_metadata": embeddings_metadata})
        self._library = _library()
        for run in ("train", *RUNS.values()):
            check_writable(os.path.join(self.log_dir, run, "events.out.tfevents"),
                           "TensorBoard log_dir")
        self._files = _EventFiles(self.log_dir, self._library)
        self._global_batch = 0  # batches trained in this fit, when batch figures are asked
        self._batch_started = self._epoch_started = 0.0
        self._epoch_iterations = 0  # the optimizer's step count when the epoch began
        self._rate = None  # with batch figures: the last batch's learning rate, as float32
        self._rate_step = 0  # the step of the last batch_learning_rate point
        self._copy_before = None  # the batch before whose step the weights are copied
        self._weights_before: dict = {}  # path -> a device copy of the weight, if copied

    # -- the hooks -----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._global_batch, self._rate, self._rate_step = 0, None, 0
        summaries = self._graph() if self.write_graph else []
        self._files.add("train", 0, summaries)  # now: a folder that cannot be written fails

    def on_epoch_begin(self, epoch, logs=None):
        if self.write_steps_per_second or self.update_freq != "epoch":
            self._epoch_iterations = int(self.model.optimizer.iterations)  # once an epoch
        if self.write_steps_per_second:
            self._epoch_started = time.perf_counter()
        steps = self.params.get("steps")
        self._copy_before = steps - 1 if steps and _every(self.gradient_freq, epoch) else None
        self._weights_before = {}

    def on_train_batch_begin(self, batch, logs=None):
        """Before the last step of an epoch with gradient figures, a device copy of the
        weights; with batch figures, the batch's count and start."""
        if batch == self._copy_before:  # the last step of an epoch with gradient figures
            xp = self.model.backend.xp
            self._weights_before = {path: xp.asarray(param, copy=True)
                                    for path, param, _ in _trained(self.model)}
        if self.update_freq != "epoch":
            self._global_batch += 1
            self._batch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        logged = self._global_batch % self.update_freq == 0
        self._log_batch_rate(self._epoch_iterations + batch, logged)
        if not logged:
            return
        figures = dict(logs or {})  # reads the batch's figures from the device
        if self.write_steps_per_second:
            figures["steps_per_second"] = 1 / (time.perf_counter() - self._batch_started)
        self._scalars("train", {f"batch_{name}": value for name, value in figures.items()},
                      self._global_batch)

    def on_epoch_end(self, epoch, logs=None):
        figures = dict(logs or {})
        log_learning_rate(self.model, figures)  # epoch_learning_rate, as Keras writes it
        if self.write_steps_per_second:
            steps = int(self.model.optimizer.iterations) - self._epoch_iterations
            figures["steps_per_second"] = steps / (time.perf_counter() - self._epoch_started)
        for run, run_figures in _by_run(figures).items():
            self._scalars(run, {f"epoch_{name}": value for name, value in run_figures.items()},
                          epoch)
        if _every(self.histogram_freq, epoch):
            self._log_weights(epoch)
        if _every(self.gradient_freq, epoch):
            self._log_gradients(epoch)
        self._files.flush()

    def on_test_end(self, logs=None):
        """Keras' ``evaluation_<figure>_vs_iterations``, after a validation (or a
        ``model.evaluate(callbacks=[...])``), flushed at once."""
        optimizer = self.model.optimizer
        if optimizer is None or not logs:
            return
        figures = {f"evaluation_{name}_vs_iterations": value for name, value in logs.items()}
        self._scalars("validation", figures, int(optimizer.iterations))
        self._files.flush()

    def on_train_end(self, logs=None):
        self._files.close()

    # -- what is written -----------------------------------------------------------------
    def _scalars(self, run: str, figures: dict, step) -> None:
        """The numbers of ``figures`` (tag -> value) as scalars of ``run`` at ``step`` (a
        run with none is not opened)."""
        scalar_pb = self._library.scalar_pb
        summaries = [scalar_pb(tag, value) for tag, value in figures.items() if is_number(value)]
        if summaries:
            self._files.add(run, step, summaries)

    def _log_batch_rate(self, step: int, logged: bool) -> None:
        """``batch_learning_rate`` of the batch that ran the optimizer's step ``step``: at a
        batch whose figures are ``logged``, at the first and where the rate changed (then the
        old rate at the batch before too, unless written there)."""
        rate = np.float32(self.model.optimizer.learning_rate_at(step))  # TensorBoard's float32
        previous, self._rate = self._rate, rate
        changed = previous is None or rate != previous
        batch = self._global_batch
        if changed and previous is not None and self._rate_step < batch - 1:
            self._scalars("train", {"batch_learning_rate": float(previous)}, batch - 1)
        if changed or logged:
            self._scalars("train", {"batch_learning_rate": float(rate)}, batch)
            self._rate_step = batch

    def _graph(self) -> list:
        """Keras' ``keras`` summary of the model as Keras' JSON lays it out, in a list; none
        (with a warning, as in Keras) where the model's config cannot be written."""
        try:
            json_text = json.dumps(_keras_layout(self.model))
        except Exception as error:  # as Keras: a model that cannot be written is no failure
            warnings.warn(f"TensorBoard writes no model graph: the model failed to serialize "
                          f"as JSON ({error})", UserWarning, stacklevel=2)
            return []
        return [_model_summary(self._library, "keras", json_text)]

    def _log_weights(self, epoch: int) -> None:
        """A histogram of every weight of every layer, trained or not, as Keras 3 writes it."""
        to_numpy, histogram_pb = self.model.backend.to_numpy, self._library.histogram_pb
        self._files.add("train", epoch, [histogram_pb(f"{path}/histogram", to_numpy(weight))
                                         for path, weight in _weights(self.model)])

    def _log_gradients(self, epoch: int) -> None:
        """The gradient figures of every weight the optimizer trains (class docstring)."""
        to_numpy, histogram_pb = self.model.backend.to_numpy, self._library.histogram_pb
        figures, histograms = {}, []
        for path, param, grad in _trained(self.model):
            gradient = to_numpy(grad)
            figures[f"{path}/gradient_norm"] = _norm(gradient)
            histograms.append(histogram_pb(f"{path}/gradient_histogram", gradient))
            if path in self._weights_before:
                before = to_numpy(self._weights_before[path])
                scale = _norm(before)
                if scale > 0:
                    figures[f"{path}/update_ratio"] = _norm(to_numpy(param) - before) / scale
        self._weights_before = {}
        self._scalars("train", figures, epoch)
        self._files.add("train", epoch, histograms)
