"""``cupy.ndarray``: an array on the device, behaving as CuPy 14's where dnn's gpu path depends
on it.

Its values are a :class:`dnn.replay.Traced` NumPy array, so that what is computed on it while
the current stream is being captured is recorded for the graph's replays (cupy/cuda/stream.py).
It is not a NumPy array, as CuPy's is not (``cupy/_core/core.pyx``): ``np.asarray`` of it
raises TypeError; NumPy's functions and ufuncs reach it through ``__array_function__`` and
``__array_ufunc__``, and refuse a NumPy array mixed in, as CuPy's kernels do; a value reaches
the host only through ``get()``, which CuPy refuses on a capturing stream; a product (``@``,
``matmul``, ``dot``) is CuPy's cuBLAS, refused while the current stream is being captured.
So are, as in CuPy, the operations whose result's shape is a count of the device's values,
which CuPy reads on the host: indexing with a boolean device array (a mask, alone or in a
tuple), ``nonzero``, ``where`` of one argument, ``argwhere``, ``flatnonzero``, ``compress``
and ``extract``.  A 0-d host value (a Python or NumPy number) copied to the device is a fill
kernel, as in CuPy: captured, with the value it had at capture time frozen into the graph; a
copy of any other host array is refused while capturing.

``data.ptr`` is the address of the first element (the NumPy memory that a library of the
stand-in, such as the stub cuBLAS, reads and writes).  Each new array books its memory with the
current allocator (cupy/cuda/memory.py), which takes it back when the last array on it is gone;
one made while the current stream is being captured is also kept alive for the graph.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from cupy.cuda import memory
from cupy.cuda import stream as stream_module
from dnn.replay import Traced

HOST_ONLY = frozenset({"ctypes", "dump", "dumps", "tobytes", "tofile"})
CUBLAS_FUNCTIONS = frozenset({np.dot, np.inner, np.tensordot, np.vdot})
D2H_REFUSED = "the current stream is capturing, so D2H transfers are disallowed"
H2D_REFUSED = "the current stream is capturing, so H2D transfers are disallowed"
# The functions whose result's shape CuPy 14.2 reads on the host (the count of the nonzero
# values of their first argument): nonzero
# (cupy/_core/_routines_indexing.pyx, _ndarray_argwhere: ``count_nonzero =
# int(scan_index[-1])  # synchronize!``), and what calls it: argwhere
# (cupy/_sorting/search.py: ``_indexing._ndarray_argwhere(a)``), flatnonzero (``return
# a.ravel().nonzero()[0]``), where of the condition alone (``return nonzero(condition)  # may
# synchronize``), compress (_routines_indexing.pyx _ndarray_compress: ``res =
# _ndarray_nonzero(condition)  # synchronize``) and extract (cupy/_indexing/indexing.py:
# ``a.take(condition.nonzero()[0])``).
COUNT_READING = frozenset({np.nonzero, np.argwhere, np.flatnonzero, np.compress, np.extract})
COUNT_READING_METHODS = frozenset({"nonzero", "compress"})  # self's count, condition's

DevicePointer = namedtuple("DevicePointer", "mem ptr")


def _refuse_cublas_while_capturing() -> None:
    """CuPy's cuBLAS calls set the handle's stream first, which CuPy refuses on a capturing
    stream (``setStream`` in ``cupy_backends/cuda/libs/cublas.pyx``)."""
    if stream_module.get_current_stream()._capture is not None:
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")


def _capturing() -> bool:
    return stream_module.get_current_stream()._capture is not None


def _refuse_reading_the_count_of(values) -> None:
    """CuPy reads on the host how many of ``values`` (a device array, or what CuPy makes one
    of) are nonzero before it makes an array of that length, and ``int()`` of a device value
    is a D2H copy, which ``MemoryPointer.copy_to_host_async`` refuses while the current stream
    is being captured (cupy/cuda/memory.pyx: ``'the current stream is capturing, so D2H
    transfers are disallowed'``).  An empty array has no count to read
    (_routines_indexing.pyx: ``if mask.size == 0: ... return``, ``if self.size == 0:
    count_nonzero = 0``)."""
    if _capturing() and np.size(values._values if isinstance(values, ndarray) else values):
        raise RuntimeError(D2H_REFUSED)


def _refuse_masks_while_capturing(key) -> None:
    """A boolean key, alone or in a tuple: CuPy indexes with a mask by scanning it and
    reading the scan's last value, the count of True, on the host (_routines_indexing.pyx
    _prepare_mask_indexing_single, which both ``__getitem__`` (_getitem_mask_single) and
    ``__setitem__`` (_scatter_op_mask_single) call: ``n_true = int(mask_scanned[-1])``; a mask
    among other array indices goes through ``_ndarray_argwhere`` instead, which reads the same
    count).  A Python bool becomes a 0-d boolean device array first (_prepare_slice_list)."""
    if not _capturing():
        return
    for item in key if isinstance(key, tuple) else (key,):
        if ((isinstance(item, ndarray) and item._values.dtype == np.bool_)
                or isinstance(item, (bool, np.bool_))):
            _refuse_reading_the_count_of(item)


def device_arrays(value) -> list:
    """The device arrays in ``value`` (arguments: tuples, lists and dicts of them)."""
    if isinstance(value, ndarray):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in device_arrays(item)]
    return []


def unwrap(value):
    """``value`` (arguments) with each device array as its Traced values; a NumPy array in it
    is refused, as CuPy refuses one."""
    if isinstance(value, ndarray):
        return value._values
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(unwrap(item) for item in value)
    return value


def new(values: np.ndarray) -> ndarray:
    """``values`` as a new device array: its memory booked with the current allocator and,
    while the current stream is being captured, kept for the graph."""
    values = values.view(Traced)
    array = ndarray._on(values, memory.alloc(values.nbytes))
    stream_module.get_current_stream()._hold(values)
    return array


def from_host(values, dtype=None) -> ndarray:
    """A copy of host ``values`` on the device.  A 0-d one is, as in CuPy, a new array filled
    with its value by a kernel on the current stream (cupy/_core/core.pyx _array_default: ``if
    a_cpu.ndim == 0: a.fill(a_cpu)``; ``fill`` launches ``fill_kernel(value, self)``, or a
    memset for 0): while the stream is being captured the fill is recorded with the value it
    has now, which each replay of the graph writes again, however the host number has changed
    since.  Any other is a host-to-device copy, which CuPy refuses on a capturing stream
    (cupy/cuda/memory.pyx ``copy_from_host_async``)."""
    host = np.array(values, dtype=dtype, copy=True)
    if host.ndim == 0:
        array = new(np.empty((), host.dtype))
        target = array._values.view(np.ndarray)

        def fill(value=host[()]):
            target[...] = value
        stream_module.get_current_stream()._launch(fill)
        return array
    if _capturing():
        raise RuntimeError(H2D_REFUSED)
    return new(host)


def wrap(result, sources: list):
    """An operation's ``result`` as device arrays: a view of one of ``sources`` (the device
    arrays it was given) holds that one's memory, anything else is a new array."""
    if isinstance(result, (tuple, list)):
        return type(result)(wrap(item, sources) for item in result)
    if not isinstance(result, np.ndarray):
        return result
    plain = result.view(np.ndarray)
    for source in sources:
        if np.may_share_memory(plain, source._values.view(np.ndarray)):
            return ndarray._on(result.view(Traced), source._memptr)
    return new(result)


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 (CuPy's name)
    """An array on the device: ``ndarray(shape, dtype)`` is a new one; operators, NumPy's
    functions and the methods of a NumPy array work on it as they do on CuPy's."""

    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        made = new(np.empty(shape, dtype, order=order))
        self._values, self._memptr = made._values, made._memptr

    @classmethod
    def _on(cls, values: Traced, memptr) -> ndarray:
        array = cls.__new__(cls)
        array._values, array._memptr = values, memptr
        return array

    # -- NumPy's ways in --------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            _refuse_cublas_while_capturing()
        result = getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))
        out = kwargs.get("out")
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result, device_arrays((inputs, kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        if func in CUBLAS_FUNCTIONS:
            _refuse_cublas_while_capturing()
        given = (*args, *kwargs.values())
        if func in COUNT_READING or (func is np.where and len(given) == 1):
            _refuse_reading_the_count_of(given[0])
        result = func(*unwrap(args), **unwrap(kwargs))
        if kwargs.get("out") is not None:
            return kwargs["out"]
        return wrap(result, device_arrays((args, kwargs)))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __getattr__(self, name):
        """A NumPy array's attribute (``shape``, ``T``, ``reshape``, ``sum``, ...), with the
        arrays it gives as device arrays; none that reaches host memory."""
        if name.startswith("_") or name in HOST_ONLY:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        value = getattr(self._values, name)
        if not callable(value):
            return wrap(value, [self])

        def method(*args, **kwargs):
            if name in COUNT_READING_METHODS:  # a.nonzero(), a.compress(condition)
                _refuse_reading_the_count_of(self if name == "nonzero" else
                                             (*args, *kwargs.values())[0])
            return wrap(value(*unwrap(args), **unwrap(kwargs)),
                        [self, *device_arrays((args, kwargs))])
        return method

    def astype(self, dtype, copy=True):
        return np.astype(self, dtype, copy=copy)  # recorded, as a method call would not be

    def copy(self, order="C"):
        return np.copy(self, order=order)

    @property
    def data(self) -> DevicePointer:
        """The memory at the first element: ``ptr`` its address, ``mem`` the allocation."""
        return DevicePointer(self._memptr.mem, self._values.__array_interface__["data"][0])

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key):
        _refuse_masks_while_capturing(key)
        return wrap(self._values[unwrap(key)], [self, *device_arrays(key)])

    def __setitem__(self, key, value):
        _refuse_masks_while_capturing(key)
        if isinstance(value, (np.ndarray, list, tuple)):
            value = from_host(value)
        self._values[unwrap(key)] = unwrap(value)

    def __len__(self):
        if self._values.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._values)

    def __iter__(self):
        if self._values.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[index] for index in range(len(self)))

    # -- to the host --------------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        """A host copy, made on ``stream`` (the current one by default)."""
        if (stream or stream_module.get_current_stream())._capture is not None:
            raise RuntimeError(D2H_REFUSED)
        values = np.array(self._values.view(np.ndarray), order=order, copy=True)
        if out is None:
            return values
        out[...] = values
        return out

    def item(self):
        if self._values.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __bool__(self):
        return bool(self.get())

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __index__(self):
        return self.get().__index__()

    def __repr__(self):
        return repr(self.get())
