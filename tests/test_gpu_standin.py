"""The whole gpu path on the CPU: the real GpuBackend, CudaGraphs and Cublas code run on the
stand-in of CuPy 14 (tests/standin/cupy) and a stub cuBLAS (tests/standin/stub_cublas.c),
laid out as the nvidia-cublas wheel lays cuBLAS out.  Where cuBLAS is found, its stream and
workspace, the capture rules (host reads hidden in masks and ``nonzero``, host numbers frozen
as fills), the per-stream memory pool, a captured graph's memory (given to another array or
back to the device, its next launch faults), and training (in process and through ``dnn train
--backend gpu``, steps with ``sign`` and ``clip`` included where array-api-compat is
installed; the default pool trimmed or run out of memory between epochs, a fit after an
interrupted one), captured and replayed, against the cpu backend and the eager step."""

import contextlib
import gc
import importlib.util
import json
import os
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

import dnn

from dnn.backends.cublas import Cublas
from dnn.backends.gpu import GpuBackend, graphs_switched_on
from dnn.callbacks import Callback
from dnn.errors import UsageError
from dnn.layers import Activation, Dense, Input
from dnn.optimizers import SGD
from dnn.replay import record_into
from dnn.trainers.step import GraphFallbackWarning
from dnn.testing import LowerTheRateEachBatch
from dnn.utils import to_categorical
from tests import test_merging
from tests.test_cli import TINY_DATASET
from tests.test_replay import (FreezesThenThaws, ReadsTheGradientOnTheHost,
                               SetsASettingFromEpoch, train)
from tests.cuda_harness import HostCudaBackend
from tests.standin import stub_cublas

STANDIN = Path(__file__).resolve().parent / "standin"
COMPAT_SITE = STANDIN / "array_api_compat_site"  # a stand-in array-api-compat, see fixture
ROOT = STANDIN.parent.parent
WHEEL_13 = Path("nvidia", "cu13", "lib", "libcublas.so.13")
WHEEL_12 = Path("nvidia", "cublas", "lib", "libcublas.so.12")
WARM_UPS = 2  # of the small network: from an empty pool, then one that takes no new block

pytestmark = [
    pytest.mark.skipif(not HostCudaBackend.is_available(),
                       reason=f"stand-in: {HostCudaBackend.is_available().reason}"),
    pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built, "
                                                       "and looked for, as on Linux")]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """A site-packages folder holding the stub as cuBLAS 13, where its wheel puts it."""
    folder = tmp_path_factory.mktemp("site-cublas-13")
    stub_cublas.build(folder, 13)
    return folder


@pytest.fixture(scope="session")
def site_12(tmp_path_factory) -> Path:
    """A site-packages folder holding the stub as cuBLAS 12, where its wheel puts it."""
    folder = tmp_path_factory.mktemp("site-cublas-12")
    stub_cublas.build(folder, 12)
    return folder


def fake_pathfinder(folder: Path, names: Path | None) -> Path:
    """A ``cuda.pathfinder`` in ``folder`` (to put on the path before any real one, which a
    regular ``cuda`` package there hides) whose ``load_nvidia_dynamic_lib`` names the file
    ``names`` (without loading it, which the real one does); with ``names`` None, one that is
    not installed."""
    package = folder / "cuda" / "pathfinder"
    package.mkdir(parents=True)
    (folder / "cuda" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(
        "raise ImportError(\"No module named 'cuda.pathfinder'\")\n" if names is None else
        "from types import SimpleNamespace\n\n\n"
        "class DynamicLibNotFoundError(RuntimeError):\n    pass\n\n\n"
        "def load_nvidia_dynamic_lib(name):\n"
        f"    return SimpleNamespace(abs_path={str(names)!r})\n")
    return folder


def _cupy_modules() -> list[str]:
    return [name for name in sys.modules if name == "cupy" or name.startswith("cupy.")]


@pytest.fixture
def cupy(site, monkeypatch, tmp_path):
    """The stand-in, imported afresh, whose ``cuda.pathfinder`` names the stub cuBLAS 13 (so
    that no cuBLAS of this machine's is taken for it); a CuPy imported before comes back
    after."""
    source = fake_pathfinder(tmp_path / "pathfinder", names=site / WHEEL_13)
    spec = importlib.util.spec_from_file_location(
        "cuda.pathfinder", source / "cuda" / "pathfinder" / "__init__.py")
    pathfinder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pathfinder)
    monkeypatch.setitem(sys.modules, "cuda.pathfinder", pathfinder)
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in _cupy_modules():
        monkeypatch.delitem(sys.modules, name)
    import cupy

    yield cupy
    for name in _cupy_modules():
        del sys.modules[name]
    record_into(None)  # a capture a failed test left open records nothing more


# -- where cuBLAS is found, each in a process of its own (nothing loaded before) --------------
FIND_CUBLAS = """
import cupy
from dnn.backends.cublas import _library
from dnn.errors import CaptureError

cupy.cuda.runtime.runtimeGetVersion = lambda: {version}
try:
    print("loaded", _library(cupy)._name)
except CaptureError as error:
    print("error", error)
print("mapped", *sorted({{line.split()[-1] for line in open("/proc/self/maps")
                         if "libcublas" in line}}))
"""


