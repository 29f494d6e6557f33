"""Callbacks, as in Keras 3: hooks into :meth:`dnn.Sequential.fit` with Keras' names and
arguments (epochs and batches counted from 0), one module per callback as Keras lays them out.

- :class:`Callback`, the base class, and :class:`CallbackList`, the callbacks of one ``fit``
  called together;
- :class:`History`, what ``fit`` returns, and :class:`ProgbarLogger`, the progress display
  behind ``fit(verbose=...)`` (:class:`ProgressBar` on a terminal, :class:`EpochLines`
  elsewhere);
- :class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`BackupAndRestore`,
  :class:`CSVLogger`, :class:`TerminateOnNaN`, :class:`LambdaCallback`;
- the learning-rate callbacks :class:`LearningRateScheduler` and :class:`ReduceLROnPlateau`;
- :class:`EvaluateEachEpoch`, the command line's test figures after every epoch;
- :class:`TensorBoard`, event files for ``tensorboard --logdir`` (needs the extra
  ``dnn-framework[tensorboard]``).

A batch's ``logs`` (:class:`BatchLogs`) hold the epoch's running mean loss (and accuracy);
they are read from the device only when looked at, so a callback that ignores them costs no
synchronisation.
"""

from dnn.callbacks.backup_and_restore import BackupAndRestore
from dnn.callbacks.batch_logs import BatchLogs
from dnn.callbacks.callback import Callback
from dnn.callbacks.callback_list import CallbackList
from dnn.callbacks.csv_logger import CSVLogger
from dnn.callbacks.early_stopping import EarlyStopping
from dnn.callbacks.evaluate_each_epoch import EvaluateEachEpoch
from dnn.callbacks.history import History
from dnn.callbacks.lambda_callback import LambdaCallback
from dnn.callbacks.learning_rate_scheduler import LearningRateScheduler
from dnn.callbacks.model_checkpoint import ModelCheckpoint
from dnn.callbacks.progbar_logger import EpochLines, ProgbarLogger, ProgressBar, figures
from dnn.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from dnn.callbacks.tensorboard import TensorBoard
from dnn.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping",
           "ModelCheckpoint", "BackupAndRestore", "CSVLogger", "TerminateOnNaN",
           "LambdaCallback", "LearningRateScheduler", "ReduceLROnPlateau", "EvaluateEachEpoch",
           "TensorBoard", "EpochLines", "ProgressBar", "BatchLogs", "figures"]
