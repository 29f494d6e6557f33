"""The ``dnn`` command line: train, evaluate, plugins, check.

Exit status: 0 on success, 2 on a usage error (unknown name, bad number), 1 on a runtime error,
each reported as one ``Error: ...`` line, never a traceback.  Under a launcher of several
processes (``mpiexec -n N dnn train``, :mod:`dnn.distributed`) rank 0 alone prints and writes
files, and an error on any rank ends the whole job with its exit status.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import warnings

import click

from dnn import backends, datasets, distributed, history_file, optimizers, plugins
from dnn.callbacks import EvaluateEachEpoch, ModelCheckpoint, TensorBoard
from dnn.cli.architecture import check_architecture, check_fits, dense_classifier
from dnn.datasets.base import folder_problem
from dnn.distributed.failure import RANK_PROCESS
from dnn.distributed.launcher import workers_command
from dnn.distributed.threads import usable_cores
from dnn.errors import CheckpointError, DataError, DnnError, Terminated, UsageError
from dnn.history_file import HistoryFile
from dnn.layers.core import FlattenedInputsWarning
from dnn.models import Sequential, load_model
from dnn.saving.checkpoint import describe
from dnn.saving.fileio import check_writable
from dnn.utils import to_categorical


# Signals that end a command as SIGTERM does: one line, exit 128 + the signal's number.
STOPPING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
REDELIVERY_SECONDS = 0.5


class _SignalsWhileRunning:
    """The handlers of Ctrl-C (SIGINT), SIGTERM and SIGHUP while a command runs, and what
    makes sure that their exception stops it.

    Python can lose an exception raised by a signal's handler: a C extension being imported may
    clear it (NumPy's, registering its types with ``abc``), and one raised in a weakref
    callback or a ``__del__`` is only printed.  The command would then run on as if no signal
    had come.  So until it is over, a thread delivers the signal again every
    REDELIVERY_SECONDS (time enough for the clean-up that the first exception starts), and the
    exception of a signal that Python cannot raise is not printed."""

    def __init__(self):
        self.pending = None  # the signal whose exception is on its way out of the command
        self.over = threading.Event()
        self.previous_hook = sys.unraisablehook
        self.thread = threading.Thread(target=self._redeliver, name="dnn-signals", daemon=True)

    def raise_for(self, signum, frame):
        """The signal handler: KeyboardInterrupt for SIGINT, :class:`Terminated` else."""
        self.pending = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def _redeliver(self) -> None:
        while not self.over.wait(REDELIVERY_SECONDS):
            if self.pending is not None:
                _thread.interrupt_main(self.pending)

    def _unraisable(self, unraisable) -> None:
        """``sys.unraisablehook``: a signal's exception lost where Python cannot raise it is
        not printed (it comes again); any other goes to the hook in force before."""
        if not isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            self.previous_hook(unraisable)

    def __enter__(self):
        sys.unraisablehook = self._unraisable
        self.thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.pending = None  # first: no more deliveries
        self.over.set()
        sys.unraisablehook = self.previous_hook
        self.thread.join()
        return False


@contextlib.contextmanager
def _signals_handled():
    """While a command runs: SIGTERM and SIGHUP raise :class:`Terminated` and Ctrl-C (SIGINT)
    raises KeyboardInterrupt in the main thread, so that writes in progress clean up their
    temporary files (SIGKILL cannot be caught: the next write does it), until the exception
    is out of the command (:class:`_SignalsWhileRunning`).  A signal the process was started
    ignoring stays ignored (``nohup`` ignores SIGHUP, a background job SIGINT); the handlers in
    force before (the console script's for a Ctrl-C while it starts) come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _SignalsWhileRunning() as running:
        previous = {signum: signal.getsignal(signum) for signum in (*STOPPING, signal.SIGINT)}
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, running.raise_for)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def reports_errors(command):
    """Turn our errors into click's: usage errors exit 2, Ctrl-C 130, SIGTERM 143, SIGHUP 129,
    the others 1, one line each."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _signals_handled(), warnings.catch_warnings():
                warnings.showwarning = _warning_line
                # the command line's networks take images flattened by design
                warnings.simplefilter("ignore", FlattenedInputsWarning)
                return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise _exit_with(f"interrupted (Ctrl-C); {_kept(kwargs.get('save_path'))}",
                             130) from None
        except UsageError as error:
            raise click.UsageError(str(error)) from None
        except Terminated as error:
            raise _exit_with(str(error), 128 + error.signum) from None
        except DnnError as error:
            raise click.ClickException(str(error)) from None
        except MemoryError:
            raise click.ClickException("out of memory; if training, try a smaller "
                                       "--batch-size or --hidden") from None
        except OSError as error:  # a file that went away or a full disk, mid-run
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None

    return wrapper


def ends_the_whole_job(command):
    """Under a launcher of several processes: join them before the command runs, and end
    every rank with the exit status of an error that ends one, reported once (rank 0's
    plainly, another's naming its rank, a signal's plainly whichever rank reports it:
    :meth:`dnn.distributed.Communicator.end_job`); MPI
    would otherwise wait for ever for the rank that left.  A plain run passes through."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if distributed.launched_size() == 1:
            return command(*args, **kwargs)
        try:
            ranks = distributed.communicator()
        except DnnError as error:  # no mpi4py: on every rank alike, before any collective
            raise click.ClickException(str(error)) from None
        try:
            return command(*args, **kwargs)
        except click.ClickException as error:
            ranks.end_job(functools.partial(_show, error), error.exit_code)

    return wrapper


def _show(error: click.ClickException, prefix: str) -> None:
    """Print ``error`` as click does, its message after ``prefix``."""
    error.message = f"{prefix}{error.message}"
    error.show()


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning (a refused plugin, a step run without its graph) as one ``Warning:`` line,
    printed by rank 0 alone under a launcher (every rank's step decides alike)."""
    if distributed.communicator().rank == 0:
        click.echo(f"Warning: {message}", err=True)


def _kept(save_path) -> str:
    """What an interrupted run leaves: the last checkpoint written to ``--save``, if any."""
    if save_path and os.path.isfile(save_path):
        return f"the last checkpoint saved is in {save_path}"
    return "no checkpoint was saved" + ("" if save_path else " (no --save)")


def _exit_with(message: str, status: int) -> click.ClickException:
    """A one-line ``Error:`` exit with ``status``."""
    error = click.ClickException(message)
    error.exit_code = status
    return error


backend_option = click.option("--backend", default="cpu", show_default=True,
                              help="Where to compute: cpu, gpu, or an installed backend plugin.")
dataset_option = click.option("--dataset", default="mnist", show_default=True,
                              help="An installed dataset plugin.")


def _a_folder(context, parameter, value):
    """``value``, refused unless a folder when given as ``--data-dir`` (click's own checks let
    a device such as ``/dev/zero`` through).  ``$DNN_DATA_DIR`` is left to the dataset that
    reads it, so that a stale setting does not stop a command that reads no folder."""
    source = context.get_parameter_source(parameter.name)
    problem = (folder_problem(value) if value is not None
               and source is not click.core.ParameterSource.ENVIRONMENT else None)
    if problem:
        raise click.BadParameter(f"{value!r} {problem}.", context, param_hint="'--data-dir'")
    return value


data_dir_option = click.option(
    "--data-dir", envvar="DNN_DATA_DIR", type=click.Path(), callback=_a_folder,
    help="Folder holding the dataset files (else the user cache; else they are downloaded). "
         "Also $DNN_DATA_DIR.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=plugins.DISTRIBUTION)
def main():
    """dnn: train small neural networks on NumPy (CPU) or CuPy (GPU) with one set of code."""


def _load_data(dataset_name: str, data_dir):
    """``(x_train, labels_train), (x_test, labels_test), classes`` of a dataset plugin."""
    (x_train, y_train), (x_test, y_test) = datasets.load_checked(dataset_name, data_dir)
    classes = int(max(y_train.max(), y_test.max())) + 1
    if classes < 2:
        raise DataError(f"dataset {dataset_name!r} has one class only (every label is 0): "
                        "there is nothing to tell apart")
    return (x_train, y_train), (x_test, y_test), classes


def _targets(model: Sequential, labels, classes: int):
    """``labels`` as ``model``'s loss wants them: integers for a sparse loss, else one-hot."""
    return labels if model.loss.sparse else to_categorical(labels, classes)


def _check_compiled(model: Sequential, path, resuming: bool) -> None:
    """A CheckpointError where the model saved at ``path`` has no loss (saved before
    ``compile``), or, ``resuming``, no optimizer to go on with."""
    if model.loss is None:
        raise CheckpointError(f"{path} holds a model saved without compile() (no loss): "
                              "compile it with its loss before saving it")
    if resuming and model.optimizer is None:
        raise CheckpointError(f"{path} holds a model compiled without an optimizer: there is "
                              "no training to resume")


def _with_accuracy(model: Sequential) -> None:
    """Add the accuracy metric, which the command line prints and records, to a saved model
    compiled without it; its loss and optimizer state stay."""
    if "accuracy" not in [metric.name for metric in model.metrics]:
        model.compile(optimizer=model.optimizer, loss=model.loss,
                      metrics=[*model.metrics, "accuracy"])


def _loss_and_accuracy(model: Sequential, x, y) -> tuple[float, float]:
    """The loss and accuracy of ``model`` (compiled with the accuracy, among any other
    metrics of its own) on ``x``, ``y``: the figures the command line prints and records."""
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    return results["loss"], results["accuracy"]


def _given(option: str) -> bool:
    """True when the current command's ``option`` was given, not left at its default."""
    source = click.get_current_context().get_parameter_source(option)
    return source is not click.core.ParameterSource.DEFAULT


def _parse_opt(pairs) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--opt wants KEY=VALUE, not {pair!r}")
        options[key.strip()] = value
    return options


def _optimizer_from_options(name: str, lr, opt_pairs):
    """The optimizer plugin ``name`` with the ``--lr`` and ``--opt`` hyper-parameters (made
    before any data is loaded, so that a wrong one fails at once)."""
    hyperparameters = plugins.parse_options(optimizers.plugin_class(name), _parse_opt(opt_pairs))
    if lr is not None:
        if "learning_rate" in hyperparameters:
            raise UsageError("give the learning rate once: --lr or --opt learning_rate")
        hyperparameters["learning_rate"] = lr
    return optimizers.get(name, **hyperparameters)


def _backend_of_this_rank(name: str):
    """The backend ``name``; the gpu one on several ranks uses the GPU of this rank's local
    rank (one GPU per rank)."""
    backend = backends.get_backend(name)
    if name == "gpu" and distributed.communicator().size > 1:
        distributed.use_local_gpu()
    return backend


def _run_on_workers(workers: int):
    """Run this command again, without ``--workers``, on ``workers`` processes of this
    machine under mpiexec, and exit with the job's status; no more processes than the cores
    this one may run on (a typo of a few zeros would start a million)."""
    if distributed.launched_size() > 1:
        raise UsageError("--workers starts mpiexec itself: leave it out under a launcher")
    cores = usable_cores()
    if workers > cores:
        raise UsageError(f"--workers {workers} is more than the {cores} cores this machine "
                         "gives: for more processes, or other machines, start dnn train under "
                         "mpiexec yourself (docs/distributed.md)")
    arguments, skip = [], False
    for argument in sys.argv[1:]:
        if not skip and argument != "--workers" and not argument.startswith("--workers="):
            arguments.append(argument)
        skip = argument == "--workers"
    # a job of its own: its ranks are no processes of a rank this one may be
    environment = {key: value for key, value in os.environ.items() if key != RANK_PROCESS}
    click.get_current_context().exit(subprocess.call(workers_command(workers, arguments),
                                                     env=environment))


def _same_on_every_rank(ranks, x_train, x_test, classes) -> None:
    """Refuse ranks started with other arguments (``--data-dir`` aside: each machine may keep
    its data elsewhere) or whose data differ in shape (``fit`` compares the rest: dnn's
    version, the backend, the model)."""
    context = click.get_current_context()
    ranks.require_same({**{param.opts[0]: context.params[param.name]
                           for param in context.command.params if param.name != "data_dir"},
                        "the training data's shape": x_train.shape,
                        "the test data's shape": x_test.shape, "the classes": classes})


def _check_distinct_files(paths: dict) -> None:
    """Refuse two options (``paths``: option -> path or None) that name one file, since the
    later write would replace the earlier; ``--save`` may name the ``--resume`` file."""
    first_option = {}
    for option, path in paths.items():
        if not path:
            continue
        other = first_option.setdefault(os.path.realpath(path), option)
        if other != option and {other, option} != {"--resume", "--save"}:
            raise UsageError(f"{other} and {option} both name {path}; give each its own file")


def _check_total_epochs(epochs: int, done: int, resume_path, plot_path) -> None:
    """Refuse ``--epochs`` fewer than the ``done`` epochs the ``--resume`` checkpoint has
    trained (it counts the total, as Keras' ``fit(epochs=)`` does), and ``--plot`` when the
    run would train no epoch to draw."""
    if epochs < done:
        default = "" if _given("epochs") else " (the default)"
        raise UsageError(f"--epochs {epochs}{default} is fewer than the {done} epochs "
                         f"{resume_path} has trained; --epochs counts the total, as Keras' "
                         "epochs does")
    if plot_path and epochs == done:
        raise UsageError(f"--plot draws the epochs of this run: give --epochs {done + 1} or "
                         f"more ({resume_path} has trained {done})")


@main.command()
@backend_option
@dataset_option
@click.option("--optimizer", default="rmsprop", show_default=True,
              help="An installed optimizer plugin (sgd, rmsprop, adam, ...).")
@click.option("--lr", type=float, default=None,
              help="Learning rate (passed as learning_rate; default: the optimizer's).")
@click.option("--opt", "opt_pairs", multiple=True, metavar="KEY=VALUE",
              help="An optimizer hyper-parameter, e.g. --opt momentum=0.9 (repeatable).")
@click.option("--epochs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Epochs (passes over the training data) in all, as Keras' fit(epochs=) "
                   "counts them: with --resume of a checkpoint that has trained 3, --epochs 5 "
                   "trains the 4th and 5th. As many as the model has trained (0 for a new "
                   "one) evaluates it as it is.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), multiple=True, default=(512,),
              show_default=True, help="Units of a relu hidden layer (repeat for more layers).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the initial weights and the shuffle order.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@data_dir_option
@click.option("--history", "history_path", type=click.Path(dir_okay=False),
              help="Write the per-epoch metrics as JSON to this file (rewritten after "
                   "every epoch).")
@click.option("--save", "save_path", type=click.Path(dir_okay=False),
              help="Save the model (and optimizer state) to this .npz after every epoch.")
@click.option("--resume", "resume_path", type=click.Path(dir_okay=False),
              help="Continue training the model and optimizer state saved in this .npz "
                   "up to --epochs in all, with its own layers, dtype and optimizer settings "
                   "(no --lr or --opt; --hidden or --dtype, if given, must match it).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Plot loss and accuracy per epoch to this PNG (needs matplotlib).")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False),
              help="Write TensorBoard event files to this folder after every epoch: loss, "
                   "accuracy and learning rate, weight and gradient histograms, gradient "
                   "norms and update/weight ratios; watch them with tensorboard --logdir DIR "
                   "(needs the tensorboard package).")
@click.option("--validation-split", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="Keep this share of the training data (its last samples) for validation; "
                   "its figures are val_loss and val_accuracy.")
@click.option("--quiet", is_flag=True, help="Print only the final test result.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Train data-parallel on this many processes of this machine: runs the "
                   "command under mpiexec (needs dnn-framework[mpi]; docs/distributed.md).")
@ends_the_whole_job
@reports_errors
def train(backend, dataset, optimizer, lr, opt_pairs, epochs, batch_size, hidden, seed, dtype,
          data_dir, history_path, save_path, resume_path, plot_path, tensorboard_dir,
          validation_split, quiet, workers):
    """Train a dense network (hidden relu layers, softmax output) on a dataset.

    \b
    Examples:
      dnn train                                    # MNIST, 784-512-10, rmsprop, 5 epochs
      dnn train --optimizer adam --lr 0.0005 --hidden 256 --hidden 128
      dnn train --epochs 3 --save model.npz --history history.json --plot history.png
      dnn train --resume model.npz --epochs 5      # on to 5 epochs in all
      dnn train --backend gpu --tensorboard logs   # then: tensorboard --logdir logs
      dnn train --workers 2                        # data-parallel on 2 processes
    """
    if workers is not None:
        _run_on_workers(workers)
    ranks = distributed.communicator()
    if ranks.rank > 0:  # rank 0 alone writes files
        history_path = save_path = plot_path = tensorboard_dir = None
    outputs = {"--save": save_path, "--history": history_path, "--plot": plot_path}
    _check_distinct_files({"--resume": resume_path, **outputs})
    for option, path in outputs.items():
        if path:
            check_writable(path, option)
    if plot_path:
        if epochs == 0:
            raise UsageError("--plot draws the epochs of this run: give --epochs 1 or more")
        from dnn import plotting

        plotting.require_matplotlib()
    board = (TensorBoard(tensorboard_dir, histogram_freq=1, gradient_freq=1)
             if tensorboard_dir else None)  # no package, or no folder to write: refused now
    device = _backend_of_this_rank(backend)
    new_optimizer = None if resume_path else _optimizer_from_options(optimizer, lr, opt_pairs)
    (x_train, y_train), (x_test, y_test), classes = _load_data(dataset, data_dir)
    _same_on_every_rank(ranks, x_train, x_test, classes)
    if resume_path:  # the shuffle goes on where it stopped, unless --seed asks otherwise
        model = load_model(resume_path, backend=device, seed=seed if _given("seed") else None)
        try:
            check_architecture(model, resume_path, classes,
                               hidden=hidden if _given("hidden") else None,
                               dtype=dtype if _given("dtype") else None)
        except CheckpointError as error:
            raise CheckpointError(f"{error}; leave out --hidden and --dtype to go on with the "
                                  "saved one") from None
        check_fits(model, resume_path, dataset, x_train, classes)
        _check_compiled(model, resume_path, resuming=True)
        _with_accuracy(model)
        saved = plugins.name_of("optimizer", type(model.optimizer))
        if _given("optimizer") and optimizer != saved:
            raise UsageError(f"{resume_path} was trained with {saved}, not {optimizer}; "
                             "leave out --optimizer to resume it")
        if lr is not None or opt_pairs:
            raise UsageError(f"--resume goes on with the {saved} settings saved in "
                             f"{resume_path}; leave out --lr and --opt")
        _check_total_epochs(epochs, model.epochs_done, resume_path, plot_path)
    else:
        model = dense_classifier(hidden, classes, dtype=dtype, seed=seed, backend=device)
        model.compile(optimizer=new_optimizer, loss="categorical_crossentropy",
                      metrics=["accuracy"])
    y_train, y_test = _targets(model, y_train, classes), _targets(model, y_test, classes)
    optimizer_name = plugins.name_of("optimizer", type(model.optimizer))
    callbacks = [EvaluateEachEpoch(x_test, y_test, prefix="test_")]
    if save_path:
        # after every epoch, so that a later divergence keeps the last good checkpoint; the
        # braces are doubled because ModelCheckpoint fills {epoch} and friends into its path
        callbacks.append(ModelCheckpoint(str(save_path).replace("{", "{{").replace("}", "}}")))
    initial_epoch = model.epochs_done  # 0 for a new model
    history_writer = None
    if history_path:
        earlier = history_file.earlier_epochs(history_path, initial_epoch) if resume_path \
            else []
        history_writer = HistoryFile(history_path, backend, optimizer_name, dataset, earlier)
        callbacks.append(history_writer)
    if board is not None:  # after EvaluateEachEpoch: its test_ figures are the test run
        callbacks.append(board)
    history = model.fit(x_train, y_train, epochs=epochs, initial_epoch=initial_epoch,
                        batch_size=batch_size, validation_split=validation_split,
                        callbacks=callbacks, verbose=0 if quiet else "auto")
    if epochs == initial_epoch:  # nothing trained: evaluate (and record) the model as it is
        test_results = _loss_and_accuracy(model, x_test, y_test)
        if save_path:
            model.save(save_path)
        if history_writer is not None:
            history_writer.write(test_results)
    else:  # the last epoch's test figures, already recorded: the weights have not changed
        test_results = [history.history["test_loss"][-1], history.history["test_accuracy"][-1]]
    if ranks.rank == 0:
        click.echo(f"test: loss {test_results[0]:.4f} accuracy {test_results[1]:.4f}")
    if plot_path:
        plotting.plot_history(history.history, plot_path,
                              f"{dataset}: {describe(model.get_config())}, "
                              f"{optimizer_name}", epochs=[epoch + 1 for epoch in history.epoch])


@main.command()
@click.argument("model_path", metavar="MODEL.npz", type=click.Path(dir_okay=False))
@backend_option
@dataset_option
@data_dir_option
@ends_the_whole_job
@reports_errors
def evaluate(model_path, backend, dataset, data_dir):
    """Print the test loss and accuracy of a saved model."""
    model = load_model(model_path, backend=_backend_of_this_rank(backend), with_optimizer=False)
    _, (x_test, labels), classes = _load_data(dataset, data_dir)
    check_fits(model, model_path, dataset, x_test, classes)
    _check_compiled(model, model_path, resuming=False)
    _with_accuracy(model)
    loss, accuracy = _loss_and_accuracy(model, x_test, _targets(model, labels, classes))
    if distributed.communicator().rank == 0:
        click.echo(f"test: loss {loss:.4f} accuracy {accuracy:.4f}")


# For each kind but backends (whose availability is asked): the class its plugins must be.
PLUGIN_CLASS = {"optimizer": optimizers.plugin_class, "dataset": datasets.plugin_class}


def _plugin_rows() -> list[dict]:
    """One row per installed plugin: kind, name, distribution, version, status, detail."""
    rows = []
    for kind in plugins.GROUPS:
        catalog = plugins.catalog(kind)
        for name, plugin in sorted(catalog.plugins.items()):
            status, detail = "available", ""
            try:
                if kind == "backend":
                    found = backends.availability(name)
                    status, detail = ("available" if found else "unavailable"), found.reason
                else:  # imported and held to its kind
                    PLUGIN_CLASS[kind](name)
            except DnnError as error:
                status, detail = "broken", str(error)
            rows.append({"kind": kind, "name": name, "distribution": plugin.distribution,
                         "version": plugin.version, "status": status, "detail": detail})
        for plugin, reason in catalog.refused:
            rows.append({"kind": kind, "name": plugin.name, "distribution": plugin.distribution,
                         "version": plugin.version, "status": "refused", "detail": reason})
    return rows


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@reports_errors
def list_plugins(as_json):
    """List every backend, optimizer and dataset plugin with its status."""
    rows = _plugin_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    name_width = max(15, *(len(row["name"]) + 1 for row in rows))
    source_width = max(len(f"{row['distribution']} {row['version']}") for row in rows)
    for row in rows:
        detail = f": {row['detail']}" if row["detail"] else ""
        source = f"{row['distribution']} {row['version']}"
        click.echo(f"{row['kind']:<9} {row['name']:<{name_width}} {source:<{source_width}}  "
                   f"{row['status']}{detail}")


def _name_width(least: int) -> int:
    """The width of the name column: ``least``, or the longest plugin name's."""
    return max(least, *(len(name) for kind in ("backend", "optimizer", "dataset")
                        for name in plugins.names(kind)))


def _optimizer_checks(only_backends, names=()):
    """``(name, where, status, detail)`` for every optimizer plugin (or those ``names``) on
    every backend (or on ``only_backends``), trained against the cpu backend."""
    from dnn import testing

    for name in names or plugins.names("optimizer"):
        try:
            results = testing.optimizer_results(plugins.load("optimizer", name),
                                                only_backends or None)
        except (AssertionError, DnnError) as error:
            yield name, "all backends", "fail", testing.one_line(error)
            continue
        for result in results:
            yield name, result.backend, result.status, result.detail


def _backend_checks(only_backends):
    """``(name, where, status, detail)`` for the kernels and training runs of every backend
    plugin but cpu, the reference (or of ``only_backends``)."""
    from dnn import testing

    for name in only_backends or plugins.names("backend"):
        if name == "cpu":
            continue
        try:
            backends.availability(name)  # a broken plugin says so here
            results = testing.backend_results(plugins.load("backend", name))
        except (AssertionError, DnnError) as error:
            yield name, "against cpu", "fail", testing.one_line(error)
            continue
        for result in results:
            yield name, "against cpu", result.status, result.detail


def _dataset_checks(dataset_names, data_dir, only_named: bool = False):
    """``(name, where, status, detail)`` for every dataset plugin (or, ``only_named``, those
    in ``dataset_names``): the data of those in ``dataset_names`` loaded and held to the
    contract, the class of the others."""
    for name in dataset_names if only_named else plugins.names("dataset"):
        load = name in dataset_names
        where = "its data" if load else "its class"
        try:
            if load:
                datasets.load_checked(name, data_dir)
            else:
                datasets.plugin_class(name)
        except (DnnError, OSError) as error:
            yield name, where, "fail", str(error)
            continue
        yield name, where, "pass", "" if load else f"give --dataset {name} to check its data too"


@main.command()
@click.option("--backend", "only_backends", multiple=True,
              help="Check on this backend only; it must be able to run here (repeatable; "
                   "default: every installed one, those that cannot run listed as "
                   "unavailable).")
@click.option("--dataset", "dataset_names", multiple=True,
              help="Also load this dataset plugin's data and hold it to the dataset contract "
                   "(repeatable; it may download the files).")
@click.option("--optimizer", "optimizer_names", multiple=True,
              help="Check this optimizer plugin only (repeatable); the backend and dataset "
                   "checks are then left out, but for the data of --dataset.")
@data_dir_option
@reports_errors
def check(only_backends, dataset_names, optimizer_names, data_dir):
    """Run the conformance kit on the installed plugins: every optimizer on every backend
    against cpu, every backend's kernels and training against cpu, every dataset's class (and
    the data of those named with --dataset)."""
    for name in only_backends:  # one that is named must run here, like --backend of train
        backends.get_backend(name)
    for name in dataset_names:
        plugins.find("dataset", name)
    for name in optimizer_names:
        plugins.find("optimizer", name)
    checks = [("optimizer", _optimizer_checks(only_backends, optimizer_names))]
    if not optimizer_names:
        checks.append(("backend", _backend_checks(only_backends)))
    if not optimizer_names or dataset_names:
        checks.append(("dataset", _dataset_checks(dataset_names, data_dir, optimizer_names)))
    width = _name_width(14)
    failed = False
    for kind, rows in checks:
        for name, where, status, detail in rows:
            failed |= status == "fail"
            detail = f": {detail}" if detail else ""
            click.echo(f"{kind:<9} {name:<{width}} {where:<12} {status}{detail}")
    if failed:
        raise click.ClickException("some plugins failed their conformance checks")