def find_cublas(version: int, *folders: Path, cuda_path: Path | None = None):
    """``(outcome, mapped)`` of looking for cuBLAS in a new process on the stand-in of CUDA
    runtime ``version``, with ``folders`` on its path: ``"loaded PATH"`` or ``"error
    MESSAGE"``, and the cuBLAS files then mapped in it."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("CUDA_PATH", "CUDA_HOME")}
    environment["PYTHONPATH"] = os.pathsep.join(map(str, [STANDIN, *folders, ROOT]))
    if cuda_path is not None:
        environment["CUDA_PATH"] = str(cuda_path)
    result = subprocess.run([sys.executable, "-c", FIND_CUBLAS.format(version=version)],
                            capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome, mapped = result.stdout.splitlines()
    return outcome, mapped.split()[1:]


def test_cublas_13_is_found_where_the_nvidia_cublas_wheel_puts_it(site, tmp_path):
    """CuPy without cuda.pathfinder (CuPy 13): the wheel is found on ``sys.path``."""
    outcome, mapped = find_cublas(13000, fake_pathfinder(tmp_path, names=None), site)
    assert outcome == f"loaded {site / WHEEL_13}"
    assert mapped == [str(site / WHEEL_13)]


def test_the_cublas_cupy_loaded_comes_before_any_wheel(site, tmp_path):
    elsewhere = stub_cublas.build(tmp_path / "conda", 13)
    pathfinder = fake_pathfinder(tmp_path / "pathfinder", names=elsewhere)
    outcome, mapped = find_cublas(13000, pathfinder, site)
    assert outcome == f"loaded {elsewhere}"
    assert mapped == [str(elsewhere)]


def test_a_cublas_of_another_major_than_cupys_runtime_is_never_loaded(site, site_12, tmp_path):
    """CuPy for CUDA 12 beside the CUDA 13 wheel (PyTorch's, say), which cuda.pathfinder
    names: the cuBLAS 12 wheel's library is taken, the 13 never even opened."""
    pathfinder = fake_pathfinder(tmp_path / "pathfinder", names=site / WHEEL_13)
    outcome, mapped = find_cublas(12000, pathfinder, site, site_12)
    assert outcome == f"loaded {site_12 / WHEEL_12}"
    assert mapped == [str(site_12 / WHEEL_12)]


def test_without_cublas_of_its_major_the_error_names_every_place_it_looked(site_12, tmp_path):
    pathfinder = fake_pathfinder(tmp_path / "pathfinder", names=site_12 / WHEEL_12)
    toolkit = tmp_path / "toolkit"
    outcome, mapped = find_cublas(13000, pathfinder, site_12, cuda_path=toolkit)
    if outcome.startswith("loaded "):
        pytest.skip(f"this machine has a cuBLAS 13 of its own: {outcome[len('loaded '):]}")
    assert outcome.startswith("error cuBLAS 13 (for CuPy's CUDA runtime 13000) could not be "
                              "loaded; looked at: ")
    places = [f"cuda.pathfinder: {site_12 / WHEEL_12}: refused, cuBLAS 12, not 13",
              "mapped in this process: no libcublas.so.*",
              *(f"wheel: {folder / WHEEL_13}: no such file"
                for folder in (STANDIN, pathfinder, site_12, ROOT)),
              f"$CUDA_PATH: {toolkit / 'lib64' / 'libcublas.so.13'}: no such file",
              f"$CUDA_PATH: {toolkit / 'lib' / 'libcublas.so.13'}: no such file",
              "$CUDA_HOME: not set", "system loader: libcublas.so.13: "]
    for place in places:
        assert place in outcome
    assert mapped == []


# -- the handle: stream, workspace, products -------------------------------------------------
def test_setting_the_stream_sets_our_workspace_again(cupy):
    """cublasSetStream puts the handle back on cuBLAS's default pool; every product must
    still run in the handle's own workspace."""
    cublas = Cublas(cupy)
    a, b = cupy.ones((4, 3), dtype=np.float32), cupy.ones((3, 2), dtype=np.float32)
    out = cupy.empty((4, 2), dtype=np.float32)
    before = len(stub_cublas.workspaces(cublas._library))
    for stream in (cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)):
        cublas.set_stream(stream.ptr)
        with stream:
            cublas.gemm(a, b, out)
    assert stub_cublas.workspaces(cublas._library)[before:] == [cublas._workspace.data.ptr] * 2
    np.testing.assert_array_equal(cupy.asnumpy(out), np.full((4, 2), 3, np.float32))


