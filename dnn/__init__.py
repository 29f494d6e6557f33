"""dnn: one set of layer, loss, gradient and optimizer code for NumPy (CPU) and CuPy (GPU)."""

from dnn import layers
from dnn.backends import current_backend, get_backend, use_backend
from dnn.model import Sequential

__all__ = ["Sequential", "layers", "use_backend", "get_backend", "current_backend"]
