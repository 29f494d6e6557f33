"""Buffers: the arrays an owner (a layer, the model, a backend's kernels) writes into, kept from
call to call so that a training step allocates nothing once the first full batch has passed."""

from __future__ import annotations


class Buffers:
    """One array per role and shape, made on ``backend`` the first time it is asked for.

    What the owner returns from a buffer is valid until the owner's next call that writes the
    same role (its next forward pass, say): copy it to keep it.  A training run uses two shapes
    per role, the full batch and the last, smaller one.
    """

    def __init__(self, backend):
        self.backend = backend
        self._arrays: dict = {}

    def __call__(self, role: str, shape: tuple, dtype):
        """The ``role`` array of ``shape`` (a tuple) and ``dtype`` (what ``backend.empty`` takes;
        the key compares it as given, so ask for one role with one spelling of its dtype)."""
        key = (role, shape, dtype)
        array = self._arrays.get(key)
        if array is None:
            array = self._arrays[key] = self.backend.buffer(shape, dtype)
        return array
