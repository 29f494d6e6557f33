"""cuBLAS through ctypes, for the matrix products of a training step captured in a CUDA graph.

CuPy refuses cuBLAS calls while a stream is capturing (``NotImplementedError``), through its
own low-level binding too; cuBLAS itself captures them when it has a handle of its own, a fixed
workspace it was told about, and the capturing stream (measured on an H200 with CuPy 14.2: the
same bits as ``cupy.matmul``, 9.3 µs per 128x784x512 product inside a graph).

:func:`gemm_call` works out the column-major call for a row-major product and is checked on the
CPU (tests/test_cublas.py); :class:`Cublas` loads the library and makes the call.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from dnn.errors import CaptureError

OP_N, OP_T = 0, 1  # cublasOperation_t
WORKSPACE_BYTES = 32 << 20  # cuBLAS asks for at most 32 MiB on Hopper
LIBRARY_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so", "cublas64_13.dll",
                 "cublas64_12.dll")


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


def _library() -> ctypes.CDLL:
    """libcublas: already loaded by CuPy, from the nvidia-cublas wheel, or from CUDA_PATH."""
    folders = []
    spec = importlib.util.find_spec("nvidia.cublas") if importlib.util.find_spec(
        "nvidia") else None
    if spec and spec.submodule_search_locations:
        folders += [os.path.join(path, "lib") for path in spec.submodule_search_locations]
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(variable):
            folders += [os.path.join(os.environ[variable], "lib64")]
    candidates = list(LIBRARY_NAMES) + [path for folder in folders for path in
                                        sorted(glob.glob(os.path.join(folder, "libcublas.so*")))]
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    raise CaptureError("cuBLAS could not be loaded (looked for "
                       f"{', '.join(LIBRARY_NAMES)} and in {folders or 'no wheel or CUDA_PATH'})")


class Cublas:
    """A cuBLAS handle of our own, with a fixed workspace, for products in captured steps."""

    def __init__(self, cupy):
        self._library = _library()
        self._handle = ctypes.c_void_p()
        self._check("cublasCreate_v2", ctypes.byref(self._handle))
        self._workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._check("cublasSetWorkspace_v2", self._handle,
                    ctypes.c_void_p(self._workspace.data.ptr), ctypes.c_size_t(WORKSPACE_BYTES))
        self._gemm = {np.dtype(np.float32): ("cublasSgemm_v2", ctypes.c_float),
                      np.dtype(np.float64): ("cublasDgemm_v2", ctypes.c_double)}

    def _check(self, function: str, *args) -> None:
        status = getattr(self._library, function)(*args)
        if status != 0:
            raise CaptureError(f"{function} returned cuBLAS status {status}")

    def set_stream(self, stream_pointer: int) -> None:
        self._check("cublasSetStream_v2", self._handle, ctypes.c_void_p(stream_pointer))

    def gemm(self, a, b, out) -> None:
        """``out = a @ b`` (see :func:`gemm_call`), float32 or float64, on the set stream."""
        function, scalar = self._gemm[np.dtype(out.dtype)]
        call = gemm_call(a, b, out)
        one, zero = scalar(1), scalar(0)
        self._check(function, self._handle, call.transa, call.transb, call.m, call.n, call.k,
                    ctypes.byref(one), ctypes.c_void_p(call.a), call.lda,
                    ctypes.c_void_p(call.b), call.ldb, ctypes.byref(zero),
                    ctypes.c_void_p(call.c), call.ldc)
