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
