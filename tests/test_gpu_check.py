"""scripts/gpu-check, the way a machine with a GPU verifies everything, stops at once, with its
reason and before installing anything, on a machine that cannot run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gpu-check is a bash script")


def run_check(tmp_path, modules: dict) -> subprocess.CompletedProcess:
    """gpu-check with this interpreter and ``modules`` ({name: source}) first on its path."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    environment = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env=environment)


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import cupy"],
                                   capture_output=True).returncode == 0,
                    reason="CuPy is installed here")
def test_without_cupy_it_names_what_is_missing(tmp_path):
    result = run_check(tmp_path, {})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpu-check: gpu backend unavailable: CuPy is not installed; install CuPy with: pip "
        "install 'dnn-framework[gpu-cuda13]' (or [gpu-cuda12])"]
    assert "==" not in result.stdout  # no stage ran, nothing was installed


@pytest.mark.parametrize("cupy_source, reason", [
    ("class cuda:\n class runtime:\n  def getDeviceCount():\n"
     "   raise RuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected')\n",
     "gpu-check: gpu backend unavailable: no CUDA device (cudaErrorNoDevice: no CUDA-capable "
     "device is detected); check the NVIDIA driver"),
    ("class cuda:\n class runtime:\n  def getDeviceCount():\n   return 0\n",
     "gpu-check: gpu backend unavailable: no CUDA device found; check the NVIDIA driver"),
], ids=["driver-error", "zero-devices"])
def test_without_a_device_it_stops_with_the_reason(tmp_path, cupy_source, reason):
    result = run_check(tmp_path, {"cupy": cupy_source})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [reason]
    assert "==" not in result.stdout


def test_with_a_setuptools_too_old_to_build_dnn_it_stops_before_installing(tmp_path):
    one_device = "class cuda:\n class runtime:\n  def getDeviceCount():\n   return 1\n"
    result = run_check(tmp_path, {"cupy": one_device, "setuptools": "__version__ = '65.5.0'\n"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpu-check: setuptools 77 or later is needed to install dnn here without fetching "
        "anything (pip install 'setuptools>=77')"]
    assert "==" not in result.stdout
