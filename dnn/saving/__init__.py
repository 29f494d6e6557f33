"""Saving: checkpoints (:mod:`dnn.saving.checkpoint`) and the bounded ``.npz`` reader they are
read with (:mod:`dnn.saving.npz_reader`)."""