def test_operands_cublas_cannot_read_are_multiplied_as_matmul_does(cupy):
    """A custom layer's strided operand, one of another dtype, an output that is not
    C-contiguous: copies where cuBLAS needs them, the product cupy.matmul gives."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8)).astype(np.float32)
    b = rng.normal(size=(4, 6))
    cublas = Cublas(cupy)
    out = cupy.zeros((6, 5), dtype=np.float32).T  # F-contiguous (5, 6)
    cublas.gemm(cupy.asarray(a)[:, ::2], cupy.asarray(b), out)
    np.testing.assert_allclose(cupy.asnumpy(out), a[:, ::2] @ b.astype(np.float32), rtol=1e-5)


# -- what the stand-in holds to, as CuPy and CUDA do ------------------------------------------
def test_a_graph_replays_what_was_launched_on_its_stream(cupy):
    """Array operations, an elementwise kernel and a cuBLAS product, captured and replayed on
    new values; what ran on another stream meanwhile is not in the graph."""
    cublas, kernel = Cublas(cupy), cupy.ElementwiseKernel("T x", "T y", "y = y + x", "add")
    x, w = cupy.ones((2, 3), dtype=np.float64), cupy.ones((3, 2), dtype=np.float64)
    product, total, other = (cupy.zeros((2, 2)), cupy.zeros((2, 2)), cupy.zeros(()))
    stream = cupy.cuda.Stream(non_blocking=True)
    cublas.set_stream(stream.ptr)
    with stream:
        stream.begin_capture()
        cublas.gemm(x, w, product)
        kernel(product, total)
        total *= 2
        with cupy.cuda.Stream(non_blocking=True):
            other += 1
        graph = stream.end_capture()
    x[...] = 2
    total[...] = 1
    graph.launch()
    np.testing.assert_array_equal(cupy.asnumpy(total), np.full((2, 2), (1 + 3 * 2) * 2))
    assert float(other) == 1


def test_while_capturing_the_host_and_cupys_cublas_are_refused_as_cupy_refuses_them(cupy):
    runtime = cupy.cuda.runtime
    x = cupy.ones((2, 2))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="^the current stream is capturing, so D2H "
                                               "transfers are disallowed$"):
            float(x[0, 0])
        with pytest.raises(RuntimeError, match="so H2D transfers are disallowed"):
            cupy.asarray(np.ones(2))
        with pytest.raises(NotImplementedError, match="^calling cuBLAS API during stream "
                                                      "capture is currently unsupported$"):
            cupy.matmul(x, x)
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            x + np.ones((2, 2))
        with pytest.raises(runtime.CUDARuntimeError, match="^cudaErrorStreamCaptureUnsupported"):
            stream.synchronize()
        with pytest.raises(runtime.CUDARuntimeError,
                           match="^cudaErrorStreamCaptureInvalidated: operation failed due to "
                                 "a previous error during capture$"):
            stream.end_capture()
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        cupy.cuda.Stream.null.begin_capture()


def capturing(cupy):
    """A new stream, current and being captured, inside the block."""
    stream = cupy.cuda.Stream(non_blocking=True)
    stream.__enter__()
    stream.begin_capture()
    return stream


def test_while_capturing_what_reads_a_count_on_the_host_is_refused_as_cupy_refuses_it(cupy):
    """Boolean masks (getting and setting, alone or in a tuple) and the nonzero family: CuPy
    reads how many values are true before it makes the result, a D2H copy refused while
    capturing; an empty mask, whose count needs no reading, and where of three arguments, one
    kernel, are captured."""
    a = cupy.asarray(np.array([[-1.0, 2.0, np.nan], [3.0, -4.0, 0.0]], np.float32))
    row = cupy.asarray(np.array([True, False, True]))
    nothing = cupy.zeros((0, 3), dtype=np.float32)
    d2h = "^the current stream is capturing, so D2H transfers are disallowed$"
    refused = {
        "get with a mask": lambda: a[a > 0],
        "set with a mask": lambda: a.__setitem__(cupy.isnan(a), 0),
        "a mask in a tuple": lambda: a[1, row],
        "set with a mask in a tuple": lambda: a.__setitem__((slice(None), row), 1),
        "a Python bool": lambda: a[True],
        "nonzero": lambda: cupy.nonzero(a),
        "the nonzero method": lambda: a.nonzero(),
        "where of one argument": lambda: cupy.where(a > 0),
        "argwhere": lambda: cupy.argwhere(a),
        "flatnonzero": lambda: cupy.flatnonzero(a),
        "compress": lambda: cupy.compress(row, a, axis=1),
        "extract": lambda: cupy.extract(a > 0, a),
    }
    stream = capturing(cupy)
    try:
        for what, operation in refused.items():
            with pytest.raises(RuntimeError, match=d2h):
                operation()
                pytest.fail(f"{what} was captured")
        nothing[nothing > 0] = 5  # an empty mask: nothing to count
        where = cupy.where(a > 0, a, cupy.zeros_like(a))
    finally:
        graph = stream.end_capture()
        stream.__exit__()
    a[...] = cupy.ones_like(a)
    graph.launch()
    np.testing.assert_array_equal(cupy.asnumpy(where), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(cupy.asnumpy(a[a > 0]), np.ones(6, np.float32))  # eagerly


def test_a_host_number_copied_during_a_capture_is_a_fill_that_replays_its_old_value(cupy):
    """cupy.asarray of a 0-d host value is a fill kernel, captured with the value it had:
    every replay writes that value again, whatever the host number is by then; any other host
    array is still refused."""
    host = {"rate": 0.25}
    out = cupy.zeros((), dtype=np.float32)
    stream = capturing(cupy)
    try:
        rate = cupy.asarray(host["rate"], dtype=np.float32)
        out[...] = rate * 2
        counts = [cupy.asarray(3), cupy.asarray(np.float32(0)), cupy.asarray(np.array(1.5))]
        with pytest.raises(RuntimeError, match="so H2D transfers are disallowed"):
            cupy.asarray([1.0, 2.0])
    finally:
        graph = stream.end_capture()
        stream.__exit__()
    assert [(c.shape, c.dtype) for c in counts] == [((), np.int64), ((), np.float32),
                                                    ((), np.float64)]
    host["rate"] = 4.0
    rate[...] = 7  # the fill, replayed, writes the capture's value over it
    for count in counts:
        count[...] = 9
    graph.launch()
    assert float(out) == 0.5 and float(rate) == 0.25
    assert [float(count) for count in counts] == [3, 0, 1.5]


class TakesTheRateAsAHostNumber(SGD):
    """An optimizer plugin that makes its learning rate a device array from a host number (its
    config) in every step: captured as a fill of the capture's rate, which the replays keep
    while a callback lowers it after every batch."""

    def update(self, param, grad, state):
        param -= self.xp.asarray(self.get_config()["learning_rate"], dtype=param.dtype) * grad


def test_the_checked_replays_catch_a_step_that_keeps_a_stale_host_number(cupy, monkeypatch):
    with pytest.warns(GraphFallbackWarning, match="replay 2 differs from the eager step"):
        fallen_back = train(GpuBackend(), TakesTheRateAsAHostNumber(0.1),
                            callbacks=[LowerTheRateEachBatch()])
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(fallen_back, train(GpuBackend(), TakesTheRateAsAHostNumber(0.1),
                                         callbacks=[LowerTheRateEachBatch()]))


def test_the_memory_pool_keeps_free_blocks_per_stream(cupy):
    """A block freed on one stream serves that stream again, never another: a capture finds
    its temporaries only where the warm-up ran on its own stream."""
    mallocs, pool = cupy.cuda.memory.mallocs, cupy.cuda.MemoryPool()
    first, second = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    with cupy.cuda.using_allocator(pool.malloc):
        with first:
            cupy.zeros(1000)  # freed at once: a block of 8192 bytes kept for this stream
            count = len(mallocs)
            cupy.zeros(10)  # split from that block, merged back into it when freed
            cupy.zeros(1000)
            assert len(mallocs) == count
        with second:
            second.begin_capture()
            cupy.zeros(1000)
            second.end_capture()
    assert [(m.size, m.stream_ptr, m.capturing) for m in mallocs[count:]] == [
        (8192, second.ptr, True)]
    assert pool.n_free_blocks() == 2


def test_freeing_all_blocks_frees_only_whole_allocations(cupy):
    """As CuPy's _Arena.free_all: a free part of an allocation split for an array still in
    use stays in the pool, and merges back with that part once it is freed."""
    mallocs, pool = cupy.cuda.memory.mallocs, cupy.cuda.MemoryPool()
    with cupy.cuda.using_allocator(pool.malloc):
        cupy.zeros(1000)  # a whole allocation of 8192 bytes, free
        count = len(mallocs)
        kept = cupy.zeros(10)  # 512 bytes split from it; the other 7680 free
        assert pool.n_free_blocks() == 1
        pool.free_all_blocks()
        assert pool.n_free_blocks() == 1
        del kept  # merged whole again
        pool.free_all_blocks()
        assert pool.n_free_blocks() == 0
        cupy.zeros(1000)
    assert len(mallocs) == count + 1


# -- a captured graph's memory, which must stay its own while it lives -------------------------
ILLEGAL_ADDRESS = (r"^cudaErrorIllegalAddress: an illegal memory access was encountered "
                   r"\(stand-in: the \d+ bytes at 0x[0-9a-f]+ it writes ")


def capture_a_step(cupy, stream, allocator) -> tuple:
    """``(graph, out)``: a graph captured on ``stream``, its memory from ``allocator``
    (None: no pool), that adds one to ``out`` (1000 float64) and doubles it in a temporary,
    which is gone once the capture ended (its memory the graph's still)."""
    out = cupy.zeros(1000)
    with stream, cupy.cuda.using_allocator(allocator):
        stream.begin_capture()
        temporary = out + 1
        temporary *= 2
        out[...] = temporary
        graph = stream.end_capture()
    return graph, out


def test_a_graph_launched_over_a_live_array_on_its_memory_faults(cupy):
    """On a GPU the launch would overwrite that array; here that launch and every one after
    raise CUDA's illegal-address error, naming what happened.  An array that was on the
    graph's memory and is gone by the launch harms nothing."""
    pool, stream = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
    graph, out = capture_a_step(cupy, stream, pool.malloc)
    graph.launch()
    assert float(out[0]) == (2 + 1) * 2  # the capture computed (0 + 1) * 2 already
    with stream, cupy.cuda.using_allocator(pool.malloc):
        gone = cupy.zeros(10)  # 512 bytes split from the temporary's free chunk
    del gone
    graph.launch()
    with stream, cupy.cuda.using_allocator(pool.malloc):
        alive = cupy.zeros(10)  # noqa: F841 (alive at the launches)
    for _ in range(2):
        with pytest.raises(cupy.cuda.runtime.CUDARuntimeError,
                           match=ILLEGAL_ADDRESS + r"hold a live array of something else\)$"):
            graph.launch()
    assert cupy.cuda.graph.launches == 2


def test_a_graph_whose_memory_goes_back_to_the_device_faults_at_its_next_launch(cupy):
    """Trimming the pool the capture took its memory from (``free_all_blocks``), or a
    capture without a pool, whose temporary's allocation CuPy frees when the array is gone."""
    stream = cupy.cuda.Stream(non_blocking=True)
    pool = cupy.cuda.MemoryPool()
    trimmed, _ = capture_a_step(cupy, stream, pool.malloc)
    pool.free_all_blocks()
    poolless, _ = capture_a_step(cupy, stream, None)
    for graph in (trimmed, poolless):
        with pytest.raises(cupy.cuda.runtime.CUDARuntimeError,
                           match=ILLEGAL_ADDRESS + r"went back to the device\)$"):
            graph.launch()


def test_a_pool_that_runs_out_of_device_memory_frees_its_own_free_blocks_as_cupy_does(cupy):
    """CuPy's retry (SingleDeviceMemoryPool._try_malloc): the pool whose cudaMalloc failed
    frees its own free blocks and tries again, then after gc.collect(); a graph whose memory
    is in another pool keeps it, one whose memory is in that pool loses it."""
    memory, stream = cupy.cuda.memory, cupy.cuda.Stream(non_blocking=True)
    own, short = cupy.cuda.MemoryPool(), cupy.cuda.MemoryPool()
    kept, _ = capture_a_step(cupy, stream, own.malloc)
    lost, _ = capture_a_step(cupy, stream, short.malloc)
    memory.device.capacity = memory.device.allocated  # full
    with cupy.cuda.using_allocator(short.malloc):
        taken = cupy.zeros(1000)  # room made by freeing the lost graph's 8192 bytes
        with pytest.raises(memory.OutOfMemoryError,
                           match=r"^Out of memory allocating 16,384 bytes \(allocated so far: "
                                 r"8,192 bytes\)\.$"):
            cupy.zeros(2000)
    kept.launch()
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError,
                       match=ILLEGAL_ADDRESS + r"went back to the device\)$"):
        lost.launch()
    del taken  # in use until here, so that the pool had no free block to give back


