"""The base class of every callback: Keras 3's hooks, each a no-op until overridden."""

from __future__ import annotations


class Callback:
    """Override the hooks you need.  ``self.model`` is the model being trained and
    ``self.params`` ``{"epochs", "steps", "verbose"}``, both set before ``on_train_begin``.
    ``on_train_end`` is called however ``fit`` ends (an error or Ctrl-C included).

    Epochs and batches are counted from 0.  The ``logs`` of a batch hold the epoch's running
    mean loss (and accuracy), those of an epoch its means and ``val_*`` figures.

    ``writes_files`` (a class attribute, False here) says that the callback's only effect is
    output (files, or the terminal): in data-parallel training (``mpiexec``,
    :mod:`dnn.distributed`) such a callback runs on rank 0 alone, and the others run every
    other callback.  True on :class:`CSVLogger`, :class:`ModelCheckpoint`,
    :class:`BackupAndRestore`, :class:`TensorBoard` and :class:`ProgbarLogger`; a callback of
    one's own that writes a file sets it too, so that one rank writes it::

        class SaveWeights(Callback):
            writes_files = True

            def on_epoch_end(self, epoch, logs=None):
                self.model.save_weights(f"epoch-{epoch}.weights.npz")

    A callback that changes training (the model, its optimizer, ``stop_training``) must
    leave it False: it runs on every rank, so that every rank changes alike.
    """

    writes_files = False

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None):
        """Called once at the start of ``fit``."""

    def on_train_end(self, logs=None):
        """Called once at the end of ``fit``, however it ends."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of each epoch of ``fit``."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of each epoch of ``fit``, with the epoch's figures."""

    def on_train_batch_begin(self, batch, logs=None):
        """Called before each training batch; calls :meth:`on_batch_begin`, as in Keras."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        """Called after each training batch; calls :meth:`on_batch_end`, as in Keras."""
        self.on_batch_end(batch, logs=logs)

    def on_batch_begin(self, batch, logs=None):
        """Keras' older name for :meth:`on_train_batch_begin`."""

    def on_batch_end(self, batch, logs=None):
        """Keras' older name for :meth:`on_train_batch_end`."""

    def on_test_begin(self, logs=None):
        """Called at the start of an evaluation."""

    def on_test_end(self, logs=None):
        """Called at the end of an evaluation."""

    def on_test_batch_begin(self, batch, logs=None):
        """Called before each batch of an evaluation."""

    def on_test_batch_end(self, batch, logs=None):
        """Called after each batch of an evaluation."""

    def on_predict_begin(self, logs=None):
        """Called at the start of a prediction."""

    def on_predict_end(self, logs=None):
        """Called at the end of a prediction."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Called before each batch of a prediction."""

    def on_predict_batch_end(self, batch, logs=None):
        """Called after each batch of a prediction."""


HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))
"""The names of every hook, in the order :class:`Callback` defines them."""
