"""The gpu backend's CUDA kernels compiled by the host C compiler, so that CI can run them.

:func:`compile_kernels` turns each :class:`dnn.backends.cuda_sources.ElementwiseSource` into a C
function that loops over the thread index ``i`` and runs the kernel's body, byte for byte the
string the gpu backend hands to CuPy, with what CUDA would provide defined around it: ``T`` as
float or double, each plain parameter as the element ``i`` of its array (read-only for inputs,
as CUDA's are), each ``raw`` one as a pointer to its C-contiguous array, and ``exp``, ``log``
and ``sqrt`` type-generic from ``tgmath.h``.  The result is called as a
``cupy.ElementwiseKernel`` is: inputs then outputs, scalars and smaller arrays broadcast, ``T``
bound by the arrays' dtype.

:class:`HostCudaBackend` is the gpu backend's own Python code with NumPy standing in for CuPy
and these kernels for CuPy's: the same overrides, argument orders and scalar types that run on
a GPU, checked on the CPU.
"""

from __future__ import annotations

import ctypes
import functools
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnn.backends.base import Availability
from dnn.backends.cuda_sources import ELEMENTWISE, ElementwiseSource
from dnn.backends.gpu import GpuBackend

FLOAT_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
C_TYPES = {"int64": "int64_t", "int32": "int32_t", "float32": "float", "float64": "double"}
# As nvcc with --fmad=false: no contraction into FMA; a call to an undeclared function (a typo
# in a math function's name) is an error, not an implicit declaration.  So is a conversion
# that may change a value (an index narrowed to int, wrong past 2**31 elements, which a GPU's
# memory holds), and a float promoted to double (arithmetic in double in a float kernel, slow
# on a GPU): each must be written as a cast.
COMPILER_FLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared",
                  "-Werror=implicit-function-declaration", "-Werror=int-conversion",
                  "-Werror=incompatible-pointer-types", "-Werror=discarded-qualifiers",
                  "-Werror=conversion", "-Werror=double-promotion"]


def compiler() -> str | None:
    """The host C compiler's command, or None when there is none."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@dataclass(frozen=True)
class Param:
    """One parameter of an ElementwiseSource: ``type_name`` is ``T`` or a NumPy type name."""

    name: str
    type_name: str
    raw: bool
    output: bool

    def dtype(self, float_dtype: np.dtype) -> np.dtype:
        return float_dtype if self.type_name == "T" else np.dtype(self.type_name)

    def c_type(self) -> str:
        if self.type_name == "T":
            return "T"
        if self.type_name not in C_TYPES:
            raise ValueError(f"parameter {self.name}: type {self.type_name!r} is not one the "
                             f"harness knows ({', '.join(['T', *C_TYPES])})")
        return C_TYPES[self.type_name]


def parse_params(source: ElementwiseSource) -> list[Param]:
    """The parameters of ``source``, inputs then outputs, as CuPy reads them."""
    params = []
    for text, output in ((source.in_params, False), (source.out_params, True)):
        for declaration in filter(None, (part.strip() for part in text.split(","))):
            words = declaration.split()
            raw = words[0] == "raw"
            if len(words) != 2 + raw:
                raise ValueError(f"{source.name}: cannot read parameter {declaration!r}")
            params.append(Param(words[-1], words[-2], raw, output))
    return params


def c_function(source: ElementwiseSource) -> str:
    """``void NAME(ptrdiff_t n, void *const *args)``: the kernel's body for ``i`` in ``[0, n)``,
    its parameters read from ``args`` in declaration order."""
    lines = [f"void {source.name}(ptrdiff_t _n, void *const *_args)", "{"]
    defines = []
    for index, param in enumerate(parse_params(source)):
        qualifier = "" if param.output else "const "
        pointer = f"({qualifier}{param.c_type()} *)_args[{index}]"
        if param.raw:
            lines.append(f"    {qualifier}{param.c_type()} *const {param.name} = {pointer};")
        else:
            lines.append(f"    {qualifier}{param.c_type()} *const _p_{param.name} = {pointer};")
            defines.append(param.name)
    lines.append("    for (ptrdiff_t i = 0; i < _n; ++i) {")
    lines += [f"#define {name} (_p_{name}[i])" for name in defines]
    lines.append(f'#line 1 "{source.name}"')
    lines.append(f"        {{ {source.body}; }}")
    lines += [f"#undef {name}" for name in defines]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def c_file(sources, float_dtype) -> str:
    """A C translation unit of ``sources`` with ``T`` as ``float_dtype``."""
    head = ["#include <stddef.h>", "#include <stdint.h>", "#include <tgmath.h>",
            f"typedef {FLOAT_TYPES[np.dtype(float_dtype)]} T;", ""]
    return "\n".join(head + [c_function(source) for source in sources])


class CompileError(AssertionError):
    """The host compiler refused a kernel's source; the message holds its diagnostics."""