def test_a_graph_whose_memory_is_left_alone_replays_and_is_held_weakly(cupy):
    """Its pool giving and freeing memory on another stream, the default pool on its stream:
    none of it the graph's; once the graph is gone, nothing holds it."""
    pool, stream = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
    graph, out = capture_a_step(cupy, stream, pool.malloc)
    with cupy.cuda.using_allocator(pool.malloc):
        cupy.zeros(1000)  # the current stream's arena: an allocation of its own, freed
    with stream:
        cupy.zeros(1000)  # the default pool's arena of the graph's stream
    pool.free_all_blocks(cupy.cuda.Stream.null)
    cupy.get_default_memory_pool().free_all_blocks()
    assert cupy.cuda.memory.mallocs[-2:] == [
        cupy.cuda.memory.Malloc(8192, 0, False), cupy.cuda.memory.Malloc(8192, stream.ptr, False)]
    for _ in range(2):
        graph.launch()
    assert float(out[0]) == ((2 + 1) * 2 + 1) * 2
    held = weakref.ref(graph)
    del graph
    gc.collect()
    assert held() is None


# -- training ------------------------------------------------------------------------------------
def assert_close_runs(ours, reference) -> None:
    """The same histories and weights to float32 rounding (the products are summed in
    another order)."""
    for key in reference[0]:
        np.testing.assert_allclose(ours[0][key], reference[0][key], rtol=1e-5)
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_fit_replayed_trains_as_the_cpu_backend_and_the_eager_step(cupy, monkeypatch,
                                                                   optimizer):
    captured = train(GpuBackend(), optimizer)
    assert cupy.cuda.graph.launches == 3 * 6 - WARM_UPS  # every full batch but the warm-ups
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    eager = train(GpuBackend(), optimizer)
    assert cupy.cuda.graph.launches == 3 * 6 - WARM_UPS
    assert_close_runs(captured, eager)
    assert_close_runs(captured, train("cpu", optimizer))


