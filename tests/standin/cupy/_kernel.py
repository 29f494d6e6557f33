"""``cupy.ElementwiseKernel``, compiled by the host C compiler (tests/cuda_harness.py) and
launched on the current stream.

A kernel is compiled on the first call of any kernel, together with every other kernel made by
then (the gpu backend makes all of its own at once, and the harness compiles one set of
sources once per process).  Its arguments are all given, inputs then outputs, as the gpu
backend gives them; a NumPy array among them is refused, as CuPy refuses one.  CuPy's
compiler options change nothing here: the harness compiles without contracting multiply-adds,
as ``--fmad=false`` asks of nvcc.
"""

from __future__ import annotations

import functools

import numpy as np

from cupy import _array
from cupy.cuda import stream as stream_module
from dnn.backends.cuda_sources import ElementwiseSource
from tests.cuda_harness import compile_kernels

_uncompiled: list = []


class ElementwiseKernel:
    """``body`` (``operation``) run for each element of its arguments."""

    def __init__(self, in_params, out_params, operation, name="kernel", *, no_return=False,
                 **compile_options):
        self._source = ElementwiseSource(name, in_params, out_params, operation)
        self._outputs = len([part for part in out_params.split(",") if part.strip()])
        self._no_return = no_return
        self._host_kernel = None
        _uncompiled.append(self)

    def __call__(self, *args):
        kernel = self._compiled()
        values = [_array.unwrap(arg) for arg in args]
        plain = [value.view(np.ndarray) if isinstance(value, np.ndarray) else value
                 for value in values]
        stream_module.get_current_stream()._launch(functools.partial(kernel, *plain))
        if self._no_return:
            return None
        outputs = args[len(args) - self._outputs:]
        return outputs[0] if len(outputs) == 1 else outputs

    def _compiled(self):
        if self._host_kernel is None:
            sources = tuple(dict.fromkeys(kernel._source for kernel in _uncompiled))
            host_kernels = compile_kernels(sources)
            for kernel in _uncompiled:
                kernel._host_kernel = host_kernels[kernel._source.name]
            _uncompiled.clear()
        return self._host_kernel
