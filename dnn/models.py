"""Keras' ``keras.models``: :class:`Sequential` and :func:`load_model`."""

from __future__ import annotations

from dnn import checkpoint
from dnn.model import Sequential

__all__ = ["Sequential", "load_model"]


def load_model(path, backend=None) -> Sequential:
    """The model saved by ``model.save(path)``, with its optimizer, on ``backend`` (default:
    the current one)."""
    return checkpoint.load(path, backend=backend)
