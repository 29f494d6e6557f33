"""Callbacks made of functions, without a class of one's own."""

from __future__ import annotations

from dnn.callbacks.callback import HOOKS, Callback
from dnn.errors import ArgumentTypeError, UsageError


class LambdaCallback(Callback):
    """A callback whose hooks are the functions given, as Keras' ``LambdaCallback``; a hook
    not given does nothing.  The functions are called as Keras calls them:

    - ``on_epoch_begin`` and ``on_epoch_end`` with two positional arguments, ``epoch`` and
      ``logs``;
    - ``on_train_begin`` and ``on_train_end`` with one, ``logs``;
    - ``on_train_batch_begin`` and ``on_train_batch_end`` with ``batch`` positional and
      ``logs`` by keyword (so name that parameter ``logs``);
    - any other hook of :class:`Callback`, given by keyword (``on_test_begin=...``), with
      that hook's arguments.

    A value that is not a function, or a keyword that names no hook, is refused.

    Example::

        losses = []
        keep_loss = LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
        model.fit(x, y, callbacks=[keep_loss])
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None,
                 **kwargs):
        super().__init__()
        unknown = sorted(set(kwargs) - set(HOOKS))
        if unknown:
            raise UsageError(f"LambdaCallback has no hook {unknown[0]!r}; its hooks are "
                             f"{', '.join(HOOKS)}")
        hooks = dict(kwargs, on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for name, function in hooks.items():
            if function is None:
                continue
            if not callable(function):
                raise ArgumentTypeError(f"LambdaCallback {name} must be a function, not "
                                        f"{function!r}")
            setattr(self, name, function)
