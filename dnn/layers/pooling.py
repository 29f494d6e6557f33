"""Pooling layers (Keras' ``keras.layers.pooling``) over channels-last images: MaxPooling2D
(:meth:`Backend.max_pool`), AveragePooling2D (the windows of :meth:`Backend.im2col`, summed
and scaled), GlobalAveragePooling2D and GlobalMaxPooling2D (one max-pooling window the
size of the image) over each whole image; and over sequences ``(steps, features)``,
MaxPooling1D and AveragePooling1D (the 2-D kinds over images of one row),
GlobalAveragePooling1D and GlobalMaxPooling1D."""

from __future__ import annotations

import numpy as np

from dnn.callbacks.arguments import check_flag
from dnn.layers.base import Layer, check_keras_only, declared_shape
from dnn.layers.images import (OnImages, OnSequences, channels_last, check_sequences,
                               image_window, padding_name, pair, size)


class _Pooling2D(OnImages, Layer):
    """A ``pool_size`` window moved by ``strides`` (``pool_size`` by default, as Keras):
    ``(n, h, w, c) -> (n, oh, ow, c)``; the arguments and the windows both kinds share."""

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 input_shape=None, name=None, trainable=True, **keras_only):
        kind = type(self).__name__
        check_keras_only(kind, keras_only)
        channels_last(data_format, kind)
        super().__init__(name, declared_shape(input_shape, None, kind), trainable)
        self.pool_size = pair(pool_size, "pool_size", kind)
        self.strides = self.pool_size if strides is None else pair(strides, "strides", kind)
        self.padding = padding_name(padding, kind)
        self._window = None

    def compute_output_shape(self, input_shape):
        window = image_window(input_shape, self.pool_size, self.strides, self.padding, self)
        return (*window.output, input_shape[-1])

    def build(self, input_shape):
        self._window = image_window(input_shape, self.pool_size, self.strides, self.padding,
                                    self)

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("strides", list(self.strides), list(self.pool_size)),
            ("padding", self.padding, "valid")) if value != default}
        return self._config(pool_size=list(self.pool_size), **options)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pool_size={self.pool_size}, strides={self.strides}, "
                f"padding={self.padding!r})")


class MaxPooling2D(_Pooling2D):
    """Keras' ``MaxPooling2D``: the largest input of each window
    (:meth:`Backend.max_pool`).  Its gradient goes to the first input (in the window's
    row-major order) holding the maximum, as PyTorch's and TensorFlow's do; ``"same"``
    padding never wins a window."""

    def forward(self, x, logits=False, training=False):
        out = self._buffers("output", (x.shape[0], *self.image_output_shape), x.dtype)
        argmax = self._buffers("argmax", out.shape, self._backend.xp.int32)
        self._argmax = argmax
        return self._backend.max_pool(x, self._window, out, argmax)

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        grad_x = self._buffers("grad_x", (grad.shape[0], *self.image_input_shape), grad.dtype)
        return self._backend.max_pool_backward(grad, self._argmax, self._window, grad_x)


class AveragePooling2D(_Pooling2D):
    """Keras' ``AveragePooling2D``: the mean of each window's inputs; with ``"same"`` padding
    a window at the edge averages the inputs it covers only (padding is not counted), as
    Keras and TensorFlow do."""

    def build(self, input_shape):
        super().build(input_shape)
        counts = np.zeros(self._window.output)
        for top in self._window.rows.spans():
            for left in self._window.columns.spans():
                counts[top.out_start:top.out_stop, left.out_start:left.out_stop] += 1
        # the reciprocal of each window's count of inputs, (oh, ow, 1)
        self._scale = self._backend.asarray((1 / counts)[:, :, None].astype(self._dtype))

    def _windows(self, x):
        """The inputs of every window of ``x`` ``(n, h, w, c)``, ``(n, oh, ow, kh, kw, c)``,
        in the layer's buffer."""
        self._cols_shape = (x.shape[0], *self._window.output, *self._window.kernel, x.shape[-1])
        cols = self._buffers("cols", self._cols_shape, x.dtype)
        return self._backend.im2col(x, self._window, cols)

    def _to_inputs(self, grad_cols):
        """The gradient of the windows, ``(n, oh, ow, kh, kw, c)``, summed into the inputs'
        ``(n, h, w, c)`` (the layer's buffer)."""
        n, c = grad_cols.shape[0], grad_cols.shape[-1]
        grad_x = self._buffers("grad_x", (n, *self.image_input_shape[:2], c), grad_cols.dtype)
        return self._backend.col2im(grad_cols, self._window, grad_x)

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        cols = self._windows(x)
        out = self._buffers("output", (x.shape[0], *self.image_output_shape), x.dtype)
        out[...] = xp.sum(xp.reshape(cols, (*out.shape[:3], -1, out.shape[3])), axis=3) \
            * self._scale
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp = self._backend.xp
        grad_cols = self._buffers("grad_cols", self._cols_shape, grad.dtype)
        grad_cols[...] = xp.reshape(grad * self._scale, (*grad.shape[:3], 1, 1, grad.shape[3]))
        return self._to_inputs(grad_cols)


