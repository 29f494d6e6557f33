"""Backend selection: scoping, unknown names, and the gpu backend's clean unavailability."""

import numpy as np
import pytest

import dnn
from dnn import backends
from dnn.backends.gpu import GpuBackend
from dnn.errors import BackendUnavailableError, UnknownPluginError


def test_use_backend_is_scoped_and_restored_after_errors():
    cpu = backends.get_backend("cpu")
    assert dnn.current_backend() is cpu
    with pytest.raises(RuntimeError):
        with dnn.use_backend(cpu) as inner:
            assert dnn.current_backend() is inner
            raise RuntimeError("boom")
    assert dnn.current_backend() is cpu


def test_model_remembers_the_backend_it_was_built_on():
    cpu = backends.get_backend("cpu")

    class Other(type(cpu)):
        name = "other"

    other = Other()
    model = dnn.Sequential([dnn.layers.Dense(2)], seed=0)
    with dnn.use_backend(other):
        model.predict(np.ones((1, 3), np.float32))
    assert model.backend is other
    model.predict(np.ones((1, 3), np.float32))  # outside the block: still built on `other`
    assert model.backend is other


def test_unknown_backend_lists_installed():
    with pytest.raises(UnknownPluginError, match="unknown backend 'tpu'; installed: .*cpu"):
        backends.get_backend("tpu")


@pytest.mark.skipif(bool(GpuBackend.is_available()), reason="a GPU is present here")
def test_gpu_unavailability_is_reported_with_reason_and_fix():
    availability = GpuBackend.is_available()
    assert not availability
    assert "CuPy" in availability.reason or "CUDA" in availability.reason
    with pytest.raises(BackendUnavailableError, match="backend 'gpu' is unavailable: .*(pip install|driver)"):
        backends.get_backend("gpu")


def test_gpu_without_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setattr("dnn.backends.gpu._import_cupy", lambda: None)
    availability = GpuBackend.is_available()
    assert not availability and "pip install" in availability.reason


@pytest.mark.parametrize("built", [True, False])
def test_cpu_backend_says_which_kernels_it_runs(monkeypatch, built):
    from dnn.backends import cpu as cpu_module
    from dnn.cli import main
    from click.testing import CliRunner

    if built and cpu_module.C_KERNELS is None:
        pytest.skip("dnn.backends._cpu_kernels was not built (no C compiler?)")
    if not built:
        monkeypatch.setattr(cpu_module, "C_KERNELS", None)
    assert cpu_module.CpuBackend().c_kernels is cpu_module.C_KERNELS
    result = CliRunner().invoke(main, ["plugins"])
    cpu_line = next(line for line in result.output.splitlines() if line.split()[:2] ==
                    ["backend", "cpu"])
    expected = ("float32 kernels in C" if built else
                "NumPy kernels only: the C extension dnn.backends._cpu_kernels was not built")
    assert "available: " + expected in cpu_line


def test_every_backend_matches_the_cpu_kernels_and_training(other_backend):
    """The conformance kit on each installed backend (the gpu one where a GPU is present)."""
    from dnn import testing

    testing.check_backend(type(other_backend))


def test_relu_kernels_keep_nan_as_numpy_maximum_does(backend):
    """A NaN must survive relu (so that divergence is seen), on every backend."""
    host = np.array([[np.nan, -1.0, 2.0, 0.0]], np.float32)
    relu = backend.to_numpy(backend.relu(backend.asarray(host.copy())))
    dense_relu = backend.to_numpy(backend.dense_relu_forward(
        backend.asarray(np.ones((1, 1), np.float32)), backend.asarray(host.copy()),
        backend.asarray(np.zeros(4, np.float32)), backend.empty((1, 4), "float32")))
    for result in (relu, dense_relu):
        np.testing.assert_array_equal(result, [[np.nan, 0.0, 2.0, 0.0]])
