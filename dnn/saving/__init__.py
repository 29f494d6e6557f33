"""Saving: checkpoints (:mod:`dnn.saving.checkpoint`), the bounded ``.npz`` reader they are
read with (:mod:`dnn.saving.npz_reader`), the atomic writes every file of dnn goes through
(:mod:`dnn.saving.fileio`) and the classes of one's own that saved configs name
(:mod:`dnn.saving.registry`: Keras' ``keras.saving.register_keras_serializable``,
``custom_object_scope``, ...).  Nothing here imports the models: :func:`dnn.models.load_model`
hands :func:`checkpoint.load` the model class to make."""

from dnn.saving.registry import (custom_object_scope, get_custom_objects, get_registered_name,
                                 get_registered_object, register_keras_serializable)

__all__ = ["custom_object_scope", "get_custom_objects", "get_registered_name",
           "get_registered_object", "register_keras_serializable"]
