"""Stop training at the first batch whose loss is NaN or infinite."""

from __future__ import annotations

import numpy as np

from dnn.callbacks.arguments import check_flag
from dnn.callbacks.callback import Callback
from dnn.errors import DivergenceError


class TerminateOnNaN(Callback):
    """Stop training at the end of the first batch whose loss is NaN or infinite, as Keras'
    ``TerminateOnNaN``: it prints ``Batch 3: Invalid loss, terminating training`` and sets
    ``model.stop_training``, so that ``fit`` ends as after any stop (the callbacks'
    ``on_epoch_end`` and ``on_train_end`` are called, the epoch's logs hold the loss).

    The loss of a batch's logs is the epoch's running mean, so once it is NaN it stays so:
    the batch named is the first that went wrong.  Each batch's loss is read from the device
    (one synchronisation a batch), as in Keras.

    Args:
        raise_error: True to raise a :class:`dnn.errors.DivergenceError` at once instead (the
            error ends ``fit``; Keras raises a ``RuntimeError``).
    """

    def __init__(self, raise_error=False):
        super().__init__()
        check_flag("TerminateOnNaN", "raise_error", raise_error)
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        if self.raise_error:
            raise DivergenceError(f"NaN or Inf loss encountered at batch {batch}. Loss value: "
                                  f"{loss}. Terminating training immediately.")
        print(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True