def build_library(sources, float_dtype, folder: Path) -> ctypes.CDLL:
    """Compile ``sources`` for ``float_dtype`` into a shared library in ``folder``."""
    stem = folder / f"cuda_kernels_{np.dtype(float_dtype)}"
    stem.with_suffix(".c").write_text(c_file(sources, float_dtype))
    library = stem.with_suffix(".so")
    result = subprocess.run([compiler(), *COMPILER_FLAGS, "-o", str(library),
                             str(stem.with_suffix(".c")), "-lm"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"the host compiler refused the CUDA sources ({np.dtype(float_dtype)})"
                           f":\n{result.stderr}")
    return ctypes.CDLL(str(library))


class HostKernel:
    """One kernel, called as its ``cupy.ElementwiseKernel`` would be.

    ``calls`` counts the calls; ``outputs`` holds the output arrays of the latest one by
    parameter name (the caller's own arrays), so that a test can check an output the caller
    reduces or drops, such as a row kernel's per-row values."""

    def __init__(self, source: ElementwiseSource, libraries: dict):
        self.source = source
        self.params = parse_params(source)
        self.functions = {dtype: getattr(library, source.name)
                          for dtype, library in libraries.items()}
        self.calls = 0
        self.outputs = {}

    def _float_dtype(self, args) -> np.dtype:
        """``T``: the dtype of the first array passed for a ``T`` parameter."""
        for arg, param in zip(args, self.params):
            if param.type_name == "T" and isinstance(arg, np.ndarray):
                return arg.dtype
        raise TypeError(f"{self.source.name}: no array binds T")

    def __call__(self, *args) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.source.name} takes {len(self.params)} arguments, "
                            f"not {len(args)}")
        float_dtype = self._float_dtype(args)
        if float_dtype not in self.functions:
            raise TypeError(f"{self.source.name}: T cannot be {float_dtype}")
        shape = np.broadcast_shapes(*(np.shape(arg) for arg, param in zip(args, self.params)
                                      if not param.raw))
        arrays = [self._argument(arg, param, param.dtype(float_dtype), shape)
                  for arg, param in zip(args, self.params)]
        pointers = (ctypes.c_void_p * len(arrays))(*(array.ctypes.data for array in arrays))
        self.functions[float_dtype](ctypes.c_ssize_t(math.prod(shape)), pointers)
        self.calls += 1
        self.outputs = {param.name: array for param, array in zip(self.params, arrays)
                        if param.output}

    def _argument(self, arg, param: Param, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """``arg`` as the C function reads it: the caller's own array where CUDA would write
        or alias it, else a C-contiguous broadcast copy."""
        what = f"{self.source.name} argument {param.name}"
        if isinstance(arg, np.ndarray) and arg.dtype != dtype:
            raise TypeError(f"{what} is {arg.dtype}, not {dtype}")
        if param.raw or param.output:
            if not isinstance(arg, np.ndarray) or not arg.flags.c_contiguous:
                raise TypeError(f"{what} must be a C-contiguous array")
            if param.output and not arg.flags.writeable:
                raise ValueError(f"{what} must be writable")
            if param.output and not param.raw and arg.shape != shape:
                raise ValueError(f"{what} must have the shape {shape}, not {arg.shape}")
            return arg
        if isinstance(arg, np.ndarray) and arg.shape == shape and arg.flags.c_contiguous:
            return arg  # shared with an output, as on the GPU
        return np.ascontiguousarray(np.broadcast_to(np.asarray(arg, dtype), shape))


def host_kernels(sources, folder: Path) -> dict:
    """``{name: HostKernel}`` for ``sources``, compiled for float32 and for float64 into
    ``folder``."""
    libraries = {np.dtype(dtype): build_library(sources, dtype, folder)
                 for dtype in FLOAT_TYPES}
    return {source.name: HostKernel(source, libraries) for source in sources}


@functools.cache
def compile_kernels(sources: tuple = tuple(ELEMENTWISE.values())) -> dict:
    """:func:`host_kernels` of ``sources`` (every gpu kernel by default), compiled once per
    process in a temporary folder that lives as long as the process."""
    return host_kernels(sources, Path(tempfile.mkdtemp(prefix="dnn-cuda-harness-")))


class _HostStream:
    def synchronize(self) -> None:
        pass


class HostCupy:
    """The part of CuPy's API the gpu backend uses, served by NumPy on the host."""

    ndarray = np.ndarray
    cuda = type("cuda", (), {"get_current_stream": staticmethod(_HostStream)})

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(host_array, dtype=None) -> np.ndarray:
        return np.array(host_array, dtype=dtype, copy=True)  # host to device copies

    @staticmethod
    def asnumpy(array) -> np.ndarray:
        return np.array(array, copy=True)


class HostCudaBackend(GpuBackend):
    """The gpu backend with NumPy for CuPy and its CUDA kernels compiled for the host:
    ``kernels`` ({name: HostKernel}), every gpu kernel by default."""

    name = "host-cuda"

    def __init__(self, kernels: dict | None = None):
        self._use(HostCupy(), np, compile_kernels() if kernels is None else kernels)

    def captures_steps(self) -> bool:
        return False  # CUDA graphs need a GPU; dnn/replay.py replays on the CPU

    def is_own_array(self, array) -> bool:
        # NumPy reduces to scalars where CuPy gives 0-d arrays: both are this backend's.
        return isinstance(array, (np.ndarray, np.generic))

    @classmethod
    def is_available(cls) -> Availability:
        if compiler() is None:
            return Availability(False, "no host C compiler (cc, gcc or clang) to compile the "
                                       "CUDA sources with")
        if sys.platform == "win32":
            return Availability(False, "the harness builds a Unix shared library")
        return Availability(True)