class _Pooling1D(OnSequences):
    """The 1-D kind of the 2-D pooling after it: a ``pool_size`` window moved by ``strides``
    (``pool_size`` by default) along each sequence, ``(n, steps, c) -> (n, out_steps, c)``."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None,
                 input_shape=None, name=None, trainable=True, **keras_only):
        kind = type(self).__name__
        pool = size(pool_size, "pool_size", kind)
        step = pool if strides is None else size(strides, "strides", kind)
        super().__init__((1, pool), (1, step), padding_name(padding, kind), data_format,
                         declared_shape(input_shape, None, kind), name, trainable,
                         **keras_only)

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("strides", [self.strides[1]], [self.pool_size[1]]),
            ("padding", self.padding, "valid")) if value != default}
        return self._config(pool_size=[self.pool_size[1]], **options)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pool_size={self.pool_size[1]}, "
                f"strides={self.strides[1]}, padding={self.padding!r})")


class MaxPooling1D(_Pooling1D, MaxPooling2D):
    """Keras' ``MaxPooling1D``: the largest input of each window along the sequence (its
    gradient to the first step holding it)."""


class AveragePooling1D(_Pooling1D, AveragePooling2D):
    """Keras' ``AveragePooling1D``: the mean of each window's inputs along the sequence
    (``"same"`` padding counted out, as in Keras)."""


class _GlobalPooling(Layer):
    """One number per channel (feature) of each whole sample; the arguments every kind
    shares."""

    def __init__(self, data_format=None, keepdims: bool = False, input_shape=None, name=None,
                 trainable=True, **keras_only):
        kind = type(self).__name__
        check_keras_only(kind, keras_only)
        channels_last(data_format, kind)
        check_flag(kind, "keepdims", keepdims)
        super().__init__(name, declared_shape(input_shape, None, kind), trainable)
        self.keepdims = bool(keepdims)

    def get_config(self) -> dict:
        return self._config(**({"keepdims": True} if self.keepdims else {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _GlobalPooling2D(_GlobalPooling):
    """One number per channel of each whole image: ``(n, h, w, c) -> (n, c)``
    (``keepdims=True``: ``(n, 1, 1, c)``)."""

    def compute_output_shape(self, input_shape):
        image_window(input_shape, (1, 1), (1, 1), "valid", self)  # images, or a UsageError
        return (1, 1, input_shape[-1]) if self.keepdims else (input_shape[-1],)


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Keras' ``GlobalAveragePooling2D``: the mean of each channel over the whole image."""

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        out = self._buffers("output", (x.shape[0], *self.output_shape), x.dtype)
        out[...] = xp.reshape(xp.mean(x, axis=(1, 2)), out.shape)
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp = self._backend.xp
        height, width, channels = self.input_shape
        grad_x = self._buffers("grad_x", (grad.shape[0], *self.input_shape), grad.dtype)
        grad_x[...] = xp.reshape(grad, (grad.shape[0], 1, 1, channels)) / (height * width)
        return grad_x


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Keras' ``GlobalMaxPooling2D``: the largest input of each channel over the whole image,
    MaxPooling2D's one window the size of the image (its gradient to the first input
    holding the maximum, in row-major order)."""

    def build(self, input_shape):
        size = tuple(input_shape[:2])
        self._window = image_window(input_shape, size, size, "valid", self)

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        pooled = self._buffers("pooled", (x.shape[0], 1, 1, x.shape[-1]), x.dtype)
        self._argmax = self._buffers("argmax", pooled.shape, xp.int32)
        pooled = self._backend.max_pool(x, self._window, pooled, self._argmax)
        return xp.reshape(pooled, (x.shape[0], *self.output_shape))

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp = self._backend.xp
        grad_x = self._buffers("grad_x", (grad.shape[0], *self.input_shape), grad.dtype)
        pooled = xp.reshape(grad, (grad.shape[0], 1, 1, grad.shape[-1]))
        return self._backend.max_pool_backward(pooled, self._argmax, self._window, grad_x)


class _GlobalPooling1D(_GlobalPooling):
    """One number per feature of each whole sequence: ``(n, steps, f) -> (n, f)``
    (``keepdims=True``: ``(n, 1, f)``)."""

    def compute_output_shape(self, input_shape):
        check_sequences(input_shape, self)
        return (1, input_shape[-1]) if self.keepdims else (input_shape[-1],)


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Keras' ``GlobalAveragePooling1D``: the mean of each feature over the whole
    sequence (an Embedding's vectors averaged over the words of a text)."""

    def forward(self, x, logits=False, training=False):
        out = self._buffers("output", (x.shape[0], *self.output_shape), x.dtype)
        out[...] = self._backend.xp.reshape(self._backend.xp.mean(x, axis=1), out.shape)
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        steps, features = self.input_shape
        grad_x = self._buffers("grad_x", (grad.shape[0], steps, features), grad.dtype)
        grad_x[...] = self._backend.xp.reshape(grad, (grad.shape[0], 1, features)) / steps
        return grad_x


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Keras' ``GlobalMaxPooling1D``: the largest of each feature over the whole sequence
    (its gradient to the first step holding it)."""

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        self._argmax = self._buffers("argmax", (x.shape[0], x.shape[-1]), xp.int64)
        self._argmax[...] = xp.argmax(x, axis=1)
        out = self._buffers("output", (x.shape[0], *self.output_shape), x.dtype)
        out[...] = xp.reshape(xp.max(x, axis=1), out.shape)
        return out

    def backward(self, grad, logits=False):
        if not self.needs_input_grad:
            return None
        xp = self._backend.xp
        steps, features = self.input_shape
        grad_x = self._buffers("grad_x", (grad.shape[0], steps, features), grad.dtype)
        chosen = (xp.reshape(xp.arange(steps, dtype=self._argmax.dtype), (1, steps, 1))
                  == xp.expand_dims(self._argmax, axis=1))
        grad_x[...] = xp.where(chosen, xp.reshape(grad, (grad.shape[0], 1, features)),
                               xp.zeros((), dtype=grad.dtype))
        return grad_x
