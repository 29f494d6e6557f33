"""Training: the :class:`Trainer` a model inherits, its data (:mod:`dnn.trainers.data`,
:mod:`dnn.trainers.epoch_iterator`) and its captured step (:mod:`dnn.trainers.step`)."""

from dnn.trainers.trainer import Trainer

__all__ = ["Trainer"]
