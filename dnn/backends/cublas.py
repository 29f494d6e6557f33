"""cuBLAS through ctypes, for the matrix products of a training step captured in a CUDA graph.

CuPy refuses cuBLAS calls while a stream is capturing (``NotImplementedError``), through its
own low-level binding too; cuBLAS itself captures them when it has a handle of its own, a fixed
workspace it was told about, and the capturing stream (measured on an H200 with CuPy 14.2: the
same bits as ``cupy.matmul``, 9.3 µs per 128x784x512 product inside a graph).

Which library: the one CuPy itself uses.  CuPy 14 loads cuBLAS on first use through
``cuda.pathfinder`` (``cupy_backends/cuda/libs/__init__.py``), which looks in the
``nvidia-cublas`` wheels (``nvidia/cu13/lib`` for CUDA 13, ``nvidia/cublas/lib`` for 12), conda,
the system and ``CUDA_PATH``, and caches what it loaded; :func:`_library` asks CuPy to load it,
asks ``cuda.pathfinder`` which file that was, and only then looks itself (the files mapped in
this process, the wheels, ``CUDA_PATH``).  It never loads a cuBLAS of another major version
than CuPy's CUDA runtime.

:func:`gemm_call` works out the column-major call for a row-major product and is checked on the
CPU (tests/test_cublas.py); :class:`Cublas` loads the library and makes the call.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from dnn.errors import CaptureError

OP_N, OP_T = 0, 1  # cublasOperation_t
MAJOR_VERSION = 0  # libraryPropertyType, for cublasGetProperty
WORKSPACE_BYTES = 32 << 20  # cuBLAS asks for at most 32 MiB on Hopper


@dataclass(frozen=True)
class GemmCall:
    """The arguments of ``cublas<S|D>gemm_v2`` after the handle, alpha and beta."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    a: int  # device pointers
    lda: int
    b: int
    ldb: int
    c: int
    ldc: int


def _operand(array) -> tuple[int, int]:
    """``(operation, leading dimension)`` under which cuBLAS, reading ``array``'s memory as a
    column-major matrix, sees ``array.T``."""
    if array.flags.c_contiguous:  # its memory is array.T, column-major
        return OP_N, max(1, array.shape[1])
    if array.flags.f_contiguous:  # its memory is array itself, column-major
        return OP_T, max(1, array.shape[0])
    raise ValueError("a product's operands must be C- or F-contiguous (or transposes of them)")


def gemm_call(a, b, out, pointer=lambda array: array.data.ptr) -> GemmCall:
    """The call that makes ``out = a @ b`` for row-major ``a (m, k)``, ``b (k, n)`` and
    C-contiguous ``out (m, n)``: cuBLAS is column-major, and the memory of ``out`` read that
    way is ``out.T = b.T @ a.T``."""
    (m, k), (k_b, n) = a.shape, b.shape
    if k != k_b or out.shape != (m, n) or not out.flags.c_contiguous:
        raise ValueError(f"cannot write {a.shape} @ {b.shape} into {out.shape}")
    op_b, ld_b = _operand(b)
    op_a, ld_a = _operand(a)
    return GemmCall(op_b, op_a, n, m, k, pointer(b), ld_b, pointer(a), ld_a, pointer(out),
                    max(1, n))


# -- finding the library --------------------------------------------------------------------------
def file_name(major: int, windows: bool = False) -> str:
    """The file (and soname) of cuBLAS ``major``: ``libcublas.so.13``, ``cublas64_13.dll``."""
    return f"cublas64_{major}.dll" if windows else f"libcublas.so.{major}"


def wheel_folder(major: int, windows: bool = False) -> str:
    """Where the ``nvidia-cublas`` wheel of ``major`` puts the library, under site-packages:
    one folder for the whole toolkit from CUDA 13 on, one per library before."""
    if major <= 12:
        return os.path.join("nvidia", "cublas", "bin" if windows else "lib")
    return os.path.join("nvidia", f"cu{major}", *(("bin", "x86_64") if windows else ("lib",)))


