"""The gpu backend's CUDA-graph plumbing that can be checked without a GPU: the column-major
cuBLAS call for each row-major product a training step makes (run here by a NumPy stand-in for
cublas<S|D>gemm reading the same pointers), and the errors that send a step back to eager."""

import ctypes

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


def test_without_cublas_the_capture_error_says_where_it_looked(monkeypatch):
    monkeypatch.setattr(cublas, "LIBRARY_NAMES", ("libdnn-no-such-cublas.so",))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    with pytest.raises(CaptureError, match="cuBLAS could not be loaded .*libdnn-no-such"):
        cublas._library()


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


class FakeStream:
    """A stream whose capture CUDA refuses, as it does for an operation it cannot capture."""

    ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def begin_capture(self):
        pass

    def end_capture(self):
        raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a "
                           "previous error during capture")


class FakeCupy:
    class cuda:  # noqa: N801 (CuPy's name)
        MemoryPool = object

        @staticmethod
        def Stream(non_blocking):  # noqa: N802 (CuPy's name)
            return FakeStream()

        @staticmethod
        def get_current_stream():
            return FakeStream()


def test_a_refused_capture_becomes_a_capture_error_naming_the_refusal(monkeypatch):
    from dnn.backends import cuda_graphs

    class FakeCublas:
        def __init__(self, cupy):
            self.streams = []

        def set_stream(self, pointer):
            self.streams.append(pointer)

    monkeypatch.setattr(cuda_graphs, "Cublas", FakeCublas)
    graphs = cuda_graphs.CudaGraphs(backend=None, cupy=FakeCupy)
    ran = []
    with pytest.raises(CaptureError, match="RuntimeError: cudaErrorStreamCaptureInvalidated"):
        graphs.capture(lambda: ran.append(True))
    assert ran == [True]  # the step's Python ran once, under capture
    assert len(graphs._cublas.streams) == 2  # to the capture stream and back