@pytest.mark.parametrize("optimizer, callbacks", [
    ("rmsprop", []),
    (lambda: SGD(0.05, momentum=0.9), [SetsASettingFromEpoch("nesterov", True)])],
    ids=["rmsprop", "nesterov-from-epoch-2"])
def test_the_checked_replays_pass_and_the_capture_allocates_nothing(cupy, optimizer, callbacks):
    """After its warm-up, the capture finds every block it asks for in its pool; so does the
    capture after a setting the graph baked in changed (Nesterov's step takes a temporary
    more), which is warmed up again first."""
    make = optimizer if callable(optimizer) else (lambda: optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        train(GpuBackend(), make(), callbacks=callbacks)
    assert cupy.cuda.graph.launches > 0
    assert [malloc for malloc in cupy.cuda.memory.mallocs if malloc.capturing] == []


@pytest.mark.parametrize("a_shape, b_shape", [((5, 1, 4), (5, 4, 1)), ((5, 3, 4), (5, 4, 1)),
                                              ((5, 1, 4), (5, 4, 2)), ((5, 3, 4), (5, 4, 2))],
                         ids=["vectors", "matrix-vector", "vector-matrix", "matrices"])
def test_batch_matmul_multiplies_as_numpy_does_without_cublas(cupy, a_shape, b_shape):
    """While a step is captured, CuPy's own matmul (cuBLAS through CuPy's handle) is
    refused: the gpu backend's products for Dot are elementwise, in captures too."""
    backend, rng = GpuBackend(), np.random.default_rng(2)
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    on_device = backend.asarray(a), backend.asarray(b)
    out = backend.empty((a_shape[0], a_shape[1], b_shape[2]), "float64")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        backend.batch_matmul(*on_device, out)
        graph = stream.end_capture()
    graph.launch()
    np.testing.assert_allclose(backend.to_numpy(out), a @ b, rtol=1e-12)


@pytest.mark.parametrize("model", test_merging.GRAPH_MODELS)
def test_a_model_whose_layers_make_a_graph_is_captured_and_trains_as_on_cpu(cupy, model):
    make, data, loss = test_merging.GRAPH_MODELS[model]
    x, y = data(rows=200)
    captured = test_merging.residual_run(GpuBackend(), x, y, make, loss)
    assert cupy.cuda.graph.launches > 0
    assert [malloc for malloc in cupy.cuda.memory.mallocs if malloc.capturing] == []
    assert_close_runs(captured, test_merging.residual_run("cpu", x, y, make, loss))


class TrimsTheDefaultPool(Callback):
    """At each epoch's end, gives the default pool's free blocks back to the device, as a user
    may between epochs: ``cupy.get_default_memory_pool().free_all_blocks()``."""

    def __init__(self, cupy):
        super().__init__()
        self.cupy = cupy

    def on_epoch_end(self, epoch, logs=None):
        self.cupy.get_default_memory_pool().free_all_blocks()


class RunsTheDefaultPoolOutOfMemory(TrimsTheDefaultPool):
    """At each epoch's end, asks the default pool for more than the device has (its capacity
    set to what is allocated): CuPy frees the pool's free blocks, twice, before it raises
    OutOfMemoryError, which this expects."""

    def on_epoch_end(self, epoch, logs=None):
        device = self.cupy.cuda.memory.device
        device.capacity = device.allocated
        with pytest.raises(self.cupy.cuda.memory.OutOfMemoryError):
            self.cupy.empty(device.allocated + 1, dtype=np.uint8)
        device.capacity = None


def validated_run(backend, epochs=3, callbacks=()) -> tuple:
    """``(history, weights)`` of :func:`tests.test_replay.train`'s network and data, with
    validation data evaluated after each epoch (eagerly, from the default pool)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(264, 12)).astype(np.float32)
    y = to_categorical(rng.integers(0, 3, size=264), 3)
    model = dnn.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=backend)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:200], y[:200], epochs=epochs, batch_size=32, verbose=0,
                        validation_data=(x[200:], y[200:]), callbacks=list(callbacks))
    return history.history, model.get_weights()


@pytest.mark.parametrize("between_epochs", [TrimsTheDefaultPool, RunsTheDefaultPoolOutOfMemory])
def test_the_graphs_memory_outlasts_the_default_pool_trimmed_between_epochs(
        cupy, monkeypatch, between_epochs):
    """The graph's memory is in a pool of its own, which nothing else allocates from or
    trims: neither a user's free_all_blocks nor CuPy's when the default pool runs out frees
    it, nor does the validation's memory come out of it; the run replays, as the eager one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = validated_run(GpuBackend(), callbacks=[between_epochs(cupy)])
    assert cupy.cuda.graph.launches == 3 * 6 - WARM_UPS
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(replayed, validated_run(GpuBackend(), callbacks=[between_epochs(cupy)]))


class Interrupted(Exception):
    """What stops a fit here, as Ctrl-C would."""


class Interrupts(Callback):
    """Stops the fit at its first epoch's end."""

    def on_epoch_end(self, epoch, logs=None):
        raise Interrupted


class LetsTheInterruptedFitGo(Callback):
    """At the end of the first epoch, drops ``held`` (the interrupted fit's error, whose
    traceback keeps its graph alive) and records in ``freed`` how many pools were emptied
    meanwhile (``emptied``: the pools whose free blocks were freed, in order)."""

    def __init__(self, held: list, emptied: list):
        super().__init__()
        self.held, self.emptied, self.freed = held, emptied, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            before = len(self.emptied)
            self.held.clear()
            gc.collect()
            self.freed = len(self.emptied) - before


def interrupted_then_refitted(backend, emptied: list) -> tuple:
    """``(history, weights, freed)`` of a fit of two epochs interrupted at the end of its
    first, its error kept, then a fit of three with the same model (backend, pools), which
    lets the error go at its first epoch's end: ``freed`` pools emptied then."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    y = to_categorical(rng.integers(0, 3, size=200), 3)
    model = dnn.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=backend)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    held = []
    try:
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[Interrupts()])
    except Interrupted as error:
        held.append(error)
    letting_go = LetsTheInterruptedFitGo(held, emptied)
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[letting_go])
    return history.history, model.get_weights(), letting_go.freed


def test_the_graph_of_an_interrupted_fit_and_the_next_fits_keep_apart(cupy, monkeypatch):
    """A fit interrupted, its traceback kept (as a notebook keeps the last one), leaves its
    graph alive while the next fit of the model captures its own: each capture's memory is a
    pool of its own, so the second capture takes none of the first graph's, and the first
    graph's going (its pool's blocks freed, during the second fit) frees none of the second's."""
    emptied = []
    original = cupy.cuda.MemoryPool.free_all_blocks
    monkeypatch.setattr(cupy.cuda.MemoryPool, "free_all_blocks",
                        lambda pool, stream=None: (emptied.append(pool), original(pool, stream)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        *replayed, freed = interrupted_then_refitted(GpuBackend(), emptied)
    assert freed == 1  # the first graph lived until then
    # the second fit's pool was warmed by the first's checked steps: one warm-up does
    assert cupy.cuda.graph.launches == (6 - WARM_UPS) + (3 * 6 - 1)
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    *eager, _ = interrupted_then_refitted(GpuBackend(), emptied)
    assert_close_runs(replayed, eager)


def test_a_step_cuda_refuses_to_capture_runs_eagerly_naming_the_refusal(cupy, monkeypatch):
    """An optimizer reading a gradient on the host: CuPy's refusal ends the capture, and fit
    goes on eagerly with the same numbers."""
    with pytest.warns(GraphFallbackWarning, match="capturing it failed: .*RuntimeError: the "
                                                  "current stream is capturing, so D2H "
                                                  "transfers are disallowed$"):
        refused = train(GpuBackend(), ReadsTheGradientOnTheHost(0.1))
    assert cupy.cuda.graph.launches == 0
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(refused, train(GpuBackend(), ReadsTheGradientOnTheHost(0.1)))


def test_without_a_cublas_of_cupys_major_fit_runs_eagerly_naming_why(cupy, monkeypatch):
    """CuPy on CUDA 12 and only cuBLAS 13 here: the graph machinery cannot be made, and fit
    goes on eagerly with one warning instead of an error."""
    monkeypatch.setattr(cupy.cuda.runtime, "runtimeGetVersion", lambda: 12000)
    with pytest.warns(GraphFallbackWarning, match="its warm-up failed: cuBLAS 12 .*could not"):
        fallen_back = train(GpuBackend())
    assert cupy.cuda.graph.launches == 0
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(fallen_back, train(GpuBackend()))


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_learning_rate_changed_during_fit_reaches_the_graph(cupy, monkeypatch, optimizer):
    """Through the fused CUDA kernels, which take the rate as a device array: the replays
    follow a rate lowered after every batch as the eager steps do."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(GpuBackend(), optimizer, callbacks=[LowerTheRateEachBatch()])
    assert cupy.cuda.graph.launches == 3 * 6 - WARM_UPS
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(replayed, train(GpuBackend(), optimizer,
                                      callbacks=[LowerTheRateEachBatch()]))
    assert not np.allclose(replayed[0]["loss"], train(GpuBackend(), optimizer)[0]["loss"],
                           rtol=1e-4)


def test_a_layer_frozen_and_thawed_during_fit_trains_as_the_eager_step_does(cupy, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(GpuBackend(), callbacks=[FreezesThenThaws()])
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(replayed, train(GpuBackend(), callbacks=[FreezesThenThaws()]))
    assert not np.allclose(replayed[0]["loss"], train(GpuBackend())[0]["loss"], rtol=1e-4)


def test_a_backend_and_its_graphs_gone_hand_their_pools_blocks_back(cupy, monkeypatch):
    """CuPy 14.1 and later free no pool's blocks when the pool is dropped: the graph's pool
    is emptied once the graph is gone, and the pool kept for the next capture once the
    backend is; each once, and no other."""
    made, emptied = [], []
    make, empty = cupy.cuda.MemoryPool.__init__, cupy.cuda.MemoryPool.free_all_blocks
    monkeypatch.setattr(cupy.cuda.MemoryPool, "__init__", lambda pool, *allocator: (
        made.append(id(pool)), make(pool, *allocator))[1])
    monkeypatch.setattr(cupy.cuda.MemoryPool, "free_all_blocks",
                        lambda pool, stream=None: (emptied.append(id(pool)), empty(pool)))
    train(GpuBackend())
    gc.collect()
    assert len(made) == 2 and sorted(emptied) == sorted(made)


def bytes_kept_from_graph_kernels(monkeypatch, cupy) -> list:
    """A list that gets, after each step run with the kernels of a captured one (a warm-up,
    a capture, an eager step a replay is checked against), the bytes of its pool that arrays
    made in it are still on."""
    from dnn.backends.cuda_graphs import CudaGraphs

    kept, kernels = [], CudaGraphs.kernels

    @contextlib.contextmanager
    def counting(graphs):
        pool = graphs._pool
        with kernels(graphs):
            yield
        kept.append(pool.used_bytes())
    monkeypatch.setattr(CudaGraphs, "kernels", counting)
    return kept


@pytest.mark.parametrize("optimizer", [
    "rmsprop", "adam", lambda: dnn.optimizers.Adam(amsgrad=True),
    lambda: SGD(0.05, momentum=0.9, nesterov=True)],
    ids=["rmsprop", "adam", "amsgrad", "nesterov"])
def test_nothing_made_in_a_captured_steps_memory_outlives_the_step(cupy, monkeypatch,
                                                                   optimizer):
    """An array a step makes and keeps (Adam's step size, once) is on the memory of the
    capture: the warm-up that left it there starts from other free blocks than the capture,
    which may then take a new one; and it is lost with a graph's pool."""
    kept = bytes_kept_from_graph_kernels(monkeypatch, cupy)
    train(GpuBackend(), optimizer() if callable(optimizer) else optimizer)
    assert len(kept) >= 2 + 1 + 2 and set(kept) == {0}  # warm-ups, capture, checks


def test_a_warm_up_whose_pool_trimmed_itself_to_allocate_again_took_new_memory(cupy):
    """A pool that runs out frees its free blocks, then allocates: its total bytes can be
    what they were, but the capture would not find the blocks the warm-up found."""
    graphs = GpuBackend()._graph_machinery()
    with graphs.kernels():
        first, second = cupy.empty(1024, "float32"), cupy.empty(1024, "float32")
        del first, second  # two whole free blocks of 4 KiB in the pool
    total = graphs._pool.total_bytes()
    with graphs.kernels():
        pass
    assert graphs._pool.total_bytes() == total and not graphs.pool_grew
    cupy.cuda.memory.device.capacity = cupy.cuda.memory.device.allocated  # no more room
    with graphs.kernels():
        cupy.empty(2048, "float32")  # 8 KiB: the two blocks go back, one is made
    assert graphs._pool.total_bytes() == total and graphs.pool_grew


@pytest.mark.parametrize("fits, nesterov_from_epoch_2", [(1, True), (2, False)],
                         ids=["recaptured", "fit-twice"])
def test_what_a_model_keeps_is_made_outside_the_capture_pools_and_goes_back_with_it(
        cupy, fits, nesterov_from_epoch_2):
    """The buffers a warm-up makes, kept from step to step, come from the default pool, not
    from the pool of the next capture: that pool goes with its graph (here dropped by a
    capture after a setting changed, or by the next fit), and an allocation it had split
    between a buffer and a temporary would be lost with it.  Once the model is gone, the
    device has every byte back."""
    before = cupy.cuda.memory.device.allocated
    rng = np.random.default_rng(0)
    model = dnn.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")],
                           seed=0, backend=GpuBackend())
    model.compile(optimizer=SGD(0.05, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    x = rng.normal(size=(200, 12)).astype(np.float32)
    y = to_categorical(rng.integers(0, 3, size=200), 3)
    callbacks = [SetsASettingFromEpoch("nesterov", True)] if nesterov_from_epoch_2 else []
    for _ in range(fits):
        model.fit(x, y, epochs=3, batch_size=32, callbacks=callbacks, verbose=0)
    del callbacks  # and the model they hold
    assert cupy.cuda.graph.launches > 0
    default = cupy.get_default_memory_pool()
    pools = [holder.pool() for holder in cupy.cuda.memory.device.in_use()]
    assert len(pools) > 20 and all(pool is default for pool in pools)
    del model
    gc.collect()
    default.free_all_blocks()
    assert cupy.cuda.memory.device.allocated == before


def test_dnn_train_with_the_gpu_backend_runs_on_the_standin(site, install_fake_plugin,
                                                            tmp_path):
    plugin = install_fake_plugin("fake-tiny", "1.0", {"dnn.datasets": {"tiny": "fake_tiny:Tiny"}},
                                 {"fake_tiny": TINY_DATASET})
    pathfinder = fake_pathfinder(tmp_path / "pathfinder", names=site / WHEEL_13)
    history = tmp_path / "history.json"
    folders = [STANDIN, pathfinder, site, plugin, ROOT]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, folders))}
    result = subprocess.run([sys.executable, "-m", "dnn", "train", "--backend", "gpu",
                             "--dataset", "tiny", "--epochs", "3", "--batch-size", "32",
                             "--hidden", "16", "--history", str(history)],
                            capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GraphFallbackWarning" not in result.stderr
    record = json.loads(history.read_text())
    assert record["backend"] == "gpu"
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"]


class TwoBatches:
    """A PyDataset-style source of two batches."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return self.x[index::2], self.y[index::2]


def keras_run(backend) -> tuple:
    """A model using what a Keras user reaches for next (a frozen layer, a regularizer,
    weighted metrics, class weights, batches from a generator): its history and weights."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(96, 6)).astype("float32")
    labels = rng.integers(0, 3, size=96)
    y = to_categorical(labels, 3)
    model = dnn.Sequential([dnn.layers.Dense(8, activation="relu", input_shape=(6,)),
                            dnn.layers.Dense(8, activation="tanh",
                                             kernel_regularizer=dnn.regularizers.l2(0.01)),
                            dnn.layers.Dense(3, activation="softmax")], seed=2, backend=backend)
    model.layers[0].trainable = False
    model.compile(optimizer="adam", loss="categorical_crossentropy",
                  metrics=["accuracy", "mae"], weighted_metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, class_weight={0: 2.0}, verbose=0,
                        validation_data=TwoBatches(x[:64], y[:64]))
    return history.history, model.get_weights()


def test_the_keras_features_train_on_the_gpu_backend_as_on_cpu(cupy):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        captured = keras_run(GpuBackend())
    assert cupy.cuda.graph.launches > 0
    reference = keras_run("cpu")
    assert_close_runs(captured, reference)
    np.testing.assert_array_equal(captured[1][0], keras_run("cpu")[1][0])  # frozen: as drawn


# -- the backend's array namespace, as it resolves where array-api-compat is installed ----------
@pytest.fixture
def compat_installed(cupy, monkeypatch):
    """array-api-compat importable, as on a machine where it is installed (dnn's gpu extras
    installed it until dnn stopped using it): tests/standin/array_api_compat_site holds a
    stand-in of it whose ``sign`` and ``clip`` index with boolean masks, as the real ones do
    (CuPy then reads the mask's count on the host).  Its module ``array_api_compat.cupy`` is
    imported afresh on this stand-in; any imported before comes back after."""
    for name in [name for name in sys.modules if name.split(".")[0] == "array_api_compat"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(COMPAT_SITE))
    import array_api_compat.cupy as compat

    stream = capturing(cupy)  # what the backend must not take: it cannot be captured
    try:
        x = cupy.ones((2, 3), dtype=np.float32)
        for operation in (lambda: compat.sign(x), lambda: compat.clip(x, 1e-7, 1 - 1e-7)):
            with pytest.raises(RuntimeError, match="so D2H transfers are disallowed"):
                operation()
    finally:
        stream.end_capture()
        stream.__exit__()
    yield compat
    for name in [name for name in sys.modules if name.split(".")[0] == "array_api_compat"]:
        del sys.modules[name]


def probabilities_run(backend, case: str) -> tuple:
    """``(history, weights)`` of a small model whose step needs ``sign`` (an L1 regularizer)
    or ``clip`` (a cross-entropy on probabilities: a softmax's output, not its logits)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = to_categorical(rng.integers(0, 3, size=96), 3)
    last, loss = {
        "l1": ([Dense(3, activation="softmax", kernel_regularizer="l1")],
               "categorical_crossentropy"),
        "binary-crossentropy": ([Dense(3, activation="softmax")], "binary_crossentropy"),
        # a linear Activation after the softmax: the loss is given its probabilities
        "categorical-crossentropy": ([Dense(3, activation="softmax"), Activation("linear")],
                                     "categorical_crossentropy"),
    }[case]
    model = dnn.Sequential([Input(shape=(6,)), Dense(8, activation="relu"), *last], seed=1,
                           backend=backend)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return history.history, model.get_weights()


@pytest.mark.parametrize("case", ["l1", "binary-crossentropy", "categorical-crossentropy"])
def test_steps_using_sign_or_clip_are_captured_where_array_api_compat_is_installed(
        cupy, compat_installed, monkeypatch, case):
    """The backend's namespace (and the regularizers' and schedules', which follow it) keeps
    to functions CuPy can capture: every full batch but the warm-up replays the graph, with
    the eager step's and the cpu backend's numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = probabilities_run(GpuBackend(), case)
    assert cupy.cuda.graph.launches == 2 * 6 - WARM_UPS
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    assert_close_runs(replayed, probabilities_run(GpuBackend(), case))
    assert_close_runs(replayed, probabilities_run("cpu", case))


@pytest.mark.parametrize("value, on", [("0", False), ("false", False), (" Off ", False),
                                       ("no", False), ("1", True), ("TRUE", True), ("on", True),
                                       ("", True)])
def test_the_graph_switch_takes_the_usual_spellings(monkeypatch, value, on):
    monkeypatch.setenv("DNN_GPU_GRAPHS", value)
    assert graphs_switched_on() is on


def test_a_graph_switch_neither_on_nor_off_is_named(monkeypatch):
    monkeypatch.setenv("DNN_GPU_GRAPHS", "maybe")
    with pytest.raises(UsageError, match="DNN_GPU_GRAPHS must be 1 or 0 .*, not 'maybe'"):
        graphs_switched_on()
    monkeypatch.delenv("DNN_GPU_GRAPHS")
    assert graphs_switched_on()