def _major_of(path: str, windows: bool) -> int | None:
    """The major version a cuBLAS file's name says (``libcublas.so.13.1.0.3`` too), or None
    for another file (``libcublasLt.so.13``)."""
    pattern = r"cublas64_(\d+)\.dll" if windows else r"libcublas\.so\.(\d+)(\..*)?"
    found = re.fullmatch(pattern, os.path.basename(path), re.IGNORECASE if windows else 0)
    return int(found.group(1)) if found else None


def _loaded_by_cupy(cupy):
    """``(where, path)`` of the cuBLAS CuPy loaded: CuPy loads it through ``cuda.pathfinder``
    on first use, which then names the file it loaded (cached, so asking loads nothing more);
    ``path`` is None, and ``where`` says why, when there is none to take."""
    try:
        cupy.cuda.cublas  # noqa: B018 (CuPy's own loader runs on this first access)
    except Exception as error:  # ImportError when cuda.pathfinder finds no cuBLAS
        yield f"CuPy's cuBLAS: {type(error).__name__}: {error}", None
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError:
        yield "cuda.pathfinder: not installed", None
        return
    try:
        yield "cuda.pathfinder", load_nvidia_dynamic_lib("cublas").abs_path
    except Exception as error:  # DynamicLibNotFoundError, or a file it could not load
        yield f"cuda.pathfinder: {type(error).__name__}: {error}", None


def _mapped(windows: bool):
    """``(where, path)`` of each cuBLAS file mapped in this process (Linux), as whatever
    loaded it (CuPy before 14, through the dynamic loader) left it."""
    if windows or not os.path.exists("/proc/self/maps"):
        return
    with open("/proc/self/maps") as maps:
        fields = (line.split(maxsplit=5) for line in maps)
        paths = dict.fromkeys(field[5].strip() for field in fields if len(field) == 6)
    found = [path for path in paths if _major_of(path, windows) is not None]
    if not found:
        yield "mapped in this process: no libcublas.so.*", None
    for path in found:
        yield "mapped in this process", path


def _files(major: int, windows: bool):
    """``(where, path)`` of each place a cuBLAS ``major`` file may be: the wheel's folder under
    each folder of ``sys.path``, the toolkit under ``$CUDA_PATH`` and ``$CUDA_HOME``, then the
    bare name for the system's loader."""
    name = file_name(major, windows)
    folders = dict.fromkeys(os.path.abspath(entry or os.curdir) for entry in sys.path)
    for folder in filter(os.path.isdir, folders):
        yield "wheel", os.path.join(folder, wheel_folder(major, windows), name)
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        root = os.environ.get(variable)
        if not root:
            yield f"${variable}: not set", None
            continue
        for sub in (("bin", "x64"), ("bin",)) if windows else (("lib64",), ("lib",)):
            yield f"${variable}", os.path.join(root, *sub, name)
    yield "system loader", name


def _load(path: str, major: int, windows: bool) -> tuple[ctypes.CDLL | None, str]:
    """``(library, "")`` when ``path`` is cuBLAS ``major`` by its name and by what it reports
    once loaded, else ``(None, why not)``; a file named for another major is never loaded."""
    named = _major_of(path, windows)
    if named is None:
        return None, f"{path}: refused, not a cuBLAS file"
    if named != major:
        return None, f"{path}: refused, cuBLAS {named}, not {major}"
    if os.path.isabs(path) and not os.path.isfile(path):
        return None, f"{path}: no such file"
    try:
        library = ctypes.CDLL(path)
    except OSError as error:
        return None, f"{path}: {error}"
    reported = ctypes.c_int(-1)
    try:
        status = library.cublasGetProperty(MAJOR_VERSION, ctypes.byref(reported))
    except AttributeError:
        return None, f"{path}: not cuBLAS (no cublasGetProperty)"
    if status != 0 or reported.value != major:
        return None, f"{path}: refused, it reports cuBLAS {reported.value}, not {major}"
    return library, ""


