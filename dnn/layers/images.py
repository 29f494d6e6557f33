"""What the layers over channels-last images (convolution, pooling) check in common: window
sizes and strides, Keras' padding names, and inputs of shape ``(height, width, channels)``."""

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
        raise UsageError(f"{layer.name} ({type(layer).__name__}): a {kernel[0]}x{kernel[1]} "
                         f"window does not fit in {input_shape[0]}x{input_shape[1]} images "
                         f"with padding {padding!r}")
    return window
