"""The Sequential model: a Keras-shaped API over layers, a loss and an optimizer.

Data in ``fit``/``evaluate``/``predict`` are host arrays: inputs ``(N, ...)`` (flattened to
``(N, features)``), targets one-hot ``(N, k)`` or integer labels ``(N,)`` for the sparse loss.
They are moved to the model's backend once; batches are gathered there, and the epoch's loss
and accuracy are accumulated there and read back once per epoch.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from dnn import backends, layers as layers_module, losses, metrics as metrics_module, optimizers
from dnn.buffers import Buffers
from dnn.callbacks import BatchLogs, EpochLines, History, ProgressBar, callback_list, figures
from dnn.errors import ArgumentTypeError, DivergenceError, OutOfMemoryError, UsageError
from dnn.step import EpochTotals, ReplayedStep, TrainingStep
from dnn.utils import (as_shape, check_label_range, element_count, is_int_at_least,
                       model_rng)


def _validate_positive_int(name: str, value) -> int:
    if not is_int_at_least(value, 1):
        raise UsageError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _features(input_shape) -> int:
    """The number of features of inputs of ``input_shape`` (an int, or a shape whose leading
    None is the batch size; the rest is flattened)."""
    shape = as_shape(input_shape)
    features = element_count(shape[1:] if shape and shape[0] is None else shape)
    if features is None:
        raise UsageError(f"input shape must be a positive number of features or (None, "
                         f"features), not {input_shape!r}")
    return features


def _check_verbose(verbose) -> None:
    if verbose not in (0, 1, 2, "auto"):
        raise UsageError(f"verbose must be 0, 1, 2 or 'auto', not {verbose!r}")


def check_seed(seed) -> None:
    """Refuse a seed that is neither None nor a non-negative integer."""
    if seed is not None and not is_int_at_least(seed, 0):
        raise UsageError(f"seed must be a non-negative integer or None, not {seed!r}")


def _float_dtype(dtype) -> np.dtype:
    """float32 or float64 from a name or a NumPy type; UsageError for anything else (None,
    which NumPy reads as float64, included)."""
    try:
        found = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):  # not a dtype at all
        found = None
    if found not in (np.float32, np.float64):
        raise UsageError(f"dtype must be float32 or float64, not {dtype!r}")
    return found


def _split_off(x, y, share):
    """``((x, y) kept, (x, y) for validation)``: the last ``share`` of the samples split off
    (Keras' ``validation_split``)."""
    if not (isinstance(share, (int, float)) and 0 <= share < 1):
        raise UsageError(f"validation_split must be a number in [0, 1), not {share!r}")
    kept = x.shape[0] - int(x.shape[0] * share)
    if kept == x.shape[0] or kept == 0:
        raise UsageError(f"validation_split {share} of {x.shape[0]} samples leaves "
                         f"{'no validation' if kept == x.shape[0] else 'no training'} sample")
    return (x[:kept], y[:kept]), (x[kept:], y[kept:])


class Sequential:
    """A stack of layers trained with backpropagation.

    ``dtype`` is the dtype of weights and activations (float32 by default; float64 for gradient
    checks).  ``seed`` seeds the host NumPy Generator that draws the initial weights and the
    shuffle order, so one seed gives the same run on every backend.  ``backend`` (a name or an
    instance) defaults to the current backend when the weights are built.
    """

    def __init__(self, layers=(), *, dtype="float32", seed=None, backend=None):
        if isinstance(layers, layers_module.Layer):
            raise UsageError("Sequential takes a list of layers: Sequential([Dense(...), ...])")
        self.layers = []
        try:
            layers = list(layers or ())  # None: no layers yet, as in Keras
        except TypeError:
            raise ArgumentTypeError(f"Sequential takes a list of layers, not "
                                    f"{type(layers).__name__}") from None
        for layer in layers:
            self._append(layer)
        self.dtype = _float_dtype(dtype)
        check_seed(seed)
        self.rng = model_rng(seed)
        self.backend = backends.resolve(backend) if backend is not None else None
        self.optimizer = None
        self.loss = None
        self.metrics: tuple = ()
        self.input_dim = None  # known once built
        self.epochs_done = 0  # epochs trained, over every fit (checkpoints keep it)
        self._buffers = None  # the batches and the loss gradient, once built
        self._loss_takes_logits = False
        self._build_if_declared()

    # -- construction -------------------------------------------------------------------------
    def _append(self, layer) -> None:
        if not isinstance(layer, layers_module.Layer):
            raise UsageError(f"layers must be dnn.layers.Layer instances (Dense, ...), not "
                             f"{type(layer).__name__}")
        if layer.in_model:
            raise UsageError(f"{layer!r} is already in a model; a layer holds the weights of one "
                             "place in one model: make a new layer for each place")
        layer.in_model = True
        self.layers.append(layer)

    def add(self, layer) -> None:
        """Append ``layer``, a :class:`dnn.layers.Layer` that is in no model yet (its weights
        are this model's); a first layer that declares its inputs (``input_shape=``) builds
        the model at once, as in Keras."""
        self._append(layer)
        self._build_if_declared()

    def _build_if_declared(self) -> None:
        if not self.built and self.layers and self.layers[0].input_dim is not None:
            self.build(self.layers[0].input_dim)

    def compile(self, optimizer="rmsprop", loss="categorical_crossentropy", metrics=()):
        """Choose the optimizer (a name or an instance; ``None`` for a model that is only
        evaluated or asked to predict), the loss and the metrics.  Compiled again with the
        optimizer it already has, the model keeps that optimizer's state, as in Keras."""
        if not self.layers:
            raise UsageError("the model has no layers")
        last = self.layers[-1]
        if last.output_dim == 1 and getattr(last.activation, "name", None) == "softmax":
            raise UsageError("a softmax over one unit outputs 1 whatever its input: use "
                             "Dense(1, activation='sigmoid') for a yes/no output, or one unit "
                             "per class")
        previous = self.optimizer
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self.metrics = metrics_module.check(metrics)
        self._loss_takes_logits = self.loss.takes_logits_of(last.activation)
        if self.built and self.optimizer is not None and self.optimizer is not previous:
            self.optimizer.build(self.params, self.backend)

    @property
    def _output_threshold(self) -> float:
        """Where a yes/no output counts as yes: 0.5 for a probability, 0 for a logit (where
        the loss takes the logits)."""
        return 0.0 if self._loss_takes_logits else 0.5

    @property
    def built(self) -> bool:
        """True once :meth:`build` made the weights (by the first data, or declared)."""
        return self._buffers is not None

    def build(self, input_shape) -> None:
        """Create the weights on the model's backend for inputs of ``input_shape``: a number
        of features, or Keras' shape ``(None, 784)`` (the batch size first, as None)."""
        input_dim = _features(input_shape)
        if self.backend is None:
            self.backend = backends.current_backend()
        self.input_dim = int(input_dim)
        try:
            for index, layer in enumerate(self.layers):
                layer.needs_input_grad = index > 0
                input_dim = layer.build(input_dim, self.backend, self.rng, self.dtype)
        except MemoryError:
            shapes = self.param_shapes(self.input_dim)
            size = sum(math.prod(shape) for shape in shapes) * self.dtype.itemsize
            sizes = " -> ".join(f"{count:,}" for count in
                                [self.input_dim, *(layer.output_dim for layer in self.layers)])
            raise OutOfMemoryError(f"the weights of a {sizes} model need {size:,} bytes: more "
                                   "memory than this machine gives") from None
        self._buffers = Buffers(self.backend)  # and the model is built
        if self.optimizer is not None:
            self.optimizer.build(self.params, self.backend)

    @property
    def params(self) -> list:
        return [param for layer in self.layers for param in layer.params]

    def param_shapes(self, input_dim: int) -> list:
        """The shape of every parameter, in :meth:`get_weights` order, for inputs of
        ``input_dim`` features, without making them."""
        shapes = []
        for layer in self.layers:
            layer_shapes, input_dim = layer.param_shapes(input_dim)
            shapes += layer_shapes
        return shapes

    # -- host <-> device --------------------------------------------------------------------
    def _host(self, array, what: str) -> np.ndarray:
        """``array`` (the ``what``: inputs or targets) as a NumPy array of real numbers, for
        checking; an array of the model's backend (a CuPy one, which refuses ``np.asarray``)
        comes through the backend's ``to_numpy``."""
        backend = self.backend or backends.current_backend()
        if not isinstance(array, np.ndarray) and backend.is_own_array(array):
            array = backend.to_numpy(array)
        try:
            array = np.asarray(array)
        except ValueError:  # NumPy 2 refuses ragged nested lists
            raise UsageError(f"{what} are not a rectangular array (rows of different "
                             "lengths?)") from None
        if array.dtype.kind not in "biuf":  # not complex, strings or Python objects
            raise UsageError(f"{what} must be real numbers, not {array.dtype}")
        return array

    def _inputs(self, x, prefix: str = "") -> np.ndarray:
        """``x`` checked and moved to the backend as ``(N, features)``; ``prefix`` (such as
        ``"validation "``) names them in errors."""
        x = self._host(x, f"{prefix}inputs")
        if x.ndim < 2 or x.shape[0] == 0:
            raise UsageError(f"{prefix}inputs must be a non-empty batch (N, features...), not "
                             f"{x.shape}")
        x = x.reshape(x.shape[0], -1)
        if not self.built:
            self.build(x.shape[1])
        expected = self.input_dim
        if x.shape[1] != expected:
            raise UsageError(f"{prefix}inputs have {x.shape[1]} features; the model expects "
                             f"{expected}")
        return self.backend.asarray(x.astype(self.dtype, copy=False))

    def _targets(self, y, count: int, prefix: str = ""):
        y = self._host(y, f"{prefix}targets")
        if y.ndim == 0:
            raise UsageError(f"{prefix}targets must be an array (N, ...), not one number")
        if y.shape[0] != count:
            raise UsageError(f"{count} {prefix}inputs but {y.shape[0]} {prefix}targets")
        units = self.layers[-1].output_dim
        if self.loss.sparse:
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise UsageError(f"{self.loss.name} wants integer labels (N,), not {y.dtype} "
                                 f"{y.shape}")
            # else they would index another class
            check_label_range(y, units, f" for a model with {units} outputs")
            return self.backend.asarray(y.astype(np.int64, copy=False))
        if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and units > 1:
            raise UsageError(f"{self.loss.name} wants one-hot targets (N, {units}); use "
                             "dnn.utils.to_categorical or sparse_categorical_crossentropy")
        y = y.reshape(count, -1)
        if y.shape[1] != units:
            raise UsageError(f"{prefix}targets have {y.shape[1]} columns; the model outputs "
                             f"{units}")
        return self.backend.asarray(y.astype(self.dtype, copy=False))

    def _require_compiled(self, training: bool = False) -> None:
        if self.loss is None:
            raise UsageError("compile() the model before training or evaluating it")
        if training and self.optimizer is None:
            raise UsageError("the model was compiled without an optimizer: compile() it with "
                             "one to train it")

    # -- passes --------------------------------------------------------------------------------
    def _forward(self, x, training: bool = False):
        """``(n, features) -> (n, k)``; logits when the loss takes those of the last layer."""
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer.forward(x, logits=self._loss_takes_logits and index == last,
                              training=training)
        return x

    def _backward(self, grad) -> None:
        last = len(self.layers) - 1
        for index in range(last, -1, -1):
            grad = self.layers[index].backward(grad,
                                               logits=self._loss_takes_logits and index == last)

    def _train_step(self, x, y, loss=None):
        """One step on a device batch (``loss`` instead of the compiled one, which takes the
        same targets in another form); returns ``(loss_sum, output)`` left on the device."""
        output = self._forward(x, training=True)
        grad = self._buffers("loss_grad", output.shape, output.dtype)
        loss_sum = (loss or self.loss).compute(self.backend, output, y, grad,
                                               logits=self._loss_takes_logits)
        self._backward(grad)
        self.optimizer.apply_gradients(self.params,
                                       [g for layer in self.layers for g in layer.grads])
        return loss_sum, output

    def _batches(self, x, y, batch_size: int):
        """Yield ``(x, y)`` batches of device data in their stored order (views: no copy)."""
        count = x.shape[0]
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)  # the array API allows no stop past the end
            yield x[start:stop, ...], (None if y is None else y[start:stop, ...])

    def _gather(self, role: str, data, indices):
        """``data[indices]`` into the model's ``role`` buffer, valid until the next batch."""
        out = self._buffers(role, (indices.shape[0], *data.shape[1:]), data.dtype)
        return self.backend.take_rows(data, indices, out)

    # -- Keras API ----------------------------------------------------------------------------
    def fit(self, x, y, batch_size: int | None = None, epochs: int = 1, verbose="auto",
            callbacks=None, validation_split: float = 0.0, validation_data=None,
            shuffle: bool = True, initial_epoch: int = 0) -> History:
        """Train from epoch ``initial_epoch`` to ``epochs`` (Keras' arguments and meanings);
        returns the :class:`History` whose ``history["loss"]`` lists the per-epoch mean
        training losses (plus ``accuracy`` and ``val_loss``/``val_accuracy`` when asked for).

        ``validation_split`` keeps that share of the samples, the last ones before shuffling,
        for validation; ``validation_data`` is ``(x_val, y_val)``.  ``callbacks`` are
        :mod:`dnn.callbacks` Callbacks; one may end training with ``model.stop_training =
        True``.  ``verbose`` prints the progress as Keras does: 0 nothing, 1 a progress bar,
        2 two lines per epoch; ``"auto"`` is 1 on a terminal and 2 elsewhere.  A NaN or
        infinite epoch loss raises :class:`DivergenceError`.

        ``x`` and ``y`` are NumPy arrays or the backend's own (CuPy ones, say); either kind is
        checked on the host and moved to the backend once per call, so device arrays make one
        round trip through the host."""
        self._require_compiled(training=True)
        if not is_int_at_least(epochs, 0):
            raise UsageError(f"epochs must be a non-negative integer, not {epochs!r}")
        if not is_int_at_least(initial_epoch, 0):
            raise UsageError(f"initial_epoch must be a non-negative integer, not "
                             f"{initial_epoch!r}")
        batch_size = _validate_positive_int("batch_size", 32 if batch_size is None
                                            else batch_size)
        if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                            or len(validation_data) != 2):
            raise UsageError("validation_data must be a pair (x_val, y_val)")
        callbacks = callback_list(callbacks)
        _check_verbose(verbose)
        x_device, y_device = self._device_data(x, y)
        validation = None
        if validation_data is not None:  # as in Keras, it overrides validation_split
            validation = self._device_data(*validation_data, prefix="validation ")
        elif validation_split:
            (x_device, y_device), validation = _split_off(x_device, y_device, validation_split)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        self.history = history = History()
        callbacks = [*callbacks, history] + ([] if not verbose else
                                             [ProgressBar() if verbose == 1 else EpochLines()])
        steps = math.ceil(x_device.shape[0] / batch_size)
        for callback in callbacks:
            callback.set_model(self)
            callback.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
        training = _Training(self, x_device, y_device, batch_size)
        self.stop_training = False
        try:
            for callback in callbacks:
                callback.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                for callback in callbacks:
                    callback.on_epoch_begin(epoch)
                with self.backend.overflow_silenced():  # a diverged epoch raises instead
                    logs = self._fit_epoch(epoch, training, shuffle, validation, callbacks)
                self.epochs_done = epoch + 1
                for callback in callbacks:
                    callback.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            for callback in callbacks:
                callback.on_train_end()
        return history

    def _fit_epoch(self, epoch: int, training: _Training, shuffle: bool, validation,
                   callbacks) -> dict:
        """One pass over the device data (in a new random order when ``shuffle``); returns
        the epoch's logs: ``loss``, ``accuracy`` and ``val_*``; its training seconds go to
        ``self.history.seconds``."""
        count, batch_size = training.x_data.shape[0], training.batch_size
        started = time.perf_counter()
        order = self.rng.permutation(count) if shuffle else np.arange(count)
        order_device = self.backend.asarray(order)
        totals = training.totals
        totals.reset()
        for batch, start in enumerate(range(0, count, batch_size)):
            stop = min(start + batch_size, count)
            step = training.step_for(stop - start)
            step.indices[...] = order_device[start:stop]
            step()
            logs = BatchLogs(lambda seen=stop: self._running_means(totals, seen))
            for callback in callbacks:
                callback.on_train_batch_end(batch, logs)
            if self.stop_training:
                count = stop  # the epoch's figures are those of the samples seen
                break
        logs = self._running_means(totals, count)
        if not math.isfinite(logs["loss"]):
            raise DivergenceError(self._divergence_message(epoch + 1, logs["loss"],
                                                           training.x_data, training.y_data))
        self.history.seconds.append(time.perf_counter() - started)  # without validation
        if validation is not None:
            results = self._evaluate_device(*validation, batch_size=max(batch_size, 1024))
            logs.update({f"val_{key}": value for key, value in results.items()})
        return logs

    def _running_means(self, totals, seen: int) -> dict:
        """The mean loss (and accuracy) of the ``seen`` samples added up in ``totals``, read
        from the device."""
        means = {"loss": float(totals.loss) / seen}
        if self.metrics:
            means["accuracy"] = int(totals.correct) / seen
        return means

    def _divergence_message(self, epoch: int, loss: float, x_device, y_device) -> str:
        """Why the loss of ``epoch`` is not finite: NaN or infinite values in the data when
        there are some (looked for only now, so that a healthy run never pays for it), else
        too large a step."""
        for what, array in (("inputs", x_device), ("targets", y_device)):
            host = self.backend.to_numpy(array).reshape(array.shape[0], -1)
            bad_rows = np.flatnonzero(~np.isfinite(host).all(axis=1))
            if bad_rows.size:
                return (f"training diverged: the loss of epoch {epoch} is {loss} because the "
                        f"{what} hold NaN or infinite values (the first in row {bad_rows[0]})")
        return (f"training diverged: the loss of epoch {epoch} is {loss}; try a smaller "
                "learning rate")

    def _device_data(self, x, y, prefix: str = ""):
        """``(x, y)`` validated on the host and moved to the backend once; ``prefix`` names
        them in errors."""
        x_device = self._inputs(x, prefix)
        return x_device, self._targets(y, x_device.shape[0], prefix)

    def _evaluate_device(self, x_device, y_device, batch_size: int) -> dict:
        """Mean loss (and metrics) of device data, read back once."""
        totals = EpochTotals(self.backend, self.dtype)
        for x_batch, y_batch in self._batches(x_device, y_device, batch_size):
            output = self._forward(x_batch)
            grad = self._buffers("loss_grad", output.shape, output.dtype)
            totals.loss += self.loss.compute(self.backend, output, y_batch, grad,
                                             logits=self._loss_takes_logits)
            if self.metrics:
                totals.correct += self.backend.correct_count(output, y_batch,
                                                             self._output_threshold)
        return self._running_means(totals, x_device.shape[0])

    def evaluate(self, x, y, batch_size: int | None = None, verbose=0,
                 return_dict: bool = False):
        """The mean loss over ``(x, y)``, or ``[loss, *metrics]`` when metrics were compiled
        (``{"loss": ..., "accuracy": ...}`` with ``return_dict``); ``verbose`` 1, 2 or
        ``"auto"`` print them in one line."""
        self._require_compiled()
        batch_size = _validate_positive_int("batch_size", batch_size or 1024)
        _check_verbose(verbose)
        results = self._evaluate_device(*self._device_data(x, y), batch_size)
        if verbose:
            print(figures(results))
        if return_dict:
            return results
        return results["loss"] if len(results) == 1 else list(results.values())

    def predict(self, x, batch_size: int | None = None, verbose=0) -> np.ndarray:
        """Host ``(N, k)`` outputs of the last layer (probabilities after a softmax);
        ``verbose`` is accepted as Keras' is, and prints nothing."""
        batch_size = _validate_positive_int("batch_size", batch_size or 1024)
        _check_verbose(verbose)
        x_device = self._inputs(x)
        outputs = []
        last = self.layers[-1]
        for x_batch, _ in self._batches(x_device, None, batch_size):
            output = self._forward(x_batch)
            if self._loss_takes_logits:
                output = last.activation.forward(self.backend, output)
            outputs.append(self.backend.to_numpy(output))
        return np.concatenate(outputs)

    def predict_on_batch(self, x) -> np.ndarray:
        """:meth:`predict` of ``x`` as one batch."""
        return self.predict(x, batch_size=max(len(x), 1))

    def __call__(self, x) -> np.ndarray:
        """``model(x)``: the outputs of :meth:`predict`, as host arrays."""
        return self.predict(x)

    def count_params(self) -> int:
        """The number of weights (the model must be built)."""
        if not self.built:
            raise UsageError("the model has no weights yet: call it on data or build() it")
        return sum(math.prod(param.shape) for param in self.params)

    def save(self, path) -> None:
        """Save the model, its architecture and optimizer state to ``path`` (``.npz``,
        written atomically; :func:`dnn.load_model` reads it back)."""
        from dnn import checkpoint

        checkpoint.save(self, path)

    def train_on_batch(self, x, y) -> float:
        """One optimizer step on ``(x, y)``; returns that batch's mean loss."""
        self._require_compiled(training=True)
        x_device, y_device = self._device_data(x, y)
        loss_sum, _ = self._train_step(x_device, y_device)
        return float(loss_sum) / x_device.shape[0]

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of every parameter, Keras order: kernel ``(in, out)``, bias, per layer."""
        if not self.built:
            raise UsageError("the model has no weights yet: call it on data or build() it")
        return [self.backend.to_numpy(param) for param in self.params]

    def set_weights(self, weights) -> None:
        """Load host arrays in :meth:`get_weights` order (the model must be built)."""
        if not self.built:
            raise UsageError("build the model (call it on data, or build(input_dim)) before "
                             "set_weights")
        try:
            weights = list(weights)
        except TypeError:
            raise ArgumentTypeError(f"set_weights takes a list of arrays, not "
                                    f"{type(weights).__name__}") from None
        params = self.params
        if len(weights) != len(params):
            raise UsageError(f"set_weights got {len(weights)} arrays; the model has "
                             f"{len(params)}")
        for index, (param, value) in enumerate(zip(params, weights)):
            try:
                value = np.asarray(value)
            except ValueError:  # NumPy 2 refuses ragged nested lists
                raise UsageError(f"weight {index} is not a rectangular array (rows of "
                                 "different lengths?)") from None
            if value.dtype.kind not in "biuf":
                raise UsageError(f"weight {index} must be real numbers, not {value.dtype}")
            if value.shape != tuple(param.shape):
                raise UsageError(f"weight {index} has shape {value.shape}; the model's is "
                                 f"{tuple(param.shape)}")
        for param, value in zip(params, weights):  # in place: the optimizer's state stays theirs
            param[...] = self.backend.asarray(np.asarray(value, self.dtype))
        if self.optimizer is not None and not self.optimizer.states:
            self.optimizer.build(self.params, self.backend)

    def summary(self, print_fn=print) -> None:
        """Print each layer with its output shape and number of parameters, and the totals
        (as Keras' ``summary``); the counts need the input size, known once the model is
        built."""
        rows, total = [("Layer", "Output shape", "Params")], 0
        for layer in self.layers:
            count = sum(math.prod(param.shape) for param in layer.params) if self.built else None
            rows.append((repr(layer), f"(None, {layer.output_dim})",
                         "?" if count is None else f"{count:,}"))
            total += count or 0
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for name, shape, count in rows:
            print_fn(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {count:>{widths[2]}}")
        if self.built:
            size = total * self.dtype.itemsize / 2**20
            print_fn(f"Total params: {total:,} ({self.dtype}, {size:.2f} MiB)")
        else:
            print_fn("Total params: unknown until the model is built (by its first data, or "
                     "build(input_dim))")

    def get_config(self) -> dict:
        return {"dtype": str(self.dtype), "layers": [layer.get_config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "Sequential":
        return cls([layers_module.from_config(layer) for layer in config["layers"]],
                   dtype=config["dtype"], **kwargs)


def dense_classifier(hidden, classes: int, **kwargs) -> Sequential:
    """Hidden relu layers of ``hidden`` units each, then a softmax over ``classes``: the
    network the command line trains; ``kwargs`` go to :class:`Sequential`."""
    layers = [layers_module.Dense(units, activation="relu") for units in hidden]
    return Sequential(layers + [layers_module.Dense(classes, activation="softmax")], **kwargs)


class _Training:
    """What one ``fit`` trains with: the device data (targets in the form the training step's
    loss takes, one-hot for a sparse loss, converted once), the epoch totals and a training
    step per batch size: the full one captured and replayed where the backend can."""

    def __init__(self, model: Sequential, x_data, y_data, batch_size: int):
        self.model, self.batch_size, self.x_data = model, batch_size, x_data
        self.loss = model.loss.with_dense_targets()
        self.y_data = model.loss.dense_targets(model.backend, y_data,
                                               model.layers[-1].output_dim,
                                               model.backend.dtype(model.dtype))
        self.totals = EpochTotals(model.backend, model.dtype)
        self._steps: dict = {}

    def step_for(self, rows: int):
        """The step for batches of ``rows`` rows: replayed for full batches, eager for the
        last, smaller one of an epoch (it runs once an epoch: capturing it would not pay)."""
        step = self._steps.get(rows)
        if step is None:
            step = TrainingStep(self.model, self.x_data, self.y_data, rows, self.totals,
                                self.loss)
            if rows == self.batch_size:
                step = ReplayedStep(step)
            self._steps[rows] = step
        return step
