"""Saving: checkpoints (:mod:`dnn.saving.checkpoint`), the bounded ``.npz`` reader they are
read with (:mod:`dnn.saving.npz_reader`) and the atomic writes every file of dnn goes through
(:mod:`dnn.saving.fileio`).  Nothing here imports the models: :func:`dnn.models.load_model`
hands :func:`checkpoint.load` the model class to make."""
