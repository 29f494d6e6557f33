"""The gpu backend's cuBLAS plumbing that can be checked without a GPU or a compiler: the
column-major cuBLAS call for each row-major product a training step makes (run here by a NumPy
stand-in for cublas<S|D>gemm reading the same pointers), where cuBLAS is looked for, and the
switch that turns captured steps off.  tests/test_gpu_standin.py runs the rest (loading,
streams, captures) against a stub cuBLAS."""

import ctypes
import os
from types import SimpleNamespace

import numpy as np
import pytest

from dnn.backends import cublas
from dnn.backends.cublas import OP_N, gemm_call
from dnn.backends.gpu import GpuBackend
from dnn.errors import CaptureError


def column_major(pointer: int, rows: int, columns: int, leading: int, dtype) -> np.ndarray:
    """The ``(rows, columns)`` column-major matrix cuBLAS reads at ``pointer``."""
    itemsize = np.dtype(dtype).itemsize
    count = leading * (columns - 1) + rows
    memory = (ctypes.c_char * (count * itemsize)).from_address(pointer)
    flat = np.frombuffer(memory, dtype=dtype, count=count)
    return np.lib.stride_tricks.as_strided(flat, (rows, columns), (itemsize, leading * itemsize))


def gemm_as_cublas_does(call, dtype) -> None:
    """``C = op(A) @ op(B)`` on column-major matrices, as cublas<S|D>gemm computes it."""
    a_shape = (call.m, call.k) if call.transa == OP_N else (call.k, call.m)
    b_shape = (call.k, call.n) if call.transb == OP_N else (call.n, call.k)
    assert call.lda >= a_shape[0] and call.ldb >= b_shape[0] and call.ldc >= call.m
    a = column_major(call.a, *a_shape, call.lda, dtype)
    b = column_major(call.b, *b_shape, call.ldb, dtype)
    c = column_major(call.c, call.m, call.n, call.ldc, dtype)
    c[...] = (a if call.transa == OP_N else a.T) @ (b if call.transb == OP_N else b.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("product", ["x @ kernel", "x.T @ grad", "grad @ kernel.T"])
@pytest.mark.parametrize("rows, inputs, units", [(128, 784, 512), (96, 7, 1), (1, 5, 3)])
def test_each_product_of_a_step_as_a_column_major_call(product, rows, inputs, units, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, inputs)).astype(dtype)
    kernel = rng.normal(size=(inputs, units)).astype(dtype)
    grad = rng.normal(size=(rows, units)).astype(dtype)
    a, b = {"x @ kernel": (x, kernel), "x.T @ grad": (x.T, grad),
            "grad @ kernel.T": (grad, kernel.T)}[product]
    out = np.full((a.shape[0], b.shape[1]), np.nan, dtype)
    gemm_as_cublas_does(gemm_call(a, b, out, pointer=lambda array: array.ctypes.data), dtype)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-10)


def test_a_product_it_cannot_express_is_refused():
    a = np.ones((4, 6))[:, ::2]  # neither C- nor F-contiguous
    with pytest.raises(ValueError, match="C- or F-contiguous"):
        gemm_call(a, np.ones((3, 2)), np.empty((4, 2)), pointer=lambda array: 0)
    with pytest.raises(ValueError, match=r"cannot write \(4, 3\) @ \(3, 2\) into \(4, 3\)"):
        gemm_call(np.ones((4, 3)), np.ones((3, 2)), np.empty((4, 3)), pointer=lambda array: 0)


class CupyOfMajor:
    """As much of CuPy as finding cuBLAS reads: CUDA runtime ``major``.0."""

    def __init__(self, major: int):
        runtime = SimpleNamespace(runtimeGetVersion=lambda: major * 1000)
        self.cuda = SimpleNamespace(runtime=runtime, cublas=None)