def _library(cupy) -> ctypes.CDLL:
    """The cuBLAS CuPy uses, of the major version of CuPy's CUDA runtime
    (``cupy.cuda.runtime.runtimeGetVersion()``, 13000 for 13.0): the file CuPy loaded, else
    the ``nvidia-cublas`` wheel's, the toolkit's under ``$CUDA_PATH``/``$CUDA_HOME``, the
    system's.  Raises :class:`CaptureError` naming every place it looked."""
    version = cupy.cuda.runtime.runtimeGetVersion()
    major, windows = version // 1000, sys.platform == "win32"
    looked = []
    for where, path in itertools.chain(_loaded_by_cupy(cupy), _mapped(windows),
                                       _files(major, windows)):
        if path is None:
            looked.append(where)
            continue
        library, why = _load(path, major, windows)
        if library is not None:
            return library
        looked.append(f"{where}: {why}")
    raise CaptureError(f"cuBLAS {major} (for CuPy's CUDA runtime {version}) could not be "
                       f"loaded; looked at: {'; '.join(looked)}")


class Cublas:
    """A cuBLAS handle of our own, with a fixed workspace, for products in captured steps."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._library = _library(cupy)
        self._handle = ctypes.c_void_p()
        self._check("cublasCreate_v2", ctypes.byref(self._handle))
        self._workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._set_workspace()
        self._gemm = {np.dtype(np.float32): ("cublasSgemm_v2", ctypes.c_float),
                      np.dtype(np.float64): ("cublasDgemm_v2", ctypes.c_double)}

    def _check(self, function: str, *args) -> None:
        status = getattr(self._library, function)(*args)
        if status != 0:
            raise CaptureError(f"{function} returned cuBLAS status {status}")

    def _set_workspace(self) -> None:
        self._check("cublasSetWorkspace_v2", self._handle,
                    ctypes.c_void_p(self._workspace.data.ptr), ctypes.c_size_t(WORKSPACE_BYTES))

    def set_stream(self, stream_pointer: int) -> None:
        """Make the products on stream ``stream_pointer``, in our workspace:
        ``cublasSetStream`` puts the handle back on cuBLAS's default workspace pool, whose
        memory a graph does not own, so the workspace is set again after it (as PyTorch
        does)."""
        self._check("cublasSetStream_v2", self._handle, ctypes.c_void_p(stream_pointer))
        self._set_workspace()

    def gemm(self, a, b, out) -> None:
        """``out = a @ b`` for ``a (m, k)``, ``b (k, n)``, ``out (m, n)`` (see
        :func:`gemm_call`), float32 or float64, on the set stream.  What cuBLAS cannot read
        as it is (an operand neither C- nor F-contiguous, or of another dtype than ``out``)
        is copied first; an ``out`` that is not C-contiguous is written through a
        temporary."""
        dtype = np.dtype(out.dtype)
        if dtype not in self._gemm:
            raise TypeError(f"cuBLAS products here are float32 or float64, not {dtype}")
        function, scalar = self._gemm[dtype]
        a, b = self._readable(a, dtype), self._readable(b, dtype)
        target = out if out.flags.c_contiguous else self._cupy.empty(out.shape, dtype=dtype)
        call = gemm_call(a, b, target)
        one, zero = scalar(1), scalar(0)
        self._check(function, self._handle, call.transa, call.transb, call.m, call.n, call.k,
                    ctypes.byref(one), ctypes.c_void_p(call.a), call.lda,
                    ctypes.c_void_p(call.b), call.ldb, ctypes.byref(zero),
                    ctypes.c_void_p(call.c), call.ldc)
        if target is not out:
            out[...] = target

    def _readable(self, operand, dtype):
        """``operand`` as cuBLAS can read it: itself, or a C-contiguous copy in ``dtype``."""
        if operand.dtype == dtype and (operand.flags.c_contiguous or operand.flags.f_contiguous):
            return operand
        return self._cupy.ascontiguousarray(operand, dtype=dtype)
