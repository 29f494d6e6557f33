"""What the layers over channels-last images (convolution, pooling) check in common: window
sizes and strides, Keras' padding names, and inputs of shape ``(height, width, channels)``;
and how their 1-D kinds (Conv1D, MaxPooling1D, AveragePooling1D) see sequences ``(steps,
channels)`` as images of one row (:class:`OnSequences`)."""

from __future__ import annotations

from dnn.backends.windows import PADDINGS, Window
from dnn.errors import UsageError
from dnn.utils import is_int_at_least


def pair(value, what: str, layer: str) -> tuple[int, int]:
    """``value`` (an int, or two of them) as ``(rows, columns)`` positive sizes; UsageError
    naming the ``layer``'s argument ``what`` else."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(is_int_at_least(size, 1) for size in values):
        raise UsageError(f"{layer} {what} must be a positive integer or two of them, such as "
                         f"3 or (3, 3), not {value!r}")
    return int(values[0]), int(values[1])


def padding_name(padding, layer: str) -> str:
    """Keras' ``padding``, ``"valid"`` or ``"same"`` (any case)."""
    name = padding.lower() if isinstance(padding, str) else padding
    if name not in PADDINGS:
        raise UsageError(f"{layer} padding must be 'valid' or 'same', not {padding!r}")
    return name


def channels_last(data_format, layer: str) -> None:
    """Refuse a ``data_format`` other than Keras' default, ``"channels_last"``."""
    if data_format not in (None, "channels_last"):
        raise UsageError(f"{layer}: only data_format='channels_last' (the channels, or "
                         f"features, on the last axis) is supported, not {data_format!r}")


def image_window(input_shape: tuple, kernel: tuple, strides: tuple, padding: str,
                 layer) -> Window:
    """The :class:`Window` of ``layer`` over inputs of sample shape ``input_shape``, which
    must be ``(height, width, channels)`` with room for at least one window."""
    if len(input_shape) != 3:
        raise UsageError(f"{layer.name} ({type(layer).__name__}) takes images (height, width, "
                         f"channels), not inputs of shape {tuple(input_shape)}: declare "
                         "Input(shape=(28, 28, 1)), say, or give the data that shape")
    window = Window.of(input_shape[:2], kernel, strides, padding)
    if 0 in window.output:
        fits = (f"a window of {kernel[1]} steps does not fit in sequences of {input_shape[1]} "
                "steps" if isinstance(layer, OnSequences) else
                f"a {kernel[0]}x{kernel[1]} window does not fit in "
                f"{input_shape[0]}x{input_shape[1]} images")
        raise UsageError(f"{layer.name} ({type(layer).__name__}): {fits} with padding "
                         f"{padding!r}")
    return window


def check_sequences(input_shape: tuple, layer) -> None:
    """Refuse (UsageError naming ``layer``) inputs of sample shape ``input_shape`` that are
    not sequences ``(steps, channels)``."""
    if len(input_shape) != 2:
        raise UsageError(f"{layer.name} ({type(layer).__name__}) takes sequences (steps, "
                         f"channels), not inputs of shape {tuple(input_shape)}")


def size(value, what: str, layer: str) -> int:
    """``value`` (an int, or a tuple or list of one) as a positive size; UsageError naming
    the ``layer``'s argument ``what`` else."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) != 1 or not is_int_at_least(values[0], 1):
        raise UsageError(f"{layer} {what} must be a positive integer, such as 3, not "
                         f"{value!r}")
    return int(values[0])


class OnImages:
    """The sample shapes a 2-D layer's passes work on: its input's and its output's."""

    @property
    def image_input_shape(self) -> tuple:
        return self.input_shape

    @property
    def image_output_shape(self) -> tuple:
        return self.output_shape


class OnSequences(OnImages):
    """The 1-D kind of the 2-D layer after it (Conv1D of Conv2D): sequences ``(n, steps,
    channels)`` are passed to it as images ``(n, 1, steps, channels)`` of one row, whose
    windows are one row high, and its outputs ``(n, 1, out_steps, filters)`` come back as
    ``(n, out_steps, filters)``."""

    def compute_output_shape(self, input_shape):
        check_sequences(input_shape, self)
        return super().compute_output_shape((1, *input_shape))[1:]

    def build(self, input_shape):
        super().build((1, *input_shape))

    @property
    def image_input_shape(self) -> tuple:
        return (1, *self.input_shape)

    @property
    def image_output_shape(self) -> tuple:
        return (1, *self.output_shape)

    def forward(self, x, logits=False, training=False):
        xp = self._backend.xp
        out = super().forward(xp.reshape(x, (x.shape[0], *self.image_input_shape)),
                              logits=logits, training=training)
        return xp.reshape(out, (x.shape[0], *self.output_shape))

    def backward(self, grad, logits=False):
        xp = self._backend.xp
        grad_x = super().backward(xp.reshape(grad, (grad.shape[0], *self.image_output_shape)),
                                  logits=logits)
        return None if grad_x is None else xp.reshape(grad_x,
                                                      (grad.shape[0], *self.input_shape))

