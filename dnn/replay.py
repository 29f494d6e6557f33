"""A NumPy backend that captures a training step and replays it as a CUDA graph would.

While a step is captured, every operation on its arrays (ufuncs, NumPy functions, item
assignment, copying indexing) is recorded with the arrays it read and wrote; a replay runs the
recorded operations again on those same arrays, writing each result where the captured one was
written.  The Python around them does not run again: a number read on the host, an array
rebound to a name, a batch chosen in Python all keep what they were at capture time, as on a
GPU.  A value read on the host during the capture (``float(array)``, ``to_numpy``) is refused,
as CUDA refuses a device-to-host copy in a capturing stream.  This lets the CPU suite check the
captured-step machinery of :mod:`dnn.trainers.step` and the bugs it must catch.
"""

from __future__ import annotations

import numpy as np

from dnn.backends.base import Availability, Backend
from dnn.errors import CaptureError


class _Recording:
    """The operations recorded while a step is captured (None when nothing is)."""

    operations: list | None = None


def record_into(operations: list | None) -> None:
    """From now on, record the operations on Traced arrays into ``operations`` (None: record
    nothing): a capture's list while a step is captured."""
    _Recording.operations = operations


def _plain(value):
    """``value`` with every Traced array in it (in lists and tuples too) as a plain view."""
    if isinstance(value, Traced):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _traced(result):
    """A result as Traced arrays: NumPy scalars become 0-d arrays, as on a GPU."""
    if isinstance(result, tuple):
        return tuple(_traced(item) for item in result)
    if isinstance(result, np.ndarray):
        return result.view(Traced)
    if isinstance(result, np.generic):
        return np.asarray(result).view(Traced)
    return result


def _record(compute, writes_in_place: bool, result):
    """Record ``compute`` (which recomputes the operation from the current arrays): replayed
    as it is where it writes in place, else with its result copied into ``result``'s
    memory."""
    if _Recording.operations is not None:
        if writes_in_place:
            _Recording.operations.append(compute)
        else:
            targets = result if isinstance(result, tuple) else (result,)

            def replay(targets=targets):
                fresh = compute()
                for target, value in zip(targets, fresh if isinstance(fresh, tuple)
                                         else (fresh,)):
                    if isinstance(target, np.ndarray):
                        target.view(np.ndarray)[...] = value
            _Recording.operations.append(replay)
    return result


class Traced(np.ndarray):
    """A NumPy array whose operations are recorded while a step is captured."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain_inputs, plain_kwargs = _plain(inputs), {k: _plain(v) for k, v in kwargs.items()}

        def compute():
            return getattr(ufunc, method)(*plain_inputs, **plain_kwargs)

        return _record(compute, kwargs.get("out") is not None, _traced(compute()))

    def __array_function__(self, func, types, args, kwargs):
        plain_args, plain_kwargs = _plain(args), {k: _plain(v) for k, v in kwargs.items()}

        def compute():
            return func(*plain_args, **plain_kwargs)

        return _record(compute, kwargs.get("out") is not None, _traced(compute()))

    def __setitem__(self, key, value):
        plain, value = self.view(np.ndarray), _plain(value)

        def compute():
            plain[key] = value

        compute()
        _record(compute, True, None)

    def __getitem__(self, key):
        plain, key = self.view(np.ndarray), _plain(key)
        result = plain[key]
        if isinstance(result, np.ndarray) and np.may_share_memory(result, plain):
            return result.view(Traced)  # a view: it follows the array's memory by itself
        return _record(lambda: plain[key], False, _traced(result))

    def __array_namespace__(self, api_version=None):
        """Its own namespace (:class:`_TracedNumpy`), as a CuPy array's is CuPy: NumPy's
        ``asarray`` would give a plain view, whose operations no capture records."""
        return _TRACED_NUMPY

    def _host_read(self, *args):
        if _Recording.operations is not None:
            raise CaptureError("a value was read on the host while the step was captured")
        return None

    def __float__(self):
        self._host_read()
        return float(self.view(np.ndarray))

    def __int__(self):
        self._host_read()
        return int(self.view(np.ndarray))

    def __bool__(self):
        self._host_read()
        return bool(self.view(np.ndarray))

    def __index__(self):
        self._host_read()
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        self._host_read()
        return self.view(np.ndarray).item(*args)


class _TracedNumpy:
    """NumPy, with the functions that create arrays returning Traced ones."""

    def __getattr__(self, name):
        return getattr(np, name)

    def asarray(self, value, dtype=None, copy=None):
        """A host value as a new array; one of this backend's as it is, as CuPy gives its
        own (a copy only where ``copy`` or another dtype asks, recorded as an operation)."""
        if isinstance(value, Traced):
            if copy is not True and (dtype is None or np.dtype(dtype) == value.dtype):
                return value
            return np.astype(value, value.dtype if dtype is None else dtype, copy=True)
        return np.array(_plain(value), dtype=dtype, copy=True).view(Traced)

    def empty(self, shape, dtype=None):
        return np.empty(shape, dtype).view(Traced)

    def zeros(self, shape, dtype=None):
        return np.zeros(shape, dtype).view(Traced)


_TRACED_NUMPY = _TracedNumpy()


class CapturedSteps:
    """A captured step: its recorded operations, run again by :meth:`replay`."""

    def __init__(self, backend, operations: list):
        self.backend, self.operations = backend, operations

    def replay(self) -> None:
        for operation in self.operations:
            operation()
        self.backend.replays += 1


class ReplayBackend(Backend):
    """The generic kernels on Traced NumPy arrays, with steps captured and replayed."""

    name = "replay"
    xp = _TRACED_NUMPY

    def __init__(self):
        self.replays = 0

    @classmethod
    def is_available(cls) -> Availability:
        return Availability(True)

    def asarray(self, host_array, dtype=None):
        return np.array(_plain(host_array), dtype=dtype, copy=True).view(Traced)

    def to_numpy(self, array) -> np.ndarray:
        if _Recording.operations is not None:
            raise CaptureError("an array was copied to the host while the step was captured")
        return np.array(_plain(array), copy=True)

    def is_own_array(self, array) -> bool:
        return isinstance(array, Traced)

    def captures_steps(self) -> bool:
        return True

    def capture(self, step):
        operations = []
        record_into(operations)
        try:
            step()
        finally:
            record_into(None)
        return CapturedSteps(self, operations)


class EagerReplayBackend(ReplayBackend):
    """The same arrays and kernels, never captured: what a replayed run must equal."""

    name = "replay-eager"

    def captures_steps(self) -> bool:
        return False

    def capture(self, step):
        return None
