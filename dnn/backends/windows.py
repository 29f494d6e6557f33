"""The geometry of a sliding window over channels-last images: what convolution and pooling
kernels are given, computed once per layer and input shape on the host.

Keras' padding: ``"valid"`` places windows only where they fit, ``out = (size - k) // s + 1``;
``"same"`` gives ``out = ceil(size / s)`` and pads ``max((out - 1) * s + k - size, 0)`` in all,
the smaller half before (top, left), the larger after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class Span:
    """Where window offset ``offset`` along one axis meets the image: the outputs
    ``[out_start, out_stop)`` read the inputs ``in_start, in_start + stride, ...``; the other
    outputs of this offset fall on padding."""

    offset: int
    out_start: int
    out_stop: int
    in_start: int

    @property
    def count(self) -> int:
        return self.out_stop - self.out_start


@dataclass(frozen=True)
class Axis:
    """A window of ``size`` moved by ``stride`` over ``length`` inputs, ``pad_before`` of
    padding first; ``out`` positions."""

    length: int
    size: int
    stride: int
    pad_before: int
    out: int

    @classmethod
    def of(cls, length: int, size: int, stride: int, padding: str) -> "Axis":
        if padding == "same":
            out = -(-length // stride)
            pad = max((out - 1) * stride + size - length, 0)
            return cls(length, size, stride, pad // 2, out)
        return cls(length, size, stride, 0, max((length - size) // stride + 1, 0))

    def spans(self) -> list[Span]:
        """One :class:`Span` per window offset ``0 .. size - 1``."""
        spans = []
        for offset in range(self.size):
            first = offset - self.pad_before  # the input position of output 0
            start = min(max(0, -(first // self.stride)), self.out)
            stop = min(self.out, max(start, (self.length - 1 - first) // self.stride + 1))
            spans.append(Span(offset, start, stop, first + start * self.stride))
        return spans


@dataclass(frozen=True)
class Window:
    """A ``kernel = (kh, kw)`` window with ``strides = (sh, sw)`` and Keras' ``padding`` over
    ``(h, w)`` images: ``rows`` and ``columns`` are its two :class:`Axis`; the output is
    ``(rows.out, columns.out)``."""

    rows: Axis
    columns: Axis

    @classmethod
    def of(cls, image: tuple, kernel: tuple, strides: tuple, padding: str) -> "Window":
        return cls(Axis.of(image[0], kernel[0], strides[0], padding),
                   Axis.of(image[1], kernel[1], strides[1], padding))

    @property
    def output(self) -> tuple[int, int]:
        return self.rows.out, self.columns.out

    @property
    def kernel(self) -> tuple[int, int]:
        return self.rows.size, self.columns.size

    @property
    def padded(self) -> bool:
        """True when some window reaches past the image (then its outside reads as the
        kernel's fill value)."""
        return any(span.count < axis.out for axis in (self.rows, self.columns)
                   for span in axis.spans())

    @property
    def cells(self) -> int:
        """``kh * kw``: the inputs one window covers."""
        return math.prod(self.kernel)
