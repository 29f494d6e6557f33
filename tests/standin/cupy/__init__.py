"""A stand-in for CuPy 14 on the host, so that CI without a GPU runs dnn's gpu path (the real
``GpuBackend``, ``CudaGraphs`` and ``Cublas`` code) end to end; see docs/contributing.md,
"Working on GPU code without a GPU".  Put this folder (tests/standin) and the repository's root
on ``sys.path`` and ``import cupy`` finds it.

What it has of CuPy, and where CuPy's rules are kept: device arrays and NumPy's functions on
them (cupy/_array.py), ``ElementwiseKernel`` compiled by the host C compiler (cupy/_kernel.py),
streams and graph capture (cupy/cuda/stream.py, cupy/cuda/graph.py), the per-stream memory
pools (``get_default_memory_pool()`` among them) and the device memory under them, where a
captured graph's memory given to another array or back to the device makes its launches fault
(cupy/cuda/memory.py), the runtime (cupy/cuda/runtime.py) and the loading of cuBLAS
(cupy/cuda/cublas.py).  Any other name of NumPy's is CuPy's here: a function called with a
device array runs on it; one called without (``zeros``, ``arange``) makes a new device array.
"""

import functools

import numpy as np

from cupy import _array, cuda
from cupy._array import ndarray
from cupy._kernel import ElementwiseKernel

__all__ = ["ElementwiseKernel", "ascontiguousarray", "asarray", "asnumpy", "cuda", "empty",
           "get_default_memory_pool", "ndarray"]


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """``a`` on the device: a device array itself (a copy when ``copy`` or another
    ``dtype`` asks for one), anything else copied from the host."""
    if not isinstance(a, ndarray):
        return _array.from_host(a, dtype)
    if copy or (dtype is not None and np.dtype(dtype) != a.dtype):
        return np.astype(a, a.dtype if dtype is None else dtype, copy=True)
    return a


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host copy of ``a``."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order)


def get_default_memory_pool() -> cuda.MemoryPool:
    """The pool arrays are allocated from outside ``cupy.cuda.using_allocator``."""
    return cuda.memory._default_pool


def ascontiguousarray(a, dtype=None):
    """``a`` itself where it is C-contiguous in ``dtype``, else a C-contiguous device copy
    (NumPy's own does not hand the call to the array)."""
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    copy = empty(a.shape, a.dtype if dtype is None else dtype)
    copy[...] = a
    return copy


def _on_device(function):
    """NumPy's ``function`` as CuPy's: given a device array, NumPy hands the call to it;
    given none, its result is a new device array, made again in each replay where it was
    made during a capture."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        if _array.device_arrays((args, kwargs)):
            return function(*args, **kwargs)
        _array.unwrap((args, kwargs))  # a NumPy array is refused, as CuPy refuses one
        result = function(*args, **kwargs)
        if not isinstance(result, np.ndarray):
            return result
        array = _array.new(result)
        values = array._values.view(np.ndarray)

        def make():
            values[...] = function(*args, **kwargs)
        cuda.get_current_stream()._launch(make)
        return array
    return call


def __getattr__(name):
    value = getattr(np, name)
    if callable(value) and not isinstance(value, (type, np.ufunc)):
        return _on_device(value)
    return value
