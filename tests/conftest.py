"""Shared fixtures: the backends to run every suite on, real MNIST when present, fake plugins."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from dnn import backends, plugins
from dnn.backends.base import Backend
from dnn.backends.cpu import C_KERNELS

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

needs_extension = pytest.mark.skipif(
    C_KERNELS is None, reason="dnn.backends._cpu_kernels was not built (no C compiler?)")


def awkward(rng, shape, positive=False, dtype=np.float32):
    """Normals at several scales with zeros, -0.0, subnormals, inf and NaN mixed in."""
    values = rng.normal(size=shape) * rng.choice([1e-6, 1e-3, 1.0, 1e3], size=shape)
    values = (np.abs(values) if positive else values).astype(dtype)
    flat = values.reshape(-1)
    picks = rng.choice(flat.size, size=min(40, flat.size), replace=False)  # 8 of each, if room
    flat[picks[:8]] = 0.0
    flat[picks[8:16]] = -0.0
    flat[picks[16:24]] = np.finfo(dtype).smallest_normal / 1000  # subnormal
    flat[picks[24:32]] = np.inf
    flat[picks[32:]] = np.nan
    return values


def awkward_images(rng, shape, dtype):
    """Awkward images (NaN, inf, -0.0, subnormals, several scales) with half their values
    small integers (ties for max pooling: zeros among them), a tenth of those -inf: what the
    window kernels are checked on."""
    values = awkward(rng, shape, dtype=dtype)
    flat = values.reshape(-1)
    picks = rng.choice(flat.size, size=flat.size // 2, replace=False)
    flat[picks] = rng.integers(-2, 3, size=picks.size)
    flat[picks[:max(1, picks.size // 10)]] = -np.inf
    return values


def available_backend_names() -> list:
    """Every installed backend, with a skip (and its reason) for those that cannot run here."""
    params = []
    for name in plugins.names("backend"):
        availability = backends.availability(name)
        marks = [pytest.mark.gpu] if name == "gpu" else []
        if not availability:
            marks.append(pytest.mark.skip(reason=f"backend {name}: {availability.reason}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=available_backend_names())
def backend(request):
    """Each available backend in turn (skipped with the reason where unavailable)."""
    return backends.get_backend(request.param)


def host_cuda_param():
    """The gpu backend's code with its CUDA kernels compiled for the host (skipped with the
    reason where there is no C compiler)."""
    from tests.cuda_harness import HostCudaBackend

    availability = HostCudaBackend.is_available()
    marks = [] if availability else [pytest.mark.skip(reason=f"host-cuda: {availability.reason}")]
    return pytest.param("host-cuda", marks=marks, id="host-cuda")


@pytest.fixture(params=[p for p in available_backend_names() if p.values != ("cpu",)]
                + [host_cuda_param()])
def other_backend(request):
    """Each backend but cpu, the reference the cross-backend tests compare with, and the gpu
    backend's code on the host (tests/cuda_harness.py)."""
    if request.param == "host-cuda":
        from tests.cuda_harness import HostCudaBackend

        return HostCudaBackend()
    return backends.get_backend(request.param)


@pytest.fixture
def cpu():
    return backends.get_backend("cpu")


class GenericNumpy(Backend):
    """NumPy through the generic kernels only: the reference the overrides must reproduce."""

    name = "generic-numpy"
    xp = np

    def is_own_array(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))  # NumPy reduces to scalars


@pytest.fixture
def generic():
    """A backend running the generic kernels of :class:`dnn.backends.base.Backend` on NumPy."""
    return GenericNumpy()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder from $DNN_DATA_DIR; the test is skipped without it."""
    folder = os.environ.get("DNN_DATA_DIR")
    if not folder or not all((Path(folder) / name).is_file() for name in MNIST_FILES):
        pytest.skip("real MNIST not available: set DNN_DATA_DIR to a folder with the IDX files")
    return Path(folder)


@pytest.fixture
def install_fake_plugin(tmp_path, monkeypatch):
    """Install a fake distribution: ``install(dist, version, {group: {name: value}}, modules)``
    writes ``modules`` ({module name: source}) and a dist-info with those entry points into a
    folder on ``sys.path``, and resets plugin discovery (before and after the test)."""

    def install(dist: str, version: str, entry_points: dict, modules: dict | None = None):
        root = tmp_path / f"site-{dist}"
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{name} = {value}" for name, value in entries.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(root))
        reset_discovery()
        return root

    yield install
    reset_discovery()


def reset_discovery():
    plugins.catalog.cache_clear()
    plugins.load.cache_clear()
    backends.get_backend.cache_clear()
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


def peak_bytes(call, error, message) -> int:
    """The most memory Python allocated while ``call()`` raised ``error`` matching
    ``message`` (a bound on what a refused file made dnn read)."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=message):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def a_named_pipe(path, seconds: float = 10):
    """A named pipe made at ``path`` that a reader opens (and closes) after ``seconds``, so
    that a writer that blocks on it fails its test instead of hanging it."""
    os.mkfifo(path)
    release = threading.Timer(seconds,
                              lambda: os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK)))
    release.daemon = True
    release.start()
    try:
        yield path
    finally:
        release.cancel()
