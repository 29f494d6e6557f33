"""Keras 3's :class:`CallbackList`: the callbacks of one ``fit``, called together."""

from __future__ import annotations

from dnn.callbacks.callback import Callback
from dnn.callbacks.history import History
from dnn.callbacks.progbar_logger import ProgbarLogger
from dnn.errors import UsageError


def _checked(callbacks) -> list:
    """``callbacks`` (None, one Callback, or an iterable of them) as a new list; UsageError
    for anything else."""
    if callbacks is None or isinstance(callbacks, Callback):
        return [] if callbacks is None else [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise UsageError(f"callbacks must be a list of dnn.callbacks.Callback instances, not "
                         f"{type(callbacks).__name__}") from None
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise UsageError(f"callbacks must be dnn.callbacks.Callback instances, not "
                             f"{type(callback).__name__}")
    return callbacks


class CallbackList(Callback):
    """The callbacks of one ``fit`` (or evaluation, or prediction), called together: each
    hook calls that hook of every callback, in the list's order, with the same ``logs``
    object, so a callback sees what the ones before it added.

    Args:
        callbacks: None, a :class:`Callback`, or a list of them (anything else is a
            :class:`UsageError`).
        add_history: add a :class:`History` unless the list has one; either way it becomes
            the model's ``history``.
        add_progbar: add a :class:`ProgbarLogger` unless the list has one.
        model: the model, given to every callback (``set_model``) when not None.
        **params: given to every callback (``set_params``) when there are any: ``fit``
            gives ``epochs``, ``steps`` and ``verbose``.

    For a training loop of one's own::

        callbacks = CallbackList([...], add_history=True, model=model, epochs=5,
                                 steps=10, verbose=0)
        callbacks.on_train_begin()
        for epoch in range(5):
            callbacks.on_epoch_begin(epoch)
            for batch in range(10):
                callbacks.on_train_batch_begin(batch)
                ...
                callbacks.on_train_batch_end(batch, batch_logs)
            callbacks.on_epoch_end(epoch, epoch_logs)
        callbacks.on_train_end()
    """

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None,
                 **params):
        super().__init__()
        self.callbacks = _checked(callbacks)
        self._history = self._last(History)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._last(ProgbarLogger) is None and add_progbar:
            self.callbacks.append(ProgbarLogger())
        self.set_model(model)
        self.set_params(params)

    def _last(self, kind: type) -> Callback | None:
        """The list's last callback of ``kind``, as Keras picks it; None without one."""
        return next((callback for callback in reversed(self.callbacks)
                     if isinstance(callback, kind)), None)

    def set_model(self, model) -> None:
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        if params:
            for callback in self.callbacks:
                callback.set_params(params)

    def _call(self, hook: str, *args, **kwargs) -> None:
        """Call ``hook`` of every callback, in order, with these arguments."""
        for callback in self.callbacks:
            getattr(callback, hook)(*args, **kwargs)

    # Keras' calls, which LambdaCallback's functions rely on: logs positional for the train,
    # test, predict and epoch hooks, by keyword for the batch hooks.
    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", batch, logs=logs)

    def on_batch_begin(self, batch, logs=None):
        self._call("on_batch_begin", batch, logs=logs)

    def on_batch_end(self, batch, logs=None):
        self._call("on_batch_end", batch, logs=logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", batch, logs=logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", batch, logs=logs)
