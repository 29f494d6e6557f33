"""Errors a user can cause.  The CLI turns each into one ``Error: ...`` line, never a traceback."""

import signal


class DnnError(Exception):
    """A failure the user can act on (exit status 1 on the command line)."""


class UsageError(DnnError, ValueError):
    """A wrong name or value in what the user asked for (exit status 2 on the command line)."""


class NotInitialisedError(UsageError, AttributeError):
    """A model or layer of one's own whose ``__init__`` did not call ``super().__init__()``
    (an AttributeError too, so that ``hasattr`` answers False)."""


class ArgumentTypeError(UsageError, TypeError):
    """An argument of the wrong kind (a list where a name goes, say)."""


class OutOfMemoryError(DnnError, MemoryError):
    """What was asked for needs more memory than the machine gives (exit status 1)."""


class UnknownPluginError(UsageError, LookupError):
    """A backend, optimizer or dataset name that no installed plugin provides."""


class UnknownLayerError(UsageError, LookupError):
    """A saved config that names a layer class neither dnn nor the user made known (with
    ``custom_objects`` or ``register_keras_serializable``)."""


class PluginLoadError(DnnError):
    """A plugin that is installed but fails to import or construct."""


class OptimizerError(DnnError):
    """An optimizer (a plugin, most often) that raised or broke its contract while training."""


class BackendUnavailableError(DnnError):
    """A backend that cannot run on this machine (no CuPy, no CUDA device, ...)."""


class FileWriteError(DnnError, OSError):
    """A file dnn cannot write where it was asked to: a file stands where its folder should
    be, the folder may not be written, the disk is full (exit status 1).  ``errno``,
    ``strerror`` and ``filename`` are the operating system's; ``str()`` is dnn's one line."""

    def __init__(self, message: str, cause: OSError | None = None):
        super().__init__(message)
        if cause is not None:
            self.errno, self.strerror = cause.errno, cause.strerror
            self.filename = cause.filename

    def __str__(self) -> str:
        return self.args[0]


class DataError(DnnError):
    """A dataset file that is missing, truncated, corrupt or not what it claims to be."""


class CheckpointError(DnnError):
    """A file that is not a dnn checkpoint, or one that does not fit the model."""


class DivergenceError(DnnError):
    """Training produced a NaN or infinite loss."""


class CaptureError(DnnError):
    """A training step that a backend could not capture for replay; the step then runs
    eagerly (never raised out of ``fit``)."""


class Terminated(DnnError):
    """The process was asked to stop (SIGTERM, or SIGHUP: its terminal went away): raised by
    the command line's signal handler wherever the process is, a captured step included."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; files being written were "
                         "left as they were")
        self.signum = signum
