"""Convolution layers (Keras' ``keras.layers.convolutional``): Conv2D over channels-last
images, as a product of the windows' inputs with the kernel (im2col), so that its forward and
backward passes are the backend's dense kernels plus :meth:`Backend.im2col` and
:meth:`Backend.col2im`; Conv1D, the same over sequences seen as images of one row."""

from __future__ import annotations

from dnn.errors import UsageError
from dnn.layers.base import KernelLayer, check_keras_only, declared_shape
from dnn.layers.images import (OnImages, OnSequences, channels_last, image_window,
                               padding_name, pair, size)


class Conv2D(OnImages, KernelLayer):
    """Keras' ``Conv2D(filters, kernel_size, strides=1, padding="valid")``: ``(n, h, w, c)
    -> (n, oh, ow, filters)``, ``out[b, y, x, f] = activation(bias[f] + sum over i, j, k of
    inputs[b, y * sh + i - top, x * sw + j - left, k] * kernel[i, j, k, f])`` (inputs outside
    the image are zero; ``top, left`` the ``"same"`` padding).

    ``kernel`` is ``(kh, kw, c, filters)`` as Keras stores it (PyTorch's ``weight`` is
    ``kernel.transpose(3, 2, 0, 1)``), ``bias`` ``(filters,)``; initializers and regularizers
    as :class:`dnn.layers.Dense`'s.  Keras' ``data_format`` other than ``"channels_last"``,
    ``dilation_rate`` other than 1, ``groups`` other than 1 and constraints are not supported
    yet (a UsageError says so: :data:`dnn.layers.base.KERAS_ONLY`).
    """

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding="valid",
                 data_format=None, dilation_rate=(1, 1), groups=1, activation=None,
                 use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, input_shape=None, name=None, trainable=True,
                 **keras_only):
        check_keras_only("Conv2D", keras_only)
        channels_last(data_format, "Conv2D")
        if pair(dilation_rate, "dilation_rate", "Conv2D") != (1, 1) or groups != 1:
            raise UsageError("Conv2D: dilation_rate and groups other than 1 are not supported "
                             "yet")
        super().__init__(filters, "filters", activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer,
                         input_shape=declared_shape(input_shape, None, "Conv2D"), name=name,
                         trainable=trainable)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = pair(strides, "strides", "Conv2D")
        self.padding = padding_name(padding, "Conv2D")
        self._window = None
        self._input = self._cols = self._output = None

    @property
    def filters(self) -> int:
        return self.units

    def compute_output_shape(self, input_shape):
        window = image_window(input_shape, self.kernel_size, self.strides, self.padding, self)
        return (*window.output, self.filters)

    def kernel_shape(self, input_shape):
        return (*self.kernel_size, input_shape[-1], self.filters)

    def build(self, input_shape):
        super().build(input_shape)
        self._window = image_window(input_shape, self.kernel_size, self.strides, self.padding,
                                    self)

    def _matrices(self, n: int):
        """The ``(n * oh * ow, kh * kw * c)`` and ``(kh * kw * c, filters)`` shapes the
        product sees its windows and its kernel as."""
        oh, ow = self._window.output
        cells = self._window.cells * self.input_shape[-1]
        return (n * oh * ow, cells), (cells, self.filters)

    def forward(self, x, logits=False, training=False):
        backend, xp = self._backend, self._backend.xp
        n = x.shape[0]
        (rows, cells), kernel_matrix = self._matrices(n)
        cols = self._buffers("cols", (n, *self._window.output, *self._window.kernel,
                                      x.shape[-1]), x.dtype)
        backend.im2col(x, self._window, cols)
        kernel, bias = self._kernel_and_bias()
        out = self._buffers("output", (n, *self.image_output_shape), x.dtype)
        windows, flat_kernel = xp.reshape(cols, (rows, cells)), xp.reshape(kernel, kernel_matrix)
        flat_out = xp.reshape(out, (rows, self.filters))
        if logits:
            backend.dense_forward(windows, flat_kernel, bias, flat_out)
        else:
            self.activation.dense_forward(backend, windows, flat_kernel, bias, flat_out)
        self._input, self._cols, self._output = x, cols, out
        return out

    def backward(self, grad, logits=False):
        backend, xp = self._backend, self._backend.xp
        x, cols = self._input, self._cols
        (rows, cells), kernel_matrix = self._matrices(x.shape[0])
        flat_grad = xp.reshape(grad, (rows, self.filters))
        grad_z = (flat_grad if logits else self.activation.backward(
            backend, flat_grad, xp.reshape(self._output, (rows, self.filters))))
        grad_cols = (self._buffers("grad_cols", cols.shape, x.dtype) if self.needs_input_grad
                     else None)
        backend.dense_backward(xp.reshape(cols, (rows, cells)), grad_z,
                               xp.reshape(self.params[0], kernel_matrix),
                               xp.reshape(self.grads[0], kernel_matrix), self._grad_bias(),
                               None if grad_cols is None else
                               xp.reshape(grad_cols, (rows, cells)))
        if grad_cols is None:
            return None
        grad_x = self._buffers("grad_x", x.shape, x.dtype)
        return backend.col2im(grad_cols, self._window, grad_x)

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("strides", list(self.strides), [1, 1]), ("padding", self.padding, "valid"))
            if value != default}
        return self._config(filters=self.filters, kernel_size=list(self.kernel_size),
                            activation=self.activation.name, **options,
                            **self._kernel_options())

    def __repr__(self) -> str:
        return (f"Conv2D({self.filters}, {self.kernel_size}, strides={self.strides}, "
                f"padding={self.padding!r}, activation={self.activation.name!r})")


class Conv1D(OnSequences, Conv2D):
    """Keras' ``Conv1D(filters, kernel_size, strides=1, padding="valid")``: ``(n, steps, c)
    -> (n, out_steps, filters)``, Conv2D's product over windows one row high
    (:class:`dnn.layers.images.OnSequences`); ``kernel`` is ``(kernel_size, c, filters)`` as
    Keras stores it.  Keras' ``"causal"`` padding, ``dilation_rate`` and ``groups`` other than
    1 are not supported yet."""

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid",
                 data_format=None, dilation_rate=1, groups=1, activation=None,
                 use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, input_shape=None, name=None, trainable=True,
                 **keras_only):
        check_keras_only("Conv1D", keras_only)
        channels_last(data_format, "Conv1D")
        if size(dilation_rate, "dilation_rate", "Conv1D") != 1 or groups != 1:
            raise UsageError("Conv1D: dilation_rate and groups other than 1 are not supported "
                             "yet")
        super().__init__(filters, (1, size(kernel_size, "kernel_size", "Conv1D")),
                         (1, size(strides, "strides", "Conv1D")),
                         padding_name(padding, "Conv1D"), activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer,
                         input_shape=declared_shape(input_shape, None, "Conv1D"), name=name,
                         trainable=trainable)

    def kernel_shape(self, input_shape):
        return (self.kernel_size[1], input_shape[-1], self.filters)

    def get_config(self) -> dict:
        options = {key: value for key, value, default in (
            ("strides", [self.strides[1]], [1]), ("padding", self.padding, "valid"))
            if value != default}
        return self._config(filters=self.filters, kernel_size=[self.kernel_size[1]],
                            activation=self.activation.name, **options,
                            **self._kernel_options())

    def __repr__(self) -> str:
        return (f"Conv1D({self.filters}, {self.kernel_size[1]}, strides={self.strides[1]}, "
                f"padding={self.padding!r}, activation={self.activation.name!r})")

