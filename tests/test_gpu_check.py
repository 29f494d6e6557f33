"""scripts/gpu-check, the way a machine with a GPU verifies everything, stops at once, with its
reason and before installing anything, on a machine that cannot run it; given a folder of wheels
(scripts/gpu-wheels) it installs what is missing from there.  A fake pip records its calls: no
test installs or downloads anything."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "gpu-check"
ONE_DEVICE = "class cuda:\n class runtime:\n  def getDeviceCount():\n   return 1\n"
MISSING = "raise ImportError('not installed here')\n"
# pip, recording each call's arguments in pip-calls beside it; it fails (exit 3) to install
# dnn, which ends gpu-check before its test stages.
FAKE_PIP = """import json, pathlib, sys
with open(pathlib.Path(__file__).with_name("pip-calls"), "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(3 if "-e" in sys.argv else 0)
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gpu-check is a bash script")


def run_check(tmp_path, modules: dict, script=SCRIPT, args=(), **environment
              ) -> subprocess.CompletedProcess:
    """``script`` (gpu-check unless told) run from ``tmp_path`` with this interpreter, ``modules``
    ({name: source}) first on its path and ``environment`` added to its own."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    environment = {**{name: value for name, value in os.environ.items() if name != "DNN_WHEELS"},
                   "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path), **environment}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          timeout=60, env=environment, cwd=tmp_path)


def pip_calls(tmp_path) -> list:
    return [json.loads(line) for line in (tmp_path / "pip-calls").read_text().splitlines()]


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
    result = run_check(tmp_path, {"cupy": ONE_DEVICE, "setuptools": "__version__ = '65.5.0'\n"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpu-check: setuptools 77 or later is needed to install dnn here without fetching "
        "anything (pip install 'setuptools>=77')"]
    assert "==" not in result.stdout


def test_without_a_folder_of_wheels_it_names_the_missing_modules(tmp_path):
    result = run_check(tmp_path, {"cupy": ONE_DEVICE, "click": MISSING, "pytest": MISSING,
                                  "pip": FAKE_PIP})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpu-check: missing Python modules: click pytest (install them, e.g. pip install numpy "
        "click pytest, or from a folder made by scripts/gpu-wheels: DNN_WHEELS=FOLDER "
        "scripts/gpu-check)"]
    assert "==" not in result.stdout and not (tmp_path / "pip-calls").exists()


def test_with_a_folder_of_wheels_it_installs_what_is_missing_from_there_first(tmp_path):
    (tmp_path / "wheels").mkdir()
    result = run_check(tmp_path, {"cupy": ONE_DEVICE, "click": MISSING, "pytest": MISSING,
                                  "platformdirs": MISSING, "setuptools": "__version__ = '65.5'\n",
                                  "pip": FAKE_PIP}, DNN_WHEELS="wheels")
    assert pip_calls(tmp_path) == [
        ["install", "-q", "--no-index", "--find-links", str(tmp_path / "wheels"), "click",
         "pytest", "platformdirs", "setuptools>=77"],
        ["install", "-q", "--no-deps", "--no-build-isolation", "-e", ".", "-e",
         "./plugins/dnn-lion", "-e", "./plugins/dnn-fashion-mnist", "-e",
         "./plugins/dnn-array-api-strict"]]
    assert result.returncode == 1 and result.stderr == ""
    assert result.stdout.splitlines() == ["== install", "gpu-check: install: FAILED (exit 3)"]


def test_with_a_folder_of_wheels_and_nothing_missing_it_installs_only_dnn(tmp_path):
    (tmp_path / "wheels").mkdir()
    run_check(tmp_path, {"cupy": ONE_DEVICE, "setuptools": "__version__ = '80.9.0'\n",
                         "pip": FAKE_PIP}, DNN_WHEELS=str(tmp_path / "wheels"))
    assert [call[:4] for call in pip_calls(tmp_path)] == [
        ["install", "-q", "--no-deps", "--no-build-isolation"]]


def test_a_folder_of_wheels_that_is_not_there_is_named_before_anything_runs(tmp_path):
    result = run_check(tmp_path, {"pip": FAKE_PIP}, DNN_WHEELS="wheels")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["gpu-check: DNN_WHEELS=wheels is not a folder"]
    assert result.stdout == "" and not (tmp_path / "pip-calls").exists()


def test_gpu_wheels_downloads_wheels_only_with_the_python_it_is_given(tmp_path):
    result = run_check(tmp_path, {"pip": FAKE_PIP}, SCRIPTS / "gpu-wheels", ["wheels"])
    assert result.returncode == 0, result.stderr
    assert pip_calls(tmp_path) == [["download", "--only-binary=:all:", "--dest", "wheels",
                                    "click", "pytest", "platformdirs", "setuptools>=77"]]


@pytest.mark.parametrize("args", [[], ["wheels", "--python-version", "3.10"]],
                         ids=["no-folder", "more-arguments"])
def test_gpu_wheels_refuses_what_it_cannot_read(tmp_path, args):
    result = run_check(tmp_path, {"pip": FAKE_PIP}, SCRIPTS / "gpu-wheels", args)
    assert result.returncode == 2
    assert result.stderr == "usage: PYTHON=python3.X scripts/gpu-wheels FOLDER\n"
    assert not (tmp_path / "pip-calls").exists()
