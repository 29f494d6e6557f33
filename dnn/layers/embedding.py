"""Keras' ``Embedding``: a trained vector for each of ``input_dim`` indices (a word's, a
category's), looked up for each index of the inputs.  The model's inputs reach it as numbers
of the model's dtype, each a whole number below ``input_dim``; the data are checked on the
host before they move (:meth:`Embedding.check_input_values`), since a look-up on a GPU
would not say that an index is out of range."""

from __future__ import annotations

import warnings

import numpy as np

from dnn import initializers, regularizers
from dnn.errors import UsageError
from dnn.layers.base import MAX_UNITS, Layer, WeightSpec, check_keras_only, declared_shape
from dnn.utils import is_int_at_least, user_stacklevel

# Keras' arguments taken at their defaults only
KERAS_ONLY = {"embeddings_constraint": None, "mask_zero": False, "weights": None,
              "lora_rank": None, "lora_alpha": None, "quantization_config": None,
              "dtype": None}


class Embedding(Layer):
    """``(n, *shape)`` indices ``->`` ``(n, *shape, output_dim)``: row ``i`` of the
    ``embeddings`` ``(input_dim, output_dim)`` for each index ``i`` (Keras' default
    initializer draws them uniformly from [-0.05, 0.05]).  Its gradient adds each output
    row's gradient into the row it was looked up from; the indices get none.  It takes the
    model's inputs alone (so that their values are checked before they move)."""

    takes_model_inputs = True  # its indices are checked on the host

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform",
                 embeddings_regularizer=None, input_shape=None, name=None, trainable=True,
                 **keras_only):
        if keras_only.pop("input_length", None) is not None:  # as Keras 3 takes it
            warnings.warn("Embedding: input_length is deprecated in Keras 3 and changes "
                          "nothing; give the inputs' shape with keras.Input", UserWarning,
                          stacklevel=user_stacklevel())
        check_keras_only("Embedding", keras_only, KERAS_ONLY)
        for what, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not is_int_at_least(value, 1) or value > MAX_UNITS:
                raise UsageError(f"Embedding {what} must be an integer from 1 to "
                                 f"{MAX_UNITS:,}, not {value!r}")
        super().__init__(name, declared_shape(input_shape, None, "Embedding"), trainable)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.check(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self._indices = None  # of the last forward pass

    @property
    def embeddings(self):
        """``(input_dim, output_dim)``, an array of the model's backend (None before
        ``build``)."""
        return self.params[0] if self.params else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def weight_specs(self, input_shape):
        return [WeightSpec("embeddings", (self.input_dim, self.output_dim),
                           self.embeddings_initializer,
                           regularizer=self.embeddings_regularizer)]

    def build(self, input_shape):
        exact = 2 ** (np.finfo(self._dtype).nmant + 1)
        if self.input_dim > exact:
            raise UsageError(f"{self.name} has {self.input_dim:,} embeddings, but the model's "
                             f"{self._dtype} inputs hold whole numbers exactly only up to "
                             f"{exact:,}: use Sequential(dtype='float64')")
        super().build(input_shape)

    def check_input_values(self, x: np.ndarray, what: str) -> None:
        """Refuse (UsageError naming the first) host inputs ``x`` that are no index of an
        embedding: whole numbers from 0 to ``input_dim - 1``."""
        bad = (x < 0) | (x >= self.input_dim)
        if not np.issubdtype(x.dtype, np.integer):
            bad |= ~np.isfinite(x) | (x != np.floor(x))
        if bad.any():
            value = x[bad][0].item()
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            raise UsageError(f"{what} hold {shown!r}, which is no index of {self.name}'s "
                             f"{self.input_dim:,} embeddings (whole numbers from 0 to "
                             f"{self.input_dim - 1:,})")

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        self._indices = self._buffers("indices", (x.size,), xp.int64)
        self._indices[...] = xp.astype(xp.reshape(x, (-1,)), xp.int64)
        out = self._buffers("output", (*x.shape, self.output_dim), self.params[0].dtype)
        out[...] = xp.reshape(xp.take(self.params[0], self._indices, axis=0), out.shape)
        return out

    def backward(self, grad, logits=False):
        xp = self._backend.xp
        self.grads[0][...] = 0
        self._backend.scatter_add_rows(xp.reshape(grad, (-1, self.output_dim)), self._indices,
                                       self.grads[0])
        return None  # it takes the model's inputs alone: no layer before it to train

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("embeddings_initializer", self.embeddings_initializer, "uniform"),
            ("embeddings_regularizer", regularizers.serialize(self.embeddings_regularizer),
             None)) if value != default}
        return self._config(input_dim=self.input_dim, output_dim=self.output_dim, **options)

    def __repr__(self) -> str:
        return f"Embedding({self.input_dim}, {self.output_dim})"