def test_without_cublas_of_its_major_the_capture_error_names_every_place_it_looked(
        monkeypatch, tmp_path):
    """cuBLAS 99 is nowhere: every place is named, a cuBLAS of another major (one mapped in
    this process by an earlier test, say) refused by its name."""
    site, toolkit = tmp_path / "site", tmp_path / "toolkit"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    with pytest.raises(CaptureError) as refused:
        cublas._library(CupyOfMajor(99))
    message = str(refused.value)
    assert message.startswith("cuBLAS 99 (for CuPy's CUDA runtime 99000) could not be loaded; "
                              "looked at: ")
    for place in ("mapped in this process",
                  f"wheel: {site / 'nvidia' / 'cu99' / 'lib' / 'libcublas.so.99'}: no such file",
                  f"$CUDA_PATH: {toolkit / 'lib64' / 'libcublas.so.99'}: no such file",
                  f"$CUDA_PATH: {toolkit / 'lib' / 'libcublas.so.99'}: no such file",
                  "$CUDA_HOME: not set", "system loader: libcublas.so.99: "):
        assert place in message
    assert "refused, cuBLAS 13, not 99" in message or \
        "mapped in this process: no libcublas.so.*" in message


class CudaWithoutCublas(SimpleNamespace):
    """CuPy's ``cupy.cuda`` where ``cuda.pathfinder`` found no cuBLAS: its first access of
    ``cupy.cuda.cublas`` raises, as CuPy 14's loader does."""

    @property
    def cublas(self):
        raise ImportError("cuda.pathfinder found no libcublas")


def test_where_cupy_itself_has_no_cublas_the_error_says_so(monkeypatch, tmp_path):
    """No cuBLAS anywhere, CuPy's own loader failing first: a CaptureError (which sends the
    step back to eager), naming CuPy's failure among the places looked at."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    cupy = SimpleNamespace(cuda=CudaWithoutCublas(
        runtime=SimpleNamespace(runtimeGetVersion=lambda: 98000)))
    with pytest.raises(CaptureError) as refused:
        cublas._library(cupy)
    message = str(refused.value)
    assert message.startswith("cuBLAS 98 (for CuPy's CUDA runtime 98000) could not be loaded")
    assert "CuPy's cuBLAS: ImportError: cuda.pathfinder found no libcublas" in message
    assert "$CUDA_PATH: not set" in message and "system loader: libcublas.so.98: " in message


def test_a_file_named_for_another_major_is_refused_unopened():
    assert cublas._load("/nowhere/libcublas.so.12", 13, windows=False) == (
        None, "/nowhere/libcublas.so.12: refused, cuBLAS 12, not 13")
    assert cublas._load("/nowhere/libcublasLt.so.13", 13, windows=False) == (
        None, "/nowhere/libcublasLt.so.13: refused, not a cuBLAS file")


@pytest.mark.parametrize("major, windows, folder, name", [
    (13, False, "nvidia/cu13/lib", "libcublas.so.13"),
    (12, False, "nvidia/cublas/lib", "libcublas.so.12"),
    (13, True, "nvidia/cu13/bin/x86_64", "cublas64_13.dll"),
    (12, True, "nvidia/cublas/bin", "cublas64_12.dll")])
def test_the_nvidia_cublas_wheel_layouts(major, windows, folder, name):
    assert cublas.wheel_folder(major, windows) == os.path.join(*folder.split("/"))
    assert cublas.file_name(major, windows) == name
    assert cublas._major_of(f"/x/{name.upper() if windows else name}", windows) == major


def test_a_cublas_file_is_known_by_its_major_whatever_its_full_version():
    assert cublas._major_of("toolkit/lib64/libcublas.so.13.1.0.3", False) == 13
    assert cublas._major_of("toolkit/lib64/libcublasLt.so.13", False) is None


@pytest.mark.parametrize("setting, captures", [("0", False), ("1", True), (None, True)])
def test_dnn_gpu_graphs_turns_captured_steps_off(monkeypatch, setting, captures):
    if setting is None:
        monkeypatch.delenv("DNN_GPU_GRAPHS", raising=False)
    else:
        monkeypatch.setenv("DNN_GPU_GRAPHS", setting)
    backend = GpuBackend.__new__(GpuBackend)  # no CuPy here: only the switch is read
    assert backend.captures_steps() is captures
    if not captures:
        assert backend.capture(lambda: None) is None
