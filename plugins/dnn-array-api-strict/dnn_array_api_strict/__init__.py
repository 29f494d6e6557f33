"""The ``strict`` backend: dnn's generic kernels on array-api-strict.

It overrides nothing: every kernel is the Backend base class's, written over ``xp``.  Any
NumPy-only idiom in dnn's generic code (a method instead of a function, ``out=``, an implicit
float64 promotion, a ``np.`` call on a backend array) fails here, which keeps that code ready for
CuPy and other array libraries without needing a GPU to find out.
"""

import numpy as np

from dnn.backends import Availability, Backend


class StrictBackend(Backend):
    name = "strict"

    def __init__(self):
        import array_api_strict

        self.xp = array_api_strict

    @classmethod
    def is_available(cls) -> Availability:
        try:
            import array_api_strict  # noqa: F401
        except ImportError:
            return Availability(False, "array-api-strict is not installed: pip install "
                                       "array-api-strict")
        return Availability(True)

    def to_numpy(self, array) -> np.ndarray:
        return np.array(np.from_dlpack(array), copy=True)
